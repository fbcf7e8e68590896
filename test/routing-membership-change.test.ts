// A membership change at 10,000 upstreams (discovery adds or drops one pod): the router derives
// its placement table from the previous one, so the buckets its users already looked up stay
// computed (about 2/n of them are rescanned), and every key stays where it was unless its
// upstream left. Without the previous table each of those lookups would rescan its bucket over
// all 10,000 upstreams, on every process, after every change.
import t from 'tap'
import { Router } from '../src/routing/router.js'
import { DEFAULTS, type AffinityConfig, type UpstreamConfig } from '../src/config/schema.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { upstreamSet } from '../src/upstream/upstream-set.js'
import { hashKey } from '../src/placement/hash.js'
import { FAKE_EPOCH } from './fixtures/clock.js'

const UPS: UpstreamConfig[] = Array.from({ length: 10_000 }, (_, i) => ({ id: `pod-${i}`, url: `http://10.1.${i >> 8}.${i & 255}:8080`, weight: 1 }))

t.test('one pod removed, then it and a new one added: looked-up buckets are kept, keys stay', async (t) => {
  const cfg = { ...DEFAULTS.affinity, key: 'header', header: { ...DEFAULTS.affinity.header, name: 'x-user' } } as AffinityConfig
  const sessions = new SessionTable({ maxEntries: cfg.max_entries, idleTimeout: cfg.idle_timeout, absoluteTimeout: cfg.absolute_timeout })
  const router = new Router(cfg, { sessions, cookies: null })
  router.setUpstreams(upstreamSet(UPS), FAKE_EPOCH)
  t.equal(router.placement.scannedBuckets, 0, 'a worker with 10,000 upstreams computes no bucket up front')
  const users = Array.from({ length: 300 }, (_, i) => `user-${i}`)
  const before = new Map(users.map((u) => [u, router.placement.ids[router.placement.pick(hashKey(u))]!]))
  const leaving = before.get('user-7')!
  const scanned = router.placement.scannedBuckets
  t.ok(scanned > 250 && scanned <= 300, `300 users computed ${scanned} buckets`)

  router.setUpstreams(upstreamSet(UPS.filter((u) => u.id !== leaving)), FAKE_EPOCH + 1000)
  const moved = users.filter((u) => router.placement.ids[router.placement.pick(hashKey(u))] !== before.get(u))
  t.ok(router.placement.scannedBuckets <= 5, `after one removal the same 300 lookups scanned ${router.placement.scannedBuckets} buckets`)
  t.ok(moved.includes('user-7') && moved.every((u) => before.get(u) === leaving), `only the leaving pod's users moved (${moved.length})`)

  // the removed pod back and a new one
  router.setUpstreams(upstreamSet([...UPS, { id: 'pod-new', url: 'http://10.2.0.1:8080', weight: 1 }]), FAKE_EPOCH + 2000)
  for (const u of users) router.placement.pick(hashKey(u))
  t.ok(router.placement.scannedBuckets <= 5, `after two additions the same lookups scanned ${router.placement.scannedBuckets} buckets`)
})
