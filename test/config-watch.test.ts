// The config file watcher as operators write files: a file written in several writes is reported
// once, whole (never at one of its valid beginnings); other files busy in the same directory do
// not hold a change back; a path no directory event tells of (a symlink to a file elsewhere, a
// single-file bind mount) is still seen, by polling; an edit made while Tether started is
// applied. Real files and real fs.watch; the watcher's time is driven by hand where a test
// needs a pace (FakeTimers), else deadlines; no sleeps.
import t from 'tap'
import { appendFileSync, mkdtempSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigWatcher } from '../src/config/watch.js'
import { startTether } from '../src/app.js'
import { readConfigFile } from '../src/config/index.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { FakeTimers } from './fixtures/timers.js'
import { startUpstream } from './fixtures/upstream.js'
import { onEvent, waitFor, when } from './fixtures/wait.js'

function dir(): string {
  return mkdtempSync(join(tmpdir(), 'tether-watch-'))
}

t.test('a file written a line at a time is reported once, whole, not at each of its beginnings', async (t) => {
  const file = join(dir(), 'proxy.yaml')
  writeFileSync(file, 'a: 1\n')
  const seen: string[] = []
  // the watcher's time is driven by hand; the file system's events are real
  const timers = new FakeTimers()
  const w = new ConfigWatcher(file, () => seen.push(readFileSync(file, 'utf8')), timers, { debounceMs: 20, settleMs: 400, pollMs: 0 })
  w.start()
  t.teardown(() => w.stop())
  timers.advance(0) // the start's own look: unchanged
  writeFileSync(file, '') // `>` truncates first
  const lines = ['a: 1\n', 'b: 2\n', 'c: 3\n', 'd: 4\n', 'e: 5\n']
  for (const line of lines) {
    await timers.scheduled(20) // the last write's event armed the debounce
    appendFileSync(file, line)
    timers.advance(150) // the writer's pace: longer than the debounce (each beginning is read), shorter than the settle
    t.same(seen, [], `nothing reported while the file is written (${line.trim()})`)
  }
  await timers.scheduled(20)
  timers.advance(20 + 400) // the debounce, then a settle with no event
  t.same(seen, [lines.join('')], 'once, with the whole file')
})

t.test('a busy file next to the config does not hold a change back', async (t) => {
  const d = dir()
  const file = join(d, 'proxy.yaml')
  writeFileSync(file, 'a: 1\n')
  let changes = 0
  const w = new ConfigWatcher(file, () => changes++, undefined, { debounceMs: 50, settleMs: 200, pollMs: 0 })
  w.start()
  t.teardown(() => w.stop())
  // a log written next to the config: an event every 10 ms, more often than the debounce
  const log = setInterval(() => appendFileSync(join(d, 'tether.log'), 'line\n'), 10)
  t.teardown(() => clearInterval(log))
  writeFileSync(file, 'a: 2\n')
  await waitFor(() => changes === 1, 5_000, 'the change to be reported while the log is written')
  t.equal(changes, 1)
})

t.test('a change no directory event tells of (the path is a symlink to a file in another directory) is seen by polling', async (t) => {
  const real = dir()
  const mounted = dir()
  mkdirSync(join(real, 'conf'))
  const target = join(real, 'conf', 'proxy.yaml')
  writeFileSync(target, 'a: 1\n')
  const file = join(mounted, 'proxy.yaml')
  symlinkSync(target, file)
  let changes = 0
  const w = new ConfigWatcher(file, () => changes++, undefined, { debounceMs: 20, settleMs: 100, pollMs: 100 })
  w.start()
  t.teardown(() => w.stop())
  writeFileSync(target, 'a: 2\n') // in place, as through a single-file bind mount
  await waitFor(() => changes === 1, 5_000, 'the change to be reported')
  t.pass('reported')
})

t.test('the content the running config was read from is the baseline: an edit made before the watch started is reported', async (t) => {
  const file = join(dir(), 'proxy.yaml')
  writeFileSync(file, 'a: 2\n')
  let changes = 0
  const w = new ConfigWatcher(file, () => changes++, undefined, { baseline: 'a: 1\n', debounceMs: 20, settleMs: 100, pollMs: 0 })
  w.start()
  t.teardown(() => w.stop())
  await waitFor(() => changes === 1, 5_000, 'the change to be reported')
  const timers = new FakeTimers()
  const same = new ConfigWatcher(file, () => changes++, timers, { baseline: 'a: 2\n', debounceMs: 20, settleMs: 100, pollMs: 50 })
  same.start()
  t.teardown(() => same.stop())
  for (let i = 0; i < 8; i++) timers.advance(50) // the start's look, then polls
  t.equal(timers.pending(50).length, 1, 'still polling')
  t.equal(changes, 1, 'the file as read: nothing to report')
})

t.test('Tether applies an edit made while it started (between its read of the file and its watch)', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  t.teardown(async () => { await a.close(); await b.close() })
  const file = join(dir(), 'proxy.yaml')
  const yaml = (ups: { id: string; url: string }[]): string =>
    `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\naffinity: { key: none }\nupstreams:\n${ups.map((u) => `  - { id: ${u.id}, url: "${u.url}" }`).join('\n')}\n`
  writeFileSync(file, yaml([a]))
  const read = readConfigFile(file, {})
  writeFileSync(file, yaml([a, b])) // a ConfigMap update landing during the start
  const log = new LogCapture()
  const tether = await startTether(read.config, { logger: createLogger('info', log), configPath: file, configText: read.text })
  t.teardown(() => tether.close(0))
  await when(onEvent(log, 'record'), () => log.records.some((r) => r['msg'] === 'config reloaded'), 5_000, 'the reload')
  t.same(tether.router.ids, ['a', 'b'])
})

t.test('content read elsewhere (a SIGHUP reload) and accepted is not reported again; a later change still is', async (t) => {
  const file = join(dir(), 'proxy.yaml')
  writeFileSync(file, 'a: 1\n')
  const seen: string[] = []
  const timers = new FakeTimers()
  const w = new ConfigWatcher(file, () => seen.push(readFileSync(file, 'utf8')), timers, { debounceMs: 20, settleMs: 400, pollMs: 0 })
  w.start()
  t.teardown(() => w.stop())
  timers.advance(0) // the start's own look: unchanged
  writeFileSync(file, 'a: 2\n')
  await timers.scheduled(20) // its event armed the debounce
  w.accept('a: 2\n') // the SIGHUP's reload read and applied it
  timers.advance(20 + 400 + 400)
  t.same(seen, [], 'not reported a second time')
  writeFileSync(file, 'a: 3\n')
  await timers.scheduled(20)
  timers.advance(20 + 400)
  t.same(seen, ['a: 3\n'], 'the watch goes on')
})

t.test('content whose reload was refused (onChange returned false) is offered again, at growing intervals, until one is accepted', async (t) => {
  const file = join(dir(), 'proxy.yaml')
  writeFileSync(file, 'a: 1\n')
  const calls: number[] = []
  let accept = false
  const timers = new FakeTimers()
  const w = new ConfigWatcher(file, () => { calls.push(timers.clock.now()); return accept }, timers, { debounceMs: 20, settleMs: 400, pollMs: 1_000 })
  w.start()
  t.teardown(() => w.stop())
  timers.advance(0)
  writeFileSync(file, 'a: 2\n')
  await timers.scheduled(20)
  const start = timers.clock.now()
  timers.advance(20 + 400)
  t.same(calls.map((c) => c - start), [420], 'reported, refused')
  timers.advance(1_000 + 2_000 + 4_000)
  t.same(calls.map((c) => c - start), [420, 1420, 3420, 7420], 'offered again after 1 s, 2 s, 4 s (the poll interval, doubling)')
  accept = true
  timers.advance(8_000)
  t.equal(calls.length, 5, 'accepted at the next')
  timers.advance(60_000)
  t.equal(calls.length, 5, 'then no more')
  writeFileSync(file, 'a: 3\n')
  await timers.scheduled(20)
  timers.advance(20 + 400)
  t.equal(calls.length, 6, 'a later change is reported as ever')
})

t.test('a refused content is not offered again once the file changed (the new content is reported instead) or was accepted elsewhere', async (t) => {
  const file = join(dir(), 'proxy.yaml')
  writeFileSync(file, 'a: 1\n')
  const seen: string[] = []
  const timers = new FakeTimers()
  const w = new ConfigWatcher(file, () => { seen.push(readFileSync(file, 'utf8')); return false }, timers, { debounceMs: 20, settleMs: 400, pollMs: 1_000 })
  w.start()
  t.teardown(() => w.stop())
  timers.advance(0)
  writeFileSync(file, 'a: 2\n')
  await timers.scheduled(20)
  timers.advance(20 + 400)
  writeFileSync(file, 'a: 3\n')
  await timers.scheduled(20)
  timers.advance(20 + 400)
  t.same(seen, ['a: 2\n', 'a: 3\n'], 'the new content, not the refused one again')
  w.accept('a: 3\n') // a SIGHUP read it
  timers.advance(120_000)
  t.same(seen, ['a: 2\n', 'a: 3\n'], 'nothing offered again')
})

t.test('ConfigMap updates as the kubelet makes them (a new timestamped directory, `..data` swapped to it, the old one deleted) are each reported once, and the watch lives on', async (t) => {
  const d = dir()
  let n = 0
  const publish = (text: string): void => {
    const next = `..2026_12_04_${String(++n).padStart(2, '0')}`
    mkdirSync(join(d, next))
    writeFileSync(join(d, next, 'proxy.yaml'), text)
    if (n === 1) {
      symlinkSync(next, join(d, '..data'))
      symlinkSync(join('..data', 'proxy.yaml'), join(d, 'proxy.yaml'))
      return
    }
    symlinkSync(next, join(d, '..data_tmp'))
    renameSync(join(d, '..data_tmp'), join(d, '..data'))
    rmSync(join(d, `..2026_12_04_${String(n - 1).padStart(2, '0')}`), { recursive: true })
  }
  publish('v: 1\n')
  const seen: string[] = []
  const file = join(d, 'proxy.yaml')
  const w = new ConfigWatcher(file, () => seen.push(readFileSync(file, 'utf8')), undefined, { debounceMs: 20, settleMs: 100, pollMs: 0 })
  w.start()
  t.teardown(() => w.stop())
  for (const v of [2, 3, 4]) {
    publish(`v: ${v}\n`)
    await waitFor(() => seen.length === v - 1, 5_000, `update ${v} to be reported`)
  }
  t.same(seen, ['v: 2\n', 'v: 3\n', 'v: 4\n'], 'each once, in order, by directory events alone (no polling)')
})

t.test('content refused elsewhere (a SIGHUP reload) is offered again as a retry', async (t) => {
  const file = join(dir(), 'proxy.yaml')
  writeFileSync(file, 'a: 1\n')
  const retries: boolean[] = []
  const timers = new FakeTimers()
  const w = new ConfigWatcher(file, (retry) => retries.push(retry), timers, { debounceMs: 20, settleMs: 400, pollMs: 1_000 })
  w.start()
  t.teardown(() => w.stop())
  timers.advance(0)
  writeFileSync(file, 'a: 2\n')
  await timers.scheduled(20)
  w.accept('a: 2\n', true) // the SIGHUP's reload of it was refused
  timers.advance(20 + 400)
  t.same(retries, [], 'not reported as a change')
  timers.advance(1_000)
  t.same(retries, [true], 'offered again, as a retry (accepted this time: onChange did not return false)')
  timers.advance(60_000)
  t.same(retries, [true], 'once')
})
