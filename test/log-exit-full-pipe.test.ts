// The line logged just before an exit (a second signal's `second signal: exiting now`) reaches
// a stdout pipe that another writer has filled (primary and workers share one; a sidecar's
// other stream): an asynchronous write started for it failed with EAGAIN at the exit and nothing
// retried it. The exit now writes it synchronously, retrying the full pipe while its reader
// reads (given up after 1 s without progress). A real Tether, a real FIFO filled by this test
// as the other writer, a reader (this test) that stops reading before the signal and reads again
// once Tether waits in its exit flush.
import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readFileSync, readSync, writeSync } from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, plainNode, ROOT, tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

/** Whether nothing listens on 127.0.0.1:`port` any more. */
function refused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(false) })
    s.on('error', () => resolve(true))
  })
}

/** What process `pid`'s main thread sleeps in (Linux: /proc/PID/wchan; '' when gone). */
function wchan(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/wchan`, 'utf8')
  } catch {
    return ''
  }
}

/** Write to the non-blocking `fd` until the pipe takes nothing more (EAGAIN); the bytes written. */
function fillFd(fd: number): number {
  let total = 0
  for (const size of [65536, 4096, 1]) {
    const chunk = Buffer.alloc(size, '\n')
    for (;;) {
      try {
        total += writeSync(fd, chunk)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EAGAIN') break
        throw err
      }
    }
  }
  return total
}

const MODES = [
  { name: 'one process', workers: 1, started: '"tether listening"', stopping: '"signal received"' },
  { name: 'workers: 2 (the primary\'s line)', workers: 2, started: '"tether primary: workers started"', stopping: '"signal received: stopping the workers"' },
] as const

/**
 * A Tether (a child process, config `lines` after listen/admin) whose stdout is a FIFO this test
 * reads every 5 ms while `reader.on`, with one request held at its upstream (`release()` ends it)
 * so that a graceful stop lasts. `read()` takes what the FIFO holds now: true once every writer
 * closed it. `fill()` opens a second writer and fills the pipe (its fd, to close).
 */
async function tetherOnFifo(t: Test, name: string, lines: string[]) {
  let release: () => void = () => undefined
  const held = new Promise<void>((r) => { release = r })
  const app = await startUpstream('a', (req, res) => { if (req.url === '/held') void held.then(() => res.end('late\n')); else res.end('ok\n') })
  t.teardown(() => { release(); return app.close() })
  const [port, adminPort] = await freePorts(2)
  const config = tempFile(name, [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    ...lines,
    'shutdown: { grace_period: 60s }',
    'upstreams:',
    `  - { id: a, url: "${app.url}" }`,
    '',
  ].join('\n'))
  const dir = mkdtempSync(join(tmpdir(), 'tether-full-pipe-'))
  const fifo = join(dir, 'stdout')
  execFileSync('mkfifo', [fifo])
  const rfd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  t.teardown(() => closeSync(rfd))
  const wfd = openSync(fifo, constants.O_WRONLY)
  const proc = spawn(...plainNode([CLI, '--config', config]), { cwd: ROOT, stdio: ['ignore', wfd, 'ignore'] })
  closeSync(wfd)
  t.teardown(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') })
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  const reader = { on: true, out: '' }
  let ended = false
  const buf = Buffer.alloc(65536)
  const read = (): boolean => {
    for (;;) {
      let n = 0
      try { n = readSync(rfd, buf) } catch { return ended } // EAGAIN: nothing now
      if (n === 0) return (ended = true)
      reader.out += buf.toString('utf8', 0, n)
    }
  }
  const timer = setInterval(() => { if (reader.on) read() }, 5)
  t.teardown(() => clearInterval(timer))
  /** Sends the request that is held, once Tether logged `started`; resolves once it reached the upstream. */
  const hold = async (started: string): Promise<void> => {
    await waitFor(() => reader.out.includes(started) || proc.exitCode !== null, 60_000, 'Tether to start')
    const req = http.get({ host: '127.0.0.1', port, path: '/held', agent: false }, (res) => res.resume())
    req.on('error', () => undefined)
    t.teardown(() => { req.destroy() })
    await waitFor(() => app.seen.some((r) => r.url === '/held'), 10_000, 'the request to reach the upstream')
  }
  const fill = (): { fd: number; bytes: number } => {
    const fd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
    return { fd, bytes: fillFd(fd) }
  }
  return { proc, exited, port: port!, reader, read, hold, fill, release: () => release() }
}

for (const mode of MODES) t.test(`${mode.name}: a second SIGTERM while stdout (a FIFO) is full of another writer's bytes: its line arrives once the reader reads on, exit 1`, async (t) => {
  const tether = await tetherOnFifo(t, 'full-pipe.yaml', [`workers: ${mode.workers}`, 'affinity: { key: none }'])
  const { proc, reader } = tether
  await tether.hold(mode.started)
  proc.kill('SIGTERM')
  // the held request keeps the graceful stop going (for its 60 s)
  await waitFor(() => refused(tether.port), 10_000, 'the graceful stop to begin (the listener closed)')
  await waitFor(() => reader.out.includes(mode.stopping), 10_000, 'the first signal\'s line')
  t.equal(proc.exitCode, null, 'still stopping: the held request has its grace period')

  // the reader stops; another writer fills the pipe
  reader.on = false
  tether.read()
  const other = tether.fill()
  t.ok(other.bytes > 0, `the other writer filled the pipe (${other.bytes} bytes)`)
  proc.kill('SIGTERM')
  // Tether waits in its exit flush (the main thread pauses in a futex between tries of the full
  // pipe), or it has exited already (the line lost: the failure this test is for)
  await waitFor(() => proc.exitCode !== null || wchan(proc.pid!).includes('futex'), 10_000, 'Tether to exit or to wait in its exit flush')
  closeSync(other.fd)
  reader.on = true
  const code = await within(tether.exited, 10_000, 'Tether to exit after the second SIGTERM')
  await waitFor(tether.read, 10_000, 'Tether\'s end of the FIFO to close')
  t.equal(code, 1, 'a second signal exits at once, code 1')
  const lines = reader.out.split('\n').filter((l) => l !== '')
  const said = lines.filter((l) => l.includes('"second signal: exiting now"'))
  t.equal(said.length, 1, 'the second signal\'s line arrived')
  const line = said.length === 1 ? JSON.parse(said[0]!) as { signal?: string } : null
  t.equal(line?.signal, 'SIGTERM', 'whole')
})

t.test('a graceful stop that ends while stdout (a FIFO) is full of another writer\'s bytes: its last line (tether stopped) arrives once the reader reads on, exit 0', async (t) => {
  const tether = await tetherOnFifo(t, 'full-pipe-graceful.yaml', ['affinity: { key: none }', 'log: { access: false }'])
  const { proc, reader } = tether
  await tether.hold('"tether listening"')
  proc.kill('SIGTERM')
  await waitFor(() => refused(tether.port), 10_000, 'the graceful stop to begin (the listener closed)')
  await waitFor(() => reader.out.includes('"signal received"'), 10_000, 'the signal\'s line')
  reader.on = false
  tether.read()
  const other = tether.fill()
  t.ok(other.bytes > 0, 'the other writer filled the pipe')
  tether.release() // the held request ends: so does the graceful stop, with its last line
  await waitFor(() => proc.exitCode !== null || wchan(proc.pid!).includes('futex'), 10_000, 'Tether to exit or to wait in its exit flush')
  closeSync(other.fd)
  reader.on = true
  const code = await within(tether.exited, 10_000, 'Tether to exit after its graceful stop')
  await waitFor(tether.read, 10_000, 'Tether\'s end of the FIFO to close')
  t.equal(code, 0, 'a graceful stop')
  t.equal(reader.out.split('\n').filter((l) => l.includes('"msg":"tether stopped"')).length, 1, 'its last line arrived')
})
