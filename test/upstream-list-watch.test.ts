// The list/watch loop (src/upstream/list-watch.ts) against API servers on 127.0.0.1 that
// misbehave in ways the discovery tests do not reach: an ERROR event in the same chunk as the
// events before it, watches that open (200) and then fail, a watch that is never answered, a
// server that answers every watch 410 Gone. A scripted server answers each request as the test
// says; the loop runs on real timers with tiny back-offs (tests wait on hooks with a deadline;
// nothing sleeps), except the 410 test, which reads the back-off from fake timers.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { KubernetesApi, retryAfterOf, type KubernetesApiError } from '../src/upstream/kubernetes-api.js'
import { ListWatch, MAX_RETRY_AFTER, type ListWatchOptions } from '../src/upstream/list-watch.js'
import type { EndpointSlice } from '../src/upstream/endpoint-slices.js'
import { FakeKubeApi, endpointSlice } from './fixtures/kube-api-server.js'
import { FakeTimers } from './fixtures/timers.js'
import { waitFor } from './fixtures/wait.js'

const PATH = '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices'
const FAST = { backoff: { base: 5, max: 20 }, requestTimeout: 2_000, random: () => 1 }

/** One request the scripted server saw: a list or the n-th watch (from 1), with its query. */
interface Seen { readonly watch: number; readonly query: Readonly<Record<string, string>> }

/**
 * An API server on 127.0.0.1 that answers lists with `items` at version `version` and hands
 * each watch to `watch(res, n)` (n counts watches from 1). Closed at teardown.
 * Example: `await scripted(t, [slice], '100', (res) => holdOpen(res))`.
 */
async function scripted(t: Test, items: object[], version: string, watch: (res: http.ServerResponse, n: number) => void): Promise<{ api: KubernetesApi; seen: Seen[] }> {
  const seen: Seen[] = []
  let watches = 0
  const server = http.createServer((req, res) => {
    const query = Object.fromEntries(new URL(req.url ?? '/', 'http://x').searchParams)
    if (query['watch'] !== '1') {
      seen.push({ watch: 0, query })
      res.writeHead(200, { 'content-type': 'application/json' })
      return void res.end(JSON.stringify({ kind: 'EndpointSliceList', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: version }, items }))
    }
    seen.push({ watch: ++watches, query })
    watch(res, watches)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => {
    server.closeAllConnections()
    server.close(() => resolve())
  }))
  const { port } = server.address() as AddressInfo
  return { api: new KubernetesApi({ server: `http://127.0.0.1:${port}`, ca: null, cert: null, key: null, insecure: false, token: () => null }), seen }
}

/** Starts a watch answer and keeps it open without a byte more (a quiet Service). */
function holdOpen(res: http.ServerResponse): void {
  res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' })
  res.flushHeaders()
}

/** Watch lines as the API writes them, all in one write (so the client reads them as one chunk). */
function lines(...events: object[]): string {
  return events.map((e) => `${JSON.stringify(e)}\n`).join('')
}

/** A slice as a watch event carries it, at `version`. */
function sliceAt(name: string, version: string, pod: string, ip: string): object {
  const s = endpointSlice(name, 'web', [{ pod, ip }]) as { metadata: Record<string, unknown> }
  return { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', ...s, metadata: { ...s.metadata, resourceVersion: version } }
}

/** Records the loop's hooks: the object names at each sync, the errors, the recoveries. */
class Hooks {
  readonly syncs: string[][] = []
  readonly errors: { code: string; message: string; n: number }[] = []
  recovered = 0
  readonly hooks = {
    onSync: (objects: ReadonlyMap<string, EndpointSlice>) => void this.syncs.push([...objects.keys()].sort()),
    onError: (e: KubernetesApiError, n: number) => void this.errors.push({ code: e.code, message: e.message, n }),
    onRecover: () => void this.recovered++,
  }
}

function loop(t: Test, api: KubernetesApi, hooks: Hooks, options: Partial<ListWatchOptions> = {}): ListWatch<EndpointSlice> {
  const lw = new ListWatch<EndpointSlice>(api, { path: PATH, selector: {}, ...FAST, ...options }, hooks.hooks)
  t.teardown(() => lw.stop())
  return lw
}

t.test('events before an ERROR event in the same chunk are synced, and the watch resumes after them', async (t) => {
  const { api, seen } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    holdOpen(res)
    if (n > 1) return
    res.end(lines(
      { type: 'ADDED', object: sliceAt('web-b', '101', 'web-1', '10.0.0.6') },
      { type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'internal error', reason: 'InternalError', code: 500 } },
    ))
  })
  const hooks = new Hooks()
  await loop(t, api, hooks).start()
  await waitFor(() => hooks.errors.length === 1, 5_000, 'the ERROR event')
  t.match(hooks.errors[0], { code: 'EHTTP', message: /500 internal error/ })
  t.same(hooks.syncs, [['web-a'], ['web-a', 'web-b']], 'web-b, added before the ERROR, reached onSync')
  await waitFor(() => seen.some((s) => s.watch === 2), 5_000, 'the watch reopened')
  t.equal(seen.find((s) => s.watch === 2)?.query['resourceVersion'], '101', 'resumed after the synced event: nothing is missed or replayed')
})

t.test('a watch that opens and then fails is a failure: the count (so the back-off) keeps growing, nothing recovers until a watch works', async (t) => {
  const error500 = { type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'etcd is slow', reason: 'InternalError', code: 500 } }
  const { api } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    holdOpen(res)
    if (n === 1 || n === 3) res.end('this is not JSON\n')
    else if (n === 2) res.end(lines(error500))
    else res.write(lines({ type: 'BOOKMARK', object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: '105' } } }))
  })
  const hooks = new Hooks()
  const lw = loop(t, api, hooks)
  await lw.start()
  await waitFor(() => hooks.errors.length === 3, 5_000, 'three failed watches')
  t.same(hooks.errors.map((e) => [e.code, e.n]), [['EBADRESPONSE', 1], ['EHTTP', 2], ['EBADRESPONSE', 3]], 'counted as consecutive failures (the 200 of each did not reset the count)')
  t.equal(hooks.recovered, 0, 'no recovery between them')
  t.equal(lw.healthy, false)
  await waitFor(() => hooks.recovered === 1, 5_000, 'the watch that works')
  t.equal(hooks.recovered, 1, 'one recovery, on the bookmark: none for the watches that opened and failed')
  t.equal(lw.failures, 0)
  t.equal(lw.healthy, true)
})

t.test('after failures, a watch that opens and stays quiet counts as working after requestTimeout', async (t) => {
  const { api } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    holdOpen(res)
    if (n === 1) res.end(lines({ type: 'ERROR', object: { kind: 'Status', code: 500, message: 'etcd is slow' } }))
  })
  const hooks = new Hooks()
  const lw = loop(t, api, hooks, { requestTimeout: 200 })
  await lw.start()
  await waitFor(() => hooks.errors.length === 1, 5_000, 'the failed watch')
  t.equal(lw.healthy, false)
  await waitFor(() => hooks.recovered === 1, 5_000, 'recovery on the quiet watch')
  t.equal(lw.failures, 0)
  t.equal(hooks.errors.length, 1, 'the quiet watch is not an error')
})

t.test('a watch request that gets no answer (no status line) within requestTimeout is an error, and the watch is asked again', async (t) => {
  const { api, seen } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    if (n > 1) holdOpen(res) // the first is never answered: a stuck API server or proxy
  })
  const hooks = new Hooks()
  const lw = loop(t, api, hooks, { requestTimeout: 200 })
  await lw.start()
  await waitFor(() => hooks.errors.length === 1, 5_000, 'the deadline of the unanswered watch (the idle timeout is 330 s)')
  t.match(hooks.errors[0], { code: 'ETIMEDOUT', message: `watch ${PATH}: no answer within 200 ms` })
  await waitFor(() => hooks.recovered === 1, 5_000, 'the next watch, answered')
  t.same(seen.map((s) => s.watch), [0, 1, 2], 'asked again from the same version, not listed again')
  t.equal(seen[2]?.query['resourceVersion'], '100')
})

t.test('410 Gone on every watch, even right after a list: the first three are routine, then each is reported and backed off until a watch works (fake timers)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  api.watchStatus = 410 // an API server whose watch cache refuses the versions it lists
  const timers = new FakeTimers()
  const hooks = new Hooks()
  const lw = new ListWatch<EndpointSlice>(new KubernetesApi({ server: url, ca: null, cert: null, key: null, insecure: false, token: () => null }),
    { path: PATH, selector: {}, requestTimeout: 10_000, idleTimeout: 60_000, backoff: { base: 100, max: 1_000 }, random: () => 1 }, hooks.hooks, timers)
  t.teardown(() => lw.stop())
  await lw.start()
  const sleeps: number[] = []
  for (let i = 0; i < 7; i++) {
    await timers.settled((p) => p.some((x) => x.delay < 10_000), 5_000, `pause ${i + 1}`)
    const sleep = timers.pending().find((x) => x.delay < 10_000)!
    sleeps.push(sleep.delay)
    if (i < 6) timers.advance(sleep.delay) // the last pause (after the 8th 410) is left pending
  }
  t.same(sleeps, [100, 100, 100, 200, 400, 800, 1_000], 'the 2nd and 3rd 410 wait backoff.base; from the 4th the back-off doubles up to max')
  t.same(hooks.errors.map((e) => [e.code, e.n]), [['EGONE', 1], ['EGONE', 2], ['EGONE', 3], ['EGONE', 4], ['EGONE', 5]], 'the 4th..8th reported, counted although a list succeeded before each')
  t.match(hooks.errors[0]!.message, `watch ${PATH}: 410 Gone: watch failed with 410 (410 Gone 4 times in a row, even right after a list)`)
  t.equal(lw.healthy, false, 'unhealthy while it lasts (discovery_up 0)')
  t.equal(hooks.recovered, 0)
  t.equal(api.count('endpointslices', false), 8, 'a list before each watch')

  api.watchStatus = null
  timers.advance(timers.pending().find((x) => x.delay < 10_000)!.delay)
  await waitFor(() => api.openWatches === 1, 5_000, 'a watch that opens')
  api.put('endpointslices', endpointSlice('web-b', 'web', [{ pod: 'web-1', ip: '10.0.0.6' }]))
  await waitFor(() => hooks.recovered === 1, 5_000, 'recovery on its first event')
  t.equal(lw.failures, 0)
  t.same(hooks.syncs.at(-1), ['web-a', 'web-b'])
})

t.test('a watch refused every time (403): the first failed watch resumes, each later one lists again, with the back-off; requests per minute stay low (fake timers)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  api.watchStatus = 403 // RBAC grants list but not watch
  const timers = new FakeTimers()
  const hooks = new Hooks()
  // the default back-off (0.5 s doubling to 30 s), with the shortest jitter (0.5x): the most requests it can make
  const lw = new ListWatch<EndpointSlice>(new KubernetesApi({ server: url, ca: null, cert: null, key: null, insecure: false, token: () => null }),
    { path: PATH, selector: {}, random: () => 0 }, hooks.hooks, timers, timers.clock)
  t.teardown(() => lw.stop())
  await lw.start()
  const start = timers.clock.now()
  const sleeps: number[] = []
  /** Requests of each simulated minute: lists and watches (the fake clock stands still during I/O). */
  const perMinute: { lists: number; watches: number }[] = []
  let seen = { lists: 0, watches: 0 }
  let failures = 0
  for (;;) {
    // each attempt (list and watch, or watch) ends in a failed watch, then the back-off alone is pending
    await waitFor(() => hooks.errors.length > failures, 5_000, `failure ${failures + 1}`)
    failures = hooks.errors.length
    const now = { lists: api.count('endpointslices', false), watches: api.count('endpointslices', true) }
    const m = (perMinute[Math.floor((timers.clock.now() - start) / 60_000)] ??= { lists: 0, watches: 0 })
    m.lists += now.lists - seen.lists
    m.watches += now.watches - seen.watches
    seen = now
    if (timers.clock.now() - start >= 10 * 60_000) break
    await timers.settled((p) => p.length === 1 && p[0]!.delay !== 10_000 && p[0]!.delay !== 330_000, 5_000, 'the back-off alone pending')
    const sleep = timers.pending()[0]!
    sleeps.push(sleep.delay)
    timers.advance(sleep.delay)
  }
  t.same(sleeps.slice(0, 8), [250, 500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000], 'the usual back-off between attempts')
  t.equal(api.requests.slice(0, 8).map((r) => (r.watch ? 'W' : 'L')).join(''), 'LWWLWLWL', 'the first failed watch resumes from its version; each later one lists again first')
  t.equal(lw.healthy, false, 'degraded all along: a list between failed watches is no recovery')
  t.equal(hooks.recovered, 0)
  t.same(hooks.errors.map((e) => e.n), hooks.errors.map((_, i) => i + 1), 'failures keep counting (so the back-off keeps growing)')
  t.ok(hooks.syncs.length >= 30, 'each list synced the objects')
  // steady state: one list and one watch every 15-30 s (15 s here, the shortest jitter)
  for (const m of perMinute.slice(2)) t.ok(m.lists <= 4 && m.watches <= 4, `at most 4 lists and 4 watches a minute (${m.lists} and ${m.watches})`)
  t.comment(`requests per simulated minute (lists+watches): ${perMinute.map((m) => `${m.lists}+${m.watches}`).join(', ')}`)
})

t.test('a 429 or 5xx with Retry-After waits what the server asks (seconds or an HTTP date), at most MAX_RETRY_AFTER, never less than the back-off (fake timers)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  api.watchStatus = 429 // API Priority and Fairness rejecting the watch
  api.retryAfter = '3'
  const timers = new FakeTimers()
  const hooks = new Hooks()
  const client = new KubernetesApi({ server: url, ca: null, cert: null, key: null, insecure: false, token: () => null }, timers.clock)
  const lw = new ListWatch<EndpointSlice>(client,
    { path: PATH, selector: {}, requestTimeout: 7_777, idleTimeout: 99_999, backoff: { base: 100, max: 1_000 }, random: () => 1 }, hooks.hooks, timers)
  t.teardown(() => lw.stop())
  await lw.start()
  const pause = async (n: number): Promise<number> => {
    await waitFor(() => hooks.errors.length === n, 5_000, `failure ${n}`)
    await timers.settled((p) => p.some((x) => x.delay !== 7_777 && x.delay !== 99_999), 5_000, `pause ${n}`)
    return timers.pending().find((x) => x.delay !== 7_777 && x.delay !== 99_999)!.delay
  }
  const sleeps: number[] = []
  sleeps.push(await pause(1)) // Retry-After: 3 (the back-off would be 100)
  api.retryAfter = new Date(timers.clock.now() + 3_000 + 5_000).toUTCString() // an HTTP date, 5 s after the next request
  timers.advance(3_000)
  sleeps.push(await pause(2))
  api.retryAfter = '3600'
  timers.advance(5_000)
  sleeps.push(await pause(3))
  api.retryAfter = '0'
  api.watchStatus = 503
  timers.advance(MAX_RETRY_AFTER)
  sleeps.push(await pause(4))
  t.same(sleeps, [3_000, 5_000, MAX_RETRY_AFTER, 800], 'Retry-After in seconds, as a date, capped; the back-off (800 ms at the 4th failure) when longer')
  t.same(hooks.errors.map((e) => e.code), ['EHTTP', 'EHTTP', 'EHTTP', 'EHTTP'])

  t.equal(retryAfterOf(404, '10', null, 0), null, 'only 429 and 5xx ask to wait')
  t.equal(retryAfterOf(503, 'soon', null, 0), null, 'an unreadable value is ignored')
  t.equal(retryAfterOf(503, new Date(0).toUTCString(), null, 5_000), 0, 'a date past is no wait')
  t.equal(retryAfterOf(429, undefined, { kind: 'Status', details: { retryAfterSeconds: 2 } }, 0), 2_000, "a Status's details.retryAfterSeconds")
})

t.test("an ERROR event or a status body with details.retryAfterSeconds waits that long (fake timers)", async (t) => {
  const tooMany = { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'too many requests', reason: 'TooManyRequests', details: { retryAfterSeconds: 2 }, code: 429 }
  const { api } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    if (n === 2) {
      res.writeHead(503, { 'content-type': 'application/json' })
      return void res.end(JSON.stringify({ ...tooMany, code: 503, reason: 'ServiceUnavailable', message: 'shutting down', details: { retryAfterSeconds: 4 } }))
    }
    holdOpen(res)
    if (n === 1) res.end(lines({ type: 'ERROR', object: tooMany }))
  })
  const timers = new FakeTimers()
  const hooks = new Hooks()
  const lw = new ListWatch<EndpointSlice>(api, { path: PATH, selector: {}, requestTimeout: 7_777, idleTimeout: 99_999, backoff: { base: 100, max: 1_000 }, random: () => 1 }, hooks.hooks, timers)
  t.teardown(() => lw.stop())
  await lw.start()
  const sleeps: number[] = []
  for (let i = 1; i <= 2; i++) {
    await waitFor(() => hooks.errors.length === i, 5_000, `failure ${i}`)
    await timers.settled((p) => p.some((x) => x.delay !== 7_777 && x.delay !== 99_999), 5_000, `pause ${i}`)
    const sleep = timers.pending().find((x) => x.delay !== 7_777 && x.delay !== 99_999)!
    sleeps.push(sleep.delay)
    timers.advance(sleep.delay)
  }
  t.same(sleeps, [2_000, 4_000])
  t.same(hooks.errors.map((e) => e.message), [`watch ${PATH}: 429 too many requests`, `watch ${PATH}: 503 Service Unavailable: shutting down`])
})

t.test('a clock stepped back while a watch is open: the next one waits watchGap at most', async (t) => {
  const bookmark = (rv: string): object => ({ type: 'BOOKMARK', object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: rv } } })
  const timers = new FakeTimers()
  const { api, seen } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    holdOpen(res)
    if (n === 1) {
      timers.clock.set(timers.clock.now() - 3_600_000) // NTP steps the clock back an hour
      res.end(lines(bookmark('101')))
    }
  })
  const hooks = new Hooks()
  const lw = new ListWatch<EndpointSlice>(api, { path: PATH, selector: {}, requestTimeout: 7_777, idleTimeout: 99_999, backoff: { base: 100, max: 1_000 }, watchGap: 1_000, random: () => 1 }, hooks.hooks, timers, timers.clock)
  t.teardown(() => lw.stop())
  await lw.start()
  await timers.scheduled(1_000, 5_000) // not 3,601,000 ms
  timers.advance(1_000)
  await waitFor(() => seen.filter((s) => s.watch > 0).length === 2, 5_000, 'the second watch')
})

t.test('watches cut or ended right after one event reopen no sooner than watchGap after the last opened; a watch that lasted reopens at once (fake timers)', async (t) => {
  const bookmark = (rv: string): object => ({ type: 'BOOKMARK', object: { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', metadata: { resourceVersion: rv } } })
  let third: http.ServerResponse | null = null
  const { api, seen } = await scripted(t, [sliceAt('web-a', '100', 'web-0', '10.0.0.5')], '100', (res, n) => {
    holdOpen(res)
    if (n === 1) res.end(lines(bookmark('101'))) // a proxy that ends every watch after one line
    else if (n === 2) res.write(lines(bookmark('102')), () => setImmediate(() => res.socket?.destroy())) // or cuts it
    else if (n === 3) { res.write(lines(bookmark('103'))); third = res }
  })
  const timers = new FakeTimers()
  const hooks = new Hooks()
  const lw = new ListWatch<EndpointSlice>(api, { path: PATH, selector: {}, requestTimeout: 7_777, idleTimeout: 99_999, backoff: { base: 100, max: 1_000 }, watchGap: 1_000, random: () => 1 }, hooks.hooks, timers, timers.clock)
  t.teardown(() => lw.stop())
  await lw.start()
  const watches = (): number => seen.filter((s) => s.watch > 0).length
  await timers.scheduled(1_000)
  t.equal(watches(), 1, 'the ended watch is not reopened at once')
  timers.advance(1_000)
  await waitFor(() => watches() === 2, 5_000, 'the second watch')
  await timers.scheduled(1_000)
  t.equal(watches(), 2, 'nor is the cut one')
  timers.advance(1_000)
  await waitFor(() => third !== null, 5_000, 'the third watch')
  t.equal(seen[3]?.query['resourceVersion'], '102', 'each resumed from its bookmark')
  timers.advance(1_500) // the third lasts 1.5 s, then the server ends it
  third!.end()
  await waitFor(() => watches() === 4, 5_000, 'the fourth watch, at once: no timer advanced')
  t.same(hooks.errors, [], 'none of it is an error')
})

/** A ListWatch on fake timers against `api` (requestTimeout 10 s: no recovery by a watch staying open unless the test advances it). */
function fakeTimed(t: Test, url: string, hooks: Hooks): { lw: ListWatch<EndpointSlice>; timers: FakeTimers; next(what: string): Promise<void>; nextUntil(done: () => boolean): Promise<void> } {
  const timers = new FakeTimers()
  const lw = new ListWatch<EndpointSlice>(new KubernetesApi({ server: url, ca: null, cert: null, key: null, insecure: false, token: () => null }),
    { path: PATH, selector: {}, requestTimeout: 10_000, idleTimeout: 60_000, backoff: { base: 100, max: 1_000 }, random: () => 1 }, hooks.hooks, timers, timers.clock)
  t.teardown(() => lw.stop())
  /** Waits for the loop to pause (a back-off or the gap between watches: the only timer under 10 s) and ends the pause. */
  const next = async (what: string): Promise<void> => {
    await timers.settled((p) => p.some((x) => x.delay < 10_000), 5_000, what)
    timers.advance(timers.pending().find((x) => x.delay < 10_000)!.delay)
  }
  /** Ends each pause of the loop until `done()` holds during one (the loop is then paused). */
  const nextUntil = async (done: () => boolean): Promise<void> => {
    for (let i = 1; ; i++) {
      await timers.settled((p) => p.some((x) => x.delay < 10_000), 5_000, `pause ${i}`)
      if (done()) return
      timers.advance(timers.pending().find((x) => x.delay < 10_000)!.delay)
    }
  }
  return { lw, timers, next, nextUntil }
}

t.test('the API refusing connections, then back: recovery as soon as a list answers, not a quiet watch later (fake timers: requestTimeout never runs out)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  const hooks = new Hooks()
  const { lw, next, nextUntil } = fakeTimed(t, url, hooks)
  await lw.start()
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch')
  await api.close() // the API server goes away: the open watch is cut, every request refused
  await nextUntil(() => hooks.errors.filter((e) => e.message.startsWith('GET ')).length === 2)
  t.equal(lw.healthy, false)
  t.ok(hooks.errors.every((e) => e.code === 'ECONNREFUSED'), 'refused watches, then refused lists')
  api.put('endpointslices', endpointSlice('web-b', 'web', [{ pod: 'web-1', ip: '10.0.0.6' }])) // changed meanwhile
  await api.start()
  await next('the list after the back-off')
  await waitFor(() => hooks.recovered === 1, 5_000, 'recovery on the list that answered')
  t.equal(lw.healthy, true)
  t.equal(lw.failures, 0, 'the back-off starts over')
  t.same(hooks.syncs.at(-1), ['web-a', 'web-b'], 'the list brought the change')
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch from the list')
  t.equal(hooks.recovered, 1, 'told once')
})

t.test('a watch refused (503) once, then answered 200: recovery when it opens, before any event (fake timers: requestTimeout never runs out)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  api.watchStatus = 503 // an API server restarting behind its load balancer
  const hooks = new Hooks()
  const { lw, next } = fakeTimed(t, url, hooks)
  await lw.start()
  await waitFor(() => hooks.errors.length === 1, 5_000, 'the refused watch')
  t.match(hooks.errors[0], { code: 'EHTTP', n: 1 })
  t.equal(lw.healthy, false)
  api.watchStatus = null
  await next('the back-off')
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch, answered')
  await waitFor(() => hooks.recovered === 1, 5_000, 'recovery on the 200, with no event and requestTimeout not run out')
  t.equal(lw.healthy, true)
  t.equal(lw.failures, 0)
  t.same(api.requests.map((r) => (r.watch ? 'W' : 'L')).join(''), 'LWW', 'the watch resumed: no list')
})

t.test('the API back after an outage, but every watch cut once open (a proxy): at most one recovery (the list that answered), then degraded on every cycle, the back-off growing (fake timers)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  const hooks = new Hooks()
  const { lw, next, nextUntil } = fakeTimed(t, url, hooks)
  await lw.start()
  await waitFor(() => api.openWatches === 1, 5_000, 'the watch')
  await api.close()
  await nextUntil(() => hooks.errors.filter((e) => e.message.startsWith('GET ')).length === 2)
  api.watchFault = 'cut'
  await api.start()
  const before = hooks.errors.length
  await nextUntil(() => hooks.errors.length === before + 8)
  const after = hooks.errors.slice(before)
  t.ok(after.every((e) => e.code === 'ESHORTWATCH'), `each cut watch is a failure: ${after.map((e) => e.code + ' ' + e.message).join('; ')}`)
  t.ok(hooks.recovered <= 1, `at most one recovery (${hooks.recovered}), none while watches keep being cut`)
  t.same(after.slice(-6).map((e) => e.n), after.slice(-6).map((e) => after.at(-6)!.n + after.slice(-6).indexOf(e)), 'failures keep counting (the back-off grows)')
  t.equal(lw.healthy, false, 'degraded')
  t.ok(api.count('endpointslices', false) >= 8, 'listed again between cut watches (the set follows the server)')
})

t.test('a watch opened and failed in the streak: the next watch that opens is no recovery until it works (events or requestTimeout)', async (t) => {
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-a', 'web', [{ pod: 'web-0', ip: '10.0.0.5' }]))
  api.watchFault = 'cut'
  const hooks = new Hooks()
  const { lw, timers, next, nextUntil } = fakeTimed(t, url, hooks)
  await lw.start()
  await nextUntil(() => hooks.errors.length === 2)
  api.watchFault = null
  await next('the back-off')
  await waitFor(() => api.openWatches === 1, 5_000, 'a watch that stays open')
  await timers.scheduled(10_000)
  t.equal(hooks.recovered, 0, 'not on the 200: watches that opened were cut just before')
  t.equal(lw.healthy, false)
  timers.advance(10_000)
  await waitFor(() => hooks.recovered === 1, 5_000, 'recovery once open requestTimeout')
})
