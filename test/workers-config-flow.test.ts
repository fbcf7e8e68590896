// What config a worker runs (`workers` > 1): the primary reads the file, and every worker runs
// the text the primary accepted (the sections that need new workers as its slot was started,
// the live ones as accepted last), never the file as it is on disk when the worker starts. A
// bad edit followed by a crash does not leave a slot in a crash loop; a slot a failed roll did
// not reach restarts as it was, and the same reload retries the roll; a reload that brings
// `state.store: memory` brings the primary's store with it; a roll retires each old worker
// with the grace period it was started with.
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { startRedis } from './fixtures/redis-server.js'
import { startAll } from './fixtures/children.js'

const count = (text: string, needle: string): number => text.split(needle).length - 1

/** A request that may be refused (a port nobody listens on): its status, or null. */
async function statusOf(url: string): Promise<number | null> {
  try {
    return (await request(url, null)).status
  } catch {
    return null
  }
}

/**
 * An app server in this process answering with `handle`, and a primary of two workers over it
 * whose proxy.yaml has the line `extra`; `reloadWith(line)` rewrites that line and sends SIGHUP.
 */
async function appAndPrimary(t: Test, name: string, handle: http.RequestListener, extra: string) {
  const app = http.createServer(handle).listen(0, '127.0.0.1')
  await new Promise((r) => app.once('listening', r))
  t.teardown(() => { app.closeAllConnections(); return new Promise((r) => app.close(r)) })
  const url = `http://127.0.0.1:${(app.address() as net.AddressInfo).port}`
  const [port, adminPort] = await freePorts(2)
  const yaml = (line: string): string => workersYaml({ listen: port, adminPort, workers: 2, upstreams: [{ id: 'app-0', url }], extra: [line] })
  const file = tempFile(`workers-config-flow-${name}.yaml`, yaml(extra))
  const { proc, out } = await startPrimary(t, file)
  const reloadWith = (line: string): void => {
    writeFileSync(file, yaml(line))
    proc.kill('SIGHUP')
  }
  return { port, adminPort, proc, out, reloadWith }
}

t.test('a worker restarted after a crash runs what the primary accepted (its live changes too), not a bad file left on disk', async (t) => {
  const [a, b] = await startAll([startChildUpstream('app-0'), startChildUpstream('app-1')])
  t.teardown(() => Promise.all([a.kill(), b.kill()]))
  const [port, adminPort] = await freePorts(2)
  const yaml = (ups: { id: string; url: string }[]): string => workersYaml({ listen: port, adminPort, workers: 2, upstreams: ups })
  const file = tempFile('workers-config-flow-crash.yaml', yaml([{ id: 'app-0', url: a.url }]))
  const { proc, out } = await startPrimary(t, file)
  // a live change (an upstream added), accepted; then an edit that does not parse
  writeFileSync(file, yaml([{ id: 'app-0', url: a.url }, { id: 'app-1', url: b.url }]))
  proc.kill('SIGHUP')
  await waitFor(() => count(out(), '"config reloaded"') >= 2, 60_000, 'both workers to apply the new upstream')
  writeFileSync(file, 'workers: 2\nupstreams: [oops\n')
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('config reload rejected'), 60_000, 'the bad edit to be rejected')
  t.equal(count(out(), 'config reload rejected'), 1, 'rejected once, by the primary (the workers are not given it)')

  // a user on app-1, then one worker dies
  let cookie: string | null = null
  for (let i = 0; i < 40 && cookie === null; i++) {
    const r = await request(`http://127.0.0.1:${port}/`, null)
    if (JSON.parse(r.body).id === 'app-1') cookie = r.setCookie[0]!.split(';')[0]!
  }
  t.ok(cookie, 'a user placed on app-1')
  const [victim] = workerPids(proc)
  const listening = count(out(), '"tether listening"')
  process.kill(victim!, 'SIGKILL')
  await waitFor(() => count(out(), '"tether listening"') > listening, 60_000, 'the restarted worker to listen')
  t.equal(count(out(), '"worker died; restarting it"'), 1, 'one restart: it started (the bad file on disk is not what it runs)')
  t.equal(workerPids(proc).length, 2, 'two workers again')
  // each request on a new connection may reach either worker: both know app-1
  const ids = new Set<string>()
  for (let i = 0; i < 20; i++) ids.add(JSON.parse((await request(`http://127.0.0.1:${port}/`, cookie)).body).id)
  t.same([...ids], ['app-1'], "the user stays on app-1 on both workers: the restarted one runs the reload's live change")
  t.equal(count(out(), '"worker died; restarting it"'), 1, 'no crash loop')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})

t.test('a slot a failed roll did not reach restarts as it was after a crash; the same reload again retries the roll', async (t) => {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const taken = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => taken.once('listening', r))
  const takenPort = (taken.address() as net.AddressInfo).port
  const [port, adminPort] = await freePorts(2)
  const yaml = (listen: number): string => workersYaml({ listen, adminPort, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] })
  const file = tempFile('workers-config-flow-roll.yaml', yaml(port))
  const { proc, out } = await startPrimary(t, file)
  writeFileSync(file, yaml(takenPort))
  await waitFor(() => out().includes('replacing the workers failed'), 60_000, 'the roll to fail (the port is taken)')
  // the port is freed (say the other process went away); then a worker crashes
  await new Promise((r) => taken.close(r))
  const listening = count(out(), '"tether listening"')
  process.kill(workerPids(proc)[0]!, 'SIGKILL')
  await waitFor(() => count(out(), '"tether listening"') > listening, 60_000, 'the restarted worker to listen')
  let old = 0
  for (let i = 0; i < 20; i++) if (await statusOf(`http://127.0.0.1:${port}/`) === 200) old++
  t.equal(old, 20, 'both workers still on the old port: the restarted one too')
  t.equal(await statusOf(`http://127.0.0.1:${takenPort}/`), null, 'none on the new one')

  const pids = workerPids(proc)
  proc.kill('SIGHUP') // the same file: the roll is retried
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to be retried and end')
  await waitFor(() => workerPids(proc).length === 2 && workerPids(proc).every((p) => !pids.includes(p)), 60_000, 'both workers replaced')
  t.equal(await statusOf(`http://127.0.0.1:${takenPort}/`), 200, 'the workers listen on the new port')
  t.equal(await statusOf(`http://127.0.0.1:${port}/`), null, 'not on the old one')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})

t.test('a reload that brings state.store: memory brings the store the workers share: checkpoints are stored after the roll', async (t) => {
  const { port, adminPort, proc, out, reloadWith } = await appAndPrimary(t, 'store', (req, res) => {
    res.writeHead(200, req.url === '/cp' ? { 'x-tether-state': 'cart=1' } : {})
    res.end('ok\n')
  }, 'state: { store: none }')
  reloadWith('state: { store: memory }')
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  for (let i = 0; i < 10; i++) t.equal((await request(`http://127.0.0.1:${port}/cp`, null)).status, 200)
  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  t.match(metrics, /tether_checkpoints_total\{result="stored"\} 10\b/, 'every checkpoint stored')
  t.notMatch(metrics, /tether_checkpoints_total\{result="unavailable"\}/, 'none unavailable')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})

t.test('a roll that lowers shutdown.grace_period retires the old workers with the grace they were started with', async (t) => {
  // answers /slow after 6.5 s: past the new grace (0 s) + the primary's 5 s margin
  let arrived: () => void = () => undefined
  const slowArrived = new Promise<void>((resolve) => { arrived = resolve })
  const { port, proc, out, reloadWith } = await appAndPrimary(t, 'grace', (req, res) => {
    if (req.url === '/slow') {
      arrived()
      setTimeout(() => res.end('slow\n'), 6_500)
    } else res.end('ok\n')
  }, 'shutdown: { grace_period: 30s }')
  const slow = request(`http://127.0.0.1:${port}/slow`, null).then((r) => r.status, (err: Error) => err.message)
  await slowArrived // in flight on an old worker when the roll starts
  reloadWith('shutdown: { grace_period: 0s }')
  t.equal(await slow, 200, 'the request on the old worker finishes (30 s grace), not cut at 0 s + 5 s')
  await waitFor(() => out().includes('"workers replaced"'), 30_000, 'the roll to end')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})

t.test('a config warning (state.redis.name without sentinels) is logged by the primary alone, once at start and once per reload, not by each worker', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const line = `state: { store: redis, redis: { url: "${redis.url}", name: mymaster } }`
  const { proc, out, reloadWith } = await appAndPrimary(t, 'warning', (_req, res) => res.end('ok'), line)
  const warned = (): number => count(out(), '"config warning: a key has no effect as set"')
  t.equal(warned(), 1, 'once at start')
  const reloaded = count(out(), '"config reloaded"')
  reloadWith(line)
  await waitFor(() => count(out(), '"config reloaded"') >= reloaded + 2, 60_000, 'both workers to reload')
  t.equal(warned(), 2, 'once more for the reload, by the primary')
  t.match(out(), /"worker":"primary"[^\n]*"config warning: a key has no effect as set"|"config warning: a key has no effect as set"[^\n]*"worker":"primary"/, 'the reload\'s line is the primary\'s')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})
