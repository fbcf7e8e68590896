// A starting worker's copy of its sibling's rotation graces (application cookie values replaced
// lately) carries each one's creation time, so `affinity.absolute_timeout` ends the user's
// affinity on the new worker when it ends on the others; a copy from (or to) a worker of an
// older build, without it, works as before. The worker link over a scripted IPC channel; time
// is explicit (no processes, no sleeping).
import t from 'tap'
import { SessionTable } from '../src/affinity/session-table.js'
import { SessionRecords } from '../src/affinity/session-records.js'
import { learnAppCookie } from '../src/affinity/app-cookie.js'
import { WorkerLink } from '../src/workers/worker-link.js'

const IDLE = 60_000
const ABSOLUTE = 120_000

/** A worker's link, session table and records over a scripted channel, attached (its snapshot answered by `entries` and `records`). */
async function worker(now: () => number, entries: unknown[] = [], records: unknown[] = []) {
  const sent: { tether: string; call?: number; op?: string; entries?: unknown[]; records?: unknown[] }[] = []
  let deliver: (m: unknown) => void = () => undefined
  const link = new WorkerLink({ send: (m) => void sent.push(m as never), onMessage: (fn) => { deliver = fn } }, undefined, 600_000)
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: IDLE, absoluteTimeout: ABSOLUTE, sink: link.bindings.sink() })
  const recs = new SessionRecords({ maxEntries: 10, idleTimeout: IDLE, secret: null, pins: sessions.table })
  const attached = link.attach({ sessions, records: recs, applyProbe: () => undefined, becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now, metrics: () => Promise.resolve([]) })
  const call = sent.find((m) => m.op === 'snapshot')!.call
  if (entries.length > 0 || records.length > 0) deliver({ tether: 'snapshot-chunk', call, entries, records })
  deliver({ tether: 'reply', call, value: null })
  await attached
  return { sessions, sent, deliver: (m: unknown) => deliver(m) }
}

/** What worker `w` sends a starting sibling (asked at its `now`): its bindings and its records. */
function dumpOf(w: Awaited<ReturnType<typeof worker>>): { entries: unknown[]; records: unknown[] } {
  w.deliver({ tether: 'dump', dump: 1 })
  const chunks = w.sent.filter((m) => m.tether === 'dump-chunk')
  return { entries: chunks.flatMap((m) => m.entries!), records: chunks.flatMap((m) => m.records ?? []) }
}

t.test("a rotated application cookie's grace reaches a starting worker with its creation time: past absolute_timeout it neither routes nor pins a new value there", async (t) => {
  let aNow = 20_000
  const a = await worker(() => aNow)
  // the user's first value, pinned at 20 s, used at 60 s; replaced at 90 s by 'v2' (it continues the binding)
  a.sessions.pin('v1', 'app-1', 0, 20_000)
  a.sessions.get('v1', 60_000)
  learnAppCookie(a.sessions, 'sid', { upstream: 'app-1', epoch: 0, appKey: 'v1', placedAt: 20_000 }, 'sid=v2; path=/', 90_000)
  t.equal(a.sessions.peek('v2', 90_000)?.createdAt, 20_000, 'on the sibling, the new value continues the first binding')
  // a value Tether never learned, replaced: its grace has no creation time
  a.sessions.retire('made-up', { upstream: 'app-0', epoch: 0 }, 95_000)

  aNow = 100_000
  const { entries, records } = dumpOf(a)
  t.same(records, [['g', 'made-up', 'app-0', 0, 155_000, false], ['g', 'v1', 'app-1', 0, 150_000, true, 20_000]],
    "each grace as before (an older build reads these six fields alone), the pinned one's creation time after them")

  // a worker started at 100 s (after a crash of another) copies them
  const b = await worker(() => 100_000, entries, records)
  t.equal(b.sessions.createdAt('v1', 100_000), 20_000, 'the copied grace has the creation time it had on the sibling')
  t.equal(b.sessions.createdAt('made-up', 100_000), null, 'one without stays without')
  // a request still carrying 'v1' comes to the new worker: routed by the grace (no placement time in the decision)
  const d = { upstream: 'app-1', epoch: 0, appKey: 'v1', placedAt: null }
  t.match(b.sessions.rotated('v1', 100_000), { upstream: 'app-1' }, 'it routes by the grace while the affinity lasts')
  learnAppCookie(b.sessions, 'sid', d, 'sid=v3; path=/', 100_000)
  t.equal(b.sessions.peek('v3', 100_000)?.createdAt, 20_000, 'the value its answer sets continues the first binding, as on the sibling')
  t.equal(b.sessions.peek('v3', 140_001), null, 'so the affinity ends at 140 s there too (absolute_timeout 120 s)')

  // past the absolute timeout (and within the grace's 60 s): the stale grace routes nothing,
  // and an answer to a request that carried it pins nothing
  t.equal(b.sessions.rotated('v1', 141_000), null, 'past absolute_timeout the copied grace does not route')
  learnAppCookie(b.sessions, 'sid', d, 'sid=v4; path=/', 141_000)
  t.equal(b.sessions.peek('v4', 141_000), null, 'and a value set through it is not pinned: the user is placed afresh')
  t.match(b.sessions.rotated('made-up', 141_000), { upstream: 'app-0' }, 'a grace without a creation time keeps its 60 s')
})

t.test('a grace from a sibling of an older build (six fields, no creation time) is copied as before', async (t) => {
  const b = await worker(() => 100_000, [], [['g', 'v1', 'app-1', 0, 150_000, true], ['g', 'odd', 'app-1', 0, 150_000, true, 'x']])
  t.match(b.sessions.rotated('v1', 149_999), { upstream: 'app-1' }, 'it routes for its whole grace')
  t.equal(b.sessions.createdAt('v1', 100_000), null, 'its creation time is unknown')
  learnAppCookie(b.sessions, 'sid', { upstream: 'app-1', epoch: 0, appKey: 'v1', placedAt: null }, 'sid=v2; path=/', 100_000)
  t.equal(b.sessions.peek('v2', 100_000)?.createdAt, 100_000, 'a value set through it starts a binding afresh, as before')
  t.equal(b.sessions.createdAt('odd', 100_000), null, 'a creation time that is not a number counts as none')
})

t.test("a rotation relayed to the other workers carries the binding's creation time: one that did not hold the binding (evicted for room) ends its grace with the user's affinity too", async (t) => {
  const a = await worker(() => 90_000)
  a.sessions.pin('v1', 'app-1', 0, 20_000)
  a.sessions.get('v1', 60_000)
  a.sessions.retire('v1', { upstream: 'app-1', epoch: 0 }, 90_000)
  a.sessions.retire('made-up', { upstream: 'app-0', epoch: 0 }, 90_000)
  await new Promise((r) => setImmediate(r))
  t.same(a.sent.filter((m) => m.tether === 'writes').flatMap((m) => (m as unknown as { writes: unknown[] }).writes), [
    ['b', 'v1', 'app-1', 0, 20_000], ['r', 'v1', ['app-1', 0, 20_000]], ['r', 'made-up', ['app-0', 0]],
  ], "the grace's creation time after the two fields an older worker reads; none for a value never pinned")

  // a worker that does not hold 'v1' (evicted for room) applies the rotation
  const b = await worker(() => 90_000)
  b.deliver({ tether: 'written', writes: [['r', 'v1', ['app-1', 0, 20_000]], ['r', 'old-build', ['app-1', 0]]] })
  t.equal(b.sessions.createdAt('v1', 100_000), 20_000, 'it takes the creation time the rotation carries')
  t.match(b.sessions.rotated('v1', 140_000), { upstream: 'app-1' })
  t.equal(b.sessions.rotated('v1', 140_001), null, 'and the grace ends at absolute_timeout, as on the writer')
  t.equal(b.sessions.createdAt('old-build', 100_000), null, 'a rotation from an older worker, without it: unknown, as before')
  t.match(b.sessions.rotated('old-build', 149_999), { upstream: 'app-1' }, 'its grace runs its 60 s')
})
