// Every worker start has a deadline (`workers` > 1): a worker that is not ready within it (frozen
// with SIGSTOP here the moment the primary logs its pid, before it said anything: a stalled host
// or a start stuck on something looks the same) is killed with SIGKILL and counts as a failed
// start. At the primary's first start that ends the primary (exit 1, as any worker failing its
// start does) instead of hanging it for good; at a crash restart the slot is restarted again with
// the crash back-off. The real CLI; TETHER_TEST_START_TIMEOUT_MS shortens the deadline (see
// src/workers/primary.ts).
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, twoWorkersYaml, workerPids } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { alive, spawnPrimary } from './fixtures/workers-start.js'
import { START_TIMEOUT, startTimeout } from '../src/workers/primary.js'

// (8 s: the healthy worker must be ready well within it even on a loaded host; at 4 s it once was not)
const DEADLINE = { TETHER_TEST_START_TIMEOUT_MS: '8000' }
/** The pids of the "starting a worker" lines in `out`, in order. */
const startedPids = (out: string): number[] => out.split('\n').slice(0, -1).filter((l) => l.includes('"starting a worker"')).map((l) => (JSON.parse(l) as { pid: number }).pid)
const count = (text: string, needle: string): number => text.split(needle).length - 1

t.test('the start deadline: a minute, or the test hook TETHER_TEST_START_TIMEOUT_MS in whole ms; anything else is refused with a clear error', async (t) => {
  t.equal(startTimeout({}), START_TIMEOUT)
  t.equal(START_TIMEOUT, 60_000)
  t.equal(startTimeout({ TETHER_TEST_START_TIMEOUT_MS: '4000' }), 4000)
  for (const bad of ['', '0', '-1', '1.5', '4s', '10000000']) {
    t.throws(() => startTimeout({ TETHER_TEST_START_TIMEOUT_MS: bad }), /TETHER_TEST_START_TIMEOUT_MS is a test hook .*: unset it/, JSON.stringify(bad))
  }
})

t.test('a worker frozen during the first start is killed at the start deadline and the primary exits 1 with a clear line, instead of hanging', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const p = spawnPrimary(t, tempFile('workers-start-first.yaml', twoWorkersYaml(port!, adminPort!, app.url)), DEADLINE)
  p.freezeStart(2)
  const t0 = Date.now()
  await waitFor(() => p.proc.exitCode !== null, 20_000, 'the primary to give up its first start')
  process.stderr.write(`# first start with a frozen worker: the primary exited ${p.proc.exitCode} after ${Date.now() - t0} ms\n`)
  t.equal(p.proc.exitCode, 1, 'exits 1')
  const line = p.out().split('\n').find((l) => l.includes('"worker did not become ready in time; killing it"'))
  t.ok(line, 'says which worker missed the deadline')
  t.match(line, /"child":1,/, 'the frozen one (slot 1)')
  t.match(line, /"start_timeout_ms":8000/, 'and the deadline')
  t.match(p.out(), /"a worker failed to start"/, 'and that the start failed')
  t.notOk(p.out().includes('"tether primary: workers started"'), 'the start never counted as done')
  await waitFor(() => startedPids(p.out()).every((pid) => !alive(pid)), 5_000, 'both workers gone')
  t.pass('the frozen worker and the other one are gone')
})

t.test('a worker frozen at its crash restart is killed at the deadline and restarted again with back-off; the other worker serves meanwhile', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const p = spawnPrimary(t, tempFile('workers-start-crash.yaml', twoWorkersYaml(port!, adminPort!, app.url)), DEADLINE)
  await waitFor(() => p.out().includes('"tether primary: workers started"') || p.proc.exitCode !== null, 60_000, 'the workers to start')
  t.equal(p.proc.exitCode, null, 'Tether runs')
  // a worker tells the primary it is ready before its "tether listening" line is written (pino writes
  // asynchronously): count from both lines, or a late one would pass for the restart's
  await waitFor(() => count(p.out(), '"tether listening"') >= 2, 10_000, 'both workers\' "tether listening" lines')
  const [first, second] = startedPids(p.out())
  p.freezeStart(3)
  const listening = count(p.out(), '"tether listening"')
  process.kill(second!, 'SIGKILL')
  await waitFor(() => p.out().includes('"worker did not become ready in time; killing it"'), 20_000, 'the frozen restart to be killed')
  t.equal(p.frozen.length, 1, 'the restarted worker was frozen')
  const ok: number[] = []
  for (let i = 0; i < 10; i++) ok.push((await request(`http://127.0.0.1:${port}/`, null)).status)
  t.same(ok, Array(10).fill(200), 'the other worker answers meanwhile')
  await waitFor(() => count(p.out(), '"tether listening"') > listening, 20_000, 'the slot to be restarted once more')
  t.equal(count(p.out(), '"worker died; restarting it"'), 2, 'the crash, then the killed restart: each restarted as a crash')
  const delays = p.out().split('\n').slice(0, -1).filter((l) => l.includes('"worker died; restarting it"')).map((l) => (JSON.parse(l) as { restart_in_ms: number }).restart_in_ms)
  t.same(delays, [100, 200], 'backing off as in a crash loop (100 ms, then 200 ms)')
  t.notOk(alive(p.frozen[0]!), 'the frozen process is gone')
  const pids = workerPids(p.proc)
  t.equal(pids.length, 2, 'two workers again')
  t.ok(pids.includes(first!), 'the first worker untouched')
  p.proc.kill('SIGTERM')
  await waitFor(() => p.proc.exitCode !== null, 30_000, 'the primary to stop')
  t.equal(p.proc.exitCode, 0, 'stops gracefully')
})

t.test('a restarted worker whose only sibling is frozen when it asks for the copy starts once the watchdog killed that sibling, well within its start deadline', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  // the default start deadline (60 s)
  const p = spawnPrimary(t, tempFile('workers-start-frozen-donor.yaml', twoWorkersYaml(port!, adminPort!, app.url)))
  await waitFor(() => p.out().includes('"tether primary: workers started"') || p.proc.exitCode !== null, 60_000, 'the workers to start')
  t.equal(p.proc.exitCode, null, 'Tether runs')
  // a worker tells the primary it is ready before its "tether listening" line is written (pino writes
  // asynchronously): count from both lines, or a late one would pass for the restart's
  await waitFor(() => count(p.out(), '"tether listening"') >= 2, 10_000, 'both workers\' "tether listening" lines')
  const [first, second] = startedPids(p.out())
  t.teardown(() => { try { process.kill(second!, 'SIGKILL') } catch { /* gone */ } })
  const listening = count(p.out(), '"tether listening"')
  process.kill(second!, 'SIGSTOP')
  process.kill(first!, 'SIGKILL')
  const t0 = Date.now()
  // the restarted slot 0 asks the frozen slot 1 for its copy
  await waitFor(() => count(p.out(), '"tether listening"') > listening, 30_000, 'the restarted worker to start')
  const startedAfter = Date.now() - t0
  t.match(p.out(), /"worker stopped answering; killing it"/, 'the frozen sibling is killed by the watchdog')
  await waitFor(() => count(p.out(), '"tether listening"') > listening + 1, 30_000, 'the frozen one to be replaced too')
  process.stderr.write(`# a restart copying from a frozen sibling: started ${startedAfter} ms after the crash, both workers back after ${Date.now() - t0} ms\n`)
  t.ok(startedAfter < 30_000, `started after ${startedAfter} ms, not at its start deadline`)
  t.notOk(p.out().includes('"worker did not become ready in time'), 'no start missed its deadline')
  t.notOk(alive(second!), 'the frozen process is gone')
  t.equal(workerPids(p.proc).length, 2, 'two workers again')
  for (let i = 0; i < 10; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200)
  p.proc.kill('SIGTERM')
  await waitFor(() => p.proc.exitCode !== null, 30_000, 'the primary to stop')
  t.equal(p.proc.exitCode, 0, 'stops gracefully')
})
