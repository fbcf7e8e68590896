// Session records' logged forms, kept as 16-byte digests by slot of the shared key index: the
// form of a table key is its keyed hash, the lookup resolves it among all recorded users, and a
// slot taken anew (another user, or the same string under another key kind) never shows the
// previous digest. Pure: times are plain numbers.
import t from 'tap'
import { SessionRecords } from '../src/affinity/session-records.js'
import { KeySlots } from '../src/affinity/key-slots.js'
import type { RequestKey } from '../src/affinity/key.js'
import type { Decision } from '../src/routing/decision.js'

const table = (value: string): RequestKey => ({ kind: 'table', value, learned: false, checkpoints: true, learn: false })
const decision = (upstream: string, sessionKey: string): Decision =>
  ({ upstream, source: 'hash', epoch: 0, moved: null, setCookie: null, learn: false, appKey: null, sessionKey, bind: null }) as unknown as Decision

t.test('a table key is logged as its keyed hash and the lookup resolves that form among every recorded user', async (t) => {
  const records = new SessionRecords({ maxEntries: 5000, idleTimeout: 60_000, secret: 'test-secret-0123456789' })
  const forms: string[] = []
  for (let i = 0; i < 3000; i++) forms.push(records.answered(table(`10.0.${i >> 8}.${i & 255}`), decision('app-1', ''), 1000)!)
  t.equal(forms[7], records.ids.hash('10.0.0.7'))
  t.match(forms[7], /^h:[0-9a-f]{32}$/)
  t.equal(records.answered(table('10.0.0.7'), decision('app-1', ''), 2000), forms[7], 'the same form on the next answer')
  t.equal(records.resolve(forms[0]!), '10.0.0.0', 'the first user is still found')
  t.equal(records.resolve(forms[2999]!), '10.0.11.183')
  t.equal(records.resolve('h:00000000000000000000000000000000'), null)
  t.equal(records.resolve('h:not-hex'), null)
  t.equal(records.resolve('10.9.9.9'), '10.9.9.9', 'a raw key is taken as it is')
  t.equal(records.logged(table('10.9.9.9'), '10.9.9.9'), records.ids.hash('10.9.9.9'), 'an unrecorded key is hashed, not remembered')
  t.equal(records.resolve(records.ids.hash('10.9.9.9')), null)
})

t.test('a slot taken anew by another user, or by the same string as a cookie session, never shows the previous digest', async (t) => {
  const slots = new KeySlots({ seed: [3, 4] })
  const records = new SessionRecords({ maxEntries: 2, idleTimeout: 60_000, secret: 'test-secret-0123456789', slots })
  const a = records.answered(table('user-a'), decision('app-1', ''), 1000)!
  records.answered(table('user-b'), decision('app-1', ''), 1001)
  const c = records.answered(table('user-c'), decision('app-2', ''), 1002)! // evicts user-a, whose slot is reused
  t.equal(slots.slotOf('user-a'), undefined)
  t.equal(c, records.ids.hash('user-c'))
  t.equal(records.resolve(a), null, 'the evicted user is not found by their old form')
  t.equal(records.resolve(c), 'user-c')
  // a cookie session whose id is the same string as a later table key
  const cookie: RequestKey = { kind: 'cookie', session: null }
  records.answered(cookie, decision('app-1', 'same-string'), 1003)
  t.equal(records.answered(table('same-string'), decision('app-1', ''), 1004), records.ids.hash('same-string'))
  t.equal(records.resolve(records.ids.hash('same-string')), 'same-string')
})
