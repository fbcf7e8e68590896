// stdout is a log file (`tether > /var/log/tether.log`) on a disk that fills up: writes fail
// with ENOSPC. Tether must serve on, drop (and count) the lines logged while the disk is full,
// and log again once there is room, with one line saying how many lines were dropped and why,
// as nginx keeps trying its error_log. Before, the first failed write turned logging off for
// good, silently. A real Tether whose stdout is a file on a real 64 KiB tmpfs (made with mount:
// root, as CI runs), filled by this test and freed again; /dev/full for a disk that stays full.
import t, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, unlinkSync, writeFileSync, writeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, plainNode, ROOT, tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startUpstream } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

/** Tether's config: access lines on (each request logs one), a short grace period. */
async function config(appUrl: string, extra: readonly string[] = []): Promise<{ path: string; port: number; adminPort: number }> {
  const [port, adminPort] = await freePorts(2)
  const path = tempFile('disk-full.yaml', [
    ...extra,
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'affinity: { key: none }',
    'log: { access: true }',
    'shutdown: { grace_period: 2s }',
    'upstreams:',
    `  - { id: a, url: "${appUrl}" }`,
    '',
  ].join('\n'))
  return { path, port: port!, adminPort: adminPort! }
}

/** `tether_log_lines_dropped_total{reason}` on Tether's admin listener (null: not served). */
async function dropped(adminPort: number, reason: string): Promise<number | null> {
  const r = await request(`http://127.0.0.1:${adminPort}/metrics`).catch(() => null)
  const m = r === null ? null : new RegExp(`^tether_log_lines_dropped_total\\{reason="${reason}"\\} (\\d+)$`, 'm').exec(r.body)
  return m === null ? null : Number(m[1])
}

/** `tether_config_reloads_total{result}` on Tether's admin listener (0: not counted yet). */
async function reloads(adminPort: number, result: 'ok' | 'failed'): Promise<number> {
  const r = await request(`http://127.0.0.1:${adminPort}/metrics`).catch(() => null)
  const m = r === null ? null : new RegExp(`^tether_config_reloads_total\\{result="${result}"\\} (\\d+)$`, 'm').exec(r.body)
  return m === null ? 0 : Number(m[1])
}

/** Tether run with stdout the file descriptor `fd` (closed here once the child has it). */
function run(t: Test, configPath: string, fd: number): { proc: ChildProcess; exited: Promise<number | null> } {
  const proc = spawn(...plainNode([CLI, '--config', configPath]), { cwd: ROOT, stdio: ['ignore', fd, 'ignore'] })
  closeSync(fd)
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
  t.teardown(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') })
  return { proc, exited }
}

/** Writes to `path` until its file system is full (ENOSPC); the bytes written. */
function fillUp(path: string): number {
  const fd = openSync(path, 'w')
  let total = 0
  try {
    for (const size of [4096, 1]) {
      const chunk = Buffer.alloc(size, 'x')
      for (;;) {
        try {
          total += writeSync(fd, chunk)
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break
          throw err
        }
      }
    }
  } finally {
    closeSync(fd)
  }
  return total
}

t.test('a log file whose disk fills up and is freed: Tether serves on, drops and counts lines, then logs again and says how many it dropped', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'tether-disk-full-'))
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt], { stdio: 'pipe' })
  } catch (err) {
    rmSync(mnt, { recursive: true, force: true })
    // never skipped silently: the case this test is for needs a real file system that fills up
    t.fail(`this test needs root, to mount a 64 KiB tmpfs that fills up (mount -t tmpfs: ${String((err as { stderr?: unknown }).stderr ?? err).trim()}): run it as root, as CI does`)
    return
  }
  let tether: Promise<unknown> = Promise.resolve()
  t.teardown(async () => {
    await tether // (its stdout is on the mount)
    execFileSync('umount', [mnt])
    rmSync(mnt, { recursive: true, force: true })
  })
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const { path, port, adminPort } = await config(app.url)
  const logFile = join(mnt, 'tether.log')
  const { proc, exited } = run(t, path, openSync(logFile, 'w'))
  tether = exited
  const log = (): string => readFileSync(logFile, 'utf8')
  await waitFor(() => log().includes('"tether listening"') || proc.exitCode !== null, 20_000, 'Tether to start')

  let served = 0
  let sent = 0
  const get = async (): Promise<void> => {
    sent++
    if ((await request(`http://127.0.0.1:${port}/?n=${sent}`)).status === 200) served++
  }
  const filler = join(mnt, 'filler')
  t.ok(fillUp(filler) > 0, 'the disk is full')
  // the log file's last page still takes a few lines, then a write fails
  await waitFor(async () => { await get(); return ((await dropped(adminPort, 'write_error')) ?? 0) >= 5 }, 15_000, '5 access lines dropped (write_error)')
  const droppedWhileFull = (await dropped(adminPort, 'write_error'))!
  unlinkSync(filler)
  // the next line after the back-off (at most 1 s) is written, then the line that says the count
  await waitFor(async () => { await get(); return log().includes('"reason":"write_error"') }, 15_000, 'the line that says how many lines were dropped')
  await get()
  await waitFor(async () => { await get(); return /"reason":"write_error".*\n(.*\n)*.*"msg":"access"/.test(log()) }, 15_000, 'access lines after it')
  t.equal(served, sent, `every request was served (${sent}), while the disk was full too`)
  const lines = log().split('\n').filter((l) => l !== '')
  const broken = lines.filter((l) => { try { JSON.parse(l); return false } catch { return true } })
  t.same(broken, [], 'no line cut: a line a failed write had begun is finished, the others dropped whole')
  const summaries = lines.flatMap((l) => { try { return [JSON.parse(l) as Record<string, unknown>] } catch { return [] } }).filter((r) => r['reason'] === 'write_error')
  t.equal(summaries.length, 1, 'one line says it')
  t.match(summaries[0], { level: 40, error: 'ENOSPC', dropped: Number }, 'a warning, with the error')
  const total = await dropped(adminPort, 'write_error')
  t.equal(summaries[0]?.['dropped'], total, `with the count the metric has (${total})`)
  t.ok(total! >= droppedWhileFull, 'the metric never went down')
  proc.kill('SIGTERM')
  t.equal(await within(exited, 15_000, 'Tether to exit after SIGTERM'), 0, 'a graceful stop')
})

t.test('stdout on a disk that stays full (/dev/full: every write ENOSPC): Tether serves, counts the dropped lines, and ends at SIGTERM', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const { path, port, adminPort } = await config(app.url)
  const { proc, exited } = run(t, path, openSync('/dev/full', 'w'))
  await waitFor(async () => (await dropped(adminPort, 'write_error')) !== null || proc.exitCode !== null, 20_000, 'Tether to serve its metrics')
  let served = 0
  for (let i = 0; i < 20; i++) if ((await request(`http://127.0.0.1:${port}/?n=${i}`)).status === 200) served++
  t.equal(served, 20, 'every request is served')
  await waitFor(async () => ((await dropped(adminPort, 'write_error')) ?? 0) >= 1, 10_000, 'dropped lines counted')
  t.equal(await dropped(adminPort, 'reader_gone'), 0, 'as a write error, not as a reader gone')
  proc.kill('SIGTERM')
  t.equal(await within(exited, 15_000, 'Tether to exit after SIGTERM'), 0, 'a graceful stop')
})

t.test('workers: 2, stdout on /dev/full: the primary\'s /metrics counts the primary\'s own dropped lines too, not only the workers\'', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const { path, adminPort } = await config(app.url, ['workers: 2'])
  const { proc, exited } = run(t, path, openSync('/dev/full', 'w'))
  await waitFor(async () => ((await dropped(adminPort, 'write_error')) ?? 0) >= 1 || proc.exitCode !== null, 20_000, 'Tether (primary and workers) to serve its metrics, with dropped lines')
  // lines only the primary logs: each SIGHUP with a file it rejects is two (`SIGHUP: reloading
  // ...`, `config reload rejected ...`; the file watch's own rejection of the change, one more);
  // the workers are told nothing and, without traffic, log nothing
  writeFileSync(path, 'listen: [not a config\n')
  const before = (await dropped(adminPort, 'write_error'))!
  const failedBefore = await reloads(adminPort, 'failed')
  const hups = 3
  for (let i = 0; i < hups; i++) {
    const failed = await reloads(adminPort, 'failed')
    proc.kill('SIGHUP')
    await waitFor(async () => await reloads(adminPort, 'failed') > failed, 10_000, `the primary to reject the file (SIGHUP ${i + 1})`)
  }
  const failed = await reloads(adminPort, 'failed') - failedBefore
  let after = before
  await waitFor(async () => (after = (await dropped(adminPort, 'write_error'))!) - before >= 2 * hups, 10_000, `the primary's ${2 * hups}+ dropped lines counted (${failed} rejections)`).catch(() => undefined)
  t.comment(`dropped (write_error) ${before} -> ${after}; ${failed} rejected reloads`)
  t.ok(after - before >= 2 * hups, `the primary's own lines (at least ${2 * hups}) are counted: ${after - before}`)
  proc.kill('SIGTERM')
  t.equal(await within(exited, 15_000, 'Tether to exit after SIGTERM'), 0, 'a graceful stop')
})

t.test('a write that fails with EIO at once before an exit: the line it had begun and the count of the others are written by the exit flush', async (t) => {
  // in a child process, fs.write (sonic-boom's asynchronous write) fails with EIO for stdout
  // while `failing` (fault injection at the syscall's boundary: no real device fails on demand)
  const script = `import fs from 'node:fs'
import { createLogger, logLinesDropped } from ${JSON.stringify(new URL('../dist/observability/logger.js', import.meta.url).href)}
const write = fs.write
let failing = true
fs.write = function (fd, ...rest) {
  if (!failing || fd !== 1) return write.call(this, fd, ...rest)
  process.nextTick(rest.at(-1), Object.assign(new Error('EIO: i/o error, write'), { code: 'EIO', errno: -5, syscall: 'write' }))
}
const log = createLogger('info')
for (let i = 0; i < 5; i++) log.info({ i }, 'line')
while (logLinesDropped().write_error + logLinesDropped().reader_gone < 4) await new Promise((r) => setImmediate(r))
failing = false
process.exit(0)`
  const out = tempFile('eio.log', '')
  const proc = spawn(...plainNode(['--input-type=module', '-e', script]), { cwd: ROOT, stdio: ['ignore', openSync(out, 'w'), 'inherit'] })
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })
  const code = await within(new Promise<number | null>((resolve) => proc.once('exit', resolve)), 15_000, 'the child to exit')
  t.equal(code, 0)
  const records = readFileSync(out, 'utf8').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(records, [
    { msg: 'line', i: 0 },
    { level: 40, reason: 'write_error', error: 'EIO', dropped: 4 },
  ], 'the line the failed write had begun, then how many were dropped (EIO does not stop stdout)')
  t.equal(records.length, 2)
})
