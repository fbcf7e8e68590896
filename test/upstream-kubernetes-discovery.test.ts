// Kubernetes discovery against a fake API server on 127.0.0.1 (test/fixtures/kube-api-server.ts)
// serving real EndpointSlice JSON: list, watch with ADDED/MODIFIED/DELETED and BOOKMARK, 410
// Gone, cut and ended watches, an unreachable server, an empty list during an outage, list
// errors, pagination, the weight annotation, and the credentials (kubeconfig over http, the
// in-cluster service account over https with a CA made at test time). The loop runs on real
// timers with tiny back-offs (tests wait on hooks with a deadline; nothing sleeps), except the
// back-off and idle-timeout tests, which drive fake timers.
import t, { type Test } from 'tap'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { KubernetesDiscovery, KubernetesDiscoveryError, type KubernetesDiscoveryDeps, type KubernetesProblemArea } from '../src/upstream/kubernetes-discovery.js'
import { KubernetesCredentialsError, inClusterAccess, kubeconfigAccess } from '../src/upstream/kubernetes-credentials.js'
import { KubernetesApi } from '../src/upstream/kubernetes-api.js'
import { ListWatch } from '../src/upstream/list-watch.js'
import type { KubernetesDiscoveryConfig } from '../src/config/schema.js'
import type { DiscoveredUpstream } from '../src/upstream/upstream-set.js'
import { Membership } from '../src/upstream/membership.js'
import { createDiscovery } from '../src/upstream/discovery.js'
import { isReplacement } from '../src/upstream/upstream-set.js'
import { systemTimers } from '../src/clock.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { FakeKubeApi, endpointSlice, service, type PodEndpoint } from './fixtures/kube-api-server.js'
import { FakeTimers } from './fixtures/timers.js'
import { makeCertificates } from './fixtures/tls.js'
import { waitFor } from './fixtures/upstream.js'

const TOKEN = 'test-token-0123456789'
const FAST = { backoff: { base: 5, max: 20 }, requestTimeout: 2_000, watchGap: 20, random: () => 1 }

function tempDir(): string {
  return mkdtempSync(join(tmpdir(), 'tether-k8s-'))
}

/** A kubeconfig file for `server`, with a bearer token. */
function kubeconfig(server: string, user: string = `token: ${TOKEN}`, extra = ''): string {
  const path = join(tempDir(), 'config')
  writeFileSync(path, [
    'apiVersion: v1', 'kind: Config', 'current-context: test',
    'contexts:', '  - name: test', '    context: { cluster: fake, user: tester, namespace: default }',
    'clusters:', '  - name: fake', '    cluster:', `      server: ${server}`, extra === '' ? '' : `      ${extra}`,
    'users:', '  - name: tester', '    user:', `      ${user}`, '',
  ].join('\n'))
  return path
}

/** Records hook calls. */
class Recorder {
  readonly changes: (readonly DiscoveredUpstream[])[] = []
  readonly errors: { err: KubernetesDiscoveryError; n: number }[] = []
  /** The area of each onRecover, in order. */
  readonly recoveries: KubernetesProblemArea[] = []
  get recovered(): number {
    return this.recoveries.length
  }
  readonly hooks = {
    onChange: (u: readonly DiscoveredUpstream[]) => void this.changes.push(u),
    onError: (err: KubernetesDiscoveryError, n: number) => void this.errors.push({ err, n }),
    onRecover: (area: KubernetesProblemArea) => void this.recoveries.push(area),
  }
  /** The last set as `id@url` (+ `(draining)`). */
  get last(): string[] {
    return (this.changes.at(-1) ?? []).map((u) => `${u.id}@${u.url.replace('http://', '')}${u.draining === true ? ' (draining)' : ''}`)
  }
}

const slice = (name: string, endpoints: PodEndpoint[]) => endpointSlice(name, 'web', endpoints)
const CONFIG: KubernetesDiscoveryConfig = { service: 'web', namespace: null, port: 'http', kubeconfig: null, weight_annotation: null }

interface Setup { api: FakeKubeApi; discovery: KubernetesDiscovery; rec: Recorder; url: string }

/** A fake API with `slices`, and a discovery through a kubeconfig (not started). */
async function setup(t: Test, slices: ReturnType<typeof slice>[], config: Partial<KubernetesDiscoveryConfig> = {}, deps: KubernetesDiscoveryDeps = {}): Promise<Setup> {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  t.teardown(() => api.close())
  for (const s of slices) api.put('endpointslices', s)
  const rec = new Recorder()
  const discovery = new KubernetesDiscovery({ ...CONFIG, kubeconfig: kubeconfig(url), ...config }, rec.hooks, { tuning: FAST, ...deps })
  t.teardown(() => discovery.stop())
  return { api, discovery, rec, url }
}

const until = (check: () => boolean, what: string): Promise<void> => waitFor(check, 5_000, what)

t.test('start() lists the slices and resolves with the pods by name; a watch opens from the list version with bookmarks', async (t) => {
  const { api, discovery, rec } = await setup(t, [
    slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }]),
    endpointSlice('other-a', 'other', [{ pod: 'other-0', ip: '10.0.9.9' }]),
  ])
  const initial = await discovery.start()
  t.same(initial.map((u) => u.id), ['web-0', 'web-1'], "only the Service's slices")
  t.same(rec.last, ['web-0@10.0.0.5:8080', 'web-1@10.0.0.6:8080'])
  t.same(discovery.status(), [])
  await until(() => api.openWatches === 1, 'the watch')
  const list = api.requests.find((r) => r.kind === 'endpointslices' && !r.watch)!
  t.same(list.query, { labelSelector: 'kubernetes.io/service-name=web', limit: '500' })
  t.equal(list.authorization, `Bearer ${TOKEN}`, "the kubeconfig user's token")
  const watch = api.requests.find((r) => r.watch)!
  t.match(watch.query, { labelSelector: 'kubernetes.io/service-name=web', watch: '1', allowWatchBookmarks: 'true', resourceVersion: String(api.resourceVersion), timeoutSeconds: '300' })
  t.equal(discovery.target, 'default/web', "the kubeconfig context's namespace")
  await t.rejects(discovery.start(), { message: 'KubernetesDiscovery: start() after start()' })
})

t.test('watch events: a pod added, a pod terminating drains, a pod deleted leaves, a restarted pod keeps its id at its new address', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }]))
  await until(() => rec.changes.length === 2, 'MODIFIED: scale up')
  t.same(rec.last, ['web-0@10.0.0.5:8080', 'web-1@10.0.0.6:8080'])
  api.put('endpointslices', slice('web-b', [{ pod: 'web-2', ip: '10.0.0.7' }]))
  await until(() => rec.changes.length === 3, 'ADDED: a second slice')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6', terminating: true, serving: true }]))
  await until(() => rec.changes.length === 4, 'a pod terminating')
  t.same(rec.last, ['web-0@10.0.0.5:8080', 'web-1@10.0.0.6:8080 (draining)', 'web-2@10.0.0.7:8080'], 'terminating but serving: draining')
  api.delete('endpointslices', 'web-b')
  await until(() => rec.changes.length === 5, 'DELETED')
  t.same(rec.last, ['web-0@10.0.0.5:8080', 'web-1@10.0.0.6:8080 (draining)'])
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.15' }]))
  await until(() => rec.changes.length === 6, 'web-0 restarted')
  t.same(rec.last, ['web-0@10.0.0.15:8080'], 'same id, new address; web-1 gone')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.15' }]))
  api.bookmark()
  await until(() => api.resourceVersion > 0 && api.openWatches === 1, 'quiet')
  t.equal(rec.changes.length, 6, 'an event that changes nothing calls no hook')
  t.same(rec.errors, [])
})

t.test('a cut watch resumes from the last version seen: events of the gap are replayed, none twice; a bookmark moves the version', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }]))
  await until(() => rec.changes.length === 2, 'an event')
  const seen = api.resourceVersion
  api.cutWatches()
  api.put('endpointslices', slice('web-b', [{ pod: 'web-2', ip: '10.0.0.7' }])) // while no watch is open
  await until(() => rec.changes.length === 3, 'the event of the gap')
  t.same(rec.last.map((s) => s.split('@')[0]), ['web-0', 'web-1', 'web-2'])
  t.equal(api.requests.filter((r) => r.watch)[1]?.query['resourceVersion'], String(seen), 'resumed from the last event')
  t.equal(api.count('endpointslices', false), 1, 'no list again')

  await until(() => api.openWatches === 1, 'the watch again')
  api.put('services', service('unrelated')) // moves the version without touching the slices
  api.bookmark()
  const bookmarked = api.resourceVersion
  await until(() => api.requests.length > 0 && api.openWatches === 1, 'the bookmark')
  api.endWatches() // the server's timeoutSeconds
  await until(() => api.count('endpointslices', true) === 3, 'the watch reopened')
  await until(() => api.requests.filter((r) => r.watch)[2]?.query['resourceVersion'] === String(bookmarked), 'resume from the bookmark')
  t.pass('a watch the server ended is reopened from the bookmark version')
  t.same(rec.errors, [], 'a cut or ended watch is not an error')
})

t.test('410 Gone lists again and replaces the set, as an ERROR event or as the status of the watch', async (t) => {
  for (const goneAs of ['event', 'status'] as const) {
    t.test(goneAs, async (t) => {
      const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }]), slice('web-b', [{ pod: 'web-1', ip: '10.0.0.6' }])])
      api.goneAs = goneAs
      await discovery.start()
      await until(() => api.openWatches === 1, 'the watch')
      api.cutWatches()
      api.delete('endpointslices', 'web-b')
      api.put('endpointslices', slice('web-c', [{ pod: 'web-2', ip: '10.0.0.7' }]))
      api.compact() // the versions of the gap are gone: the resumed watch gets 410
      await until(() => api.count('endpointslices', false) === 2, 'the second list')
      await until(() => rec.changes.length === 2, 'the new set')
      t.same(rec.last.map((s) => s.split('@')[0]), ['web-0', 'web-2'], 'the list replaced every slice (web-b deleted during the gap is gone)')
      t.same(rec.errors, [], '410 is routine, not an error')
    })
  }
  t.test('an expired watch (ERROR 410 on an open stream)', async (t) => {
    const { api, discovery } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
    await discovery.start()
    await until(() => api.openWatches === 1, 'the watch')
    api.expireWatches()
    await until(() => api.count('endpointslices', false) === 2 && api.openWatches === 1, 'list and watch again')
    t.pass()
  })
})

t.test('the API server unreachable: the last set stays, status() says so, and it recovers with what changed meanwhile', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }])])
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  await api.close()
  await until(() => rec.errors.length >= 2, 'two failures')
  t.equal(rec.errors[0]!.err.code, 'ECONNREFUSED')
  t.same(rec.errors.slice(0, 2).map((e) => e.n), [1, 2], 'consecutive failures counted')
  t.match(rec.errors[0]!.err.message, /^Kubernetes discovery of Service default\/web: EndpointSlices: watch \/apis\/discovery\.k8s\.io\/v1\/namespaces\/default\/endpointslices: .*ECONNREFUSED.*; keeping the last 2 upstreams$/)
  t.same(discovery.current().map((u) => u.id), ['web-0', 'web-1'], 'the last known set is kept')
  t.equal(rec.changes.length, 1, 'no change reported')
  t.match(discovery.status(), [/ECONNREFUSED/], 'degraded')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])) // changed while unreachable
  await api.start()
  await until(() => discovery.status().length === 0, 'recovery')
  await until(() => rec.changes.length === 2, 'the change made meanwhile')
  t.same(rec.last, ['web-0@10.0.0.5:8080'])
  t.ok(rec.recovered >= 1, 'onRecover')
  t.equal(rec.errors[0]!.err.area, 'EndpointSlices')
  t.same([...new Set(rec.recoveries)], ['EndpointSlices'], 'the area recovered')
})

t.test('the API server back after an outage: status() is clear as soon as it answers, well before requestTimeout (8 s here)', async (t) => {
  const { api, discovery } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])], {}, { tuning: { ...FAST, requestTimeout: 8_000 } })
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  await api.close()
  await until(() => discovery.status().some((s) => /GET .*ECONNREFUSED/.test(s)), 'lists refused too')
  await api.start()
  const back = performance.now()
  await waitFor(() => discovery.status().length === 0, 3_000, 'status() clear within 3 s of the API answering again')
  t.comment(`status() clear ${Math.round(performance.now() - back)} ms after the API came back (requestTimeout 8000 ms)`)
})

t.test('a watch that always fails (403: RBAC grants list but not watch; the connection reset; cut once open): failed watches list again, so the set follows the endpoints', async (t) => {
  const faults: [string, (api: FakeKubeApi) => void][] = [
    ['403', (api) => { api.watchStatus = 403 }],
    ['reset', (api) => { api.watchFault = 'reset' }],
    ['cut', (api) => { api.watchFault = 'cut' }],
  ]
  for (const [what, fail] of faults) {
    t.test(what, async (t) => {
      const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
      fail(api)
      await discovery.start()
      t.same(rec.last, ['web-0@10.0.0.5:8080'])
      api.put('endpointslices', slice('web-b', [{ pod: 'web-1', ip: '10.0.0.6' }]))
      await until(() => rec.last.join() === 'web-0@10.0.0.5:8080,web-1@10.0.0.6:8080', 'web-1, added after start, seen through a list')
      api.delete('endpointslices', 'web-a')
      await until(() => rec.last.join() === 'web-1@10.0.0.6:8080', 'web-0, deleted, seen through a list')
      t.ok(api.count('endpointslices', false) >= 3, 'listed again')
      if (what === '403') {
        t.match(discovery.status(), [/EndpointSlices: .*403.*the ServiceAccount needs get, list and watch/], 'degraded while watches fail, although lists work')
        t.ok(rec.errors.every((e) => e.err.status === 403), 'each failed watch reported')
      }
      if (what === 'reset') {
        t.match(discovery.status(), [/EndpointSlices: watch .*: socket hang up/], 'degraded while watches fail')
        t.ok(rec.errors.length > 0 && rec.errors.every((e) => e.err.code === 'ECONNRESET'), 'each failed watch reported')
      }
      api.watchStatus = null
      api.watchFault = null
      await until(() => api.openWatches === 1 && discovery.status().length === 0, 'a watch that works: no longer degraded')
      const lists = api.count('endpointslices', false)
      api.put('endpointslices', slice('web-c', [{ pod: 'web-2', ip: '10.0.0.7' }]))
      await until(() => rec.last.length === 2, 'web-2 through the watch')
      t.equal(api.count('endpointslices', false), lists, 'no list once watching works')
    })
  }
})

t.test('an empty list during an outage never empties the set: the last set stays and status() says why', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  api.listMode = 'empty'
  api.compact()
  api.expireWatches() // 410: list again, and the list comes back empty
  await until(() => rec.errors.some((e) => e.err.code === 'EEMPTY'), 'the empty answer reported')
  t.same(discovery.current().map((u) => u.id), ['web-0'])
  t.equal(rec.changes.length, 1)
  t.match(discovery.status(), [/Service default\/web: it has no EndpointSlice .*; keeping the last 1 upstream$/])
  await until(() => api.openWatches === 1, 'the watch after the empty list')
  api.listMode = 'ok'
  api.compact()
  api.expireWatches()
  await until(() => discovery.status().length === 0, 'a good list')
  t.same(discovery.current().map((u) => u.id), ['web-0'])
  t.ok(rec.errors.every((e) => e.err.area === 'endpoints'), 'EEMPTY is about the endpoints')
  t.same(rec.recoveries, ['endpoints'], 'its end is told once (the set did not change, so onChange said nothing)')

  // all pods out (not ready, not serving): also kept
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', ready: false, serving: false }]))
  await until(() => discovery.status().some((s) => /no endpoint is ready or serving/.test(s)), 'all out')
  t.same(discovery.current().map((u) => u.id), ['web-0'])
})

t.test('no pod ready: the last set is kept, but not a pod the listing says is gone (its name not ready under another uid, or its address another pod\'s)', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'a' }])])
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  const listed = (): string[] => discovery.current().map((u) => `${u.id}${u.uid === undefined ? '' : `/${u.uid}`}${u.unready === true ? ' (not ready)' : ''}`)
  // a one-replica StatefulSet: web-0 deleted and re-created under its name at its IP, not ready yet
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'b', ready: false, serving: false }]))
  await until(() => rec.changes.length === 2, 'the old web-0 reported gone')
  t.same(listed(), ['web-0/b (not ready)'], 'no upstream left: the new pod is listed not ready (membership drops the old one at once)')
  t.match(discovery.status(), [/no endpoint is ready or serving; keeping the last 0 upstreams$/], 'still degraded: no endpoint serves')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'b' }]))
  await until(() => discovery.status().length === 0, 'the new pod ready')
  t.same(listed(), ['web-0/b'])

  // two pods, none ready: one re-created (another uid), one merely not ready (its own uid): that one is kept
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'b' }, { pod: 'web-1', ip: '10.0.0.6', uid: 'w1' }]))
  await until(() => listed().length === 2, 'two pods')
  const changes = rec.changes.length
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'c', ready: false, serving: false }, { pod: 'web-1', ip: '10.0.0.6', uid: 'w1', ready: false, serving: false }]))
  await until(() => rec.changes.length === changes + 1, 'web-0 reported gone')
  t.same(listed(), ['web-0/c (not ready)', 'web-1/w1'], 'web-1 kept as it was; web-0 gone')

  // a Deployment replaced at once (Recreate): the old pod out, a new pod not ready at its address
  api.put('endpointslices', slice('web-a', [{ pod: 'web-x', ip: '10.0.0.7', uid: 'x' }]))
  await until(() => listed().join() === 'web-x/x', 'one pod web-x')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-x', ip: '10.0.0.7', uid: 'x', terminating: true, serving: false, ready: false }, { pod: 'web-y', ip: '10.0.0.7', uid: 'y', ready: false, serving: false }]))
  await until(() => !listed().includes('web-x/x'), 'web-x reported gone')
  t.same(listed(), ['web-x/x (not ready)', 'web-y/y (not ready)'], "web-y has web-x's address: web-x is gone")

  // merely not ready (its own uid, its own address): kept, nothing reported
  api.put('endpointslices', slice('web-a', [{ pod: 'web-z', ip: '10.0.0.8', uid: 'z' }]))
  await until(() => listed().join() === 'web-z/z', 'one pod web-z')
  const before = rec.changes.length
  api.put('endpointslices', slice('web-a', [{ pod: 'web-z', ip: '10.0.0.8', uid: 'z', ready: false, serving: false }]))
  await until(() => discovery.status().some((s) => /no endpoint is ready or serving; keeping the last 1 upstream$/.test(s)), 'web-z not ready')
  t.equal(rec.changes.length, before, 'the last set kept')
  t.same(listed(), ['web-z/z'])
})

t.test("no pod ready: a pod leaving (draining in membership) whose address a new pod not ready has leaves at once, as when some pod is ready", async (t) => {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  t.teardown(() => api.close())
  const not = { ready: false, serving: false }
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }]))
  const timers = new FakeTimers()
  let updates = 0
  const membership = new Membership([], 60_000, { onChange: () => undefined, drain: () => undefined, undrain: () => undefined }, timers)
  t.teardown(() => membership.stop())
  // wired as createDiscovery wires it: membership hears every list, `previous` is its set
  const discovery = new KubernetesDiscovery({ ...CONFIG, kubeconfig: kubeconfig(url) }, {
    onChange: (u) => membership.setDiscovered(u, 'kubernetes'),
    onError: () => void updates++, // each list with no pod ready says so
    previous: () => membership.current().list,
  }, { tuning: FAST })
  t.teardown(() => discovery.stop())
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  t.same(membership.current().ids, ['web-0', 'web-1'])
  // web-1 deleted (a Deployment scaled down): it leaves, draining until drain_timeout
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  await until(() => discovery.current().length === 1, 'web-1 unlisted')
  t.same(membership.current().ids, ['web-0', 'web-1'], 'web-1 draining, still in the set')
  // web-0 stops being ready: the last set is kept
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', ...not }]))
  await until(() => updates === 1, 'no pod ready')
  // a new pod gets web-1's freed IP, not ready yet: web-1's pod is gone, its users must not reach web-2
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5', ...not }, { pod: 'web-2', ip: '10.0.0.6', ...not }]))
  await until(() => updates === 2, 'that list applied')
  t.same(membership.current().ids, ['web-0'], 'web-1 gone at once; web-0 kept (merely not ready)')
})

t.test('a first list that fails: start() resolves with an empty set, a later list fills it', async (t) => {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  api.listMode = 503
  const rec = new Recorder()
  const discovery = new KubernetesDiscovery({ ...CONFIG, kubeconfig: kubeconfig(url) }, rec.hooks, { tuning: FAST })
  t.teardown(async () => { await discovery.stop(); await api.close() })
  t.same(await discovery.start(), [])
  t.equal(rec.errors[0]?.err.code, 'EHTTP')
  t.equal(rec.errors[0]?.err.status, 503)
  t.match(rec.errors[0]?.err.message, /GET \/apis\/discovery\.k8s\.io\/v1\/namespaces\/default\/endpointslices: 503 Service Unavailable: list failed with 503/)
  api.put('endpointslices', slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  api.listMode = 'ok'
  await until(() => rec.changes.length === 1, 'the set')
  t.same(rec.last, ['web-0@10.0.0.5:8080'])
})

t.test('403 and 401 say what to fix', async (t) => {
  const { api, discovery, rec, url } = await setup(t, [])
  api.listMode = 403
  await discovery.start()
  t.match(rec.errors[0]?.err.message, /403 Forbidden: list failed with 403 \(the ServiceAccount needs get, list and watch on endpointslices/)
  const wrong = new Recorder()
  const d2 = new KubernetesDiscovery({ ...CONFIG, kubeconfig: kubeconfig(url, 'token: wrong') }, wrong.hooks, { tuning: FAST })
  t.teardown(() => d2.stop())
  await d2.start()
  t.match(wrong.errors[0]?.err.message, /401 Unauthorized: Unauthorized \(the token was refused\)/)
})

t.test('lists are paged (limit and continue)', async (t) => {
  const slices = Array.from({ length: 5 }, (_, i) => slice(`web-${i}`, [{ pod: `web-${i}`, ip: `10.0.0.${i + 1}` }]))
  const { api, discovery } = await setup(t, slices, {}, { tuning: { ...FAST, pageSize: 2 } })
  t.same((await discovery.start()).map((u) => u.id), ['web-0', 'web-1', 'web-2', 'web-3', 'web-4'])
  t.same(api.requests.filter((r) => !r.watch).map((r) => r.query['continue'] ?? ''), ['', '2', '4'])
})

t.test('events split across chunks are read whole', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
  api.splitLines = true
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  for (let i = 1; i <= 3; i++) api.put('endpointslices', slice('web-a', Array.from({ length: i + 1 }, (_, j) => ({ pod: `web-${j}`, ip: `10.0.0.${j + 5}` }))))
  await until(() => rec.last.length === 4, 'three events')
  t.same(rec.errors, [])
})

t.test('the weight annotation on the Service sets weights, live; an invalid one is reported and ignored', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }])], { weight_annotation: 'tether.io/weights' })
  api.put('services', service('web', { 'tether.io/weights': 'web-1=3' }))
  const initial = await discovery.start()
  t.same(initial.map((u) => [u.id, u.weight]), [['web-0', 1], ['web-1', 3]])
  t.ok(api.requests.some((r) => r.kind === 'services' && r.query['fieldSelector'] === 'metadata.name=web'), 'the Service is read by name')
  await until(() => api.openWatches === 2, 'both watches')
  api.put('services', service('web', { 'tether.io/weights': '2' }))
  await until(() => rec.changes.at(-1)?.every((u) => u.weight === 2) === true, 'new weights')
  api.put('services', service('web', { 'tether.io/weights': 'web-0=lots' }))
  await until(() => rec.changes.at(-1)?.every((u) => u.weight === 1) === true, 'weights back to 1')
  t.match(discovery.status(), [/annotation tether\.io\/weights on Service default\/web is invalid \(web-0=lots: the weight must be an integer 1\.\.1000\); every pod has weight 1/])
  t.equal(rec.errors.at(-1)?.err.code, 'EWEIGHTS')
  t.equal(rec.errors.at(-1)?.err.area, 'weights')
  t.same(rec.recoveries, [])
  api.put('services', service('web', {}))
  await until(() => discovery.status().length === 0, 'annotation removed')
  t.same(rec.recoveries, ['weights'], 'its end is told')
})

t.test("with weight_annotation, status() says what fails now: the slices recovering does not leave their old error in place of the Service's", async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])], { weight_annotation: 'tether.io/weights' })
  api.put('services', service('web', { 'tether.io/weights': '2' }))
  await discovery.start()
  await until(() => api.openWatches === 2, 'both watches')
  // the Service throttled (its next try in 60 s), the slices failing (retried every few ms)
  api.kindStatus.services = { status: 429, retryAfter: '60' }
  api.kindStatus.endpointslices = { status: 500 }
  api.cutWatches()
  await until(() => rec.errors.some((e) => e.err.area === 'Service') && rec.errors.filter((e) => e.err.area === 'EndpointSlices').length >= 2, 'both failing')
  t.match(discovery.status(), [/EndpointSlices: .*500/], 'the latest failure')
  delete api.kindStatus.endpointslices
  await until(() => rec.recoveries.includes('EndpointSlices'), 'the slices recover')
  t.match(discovery.status(), [/Service: .*429/], 'what still fails: the Service (not the slices\' 500 any more)')
  t.notMatch(discovery.status().join('\n'), /500/)
  t.same(rec.last, ['web-0@10.0.0.5:8080'], 'the set kept')
})

t.test('stop() aborts the open watch, and no hook is called after it', async (t) => {
  const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])])
  await discovery.start()
  await until(() => api.openWatches === 1, 'the watch')
  await discovery.stop()
  await until(() => api.openWatches === 0, 'the watch closed')
  api.put('endpointslices', slice('web-a', [{ pod: 'web-1', ip: '10.0.0.6' }]))
  await api.close()
  t.equal(rec.changes.length, 1)
  t.same(rec.errors, [])
  await t.rejects(discovery.start(), { message: 'KubernetesDiscovery: start() after stop()' })
})

t.test('stop() during start() (a worker that becomes the lead while it shuts down): start() resolves, nothing is left running, no hook is called', async (t) => {
  for (const weight_annotation of [null, 'tether.io/weights']) {
    const { api, discovery, rec } = await setup(t, [slice('web-a', [{ pod: 'web-0', ip: '10.0.0.5' }])], { weight_annotation })
    api.put('services', service('web', { 'tether.io/weights': '2' }))
    const started = discovery.start()
    const stopped = discovery.stop()
    t.same(await started, [], `${weight_annotation ?? 'no weights'}: start() resolves with the set so far (none), it does not reject`)
    await stopped
    t.equal(api.openWatches, 0, 'no watch')
    t.same(rec.changes, [])
    t.same(rec.errors, [])
    await t.rejects(discovery.start(), { message: 'KubernetesDiscovery: start() after stop()' })
  }
})

t.test('back-off: failures wait base x 2^(n-1) up to max, and the next success resets it (fake timers)', async (t) => {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  api.listMode = 500
  t.teardown(() => api.close())
  const timers = new FakeTimers()
  const errors: number[] = []
  const lw = new ListWatch(new KubernetesApi(kubeconfigAccess(kubeconfig(url)).endpoint),
    { path: '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', selector: {}, backoff: { base: 100, max: 500 }, random: () => 1 },
    { onSync: () => {}, onError: (_e, n) => void errors.push(n) }, timers)
  t.teardown(() => lw.stop())
  await lw.start()
  const sleeps: number[] = []
  for (let i = 0; i < 5; i++) {
    await waitFor(() => timers.pending().some((p) => p.delay !== 10_000), 5_000, 'the back-off timer')
    const sleep = timers.pending().find((p) => p.delay !== 10_000)!
    sleeps.push(sleep.delay)
    t.ok(sleep.unrefed, 'unref()ed')
    timers.advance(sleep.delay)
    await waitFor(() => errors.length === i + 2, 5_000, 'the next failure')
  }
  t.same(sleeps, [100, 200, 400, 500, 500])
  t.equal(lw.healthy, false)
  api.listMode = 'ok'
  const sleep = timers.pending().find((p) => p.delay !== 10_000)!
  timers.advance(sleep.delay)
  await waitFor(() => lw.healthy, 5_000, 'recovery')
  t.equal(lw.failures, 0)
})

t.test('a watch that sends nothing for idleTimeout is dropped and reopened (a half-open connection; fake timers)', async (t) => {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  t.teardown(() => api.close())
  const timers = new FakeTimers()
  const errors: string[] = []
  const lw = new ListWatch(new KubernetesApi(kubeconfigAccess(kubeconfig(url)).endpoint),
    { path: '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices', selector: {}, idleTimeout: 60_000, backoff: { base: 100, max: 100 }, random: () => 1 },
    { onSync: () => {}, onError: (e) => void errors.push(e.code) }, timers)
  t.teardown(() => lw.stop())
  await lw.start()
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch')
  const idle = timers.pending().find((p) => p.delay === 60_000)
  t.ok(idle, 'an idle deadline is armed')
  timers.advance(60_000)
  await waitFor(() => errors.length === 1, 5_000, 'the idle timeout')
  t.same(errors, ['ETIMEDOUT'])
  timers.advance(100)
  await waitFor(() => api.count('endpointslices', true) === 2, 5_000, 'a new watch')
  t.equal(api.count('endpointslices', false), 1, 'resumed, not listed again')
})

// ---- credentials ------------------------------------------------------------------------------

t.test('in cluster: https verified with the service account CA, the token re-read for every request, the pod namespace', async (t) => {
  const certs = makeCertificates()
  const api = new FakeKubeApi({ token: TOKEN, tls: certs })
  const { port } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }], { namespace: 'shop' }))
  const dir = tempDir()
  writeFileSync(join(dir, 'token'), `${TOKEN}\n`)
  writeFileSync(join(dir, 'ca.crt'), certs.ca)
  writeFileSync(join(dir, 'namespace'), 'shop')
  const env = { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(port) }
  const rec = new Recorder()
  const discovery = new KubernetesDiscovery(CONFIG, rec.hooks, { env, serviceAccountDir: dir, tuning: FAST })
  t.teardown(() => discovery.stop())
  t.equal(discovery.source, 'the in-cluster service account')
  t.same((await discovery.start()).map((u) => u.id), ['web-0'], 'listed over TLS in the pod namespace')
  t.equal(discovery.target, 'shop/web')
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch')
  writeFileSync(join(dir, 'token'), 'rotated-token') // the kubelet rotates projected tokens
  api.cutWatches()
  await waitFor(() => api.requests.at(-1)?.authorization === 'Bearer rotated-token', 5_000, 'the rotated token')
  t.pass('a rotated token is used by the next request')

  const stranger = makeCertificates().ca // a CA that did not sign the server
  writeFileSync(join(dir, 'ca.crt'), stranger)
  const other = new Recorder()
  const unverified = new KubernetesDiscovery(CONFIG, other.hooks, { env, serviceAccountDir: dir, tuning: FAST })
  t.teardown(() => unverified.stop())
  await unverified.start()
  t.match(other.errors[0]?.err.code, /CERT|SIGNATURE|VERIFY/, `a server the CA did not sign is refused (${other.errors[0]?.err.code})`)
})

t.test('in cluster: missing environment or service account files fail at construction with what to do', async (t) => {
  t.throws(() => inClusterAccess({}), new KubernetesCredentialsError('KUBERNETES_SERVICE_HOST is not set, so Tether is not running in a pod: set discovery.kubernetes.kubeconfig to run outside a cluster'))
  const dir = tempDir()
  t.throws(() => inClusterAccess({ KUBERNETES_SERVICE_HOST: '10.96.0.1' }, dir), { message: /cannot read the service account's token .*\/token: ENOENT \(a pod gets them with a ServiceAccount and automountServiceAccountToken: true/ })
  writeFileSync(join(dir, 'token'), 't')
  writeFileSync(join(dir, 'ca.crt'), 'ca')
  writeFileSync(join(dir, 'namespace'), 'ns\n')
  const access = inClusterAccess({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' }, dir)
  t.equal(access.endpoint.server, 'https://[fd00::1]:6443', 'an IPv6 host is bracketed')
  t.equal(access.namespace, 'ns')
  t.throws(() => new KubernetesDiscovery(CONFIG, { onChange: () => {} }, { env: {} }), KubernetesCredentialsError, 'the discovery constructor throws too')
})

t.test('kubeconfig: token, tokenFile, CA data, insecure, namespace; unsupported auth and broken files say what to do', async (t) => {
  const dir = tempDir()
  writeFileSync(join(dir, 'tok'), 'from-file\n')
  const ca = Buffer.from('-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n').toString('base64')
  const a = kubeconfigAccess(kubeconfig('https://10.0.0.1:6443/', `tokenFile: ${join(dir, 'tok')}`, `certificate-authority-data: ${ca}`))
  t.equal(a.endpoint.server, 'https://10.0.0.1:6443')
  t.equal(a.endpoint.token(), 'from-file')
  t.match(a.endpoint.ca, /BEGIN CERTIFICATE/)
  t.equal(a.namespace, 'default')
  t.match(a.source, /^kubeconfig .* \(context test\)$/)
  const insecure = kubeconfigAccess(kubeconfig('https://10.0.0.1:6443', 'token: x', 'insecure-skip-tls-verify: true'))
  t.equal(insecure.endpoint.insecure, true)
  t.equal(insecure.endpoint.token(), 'x')
  t.throws(() => kubeconfigAccess(kubeconfig('https://x', 'exec: { command: aws, apiVersion: client.authentication.k8s.io/v1 }')), { message: /authenticates with exec, which Tether does not support: run `kubectl proxy`/ })
  t.throws(() => kubeconfigAccess(join(dir, 'missing')), { message: /cannot read the kubeconfig .*missing: ENOENT/ })
  const bad = join(dir, 'bad')
  writeFileSync(bad, 'apiVersion: v1\nkind: Config\n')
  t.throws(() => kubeconfigAccess(bad), { message: /no current-context/ })
  writeFileSync(bad, 'current-context: x\ncontexts: [{ name: y }]\n')
  t.throws(() => kubeconfigAccess(bad), { message: /no context named "x" in contexts/ })
  writeFileSync(bad, 'a: [1\n')
  t.throws(() => kubeconfigAccess(bad), { message: /the kubeconfig is not valid YAML/ })
  t.throws(() => kubeconfigAccess(kubeconfig('ftp://x', 'token: x')), { message: /must be https:\/\// })
})

t.test("a discovery that starts where another ran (a worker that becomes the lead) keeps the urls of the set it is given (`previous`) while those addresses are still listed", async (t) => {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }, { pod: 'web-1', ip: '10.0.0.6' }]))
  api.put('endpointslices', endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5' }, { pod: 'web-1', ip: 'fd00::6' }], { addressType: 'IPv6' }))
  const rec = new Recorder()
  // the lead before it had web-0 at its IPv6 address (first listed there), web-1 at an address gone since
  const previous = [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1 }, { id: 'web-1', url: 'http://10.0.0.99:8080', weight: 1 }]
  const discovery = new KubernetesDiscovery({ ...CONFIG, kubeconfig: kubeconfig(url) }, { ...rec.hooks, previous: () => previous }, { tuning: FAST })
  t.teardown(() => discovery.stop())
  await discovery.start()
  t.same(rec.last, ['web-0@[fd00::5]:8080', 'web-1@10.0.0.6:8080'], 'web-0 keeps its IPv6 url; web-1, whose address is gone, takes the first listed')
})

t.test('wired by createDiscovery next to DNS: a pod DNS already lists keeps the url in use when Kubernetes starts listing it (Kubernetes takes the id), and when DNS stops', async (t) => {
  const api = new FakeKubeApi({ token: TOKEN })
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: '10.0.0.5', uid: 'u-0' }]))
  api.put('endpointslices', endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: 'fd00::5', uid: 'u-0' }], { addressType: 'IPv6' }))
  const replaced: string[] = []
  let before = new Map<string, { url: string; uid?: string }>()
  const membership = new Membership([], 60_000, {
    onChange: (set) => {
      for (const u of set.list) { const b = before.get(u.id); if (b !== undefined && isReplacement(b, u)) replaced.push(`${u.id} ${b.url} -> ${u.url}`) }
      before = new Map(set.list.map((u) => [u.id, { url: u.url, ...(u.uid === undefined ? {} : { uid: u.uid }) }]))
    },
    drain: () => {}, undrain: () => {},
  })
  t.teardown(() => membership.stop())
  // the SRV target web-0 (the same pod), listed at its IPv6 address before the API server answered
  membership.setDiscovered([{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1 }], 'dns')
  const discovery = createDiscovery({ dns: null, kubernetes: { ...CONFIG, kubeconfig: kubeconfig(url) } }, {
    membership: { setDiscovered: (found, source) => membership.setDiscovered(found, source), current: () => membership.current(), listedBy: (source) => membership.listedBy(source) },
    logger: createLogger('info', new LogCapture()),
    metrics: { discoveryError: () => {}, setDiscoveryStatus: () => {} },
    env: {},
    timers: systemTimers,
    drainTimeout: 60_000,
  })
  t.teardown(() => discovery.stop())
  await discovery.start()
  t.match(membership.current().get('web-0'), { url: 'http://[fd00::5]:8080', uid: 'u-0' }, "the pod's entry (Kubernetes first), at the url in use: that address is listed for it")
  membership.setDiscovered([], 'dns')
  t.match(membership.current().get('web-0'), { url: 'http://[fd00::5]:8080', uid: 'u-0' }, 'DNS no longer lists it: nothing moves')
  t.same(replaced, [], 'never taken for a replaced replica (WebSockets closed, users rehydrated)')
})
