// A worker that stops answering (frozen with SIGSTOP here: a loop that never yields or a stalled
// host look the same to the primary) never exits, so no crash restart would come: its
// keep-alive clients, and the connection node:cluster last handed it, would wait for good. The
// primary kills a worker silent for WATCHDOG_TIMEOUT and restarts it; the connection it was
// handed goes to the other worker (src/workers/handoff-guard.ts). The real CLI, two workers.
import t from 'tap'
import http from 'node:http'
import { tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { startPrimary, twoWorkersYaml, workerPids } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { SilenceWatch, WATCHDOG_INTERVAL, WATCHDOG_TIMEOUT } from '../src/workers/silence-watch.js'

t.test('the silence watch: a worker silent past the timeout is named at each tick; a late tick (the primary stalled) starts every count again', async (t) => {
  const w = new SilenceWatch(10_000, 1_000)
  /** Ticks every second from `from` to `to`; the ids named at each. */
  const ticks = (from: number, to: number, ids: number[]): number[][] => {
    const named: number[][] = []
    for (let now = from; now <= to; now += 1_000) named.push(w.tick(now, ids))
    return named
  }
  t.same(w.tick(0, [1, 2]), [], 'not heard of yet: the count starts')
  w.heard(1, 5_000)
  t.same(ticks(1_000, 10_000, [1, 2]).flat(), [], 'silent for 10 s at most')
  t.same(w.tick(10_500, [1, 2]), [2], 'worker 2: silent since 0')
  t.same(w.tick(11_000, [1]), [], 'only the ids asked about')
  t.same(w.tick(15_001, [1, 2]), [], 'this tick is over 3 intervals late: the primary itself stalled; everyone starts again')
  t.same(ticks(16_001, 25_001, [1, 2]).flat(), [])
  t.same(w.tick(25_002, [1, 2]), [1, 2])
  w.forget(2)
  t.notOk(w.known(2))
  t.same(w.tick(25_500, [2]), [], 'a forgotten worker starts a new count')
  t.ok(w.known(2))

  // the primary stalled before its first check: its workers were heard long ago, their answers unread
  const first = new SilenceWatch(10_000, 1_000)
  first.heard(1, 0)
  first.heard(2, 0)
  t.same(first.tick(15_000, [1, 2]), [], 'the first tick starts every count')
  t.same(first.tick(25_001, [1, 2]), [], 'ticks that stop coming start them again')

  // quiet: silent for longer than asked (the admin listener leaves such a worker out)
  const q = new SilenceWatch(10_000, 1_000)
  t.notOk(q.quiet(1, 5_000, 2_500), 'not heard of: not quiet')
  q.heard(1, 1_000)
  t.notOk(q.quiet(1, 3_500, 2_500), 'silent 2.5 s: not yet')
  t.ok(q.quiet(1, 3_501, 2_500), 'silent longer')
  q.tick(10_000, [1])
  t.notOk(q.quiet(1, 10_000, 2_500), 'a late tick (the primary stalled) starts its count again')
})

t.test('with two workers, a frozen worker is killed after the watchdog timeout and replaced; every request is answered', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const port = await freePort()
  const file = tempFile('workers-watchdog.yaml', twoWorkersYaml(port, await freePort(), app.url))
  const { proc, out } = await startPrimary(t, file)
  const frozen = workerPids(proc)[1]!
  t.teardown(() => { try { process.kill(frozen, 'SIGKILL') } catch { /* gone */ } })
  const get = (): Promise<{ status: number; ms: number }> => new Promise((resolve) => {
    const t0 = Date.now()
    const req = http.get({ host: '127.0.0.1', port, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode!, ms: Date.now() - t0 }))
    })
    req.setTimeout(WATCHDOG_TIMEOUT + 10_000, () => req.destroy(new Error('no answer')))
    req.on('error', () => resolve({ status: 0, ms: Date.now() - t0 }))
  })
  const listening = (out().match(/"tether listening"/g) ?? []).length
  process.kill(frozen, 'SIGSTOP')
  const stoppedAt = Date.now()
  // a request on a new connection every 100 ms from the freeze until the primary kills the
  // frozen worker (bounded: 250, 25 s)
  const killed = (): boolean => out().includes('"worker stopped answering; killing it"')
  const answers: Promise<{ status: number; ms: number }>[] = []
  await new Promise<void>((resolve) => {
    const timer = setInterval(() => {
      if (killed() || answers.length === 250) {
        clearInterval(timer)
        return resolve()
      }
      answers.push(get())
    }, 100)
  })
  t.ok(killed(), 'the frozen worker is killed')
  const killedAfter = Date.now() - stoppedAt
  await waitFor(() => (out().match(/"tether listening"/g) ?? []).length > listening, 60_000, 'the frozen worker to be replaced')
  const done = await Promise.all(answers)
  const failed = done.filter((a) => a.status !== 200)
  const slowest = Math.max(...done.map((a) => a.ms))
  process.stderr.write(`# workers watchdog: frozen worker killed after ${killedAfter} ms; ${done.length - failed.length} of ${done.length} requests answered, the slowest in ${slowest} ms\n`)
  // counted from its last answer, up to one interval before it was stopped
  t.ok(killedAfter >= WATCHDOG_TIMEOUT - WATCHDOG_INTERVAL && killedAfter < WATCHDOG_TIMEOUT + 5_000, `killed after the timeout (${killedAfter} ms)`)
  t.same(failed, [], 'every request made while it was frozen is answered')
  t.notOk(workerPids(proc).includes(frozen), 'the frozen process is gone')
  // (polled: on a loaded host the other worker may have been restarted too and be on its way back)
  await waitFor(() => workerPids(proc).length === 2, 30_000, 'two workers again')
  t.pass('two workers again')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
