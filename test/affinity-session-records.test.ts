// Session records' logged forms: the form of a table key is its keyed hash, computed only when
// something logs it (kept then as a 16-byte digest by slot of the shared key index, so the
// access log hashes each user once); the lookup resolves a logged form among every key the
// process holds, hashing those never logged, in slices; and a slot taken anew (another user,
// or the same string under another key kind) never shows the previous digest. Pure: times are
// plain numbers, the lookup's pauses are counted.
import t from 'tap'
import { SessionRecords } from '../src/affinity/session-records.js'
import { KeySlots } from '../src/affinity/key-slots.js'
import { AffinityTable } from '../src/affinity/table.js'
import type { RequestKey } from '../src/affinity/key.js'
import type { Decision } from '../src/routing/decision.js'

const table = (value: string): RequestKey => ({ kind: 'table', value, learned: false, checkpoints: true, learn: false })
const decision = (upstream: string, sessionKey: string): Decision =>
  ({ upstream, source: 'hash', epoch: 0, moved: null, setCookie: null, learn: false, appKey: null, sessionKey, bind: null }) as unknown as Decision
const secret = 'test-secret-0123456789'
/** A pause that only counts how often the lookup let other work run. */
const counted = (): { pause: () => Promise<void>; readonly n: number } => {
  let n = 0
  return { pause: async () => { n++ }, get n() { return n } }
}
const ip = (i: number): string => `10.0.${i >> 8}.${i & 255}`

t.test('with nothing logging (the access log off), answers compute no logged form and the lookup hashes every held key to resolve one', async (t) => {
  const records = new SessionRecords({ maxEntries: 5000, idleTimeout: 60_000, secret })
  for (let i = 0; i < 3000; i++) t.equal(records.answered(table(ip(i)), decision('app-1', ''), 1000), undefined)
  const p = counted()
  t.equal(await records.resolve(records.ids.hash(ip(0)), p.pause, 256), ip(0), 'the first user is found')
  t.equal(p.n, 0, 'found in the first slice: no pause')
  t.equal(await records.resolve(records.ids.hash(ip(2999)), p.pause, 256), ip(2999), 'the last user is found')
  t.equal(p.n, Math.floor(2999 / 256), 'a pause after every 256 keys hashed')
  t.equal(await records.resolve('h:00000000000000000000000000000000', p.pause), null, 'a form that matches nobody: null')
  t.equal(await records.resolve('h:not-hex', p.pause), null, 'a malformed form: null')
  t.equal(await records.resolve('10.9.9.9', p.pause), '10.9.9.9', 'a raw key is taken as it is')
  t.equal(await records.resolve(records.ids.hash('10.9.9.9'), p.pause), null, 'a key nobody holds is not found by its form')
})

t.test('lookups of the same logged form at once share one scan; another form scans on its own', async (t) => {
  const records = new SessionRecords({ maxEntries: 5000, idleTimeout: 60_000, secret })
  for (let i = 0; i < 3000; i++) records.answered(table(ip(i)), decision('app-1', ''), 1000)
  const first = counted()
  const second = counted()
  const form = records.ids.hash(ip(2999))
  const [a, b] = await Promise.all([records.resolve(form, first.pause, 256), records.resolve(form, second.pause, 256)])
  t.same([a, b], [ip(2999), ip(2999)], 'both find the user')
  t.equal(first.n, Math.floor(2999 / 256), 'the first lookup scanned')
  t.equal(second.n, 0, 'the second joined its scan instead of hashing every key again')
  const other = counted()
  const [c, d] = await Promise.all([records.resolve(form, first.pause, 256), records.resolve(records.ids.hash(ip(2998)), other.pause, 256)])
  t.same([c, d], [ip(2999), ip(2998)])
  t.equal(other.n, Math.floor(2998 / 256), 'a different form is a scan of its own')
  t.equal(first.n, 2 * Math.floor(2999 / 256), 'a lookup after the scan ended scans again (nothing is cached)')
})

t.test('a logged table key keeps its digest: the same form every time, compared without hashing by the lookup', async (t) => {
  const records = new SessionRecords({ maxEntries: 5000, idleTimeout: 60_000, secret })
  const forms: string[] = []
  for (let i = 0; i < 3000; i++) {
    records.answered(table(ip(i)), decision('app-1', ''), 1000)
    forms.push(records.logged(table(ip(i)), ip(i)))
  }
  t.equal(forms[7], records.ids.hash(ip(7)))
  t.match(forms[7], /^h:[0-9a-f]{32}$/)
  records.answered(table(ip(7)), decision('app-2', ''), 2000)
  t.equal(records.logged(table(ip(7)), ip(7)), forms[7], 'the same form on the next answer')
  const p = counted()
  t.equal(await records.resolve(forms[2999]!, p.pause, 1), ip(2999), 'the last user is found')
  t.equal(p.n, 0, 'every held key had its digest: nothing hashed, no pause')
  t.equal(records.logged(table('10.9.9.9'), '10.9.9.9'), records.ids.hash('10.9.9.9'), 'an unrecorded key is hashed, not remembered')
  t.equal(await records.resolve(records.ids.hash('10.9.9.9'), p.pause), null)
  t.equal(records.logged({ kind: 'cookie', session: null }, 'Qk3x'), 'Qk3x', "Tether's session id is logged as it is")
})

t.test('the lookup resolves a key the session table sharing the index holds and these records do not (a user another worker answered)', async (t) => {
  const slots = new KeySlots({ seed: [1, 2] })
  const sessions = new AffinityTable({ maxEntries: 10, idleTimeout: 60_000, slots })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret, slots })
  records.answered(table('user-here'), decision('app-1', ''), 1000)
  records.logged(table('user-here'), 'user-here')
  sessions.set('user-elsewhere', 'app-2', 0, 1000)
  const p = counted()
  t.equal(await records.resolve(records.ids.hash('user-elsewhere'), p.pause), 'user-elsewhere')
  t.equal(await records.resolve(records.ids.hash('user-here'), p.pause), 'user-here')
  t.equal(records.seen('user-elsewhere', 1000), null, 'not recorded here')
})

t.test('a slot taken anew by another user, or by the same string as a cookie session, never shows the previous digest', async (t) => {
  const slots = new KeySlots({ seed: [3, 4] })
  const records = new SessionRecords({ maxEntries: 2, idleTimeout: 60_000, secret, slots })
  const answer = (value: string, at: number): string => {
    records.answered(table(value), decision('app-1', ''), at)
    return records.logged(table(value), value)
  }
  const a = answer('user-a', 1000)
  answer('user-b', 1001)
  const c = answer('user-c', 1002) // evicts user-a, whose slot is reused
  t.equal(slots.slotOf('user-a'), undefined)
  t.equal(c, records.ids.hash('user-c'))
  const p = counted()
  t.equal(await records.resolve(a, p.pause), null, 'the evicted user is not found by their old form')
  t.equal(await records.resolve(c, p.pause), 'user-c')
  // a cookie session whose id is the same string as a later table key
  const cookie: RequestKey = { kind: 'cookie', session: null }
  records.answered(cookie, decision('app-1', 'same-string'), 1003)
  t.equal(records.logged(cookie, 'same-string'), 'same-string')
  t.equal(answer('same-string', 1004), records.ids.hash('same-string'))
  t.equal(await records.resolve(records.ids.hash('same-string'), p.pause), 'same-string')
})

t.test("with the session table's bindings given (pins), a pinned table key is recorded as an answer time by slot, read with its pin", async (t) => {
  const slots = new KeySlots({ seed: [5, 6] })
  const pins = new AffinityTable({ maxEntries: 3, idleTimeout: 60_000, slots })
  const records = new SessionRecords({ maxEntries: 3, idleTimeout: 60_000, secret, slots, pins })
  pins.set('user-a', 'app-1', 2, 1000)
  records.answered(table('user-a'), { ...decision('app-1', ''), epoch: 2 }, 1500)
  t.same(records.seen('user-a', 1600), { upstream: 'app-1', epoch: 2, createdAt: 1000, lastSeen: 1500 }, 'upstream, epoch and first pin from the pin; last answer from the column')
  t.equal(records.countByUpstream('app-1'), 0, 'no entry of its own (the session table counts its pins)')
  pins.get('user-a', 1700) // a routing use slides the pin, not the last answer
  t.equal(records.lastSeen('user-a', 1800), 1500, 'the last answer, not the last routing use')
  t.same([...records.users(1800)].map((u) => u.key), ['user-a'])

  pins.set('user-b', 'app-2', 0, 1900) // pinned by another worker: never answered here
  t.equal(records.seen('user-b', 2000), null, 'a pin never answered here is not recorded')
  t.same([...records.users(2000)].map((u) => u.key), ['user-a'], 'users() lists only those answered here')

  records.answered(table('user-b'), decision('app-3', ''), 2100) // the pin moved while this request was in flight
  t.match(records.seen('user-b', 2200), { upstream: 'app-3', lastSeen: 2100 }, 'answered elsewhere than pinned: recorded as an entry, with the answering upstream')
  pins.set('user-b', 'app-3', 0, 2300)
  records.answered(table('user-b'), decision('app-3', ''), 2400)
  t.same(records.seen('user-b', 2500), { upstream: 'app-3', epoch: 0, createdAt: 1900, lastSeen: 2400 }, 'back on its pin: read with it again')
  t.equal(records.countByUpstream('app-3'), 0, 'and its own entry dropped')

  const slotA = slots.slotOf('user-a')
  pins.delete('user-a') // the slot is freed: its answer time must not reach the next key there
  t.equal(records.seen('user-a', 2600), null, 'forgotten with its pin')
  pins.set('user-c', 'app-1', 0, 2700)
  t.equal(slots.slotOf('user-c'), slotA, 'user-c took the freed slot')
  t.equal(records.lastSeen('user-c', 2800), null, "the slot's previous answer time is not user-c's")
  t.equal(records.lastSeen('user-a', 2800), null)
})

t.test('answer times after the column window moves (24.8 days on): the base follows, answers inside the new window stay exact', async (t) => {
  const slots = new KeySlots({ seed: [7, 8] })
  const long = 2 ** 40 // pins that outlive the window, to read the column alone
  const pins = new AffinityTable({ maxEntries: 10, idleTimeout: long, slots })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: long, secret, slots, pins })
  const answer = (key: string, at: number): void => {
    pins.set(key, 'app-1', 0, at)
    records.answered(table(key), decision('app-1', ''), at)
  }
  const t0 = 1000
  answer('user-old', t0)
  answer('user-mid', t0 + 2 ** 30)
  const t1 = t0 + 2 ** 31 + 10 // past the first window: the base moves
  answer('user-new', t1)
  t.equal(records.lastSeen('user-new', t1), t1, 'an answer past the first window is exact')
  t.equal(records.lastSeen('user-mid', t1), t0 + 2 ** 30, 'an answer inside the new window is kept exact')
  t.equal(records.lastSeen('user-old', t1), null, 'an answer before the new window (over 24.8 days old) is forgotten')
})

t.test('an answer from an epoch the user has left changes nothing; what another worker tells is recorded but leaves an order here', async (t) => {
  const slots = new KeySlots({ seed: [7, 8] })
  const pins = new AffinityTable({ maxEntries: 10, idleTimeout: 60_000, slots })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret, slots, pins })
  // a cookie session moved to app-2 at epoch 1; a slow answer from app-1 at epoch 0 arrives after
  records.record('s', false, 'app-2', 1, { from: 'app-1', reason: 'drain' }, 1000)
  records.record('s', false, 'app-1', 0, null, 1100)
  t.match(records.seen('s', 1200), { upstream: 'app-2', epoch: 1, lastSeen: 1000 }, 'a cookie session: the move stands')
  t.equal(records.lastSeenOn('s', 'app-1', 1200), null, 'not answered by app-1 since')
  t.equal(records.lastSeenOn('s', 'app-2', 1200), 1000)
  // a table key pinned at epoch 1; a slow answer at epoch 0 from where it was
  pins.set('ip', 'app-2', 1, 1000)
  records.record('ip', true, 'app-2', 1, null, 1000)
  records.record('ip', true, 'app-1', 0, null, 1100)
  t.match(records.seen('ip', 1200), { upstream: 'app-2', epoch: 1, lastSeen: 1000 }, 'a table key: its answer time by slot stays')
  // an admin's order (with workers, every worker holds it), and answers another worker tells
  const done: string[] = []
  records.onOrderDone((key, at) => done.push(`${key}@${at}`))
  records.order('s', null, 1300)
  records.record('s', false, 'app-3', 2, { from: 'app-2', reason: 'admin' }, 1400, true)
  t.match(records.ordered('s'), { to: null }, "another worker's answer leaves it (that worker tells when it did the order)")
  t.match(records.moved('s', 1500), { upstream: 'app-3', epoch: 2, movedAt: 1400, reason: 'admin' }, 'its move is recorded')
  records.dropOrder('s', 1299)
  t.match(records.ordered('s'), { to: null }, 'a worker that did an older order drops nothing')
  records.dropOrder('s', 1300)
  t.equal(records.ordered('s'), undefined, 'dropped when that worker says it did this one')
  records.order('s', 'app-1', 1600)
  records.record('s', false, 'app-3', 2, null, 1700)
  t.match(records.ordered('s'), { to: 'app-1' }, 'an answer here from elsewhere than the order names leaves it')
  t.same(done, [])
  records.record('s', false, 'app-1', 3, { from: 'app-3', reason: 'admin' }, 1800)
  t.equal(records.ordered('s'), undefined, 'the answer here from where it names fulfils it')
  t.same(done, ['s@1600'], 'and is told (for the other workers)')
  records.order('s', null, 1900)
  records.record('s', false, 'app-1', 3, null, 2000)
  t.same([records.ordered('s'), done], [undefined, ['s@1600', 's@1900']], 'an order the hash fulfils in place (no move) is done too, and told')
  // a rehydration in place after the move keeps the record of the move
  records.record('s', false, 'app-1', 4, { from: 'app-1', reason: 'restart' }, 2100)
  t.match(records.lastMove('s'), { from: 'app-3', to: 'app-1', reason: 'admin', at: 1800 }, 'a rehydration in place keeps the record of the move there')
  records.record('x', false, 'app-1', 1, { from: 'app-1', reason: 'restart' }, 2200)
  t.match(records.lastMove('x'), { from: 'app-1', to: 'app-1', reason: 'restart' }, 'one with no move before is recorded')
})

t.test('an application cookie value never pinned (made up by a client, taken by the application) is recorded as an entry of its own, bounded, and never reaches the session table', async (t) => {
  const slots = new KeySlots({ seed: [7, 8] })
  const pins = new AffinityTable({ maxEntries: 3, idleTimeout: 60_000, slots })
  const records = new SessionRecords({ maxEntries: 3, idleTimeout: 60_000, secret, slots, pins })
  pins.set('real-user', 'app-1', 0, 1000)
  records.answered(table('real-user'), decision('app-1', ''), 1000)
  const learned = (value: string): RequestKey => ({ kind: 'table', value, learned: true, checkpoints: true, learn: true })
  for (let i = 0; i < 10; i++) records.answered(learned(`made-up-${i}`), decision('app-2', ''), 2000 + i)
  t.match(records.seen('made-up-9', 3000), { upstream: 'app-2', lastSeen: 2009 }, 'the newest made-up value is recorded')
  t.equal(records.seen('made-up-0', 3000), null, 'the oldest ones were pushed out: at most maxEntries of their own')
  t.equal(records.countByUpstream('app-2'), 3, 'three entries of their own')
  t.equal(pins.size, 1, 'the session table holds only the real pin')
  t.match(records.seen('real-user', 3000), { upstream: 'app-1', lastSeen: 1000 }, "the pinned user's record (by slot) is untouched")
})
