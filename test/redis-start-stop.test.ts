// stop() right after start() with Sentinel: start() settles (no promise left pending for ever),
// nothing rejects unhandled, and no timer or socket keeps the process alive, whether the
// Sentinels answer, refuse Tether's password, or are frozen (SIGSTOP). Each case runs in a
// child process of the built module (dist/), so "the process exits on its own" is observable.
// Real redis-server and Sentinel processes; waits poll or wait for events, with deadlines.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { SENTINEL_SILENT_MS } from '../src/redis/sentinel-watch.js'
import { ROOT } from './fixtures/cli.js'
import { startRedis, startRedisSentinel, type RedisServer, type RedisSentinel, type StartSentinelOptions } from './fixtures/redis-server.js'

const CONNECTION = pathToFileURL(join(ROOT, 'dist', 'redis', 'connection.js')).href
/**
 * How long the child may take to settle start() and then exit on its own: with a frozen
 * Sentinel, ioredis's own question to it ends at its 2 s deadline (SENTINEL_SILENT_MS), and
 * ioredis then waits up to 2 s more (its default disconnectTimeout, which Tether cannot set for
 * those connections) for the socket to close; 6 s more for a loaded machine (4.2-4.8 s measured
 * with two CPU hogs running: 2 s of margin was too little for CI). A process kept alive by a
 * leaked timer or connection never exits, so it still fails.
 */
const EXIT_DEADLINE_MS = SENTINEL_SILENT_MS + 2_000 + 6_000
/** How long a case that waits for a watch to be given up may take more (the tick's 1 s on top of the silence). */
const SILENT_WAIT_MS = SENTINEL_SILENT_MS + 1_000

/**
 * A child process that calls start(), then stop() at once (`delayed`: once the first Sentinel
 * round failed), waits for start() to settle and prints what happened; it
 * exits by itself once nothing is left (it is SIGKILLed after EXIT_DEADLINE_MS).
 */
function startStop(options: Record<string, unknown>, delayed = false, afterSilent = false): Promise<{ out: string; exited: boolean; ms: number }> {
  const script = `
    import { RedisConnection } from ${JSON.stringify(CONNECTION)}
    const stray = []
    process.on('unhandledRejection', (err) => { stray.push(String(err)); console.log('unhandled rejection: ' + err) })
    const conn = new RedisConnection(${JSON.stringify(options)})
    let settled = false
    const started = conn.start().then(() => { settled = true }, (err) => { console.log('start rejected: ' + err) })
    // a failed Sentinel round is reported as the node down: stop() lands in ioredis's retry wait
    if (${delayed}) await new Promise((r) => conn.onNode(r))
    // a watch given up and made again: stop() must close the remade connection too
    if (${afterSilent}) await new Promise((r) => conn.onSentinel(r))
    const stopped = performance.now()
    await conn.stop()
    await started
    console.log('settled ' + settled + ', status ' + conn.status + ', ' + Math.round(performance.now() - stopped) + ' ms after stop()')
    process.on('exit', () => console.log('exit, ' + stray.length + ' stray'))
  `
  return new Promise((resolve) => {
    const before = performance.now()
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    child.stderr.on('data', (c: Buffer) => { out += c.toString() })
    const kill = setTimeout(() => child.kill('SIGKILL'), EXIT_DEADLINE_MS + (afterSilent ? SILENT_WAIT_MS : 0))
    child.once('exit', (code, signal) => {
      clearTimeout(kill)
      resolve({ out, exited: signal === null && code === 0, ms: performance.now() - before })
    })
  })
}

/** A master and one Sentinel (with `options`) watching it. */
async function sentinelFor(t: Test, options: StartSentinelOptions = {}): Promise<{ master: RedisServer; sentinel: RedisSentinel; sentinels: { host: string; port: number }[] }> {
  const master = await startRedis()
  t.teardown(() => master.stop())
  const sentinel = await startRedisSentinel(master, 'mymaster', options)
  t.teardown(() => sentinel.stop())
  return { master, sentinel, sentinels: [{ host: '127.0.0.1', port: sentinel.port }] }
}

type Case = { name: string; setup: (t: Test) => Promise<Record<string, unknown>>; delayed?: boolean; afterSilent?: boolean }

const cases: Case[] = [
  {
    name: 'the Sentinel answers',
    setup: async (t) => ({ sentinels: (await sentinelFor(t)).sentinels, name: 'mymaster' }),
  },
  {
    name: 'the Sentinel refuses the password, stop() during its retry wait',
    setup: async (t) => ({ sentinels: (await sentinelFor(t, { password: 'right' })).sentinels, name: 'mymaster', sentinelPassword: 'wrong' }),
    delayed: true,
  },
  {
    name: 'the Sentinel is frozen (SIGSTOP)',
    setup: async (t) => {
      const { sentinel, sentinels } = await sentinelFor(t)
      process.kill(sentinel.pid, 'SIGSTOP')
      t.teardown(() => { process.kill(sentinel.pid, 'SIGCONT') })
      return { sentinels, name: 'mymaster' }
    },
  },
  {
    name: 'the Sentinel is frozen (SIGSTOP), stop() once its watch was given up and made again',
    setup: async (t) => {
      const { sentinel, sentinels } = await sentinelFor(t)
      process.kill(sentinel.pid, 'SIGSTOP')
      t.teardown(() => { process.kill(sentinel.pid, 'SIGCONT') })
      return { sentinels, name: 'mymaster' }
    },
    afterSilent: true,
  },
]

for (const c of cases) {
  t.test(`stop() right after start() with Sentinel, ${c.name}: start() settles, no unhandled rejection, the process exits`, async (t) => {
    const options = await c.setup(t)
    const r = await startStop(options, c.delayed ?? false, c.afterSilent ?? false)
    t.comment(`${r.out.trim().replace(/\n/g, '; ')} (${Math.round(r.ms)} ms)`)
    t.match(r.out, /settled true, status degraded/, 'start() settled')
    const after = Number(/, (\d+) ms after stop\(\)/.exec(r.out)?.[1] ?? Infinity)
    t.ok(after < 1_000, `start() settled at once when stop() was called (${after} ms)`)
    t.notMatch(r.out, /unhandled rejection|start rejected/, 'nothing rejected')
    t.ok(r.exited, `the process exited on its own within ${EXIT_DEADLINE_MS + (c.afterSilent === true ? SILENT_WAIT_MS : 0)} ms`)
    t.match(r.out, /exit, 0 stray/)
  })
}
