// A drain made through the admin API with workers: it began at one moment for every worker, also
// for one started later (a crash restart), which reads the drain and its start from the
// primary's records, so its drain_timeout and min_idle count from that moment as on the others.
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { request, slotOf, startPrimary, workerAdmins, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

interface Row { id: string; draining_since: string | null; migrating: boolean }

t.test('with two workers, a worker restarted after a drain has it draining, migrating, since the moment it began', async (t) => {
  const apps = await startAll(['app-0', 'app-1'].map((id) => startChildUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.kill())))
  const [port, adminPort] = [await freePort(), await freePort()]
  const file = tempFile('workers-drain-start.yaml', workersYaml({ listen: port, adminPort, workers: 2, upstreams: apps }))
  const { proc, out } = await startPrimary(t, file)
  const admins = (): Map<number, string> => workerAdmins(out())
  const drainRow = async (admin: string): Promise<Row> => (JSON.parse((await request(`${admin}/upstreams`, null)).body) as Row[]).find((r) => r.id === 'app-1')!

  t.equal((await request(`http://127.0.0.1:${adminPort}/upstreams/app-1/drain?migrate=true`, null, { method: 'POST' })).status, 200, 'drained through the admin API')
  let since: string | null = null
  await waitFor(async () => {
    const rows = await Promise.all([...admins().values()].map(drainRow))
    since = rows[0]!.draining_since
    return rows.length === 2 && since !== null && rows.every((r) => r.draining_since === since && r.migrating)
  }, 10_000, 'both workers to have the drain')
  t.ok(since, `both workers: draining, migrating, since ${since}`)

  const first = admins().get(1)
  process.kill(workerPids(proc).find((pid) => slotOf(pid) === 1)!, 'SIGKILL')
  await waitFor(() => admins().get(1) !== first, 60_000, 'the worker to be restarted')
  const row = await drainRow(admins().get(1)!)
  t.match(row, { draining_since: since, migrating: true }, 'the restarted worker: draining, migrating, since the same moment (not its own start)')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
