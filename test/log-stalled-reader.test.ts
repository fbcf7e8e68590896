// Tether's log lines go to stdout. A reader that stalls (a hung log collector, `tether | less`
// left open) must neither block Tether nor keep it from ending when it is stopped: pino's exit
// flush used to block in write(2) on the full pipe for good. A real Tether whose stdout pipe is
// never read; real requests fill it with access lines.
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, plainNode, ROOT, tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { request, startUpstream } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

t.test('with a stdout pipe (a socket) nobody reads, Tether serves on and ends at SIGTERM', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const port = await freePort()
  const config = tempFile('stalled.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    'affinity: { key: none }',
    'upstreams:',
    `  - { id: a, url: "${app.url}" }`,
    '',
  ].join('\n'))
  // Node's stdio 'pipe' is a socket (as systemd's journal), which cannot be opened again
  // non-blocking; without tap's loader, which made it non-blocking on Node 20 and 22
  const proc = spawn(...plainNode([CLI, '--config', config]), { cwd: ROOT, stdio: ['ignore', 'pipe', 'ignore'] })
  proc.stdout.pause() // nobody reads: the pipe fills up
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  t.teardown(() => { proc.kill('SIGKILL') })
  await waitFor(async () => (await request(`http://127.0.0.1:${port}/`).catch(() => null))?.status === 200, 10_000, 'Tether to serve')
  // ~4.3 KB an access line (its path), 2.6 MB in all: far more than the socket (its ~208 KiB
  // send buffer) and the paused reader (up to 64 KiB) hold
  const pad = 'x'.repeat(4000)
  let served = 0
  for (let i = 0; i < 600; i++) if ((await request(`http://127.0.0.1:${port}/?n=${i}&pad=${pad}`)).status === 200) served++
  t.equal(served, 600, 'every request is served while nobody reads the log')
  proc.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  const code = await Promise.race([exited, new Promise<string>((r) => { timer = setTimeout(r, 10_000, 'still running') })])
  clearTimeout(timer)
  t.equal(code, 0, 'it ends, and cleanly')
})

t.test('at exit, a reader that keeps reading gets every line, however long the backlog takes', async (t) => {
  // 20,000 lines (~2 MB) logged at once, then exit: the pipe takes 64 KiB at a time
  const script = `import { createLogger } from ${JSON.stringify(new URL('../dist/observability/logger.js', import.meta.url).href)}
const log = createLogger('info')
for (let i = 0; i < 20000; i++) log.info({ i, pad: 'x'.repeat(40) }, 'line')
process.exit(0)`
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] })
  let lines = 0
  let rest = ''
  proc.stdout.on('data', (c: Buffer) => {
    const text = rest + c.toString()
    const parts = text.split('\n')
    rest = parts.pop()!
    lines += parts.length
  })
  const code = await within(new Promise<number | null>((resolve) => proc.on('close', (c) => resolve(c))), 30_000, 'the writer to end')
  t.equal(code, 0)
  t.equal(lines, 20_000, 'every line arrived')
})

t.test('lines dropped over the 16 MiB bound are counted, and said in one line once stdout takes lines again', async (t) => {
  // ~20 MB logged while nobody reads: what does not fit is dropped, and the count arrives whole
  // (the summary itself must fit in a bound filled to the byte)
  const script = `import { createLogger } from ${JSON.stringify(new URL('../dist/observability/logger.js', import.meta.url).href)}
const log = createLogger('info')
for (let i = 0; i < 20000; i++) log.info({ i, pad: 'x'.repeat(1000) }, 'line')
for (let i = 0; i < 2000; i++) log.info({ i }, 'line') // short ones fill the bound to the byte
process.stderr.write('logged\\n')
setTimeout(() => process.exit(0), 3000)`
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  proc.stdout.pause()
  await within(new Promise((r) => proc.stderr.once('data', r)), 30_000, 'the lines to be logged')
  const records: Record<string, unknown>[] = []
  let rest = ''
  proc.stdout.on('data', (c: Buffer) => {
    const parts = (rest + c.toString()).split('\n')
    rest = parts.pop()!
    for (const p of parts) records.push(JSON.parse(p) as Record<string, unknown>)
  })
  proc.stdout.resume()
  await within(new Promise((r) => proc.on('close', r)), 30_000, 'the writer to end')
  const lines = records.filter((r) => r['msg'] === 'line').length
  const summaries = records.filter((r) => typeof r['dropped'] === 'number')
  t.ok(lines < 22_000, `some lines were dropped (${22_000 - lines})`)
  t.equal(summaries.length, 1, 'one line says so')
  t.equal(summaries[0]?.['dropped'], 22_000 - lines, 'with the right count')
})

t.test('at exit, a FIFO reader that is only slow gets every line whole, also the ones a write was waiting to retry', async (t) => {
  // stdout a FIFO (a container runtime's, `tether | ...`; Node's own stdio pipes are sockets),
  // not read while 2,000 lines are logged over a few ticks (the pipe fills: a write waits to be
  // retried), then exit; the reader reads from the exit on
  const dir = mkdtempSync(join(tmpdir(), 'tether-fifo-'))
  const fifo = join(dir, 'stdout')
  execFileSync('mkfifo', [fifo])
  const rfd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  t.teardown(() => closeSync(rfd))
  const wfd = openSync(fifo, constants.O_WRONLY)
  const script = `import { writeSync } from 'node:fs'
import { createLogger } from ${JSON.stringify(new URL('../dist/observability/logger.js', import.meta.url).href)}
process.on('exit', () => writeSync(2, 'exiting\\n')) // before the logger's exit flush
const log = createLogger('info')
let i = 0
const timer = setInterval(() => {
  for (let k = 0; k < 100; k++) log.info({ i: i++, pad: 'x'.repeat(100) }, 'line')
  if (i === 2000) { clearInterval(timer); setTimeout(() => process.exit(0), 300) }
}, 1)`
  const proc = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: ROOT, stdio: ['ignore', wfd, 'pipe'] })
  closeSync(wfd)
  t.teardown(() => { proc.kill('SIGKILL') })
  let exiting = false
  proc.stderr!.on('data', (c: Buffer) => { if (c.toString().includes('exiting')) exiting = true })
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  let out = ''
  let ended = false
  const read = (): boolean => {
    const buf = Buffer.alloc(65536)
    for (;;) {
      let n = 0
      try { n = readSync(rfd, buf) } catch { return ended } // EAGAIN: nothing more now
      if (n === 0) return (ended = true)
      out += buf.toString('utf8', 0, n)
    }
  }
  await waitFor(() => exiting, 30_000, 'the writer to exit')
  await waitFor(read, 30_000, 'the writer to close the FIFO')
  t.equal(await exited, 0)
  const lines = out.split('\n').filter((l) => l !== '')
  const broken = lines.filter((l) => { try { JSON.parse(l); return false } catch { return true } })
  t.same(broken, [], 'no line cut')
  const seen = new Set(lines.flatMap((l) => { try { return [(JSON.parse(l) as { i: number }).i] } catch { return [] } }))
  t.equal(seen.size, 2000, 'every line arrived')
  t.equal(lines.length, 2000, 'once')
})
