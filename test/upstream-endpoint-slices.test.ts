// From EndpointSlices to upstreams (pure, table-driven), on slices shaped exactly as the API
// server returns them (checked against the Kubernetes schema bundled in kubernetes-models).
import t from 'tap'
import { EndpointSlice as EndpointSliceModel } from 'kubernetes-models/discovery.k8s.io/v1'
import { endpointRole, parseWeights, sameUpstreams, SliceMerge, SliceReads, upstreamsFromSlices, type Endpoint } from '../src/upstream/endpoint-slices.js'
import type { DiscoveredUpstream } from '../src/upstream/upstream-set.js'
import { endpointSlice } from './fixtures/kube-api-server.js'
import { mulberry32 } from './fixtures/random.js'

t.test('the fixture slices are valid discovery.k8s.io/v1 EndpointSlices', async (t) => {
  const slice = endpointSlice('web-abcde', 'web', [
    { pod: 'web-0', ip: '10.0.0.5' },
    { pod: 'web-1', ip: '10.0.0.6', terminating: true, serving: true },
    { pod: null, ip: '10.0.0.7' },
  ])
  t.doesNotThrow(() => new EndpointSliceModel({ apiVersion: 'discovery.k8s.io/v1', kind: 'EndpointSlice', ...slice } as never).validate())
})

t.test('an endpoint serves, drains or is out, reading unset conditions as the API documents them', async (t) => {
  const cases: [Endpoint['conditions'], string][] = [
    [{ ready: true, serving: true, terminating: false }, 'serving'],
    [{ ready: false, serving: true, terminating: true }, 'draining'],
    [{ ready: false, serving: false, terminating: true }, 'out'],
    [{ ready: false, serving: false, terminating: false }, 'out'],
    [{ ready: false, serving: true, terminating: false }, 'out'], // not ready (failing its probe), not terminating
    [{ ready: true, serving: true, terminating: true }, 'draining'], // publishNotReadyAddresses keeps ready true
    [undefined, 'serving'], // no conditions: ready unknown = ready
    [{ ready: null, serving: null, terminating: null }, 'serving'],
    [{ terminating: true }, 'draining'], // serving unknown = as ready (unknown = true)
    [{ ready: false, terminating: true }, 'out'], // serving unknown = as ready = false
  ]
  for (const [conditions, role] of cases) t.equal(endpointRole(conditions), role, JSON.stringify(conditions ?? null))
})

t.test('weights: one for every pod, or by pod name with a default, 1..1000', async (t) => {
  const ok = (text: string) => {
    const r = parseWeights(text)
    return r.ok ? { byPod: Object.fromEntries(r.weights.byPod), others: r.weights.others } : r.message
  }
  t.same(ok('3'), { byPod: {}, others: 3 })
  t.same(ok(' web-0=3, web-1 = 2 '), { byPod: { 'web-0': 3, 'web-1': 2 }, others: 1 })
  t.same(ok('*=5,web-0=1'), { byPod: { 'web-0': 1 }, others: 5 })
  t.same(ok(''), { byPod: {}, others: 1 })
  t.equal(ok('0'), '0: the weight must be an integer 1..1000')
  t.equal(ok('1001'), '1001: the weight must be an integer 1..1000')
  t.equal(ok('web-0=x'), 'web-0=x: the weight must be an integer 1..1000')
  t.equal(ok('web-0'), 'web-0: expected pod=weight (or *=weight, or a single weight)')
})

t.test('slices to upstreams: pod names as ids, terminating pods draining, port by name or number', async (t) => {
  const slice = endpointSlice('web-abcde', 'web', [
    { pod: 'web-1', ip: '10.0.0.6' },
    { pod: 'web-0', ip: '10.0.0.5' },
    { pod: 'web-2', ip: '10.0.0.7', terminating: true, serving: true },
    { pod: 'web-3', ip: '10.0.0.8', terminating: true, serving: false },
    { pod: 'web-4', ip: '10.0.0.9', ready: false, serving: false },
    { pod: null, ip: '10.0.1.1' },
  ], { ports: [{ name: 'metrics', port: 9090 }, { name: 'http', port: 8080 }] })
  const { upstreams, slicesWithoutPort } = upstreamsFromSlices([slice], 'http')
  t.same(upstreams, [
    { id: '10.0.1.1:8080', url: 'http://10.0.1.1:8080', weight: 1 },
    { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0' },
    { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1, uid: 'uid-pod-web-1' },
    { id: 'web-2', url: 'http://10.0.0.7:8080', weight: 1, uid: 'uid-pod-web-2', draining: true },
    { id: 'web-3', url: 'http://10.0.0.8:8080', weight: 1, uid: 'uid-pod-web-3', unready: true },
    { id: 'web-4', url: 'http://10.0.0.9:8080', weight: 1, uid: 'uid-pod-web-4', unready: true },
  ], 'sorted by id; without a targetRef the id is address:port; pods that do not serve are listed unready (no upstream: their uid and address only)')
  t.same(slicesWithoutPort, [])
  t.ok(Object.isFrozen(upstreams) && upstreams.every((u) => Object.isFrozen(u)), 'deeply frozen')
  t.same(upstreamsFromSlices([slice], 'metrics').upstreams.map((u) => u.url)[1], 'http://10.0.0.5:9090', 'another named port')
  t.same(upstreamsFromSlices([slice], 7000).upstreams.map((u) => u.url)[1], 'http://10.0.0.5:7000', 'a number is the pods\' port')
  const none = upstreamsFromSlices([slice], 'grpc')
  t.same(none, { upstreams: [], slicesWithoutPort: ['web-abcde'] }, 'a port name the slice lacks leaves it out, and says which')
  const udp = endpointSlice('web-udp', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }], { ports: [{ name: 'http', port: 8080, protocol: 'UDP' }] })
  t.same(upstreamsFromSlices([udp], 'http').upstreams, [], 'only TCP ports')
})

t.test('a pod listed twice counts once: serving wins, then IPv4, then the slice name', async (t) => {
  const v4 = endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }])
  const v6 = endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5' }], { addressType: 'IPv6' })
  t.same(upstreamsFromSlices([v6, v4], 'http').upstreams, [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0', addresses: ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'] }], 'dual stack: IPv4, both addresses listed')
  t.same(upstreamsFromSlices([v6], 'http').upstreams, [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, uid: 'uid-pod-web-0' }], 'IPv6 only: bracketed')
  const old = endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5', terminating: true, serving: true }])
  const moved = endpointSlice('web-b', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }])
  t.same(upstreamsFromSlices([old, moved], 'http').upstreams, [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0' }], 'serving wins over draining')
})

t.test('a pod keeps the url it had while that address is still listed for it (any slice, any position): a reordered or dual-stack listing does not move it', async (t) => {
  const had = (url: string) => [{ id: 'web-0', url, weight: 1 }]
  const v4 = endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }])
  const v6 = endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5' }], { addressType: 'IPv6' })
  const two = (ips: string[]) => endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: ips[0]!, ips }])
  const cases: [string, ReturnType<typeof endpointSlice>[], string, string][] = [
    ['on IPv6, the IPv4 slice listed too', [v4, v6], 'http://[fd00::5]:8080', 'http://[fd00::5]:8080'],
    ['on IPv4, both families listed', [v6, v4], 'http://10.0.0.5:8080', 'http://10.0.0.5:8080'],
    ['reordered addresses of one endpoint', [two(['10.0.0.6', '10.0.0.5'])], 'http://10.0.0.5:8080', 'http://10.0.0.5:8080'],
    ['its address gone: the first listed', [two(['10.0.0.6', '10.0.0.7'])], 'http://10.0.0.5:8080', 'http://10.0.0.6:8080'],
    ['its port changed: the first listed', [v4, v6], 'http://10.0.0.5:9090', 'http://10.0.0.5:8080'],
  ]
  for (const [what, slices, before, after] of cases) {
    t.equal(upstreamsFromSlices(slices, 'http', undefined, had(before)).upstreams[0]?.url, after, what)
  }
  t.equal(upstreamsFromSlices([v4, v6], 'http', undefined, [{ id: 'web-1', url: 'http://[fd00::5]:8080', weight: 1, uid: 'uid-pod-web-1' }]).upstreams[0]?.url, 'http://10.0.0.5:8080', "another pod's url is not this one's")
})

t.test('dual stack: while the two families\' slices are updated one after the other, a pod keeps its IPv4 url (it flipped to IPv6 with each readiness change)', async (t) => {
  const v4 = (c: { ready?: boolean; serving?: boolean; terminating?: boolean }) => endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5', ...c }, { pod: 'web-1', ip: '10.0.0.6' }])
  const v6 = (c: { ready?: boolean; serving?: boolean; terminating?: boolean }) => endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5', ...c }, { pod: 'web-1', ip: 'fd00::6' }], { addressType: 'IPv6' })
  const web0 = (slices: ReturnType<typeof v4>[]) => upstreamsFromSlices(slices, 'http').upstreams.find((u) => u.id === 'web-0')
  const terminating = { terminating: true, serving: true }
  const notReady = { ready: false, serving: false }
  const addresses = ['http://10.0.0.5:8080', 'http://[fd00::5]:8080']
  t.same(web0([v4({}), v6({})]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0', addresses }, 'both ready')
  t.same(web0([v4(terminating), v6({})]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0', addresses }, 'IPv4 slice first: terminating there, still ready in IPv6: serving, same url')
  t.same(web0([v4(terminating), v6(terminating)]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0', addresses, draining: true }, 'both terminating: draining, same url')
  t.same(web0([v4(notReady), v6({})]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0', addresses }, 'IPv4 slice first: not ready there: same url')
  t.same(web0([v4(notReady), v6(notReady)]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0', addresses, unready: true }, 'out in both: unready, same url')
})

t.test('no endpoint ready: terminating endpoints that still serve take new users (kube-proxy falls back to them)', async (t) => {
  const all = endpointSlice('web-a', 'web', [
    { pod: 'web-0', ip: '10.0.0.5', terminating: true, serving: true },
    { pod: 'web-1', ip: '10.0.0.6', terminating: true, serving: true },
    { pod: 'web-2', ip: '10.0.0.7', terminating: true, serving: false },
    { pod: 'web-3', ip: '10.0.0.8', ready: false, serving: false },
  ])
  const { upstreams } = upstreamsFromSlices([all], 'http')
  t.same(upstreams, [
    { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'uid-pod-web-0' },
    { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1, uid: 'uid-pod-web-1' },
    { id: 'web-2', url: 'http://10.0.0.7:8080', weight: 1, uid: 'uid-pod-web-2', unready: true },
    { id: 'web-3', url: 'http://10.0.0.8:8080', weight: 1, uid: 'uid-pod-web-3', unready: true },
  ], 'not draining: otherwise every new user would get 503 while the pods still answer; those not serving stay unready')
  t.ok(upstreams.every((u) => Object.isFrozen(u)), 'still deeply frozen')
  const fresh = endpointSlice('web-b', 'web', [{ pod: 'web-4', ip: '10.0.0.9' }])
  t.same(upstreamsFromSlices([all, fresh], 'http').upstreams.filter((u) => u.unready !== true).map((u) => [u.id, u.draining === true]), [['web-0', true], ['web-1', true], ['web-4', false]],
    'one ready pod: the terminating ones drain again')
})

t.test('weights apply by pod name, the default to the others', async (t) => {
  const slice = endpointSlice('web-x', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }, { pod: null, ip: '10.0.0.7' }])
  const r = parseWeights('web-1=4,*=2')
  if (!r.ok) throw new Error(r.message)
  t.same(upstreamsFromSlices([slice], 'http', r.weights).upstreams.map((u) => [u.id, u.weight]), [['10.0.0.7:8080', 2], ['web-0', 2], ['web-1', 4]])
})

t.test('malformed slices are read defensively: wrong types count as absent', async (t) => {
  const junk = [
    { metadata: { name: 'x' }, endpoints: 'nope', ports: [{ name: 'http', port: 8080 }] },
    { metadata: { name: 'y' }, endpoints: [{ addresses: [], conditions: { ready: true } }, { conditions: { ready: true } }], ports: [{ name: 'http', port: 8080 }] },
    { metadata: { name: 'z' }, endpoints: [{ addresses: ['10.0.0.1'], targetRef: { kind: 'Node', name: 'n1' } }], ports: [{ name: 'http', port: 70000 }] },
    { metadata: { name: 'w' }, endpoints: [{ addresses: ['10.0.0.2'], targetRef: { kind: 'Node', name: 'n1' } }], ports: null },
  ]
  t.same(upstreamsFromSlices(junk as never, 'http').upstreams, [])
  t.same(upstreamsFromSlices(junk as never, 8080).upstreams.map((u) => u.id), ['10.0.0.1:8080', '10.0.0.2:8080'], 'only a Pod targetRef names the upstream')
  // null entries in the lists (no API server sends them, a broken proxy might): skipped, not a
  // TypeError that would fail every later update while that slice is stored
  const nulls = [{ metadata: { name: 'n' }, endpoints: [null, { addresses: ['10.0.0.3'], targetRef: { kind: 'Pod', name: 'web-3' } }], ports: [null, 'http', { name: 'http', port: 8080 }] }]
  t.same(upstreamsFromSlices(nulls as never, 'http').upstreams.map((u) => u.id), ['web-3'], 'a null endpoint or port is skipped')
  t.same(upstreamsFromSlices(nulls as never, 8080).upstreams.map((u) => u.id), ['web-3'])
})

t.test('an endpoint without a pod is named after its first address in text order: a reordered listing is no new upstream, and every replica names it the same whatever it saw before', async (t) => {
  const ids = (ips: string[], before: string[] = []) => upstreamsFromSlices([endpointSlice('ext', 'web', [{ pod: null, ip: ips[0]!, ips }])], 'http', undefined,
    before.map((id) => ({ id, url: `http://${id}`, weight: 1 }))).upstreams.map((u) => `${u.id}@${u.url.replace('http://', '')}`)
  t.same(ids(['10.0.0.5', '10.0.0.6']), ['10.0.0.5:8080@10.0.0.5:8080'], 'its first address names it')
  t.same(ids(['10.0.0.6', '10.0.0.5'], ['10.0.0.5:8080']), ['10.0.0.5:8080@10.0.0.5:8080'], 'reordered: the same id, the same url')
  t.same(ids(['10.0.0.6', '10.0.0.5']), ['10.0.0.5:8080@10.0.0.6:8080'], 'reordered, seen first so (a replica started now): the same id')
  // the id is the upstream's identity for placement and cookies: two Tether replicas (or one
  // restarted) must name the same listing the same, whatever listings each saw before it
  t.same(ids(['10.0.0.4', '10.0.0.5'], ['10.0.0.5:8080']).map((u) => u.split('@')[0]), ids(['10.0.0.4', '10.0.0.5']).map((u) => u.split('@')[0]),
    'an address added below it: the same id on a replica that knew it and on one started after')
  t.same(ids(['10.0.0.4', '10.0.0.5'], ['10.0.0.5:8080']), ['10.0.0.4:8080@10.0.0.4:8080'], 'so it is another upstream, named after the address added')
  t.same(ids(['10.0.0.6', '10.0.0.7'], ['10.0.0.5:8080']), ['10.0.0.6:8080@10.0.0.6:8080'], 'its address gone: named after the first one left')
})

t.test('a pod named `none` (the metrics\' label for requests no upstream answered) gets the id `_none`, which no pod or static upstream can have; its uid and weight by name stay', async (t) => {
  const slice = endpointSlice('web-abcde', 'web', [{ pod: 'none', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }, { pod: 'nonex', ip: '10.0.0.7' }])
  const weights = parseWeights('none=3')
  if (!weights.ok) throw new Error(weights.message)
  t.same(upstreamsFromSlices([slice], 'http', weights.weights).upstreams, [
    { id: '_none', url: 'http://10.0.0.5:8080', weight: 3, uid: 'uid-pod-none' },
    { id: 'nonex', url: 'http://10.0.0.7:8080', weight: 1, uid: 'uid-pod-nonex' },
    { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1, uid: 'uid-pod-web-1' },
  ])
})

t.test("a pod carries its targetRef's uid, the one of the endpoint that listed the url it kept; none without a targetRef or a uid", async (t) => {
  const at = (slices: ReturnType<typeof endpointSlice>[], before?: string) =>
    upstreamsFromSlices(slices, 'http', undefined, before === undefined ? [] : [{ id: 'web-0', url: before, weight: 1 }]).upstreams[0]
  const v4 = (uid: string) => endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5', uid }])
  const v6 = (uid: string) => endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5', uid }], { addressType: 'IPv6' })
  t.equal(at([v4('new')])?.uid, 'new', 'its uid')
  // re-created: the IPv4 slice names the new pod, the IPv6 one still the old
  t.equal(at([v4('new'), v6('old')], 'http://[fd00::5]:8080')?.uid, 'old', 'kept at the old pod\'s IPv6 address: the old uid')
  t.equal(at([v4('new'), v6('old')], 'http://10.0.0.5:8080')?.uid, 'new', 'kept at the IPv4 address: the new uid')
  t.notOk('uid' in at([endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5', uid: '' }])])!, 'an empty uid is none')
  t.notOk('uid' in at([endpointSlice('web-v4', 'web', [{ pod: null, ip: '10.0.0.5' }])])!, 'no targetRef: none')
  const noUid = { ...v4('x'), endpoints: [{ addresses: ['10.0.0.5'], targetRef: { kind: 'Pod', name: 'web-0' } }] }
  t.same(at([noUid]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }, 'a targetRef without a uid (an older API server): none')
  t.notOk(sameUpstreams([at([v4('a')])!], [at([v4('b')])!]), 'another uid is a change of the set')
})

t.test('sameUpstreams compares ids, urls, weights, draining and unready flags and listed addresses', async (t) => {
  const a = [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }]
  t.ok(sameUpstreams(a, [{ ...a[0]! }]))
  t.notOk(sameUpstreams(a, [{ ...a[0]!, draining: true }]))
  t.notOk(sameUpstreams(a, [{ ...a[0]!, unready: true }]), 'a pod that becomes not ready: a change')
  t.notOk(sameUpstreams(a, [{ ...a[0]!, url: 'http://10.0.0.6:8080' }]))
  t.notOk(sameUpstreams(a, [{ ...a[0]!, weight: 2 }]))
  const both = ['http://10.0.0.5:8080', 'http://[fd00::5]:8080']
  t.notOk(sameUpstreams(a, [{ ...a[0]!, addresses: both }]), 'another address listed (the url kept): not the same, the set must carry it')
  t.ok(sameUpstreams([{ ...a[0]!, addresses: both }], [{ ...a[0]!, addresses: [...both] }]))
  t.notOk(sameUpstreams(a, []))
})

t.test("dual stack, a pod re-created under its name: the role is the kept url's pod's, not the best of two pods' listings", async (t) => {
  // web-0 (uid old) was at 10.0.0.5 / fd00::5; deleted and re-created at 10.0.0.9 / fd00::9. The
  // IPv4 slice lists the new pod, not ready yet; the IPv6 slice still the old one, terminating
  const v4 = endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.9', uid: 'new', ready: false, serving: false }, { pod: 'web-1', ip: '10.0.0.6' }])
  const v6 = (c: { ready?: boolean; serving?: boolean; terminating?: boolean }) => endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5', uid: 'old', ...c }, { pod: 'web-1', ip: 'fd00::6' }], { addressType: 'IPv6' })
  const previous = [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'old' }]
  const web0 = (slices: ReturnType<typeof endpointSlice>[], before = previous) => upstreamsFromSlices(slices, 'http', undefined, before).upstreams.find((u) => u.id === 'web-0')
  const addresses = ['http://10.0.0.9:8080', 'http://[fd00::5]:8080']
  t.same(web0([v4, v6({ terminating: true, serving: true })]), { id: 'web-0', url: 'http://10.0.0.9:8080', weight: 1, uid: 'new', addresses, unready: true },
    "kept at the new pod's address: not ready (not draining there because the old pod still serves in the other family)")
  t.same(web0([v4, v6({})]), { id: 'web-0', url: 'http://10.0.0.9:8080', weight: 1, uid: 'new', addresses, unready: true }, 'nor serving there')
  t.same(web0([v4, v6({ terminating: true, serving: true })], [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, uid: 'old' }]),
    { id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, uid: 'old', addresses, draining: true }, "kept at the old pod's address: the old pod's role")
  const noUid = { ...v4, endpoints: [{ addresses: ['10.0.0.5'], targetRef: { kind: 'Pod', name: 'web-0' }, conditions: { ready: false, serving: false } }] }
  t.same(web0([noUid, v6({})]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, addresses: ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'] }, 'a listing without a uid is the same pod: the best role')
})

t.test('a pod listed twice at its url under two uids (a stale listing of the pod it replaced in another slice): the uid known is kept, with its role', async (t) => {
  const a = (c: { ready?: boolean; serving?: boolean }) => endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'old', ...c }])
  const b = (c: { ready?: boolean; serving?: boolean }) => endpointSlice('web-b', 'web', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'cur', ...c }, { pod: 'web-1', ip: '10.0.0.6' }])
  const previous = [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'cur' }]
  const web0 = (slices: ReturnType<typeof endpointSlice>[]) => upstreamsFromSlices(slices, 'http', undefined, previous).upstreams.find((u) => u.id === 'web-0')
  const out = { ready: false, serving: false }
  t.same(web0([a(out), b({})]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'cur' }, 'the pod known, ready: serving under its uid (not the stale not-ready one)')
  t.same(web0([a(out), b(out)]), { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'cur', unready: true }, 'the pod known, not ready for a moment: unready under its own uid (it drains, not leaves)')
  t.equal(upstreamsFromSlices([a(out), b({})], 'http').upstreams.find((u) => u.id === 'web-0')?.uid, 'old', 'no uid known: the first listing (by slice name), as before')
})

t.test('with SliceReads, an event re-reads only the slice it replaced; the result is the one of reading every slice again (random events, seeded)', async (t) => {
  // reads counted through a getter on each slice's endpoints
  let reads = 0
  const counted = (slice: ReturnType<typeof endpointSlice>): ReturnType<typeof endpointSlice> => {
    const endpoints = slice['endpoints']
    const copy = { ...slice }
    delete copy['endpoints']
    return Object.defineProperty(copy, 'endpoints', { enumerable: true, get: () => { reads++; return endpoints } })
  }
  const many = Array.from({ length: 20 }, (_, s) => counted(endpointSlice(`web-${s}`, 'web', Array.from({ length: 50 }, (_, i) => ({ pod: `web-${s * 50 + i}`, ip: `10.0.${s}.${i}` })))))
  const cache = new SliceReads()
  const first = upstreamsFromSlices(many, 'http', undefined, [], cache)
  t.equal(first.upstreams.length, 1000)
  t.equal(reads, 20, 'the first call reads each slice')
  reads = 0
  many[7] = counted(endpointSlice('web-7', 'web', [{ pod: 'web-350', ip: '10.0.7.0', ready: false }]))
  const next = upstreamsFromSlices(many, 'http', undefined, first.upstreams, cache)
  t.equal(reads, 1, 'an event that replaced one slice re-reads that slice alone')
  t.same(next, upstreamsFromSlices(structuredClone(many), 'http', undefined, first.upstreams), 'the same as reading every slice again')

  // random slices: dual stack, pods listed in two slices, roles, uids, no targetRef, a slice
  // without the port, a pod named none; each step replaces, adds or deletes one slice, or changes
  // the weights or the port; the cached result must equal the one read afresh at every step
  const random = mulberry32(53)
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!
  const randomSlice = (name: string, family: 'IPv4' | 'IPv6'): ReturnType<typeof endpointSlice> => {
    const endpoints = Array.from({ length: Math.floor(random() * 6) }, () => {
      const n = Math.floor(random() * 8)
      const ip = family === 'IPv4' ? `10.0.0.${n + Math.floor(random() * 2) * 10}` : `fd00::${n + Math.floor(random() * 2) * 10}`
      return {
        pod: random() < 0.1 ? null : n === 7 ? 'none' : `web-${n}`, ip, uid: `uid-${n}-${Math.floor(random() * 2)}`,
        ...(random() < 0.2 ? { ips: [ip, family === 'IPv4' ? `10.0.1.${n}` : `fd00::1:${n}`] } : {}),
        ready: random() < 0.7, serving: random() < 0.8, terminating: random() < 0.3,
      }
    })
    return endpointSlice(name, 'web', endpoints, { addressType: family, ports: random() < 0.1 ? [{ name: 'grpc', port: 9000 }] : [{ name: 'http', port: 8080 }] })
  }
  const names = ['a', 'b', 'c', 'd', 'e', 'f']
  const slices = new Map<string, ReturnType<typeof endpointSlice>>()
  const reader = new SliceReads()
  let port: string | number = 'http'
  let weights = parseWeights('web-1=3,*=2')
  let cached = upstreamsFromSlices([], port).upstreams
  let afresh = cached
  for (let step = 0; step < 400; step++) {
    const r = random()
    const name = pick(names)
    if (r < 0.7) slices.set(name, randomSlice(name, name < 'd' ? 'IPv4' : 'IPv6'))
    else if (r < 0.85) slices.delete(name)
    else if (r < 0.93) weights = parseWeights(pick(['3', 'web-1=3,*=2', 'none=5', '1']))
    else port = pick(['http', 8080, 9000] as const)
    const w = weights.ok ? weights.weights : undefined
    const a = upstreamsFromSlices(slices.values(), port, w, cached, reader)
    const b = upstreamsFromSlices(structuredClone([...slices.values()]), port, w, afresh)
    t.same(a, b, `step ${step}`, { diagnostic: false })
    cached = a.upstreams
    afresh = b.upstreams
  }
})

t.test('SliceMerge (incremental: only the changed slices\' pods merged again) gives what upstreamsFromSlices gives from every slice, over random event sequences (seeded)', async (t) => {
  // random slices as above, plus: a pod listed twice in one slice, slices given in any order,
  // and a `previous` that is not always the last result (the set in use: membership's, with
  // urls and uids of its own for some pods, or nothing); each step replaces, adds or deletes
  // slices, or changes the weights, the port or `previous` alone
  for (const seed of [1, 2, 3, 4, 5]) {
    const random = mulberry32(seed)
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!
    const randomSlice = (name: string, family: 'IPv4' | 'IPv6'): ReturnType<typeof endpointSlice> => {
      const endpoints = Array.from({ length: Math.floor(random() * 8) }, () => {
        const n = Math.floor(random() * 10)
        const ip = family === 'IPv4' ? `10.0.0.${n + Math.floor(random() * 2) * 10}` : `fd00::${n + Math.floor(random() * 2) * 10}`
        return {
          pod: random() < 0.1 ? null : n === 9 ? 'none' : `web-${n}`, ip, uid: `uid-${n}-${Math.floor(random() * 2)}`,
          ...(random() < 0.2 ? { ips: [ip, family === 'IPv4' ? `10.0.1.${n}` : `fd00::1:${n}`] } : {}),
          ...(random() < 0.1 ? {} : { ready: random() < 0.7, serving: random() < 0.8, terminating: random() < 0.3 }),
        }
      })
      if (endpoints.length > 0 && random() < 0.1) endpoints.push({ ...endpoints[0]!, ready: !endpoints[0]!.ready }) // listed twice
      return endpointSlice(name, 'web', endpoints, { addressType: family, ports: random() < 0.1 ? [{ name: 'grpc', port: 9000 }] : [{ name: 'http', port: 8080 }] })
    }
    const names = ['a', 'b', 'c', 'd', 'e', 'f', 'g']
    const slices = new Map<string, ReturnType<typeof endpointSlice>>()
    const merge = new SliceMerge()
    let port: string | number = 'http'
    let weights = parseWeights('web-1=3,*=2')
    let current: readonly DiscoveredUpstream[] = []
    let extra: DiscoveredUpstream[] = []
    let differ = 0
    let steps = 0
    for (let step = 0; step < 600; step++) {
      const r = random()
      const name = pick(names)
      if (r < 0.6) slices.set(name, randomSlice(name, name < 'e' ? 'IPv4' : 'IPv6'))
      else if (r < 0.68) { for (const n of names) if (random() < 0.3) slices.set(n, randomSlice(n, n < 'e' ? 'IPv4' : 'IPv6')) } // a list: several replaced
      else if (r < 0.8) slices.delete(name)
      else if (r < 0.85) weights = parseWeights(pick(['3', 'web-1=3,*=2', 'none=5', '1']))
      else if (r < 0.9) port = pick(['http', 8080, 9000] as const)
      else if (r < 0.97) {
        // the set in use has urls or uids of its own for some pods (a lead's set, a drained pod's)
        extra = current.filter(() => random() < 0.3).map((u) => ({ ...u, ...(random() < 0.5 ? { url: pick(u.addresses ?? [u.url, 'http://10.0.1.3:8080']) } : { uid: pick(['uid-1-0', 'uid-1-1', 'uid-3-0']) }) }))
      } else current = []
      const w = weights.ok ? weights.weights : undefined
      const given = [...slices.values()].sort(() => random() - 0.5)
      const previous = [...extra, ...current]
      const a = merge.upstreams(given, port, w, previous)
      const b = upstreamsFromSlices(structuredClone(given), port, w, previous)
      if (JSON.stringify(a) !== JSON.stringify(b) || !sameUpstreams(a.upstreams, b.upstreams)) {
        differ++
        if (differ <= 3) t.same(a, b, `seed ${seed} step ${step}`)
      }
      t.ok(Object.isFrozen(a.upstreams) && a.upstreams.every((u) => Object.isFrozen(u)), 'frozen', { diagnostic: false })
      if (step % 3 !== 0) current = a.upstreams // as discovery: its last set, most of the time
      steps++
    }
    t.equal(differ, 0, `seed ${seed}: the same result at each of ${steps} steps`)
  }
})

t.test('SliceMerge: inputs it does not model incrementally (two slices of one name, junk, an odd addressType) are merged in full, and later calls are right again', async (t) => {
  const merge = new SliceMerge()
  const a = endpointSlice('a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }])
  const a2 = endpointSlice('a', 'web', [{ pod: 'web-1', ip: '10.0.0.6' }])
  const odd = { ...endpointSlice('o', 'web', [{ pod: 'web-2', ip: '10.0.0.7' }]), addressType: 'constructor' }
  const cases: [string, unknown[]][] = [
    ['one slice', [a]],
    ['two slices named a', [a, a2]],
    ['the same object twice', [a, a]],
    ['a null and a string among them', [a, null, 'x']],
    ['a name that is not a string', [a, { ...a2, metadata: { name: 5 } }]],
    ["addressType 'constructor'", [odd, a2]],
    ['one slice again', [a2]],
    ['and another', [a2, a]],
  ]
  for (const [what, slices] of cases) {
    const expected = (() => { try { return upstreamsFromSlices(slices as never, 'http') } catch (err) { return err } })()
    const got = (() => { try { return merge.upstreams(slices as never, 'http') } catch (err) { return err } })()
    t.same(got, expected, what)
  }
})
