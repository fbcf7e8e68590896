// With workers, an answer's head waits until what was written through about its user reached
// every other worker (WorkerLink acknowledgements), and only that: other users' pending writes
// do not hold it. Unit test of AnswerHead over a real WorkerLink with a scripted IPC channel.
import t from 'tap'
import { AnswerHead } from '../src/proxy/answer-head.js'
import type { RequestContext } from '../src/proxy/request-context.js'
import type { ReservedHeaders } from '../src/reserved-headers.js'
import type { Decision } from '../src/routing/decision.js'
import { SessionRecords } from '../src/affinity/session-records.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { WorkerLink } from '../src/workers/worker-link.js'
import { FakeClock } from './fixtures/clock.js'

const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

function setup(absoluteTimeout: number | null = null) {
  const sent: { tether: string; seq?: number; writes?: unknown[] }[] = []
  let deliver: (m: unknown) => void = () => undefined
  // no wait ends by its timeout here (a slow machine): only acknowledgements release them
  const link = new WorkerLink({ send: (m) => void sent.push(m as never), onMessage: (fn) => { deliver = fn } }, undefined, 600_000)
  const sessions = new SessionTable({ maxEntries: 300_000, idleTimeout: 60_000, absoluteTimeout, sink: link.bindings.sink() })
  const records = new SessionRecords({ maxEntries: 100, idleTimeout: 60_000, secret: null, pins: sessions.table })
  const head = new AnswerHead({
    sessions, records, appCookie: 'PHPSESSID', state: null, reserved: {} as ReservedHeaders, upstreamHeader: false, clock: new FakeClock(1_000),
    shareAnswers: { migrating: () => false, send: (k, table, d) => link.answered(k, table, d) },
    writes: link,
  })
  const lastWrites = () => sent.filter((m) => m.tether === 'writes').at(-1)!
  return { link, sessions, head, sent, lastWrites, ack: (seq: number) => deliver({ tether: 'ack', seq }) }
}

/** The least of a request's context an answer reads: its key and decision. */
function context(key: RequestContext['key'], d: Decision): RequestContext {
  const ctx = { key, decision: d, learnedKey: null as string | null, target: { path: '/', authority: null } }
  Object.defineProperty(ctx, 'sessionKey', { get: () => ctx.learnedKey ?? d.sessionKey })
  return ctx as unknown as RequestContext
}

const decision = (over: Partial<Decision>): Decision =>
  ({ upstream: 'app-1', source: 'table', epoch: 0, moved: null, setCookie: null, learn: false, appKey: null, sessionKey: null, bind: null, ...over }) as Decision

/** Whether `p` settled within one event-loop turn. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false
  void p.then(() => { done = true })
  await turn()
  return done
}

t.test("an answer that wrote nothing does not wait for other users' pins", async (t) => {
  const { sessions, head, link } = setup()
  sessions.pin('someone-else', 'app-2', 0, 1_000)
  t.notOk(link.idle(), "another user's pin is pending")
  const d = decision({ source: 'hash', sessionKey: 's-1' })
  t.equal(head.inspect(context({ kind: 'cookie', session: null }, d), {}), null, 'the answer goes out at once')
})

t.test('an answer that rotates an application cookie waits until the new value is at every other worker', async (t) => {
  const { head, lastWrites, ack } = setup()
  const d = decision({ learn: true, appKey: 'old', sessionKey: 'old' })
  const held = head.inspect(context({ kind: 'table', value: 'old', learned: true, checkpoints: false, learn: true }, d), { 'set-cookie': 'PHPSESSID=new; Path=/' })
  t.ok(held !== null, 'the head waits')
  await turn()
  const w = lastWrites()
  t.same(w.writes!.map((x) => (x as unknown[]).slice(0, 2)), [['r', 'old'], ['b', 'new']], 'the old value retired, the new one pinned, in one message')
  ack(w.seq! - 1)
  t.notOk(await settled(held!), 'the retirement alone acknowledged: the new value is not at the others yet, the head still waits')
  ack(w.seq!)
  t.equal(await held, 'ok', 'then it goes out')
})

t.test('a parallel request of a user whose pin is pending waits for it, though it wrote nothing itself', async (t) => {
  const { head, lastWrites, ack } = setup()
  const first = decision({ source: 'hash', learn: true, sessionKey: '10.0.0.7', bind: { key: '10.0.0.7', upstream: 'app-1', epoch: 0, publish: true } as never })
  const held1 = head.inspect(context({ kind: 'table', value: '10.0.0.7', learned: false, checkpoints: false, learn: false }, first), {})
  const second = decision({ sessionKey: '10.0.0.7' })
  const held2 = head.inspect(context({ kind: 'table', value: '10.0.0.7', learned: false, checkpoints: false, learn: false }, second), {})
  t.ok(held1 !== null && held2 !== null, 'both heads wait')
  await turn()
  t.notOk(await settled(held2!))
  ack(lastWrites().seq!)
  t.same(await Promise.all([held1, held2]), ['ok', 'ok'])
})

t.test('a move is told to the other workers before its answer goes out', async (t) => {
  const { head, lastWrites, ack } = setup()
  const d = decision({ source: 'failover', epoch: 2, moved: { from: 'app-0', reason: 'dead' }, sessionKey: 's-9' } as never)
  const held = head.inspect(context({ kind: 'cookie', session: null }, d), {})
  t.ok(held !== null)
  await turn()
  const w = lastWrites()
  t.same((w.writes![0] as unknown[]).slice(0, 2), ['a', 's-9'])
  t.notOk(await settled(held!))
  ack(w.seq!)
  t.equal(await held, 'ok')
})

t.test('a renewal (a binding published again once per sync period) holds back no answer, unless the others may have let it expire', async (t) => {
  const { sessions, head, link, lastWrites, ack } = setup()
  sessions.pin('10.0.0.8', 'app-2', 0, 1_000)
  await turn()
  ack(lastWrites().seq!)
  // idle_timeout 60 s, sync period 5 s: 9 s after the last use the others' copy is alive
  sessions.sync('10.0.0.8', null, 10_000)
  t.notOk(link.idle(), 'sent to the others')
  const d = decision({ upstream: 'app-2', sessionKey: '10.0.0.8' })
  const ctx = () => context({ kind: 'table', value: '10.0.0.8', learned: false, checkpoints: false, learn: false }, d)
  t.equal(head.inspect(ctx(), {}), null, "the user's answer goes out at once")
  await turn()
  t.same(lastWrites().writes, [['b', '10.0.0.8', 'app-2', 0, 1_000]])
  ack(lastWrites().seq!)
  // 55 s after the last use here: the others' copy, renewed up to a sync period earlier, may
  // have expired, and this brings it back: the answer waits for it
  sessions.sync('10.0.0.8', null, 56_000)
  const held = head.inspect(ctx(), {})
  t.ok(held !== null, 'near the idle limit the republished binding is news: the answer waits')
  await turn()
  ack(lastWrites().seq!)
  t.equal(await held, 'ok')
})

t.test("every write an answer makes is waited for, whatever its key (several Set-Cookie lines)", async (t) => {
  const { head, lastWrites, ack } = setup()
  const d = decision({ learn: true, appKey: 'old', sessionKey: 'old' })
  const held = head.inspect(context({ kind: 'table', value: 'old', learned: true, checkpoints: false, learn: true }, d), {
    'set-cookie': ['PHPSESSID=x; Path=/a', 'PHPSESSID=y; Path=/b', 'PHPSESSID=z; Path=/c; Max-Age=0'],
  })
  await turn()
  const w = lastWrites()
  t.same((w.writes!.at(-1) as unknown[]).slice(0, 2), ['u', 'z'], 'its last write forgets z (a key none of the user\'s)')
  ack(w.seq! - 1)
  t.notOk(await settled(held!), 'the last write (z forgotten) not acknowledged: the head waits')
  ack(w.seq!)
  t.equal(await held, 'ok')
})

t.test('many answers waiting at once (a primary that stalled under load) are all released by its acknowledgement', async (t) => {
  const { sessions, link, lastWrites, ack } = setup()
  sessions.pin('busy', 'app-1', 0, 1_000)
  // the same user's parallel requests, and one a key each: 200,000 waits in all
  const waits = Array.from({ length: 150_000 }, () => link.flushedFor(['busy'], link.mark())!)
  for (let i = 0; i < 50_000; i++) {
    sessions.pin(`u${i}`, 'app-1', 0, 1_000)
    waits.push(link.flushedFor([`u${i}`], link.mark())!)
  }
  t.ok(waits.every((w) => w !== null))
  await turn()
  ack(lastWrites().seq!)
  await Promise.all(waits)
  t.ok(link.idle(), 'released, none left waiting')
})

t.test("a republished binding is news near its idle or absolute timeout (the others' copy may have expired), a renewal otherwise", async (t) => {
  const { sessions, head, lastWrites, ack } = setup()
  const d = decision({ upstream: 'app-2', sessionKey: '10.0.0.9' })
  const ctx = () => context({ kind: 'table', value: '10.0.0.9', learned: false, checkpoints: false, learn: false }, d)
  // as a starting worker's snapshot: used 45 s ago on the sibling (idle timeout 60 s, sync period 5 s)
  sessions.applyCopy('10.0.0.9', 'app-2', 0, 1_000, 1_000, 46_000)
  t.ok(sessions.needsSync('10.0.0.9', 46_000), 'last used in an earlier sync period there: checked at its first use here')
  sessions.sync('10.0.0.9', null, 51_000)
  const held = head.inspect(ctx(), {})
  t.ok(held !== null, 'republished 50 s after its last use there: the answer waits')
  await turn()
  ack(lastWrites().seq!)
  await held
  sessions.get('10.0.0.9', 51_000) // a use here
  sessions.sync('10.0.0.9', null, 56_000)
  t.equal(head.inspect(ctx(), {}), null, 'after a use here, a renewal again')

  const a = setup(60_000)
  a.sessions.pin('10.0.0.9', 'app-2', 0, 1_000)
  await turn()
  a.ack(a.lastWrites().seq!)
  a.sessions.get('10.0.0.9', 52_000)
  a.sessions.sync('10.0.0.9', null, 53_000)
  const old = a.head.inspect(ctx(), {})
  t.ok(old !== null, 'used a second ago, but 52 s old with an absolute timeout of 60 s: news')
  await turn()
  a.ack(a.lastWrites().seq!)
  await old

  // with an absolute timeout, a copy keeps its creation time on the sibling
  const b = setup(60_000)
  b.sessions.applyCopy('10.0.0.9', 'app-2', 0, 1_000, 50_000, 50_000)
  b.sessions.get('10.0.0.9', 51_000)
  b.sessions.sync('10.0.0.9', null, 53_000)
  const copied = b.head.inspect(ctx(), {})
  t.ok(copied !== null, 'a copy used here a moment ago, created 52 s ago on the sibling: news')
  await turn()
  b.ack(b.lastWrites().seq!)
  await copied
})
