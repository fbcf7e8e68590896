// The parts of `workers` that need no processes: what `auto` means under a container's CPU
// limit, the primary's hub (relay before acknowledgement, snapshots, named sets, the shared
// checkpoint store) and the session table's rules for pins made by another worker.
import t from 'tap'
import { FakeTimers } from './fixtures/timers.js'
import { availableCpus, cpusOfQuota, workerCount } from '../src/workers/worker-count.js'
import { Hub } from '../src/workers/hub.js'
import type { ToWorker } from '../src/workers/messages.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { SessionRecords } from '../src/affinity/session-records.js'
import { MemoryCheckpointStore } from '../src/state/memory-store.js'
import { FakeClock } from './fixtures/clock.js'
import { WorkerLink } from '../src/workers/worker-link.js'
import type { HealthCopy } from '../src/health/health-copy.js'

t.test('workers: auto is the CPUs the cgroup quota allows, rounded up, never more than the cores', async (t) => {
  t.equal(cpusOfQuota('max 100000'), null, 'no limit')
  t.equal(cpusOfQuota('200000 100000'), 2)
  t.equal(cpusOfQuota('150000 100000'), 2, 'a fraction rounds up')
  t.equal(cpusOfQuota('50000 100000'), 1, 'at least one')
  t.equal(cpusOfQuota('garbage'), null)
  const files = (m: Record<string, string>) => (p: string): string | null => m[p] ?? null
  t.equal(availableCpus(files({ '/sys/fs/cgroup/cpu.max': '200000 100000\n' }), 16), 2, 'cgroup v2 limit')
  t.equal(availableCpus(files({ '/sys/fs/cgroup/cpu.max': 'max 100000\n' }), 16), 16, 'v2 without a limit')
  t.equal(availableCpus(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '300000', '/sys/fs/cgroup/cpu/cpu.cfs_period_us': '100000' }), 16), 3, 'cgroup v1 limit')
  t.equal(availableCpus(files({ '/sys/fs/cgroup/cpu/cpu.cfs_quota_us': '-1' }), 4), 4, 'v1 unlimited')
  t.equal(availableCpus(files({ '/sys/fs/cgroup/cpu.max': '800000 100000' }), 2), 2, 'a quota above the cores gives the cores')
  t.equal(workerCount('auto', () => 3), 3)
  t.equal(workerCount(5, () => 3), 5)
})

function hubWith(ids: number[], store: MemoryCheckpointStore | null = null) {
  const sent: [number, ToWorker][] = []
  const w = { hub: null as unknown as Hub, sent, ids }
  w.hub = new Hub({ ids: () => w.ids, donor: (except) => w.ids.find((i) => i !== except) ?? null, send: (id, m) => void sent.push([id, m]), lead: () => w.ids[0] ?? null }, store)
  return w
}

t.test('pins, unpins and rotations are sent to every other worker before the sender is acknowledged', async (t) => {
  const { hub, sent } = hubWith([1, 2, 3])
  const writes = [['b', 'k', 'app-1', 2, 1_000], ['r', 'old', ['app-0', 0]], ['u', 'gone']] as const
  hub.receive(1, { tether: 'writes', seq: 7, writes })
  t.same(sent, [
    [2, { tether: 'written', writes }],
    [3, { tether: 'written', writes }],
    [1, { tether: 'ack', seq: 7 }],
  ])
  sent.length = 0
  hub.receive(3, { tether: 'suspect', id: 'app-1' })
  t.same(sent, [[1, { tether: 'suspect', id: 'app-1' }]], 'a suspicion goes to the worker running the checks only')
  sent.length = 0
  hub.receive(3, { tether: 'publish', message: 'x' })
  t.same(sent.map(([id]) => id), [1, 2, 3], 'a peer message reaches every worker, the sender too')
})

t.test('a starting worker gets its sibling bindings in chunks, then the reply', async (t) => {
  const two = hubWith([1, 2])
  const { hub, sent } = two
  hub.receive(2, { tether: 'call', call: 5, op: 'snapshot', args: [] })
  const dump = sent.find(([id, m]) => id === 1 && m.tether === 'dump')
  t.ok(dump, 'the sibling is asked for a dump')
  t.same(sent.at(-1), [2, { tether: 'dumping', call: 5 }], 'and the asker told at once, after every write sent to both before')
  const n = (dump![1] as { dump: number }).dump
  sent.length = 0
  hub.receive(1, { tether: 'dump-chunk', dump: n, entries: [['a', 'app-0', 0, 1, 2]], done: false })
  hub.receive(1, { tether: 'dump-chunk', dump: n, entries: [['b', 'app-1', 1, 3, 4]], records: [['o', 'b', null, 5]], done: true })
  t.same(sent, [
    [2, { tether: 'snapshot-chunk', call: 5, entries: [['a', 'app-0', 0, 1, 2]] }],
    [2, { tether: 'snapshot-chunk', call: 5, entries: [['b', 'app-1', 1, 3, 4]], records: [['o', 'b', null, 5]] }],
    [2, { tether: 'reply', call: 5, value: null }],
  ])
  sent.length = 0
  hub.receive(2, { tether: 'call', call: 6, op: 'snapshot', args: [] })
  two.ids = [2]
  hub.gone(1)
  t.same(sent.at(-1), [2, { tether: 'reply', call: 6, value: null }], 'a donor that dies with no other sibling ends the snapshot')

  // three workers: the donor dies mid-dump, another sibling sends it all again
  const three = hubWith([1, 2, 3])
  three.hub.receive(3, { tether: 'call', call: 9, op: 'snapshot', args: [] })
  const first = (three.sent.find(([id, m]) => id === 1 && m.tether === 'dump')![1] as { dump: number }).dump
  three.hub.receive(1, { tether: 'dump-chunk', dump: first, entries: [['a', 'app-0', 0, 1, 2]], done: false })
  three.sent.length = 0
  three.ids = [2, 3]
  three.hub.gone(1)
  t.same(three.sent.map(([id, m]) => [id, m.tether]), [[2, 'dump'], [3, 'dumping']], 'a donor that dies mid-dump: the next sibling is asked, the asker told when')
  t.same(three.sent[1], [3, { tether: 'dumping', call: 9 }], 'for the same call')
  const second = (three.sent[0]![1] as { dump: number }).dump
  three.sent.length = 0
  three.hub.receive(1, { tether: 'dump-chunk', dump: first, entries: [['late', 'app-0', 0, 1, 2]], done: true })
  t.same(three.sent, [], "the dead donor's last chunks are dropped")
  three.hub.receive(2, { tether: 'dump-chunk', dump: second, entries: [['a', 'app-0', 0, 1, 2], ['b', 'app-1', 0, 1, 2]], done: true })
  t.same(three.sent, [
    [3, { tether: 'snapshot-chunk', call: 9, entries: [['a', 'app-0', 0, 1, 2], ['b', 'app-1', 0, 1, 2]] }],
    [3, { tether: 'reply', call: 9, value: null }],
  ], 'the second sibling answers the call')
  three.sent.length = 0
  three.hub.receive(2, { tether: 'call', call: 10, op: 'snapshot', args: [] })
  three.sent.length = 0
  three.hub.gone(2)
  t.same(three.sent, [], 'a worker that dies while it asks: nothing more is sent for it')
  const alone = hubWith([1])
  alone.hub.receive(1, { tether: 'call', call: 1, op: 'snapshot', args: [] })
  await new Promise((r) => setImmediate(r))
  t.same(alone.sent, [[1, { tether: 'reply', call: 1, value: null }]], 'the first worker has nobody to ask')
})

t.test("the lead's discovery lists reach the other workers, and a starting worker gets the last of each source before any binding", async (t) => {
  const { hub, sent } = hubWith([1, 2])
  const old = [{ id: '10.0.0.1:80', url: 'http://10.0.0.1:80', weight: 1 }]
  const now = [...old, { id: '10.0.0.2:80', url: 'http://10.0.0.2:80', weight: 1, draining: true }]
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: old })
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: now })
  const unready = [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'beef' }]
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [], unready })
  t.same(sent.map(([id, m]) => [id, m.tether]), [[2, 'discovered'], [2, 'discovered'], [2, 'discovered']], 'relayed to the others only')
  t.same(sent.at(-1)?.[1], { tether: 'discovered', source: 'kubernetes', upstreams: [], unready }, 'with the pods listed not ready')
  sent.length = 0
  hub.receive(2, { tether: 'call', call: 3, op: 'snapshot', args: [] })
  t.same(sent.slice(0, 2), [
    [2, { tether: 'discovered', source: 'kubernetes', upstreams: [], unready }],
    [2, { tether: 'discovered', source: 'dns', upstreams: [old[0], { ...now[1], drainingSince: 0 }] }],
  ], 'the last list of each source (kubernetes, then dns: their precedence), first (a pod listed terminating with since when the others drain it: the hub\'s clock, 0 here)')
  t.same(sent[2]?.[1].tether, 'dump', 'then the bindings')

  const delivered: unknown[] = []
  let deliver: (m: unknown) => void = () => undefined
  const out: unknown[] = []
  const link = new WorkerLink({ send: (m) => void out.push(m), onMessage: (fn) => { deliver = fn } })
  let lead = 0
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null })
  const attached = link.attach({ sessions, records, applyProbe: (id, ok, severe, cause) => void delivered.push(['applied', id, ok, severe, cause]), becomeLead: () => void lead++, discovered: (source, list) => void delivered.push([source, list]), probeSoon: (id) => void delivered.push(['probe', id]), now: () => 0, metrics: () => Promise.resolve([]) })
  const snapshot = out.find((m) => (m as { op?: string }).op === 'snapshot') as { call: number }
  deliver({ tether: 'discovered', source: 'dns', upstreams: now })
  deliver({ tether: 'reply', call: snapshot.call, value: null })
  await attached
  t.same(delivered, [['dns', now]], 'a relayed list is applied')
  deliver({ tether: 'lead' })
  deliver({ tether: 'lead' })
  t.equal(lead, 1, 'told to lead: starts checks and discovery once')
  deliver({ tether: 'suspect', id: 'app-1' })
  t.same(delivered.at(-1), ['probe', 'app-1'], "a suspicion from another worker's client: probed here, the lead")
  link.suspect('app-2')
  t.same(out.at(-1), { tether: 'suspect', id: 'app-2' }, "a request of this worker waits too long: the suspicion goes to the primary")
  deliver({ tether: 'probe', id: 'app-2', ok: false, severe: true, cause: 'timeout after 500 ms' })
  t.same(delivered.at(-1), ['applied', 'app-2', false, true, 'timeout after 500 ms'], "the lead's verdict on a probe is applied as it is (not judged again here), with its cause for the log")
  link.discovered('dns', [{ id: 'a:1', url: 'http://a:1', weight: 2, extra: 'x' } as never])
  t.same(out.at(-1), { tether: 'discovered', source: 'dns', upstreams: [{ id: 'a:1', url: 'http://a:1', weight: 2 }] }, 'sent as plain data')
  link.discovered('kubernetes', [{ id: 'web-0', url: 'http://[fd00::5]:80', weight: 1, draining: true, addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'] }])
  t.same(out.at(-1), { tether: 'discovered', source: 'kubernetes', upstreams: [{ id: 'web-0', url: 'http://[fd00::5]:80', weight: 1, draining: true, addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'] }] }, "with a pod's listed addresses (a peer's down about any of them is about it)")
  link.discovered('kubernetes', [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'c0ffee' }])
  t.same(out.at(-1), { tether: 'discovered', source: 'kubernetes', upstreams: [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'c0ffee' }] }, "with its pod's uid (another uid at the same url is a re-created pod)")
  link.discovered('dns', [{ id: 'web-0', url: 'http://[fd00::5]:80', weight: 1, addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'], keptEmpty: { family: 6, since: 1_700_000_000_000 } }])
  t.same(out.at(-1), { tether: 'discovered', source: 'dns', upstreams: [{ id: 'web-0', url: 'http://[fd00::5]:80', weight: 1, addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'], keptEmpty: { family: 6, since: 1_700_000_000_000 } }] },
    'with the SRV target family kept while it answers empty, and since when (a new lead counts its grace on from it)')
  link.discovered('dns', [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'], keptEmpty: { family: 6, since: 1_700_000_000_000 }, keptEmptyAlso: { family: 4, since: 1_700_000_001_000 } }])
  t.same(out.at(-1), { tether: 'discovered', source: 'dns', upstreams: [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'], keptEmpty: { family: 6, since: 1_700_000_000_000 }, keptEmptyAlso: { family: 4, since: 1_700_000_001_000 } }] },
    'both families kept at once: the other travels in keptEmptyAlso (an older worker reads keptEmpty only)')
  link.discovered('kubernetes', [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'beef', unready: true }, { id: 'web-1', url: 'http://10.0.0.6:80', weight: 1 }])
  t.same(out.at(-1), { tether: 'discovered', source: 'kubernetes', upstreams: [{ id: 'web-1', url: 'http://10.0.0.6:80', weight: 1 }], unready: [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'beef' }] },
    "a pod listed not ready travels apart, with its uid (the pod the workers knew under that name is gone; an older worker ignores it, not serving it)")
  deliver({ tether: 'discovered', source: 'kubernetes', upstreams: [{ id: 'web-1', url: 'http://10.0.0.6:80', weight: 1 }], unready: [{ id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'beef' }] })
  t.same(delivered.at(-1), ['kubernetes', [{ id: 'web-1', url: 'http://10.0.0.6:80', weight: 1 }, { id: 'web-0', url: 'http://10.0.0.5:80', weight: 1, uid: 'beef', unready: true }]], 'received: applied with its unready flag')
})

t.test('named sets and the checkpoint store are held by the primary for all workers', async (t) => {
  const clock = new FakeClock(1_000)
  const { hub, sent } = hubWith([1, 2], new MemoryCheckpointStore({ maxEntries: 10, clock }))
  const settle = () => new Promise((r) => setImmediate(r))
  hub.receive(1, { tether: 'call', call: 1, op: 'remember', args: ['drains', 'app-1', 'migrate'] })
  hub.receive(2, { tether: 'call', call: 2, op: 'members', args: ['drains'] })
  hub.receive(1, { tether: 'call', call: 3, op: 'cp.put', args: ['u', { value: 'v', version: 1, upstream: 'app-0', epoch: 0, writtenAt: 1 }, 60_000, null] })
  await settle()
  hub.receive(2, { tether: 'call', call: 4, op: 'cp.get', args: ['u'] })
  await settle()
  const replies = new Map(sent.filter(([, m]) => m.tether === 'reply').map(([, m]) => [(m as { call: number }).call, (m as { value: unknown }).value]))
  t.same(replies.get(2), { 'app-1': 'migrate' })
  t.equal(replies.get(3), 'stored')
  t.match(replies.get(4), { status: 'found', checkpoint: { value: 'v' } }, 'a checkpoint written through one worker is read through another')
})

t.test('a pin from another worker: the higher epoch wins, then the smaller upstream id; a rotation keeps its grace', async (t) => {
  const s = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  s.applyRemote('k', 'app-2', 1, 0, 0)
  t.equal(s.peek('k', 0)?.upstream, 'app-2')
  s.applyRemote('k', 'app-3', 0, 1, 0)
  t.equal(s.peek('k', 1)?.upstream, 'app-2', 'a lower epoch is ignored')
  s.applyRemote('k', 'app-1', 1, 2, 0)
  t.equal(s.peek('k', 2)?.upstream, 'app-1', 'same epoch: the smaller id, on every worker alike')
  s.applyRemote('k', 'app-2', 1, 3, 0)
  t.equal(s.peek('k', 3)?.upstream, 'app-1')
  s.applyRemote('k', 'app-0', 2, 4, 0)
  t.same([s.peek('k', 4)?.upstream, s.peek('k', 4)?.epoch], ['app-0', 2], 'a move wins')
  s.applyRetired('k', { upstream: 'app-0', epoch: 2 }, 5)
  t.equal(s.peek('k', 5), null, 'a retired value is unpinned')
  t.match(s.rotated('k', 6), { upstream: 'app-0', epoch: 2 }, 'and still routes for the grace period')
})

t.test('two placements of one epoch on two upstreams: the binding kept (the smaller id) takes the later creation time, so its checkpoints are not refused for the other placement\'s', async (t) => {
  for (const order of [['app-1', 'app-0'], ['app-0', 'app-1']] as const) {
    const s = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
    const created = { 'app-0': 100, 'app-1': 200 }
    for (const id of order) s.applyRemote('k', id, 0, 300, created[id], false)
    t.same([s.peek('k', 300)?.upstream, s.peek('k', 300)?.createdAt], ['app-0', 200], `applied ${order.join(' then ')}: app-0, placed at 200`)
  }
  // a worker's own later placement on the larger id, told the other's earlier one
  const s = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  t.ok(s.place('k', 'app-1', 0, 300, 200))
  s.applyRemote('k', 'app-0', 0, 300, 100, false)
  t.same([s.peek('k', 300)?.upstream, s.peek('k', 300)?.createdAt], ['app-0', 200])
  // the store then keeps what that binding's next answer brings
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: new FakeClock(1_000) })
  t.equal(await store.put('k', { value: 'app-1 v1', version: 1, upstream: 'app-1', epoch: 0, writtenAt: 250, placedAt: 200 }, 60_000), 'stored')
  t.equal(await store.put('k', { value: 'app-0 v5', version: 5, upstream: 'app-0', epoch: 0, writtenAt: 400, placedAt: s.peek('k', 300)!.createdAt }, 60_000), 'stored', "the kept upstream's checkpoint is stored")
})

t.test("a worker's answer waits until the primary acknowledged its pins; pins from others are applied, a rotation keeps its grace", async (t) => {
  const sent: unknown[] = []
  let deliver: (m: unknown) => void = () => undefined
  const link = new WorkerLink({ send: (m) => void sent.push(m), onMessage: (fn) => { deliver = fn } })
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null, sink: link.bindings.sink() })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null, pins: sessions.table })
  const attached = link.attach({ sessions, records, applyProbe: () => undefined, becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now: () => 0, metrics: () => Promise.resolve([]) })
  const snapshot = sent.find((m) => (m as { op?: string }).op === 'snapshot') as { call: number }
  deliver({ tether: 'snapshot-chunk', call: snapshot.call, entries: [['old-user', 'app-2', 3, 0, 0]] })
  deliver({ tether: 'reply', call: snapshot.call, value: null })
  await attached
  t.equal(sessions.peek('old-user', 0)?.upstream, 'app-2', "a sibling's bindings are copied before the worker listens")
  t.equal(link.flushedFor(['old-user'], link.mark()), null, 'nothing pending: the answer does not wait')
  t.ok(link.idle())
  sessions.pin('u1', 'app-1', 0, 0)
  sessions.pin('u3', 'app-2', 0, 0)
  const flushed = link.flushedFor(['u1', null], link.mark())
  t.notOk(link.idle())
  t.equal(link.flushedFor(['u2', 'old-user', undefined], link.mark()), null, "another user's answer does not wait for these pins")
  t.notOk(sent.some((m) => (m as { tether: string }).tether === 'writes'), 'the pins of one event-loop turn wait for its end')
  await new Promise((r) => setImmediate(r))
  const bind = sent.at(-1) as { tether: string; seq: number; writes: unknown[] }
  t.same([bind.tether, bind.writes], ['writes', [['b', 'u1', 'app-1', 0, 0], ['b', 'u3', 'app-2', 0, 0]]], 'then go as one message')
  t.ok(flushed !== null, 'a pin is pending until acknowledged')
  // a later write of the same user (a parallel request of theirs): an answer waits for it too
  sessions.pin('u3', 'app-1', 1, 0)
  const later = link.flushedFor(['u3'], link.mark())
  const all = link.flushed()
  let done = false
  let laterDone = false
  void flushed!.then(() => { done = true })
  void later!.then(() => { laterDone = true })
  await new Promise((r) => setImmediate(r))
  t.equal(done, false, 'the answer still waits')
  const again = sent.at(-1) as { tether: string; seq: number; writes: unknown[] }
  t.same(again.writes, [['b', 'u3', 'app-1', 1, 0]])
  deliver({ tether: 'ack', seq: bind.seq })
  await flushed
  t.equal(link.flushedFor(['u1'], link.mark()), null, 'acknowledged')
  await new Promise((r) => setImmediate(r))
  t.equal(laterDone, false, "the user's later write is not acknowledged yet: their answer still waits")
  t.ok(link.flushedFor(['u3'], link.mark()) !== null)
  deliver({ tether: 'ack', seq: again.seq })
  await Promise.all([later, all])
  t.equal(link.flushedFor(['u1', 'u3'], link.mark()), null)
  t.ok(link.idle())
  sessions.unpin('u3')
  link.probed('app-2', false, false, 'ECONNREFUSED')
  t.same(sent.slice(-2).map((m) => (m as { tether: string }).tether), ['writes', 'probe'], 'a write is sent before any later message (one order)')
  t.match(sent.at(-1), { tether: 'probe', id: 'app-2', ok: false, severe: false, cause: 'ECONNREFUSED' }, "a probe's cause goes to the other workers, for their log")
  deliver({ tether: 'written', writes: [['b', 'u2', 'app-0', 1]] })
  t.equal(sessions.peek('u2', 0)?.upstream, 'app-0', "another worker's pin is applied")
  deliver({ tether: 'written', writes: [['r', 'u2', ['app-0', 1]]] })
  t.equal(sessions.peek('u2', 0), null)
  t.match(sessions.rotated('u2', 1), { upstream: 'app-0', epoch: 1 }, 'its rotation grace too')

  // answers every worker records (a migrating drain): written through as pins are
  const moved = { upstream: 'app-1', source: 'failover', epoch: 2, moved: { from: 'app-0', reason: 'drain' }, setCookie: null, learn: false, appKey: null, sessionKey: 's1', bind: null } as const
  link.answered('s1', false, moved)
  const answered = link.flushedFor(['s1'], link.mark())
  t.ok(answered !== null, 'a shared answer holds the head until acknowledged')
  await new Promise((r) => setImmediate(r))
  const a = sent.at(-1) as { tether: string; seq: number; writes: unknown[] }
  t.same(a.writes, [['a', 's1', false, 'app-1', 2, 'app-0', 'drain']], 'sent with its move')
  deliver({ tether: 'ack', seq: a.seq })
  await answered
  deliver({ tether: 'written', writes: [['a', 's2', false, 'app-1', 2, 'app-0', 'drain'], ['b', 'ip', 'app-2', 0], ['a', 'ip', true, 'app-2', 0, null, null]] })
  t.match(records.moved('s2', 0), { upstream: 'app-1', epoch: 2 }, "another worker's move is recorded here")
  t.match(records.lastMove('s2'), { from: 'app-0', to: 'app-1', reason: 'drain' })
  t.equal(records.lastSeenOn('ip', 'app-2', 0), 0, "another worker's answer to a table key is recorded with its pin")
  deliver({ tether: 'written', writes: [['a', 's2', false, 'app-0', 1, null, null]] })
  t.equal(records.lastSeenOn('s2', 'app-0', 0), null, 'a slow answer from before the move changes nothing')

  // a move an admin ordered: sent to the others, and applied from them
  link.ordered('s1', 'app-2', 5)
  await new Promise((r) => setImmediate(r))
  t.same((sent.at(-1) as { writes: unknown[] }).writes, [['o', 's1', 'app-2', 5]], 'an order goes to the other workers, named by when it was made')
  deliver({ tether: 'written', writes: [['o', 's3', null, 7]] })
  t.match(records.ordered('s3'), { to: null, at: 7 }, "another worker's order is held here, to be done at the user's next request here")
  deliver({ tether: 'written', writes: [['x', 's3', 6]] })
  t.match(records.ordered('s3'), { at: 7 }, 'a done older order drops nothing')
  deliver({ tether: 'written', writes: [['x', 's3', 7]] })
  t.equal(records.ordered('s3'), undefined, 'and dropped when another worker did it')
  link.orderDone('s1', 5)
  await new Promise((r) => setImmediate(r))
  t.same((sent.at(-1) as { writes: unknown[] }).writes, [['x', 's1', 5]], 'an order done here: the others are told')
})

t.test("a starting worker copies its sibling's bindings with their times there, in recency order; a pin carries its creation time", async (t) => {
  const idle = 60_000
  const absolute = 300_000
  /** A worker's link and session table over a scripted channel, attached (its snapshot answered by `entries`). */
  async function worker(now: () => number, entries: unknown[] = [], copies: unknown[] = []) {
    const sent: { tether: string; call?: number; op?: string; entries?: unknown[]; writes?: unknown[] }[] = []
    let deliver: (m: unknown) => void = () => undefined
    const link = new WorkerLink({ send: (m) => void sent.push(m as never), onMessage: (fn) => { deliver = fn } }, undefined, 600_000)
    const sessions = new SessionTable({ maxEntries: 10, idleTimeout: idle, absoluteTimeout: absolute, sink: link.bindings.sink() })
    const records = new SessionRecords({ maxEntries: 10, idleTimeout: idle, secret: null, pins: sessions.table })
    const attached = link.attach({ sessions, records, applyProbe: () => undefined, becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now, metrics: () => Promise.resolve([]) })
    const call = sent.find((m) => m.op === 'snapshot')!.call
    if (entries.length > 0) deliver({ tether: 'snapshot-chunk', call, entries, records: copies })
    deliver({ tether: 'reply', call, value: null })
    await attached
    return { link, sessions, records, sent, deliver }
  }
  let aNow = 0
  const a = await worker(() => aNow)
  a.sessions.pin('gone', 'app-0', 0, 0)
  a.sessions.pin('old', 'app-0', 0, 10_000)
  a.sessions.pin('mid', 'app-1', 2, 30_000)
  a.sessions.get('gone', 20_000)
  a.sessions.get('old', 50_000)
  a.sessions.get('mid', 80_000)
  a.sessions.pin('new', 'app-2', 0, 95_000)
  await new Promise((r) => setImmediate(r))
  t.same(a.sent.filter((m) => m.tether === 'writes').flatMap((m) => m.writes), [
    ['b', 'gone', 'app-0', 0, 0], ['b', 'old', 'app-0', 0, 10_000], ['b', 'mid', 'app-1', 2, 30_000], ['b', 'new', 'app-2', 0, 95_000],
  ], 'each pin carries its creation time')

  // what a router reads of the records: answers (to a pinned key, and a cookie session's after
  // a failover, with its move), an admin's order not done yet
  a.records.record('mid', true, 'app-1', 2, null, 90_000)
  a.records.record('s-1', false, 'app-0', 0, null, 60_000)
  a.records.record('s-1', false, 'app-2', 1, { from: 'app-0', reason: 'dead' }, 85_000)
  a.records.record('s-2', false, 'app-1', 0, null, 99_000)
  a.records.order('old', 'app-2', 97_000)
  a.sessions.retire('rot', { upstream: 'app-1', epoch: 0 }, 99_000) // an application cookie value replaced
  aNow = 100_000
  a.deliver({ tether: 'dump', dump: 1 })
  const dumped = a.sent.filter((m) => m.tether === 'dump-chunk').flatMap((m) => m.entries!)
  const records = a.sent.filter((m) => m.tether === 'dump-chunk').flatMap((m) => (m as unknown as { records: unknown[] }).records)
  t.same(records, [
    ['s', 's-2', 'app-1', 0, 99_000, 99_000], ['s', 's-1', 'app-2', 1, 60_000, 85_000], ['t', 'mid', 90_000],
    ['m', 's-1', 'app-0', 'app-2', 'dead', 85_000], ['o', 'old', 'app-2', 97_000], ['g', 'rot', 'app-1', 0, 159_000, false],
  ], 'then the records, after every binding, and the rotation graces')
  t.same(dumped, [
    ['new', 'app-2', 0, 95_000, 95_000], ['mid', 'app-1', 2, 30_000, 80_000], ['old', 'app-0', 0, 10_000, 50_000],
  ], 'the live bindings, most recently used first, with when each was created and last used')

  const b = await worker(() => 100_000, dumped, records)
  for (const [key, , , createdAt, lastSeen] of dumped as [string, string, number, number, number][]) {
    t.match(b.sessions.peek(key, 100_000), { createdAt, lastSeen }, `${key}: the times it had on the sibling`)
  }
  t.equal(b.sessions.peek('gone', 100_000), null, 'an expired binding is not copied')
  t.equal(b.records.lastSeenOn('mid', 'app-1', 100_000), 90_000, "a pinned key's last answer there")
  t.match(b.records.moved('s-1', 100_000), { upstream: 'app-2', epoch: 1, lastSeen: 85_000, movedAt: 85_000, reason: 'dead' }, 'a move, with the answer after it')
  t.equal(b.records.lastSeen('s-2', 100_000), 99_000)
  t.match(b.records.ordered('old'), { to: 'app-2', at: 97_000 }, 'an order not done yet')
  // each expires here when it does on the sibling: the least recently used first (the LRU list is in order)
  t.equal(b.sessions.sweep(109_999, 10), 0)
  t.equal(b.sessions.sweep(110_001, 10), 1, "'old' goes 60 s after its last use there")
  t.equal(b.sessions.peek('old', 110_001), null)
  t.equal(b.sessions.sweep(140_001, 10), 1, "then 'mid'")
  t.ok(b.sessions.peek('new', 140_001))

  // republished here: news when the others' copy may have expired, a renewal otherwise
  let cNow = 100_000
  const c = await worker(() => cNow, dumped)
  c.sessions.sync('old', null, 100_000)
  const news = c.link.flushedFor(['old'], c.link.mark())
  t.ok(news !== null, 'a copy 50 s idle there: its republishing is news, waited for')
  c.sessions.sync('new', null, 100_000)
  t.equal(c.link.flushedFor(['new'], c.link.mark()), null, 'a copy used 5 s ago there: a renewal, not waited for')
  await new Promise((r) => setImmediate(r))
  t.same(c.sent.filter((m) => m.tether === 'writes').flatMap((m) => m.writes), [['b', 'old', 'app-0', 0, 10_000], ['b', 'new', 'app-2', 0, 95_000]],
    'with the creation time it had on the sibling')
  c.deliver({ tether: 'ack', seq: c.link.mark() })
  await news

  // a pin from another worker brings its creation time: a binding that expired here (by the
  // absolute timeout, made again by that write) ends when it does there
  c.deliver({ tether: 'written', writes: [['b', 'mid', 'app-1', 2, 20_000]] })
  t.equal(c.sessions.peek('mid', 100_000)?.createdAt, 20_000, "a held binding takes the writer's creation time")
  c.deliver({ tether: 'written', writes: [['b', 'late', 'app-0', 1, 90_000]] })
  c.sessions.get('late', 100_000)
  c.sessions.get('late', 150_000)
  c.sessions.get('late', 200_000)
  c.sessions.get('late', 250_000)
  c.sessions.get('late', 300_000)
  c.sessions.get('late', 350_000)
  t.ok(c.sessions.peek('late', 389_999), 'used every 50 s: alive until 300 s after its creation there')
  t.equal(c.sessions.peek('late', 390_001), null, 'and gone then')
  cNow = 390_001
  c.deliver({ tether: 'written', writes: [['b', 'late', 'app-0', 1, 380_000]] })
  t.equal(c.sessions.peek('late', 390_001)?.createdAt, 380_000, 'made again there: made again here with the same creation time')
  c.deliver({ tether: 'written', writes: [['b', 'future', 'app-0', 0, 10 ** 13]] })
  t.equal(c.sessions.peek('future', cNow)?.createdAt, cNow, 'a creation time in the future is taken as now')
})

/** A worker (its link, tables and records, at time 50,000) that has asked for its snapshot: `call`; `attached` resolves once it is in. */
function attaching(timers?: FakeTimers) {
  const sent: { tether: string; call?: number; op?: string }[] = []
  let deliver: (m: unknown) => void = () => undefined
  const link = new WorkerLink({ send: (m) => void sent.push(m as never), onMessage: (fn) => { deliver = fn } }, undefined, 600_000, timers)
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null, sink: link.bindings.sink() })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null, pins: sessions.table })
  const attached = link.attach({ sessions, records, applyProbe: () => undefined, becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now: () => 50_000, metrics: () => Promise.resolve([]) })
  const call = sent.find((m) => m.op === 'snapshot')!.call!
  return { deliver: (m: unknown) => deliver(m), link, sessions, records, attached, call, sent: sent as { tether: string; writes?: unknown[] }[] }
}

t.test("other workers' writes that reach a starting worker before its snapshot are applied after it, in order; times from an older build count as now", async (t) => {
  const { deliver, sessions, records, attached, call } = attaching()
  // sent before the snapshot was taken: in it already (replayed, they would make its users look
  // used just now), dropped
  deliver({ tether: 'written', writes: [['b', 'kept', 'app-0', 0, 5_000]] })
  deliver({ tether: 'dumping', call })
  // the sibling dumped before it applied these; they reach this worker first
  deliver({ tether: 'written', writes: [['u', 'gone'], ['b', 'moved', 'app-2', 3, 40_000]] })
  deliver({ tether: 'written', writes: [['r', 'rotated', ['app-1', 0]], ['x', 'done', 30_000]] })
  t.equal(sessions.peek('moved', 50_000), null, 'held until the snapshot is in')
  deliver({ tether: 'snapshot-chunk', call, entries: [
    ['kept', 'app-0', 0, 5_000, 46_000], ['gone', 'app-0', 0, 10_000, 45_000], ['moved', 'app-1', 2, 20_000, 44_000], ['rotated', 'app-1', 0, 30_000, 43_000], ['old-build', 'app-0', 0],
  ], records: [['o', 'done', 'app-2', 30_000], ['g', 'was', 'app-2', 1, 90_000], ['g', 'over', 'app-2', 1, 49_000]] })
  deliver({ tether: 'reply', call, value: null })
  await attached
  t.equal(sessions.peek('gone', 50_000), null, 'an unpin made meanwhile is not undone by the copy')
  t.match(sessions.peek('moved', 50_000), { upstream: 'app-2', epoch: 3, createdAt: 40_000 }, 'a move made meanwhile stands')
  t.equal(sessions.peek('rotated', 50_000), null, 'a cookie value rotated meanwhile is gone')
  t.match(sessions.rotated('rotated', 50_000), { upstream: 'app-1' }, 'and still routes for its grace')
  t.equal(records.ordered('done'), undefined, 'an order done meanwhile is not ordered again')
  t.equal(sessions.peek('kept', 50_000)?.lastSeen, 46_000, 'a write from before the snapshot is not replayed over it')
  t.match(sessions.rotated('was', 50_000), { upstream: 'app-2', epoch: 1 }, "a rotation grace still running on the sibling routes here too")
  t.equal(sessions.rotated('over', 50_000), null, 'one that ended is not copied')
  t.match(sessions.peek('old-build', 50_000), { upstream: 'app-0', createdAt: 43_000, lastSeen: 43_000 }, 'an entry without times: copied as used now, no later than the copy listed before it')
  deliver({ tether: 'written', writes: [['b', 'later', 'app-0', 0, 50_000]] })
  t.ok(sessions.peek('later', 50_000), 'after the snapshot, writes apply at once')
})

t.test('a sibling that dies while it sends the snapshot: writes held since are applied when the next one takes it, and its copy fills in the rest', async (t) => {
  const { deliver, sessions, records, attached, call } = attaching()
  deliver({ tether: 'dumping', call })
  // the first sibling sends a part, then dies; this write was made after its copy
  deliver({ tether: 'snapshot-chunk', call, entries: [['moved', 'app-0', 0, 10_000, 45_000]] })
  deliver({ tether: 'written', writes: [['b', 'moved', 'app-2', 3, 40_000]] })
  // the second sibling applied that write before its copy: it has moved at app-2 too
  deliver({ tether: 'dumping', call })
  deliver({ tether: 'written', writes: [['u', 'other']] })
  deliver({ tether: 'snapshot-chunk', call, entries: [['moved', 'app-2', 3, 40_000, 46_000], ['other', 'app-1', 0, 20_000, 44_000], ['rest', 'app-1', 0, 20_000, 43_000]] })
  deliver({ tether: 'reply', call, value: null })
  await attached
  t.match(sessions.peek('moved', 50_000), { upstream: 'app-2', epoch: 3 }, 'the move made between the two copies stands (the first copy had the key before it)')
  t.equal(sessions.peek('other', 50_000), null, 'an unpin made after the second copy is not undone by it')
  t.match(sessions.peek('rest', 50_000), { upstream: 'app-1' }, 'what the first sibling had not sent comes from the second')
})

t.test("a starting worker's own write acknowledged while its snapshot comes in is applied again at its place, after the others' writes held before it", async (t) => {
  const { deliver, sessions, attached, call, sent } = attaching()
  deliver({ tether: 'dumping', call })
  // made here: a starting worker serves nothing, so its one write is a binding told again (a
  // sibling's held write it refused, applied when another sibling took the copy over)
  sessions.pin('k', 'app-1', 0, 50_000)
  await new Promise((r) => setImmediate(r))
  const mine = sent.find((m) => m.tether === 'writes') as { seq: number } | undefined
  t.ok(mine, 'sent')
  // the primary put another worker's unpin of the user first, then this worker's pin
  deliver({ tether: 'written', writes: [['u', 'k']] })
  deliver({ tether: 'ack', seq: mine!.seq })
  deliver({ tether: 'reply', call, value: null })
  await attached
  t.match(sessions.peek('k', 50_000), { upstream: 'app-1' }, 'the pin, last in the primary\'s order, stands (as on every other worker)')
})

t.test('a pin from a worker that did not know a later move of the user (evicted, expired a little earlier there) is refused and the later binding told again, as is one that loses a tie here; later pins are not', async (t) => {
  const { deliver, sessions, attached, call, sent } = attaching()
  deliver({ tether: 'reply', call, value: null })
  await attached
  // the re-send is decided after the writes that came with the refused one, then sent
  const turns = async (): Promise<void> => { for (let i = 0; i < 2; i++) await new Promise((r) => setImmediate(r)) }
  deliver({ tether: 'written', writes: [['b', 'moved', 'app-1', 2, 40_000], ['b', 'tie', 'app-1', 0, 40_000]] })
  await turns()
  const told = (): unknown[] => sent.filter((m) => m.tether === 'writes').flatMap((m) => m.writes ?? [])
  t.same(told(), [], 'writes applied from others are not told again')
  // another worker lost `moved` and placed it afresh (epoch 0): refused here, the move told again
  deliver({ tether: 'written', writes: [['b', 'moved', 'app-0', 0, 49_000]] })
  await turns()
  t.match(sessions.peek('moved', 50_000), { upstream: 'app-1', epoch: 2 }, 'the later move stands')
  t.same(told(), [['b', 'moved', 'app-1', 2, 40_000]], 'and is told to the others again, with its creation time')
  // the same epoch elsewhere: two workers that placed a user at once, or one that lost the
  // binding and placed it afresh on an upstream added since; the smaller id stays and is told
  // again (the writer may hold nothing else to take it from)
  deliver({ tether: 'written', writes: [['b', 'tie', 'app-2', 0, 49_000], ['b', 'moved', 'app-3', 3, 49_500]] })
  await turns()
  t.match(sessions.peek('tie', 50_000), { upstream: 'app-1', epoch: 0 }, 'a tie: the smaller upstream id stays')
  t.match(sessions.peek('moved', 50_000), { upstream: 'app-3', epoch: 3 }, 'a later move replaces the binding')
  t.same(told().slice(1), [['b', 'tie', 'app-1', 0, 49_000]], 'the tie is told again, with the later placement time of the two (its checkpoints must not be refused for the other placement\'s), the later move is not')
  // a stale pin and an unpin of the same user in one message: the unpin stands, nothing told
  deliver({ tether: 'written', writes: [['b', 'moved', 'app-0', 0, 49_900], ['u', 'moved']] })
  await turns()
  t.equal(sessions.peek('moved', 50_000), null, 'unpinned')
  t.equal(told().length, 2, 'the binding unpinned meanwhile is not told again')
  // a stale pin and a later move of the same user in one message: the move's maker told it
  deliver({ tether: 'written', writes: [['b', 'x', 'app-1', 2, 49_800]] })
  deliver({ tether: 'written', writes: [['b', 'x', 'app-0', 0, 49_900], ['b', 'x', 'app-3', 3, 49_950]] })
  await turns()
  t.match(sessions.peek('x', 50_000), { upstream: 'app-3', epoch: 3 }, 'the later move stands')
  t.equal(told().length, 2, 'and is not told again by this worker')
})

t.test("a sibling's copy has 30 s to come in, counted again when another sibling takes it over", async (t) => {
  const timers = new FakeTimers()
  const { deliver, sessions, attached, call } = attaching(timers)
  let done = false
  void attached.then(() => { done = true })
  deliver({ tether: 'dumping', call })
  timers.advance(10_000)
  deliver({ tether: 'dumping', call }) // the first sibling died; another one sends it all
  timers.advance(20_000) // 30 s from the start, 20 s into the second try
  await new Promise((r) => setImmediate(r))
  t.notOk(done, 'still waiting for the second sibling')
  deliver({ tether: 'snapshot-chunk', call, entries: [['k', 'app-1', 0, 40_000, 45_000]] })
  timers.advance(10_000) // 30 s into the second try (40 s in all): gives up
  await new Promise((r) => setImmediate(r))
  t.ok(done, 'gave up 30 s into the second try')
  if (!done) deliver({ tether: 'reply', call, value: null })
  await attached
  t.match(sessions.peek('k', 50_000), { upstream: 'app-1' }, 'what came in is kept')
  deliver({ tether: 'snapshot-chunk', call, entries: [['late', 'app-1', 0, 40_000, 45_000]] })
  t.equal(sessions.peek('late', 50_000), null, 'what comes after it gave up is not applied')
})

t.test("a copy taken over by sibling after sibling waits 45 s in all, well within the primary's start deadline", async (t) => {
  const timers = new FakeTimers()
  const { deliver, sessions, attached, call } = attaching(timers)
  let done = false
  void attached.then(() => { done = true })
  deliver({ tether: 'dumping', call })
  timers.advance(29_000)
  deliver({ tether: 'dumping', call }) // the first sibling died 29 s in; the second has 30 s, but 16 s are left in all
  deliver({ tether: 'snapshot-chunk', call, entries: [['k', 'app-1', 0, 40_000, 45_000]] })
  timers.advance(15_999)
  await new Promise((r) => setImmediate(r))
  t.notOk(done, 'still waiting 44.999 s from the ask')
  timers.advance(1)
  await new Promise((r) => setImmediate(r))
  t.ok(done, 'gave up 45 s from the ask, not 59 s')
  if (!done) deliver({ tether: 'reply', call, value: null })
  await attached
  t.match(sessions.peek('k', 50_000), { upstream: 'app-1' }, 'what came in is kept')
})

t.test("a starting worker's copy brings its sibling's health with the first chunk; the lead's probe results are applied after it, none counted twice", async (t) => {
  const rows = [{ id: 'app-1', activeFailed: false, activeSuccesses: 3, activeFailures: 0, ejectedUntil: 90_000, timesEjected: 1, lastEjectionEnd: 90_000, readySince: 20_000 }]
  // the hub: the donor is the lead; what it sends between the dump and its first chunk is in its copy
  const sent: [number, ToWorker][] = []
  let lead = 1
  const hub = new Hub({ ids: () => [1, 2, 3], donor: () => 1, send: (id, m) => void sent.push([id, m]), lead: () => lead }, null)
  hub.receive(3, { tether: 'call', call: 4, op: 'snapshot', args: [] })
  const dump = (sent.find(([id, m]) => id === 1 && m.tether === 'dump')![1] as { dump: number }).dump
  sent.length = 0
  hub.receive(1, { tether: 'probe', id: 'app-1', ok: false, severe: false })
  t.same(sent.map(([id]) => id), [2], "the donor's probe result sent before its copy: not for the worker taking it (in the copy)")
  sent.length = 0
  hub.receive(1, { tether: 'dump-chunk', dump, entries: [], records: [], health: rows, done: false })
  t.same(sent, [[3, { tether: 'snapshot-chunk', call: 4, entries: [], records: [], health: rows }]], 'the health is passed on')
  sent.length = 0
  hub.receive(1, { tether: 'probe', id: 'app-1', ok: true, severe: false })
  t.same(sent.map(([id]) => id), [2, 3], 'after its first chunk: to every other worker')
  sent.length = 0
  // another worker is the lead: its results reach the donor after the dump too (not in the copy)
  lead = 2
  hub.receive(2, { tether: 'call', call: 5, op: 'snapshot', args: [] })
  sent.length = 0
  hub.receive(2, { tether: 'probe', id: 'app-1', ok: true, severe: false })
  t.same(sent.map(([id]) => id), [1, 3], "another worker's probe result reaches all")

  // the starting worker: results before the copy is taken are in it; those after, applied after it
  const applied: unknown[] = []
  let deliver: (m: unknown) => void = () => undefined
  const out: { tether: string; call?: number; op?: string }[] = []
  const link = new WorkerLink({ send: (m) => void out.push(m as never), onMessage: (fn) => { deliver = fn } })
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null })
  const health = { copies: () => rows, copy: (r: readonly unknown[]) => void applied.push(['copy', r]) }
  const attached = link.attach({ sessions, records, health, applyProbe: (id, ok) => void applied.push([id, ok]), becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now: () => 50_000, metrics: () => Promise.resolve([]) })
  const call = out.find((m) => m.op === 'snapshot')!.call
  deliver({ tether: 'probe', id: 'before', ok: false, severe: false })
  deliver({ tether: 'dumping', call })
  deliver({ tether: 'probe', id: 'after', ok: true, severe: false })
  t.same(applied, [['before', false]], 'a result that came after the copy was taken waits for it')
  deliver({ tether: 'snapshot-chunk', call, entries: [], health: rows })
  deliver({ tether: 'reply', call, value: null })
  await attached
  t.same(applied, [['before', false], ['copy', rows], ['after', true]], 'then it is applied, over the copy')
  deliver({ tether: 'probe', id: 'later', ok: true, severe: false })
  t.same(applied.at(-1), ['later', true], 'once attached, at once')

  // as a donor: its health goes with the first chunk only
  deliver({ tether: 'dump', dump: 7 })
  const chunks = out.filter((m) => m.tether === 'dump-chunk') as unknown as { health?: unknown }[]
  t.same(chunks.map((c) => c.health), [rows], 'the first chunk has the health')
})

t.test("peer messages (an upstream found down) that reach a starting worker after its copy was taken, before it subscribes, are handed to its subscriber; those before are in the copy", async (t) => {
  const { deliver, link, attached, call } = attaching()
  deliver({ tether: 'message', message: 'before' })
  deliver({ tether: 'dumping', call })
  deliver({ tether: 'message', message: 'after' })
  deliver({ tether: 'reply', call, value: null })
  await attached
  const heard: string[] = []
  await link.channel.subscribe((m) => void heard.push(m))
  t.same(heard, ['after'], 'handed over when it subscribes')
  deliver({ tether: 'message', message: 'later' })
  t.same(heard, ['after', 'later'], 'then as they come')
})


t.test('a starting worker that missed the messages sent before its link listened routes as its sibling: what they carry comes again with its snapshot', async (t) => {
  // the primary's hub over an ordered channel per worker; a message to a worker whose link does
  // not listen yet (a process still starting) is lost, as node drops it with no listener
  const ids = [1, 2]
  const links = new Map<number, (m: unknown) => void>()
  const dropped: string[] = []
  const queue: [number, ToWorker][] = []
  let pumping = false
  const hub = new Hub({
    ids: () => ids,
    donor: (except) => (except === 1 ? null : 1),
    send: (id, m) => {
      queue.push([id, m])
      if (pumping) return
      pumping = true
      for (let next = queue.shift(); next !== undefined; next = queue.shift()) {
        const deliver = links.get(next[0])
        if (deliver === undefined) dropped.push(next[1].tether)
        else deliver(next[1])
      }
      pumping = false
    },
    lead: () => 1,
  }, null, { now: () => 50_000, drainTimeout: () => 60_000 })
  const rows = [{ id: 'app-2', activeFailed: true, activeSuccesses: 0, activeFailures: 3, ejectedUntil: 80_000, timesEjected: 1, lastEjectionEnd: null, readySince: null }]
  async function worker(id: number, health: readonly HealthCopy[]) {
    const link = new WorkerLink({ send: (m) => hub.receive(id, m), onMessage: (fn) => void links.set(id, fn) }, undefined, 600_000)
    const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null, sink: link.bindings.sink() })
    const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null, pins: sessions.table })
    const w = { link, sessions, records, health, lists: [] as unknown[] }
    await link.attach({
      sessions, records, now: () => 50_000, applyProbe: () => undefined, becomeLead: () => undefined, probeSoon: () => undefined, metrics: () => Promise.resolve([]),
      health: { copies: () => w.health, copy: (r) => { w.health = r } },
      discovered: (source, upstreams, leaving) => void w.lists.push([source, upstreams.map((u) => u.id), leaving.map((u) => u.id)]),
    })
    return w
  }
  const one = await worker(1, rows)
  // worker 2 is forked (the hub sends to it from now on), its link not listening yet
  const url = (n: number): string => `http://127.0.0.1:${9000 + n}`
  one.link.discovered('dns', [1, 2, 3].map((n) => ({ id: `app-${n}`, url: url(n), weight: 1 })))
  one.link.discovered('dns', [1, 2].map((n) => ({ id: `app-${n}`, url: url(n), weight: 1 })))
  one.sessions.pin('k', 'app-1', 0, 40_000)
  one.records.order('s-1', 'app-1', 45_000) // an admin's order made there (recorded, then told)
  one.link.ordered('s-1', 'app-1', 45_000)
  one.link.probed('app-2', false, true)
  await one.link.channel.publish(JSON.stringify({ kind: 'drain', id: 'app-1' }))
  await one.link.channel.remember('drains', 'app-1', 'stay')
  await new Promise((r) => setImmediate(r))
  t.same([...new Set(dropped)].sort(), ['discovered', 'message', 'probe', 'written'], 'every kind with routing state was lost on the way')

  const two = await worker(2, [])
  t.equal(two.sessions.peek('k', 50_000)?.upstream, 'app-1', "the pin is in the sibling's copy")
  t.same([...two.records.copies(50_000)].filter((r) => r[0] === 'o'), [['o', 's-1', 'app-1', 45_000]], "so is the admin's order")
  t.same(two.health, rows, "the probe's ejection is in the sibling's health")
  t.same(two.lists, [['dns', ['app-1', 'app-2'], ['app-3']]], 'the last list comes again, with what left it and still drains')
  t.same([...(await two.link.channel.members('drains')) ?? []], [['app-1', 'stay']], 'the drain is recorded at the primary, read as the worker starts')
})
