// Kubernetes discovery end to end: Tether (in-process, real listeners) watches a fake API server
// through a kubeconfig and proxies to real loopback "pods" named by their EndpointSlices. Users
// stick to pods by name: a terminating pod drains (no new users, its users stay), a deleted one
// leaves after drain_timeout, a pod restarted at a new address keeps its users, and an API
// server outage keeps the set while /readyz and tether_discovery_up say it is degraded. When
// every pod is terminating, those still serving take new users (no 503) until a pod is ready.
// Replicas that kept different addresses of one pod apply each other's `down` about it, and
// requests failing on a re-created pod's old address do not count against the new one. A pod
// re-created at the same address (another targetRef.uid) is a replaced replica too; listed not
// ready first, the old pod leaves at once (its users move with their state, not to the new pod).
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo, Socket } from 'node:net'
import { request, testConfig, waitFor } from './fixtures/upstream.js'
import { CookieJar, get, tally, userAgent } from './fixtures/users.js'
import { FakeKubeApi, endpointSlice, kubeconfigFor, type PodEndpoint } from './fixtures/kube-api-server.js'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { FakeClock } from './fixtures/clock.js'
import { healthState, onEvent, when, within } from './fixtures/wait.js'
import { startRedis } from './fixtures/redis-server.js'
import { startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { REPLACED, RECREATED_POD_CONFIG, checkRecreatedPod, counterPods } from './fixtures/recreated-pod.js'
import { LOOPBACK_ADDRESSES, closeServer, sameportUpstreams } from './fixtures/sameport-upstreams.js'

const DRAIN_TIMEOUT = 1_500

interface Pod { readonly name: string; readonly server: http.Server; readonly port: number }

/** A loopback "pod" answering with its name. */
async function startPod(name: string): Promise<Pod> {
  const server = http.createServer((_req, res) => {
    res.setHeader('content-type', 'text/plain')
    res.end(name)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { name, server, port: (server.address() as AddressInfo).port }
}

function stopPod(pod: Pod): Promise<void> {
  return new Promise((resolve) => { pod.server.closeAllConnections(); pod.server.close(() => resolve()) })
}

/** One slice per pod (each pod has its own port here; the slice carries it under the name http). */
function sliceOf(pod: Pod, conditions: Omit<PodEndpoint, 'pod' | 'ip'> = {}) {
  return endpointSlice(`web-${pod.name}`, 'web', [{ pod: pod.name, ip: '127.0.0.1', ...conditions }], { ports: [{ name: 'http', port: pod.port }] })
}

/** A fake Kubernetes API server on loopback, closed when `t` ends; `url` is its address. */
async function kubeApi(t: Test): Promise<{ api: FakeKubeApi; url: string }> {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  return { api, url }
}

/** Echo pods on the loopback addresses, one `port`, closed when `t` ends. */
async function samePortPods(t: Test): Promise<Awaited<ReturnType<typeof sameportUpstreams>>> {
  const pods = await sameportUpstreams()
  t.teardown(async () => { await Promise.all(pods.servers.map(closeServer)) })
  return pods
}

/**
 * Tether (closed when `t` ends) discovering service `web` port `http` from the API at `url`,
 * logging at info without access lines into `log`; `over` adds other sections.
 */
async function discovering(t: Test, url: string, log: LogCapture, over: Parameters<typeof testConfig>[1] = {}): Promise<Tether> {
  const tether = await startTether(testConfig([], {
    ...over,
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log) })
  t.teardown(() => tether.close(0))
  return tether
}

/** How many times `log` told of a replaced replica. */
function replacements(log: LogCapture): number {
  return log.records.filter((r) => r['msg'] === REPLACED).length
}

t.test('Kubernetes discovery: pods by name, terminating pods drain, deleted pods leave, restarted pods keep their users, an API outage degrades', async (t) => {
  const pods = new Map<string, Pod>()
  for (const name of ['web-0', 'web-1', 'web-2']) pods.set(name, await startPod(name))
  t.teardown(async () => { await Promise.all([...pods.values()].map(stopPod)) })
  const api = new FakeKubeApi({ token: 'secret-token' })
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', sliceOf(pods.get('web-0')!))
  api.put('endpointslices', sliceOf(pods.get('web-1')!))
  const dir = mkdtempSync(join(tmpdir(), 'tether-k8s-e2e-'))
  const kubeconfig = join(dir, 'kubeconfig')
  writeFileSync(kubeconfig, `apiVersion: v1
kind: Config
current-context: test
contexts: [{ name: test, context: { cluster: fake, user: tether, namespace: shop } }]
clusters: [{ name: fake, cluster: { server: "${url}" } }]
users: [{ name: tether, user: { token: secret-token } }]
`)
  // the slices live in namespace default: the config names it over the context's "shop"
  const log = new LogCapture()
  const tether = await startTether(testConfig([], {
    affinity: { key: 'cookie', drain_timeout: DRAIN_TIMEOUT },
    discovery: { kubernetes: { service: 'web', namespace: 'default', port: 'http', kubeconfig, weight_annotation: null } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log) })
  t.teardown(() => tether.close(0))
  const agent = userAgent(20)
  t.teardown(() => agent.destroy())
  t.same(tether.router.ids, ['web-0', 'web-1'], 'the first list is in place when startTether resolves: ids are pod names')
  const rows = async (): Promise<{ id: string; url: string; state: string }[]> => JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body)
  t.same((await rows()).map((r) => [r.id, r.url]), [['web-0', `http://127.0.0.1:${pods.get('web-0')!.port}`], ['web-1', `http://127.0.0.1:${pods.get('web-1')!.port}`]])

  interface User { jar: CookieJar; seen: string[] }
  const ask = async (u: User): Promise<string> => {
    const r = await get(`${tether.url}/`, agent, {}, u.jar)
    if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
    u.seen.push(r.body)
    return r.body
  }
  const newUsers = async (n: number): Promise<User[]> => {
    const users = Array.from({ length: n }, () => ({ jar: new CookieJar(), seen: [] as string[] }))
    await Promise.all(users.map((u) => ask(u)))
    return users
  }
  const home = (u: User): string => u.seen.at(-1)!

  const first = await newUsers(40)
  const spread = tally(first.map(home))
  t.ok((spread.get('web-0') ?? 0) > 0 && (spread.get('web-1') ?? 0) > 0, `both pods serve (${JSON.stringify(Object.fromEntries(spread))})`)

  // scale up: a new pod gets new users, existing users stay
  api.put('endpointslices', sliceOf(pods.get('web-2')!))
  await waitFor(() => tether.router.ids.includes('web-2'), 5_000, 'web-2 to be discovered')
  const second = await newUsers(60)
  t.ok(second.some((u) => home(u) === 'web-2'), 'the new pod receives new users')
  for (const u of first) await ask(u)
  t.ok(first.every((u) => u.seen[1] === u.seen[0]), 'existing users stay where they were')

  // web-1 terminating (still serving): draining, its users stay, no new user lands on it
  const onOne = [...first, ...second].filter((u) => home(u) === 'web-1')
  api.put('endpointslices', sliceOf(pods.get('web-1')!, { terminating: true, serving: true }))
  await waitFor(async () => (await rows()).find((r) => r.id === 'web-1')?.state === 'draining', 5_000, 'web-1 to drain')
  const stayed = await Promise.all(onOne.map(ask))
  t.ok(stayed.every((p) => p === 'web-1'), `its ${onOne.length} users still reach it while it terminates`)
  const third = await newUsers(40)
  t.notOk(third.some((u) => home(u) === 'web-1'), 'no new user lands on the terminating pod')

  // web-1 deleted: it leaves after drain_timeout, its users move once
  api.delete('endpointslices', 'web-web-1')
  await waitFor(async () => !(await rows()).some((r) => r.id === 'web-1'), DRAIN_TIMEOUT + 5_000, 'web-1 to leave')
  const moved = await Promise.all(onOne.map(ask))
  t.ok(moved.every((p) => p === 'web-0' || p === 'web-2'), 'its users moved to the other pods')

  // web-0 restarted (a StatefulSet pod keeps its name, gets a new address): its users follow it
  const onZero = [...first, ...second, ...third].filter((u) => home(u) === 'web-0')
  const old = pods.get('web-0')!
  const restarted = await startPod('web-0')
  pods.set('web-0', restarted)
  await stopPod(old)
  api.put('endpointslices', sliceOf(restarted))
  await waitFor(async () => (await rows()).find((r) => r.id === 'web-0')?.url === `http://127.0.0.1:${restarted.port}`, 5_000, 'the new address')
  const after = await Promise.all(onZero.map(ask))
  t.ok(onZero.length > 0 && after.every((p) => p === 'web-0'), `its ${onZero.length} users stay on web-0 at its new address`)

  // the API server unreachable: the set stays, /readyz stays 200 and says degraded, the metric says 0
  const ids = [...tether.router.ids]
  await api.close()
  await waitFor(async () => JSON.parse((await request(`${tether.adminUrl}/readyz`)).body).degraded.length > 0, 10_000, 'degraded')
  const ready = await request(`${tether.adminUrl}/readyz`)
  t.equal(ready.status, 200, 'still ready: the last known pods serve')
  t.match(JSON.parse(ready.body).degraded, [/^Kubernetes discovery of Service default\/web: EndpointSlices: .*ECONNREFUSED.*; keeping the last 2 upstreams$/])
  t.match((await request(`${tether.adminUrl}/metrics`)).body, /tether_discovery_up\{source="kubernetes"\} 0/)
  t.match((await request(`${tether.adminUrl}/metrics`)).body, /tether_discovery_errors_total\{source="kubernetes"\} [1-9]/)
  t.same(tether.router.ids, ids, 'the set is kept')
  const during = await Promise.all(first.map(ask))
  t.ok(during.length === 40, 'requests keep succeeding')
  t.ok(log.records.some((r) => r['msg'] === 'Kubernetes discovery: keeping the last known upstreams' && r['code'] === 'ECONNREFUSED'), 'logged at warn with the code')
  await api.start()
  await waitFor(async () => JSON.parse((await request(`${tether.adminUrl}/readyz`)).body).degraded.length === 0, 15_000, 'recovery')
  t.match((await request(`${tether.adminUrl}/metrics`)).body, /tether_discovery_up\{source="kubernetes"\} 1/)
})

t.test('every pod terminating but still serving: new users land on them (no 503) until a pod is ready, then they drain', async (t) => {
  const pods = new Map<string, Pod>()
  for (const name of ['web-0', 'web-1', 'web-2']) pods.set(name, await startPod(name))
  t.teardown(async () => { await Promise.all([...pods.values()].map(stopPod)) })
  const { api, url } = await kubeApi(t)
  api.put('endpointslices', sliceOf(pods.get('web-0')!))
  api.put('endpointslices', sliceOf(pods.get('web-1')!, { terminating: true, serving: true }))
  const kubeconfig = kubeconfigFor(url)
  const tether = await startTether(testConfig([], {
    affinity: { key: 'cookie', drain_timeout: DRAIN_TIMEOUT },
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig, weight_annotation: null } },
    log: { level: 'warn', access: false },
  }), { logger: createLogger('warn', new LogCapture()) })
  t.teardown(() => tether.close(0))
  const agent = userAgent(20)
  t.teardown(() => agent.destroy())
  const state = async (id: string): Promise<string | undefined> =>
    (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; state: string }[]).find((r) => r.id === id)?.state
  const newUsers = async (n: number): Promise<string[]> => Promise.all(Array.from({ length: n }, async () => {
    const r = await get(`${tether.url}/`, agent, {}, new CookieJar())
    return r.status === 200 ? r.body : `${r.status}`
  }))
  await waitFor(async () => (await state('web-1')) === 'draining', 5_000, 'web-1 draining while web-0 is ready')

  // the last ready pod terminates too (a rollout that replaces every pod at once)
  api.put('endpointslices', sliceOf(pods.get('web-0')!, { terminating: true, serving: true }))
  await waitFor(async () => (await state('web-1')) === 'healthy', 5_000, 'no pod ready: web-1 takes new users again')
  t.equal(await state('web-0'), 'healthy', 'web-0 too')
  const homes = tally(await newUsers(40))
  t.same([...homes.keys()].sort(), ['web-0', 'web-1'], `new users land on the terminating pods, none gets a 503 (${JSON.stringify(Object.fromEntries(homes))})`)
  const ready = await request(`${tether.adminUrl}/readyz`)
  t.equal(ready.status, 200)

  // a new pod is ready: the terminating ones drain again
  api.put('endpointslices', sliceOf(pods.get('web-2')!))
  await waitFor(async () => (await state('web-0')) === 'draining' && (await state('web-1')) === 'draining', 5_000, 'both drain once web-2 is ready')
  t.same([...tally(await newUsers(20)).keys()], ['web-2'], 'new users go to the ready pod only')
})

t.test('a problem that lasts is logged once when it starts, then at most every 30 s with a count, and its end once; /readyz and the metrics follow every event at once', async (t) => {
  const pod = await startPod('web-0')
  t.teardown(() => stopPod(pod))
  const { api, url } = await kubeApi(t)
  api.put('endpointslices', sliceOf(pod))
  const kubeconfig = kubeconfigFor(url)
  const log = new LogCapture()
  const clock = new FakeClock()
  const tether = await startTether(testConfig([], {
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig, weight_annotation: null } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log), clock })
  t.teardown(() => tether.close(0))
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch')
  const degraded = async (): Promise<string[]> => JSON.parse((await request(`${tether.adminUrl}/readyz`)).body).degraded
  const errorsTotal = async (): Promise<number> => Number(/tether_discovery_errors_total\{source="kubernetes"\} (\d+)/.exec((await request(`${tether.adminUrl}/metrics`)).body)?.[1] ?? 0)
  const lines = (): Record<string, unknown>[] => log.records.filter((r) => typeof r['msg'] === 'string' && (r['msg'] as string).startsWith('Kubernetes discovery:') && r['msg'] !== 'Kubernetes discovery: watching EndpointSlices' && r['msg'] !== 'Kubernetes discovery: endpoints changed')

  // the Deployment crash-loops: no pod ready, and its slice changes again and again
  const notReady = sliceOf(pod, { ready: false, serving: false }) // each put is a MODIFIED event, as each restart is
  api.put('endpointslices', notReady)
  await waitFor(async () => (await degraded()).some((d) => /no endpoint is ready or serving/.test(d)), 5_000, 'degraded at once')
  // one put at a time: Tether counts a chunk of watch events once (they change the slices once),
  // and Node 24's HTTP server sends the writes of one tick as one chunk (as the API server
  // flushes a burst of events at once)
  for (let i = 2; i <= 11; i++) {
    api.put('endpointslices', notReady)
    await waitFor(async () => (await errorsTotal()) === i, 5_000, `event ${i} counted in the metric`)
  }
  await waitFor(() => lines().length >= 1, 5_000, 'the warn')
  t.same(lines().map((r) => [r['level'], r['code'], r['msg']]), [[40, 'EEMPTY', 'Kubernetes discovery: keeping the last known upstreams']], 'eleven reports, one warn')
  t.same(tether.router.ids, ['web-0'], 'the last set is kept')

  clock.advance(30_000)
  api.put('endpointslices', notReady)
  await waitFor(() => lines().length >= 2, 5_000, 'the warn 30 s later')
  t.match(lines()[1], { level: 40, code: 'EEMPTY', repeated: 11, for_ms: 30_000 }, 'the second warn counts the reports since the first')
  api.put('endpointslices', notReady)
  await waitFor(async () => (await errorsTotal()) === 13, 5_000, 'the unlogged report counted') // before the next put: not in its chunk
  clock.advance(5_000)
  api.put('endpointslices', sliceOf(pod)) // ready again
  await waitFor(async () => (await degraded()).length === 0, 5_000, 'not degraded at once')
  await waitFor(() => lines().length >= 3, 5_000, 'the recovery')
  t.match(lines()[2], { level: 30, msg: 'Kubernetes discovery: the Service has serving endpoints again', area: 'endpoints', for_ms: 35_000, unlogged: 1 })
  t.equal(await errorsTotal(), 13)
  t.equal(lines().length, 3, 'nothing more')
})

/** Tether with RECREATED_POD_CONFIG, discovering the Service `web` from the fake API server at `url`, logging into `log`. */
async function recreatedPodTether(t: Test, url: string, log: LogCapture): Promise<Tether> {
  const tether = await startTether(testConfig([], {
    ...RECREATED_POD_CONFIG,
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
  }), { logger: createLogger('info', log) })
  t.teardown(() => tether.close(0))
  return tether
}

t.test('a StatefulSet pod re-created at a new address (same name, another url) is a replaced replica: its WebSockets close with 1012, its users are rehydrated there with reason=restart', async (t) => {
  const pods = await counterPods(t)
  // each pod process its own uid, as the API server gives a re-created pod
  const slice = (c: Counter) => endpointSlice(`web-${c.id}`, 'web', [{ pod: c.id, ip: '127.0.0.1', uid: `${c.id}-${c.port}` }], { ports: [{ name: 'http', port: c.port }] })
  const { api, url } = await kubeApi(t)
  for (const c of pods.values()) api.put('endpointslices', slice(c))
  const log = new LogCapture()
  const tether = await recreatedPodTether(t, url, log)
  await checkRecreatedPod(t, tether, log, pods, (next) => api.put('endpointslices', slice(next)))
})

/**
 * A loopback "pod IP" (127.0.0.1 on a port of its own) in front of the pod on port `target`:
 * each new connection goes to the pod behind it now (set `target`), one already made stays with
 * its pod, as a pod re-created at the same IP gets the new connections while the old pod's live on.
 */
async function podAddress(t: Test, target: number): Promise<{ readonly port: number; target: number }> {
  const sockets = new Set<Socket>()
  const server = net.createServer((client) => {
    const pod = net.connect(at.target, '127.0.0.1')
    for (const [s, other] of [[client, pod], [pod, client]] as const) {
      sockets.add(s)
      s.on('error', () => undefined)
      s.on('close', () => { sockets.delete(s); other.destroy() })
    }
    client.pipe(pod).pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const at = { port: (server.address() as AddressInfo).port, target }
  t.teardown(() => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }))
  return at
}

t.test('a StatefulSet pod re-created at the same address (same name and url, another uid) is a replaced replica: its WebSockets close with 1012, its users are rehydrated there with reason=restart', async (t) => {
  const pods = await counterPods(t)
  const address = await podAddress(t, pods.get('web-0')!.port)
  const slice = (c: Counter, uid: string) => endpointSlice(`web-${c.id}`, 'web', [{ pod: c.id, ip: '127.0.0.1', uid }], { ports: [{ name: 'http', port: c.id === 'web-0' ? address.port : c.port }] })
  const { api, url } = await kubeApi(t)
  for (const c of pods.values()) api.put('endpointslices', slice(c, `${c.id}-first`))
  const log = new LogCapture()
  const tether = await recreatedPodTether(t, url, log)
  await checkRecreatedPod(t, tether, log, pods, (next) => {
    address.target = next.port // the pod's IP now leads to the new pod
    api.put('endpointslices', slice(next, 'web-0-second'))
  }, `http://127.0.0.1:${address.port}`)
  // Tether's kept connections to that IP reached the old pod: none of them served a user since
  // (asked directly now, the old pod's users count 4 from its 3, a user it never had 1)
  const old = pods.get('web-0-old')!
  const counts = await Promise.all(Array.from({ length: 20 }, async (_, i) => (JSON.parse((await request(`${old.url}/`, { headers: { 'x-tenant': `user-${i}` } })).body) as { n: number }).n))
  t.ok(counts.includes(4) && counts.every((n) => n === 1 || n === 4), `the old pod answered nothing through Tether after the new one came (${counts.join(' ')})`)
})

t.test('a StatefulSet pod re-created at the same address and listed not ready (another uid) leaves at once: its users move to another pod with their state, and come back with it once the new pod is ready', async (t) => {
  const pods = await counterPods(t)
  const address = await podAddress(t, pods.get('web-0')!.port)
  const slice = (c: Counter, uid: string, ready = true) => endpointSlice(`web-${c.id}`, 'web', [{ pod: c.id, ip: '127.0.0.1', uid, ...(ready ? {} : { ready: false, serving: false }) }], { ports: [{ name: 'http', port: c.id === 'web-0' ? address.port : c.port }] })
  const { api, url } = await kubeApi(t)
  for (const c of pods.values()) api.put('endpointslices', slice(c, `${c.id}-first`))
  const log = new LogCapture()
  const tether = await startTether(testConfig([], {
    ...RECREATED_POD_CONFIG,
    // drain_timeout far longer than the test: leaving at once is the fix; on_scale_up: rebalance,
    // so the users whose hash prefers web-0 go back to it when it joins (persistent: they stay)
    affinity: { ...RECREATED_POD_CONFIG.affinity, drain_timeout: 60_000, on_scale_up: 'rebalance' },
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
  }), { logger: createLogger('info', log) })
  t.teardown(() => tether.close(0))
  const agent = userAgent(10)
  t.teardown(() => agent.destroy())
  const ask = async (user: string): Promise<CounterAnswer> => JSON.parse((await get(`${tether.url}/`, agent, { 'x-tenant': user })).body) as CounterAnswer
  const ids = async (): Promise<string[]> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string }[]).map((r) => r.id)
  const users = Array.from({ length: 20 }, (_, i) => `user-${i}`)
  const home = new Map<string, string>()
  for (const u of users) for (let n = 1; n <= 3; n++) home.set(u, (await ask(u)).id)
  const theirs = users.filter((u) => home.get(u) === 'web-0')
  t.ok(theirs.length > 0 && theirs.length < users.length, `both pods have users (${theirs.length} on web-0)`)

  // web-0 deleted and re-created under its name: the new pod has the old one's IP, not ready yet
  const next = await startCounter('web-0')
  pods.set('web-0-old', pods.get('web-0')!)
  pods.set('web-0', next)
  address.target = next.port
  api.put('endpointslices', slice(next, 'web-0-second', false))
  await waitFor(async () => !(await ids()).includes('web-0'), 5_000, 'web-0 gone from the set (not draining for drain_timeout)')
  for (const u of theirs) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved], ['web-1', 4, true, 'from=web-0; reason=dead; epoch=1'], `${u}: moved to web-1 with its state (counter 4), not sent to the new pod`)
  }
  t.equal(replacements(log), 0, 'no replacement: the old pod left')
  // the old pod is gone (not drained): its users' moves count as from a dead upstream
  const metrics = (await request(`${tether.adminUrl}/metrics`)).body
  t.match(metrics, new RegExp(`tether_failovers_total\\{from="web-0",reason="dead"\\} ${theirs.length}\n`), 'counted as reason=dead')
  t.notMatch(metrics, /tether_failovers_total\{from="web-0",reason="drain"\} [1-9]/, 'none as reason=drain')

  api.put('endpointslices', slice(next, 'web-0-second'))
  await waitFor(async () => (await ids()).includes('web-0'), 5_000, 'the new web-0 ready: it joins')
  for (const u of theirs) {
    const a = await ask(u)
    t.same([a.id, a.n, a.rehydrated, a.moved], ['web-0', 5, true, 'from=web-1; reason=rebalance; epoch=2'], `${u}: back on the new web-0 with its state (counter 5)`)
  }
})

t.test('a one-replica StatefulSet re-created at the same address, not ready yet: the old pod is not kept (503 with Retry-After, not the half-started pod); once ready, its users get their state there', async (t) => {
  const pods = new Map<string, Counter>([['web-0', await startCounter('web-0')]])
  t.teardown(async () => { await Promise.all([...pods.values()].map((c) => c.kill())) })
  const address = await podAddress(t, pods.get('web-0')!.port)
  const slice = (uid: string, ready = true) => endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '127.0.0.1', uid, ...(ready ? {} : { ready: false, serving: false }) }], { ports: [{ name: 'http', port: address.port }] })
  const { api, url } = await kubeApi(t)
  api.put('endpointslices', slice('web-0-first'))
  const log = new LogCapture()
  const tether = await startTether(testConfig([], {
    ...RECREATED_POD_CONFIG,
    affinity: { ...RECREATED_POD_CONFIG.affinity, drain_timeout: 60_000 },
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
  }), { logger: createLogger('info', log) })
  t.teardown(() => tether.close(0))
  const agent = userAgent(10)
  t.teardown(() => agent.destroy())
  const ask = (user: string) => get(`${tether.url}/`, agent, { 'x-tenant': user })
  const ids = async (): Promise<string[]> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string }[]).map((r) => r.id)
  for (let n = 1; n <= 3; n++) t.equal((JSON.parse((await ask('user-0')).body) as CounterAnswer).n, n)

  // web-0 deleted and re-created under its name: the new pod has the old one's IP, not ready yet
  const next = await startCounter('web-0')
  pods.set('web-0-old', pods.get('web-0')!)
  pods.set('web-0', next)
  address.target = next.port
  api.put('endpointslices', slice('web-0-second', false))
  await waitFor(async () => (await ids()).length === 0, 5_000, 'the old web-0 gone from the set')
  const refused = await ask('user-0')
  t.same([refused.status, refused.headers['retry-after']], [503, '1'], 'no upstream: 503 with Retry-After, not the half-started pod at that address')

  api.put('endpointslices', slice('web-0-second'))
  await waitFor(async () => (await ids()).includes('web-0'), 5_000, 'the new web-0 ready: it joins')
  const a = JSON.parse((await ask('user-0')).body) as CounterAnswer
  t.same([a.id, a.n, a.rehydrated], ['web-0', 4, true], 'back on web-0 with their state (counter 4)')
})

t.test('a pod listed with several addresses keeps its url while that address is still listed: a reordered or dual-stack listing is no restart', async (t) => {
  const { port, servers } = await samePortPods(t)
  const { api, url } = await kubeApi(t)
  const put = (ips: string[], uid?: string): void => api.put('endpointslices', endpointSlice('web-v4', 'web', [{ pod: 'web-0', ip: ips[0]!, ips, ...(uid === undefined ? {} : { uid }) }], { ports: [{ name: 'http', port }] }))
  put(['127.0.0.2', '127.0.0.3'])
  const log = new LogCapture()
  const tether = await discovering(t, url, log)
  const urlOf = async (): Promise<string | undefined> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; url: string }[]).find((r) => r.id === 'web-0')?.url
  const updates = (): number => log.records.filter((r) => r['msg'] === 'upstreams updated').length
  const applied = async (n: number): Promise<void> => when(onEvent(log, 'record'), () => updates() >= n, 5_000, `${n} set updates`)
  t.equal(await urlOf(), `http://127.0.0.2:${port}`, 'the first address listed')
  // a marker: each step below ends with a change of web-1, so the step's slice was applied once it shows
  let n = updates()
  const step = async (ips: string[], also: number, uid?: string): Promise<void> => {
    put(ips, uid)
    api.put('endpointslices', endpointSlice('web-other', 'web', [{ pod: `web-${also}`, ip: '127.0.0.1' }], { ports: [{ name: 'http', port }] }))
    await applied(++n)
  }
  await step(['127.0.0.3', '127.0.0.2'], 1)
  t.equal(await urlOf(), `http://127.0.0.2:${port}`, 'reordered: web-0 stays at 127.0.0.2')
  // dual stack: the IPv6 slice comes and goes (its family's slice is updated apart)
  api.put('endpointslices', endpointSlice('web-v6', 'web', [{ pod: 'web-0', ip: '::1' }], { ports: [{ name: 'http', port }], addressType: 'IPv6' }))
  await step(['127.0.0.1', '127.0.0.2'], 2)
  t.equal(await urlOf(), `http://127.0.0.2:${port}`, 'an address listed before it and an IPv6 slice: it stays')
  t.equal(replacements(log), 0, 'no restart was seen')
  // a pod's addresses never change: one listed elsewhere is a pod re-created (another uid)
  await step(['127.0.0.3', '127.0.0.1'], 3, 'web-0-second')
  t.equal(await urlOf(), `http://127.0.0.3:${port}`, 'its address gone: the first one listed')
  t.equal(replacements(log), 1, 'and that is a replaced replica')
})

t.test('GET /upstreams shows a discovered pod\'s uid when known and its addresses when more than one', async (t) => {
  const { port, servers } = await samePortPods(t)
  const { api, url } = await kubeApi(t)
  api.put('endpointslices', endpointSlice('web-a', 'web', [
    { pod: 'web-0', ip: '127.0.0.2', ips: ['127.0.0.2', '127.0.0.3'], uid: 'uid-web-0' },
    { pod: 'web-1', ip: '127.0.0.1', uid: '' }, // a targetRef without a uid
  ], { ports: [{ name: 'http', port }] }))
  const tether = await startTether(testConfig([], {
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
  }))
  t.teardown(() => tether.close(0))
  type Row = { id: string; url: string; uid?: string; addresses?: string[] }
  const rows = async (): Promise<Row[]> => JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as Row[]
  await waitFor(async () => (await rows()).length === 2, 5_000, 'both pods listed')
  const [web0, web1] = await rows()
  t.equal(web0?.uid, 'uid-web-0', "web-0's pod uid")
  t.same(web0?.addresses, [`http://127.0.0.2:${port}`, `http://127.0.0.3:${port}`], "web-0's two addresses, its url among them")
  t.notOk(web1 !== undefined && ('uid' in web1 || 'addresses' in web1), 'web-1 (no targetRef uid, one address): neither field')
})

t.test("a pod whose kept address leaves the slices while another of its addresses is still listed with the same uid is the same pod: its url moves, no restart", async (t) => {
  // a dual-stack pod being deleted: its two families' slices are updated one after the other,
  // so for a moment the slices list it at one family's address only (here two slices of one
  // family stand for them); the id moves to that address, but the uid says it is the pod it was
  const { port, servers } = await samePortPods(t)
  const { api, url } = await kubeApi(t)
  const ports = { ports: [{ name: 'http', port }] }
  const put = (name: string, ip: string | null, uid = 'pod-a'): void => api.put('endpointslices', endpointSlice(name, 'web', ip === null ? [] : [{ pod: 'web-0', ip, uid }], ports))
  put('web-a', '127.0.0.2')
  put('web-b', '127.0.0.3')
  const log = new LogCapture()
  const tether = await discovering(t, url, log)
  const urlOf = async (): Promise<string | undefined> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; url: string }[]).find((r) => r.id === 'web-0')?.url
  await waitFor(async () => (await urlOf()) === `http://127.0.0.2:${port}`, 5_000, 'web-0 at the first address listed')
  put('web-a', null)
  await waitFor(async () => (await urlOf()) === `http://127.0.0.3:${port}`, 5_000, 'web-0 at its other address')
  t.equal(replacements(log), 0, 'the same uid: no restart was seen')
  put('web-b', '127.0.0.2', 'pod-b')
  await waitFor(async () => (await urlOf()) === `http://127.0.0.2:${port}`, 5_000, 'web-0 re-created')
  t.equal(replacements(log), 1, 'another uid (and address): a replaced replica')
})

t.test('a uid that disappears for a moment and comes back as another uid at the same address is a replaced replica, once', async (t) => {
  const { port, servers } = await samePortPods(t)
  const { api, url } = await kubeApi(t)
  // uid '': a targetRef without a uid (none)
  const put = (uid: string, also: number): void => {
    api.put('endpointslices', endpointSlice('web-zero', 'web', [{ pod: 'web-0', ip: '127.0.0.2', uid }], { ports: [{ name: 'http', port }] }))
    api.put('endpointslices', endpointSlice('web-other', 'web', [{ pod: `web-${also}`, ip: '127.0.0.1' }], { ports: [{ name: 'http', port }] }))
  }
  put('pod-a', 1)
  const log = new LogCapture()
  const tether = await discovering(t, url, log)
  const ids = async (): Promise<string[]> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string }[]).map((r) => r.id)
  const replaced = (): number => replacements(log)
  // a marker: each step ends with another web-<n>, so the step's slices were applied once it shows
  put('', 2)
  await waitFor(async () => (await ids()).includes('web-2'), 5_000, 'the listing without a uid')
  t.equal(replaced(), 0, 'a uid disappearing is no restart')
  put('pod-b', 3)
  await waitFor(async () => (await ids()).includes('web-3'), 5_000, 'the listing with another uid')
  t.equal(replaced(), 1, 'another uid than the last one known: a replaced replica')
  put('pod-b', 4)
  await waitFor(async () => (await ids()).includes('web-4'), 5_000, 'the same listing again')
  t.equal(replaced(), 1, 'once')
})

/**
 * Echo pods on the loopback addresses, one port, behind a fake API server (closed when `t`
 * ends): `zero(ips)` lists web-0 at `ips` in the slice web-zero (none: not listed), `other(n)`
 * lists web-<n> at `otherIp` in the slice web-other, a marker: once its change shows, the
 * slices put before it were applied. Starts with web-0 at 127.0.0.2 and web-1.
 */
async function zeroAndOther(t: Test, otherIp: string) {
  const { port, servers } = await samePortPods(t)
  const { api, url } = await kubeApi(t)
  const ports = { ports: [{ name: 'http', port }] }
  const zero = (ips: string[]): void => api.put('endpointslices', endpointSlice('web-zero', 'web', ips.length === 0 ? [] : [{ pod: 'web-0', ip: ips[0]!, ips }], ports))
  const other = (n: number): void => api.put('endpointslices', endpointSlice('web-other', 'web', [{ pod: `web-${n}`, ip: otherIp }], ports))
  zero(['127.0.0.2'])
  other(1)
  return { port, servers, url, zero, other }
}

t.test('a pod dropped from the slices for a moment (still draining in the set) and listed again keeps its url while that address is listed: no restart', async (t) => {
  const { port, url, zero, other } = await zeroAndOther(t, '127.0.0.3')
  const log = new LogCapture()
  const tether = await discovering(t, url, log, { affinity: { drain_timeout: 60_000 } })
  const rows = async (): Promise<{ id: string; url: string }[]> => JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; url: string }[]
  const urlOf = async (): Promise<string | undefined> => (await rows()).find((r) => r.id === 'web-0')?.url
  const updates = (): number => log.records.filter((r) => r['msg'] === 'upstreams updated').length
  let n = updates()
  // each step ends with a change of the other pod: the step's slice was applied once that shows
  const step = async (ips: string[], also: number): Promise<void> => {
    zero(ips)
    other(also)
    await when(onEvent(log, 'record'), () => updates() > n, 5_000, 'the step applied')
    n = updates()
  }
  const kept = `http://127.0.0.2:${port}`
  t.equal(await urlOf(), kept)
  await step(['127.0.0.1', '127.0.0.2'], 2)
  t.equal(await urlOf(), kept, 'an address sorting first listed too: web-0 stays at 127.0.0.2')
  await step([], 4)
  t.equal(await urlOf(), kept, 'dropped from the slices: still in the set (draining), at 127.0.0.2')
  await step(['127.0.0.1', '127.0.0.2'], 5)
  t.equal(await urlOf(), kept, 'listed again with 127.0.0.2 among its addresses: it stays there')
  t.equal(replacements(log), 0, 'no restart was seen')
})

t.test("replicas that kept different addresses of one pod (which they saw first) apply each other's down about it (health.shared: redis)", async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const { port, servers, url, zero, other } = await zeroAndOther(t, '127.0.0.1')
  const config = testConfig([], {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    health: { shared: 'redis' },
    state: { store: 'redis', redis: { url: redis.url, key_prefix: 'kept:' } },
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
  })
  const one = await startTether(config, { logger: createLogger('silent') })
  t.teardown(() => one.close(0))
  // the pod gets a second address, sorting first; #1 keeps the one it had (marker: web-1 becomes web-2)
  zero(['127.0.0.3', '127.0.0.2'])
  other(2)
  await when((l) => one.health.onTransition(l), () => one.health.state('web-2') !== undefined, 5_000, 'the new listing on #1')
  const two = await startTether(config, { logger: createLogger('silent') })
  t.teardown(() => two.close(0))
  const urlOn = async (tether: typeof one): Promise<string | undefined> => (JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as { id: string; url: string }[]).find((r) => r.id === 'web-0')?.url
  t.equal(await urlOn(one), `http://127.0.0.2:${port}`, '#1 kept the address it saw first')
  t.equal(await urlOn(two), `http://127.0.0.3:${port}`, '#2, started since, has the first one listed')
  // both subscribers are up once a drain reaches the other side (nothing announces a subscription)
  await waitFor(async () => {
    await request(`${one.adminUrl}/upstreams/web-2/drain`, { method: 'POST' })
    return two.health.state('web-2') === 'draining'
  }, 10_000, 'a drain to reach #2')
  await request(`${one.adminUrl}/upstreams/web-2/undrain`, { method: 'POST' })
  await healthState(two.health, 'web-2', 'healthy', 5_000)

  // #1 finds web-0 down at its address (refused); #2 never sends it a request
  await closeServer(servers[LOOPBACK_ADDRESSES.indexOf('127.0.0.2')]!)
  for (let i = 0; i < 40 && one.health.ready('web-0'); i++) await request(one.url, { headers: { 'x-tenant': `t${i}` } })
  t.equal(one.health.state('web-0'), 'ejected', '#1 ejected web-0 after a refused connection')
  await healthState(two.health, 'web-0', 'ejected', 5_000)
  t.pass('#2 ejected web-0 too: the address #1 found down is listed for web-0 there')
  t.equal(await urlOn(two), `http://127.0.0.3:${port}`, 'at the address #2 kept')
  t.equal(two.health.state('web-2'), 'healthy', 'nothing else changed on #2')
})

t.test("requests in flight on a replaced pod's old address that fail there (the old pod is gone) do not count against the new pod", async (t) => {
  // the old web-0 holds the requests it gets, until the test destroys their connections
  const old = http.createServer()
  const sockets: Socket[] = []
  const held = new Promise<void>((resolve) => old.on('request', (req: http.IncomingMessage) => {
    sockets.push(req.socket)
    if (sockets.length === 3) resolve()
  }))
  await new Promise<void>((resolve) => old.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { old.closeAllConnections(); old.close(() => resolve()) }))
  const next = await startPod('web-0')
  t.teardown(() => stopPod(next))
  const { api, url } = await kubeApi(t)
  const slice = (port: number) => endpointSlice('web-0', 'web', [{ pod: 'web-0', ip: '127.0.0.1', uid: `web-0-${port}` }], { ports: [{ name: 'http', port }] })
  api.put('endpointslices', slice((old.address() as AddressInfo).port))
  const log = new LogCapture()
  const tether = await discovering(t, url, log, { health: { passive: { consecutive_failures: 3, max_ejection_percent: 100 } } })
  const answers = Promise.all([1, 2, 3].map(() => request(`${tether.url}/slow`)))
  await within(held, 5_000, 'three requests to reach the old web-0')
  api.put('endpointslices', slice(next.port)) // re-created at a new address
  await when(onEvent(log, 'record'), () => log.records.some((r) => r['msg'] === REPLACED), 5_000, 'web-0 to be replaced')
  for (const s of sockets) s.destroy() // the old pod is gone
  t.same((await answers).map((a) => a.status), [502, 502, 502], 'the requests on the old pod failed')
  const web0 = tether.health.snapshot().find((e) => e.id === 'web-0')
  t.equal(web0?.state, 'healthy', 'the new web-0 is not ejected')
  t.equal(web0?.passiveFailures, 0, 'nor counted any failure')
  t.equal((await request(tether.url)).body, 'web-0', 'it serves')
})

t.test('a user rehydrated on a re-created pod that is re-created again while its state is posted gets the state where the request goes', async (t) => {
  interface Seen { readonly method: string }
  // a pod that answers with its name and a state to checkpoint; it holds the hook's POSTs while `holding`
  const statefulPod = async (name: string) => {
    const seen: Seen[] = []
    const held: http.ServerResponse[] = []
    const p = { name, seen, held, holding: false, port: 0, server: http.createServer((req, res) => {
      seen.push({ method: req.method! })
      req.resume()
      if (req.method === 'POST') {
        if (p.holding) held.push(res)
        else { res.statusCode = 204; res.end() }
        return
      }
      res.setHeader('x-tether-state', `state-of-${name}`)
      res.end(name)
    }) }
    await new Promise<void>((resolve) => p.server.listen(0, '127.0.0.1', resolve))
    p.port = (p.server.address() as AddressInfo).port
    t.teardown(() => new Promise<void>((resolve) => { p.server.closeAllConnections(); p.server.close(() => resolve()) }))
    return p
  }
  const [a, b, c] = [await statefulPod('a'), await statefulPod('b'), await statefulPod('c')]
  const { api, url } = await kubeApi(t)
  const at = (port: number) => endpointSlice('web-0', 'web', [{ pod: 'web-0', ip: '127.0.0.1', uid: `web-0-${port}` }], { ports: [{ name: 'http', port }] })
  api.put('endpointslices', at(a.port))
  const log = new LogCapture()
  const clock = new FakeClock()
  const tether = await startTether(testConfig([], {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    state: { store: 'memory', rehydrate: 'hook' },
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
    log: { level: 'info', access: false },
  }), { logger: createLogger('info', log), clock })
  t.teardown(() => tether.close(0))
  const user = { 'x-tenant': 'u1' }
  await waitFor(async () => (await request(tether.url, { headers: user })).body === 'a', 5_000, 'the user to be served by web-0 at a')
  const replaced = (n: number) => when(onEvent(log, 'record'), () => replacements(log) >= n, 5_000, `web-0 replaced ${n} time(s)`)
  clock.advance(60_000)
  b.holding = true
  api.put('endpointslices', at(b.port)) // re-created at b: the user's state is posted there first
  await replaced(1)
  const answer = request(tether.url, { headers: user })
  await waitFor(() => b.held.length > 0, 5_000, 'the state to be posted to web-0 at b')
  clock.advance(60_000)
  api.put('endpointslices', at(c.port)) // re-created again while b holds the state
  await replaced(2)
  for (const res of b.held) { res.statusCode = 204; res.end() }
  t.equal((await answer).body, 'c', 'the request is answered by web-0 at c')
  t.same(c.seen.map((s) => s.method), ['POST', 'GET'], 'which got the state before the request')
})
