// With `workers: 2`, a replica restarted in place (same id and address: its memory empty) while
// its users were away, and then both workers replaced (each crashed and restarted in turn): the
// new workers did not see the replica go, but take from their siblings when it became ready
// again, so the users are rehydrated there at their next request (reason=restart), as with no
// worker replaced. Real processes: the CLI as a primary, counter replicas as child processes.
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { request, slotOf, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

t.test('a replica restarted in place before both workers were replaced: its users are rehydrated there by the new workers', async (t) => {
  const apps = new Map<string, Counter>()
  for (const app of await startAll(['app-0', 'app-1'].map((id) => startCounter(id)))) apps.set(app.id, app)
  t.teardown(async () => { await Promise.all([...apps.values()].map((c) => c.kill())) })
  const [port, adminPort] = [await freePort(), await freePort()]
  const file = tempFile('workers-restart-in-place.yaml', workersYaml({
    listen: port, adminPort, workers: 2, upstreams: [...apps.values()], extra: [
      'affinity: { key: header, header: { name: X-Tenant } }',
      // the workers also eject it when the lead finds it down (shared health): for 1 s, not 10
      'health: { active: { path: /healthz, interval: 100ms, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 }, passive: { base_ejection: 1s } }',
      'state: { store: memory }',
    ],
  }))
  const { proc, out } = await startPrimary(t, file)
  const url = `http://127.0.0.1:${port}/`
  const ask = async (user: string): Promise<CounterAnswer> => {
    const r = await request(url, null, { headers: { 'x-tenant': user } })
    t.equal(r.status, 200, `${user}: answered`)
    return JSON.parse(r.body) as CounterAnswer
  }
  const listening = (slot: number): string[] => out().split('\n').slice(0, -1).filter((l) => l.includes(`"worker":${slot},`) && l.includes('"tether listening"'))
  /** The state of upstream `id` on each running worker (its private admin listener, from its last "tether listening"). */
  const states = async (id: string): Promise<string[]> => Promise.all([0, 1].map(async (slot) => {
    const admin = (JSON.parse(listening(slot).at(-1)!) as { admin: string }).admin
    const rows = JSON.parse((await request(`${admin}/upstreams`, null)).body) as { id: string; state: string }[]
    return rows.find((r) => r.id === id)!.state
  }))
  const everywhere = (id: string, state: string) => async (): Promise<boolean> => (await states(id)).every((s) => s === state)

  const users = Array.from({ length: 12 }, (_, i) => `user-${i}`)
  const home = new Map<string, string>()
  for (const u of users) for (let n = 1; n <= 3; n++) home.set(u, (await ask(u)).id)
  const restarted = home.get(users[0]!)!
  const theirs = users.filter((u) => home.get(u) === restarted)

  // the pod dies and comes back at the same address while its users are away: both workers see it
  const pod = apps.get(restarted)!
  await pod.kill()
  await waitFor(everywhere(restarted, 'unhealthy'), 10_000, `both workers to see ${restarted} down`, 50)
  apps.set(restarted, await startCounter(restarted, { port: pod.port }))
  await waitFor(everywhere(restarted, 'healthy'), 10_000, `both workers to see ${restarted} back`, 50)

  // then each worker crashes in turn and is replaced (the second copies from the first's replacement)
  for (const slot of [0, 1]) {
    const pid = workerPids(proc).find((p) => slotOf(p) === slot)!
    process.kill(pid, 'SIGKILL')
    await waitFor(() => listening(slot).length >= 2, 15_000, `worker ${slot} to be replaced`)
  }

  t.same(await states(restarted), ['healthy', 'healthy'], `${restarted} is healthy on both new workers`)
  for (const u of theirs) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved, a.epoch], [restarted, 4, true, `from=${restarted}; reason=restart; epoch=1`, '1'],
      `${u}: stays on ${restarted}, which gets the state back (counter 4, not 1)`)
  }
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
