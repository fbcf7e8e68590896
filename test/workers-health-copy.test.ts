// A starting worker (one that replaces a crashed worker, or a roll's) takes its siblings'
// view of upstream health before it takes connections, as it takes their bindings: an
// ejection in force there, ending at the same moment, and when each upstream last became
// ready, so a replica restarted in place before the worker started is a restart there too.
// Tether runs in-process as workers joined through a real Hub over in-memory channels (each in
// order, delivered on the next turn as Node's IPC channel does); the upstreams are real.
import t from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import type { Tether } from '../src/tether.js'
import type { Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { Hub } from '../src/workers/hub.js'
import { WorkerLink } from '../src/workers/worker-link.js'
import type { ToPrimary, ToWorker } from '../src/workers/messages.js'
import { MemoryCheckpointStore } from '../src/state/memory-store.js'
import { systemClock, type Clock } from '../src/clock.js'
import { FakeClock } from './fixtures/clock.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { agentFor, get } from './fixtures/users.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { healthState, waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

interface Worker {
  readonly id: number
  readonly link: WorkerLink
  /** What this worker sent the primary. */
  readonly sent: ToPrimary[]
  deliver(m: ToWorker): void
  started: boolean
}

/** A primary in this process: the real Hub, the lead chosen as the primary does (the first started). */
function primary(store: MemoryCheckpointStore | null) {
  const workers = new Map<number, Worker>()
  let lead: number | null = null
  let next = 0
  const started = (): Worker[] => [...workers.values()].filter((w) => w.started)
  const hub = new Hub({
    ids: () => [...workers.keys()],
    donor: (except) => started().find((w) => w.id !== except)?.id ?? null,
    send: (id, m) => setImmediate(() => workers.get(id)?.deliver(m)),
    lead: () => lead,
  }, store)
  const receive = (w: Worker, m: ToPrimary): void => {
    if (!workers.has(w.id)) return
    if (m.tether !== 'ready') return hub.receive(w.id, m)
    w.started = true
    if (lead === null) {
      lead = w.id
      setImmediate(() => w.deliver({ tether: 'lead' }))
    }
  }
  /** Start a worker running `config`; resolves once it listens (its snapshot taken) and told the primary so. */
  const start = async (config: Config, clock: Clock = systemClock): Promise<Tether & { worker: Worker }> => {
    const id = ++next
    let deliver: (m: unknown) => void = () => undefined
    const sent: ToPrimary[] = []
    const w: Worker = {
      id, sent, started: false, deliver: (m) => deliver(m),
      link: new WorkerLink({ send: (m) => { sent.push(m); setImmediate(() => receive(w, m)) }, onMessage: (fn) => { deliver = fn } }),
    }
    workers.set(id, w)
    const tether = await startTether(config, { logger: createLogger('silent'), worker: w.link, clock })
    w.link.ready(tether.adminUrl)
    await waitFor(() => w.started, 5_000, `worker ${id} to be started`)
    return Object.assign(tether, { worker: w })
  }
  return { start, hub }
}

t.test("a starting worker takes an ejection in force from its sibling: the upstream is ejected there until the same moment, and nobody is told again", async (t) => {
  const apps = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const clock = new FakeClock()
  const config = testConfig(apps, { affinity: { key: 'header', header: { name: 'X-User' } }, health: { passive: { base_ejection: 60_000, max_ejection: 300_000 } } })
  const { start } = primary(null)
  const a = await start(config, clock)
  t.teardown(() => a.close(0))
  // app-1 refused a connection on the first worker: ejected for 60 s there (and on every worker then running)
  a.health.reportPassive('app-1', 'connect_refused')
  const until = a.health.snapshot().find((u) => u.id === 'app-1')!.ejectedUntil!
  t.equal(until, clock.now() + 60_000)

  // 10 s later a worker starts (another crashed): on its own, it would eject nothing, or until 70 s
  clock.advance(10_000)
  const b = await start(config, clock)
  t.teardown(() => b.close(0))
  t.equal(b.health.state('app-1'), 'ejected', 'ejected on the new worker too')
  t.equal(b.health.snapshot().find((u) => u.id === 'app-1')!.ejectedUntil, until, 'until the moment it ends on the sibling')
  t.notOk(b.worker.sent.some((m) => m.tether === 'publish'), 'the copy is news to nobody: not told to the other workers')
  // new users placed by the new worker: none on app-1 (the other worker would move them at their next request)
  const agent = agentFor(t)
  const placed: string[] = []
  for (let i = 0; i < 30; i++) placed.push((await get(b.url, agent, { 'x-user': `new-${i}` })).body.trim())
  t.same(placed.filter((id) => id === 'app-1'), [], '30 new users placed by the new worker: none on the ejected upstream')

  clock.set(until - 1)
  t.same([a.health.state('app-1'), b.health.state('app-1')], ['ejected', 'ejected'], 'a moment before its end: ejected on both')
  clock.set(until)
  t.same([a.health.state('app-1'), b.health.state('app-1')], ['healthy', 'healthy'], 'at its end: back on both at once')
})

t.test('a replica restarted in place before a worker started is a restart on that worker too: its users are rehydrated there (reason=restart)', async (t) => {
  const apps = new Map<string, Counter>()
  for (const app of await startAll(['app-0', 'app-1'].map((id) => startCounter(id)))) apps.set(app.id, app)
  t.teardown(async () => { await Promise.all([...apps.values()].map((c) => c.kill())) })
  const config = testConfig([...apps.values()], {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    health: { active: { enabled: true, path: '/healthz', interval: 100, timeout: 1_000, unhealthy_threshold: 1, healthy_threshold: 1 } },
    state: { store: 'memory' },
  })
  const { start } = primary(new MemoryCheckpointStore({ maxEntries: 1_000, clock: systemClock }))
  const a = await start(config) // the lead: it runs the checks
  t.teardown(() => a.close(0))
  const agent = new http.Agent({ keepAlive: false })
  t.teardown(() => agent.destroy())
  const ask = async (tt: Tether, user: string): Promise<CounterAnswer> => {
    const r = await get(tt.url, agent, { 'x-tenant': user })
    t.equal(r.status, 200, `${user}: answered`)
    return JSON.parse(r.body) as CounterAnswer
  }
  const users = Array.from({ length: 12 }, (_, i) => `user-${i}`)
  const home = new Map<string, string>()
  for (const u of users) for (let n = 1; n <= 3; n++) home.set(u, (await ask(a, u)).id)
  const restarted = home.get(users[0]!)!
  const theirs = users.filter((u) => home.get(u) === restarted)

  // the pod dies and comes back at the same address (its memory empty) while its users are away
  const pod = apps.get(restarted)!
  await pod.kill()
  await healthState(a.health, restarted, 'unhealthy')
  apps.set(restarted, await startCounter(restarted, { port: pod.port }))
  await healthState(a.health, restarted, 'healthy')

  // then a worker starts (it replaces one that crashed): it did not see the pod go
  const b = await start(config)
  t.teardown(() => b.close(0))
  t.ok(b.health.readySince(restarted) > -Infinity, 'the new worker knows when the replica became ready again')
  for (const u of theirs) {
    const r = await ask(b, u)
    t.same([r.id, r.n, r.rehydrated, r.moved, r.epoch], [restarted, 4, true, `from=${restarted}; reason=restart; epoch=1`, '1'],
      `${u}: stays on ${restarted}, which gets the state back from the new worker (counter 4, not 1)`)
  }
})
