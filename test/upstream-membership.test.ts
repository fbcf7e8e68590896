// Membership (pure state owner): static and discovered upstreams merged by source, leaving ones
// drained then removed after drain_timeout, terminating ones drained while listed, and only
// membership's own drains undone. Fake timers; hooks recorded in call order.
import t from 'tap'
import { Membership } from '../src/upstream/membership.js'
import { isReplacement, type DiscoveredUpstream } from '../src/upstream/upstream-set.js'
import { FakeTimers } from './fixtures/timers.js'
import { upstreamsFromSlices } from '../src/upstream/endpoint-slices.js'
import { endpointSlice } from './fixtures/kube-api-server.js'

const DRAIN = 60_000
const up = (id: string, extra: Partial<DiscoveredUpstream> = {}): DiscoveredUpstream => ({ id, url: `http://${id}.test:8080`, weight: 1, ...extra })

function setup(statics: string[] = []) {
  const timers = new FakeTimers()
  const calls: string[] = []
  const health = new Set<string>() // what the health table would know (onChange comes first)
  /** The `gone` of each change that had any (ids that left because their pod is gone). */
  const gone: string[][] = []
  const membership = new Membership(statics.map((id) => up(id)), DRAIN, {
    onChange: (set, left) => {
      calls.push(`set ${set.ids.join(',')}`)
      if (left.size > 0) gone.push([...left].sort())
      health.clear()
      for (const id of set.ids) health.add(id)
    },
    drain: (id, since) => void calls.push(`drain ${id}${since === undefined ? "" : ` since ${since}`}${health.has(id) ? "" : " (unknown!)"}`),
    undrain: (id) => void calls.push(`undrain ${id}${health.has(id) ? '' : ' (unknown!)'}`),
  }, timers)
  return { membership, timers, calls, gone }
}

t.test('a gone upstream drains at once and leaves after drain_timeout; one that comes back is undrained', async (t) => {
  const { membership, timers, calls } = setup(['s'])
  membership.setDiscovered([up('a'), up('b')])
  membership.setDiscovered([up('a')])
  t.same(calls, ['set a,b,s', 'set a,b,s', 'drain b'], 'b stays in the set, draining')
  timers.advance(DRAIN - 1)
  t.same(membership.current().ids, ['a', 'b', 's'])
  timers.advance(1)
  t.same(membership.current().ids, ['a', 's'], 'removed after drain_timeout')
  calls.length = 0
  membership.setDiscovered([up('a'), up('c')])
  membership.setDiscovered([up('a')])
  membership.setDiscovered([up('a'), up('c')])
  t.same(calls, ['set a,c,s', 'set a,c,s', 'drain c', 'set a,c,s', 'undrain c'])
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['a', 'c', 's'], 'its removal was cancelled')
})

t.test('a leaving upstream whose address another listed upstream now has leaves at once (a reused pod IP must not serve its users)', async (t) => {
  const { membership, timers, calls } = setup(['s'])
  const at = (id: string, ip: string): DiscoveredUpstream => up(id, { url: `http://${ip}:8080` })
  membership.setDiscovered([at('web-0', '10.0.0.10'), at('web-1', '10.0.0.11')], 'kubernetes')
  membership.setDiscovered([at('web-1', '10.0.0.11')], 'kubernetes')
  t.same(membership.current().ids, ['s', 'web-0', 'web-1'], 'web-0 is gone from the slices: it drains')
  membership.setDiscovered([at('web-1', '10.0.0.11'), at('web-2', '10.0.0.10')], 'kubernetes')
  t.same(membership.current().ids, ['s', 'web-1', 'web-2'], 'its address went to web-2: web-0 leaves now')
  t.same(calls, ['set s,web-0,web-1', 'set s,web-0,web-1', 'drain web-0', 'set s,web-1,web-2'], 'no undrain of an upstream that is gone')
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['s', 'web-1', 'web-2'], 'nothing left to time out')
  membership.setDiscovered([at('web-1', '10.0.0.11')], 'kubernetes')
  membership.setDiscovered([at('web-1', '10.0.0.11'), at('web-3', '10.0.0.12')], 'kubernetes')
  t.same(membership.current().ids, ['s', 'web-1', 'web-2', 'web-3'], 'a new upstream at another address changes nothing for a leaving one')
})

t.test("a leaving upstream whose address another listed pod has among its addresses (not as its url) leaves at once too", async (t) => {
  const { membership } = setup()
  const dual = (id: string, url: string, addresses: string[]): DiscoveredUpstream => up(id, { url, addresses })
  membership.setDiscovered([up('web-0', { url: 'http://10.0.0.10:8080' }), up('web-1', { url: 'http://10.0.0.11:8080' })], 'kubernetes')
  membership.setDiscovered([up('web-1', { url: 'http://10.0.0.11:8080' })], 'kubernetes')
  t.same(membership.current().ids, ['web-0', 'web-1'], 'web-0 is gone from the slices: it drains')
  // web-2 was seen in the IPv6 slice first and keeps that url; its IPv4 address is web-0's old one
  membership.setDiscovered([up('web-1', { url: 'http://10.0.0.11:8080' }), dual('web-2', 'http://[fd00::2]:8080', ['http://10.0.0.10:8080', 'http://[fd00::2]:8080'])], 'kubernetes')
  t.same(membership.current().ids, ['web-1', 'web-2'], "web-0's address is listed for web-2: web-0 leaves now (its users would reach web-2's process)")
})

t.test('a terminating upstream is in the set and drains while listed; listed serving again it is undrained', async (t) => {
  const { membership, timers, calls } = setup()
  membership.setDiscovered([up('web-0'), up('web-1', { draining: true })], 'kubernetes')
  t.same(calls, ['set web-0,web-1', 'drain web-1'], 'a new upstream first seen terminating drains after it joined the set (health knows it)')
  membership.setDiscovered([up('web-0'), up('web-1', { draining: true })], 'kubernetes')
  t.same(calls.slice(2), ['set web-0,web-1'], 'drained once')
  membership.setDiscovered([up('web-0'), up('web-1')], 'kubernetes')
  t.same(calls.slice(3), ['set web-0,web-1', 'undrain web-1'])
  membership.setDiscovered([up('web-0'), up('web-1', { draining: true })], 'kubernetes')
  membership.setDiscovered([up('web-0')], 'kubernetes')
  t.same(calls.slice(5), ['set web-0,web-1', 'drain web-1', 'set web-0,web-1'], 'terminating then gone: one drain, then leaving')
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['web-0'])
  t.same(membership.current().get('web-0'), { id: 'web-0', url: 'http://web-0.test:8080', weight: 1, host: 'web-0.test:8080', tls: null, addresses: ['http://web-0.test:8080'] }, 'the snapshot carries no draining flag')
})

t.test("the snapshot carries a discovered pod's uid, and none for one without", async (t) => {
  const { membership } = setup()
  membership.setDiscovered([up('web-0', { uid: 'u-1' }), up('web-1')], 'kubernetes')
  t.equal(membership.current().get('web-0')?.uid, 'u-1')
  t.notOk('uid' in membership.current().get('web-1')!)
  membership.setDiscovered([up('web-0', { uid: 'u-2' }), up('web-1')], 'kubernetes')
  t.equal(membership.current().get('web-0')?.uid, 'u-2', 'the same url, another pod')
})

t.test('a pod that changes address keeps its id; the snapshot has the new url', async (t) => {
  const { membership, calls } = setup()
  membership.setDiscovered([up('web-0', { url: 'http://10.0.0.5:8080' })], 'kubernetes')
  membership.setDiscovered([up('web-0', { url: 'http://10.0.0.9:8080' })], 'kubernetes')
  t.equal(membership.current().get('web-0')?.url, 'http://10.0.0.9:8080')
  t.same(calls, ['set web-0', 'set web-0'], 'no drain: same id')
})

t.test('sources are merged: one source dropping an id another still lists does not drain it', async (t) => {
  const { membership, calls } = setup()
  membership.setDiscovered([up('a'), up('b')], 'dns')
  membership.setDiscovered([up('b', { draining: true }), up('c')], 'kubernetes')
  t.same(calls, ['set a,b', 'set a,b,c'], 'b is serving in dns, so not draining')
  membership.setDiscovered([up('a')], 'dns')
  t.same(calls.slice(2), ['set a,b,c', 'drain b'], 'now only kubernetes lists b, as terminating')
})

t.test('an id listed by two sources takes the Kubernetes entry, whichever source reported first: two replicas, or one restarted, hold the same url', async (t) => {
  const dns = [up('web-0', { url: 'http://10.0.1.5:8080' }), up('a')]
  const kube = [up('web-0', { url: 'http://10.0.0.5:8080', uid: 'u-5', weight: 3 }), up('b')]
  const first = setup().membership // DNS answered before the API server
  first.setDiscovered(dns, 'dns')
  first.setDiscovered(kube, 'kubernetes')
  const second = setup().membership // the API server answered first
  second.setDiscovered(kube, 'kubernetes')
  second.setDiscovered(dns, 'dns')
  for (const [name, m] of [['DNS first', first], ['Kubernetes first', second]] as const) {
    t.match(m.current().get('web-0'), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 3, uid: 'u-5' }, `${name}: the pod's entry`)
    t.same(m.current().ids, ['a', 'b', 'web-0'])
  }
  first.setDiscovered(dns, 'dns') // a later DNS answer changes nothing
  t.equal(first.current().get('web-0')?.url, 'http://10.0.0.5:8080')
  const { membership, calls } = setup()
  membership.setDiscovered(dns, 'dns')
  membership.setDiscovered(kube, 'kubernetes')
  membership.setDiscovered([up('b')], 'kubernetes') // the pod left the slices; DNS still lists web-0
  t.match(membership.current().get('web-0'), { id: 'web-0', url: 'http://10.0.1.5:8080', weight: 1, uid: undefined }, 'listed by DNS alone: its entry, no drain')
  t.notOk(calls.some((c) => c.startsWith('drain')))
  membership.setDiscovered(kube, 'kubernetes')
  t.equal(membership.current().get('web-0')?.url, 'http://10.0.0.5:8080', 'listed by Kubernetes again: its entry again')
})

t.test('precedence decides the entry only: terminating only where every source listing the id says so, and leaving once no source lists it', async (t) => {
  const { membership, calls, timers } = setup()
  membership.setDiscovered([up('web-0', { url: 'http://10.0.0.5:8080', draining: true })], 'kubernetes')
  membership.setDiscovered([up('web-0', { url: 'http://10.0.1.5:8080' })], 'dns')
  t.same(calls, ['set web-0', 'drain web-0', 'set web-0', 'undrain web-0'], 'serving in DNS: not draining, though the entry is the pod\'s')
  t.equal(membership.current().get('web-0')?.url, 'http://10.0.0.5:8080')
  calls.length = 0
  membership.setDiscovered([], 'dns')
  t.same(calls, ['set web-0', 'drain web-0'], 'now terminating in every source listing it')
  calls.length = 0
  membership.setDiscovered([up('x')], 'kubernetes')
  t.same(calls, ['set web-0,x'], 'left every listing: leaving, with the entry it had, already draining')
  t.equal(membership.current().get('web-0')?.url, 'http://10.0.0.5:8080')
  t.same(membership.listedBy('kubernetes').map((u) => u.id), ['x', 'web-0'])
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['x'])
})

t.test("an id both sources listed leaves with the entry of the source that listed it last, and only that source's listedBy holds it (never the other's entry)", async (t) => {
  const dns = up('web-0', { url: 'http://[fd00::5]:8080' })
  const kube = up('web-0', { url: 'http://10.0.0.5:8080', uid: 'u-5' })
  for (const [first, last] of [['dns', 'kubernetes'], ['kubernetes', 'dns']] as const) {
    const { membership } = setup()
    membership.setDiscovered([dns], 'dns')
    membership.setDiscovered([kube], 'kubernetes')
    membership.setDiscovered([], first) // one source drops it: the other's entry (or still Kubernetes's)
    membership.setDiscovered([], last) // the last one: leaving, draining
    const entry = last === 'dns' ? dns : kube
    t.match(membership.current().get('web-0'), { url: entry.url, uid: entry.uid }, `${first} dropped it, then ${last}: leaving with ${last}'s entry`)
    t.same(membership.listedBy(last).map((u) => u.url), [entry.url], `listedBy('${last}') gives its own entry while it drains`)
    t.same(membership.listedBy(first), [], `listedBy('${first}') gives nothing: it had dropped it already`)
  }
})

t.test('a Service of 10,000 pods scaled down to 5,000 at once (one relist): each of the 5,000 leaves with the sources that listed it', async (t) => {
  // The sources of each leaving id are looked up in one pass over the lists (this took 2.2 s
  // of blocked event loop as a scan of every list per leaving id; ~0.1 s now: not asserted here)
  const { membership, timers, calls } = setup()
  const pods = Array.from({ length: 10_000 }, (_, i) => up(`web-${i}`, { uid: `u-${i}` }))
  membership.setDiscovered(pods.filter((_, i) => i % 1000 === 0).map((u) => ({ ...u, url: u.url.replace('8080', '9090') })), 'dns')
  membership.setDiscovered(pods, 'kubernetes')
  calls.length = 0
  membership.setDiscovered(pods.slice(0, 5_000), 'kubernetes')
  t.equal(calls.filter((c) => c.startsWith('drain ')).length, 4_995, 'the 5,000 gone but the 5 DNS still lists drain')
  t.equal(membership.current().ids.length, 10_000, 'they stay while they drain')
  t.equal(membership.listedBy('kubernetes').length, 9_995, "Kubernetes's listedBy: its 5,000 and the 4,995 leaving it listed (not the 5 DNS lists)")
  membership.setDiscovered([], 'dns')
  t.equal(membership.listedBy('dns').length, 5, 'DNS drops its 10: the 5 Kubernetes dropped before leave with DNS as their source')
  t.equal(membership.listedBy('dns').filter((u) => u.url.endsWith(':9090')).length, 5, "with DNS's entries")
  calls.length = 0
  timers.advance(DRAIN)
  t.equal(membership.current().ids.length, 5_000, 'all left after drain_timeout')
  t.equal(calls.length, 2, 'in one set per answer they left in (not one per upstream)')
})

t.test('drain timeouts that end together publish one set, not one per upstream (a scale-down of thousands of pods would rebuild the set thousands of times in a row)', async (t) => {
  const { membership, timers, calls } = setup(['s'])
  const pods = Array.from({ length: 100 }, (_, i) => up(`web-${String(i).padStart(3, '0')}`))
  membership.setDiscovered(pods)
  membership.setDiscovered(pods.slice(0, 40))
  timers.advance(DRAIN / 2)
  membership.setDiscovered(pods.slice(0, 10).concat(pods.slice(50, 55))) // 30 more leave; 5 come back
  calls.length = 0
  timers.advance(DRAIN / 2)
  t.same(calls, [`set ${['s', ...pods.slice(0, 40).map((u) => u.id), ...pods.slice(50, 55).map((u) => u.id)].sort().join(',')}`], 'the 55 that left first go at once; the 5 back stay')
  calls.length = 0
  timers.advance(DRAIN / 2)
  t.same(calls, [`set ${['s', ...pods.slice(0, 10).map((u) => u.id), ...pods.slice(50, 55).map((u) => u.id)].sort().join(',')}`], 'the 30 that left later go together, at their own time')
  t.equal(timers.pending().length, 0, 'no timer left')
})

t.test('static wins: a discovered id that is also static is never drained by membership', async (t) => {
  const { membership, calls } = setup(['a'])
  membership.setDiscovered([up('a', { draining: true }), up('b')])
  membership.setDiscovered([up('b')])
  t.same(calls, ['set a,b', 'set a,b'])
  membership.setStatic([])
  t.same(calls.slice(2), ['set b'], 'removed from the static list, a goes (discovery no longer lists it)')
})

t.test('stop() cancels pending removals', async (t) => {
  const { membership, timers } = setup()
  membership.setDiscovered([up('a'), up('b')])
  membership.setDiscovered([up('a')])
  membership.stop()
  t.same(timers.pending(), [])
})

t.test('isReplacement: with a pod uid on both sides the uids decide, whatever the urls; else the urls', async (t) => {
  const [v4, v6] = ['http://10.0.0.5:80', 'http://[fd00::5]:80']
  const cases: [string, { url: string; uid?: string }, { url: string; uid?: string }, boolean][] = [
    ['the same url, no uids', { url: v4 }, { url: v4 }, false],
    ['another url, no uids', { url: v4 }, { url: v6 }, true],
    ['the same url, another uid (re-created at the same address)', { url: v4, uid: 'a' }, { url: v4, uid: 'b' }, true],
    ['another url, the same uid (another address of the same pod)', { url: v4, uid: 'a' }, { url: v6, uid: 'a' }, false],
    ['another url, another uid', { url: v4, uid: 'a' }, { url: v6, uid: 'b' }, true],
    ['a uid appearing at the same url', { url: v4 }, { url: v4, uid: 'a' }, false],
    ['a uid disappearing at the same url', { url: v4, uid: 'a' }, { url: v4 }, false],
    ['a uid appearing at another url: the urls decide', { url: v4 }, { url: v6, uid: 'a' }, true],
  ]
  for (const [what, before, after, replaced] of cases) t.equal(isReplacement(before, after), replaced, what)
})

t.test('an id listed not ready under another pod uid leaves at once (the pod it was is gone); under its own uid it drains', async (t) => {
  const { membership, timers, calls } = setup()
  const at = (id: string, uid: string, extra: Partial<DiscoveredUpstream> = {}): DiscoveredUpstream => up(id, { url: 'http://10.0.0.10:8080', uid, ...extra })
  const web1 = up('web-1', { url: 'http://10.0.0.11:8080', uid: 'w1' })
  membership.setDiscovered([at('web-0', 'a'), web1], 'kubernetes')
  membership.setDiscovered([at('web-0', 'a', { unready: true }), web1], 'kubernetes')
  t.same(membership.current().ids, ['web-0', 'web-1'], 'not ready under its own uid: it stays, draining')
  t.same(calls, ['set web-0,web-1', 'set web-0,web-1', 'drain web-0'])
  calls.length = 0
  membership.setDiscovered([at('web-0', 'b', { unready: true }), web1], 'kubernetes')
  t.same(membership.current().ids, ['web-1'], 'listed again (still not ready) under another uid: the draining web-0 leaves now')
  t.same(calls, ['set web-1'], 'no undrain of an upstream that is gone')
  membership.setDiscovered([at('web-0', 'b'), web1], 'kubernetes')
  t.same(membership.current().get('web-0')?.uid, 'b', 'the new pod ready: it joins')
  calls.length = 0
  membership.setDiscovered([at('web-0', 'c', { unready: true }), web1], 'kubernetes')
  t.same(calls, ['set web-1'], 'a ready pod whose id is listed not ready under another uid leaves at once: no drain')
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['web-1'])
})

t.test('an upstream that leaves at once because its pod is gone is reported gone (its users move as from a dead one); one that leaves after drain_timeout is not', async (t) => {
  const { membership, timers, gone } = setup()
  const at = (id: string, ip: string, uid: string, extra: Partial<DiscoveredUpstream> = {}): DiscoveredUpstream => up(id, { url: `http://${ip}:8080`, uid, ...extra })
  const web2 = at('web-2', '10.0.0.12', 'w2')
  membership.setDiscovered([at('web-0', '10.0.0.10', 'a'), at('web-1', '10.0.0.11', 'b'), web2], 'kubernetes')
  membership.setDiscovered([at('web-0', '10.0.0.10', 'a2', { unready: true }), at('web-1', '10.0.0.11', 'b'), web2], 'kubernetes')
  t.same(gone, [['web-0']], 'web-0 listed not ready under another uid (re-created): gone')
  membership.setDiscovered([at('web-1', '10.0.0.11', 'b', { unready: true }), web2], 'kubernetes')
  t.same(gone, [['web-0']], 'web-1 merely not ready (its own uid): it drains, not gone')
  membership.setDiscovered([at('web-3', '10.0.0.11', 'c'), web2], 'kubernetes')
  t.same(gone, [['web-0'], ['web-1']], "web-3 listed at the draining web-1's address: web-1 is gone")
  membership.setDiscovered([web2], 'kubernetes')
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['web-2'], 'web-3 left after drain_timeout')
  t.same(gone, [['web-0'], ['web-1']], 'and was not reported gone (a planned removal)')
})

t.test("a leaving upstream whose address another pod has, listed not ready, leaves at once; its own not-ready listing does not count", async (t) => {
  const { membership } = setup()
  const at = (id: string, ip: string, extra: Partial<DiscoveredUpstream> = {}): DiscoveredUpstream => up(id, { url: `http://${ip}:8080`, ...extra })
  membership.setDiscovered([at('web-0', '10.0.0.10'), at('web-1', '10.0.0.11')], 'kubernetes')
  membership.setDiscovered([at('web-0', '10.0.0.10', { unready: true }), at('web-1', '10.0.0.11')], 'kubernetes')
  t.same(membership.current().ids, ['web-0', 'web-1'], 'web-0 not ready at its own address: it drains')
  membership.setDiscovered([at('web-1', '10.0.0.11'), at('web-2', '10.0.0.10', { unready: true })], 'kubernetes')
  t.same(membership.current().ids, ['web-1'], "web-2, not ready yet, is listed at web-0's address: web-0 leaves now")
})

t.test('from the slices: a dual-stack pod whose readiness fails for a moment drains (never leaves at once), in one family or both; re-created under another uid it leaves at once', async (t) => {
  const { membership, timers, calls } = setup()
  type C = { ready?: boolean; serving?: boolean; terminating?: boolean; uid?: string; ip?: string }
  const slices = (c4: C, c6: C) => [
    endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'a', ...c4 }, { pod: 'web-1', ip: '10.0.0.6', uid: 'w1' }]),
    endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5', uid: 'a', ...c6 }, { pod: 'web-1', ip: 'fd00::6', uid: 'w1' }], { addressType: 'IPv6' }),
  ]
  const apply = (c4: C, c6: C): void => membership.setDiscovered(upstreamsFromSlices(slices(c4, c6) as never, 'http', undefined, membership.current().list).upstreams, 'kubernetes')
  const notReady = { ready: false, serving: false }
  apply({}, {})
  apply(notReady, {})
  apply(notReady, notReady)
  t.same(membership.current().ids, ['web-0', 'web-1'], 'not ready in both families: still in the set, draining')
  t.same(calls.filter((c) => c.startsWith('drain')), ['drain web-0'])
  apply({}, notReady)
  apply({}, {})
  t.same(calls.filter((c) => !c.startsWith('set')), ['drain web-0', 'undrain web-0'], 'ready again: undrained, never removed')
  timers.advance(DRAIN)
  t.same(membership.current().get('web-0')?.uid, 'a')
  calls.length = 0
  apply({ ...notReady, uid: 'b', ip: '10.0.0.9' }, { terminating: true, serving: true })
  t.same(membership.current().ids, ['web-1'], "re-created (IPv4 lists the new pod, IPv6 still the old one serving): web-0 leaves at once")
})

t.test('a worker that starts drains what its siblings drain (leaving): until the same deadline, unless listed, static, expired or its pod gone', async (t) => {
  const { membership, timers, calls, gone } = setup(['s'])
  const at = (id: string, ip: string): DiscoveredUpstream => up(id, { url: `http://${ip}:8080` })
  membership.setDiscovered([at('a', '10.0.0.1')], 'dns', [
    { upstream: at('b', '10.0.0.2'), since: 5, remaining: 20_000 },
    { upstream: at('a', '10.0.0.1'), since: 5, remaining: 20_000 }, // listed again
    { upstream: at('s', '10.0.0.9'), since: 5, remaining: 20_000 }, // static wins
    { upstream: at('c', '10.0.0.3'), since: 5, remaining: 0 }, // its drain_timeout has passed
    { upstream: at('d', '10.0.0.1'), since: 5, remaining: 20_000 }, // its address is a's now: its pod is gone
  ])
  t.same(calls, ['set a,b,s', 'drain b since 5'], 'b joins the set draining since it began on the siblings; nothing else does')
  t.same(gone, [], 'nothing named gone: this worker never had those upstreams')
  timers.advance(19_999)
  t.same(membership.current().ids, ['a', 'b', 's'])
  timers.advance(1)
  t.same(membership.current().ids, ['a', 's'], 'b leaves at the deadline the siblings have, not a whole drain_timeout after this start')
  membership.setDiscovered([at('a', '10.0.0.1'), at('e', '10.0.0.5')], 'dns', [{ upstream: at('e', '10.0.0.5'), since: 5, remaining: 5_000 }])
  t.same(membership.current().ids, ['a', 'e', 's'], 'an upstream listed is no leaving one')
  timers.advance(DRAIN)
  t.same(membership.current().ids, ['a', 'e', 's'])
})

t.test('a worker that starts drains a pod listed terminating, or leaving after it was, since its siblings began the drain (drainingSince), not since this start or its removal', async (t) => {
  const { membership, timers, calls } = setup()
  membership.setDiscovered([up('a'), up('b', { draining: true, drainingSince: 7 }), up('c', { draining: true })], 'kubernetes', [
    { upstream: up('d', { draining: true, drainingSince: 3 }), since: 9, remaining: 20_000 }, // terminating from 3, gone from the listing at 9
  ])
  t.same(calls, ['set a,b,c,d', 'drain d since 3', 'drain b since 7', 'drain c'], 'b and d drain since the siblings began; c (no drainingSince: an older primary) since now')
  timers.advance(19_999)
  t.same(membership.current().ids, ['a', 'b', 'c', 'd'])
  timers.advance(1)
  t.same(membership.current().ids, ['a', 'b', 'c'], 'd leaves drain_timeout after its removal (9), as on the siblings')
  membership.setDiscovered([up('a'), up('b', { draining: true }), up('c', { draining: true })], 'kubernetes')
  t.same(calls.slice(4), ['set a,b,c', 'set a,b,c'], 'd left; the lead lists b terminating on: its drain goes on (no second drain)')
})

t.test('listedBy(source): what that source lists, and what left its listing and still drains; not another source\'s upstream under the same id, listed or draining', async (t) => {
  const { membership, timers } = setup()
  membership.setDiscovered([up('web-0', { url: 'http://10.0.0.5:8080' })], 'dns')
  membership.setDiscovered([up('web-1', { url: 'http://[fd00::9]:8080' })], 'kubernetes')
  membership.setDiscovered([], 'kubernetes') // the pod web-1 left its listing: it drains
  membership.setDiscovered([], 'dns') // the SRV target web-0 left the answer: it drains
  t.same(membership.current().ids, ['web-0', 'web-1'], 'both draining, still in the set')
  t.same(membership.listedBy('dns').map((u) => u.id), ['web-0'], 'DNS: its own target, still draining')
  t.same(membership.listedBy('kubernetes').map((u) => u.id), ['web-1'], 'Kubernetes: its own pod, still draining (not the SRV target)')
  // a Kubernetes pod named like an SRV target, draining: it lends the target nothing
  membership.setDiscovered([up('web-0', { url: 'http://[fd00::7]:8080' })], 'kubernetes')
  timers.advance(DRAIN) // web-1 gone; web-0 listed again (by Kubernetes): no longer leaving
  membership.setDiscovered([], 'kubernetes')
  t.same(membership.current().get('web-0')?.url, 'http://[fd00::7]:8080', 'the pod web-0 drains')
  t.same(membership.listedBy('dns'), [], 'DNS listed web-0 before, but what drains now is the Kubernetes pod: DNS takes none of it')
  t.same(membership.listedBy('kubernetes').map((u) => u.url), ['http://[fd00::7]:8080'])
})

t.test('a set that differs in a kept empty family only publishes nothing; the family going with its address (the url unchanged) is published', async (t) => {
  const { membership, calls } = setup()
  const both = ['http://10.0.0.5:8080', 'http://[fd00::5]:8080']
  membership.setDiscovered([up('web-0', { url: both[0]!, addresses: both })], 'dns')
  membership.setDiscovered([up('web-0', { url: both[0]!, addresses: both, keptEmpty: { family: 6, since: 1_000 } })], 'dns')
  t.same(calls, ['set web-0'], 'AAAA kept: no rebuild')
  t.same(membership.current().get('web-0')?.keptEmpty, { family: 6, since: 1_000 }, 'the set in use says so (for a new lead)')
  // the grace ends: keptEmpty and the IPv6 address go in one list, the url (IPv4) stays
  membership.setDiscovered([up('web-0', { url: both[0]! })], 'dns')
  t.same(calls, ['set web-0', 'set web-0'], 'published: web-0 is no longer at fd00::5 (the pools, checks and a peer\'s `down` must not take it for web-0)')
  t.same(membership.current().get('web-0')?.addresses, [both[0]])
})
