// The process's last resort: a promise rejection nobody handled (a library's, in a reconnect
// path) is logged at error level as a bug, and Tether keeps running and serving. Node's default
// would end the process, and the same Redis event would end every replica at once. An exception
// nobody caught ends the process, as Node's default does, but logged as one JSON line through
// the logger's serializer, not printed with its secrets.
import t, { type Test } from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { closeSync, constants, mkdtempSync, openSync, readSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'node:http'
import { CLI, plainNode, ROOT } from './fixtures/cli.js'
import { startChildTether } from './fixtures/raw-tether.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

// loaded before Tether: SIGUSR2 makes a rejection that nothing handles
const HOOK = `data:text/javascript,${encodeURIComponent("process.on('SIGUSR2', () => { Promise.reject(new Error('stray rejection from a test hook')) })")}`

function get(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/' }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject).end()
  })
}

// loaded before Tether: SIGUSR2 makes an unhandled rejection with secrets in it, as an ioredis
// ReplyError for AUTH carries (its command's args) and as a library's message may (a URL); each
// secret is put together at run time, as the stack names this source
const SECRET_HOOK = `data:text/javascript,${encodeURIComponent(`process.on('SIGUSR2', () => {
  const pw = (what) => 'pw-in-' + what
  const err = new Error('cannot reach redis://tether:' + pw('message') + '@redis:6379', { cause: new Error('via rediss://:' + pw('cause') + '@sentinel:26379') })
  err.name = 'ReplyError'
  err.command = { name: 'auth', args: ['tether', pw('args')] }
  err.code = 'WRONGPASS'
  Promise.reject(err)
})`)}`

// loaded before Tether: SIGUSR2 throws, synchronously from an event handler, an error with
// secrets in it (as SECRET_HOOK's)
const THROW_HOOK = SECRET_HOOK.replace(encodeURIComponent('Promise.reject(err)'), encodeURIComponent('throw err'))

/** A Tether child (with `hook`) in front of one upstream; `extra`: more config lines. */
async function start(t: Test, extra: string[], hook = HOOK): Promise<Awaited<ReturnType<typeof startChildTether>>> {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const child = await startChildTether([
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    `upstreams: [ { id: app-0, url: "${app.url}" } ]`,
    ...extra,
    'log: { level: info, access: false }',
  ].join('\n'), 60_000, [`--import=${hook}`])
  t.teardown(() => child.kill())
  return child
}

t.test('an unhandled rejection is logged at error level as a bug, and the process keeps serving', async (t) => {
  const child = await start(t, [])
  t.equal(await get(child.port), 200, 'serves before')
  child.proc.kill('SIGUSR2')
  const line = (): Record<string, unknown> | undefined => child.stdout().split('\n').filter((l) => l.includes('unhandled promise rejection'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)[0]
  await waitFor(() => line() !== undefined, 5_000, 'the unhandled rejection to be logged')
  t.equal(line()?.['level'], 50, 'at error level')
  t.match(line()?.['msg'], /a bug .*not fatal/, 'saying it is a bug, not fatal')
  t.match((line()?.['err'] as { message?: string } | undefined)?.message, 'stray rejection from a test hook', 'with the error')
  t.equal(child.proc.exitCode, null, 'the process did not exit')
  t.equal(await get(child.port), 200, 'and still serves')
})

t.test('with workers, a worker logs it with its worker field, as its other lines, and keeps serving', async (t) => {
  const child = await start(t, ['workers: 2'])
  // start() returns at the first worker's "tether listening": the other may still be booting, its
  // hook not loaded yet, and SIGUSR2's default action would end it unlogged
  await waitFor(() => jsonLines(child.stdout()).filter((l) => l['msg'] === 'tether listening').length >= 2, 15_000, 'both workers to listen')
  t.equal(await get(child.port), 200, 'serves before')
  const workers = execFileSync('pgrep', ['-P', String(child.proc.pid)], { encoding: 'utf8' }).trim().split('\n').map(Number)
  t.equal(workers.length, 2, 'two worker processes')
  process.kill(workers[0]!, 'SIGUSR2')
  const line = (): Record<string, unknown> | undefined => jsonLines(child.stdout()).find((l) => String(l['msg']).includes('unhandled promise rejection'))
  await waitFor(() => line() !== undefined, 5_000, 'the unhandled rejection to be logged')
  t.equal(line()?.['level'], 50, 'at error level')
  t.type(line()?.['worker'], 'number', 'with its worker field, as its other lines')
  t.equal(child.proc.exitCode, null, 'the primary did not exit')
  t.equal(await get(child.port), 200, 'and still serves')
})

t.test("an unhandled rejection's secrets are not logged: a Redis command's args, a URL's password in its message and cause", async (t) => {
  const child = await start(t, [], SECRET_HOOK)
  child.proc.kill('SIGUSR2')
  const text = (): string | undefined => child.stdout().split('\n').find((l) => l.includes('unhandled promise rejection'))
  await waitFor(() => text() !== undefined, 5_000, 'the unhandled rejection to be logged')
  for (const secret of ['pw-in-message', 'pw-in-cause', 'pw-in-args']) t.notMatch(text(), secret, `${secret} not logged`)
  const err = (JSON.parse(text()!) as { err: Record<string, unknown> }).err
  t.match(err, {
    name: 'ReplyError',
    code: 'WRONGPASS',
    message: 'cannot reach redis://tether:***@redis:6379: via rediss://:***@sentinel:26379',
    command: { name: 'auth' },
  }, 'the rest of the error is kept: name, code, message (masked), the command name')
  t.match(err['stack'], /^ReplyError: cannot reach redis:\/\/tether:\*\*\*@redis/, 'and its stack')
  t.notOk('args' in (err['command'] as object), 'the args are left out')
})

/** The JSON lines of `text` (stdout), parsed: whole lines only (the last one may still be arriving). */
function jsonLines(text: string): Record<string, unknown>[] {
  return text.split('\n').slice(0, -1).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('an uncaught exception is logged as one fatal JSON line without its secrets, and the process exits with code 1', async (t) => {
  const child = await start(t, [], THROW_HOOK)
  t.not(THROW_HOOK, SECRET_HOOK, 'the hook throws')
  child.proc.kill('SIGUSR2')
  const exit = await child.exited
  t.same(exit, { code: 1, signal: null }, "exit code 1, as Node's default")
  // (stdout may still be read after the exit event)
  await waitFor(() => child.stdout().includes('uncaught exception'), 10_000, 'the fatal line')
  for (const secret of ['pw-in-message', 'pw-in-cause', 'pw-in-args']) {
    t.notMatch(child.stdout(), secret, `${secret} not on stdout`)
    t.notMatch(child.stderr(), secret, `${secret} not on stderr`)
  }
  const line = jsonLines(child.stdout()).find((l) => String(l['msg']).startsWith('uncaught exception'))
  t.equal(line?.['level'], 60, 'one fatal JSON line, flushed before the exit')
  t.match(line?.['err'], { name: 'ReplyError', code: 'WRONGPASS', message: /^cannot reach redis:\/\/tether:\*\*\*@redis:6379/, command: { name: 'auth' } }, 'with the error, masked')
})

t.test("with workers, a worker's uncaught exception is logged without secrets and is a crash the primary restarts", async (t) => {
  const child = await start(t, ['workers: 2'], THROW_HOOK)
  const listening = (): Record<string, unknown>[] => jsonLines(child.stdout()).filter((l) => l['msg'] === 'tether listening')
  // both started (a worker that fails its first start ends the primary instead)
  await waitFor(() => listening().length >= 2, 15_000, 'both workers to listen')
  const before = listening().length
  const workers = execFileSync('pgrep', ['-P', String(child.proc.pid)], { encoding: 'utf8' }).trim().split('\n').map(Number)
  process.kill(workers[0]!, 'SIGUSR2')
  const restarted = (): Record<string, unknown> | undefined => jsonLines(child.stdout()).find((l) => l['msg'] === 'worker died; restarting it')
  await waitFor(() => restarted() !== undefined, 15_000, 'the primary to restart the worker')
  t.equal(restarted()?.['code'], 1, 'the worker exited with code 1: a crash')
  const fatal = jsonLines(child.stdout()).find((l) => String(l['msg']).startsWith('uncaught exception'))
  t.equal(fatal?.['level'], 60, 'the worker logged it as fatal')
  t.type(fatal?.['worker'], 'number', 'with its worker field')
  for (const secret of ['pw-in-message', 'pw-in-cause', 'pw-in-args']) t.notMatch(child.stdout() + child.stderr(), secret, `${secret} not shown`)
  t.equal(child.proc.exitCode, null, 'the primary did not exit')
  await waitFor(() => listening().length > before, 15_000, 'the restarted worker to listen')
  t.equal(await get(Number(new URL(String(listening().at(-1)!['url'])).port)), 200, 'and the restarted worker serves')
})

// loaded before Tether: SIGUSR2 fills stdout (a FIFO) to the byte and throws as THROW_HOOK does;
// the first synchronous write to it after that says "flushing" on stderr: the test's reader
// reads from then on (a slow one). It fills the pipe through a descriptor of its own opened
// non-blocking: fd 1 blocks (a child's stdio starts blocking), and a write to it would wait for
// the reader for good.
const FULL_PIPE_THROW_HOOK = `data:text/javascript,${encodeURIComponent(`import fs from 'node:fs'
process.on('SIGUSR2', () => {
  const fd = fs.openSync('/proc/self/fd/1', fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)
  for (const chunk of ['\\n'.repeat(4096), '\\n']) for (;;) { try { fs.writeSync(fd, chunk) } catch { break } }
  fs.closeSync(fd)
  const writeSync = fs.writeSync
  fs.writeSync = (fd, ...rest) => {
    if (fd !== 2) { fs.writeSync = writeSync; writeSync(2, 'flushing\\n') }
    return writeSync(fd, ...rest)
  }
  const err = new Error('thrown while the log pipe is full')
  err.command = { name: 'auth', args: ['tether', 'pw-in-' + 'args'] }
  throw err
})`)}`

/** Tether (with FULL_PIPE_THROW_HOOK) whose stdout is a FIFO that the test reads only when it calls `read()`. */
async function startOnFifo(t: Test): Promise<{ proc: ReturnType<typeof spawn>; exited: Promise<number | null>; read: () => string; flushing: () => boolean }> {
  // a FIFO, as a container runtime's or a shell's `tether | ...` (Node's own stdio pipes are sockets)
  const dir = mkdtempSync(join(tmpdir(), 'tether-fifo-'))
  const fifo = join(dir, 'stdout')
  execFileSync('mkfifo', [fifo])
  const rfd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  t.teardown(() => closeSync(rfd))
  const wfd = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const config = join(dir, 'tether.yaml')
  writeFileSync(config, ['listen: { host: 127.0.0.1, port: 0 }', 'admin: { listen: { host: 127.0.0.1, port: 0 } }', `upstreams: [ { id: app-0, url: "${app.url}" } ]`, 'log: { level: info, access: false }', ''].join('\n'))
  // without tap's loader (on Node 20 and 22 it makes fd 1 non-blocking)
  const proc = spawn(...plainNode([`--import=${FULL_PIPE_THROW_HOOK}`, CLI, '--config', config]), { cwd: ROOT, stdio: ['ignore', wfd, 'pipe'] })
  closeSync(wfd)
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  t.teardown(() => { proc.kill('SIGKILL') })
  let flushing = false
  proc.stderr!.on('data', (c: Buffer) => { if (c.toString().includes('flushing')) flushing = true })
  let out = ''
  const read = (): string => {
    const buf = Buffer.alloc(65536)
    for (;;) {
      let n = 0
      try { n = readSync(rfd, buf) } catch { return out } // EAGAIN: nothing more now
      if (n === 0) return out
      out += buf.toString('utf8', 0, n)
    }
  }
  await waitFor(() => read().includes('"tether listening"'), 30_000, 'tether to listen')
  return { proc, exited, read, flushing: () => flushing }
}

t.test("an uncaught exception's fatal line reaches a slow reader of a stdout FIFO that was full when it was logged", async (t) => {
  const { proc, exited, read, flushing } = await startOnFifo(t)
  proc.kill('SIGUSR2')
  // nothing is read until the fatal line, logged into the full pipe, is written synchronously
  // (or the process has exited without doing so)
  await waitFor(() => flushing() || proc.exitCode !== null, 10_000, 'the process to flush or exit')
  await waitFor(() => read().includes('uncaught exception') || proc.exitCode !== null, 10_000, 'the fatal line or the exit')
  t.equal(await exited, 1, 'exit code 1')
  const line = jsonLines(read()).find((l) => String(l['msg']).startsWith('uncaught exception'))
  t.match(line, { level: 60, err: { message: 'thrown while the log pipe is full', command: { name: 'auth' } } }, 'the fatal line, whole')
  t.notMatch(read(), 'pw-in-args', 'without the secret')
})

t.test('an uncaught exception with a stdout FIFO whose reader stalled: the process still exits (the line is given up)', async (t) => {
  const { proc, exited } = await startOnFifo(t)
  proc.kill('SIGUSR2')
  t.equal(await within(exited, 15_000, 'the process to exit'), 1, 'exit code 1, nothing read')
})

// loaded before Tether: SIGUSR2 throws an error that the serializer cannot log (a field whose toJSON throws)
const UNLOGGABLE_THROW_HOOK = `data:text/javascript,${encodeURIComponent(`process.on('SIGUSR2', () => {
  throw Object.assign(new Error('unloggable'), { detail: { toJSON() { throw new Error('toJSON failed') } } })
})`)}`

t.test('an uncaught exception that cannot be logged still says so on stderr, and the process exits with code 1', async (t) => {
  const child = await start(t, [], UNLOGGABLE_THROW_HOOK)
  child.proc.kill('SIGUSR2')
  t.same(await child.exited, { code: 1, signal: null }, 'exit code 1')
  await waitFor(() => child.stderr().includes('uncaught exception'), 10_000, 'a line on stderr')
  t.match(child.stderr(), /^tether: uncaught exception .*could not be logged/m)
})
