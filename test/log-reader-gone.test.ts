// stdout's reader goes away (`tether | head -5`, a sidecar log shipper reading a pipe that dies):
// the pipe is broken (EPIPE). Tether must still end at SIGTERM, within its grace period, and a
// second signal must still end it at once: sonic-boom's synchronous flush (pino's, at exit)
// retried any error other than EAGAIN for ever, 100 ms at a time, in Atomics.wait on the main
// thread, so a Tether that exited with log lines still to write never ended, and no signal handler
// could run any more. Real processes, a real FIFO (a shell's `|`) and a real socket (Node's
// spawn pipe, as a parent's).
import t, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, plainNode, ROOT, tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

type Kind = 'fifo' | 'socket'

interface Reader {
  /** The lines read so far. */
  text(): string
  /** The reader goes away: its end of the pipe is closed. */
  close(): void
}

/** `args` run by node with stdout a pipe of `kind` read by this process, until close(). */
function spawnPiped(t: Test, kind: Kind, args: readonly string[], stdin: 'ignore' | 'pipe' = 'ignore'): { proc: ChildProcess; reader: Reader; exited: Promise<number | null> } {
  let out = ''
  let proc: ChildProcess
  let reader: Reader
  if (kind === 'fifo') {
    const dir = mkdtempSync(join(tmpdir(), 'tether-gone-'))
    const fifo = join(dir, 'stdout')
    execFileSync('mkfifo', [fifo])
    const rfd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
    const wfd = openSync(fifo, constants.O_WRONLY)
    proc = spawn(...plainNode(args), { cwd: ROOT, stdio: [stdin, wfd, 'ignore'] })
    closeSync(wfd)
    let open = true
    const buf = Buffer.alloc(65536)
    const timer = setInterval(() => {
      for (;;) {
        let n = 0
        try { n = readSync(rfd, buf) } catch { return } // EAGAIN: nothing now
        if (n === 0) return
        out += buf.toString('utf8', 0, n)
      }
    }, 5)
    const close = (): void => {
      clearInterval(timer)
      if (open) closeSync(rfd)
      open = false
    }
    t.teardown(close)
    reader = { text: () => out, close }
  } else {
    proc = spawn(...plainNode(args), { cwd: ROOT, stdio: [stdin, 'pipe', 'ignore'] })
    proc.stdout!.on('data', (c: Buffer) => { out += c.toString() })
    reader = { text: () => out, close: () => proc.stdout!.destroy() }
  }
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  t.teardown(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') })
  return { proc, reader, exited }
}

/** Whether nothing listens on 127.0.0.1:`port` any more. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(false) })
    s.on('error', () => resolve(true))
  })
}

const GRACE_MS = 2_000
/** What the exit may take beyond the grace period on a loaded host: the 1 s given to a stalled pipe at exit, and start-up slack. */
const SLACK_MS = 8_000

for (const kind of ['fifo', 'socket'] as const) {
  t.test(`stdout a ${kind} whose reader read the start lines and went away: SIGTERM ends Tether, exit 0`, async (t) => {
    const app = await startUpstream('a')
    t.teardown(() => app.close())
    const [port, adminPort] = await freePorts(2)
    const config = tempFile('gone.yaml', [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
      'affinity: { key: none }',
      `shutdown: { grace_period: ${GRACE_MS}ms }`,
      'upstreams:',
      `  - { id: a, url: "${app.url}" }`,
      '',
    ].join('\n'))
    const { proc, reader, exited } = spawnPiped(t, kind, [CLI, '--config', config])
    await waitFor(() => reader.text().includes('"tether listening"') || proc.exitCode !== null, 20_000, 'Tether to start')
    reader.close() // as `head` does after its lines: nothing written since
    proc.kill('SIGTERM') // its lines now meet the broken pipe: 'signal received', 'tether stopped'
    const code = await within(exited, GRACE_MS + SLACK_MS, 'Tether to exit after SIGTERM (its stdout broken)')
    t.equal(code, 0, 'a graceful stop')
  })
}

t.test('with the reader gone, a second SIGTERM during the grace period still exits at once', async (t) => {
  let release: () => void = () => undefined
  const held = new Promise<void>((r) => { release = r })
  const app = await startUpstream('a', (req, res) => { if (req.url === '/held') void held.then(() => res.end('late\n')); else res.end('ok\n') })
  t.teardown(() => { release(); return app.close() })
  const [port, adminPort] = await freePorts(2)
  const grace = 60_000
  const config = tempFile('gone-second.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'affinity: { key: none }',
    `shutdown: { grace_period: ${grace}ms }`,
    'upstreams:',
    `  - { id: a, url: "${app.url}" }`,
    '',
  ].join('\n'))
  const { proc, reader, exited } = spawnPiped(t, 'fifo', [CLI, '--config', config])
  await waitFor(() => reader.text().includes('"tether listening"') || proc.exitCode !== null, 20_000, 'Tether to start')
  const req = http.get({ host: '127.0.0.1', port, path: '/held', agent: false }, (res) => res.resume())
  req.on('error', () => undefined)
  t.teardown(() => { req.destroy() })
  await waitFor(() => app.seen.some((r) => r.url === '/held'), 10_000, 'the request to reach the upstream')
  reader.close()
  proc.kill('SIGTERM')
  // the held request keeps the graceful stop going (for its 60 s); the listener closes at its start
  await waitFor(() => refused(port!), 10_000, 'the graceful stop to begin (the listener closed)')
  t.equal(proc.exitCode, null, 'still stopping: the held request has its grace period')
  proc.kill('SIGTERM')
  const code = await within(exited, SLACK_MS, 'the second SIGTERM to end Tether (its stdout broken)')
  t.equal(code, 1, 'exits at once, code 1')
})

for (const kind of ['fifo', 'socket'] as const) {
  t.test(`workers: 2 (primary and workers share stdout), a ${kind} whose reader went away: SIGTERM ends them all, exit 0, without waiting out the grace period`, async (t) => {
    const app = await startUpstream('a')
    t.teardown(() => app.close())
    const [port, adminPort] = await freePorts(2)
    // nothing is in flight: no process has a reason to wait for its grace period (a worker stuck
    // in its exit flush was killed by the primary only at its end)
    const grace = 20_000
    const config = tempFile('gone-workers.yaml', [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
      'workers: 2',
      'affinity: { key: none }',
      `shutdown: { grace_period: ${grace}ms }`,
      'upstreams:',
      `  - { id: a, url: "${app.url}" }`,
      '',
    ].join('\n'))
    const { proc, reader, exited } = spawnPiped(t, kind, [CLI, '--config', config])
    await waitFor(() => reader.text().includes('"tether primary: workers started"') || proc.exitCode !== null, 60_000, 'the workers to start')
    reader.close()
    proc.kill('SIGTERM')
    const code = await within(exited, grace / 2, 'the primary to exit after SIGTERM (its stdout broken), before half the grace period')
    t.equal(code, 0, 'a graceful stop')
    // the workers' ends are not announced: poll the port with a deadline
    await waitFor(() => refused(port!), 10_000, 'the proxy port to be free (no worker left)')
  })
}

t.test('a logger whose pipe broke before its lines are written: the exit flush gives up, the process ends', async (t) => {
  // lines logged then process.exit at once: the first write is in flight, the rest wait for the
  // exit's synchronous flush, which meets EPIPE
  const script = `import { createLogger } from ${JSON.stringify(new URL('../dist/observability/logger.js', import.meta.url).href)}
const log = createLogger('info')
process.stdin.once('data', () => {
  for (let i = 0; i < 100; i++) log.info({ i }, 'line')
  process.exit(0)
})`
  for (const kind of ['fifo', 'socket'] as const) {
    const { proc, reader, exited } = spawnPiped(t, kind, ['--input-type=module', '-e', script], 'pipe')
    reader.close()
    proc.stdin!.end('go\n')
    const code = await within(exited, SLACK_MS, `the process to exit (stdout a ${kind} whose reader went away)`)
    t.equal(code, 0, `${kind}: it ends, with its own exit code`)
  }
})
