// The line logged just before an exit (a second signal's `second signal: exiting now`) reaches
// a stdout pipe that another writer has filled (primary and workers share one; a sidecar's
// other stream): an asynchronous write started for it failed with EAGAIN at the exit and nothing
// retried it. The exit now writes it synchronously, retrying the full pipe while its reader
// reads (given up after 1 s without progress). A real Tether, a real FIFO filled by this test
// as the other writer, a reader (this test) that stops reading before the signal and reads again
// once Tether waits in its exit flush.
import t from 'tap'
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
function fill(fd: number): number {
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

for (const mode of MODES) t.test(`${mode.name}: a second SIGTERM while stdout (a FIFO) is full of another writer's bytes: its line arrives once the reader reads on, exit 1`, async (t) => {
  let release: () => void = () => undefined
  const held = new Promise<void>((r) => { release = r })
  const app = await startUpstream('a', (req, res) => { if (req.url === '/held') void held.then(() => res.end('late\n')); else res.end('ok\n') })
  t.teardown(() => { release(); return app.close() })
  const [port, adminPort] = await freePorts(2)
  const config = tempFile('full-pipe.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    `workers: ${mode.workers}`,
    'affinity: { key: none }',
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
  let out = ''
  let reading = true
  let ended = false
  const buf = Buffer.alloc(65536)
  /** Reads what the FIFO holds now; true once every writer closed it. */
  const read = (): boolean => {
    for (;;) {
      let n = 0
      try { n = readSync(rfd, buf) } catch { return ended } // EAGAIN: nothing now
      if (n === 0) return (ended = true)
      out += buf.toString('utf8', 0, n)
    }
  }
  const timer = setInterval(() => { if (reading) read() }, 5)
  t.teardown(() => clearInterval(timer))

  await waitFor(() => out.includes(mode.started) || proc.exitCode !== null, 60_000, 'Tether to start')
  const req = http.get({ host: '127.0.0.1', port, path: '/held', agent: false }, (res) => res.resume())
  req.on('error', () => undefined)
  t.teardown(() => { req.destroy() })
  await waitFor(() => app.seen.some((r) => r.url === '/held'), 10_000, 'the request to reach the upstream')
  proc.kill('SIGTERM')
  // the held request keeps the graceful stop going (for its 60 s)
  await waitFor(() => refused(port!), 10_000, 'the graceful stop to begin (the listener closed)')
  await waitFor(() => out.includes(mode.stopping), 10_000, 'the first signal\'s line')
  t.equal(proc.exitCode, null, 'still stopping: the held request has its grace period')

  // the reader stops; another writer fills the pipe
  reading = false
  read()
  const other = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  const filled = fill(other)
  t.ok(filled > 0, `the other writer filled the pipe (${filled} bytes)`)
  proc.kill('SIGTERM')
  // Tether waits in its exit flush (the main thread pauses in a futex between tries of the full
  // pipe), or it has exited already (the line lost: the failure this test is for)
  await waitFor(() => proc.exitCode !== null || wchan(proc.pid!).includes('futex'), 10_000, 'Tether to exit or to wait in its exit flush')
  closeSync(other)
  reading = true
  const code = await within(exited, 10_000, 'Tether to exit after the second SIGTERM')
  await waitFor(read, 10_000, 'Tether\'s end of the FIFO to close')
  t.equal(code, 1, 'a second signal exits at once, code 1')
  const lines = out.split('\n').filter((l) => l !== '')
  const said = lines.filter((l) => l.includes('"second signal: exiting now"'))
  t.equal(said.length, 1, 'the second signal\'s line arrived')
  const line = said.length === 1 ? JSON.parse(said[0]!) as { signal?: string } : null
  t.equal(line?.signal, 'SIGTERM', 'whole')
})

t.test('a graceful stop that ends while stdout (a FIFO) is full of another writer\'s bytes: its last line (tether stopped) arrives once the reader reads on, exit 0', async (t) => {
  let release: () => void = () => undefined
  const held = new Promise<void>((r) => { release = r })
  const app = await startUpstream('a', (req, res) => { if (req.url === '/held') void held.then(() => res.end('late\n')); else res.end('ok\n') })
  t.teardown(() => { release(); return app.close() })
  const [port, adminPort] = await freePorts(2)
  const config = tempFile('full-pipe-graceful.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'affinity: { key: none }',
    'log: { access: false }',
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
  let out = ''
  let reading = true
  let ended = false
  const buf = Buffer.alloc(65536)
  const read = (): boolean => {
    for (;;) {
      let n = 0
      try { n = readSync(rfd, buf) } catch { return ended } // EAGAIN: nothing now
      if (n === 0) return (ended = true)
      out += buf.toString('utf8', 0, n)
    }
  }
  const timer = setInterval(() => { if (reading) read() }, 5)
  t.teardown(() => clearInterval(timer))
  await waitFor(() => out.includes('"tether listening"') || proc.exitCode !== null, 20_000, 'Tether to start')
  const req = http.get({ host: '127.0.0.1', port, path: '/held', agent: false }, (res) => res.resume())
  req.on('error', () => undefined)
  t.teardown(() => { req.destroy() })
  await waitFor(() => app.seen.some((r) => r.url === '/held'), 10_000, 'the request to reach the upstream')
  proc.kill('SIGTERM')
  await waitFor(() => refused(port!), 10_000, 'the graceful stop to begin (the listener closed)')
  await waitFor(() => out.includes('"signal received"'), 10_000, 'the signal\'s line')
  reading = false
  read()
  const other = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  t.ok(fill(other) > 0, 'the other writer filled the pipe')
  release() // the held request ends: so does the graceful stop, with its last line
  await waitFor(() => proc.exitCode !== null || wchan(proc.pid!).includes('futex'), 10_000, 'Tether to exit or to wait in its exit flush')
  closeSync(other)
  reading = true
  const code = await within(exited, 10_000, 'Tether to exit after its graceful stop')
  await waitFor(read, 10_000, 'Tether\'s end of the FIFO to close')
  t.equal(code, 0, 'a graceful stop')
  t.equal(out.split('\n').filter((l) => l.includes('"msg":"tether stopped"')).length, 1, 'its last line arrived')
})
