// A starting worker copies the bindings of a sibling (`workers` > 1). Here the sibling asked is
// frozen (SIGSTOP: a stalled worker) when the new worker asks, and the watchdog kills it 10 s
// later: the copy is then taken from another sibling, so the new worker routes every known user
// as the others do. Three workers over one upstream; a second upstream is added, so a worker
// without the bindings would place about half of the users there (a consistent hash).
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { request, slotOf, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream, type ChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

const USERS = 24

function yaml(port: number, adminPort: number, apps: readonly ChildUpstream[]): string {
  return workersYaml({ listen: port, adminPort, workers: 3, upstreams: apps, extra: ['affinity: { key: header, header: { name: X-Tenant } }'] })
}

t.test('with three workers, a restarted worker whose sibling freezes while it sends the copy gets it from another sibling: every user routed as before', async (t) => {
  const apps = await startAll(['app-0', 'app-1'].map((id) => startChildUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.kill())))
  const [port, adminPort] = [await freePort(), await freePort()]
  const file = tempFile('workers-retake.yaml', yaml(port, adminPort, apps.slice(0, 1)))
  const { proc, out } = await startPrimary(t, file)
  const url = `http://127.0.0.1:${port}/`
  const as = async (user: number): Promise<string> => {
    const r = await request(url, null, { headers: { 'x-tenant': `user-${user}` } })
    t.equal(r.status, 200)
    return (JSON.parse(r.body) as { id: string }).id
  }
  // every user bound to app-0 (the only upstream), then app-1 added: known users stay
  for (let u = 0; u < USERS; u++) await as(u)
  writeFileSync(file, yaml(port, adminPort, apps))
  proc.kill('SIGHUP')
  await waitFor(() => (out().match(/"upstreams updated"/g) ?? []).length >= 6, 10_000, 'every worker to have app-1')
  let newcomers = 0
  for (let u = USERS; u < USERS + 40; u++) if ((await as(u)) === 'app-1') newcomers++
  t.ok(newcomers > 0, `new users are placed on app-1 too (${newcomers} of 40): a worker without the bindings would send known ones there`)

  const pids = workerPids(proc)
  const frozen = pids.find((pid) => slotOf(pid) === 0)!
  const killed = pids.find((pid) => slotOf(pid) === 2)!
  const listening = (slot: number): number => out().split('\n').filter((l) => l.includes(`"worker":${slot},`) && l.includes('"tether listening"')).length
  // the first worker started is the one asked for the copy: frozen first, then the third killed
  process.kill(frozen, 'SIGSTOP')
  t.teardown(() => { try { process.kill(frozen, 'SIGCONT') } catch { /* gone */ } })
  process.kill(killed, 'SIGKILL')
  await waitFor(() => out().includes('"worker stopped answering; killing it"'), 60_000, 'the watchdog to kill the frozen worker')
  await waitFor(() => listening(0) >= 2 && listening(2) >= 2, 40_000, 'both workers to be back')

  let inconsistent = 0
  const seen = new Map<number, number>()
  for (let round = 0; round < 4; round++) {
    for (let u = 0; u < USERS; u++) {
      if ((await as(u)) !== 'app-0') inconsistent++
    }
  }
  for (const pid of workerPids(proc)) seen.set(slotOf(pid) ?? -1, pid)
  t.comment(`workers retake: ${USERS * 4} requests of ${USERS} known users over 3 workers (two restarted), ${inconsistent} not on their upstream`)
  t.equal(inconsistent, 0, 'every known user still reaches app-0, whichever worker serves the request')
  t.equal(seen.size, 3, 'three workers')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
