// A rolling replacement (a change that needs new workers) whose new worker never becomes ready
// (frozen with SIGSTOP the moment the primary logs its pid, before it said anything): the start
// deadline kills it, the roll stops there and says why, and the old workers serve on, with no
// failed request. Before, the roll waited on that worker for good (and every later reload
// queued behind it). The real CLI; TETHER_TEST_START_TIMEOUT_MS shortens the deadline.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { alive, spawnPrimary } from './fixtures/workers-start.js'

t.test('a roll whose new worker freezes at its start: killed at the deadline, the roll stops and says why, the old workers answer every request', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const yaml = (grace: string): string => workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }], extra: [`shutdown: { grace_period: ${grace} }`] })
  const file = tempFile('workers-start-roll.yaml', yaml('2s'))
  const p = spawnPrimary(t, file, { TETHER_TEST_START_TIMEOUT_MS: '4000' })
  await waitFor(() => p.out().includes('"tether primary: workers started"') || p.proc.exitCode !== null, 60_000, 'the workers to start')
  t.equal(p.proc.exitCode, null, 'Tether runs')
  const pids = workerPids(p.proc)
  p.freezeStart(3)
  // shutdown needs new workers: a roll
  writeFileSync(file, yaml('3s'))
  p.proc.kill('SIGHUP')
  const statuses: number[] = []
  const failed = (): boolean => p.out().includes('"replacing the workers failed')
  // a request on a new connection after another until the roll gives up (bounded: 20 s)
  const t0 = Date.now()
  while (!failed() && Date.now() - t0 < 20_000) {
    try {
      statuses.push((await request(`http://127.0.0.1:${port}/`, null)).status)
    } catch {
      statuses.push(0)
    }
  }
  t.ok(failed(), 'the roll stops')
  process.stderr.write(`# roll with a frozen new worker: stopped after ${Date.now() - t0} ms; ${statuses.filter((s) => s === 200).length} of ${statuses.length} requests answered 200\n`)
  t.equal(p.frozen.length, 1, 'its new worker was frozen')
  t.match(p.out(), /"worker did not become ready in time; killing it"/, 'the deadline is named')
  t.ok(statuses.length > 0 && statuses.every((s) => s === 200), 'every request made meanwhile is answered')
  t.notOk(alive(p.frozen[0]!), 'the frozen process is gone')
  t.same(workerPids(p.proc), pids, 'the old workers serve on, none added')
  t.equal(p.out().split('\n').filter((l) => l.includes('"worker died; restarting it"')).length, 0, 'nothing restarted')
  for (let i = 0; i < 10; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200)
  p.proc.kill('SIGTERM')
  await waitFor(() => p.proc.exitCode !== null, 30_000, 'the primary to stop')
  t.equal(p.proc.exitCode, 0, 'stops gracefully')
})
