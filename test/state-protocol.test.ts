// The state protocol end to end with the in-memory store: checkpoints are stored and stripped,
// a moved user's newest checkpoint is delivered (header or hook), versions never go back,
// oversize checkpoints are refused without failing the request, and clients cannot inject.
import t, { type Test } from 'tap'
import http from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { CookieJar, handshake } from './fixtures/users.js'
import { LogCapture } from './fixtures/log-capture.js'
import { waitFor, within } from './fixtures/wait.js'
import { metric } from './fixtures/drill.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'
import { FakeKubeApi, endpointSlice, kubeconfigFor } from './fixtures/kube-api-server.js'

/** An app replica that counts per user and speaks the protocol (state = the count). */
async function counterApp(id: string, opts: { version?: boolean; hookPath?: string; stateBytes?: number } = {}): Promise<Upstream & { heads: http.IncomingHttpHeaders[] }> {
  const counts = new Map<string, number>()
  const heads: http.IncomingHttpHeaders[] = []
  const up = await startUpstream(id, (req, res) => {
    const user = /user=(\w+)/.exec(req.headers.cookie ?? '')?.[1] ?? 'anon'
    if (opts.hookPath !== undefined && req.url === opts.hookPath) {
      let body = ''
      req.on('data', (c) => (body += c))
      req.on('end', () => {
        counts.set(user, Number(body))
        res.end('restored')
      })
      return
    }
    heads.push(req.headers)
    const restored = req.headers['x-tether-rehydrate']
    if (typeof restored === 'string' && Number(restored) > (counts.get(user) ?? 0)) counts.set(user, Number(restored))
    const n = (counts.get(user) ?? 0) + 1
    counts.set(user, n)
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'x-tether-state': opts.stateBytes ? 'x'.repeat(opts.stateBytes) : String(n),
    }
    if (opts.version) headers['x-tether-state-version'] = String(n)
    res.writeHead(200, headers)
    res.end(JSON.stringify({ id, n }))
  })
  return Object.assign(up, { heads })
}

/** tether_rehydrations_total by result (0 when absent). */
async function rehydrations(tether: Tether): Promise<{ delivered: number; no_state: number; error: number }> {
  const [delivered, noState, error] = await Promise.all(['delivered', 'no_state', 'error'].map((r) => metric(tether, `tether_rehydrations_total{result="${r}"}`)))
  return { delivered: delivered!, no_state: noState!, error: error! }
}

async function get(url: string, jar: CookieJar, extra: Record<string, string> = {}): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: { id: string; n: number } }> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers: { ...(jar.header() ? { cookie: jar.header()! } : {}), ...extra } }, (res) => {
      jar.apply(res.headers['set-cookie'])
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(s) }))
    }).on('error', reject)
  })
}

/** A POST (body `x`) with the jar's cookies as they are now: its status and Set-Cookie once answered. */
function postWith(url: string, jar: CookieJar): Promise<{ status: number; setCookie: string[] | undefined }> {
  const cookie = jar.header()!
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: 'POST', agent: false, headers: { cookie, 'content-type': 'text/plain' } }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, setCookie: res.headers['set-cookie'] }))
    })
    req.on('error', reject)
    req.end('x')
  })
}

/**
 * Tether over `ups` (closed with it at teardown) and a jar holding user u1's cookie.
 */
async function tetherWithUser(t: Test, ups: Upstream[], overrides: Parameters<typeof testConfig>[1], logger = createLogger('silent'), timers?: HedgeTimers): Promise<{ tether: Tether; jar: CookieJar }> {
  const tether = await startTether(testConfig(ups, overrides), { logger, ...(timers === undefined ? {} : { timers }) })
  t.teardown(async () => { await tether.close(0); await Promise.all(ups.map((u) => u.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  return { tether, jar }
}

/** Waits until `n` checkpoints were taken, stored or refused as stale (tether_checkpoints_total). */
async function checkpointsTaken(tether: Tether, n: number, what: string): Promise<void> {
  await waitFor(async () => (await metric(tether, 'tether_checkpoints_total{result="stale"}')) + (await metric(tether, 'tether_checkpoints_total{result="stored"}')) === n, 5_000, what)
}

/** Sends no head until the request is stopped (so a hedge answers); ends with `{ id, n: 0 }` after 30 s if never stopped. */
function holdHead(res: http.ServerResponse, id: string): void {
  const timer = setTimeout(() => res.end(JSON.stringify({ id, n: 0 })), 30_000)
  res.on('close', () => clearTimeout(timer))
}

/**
 * Tether over `ups` with user u1 answered once by their home upstream (with whatever checkpoint
 * that answer carries), then home taken out (as health does a dead one): u1's next request moves.
 */
async function withUserMoving(t: Test, ups: Upstream[], overrides: Parameters<typeof testConfig>[1], logger = createLogger('silent'), timers?: HedgeTimers): Promise<{ tether: Tether; jar: CookieJar; home: string }> {
  const { tether, jar } = await tetherWithUser(t, ups, overrides, logger, timers)
  const home = (await get(tether.url, jar)).body.id
  tether.health.disable(home)
  return { tether, jar, home }
}

t.test('a user whose upstream dies continues on the next one with their newest checkpoint', async (t) => {
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => counterApp(id)))
  const tether = await startTether(testConfig(apps), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  let last = await get(tether.url, jar)
  for (let i = 0; i < 4; i++) last = await get(tether.url, jar)
  t.equal(last.body.n, 5)
  t.notOk(last.headers['x-tether-state'], 'the checkpoint header never reaches the client')
  const first = apps.find((a) => a.id === last.body.id)!
  await first.close()
  const moved = await get(tether.url, jar)
  t.not(moved.body.id, first.id, 'moved to another upstream')
  t.equal(moved.body.n, 6, 'the count continues from the checkpoint')
  const target = apps.find((a) => a.id === moved.body.id)!
  const h = target.heads.at(-1)!
  t.equal(h['x-tether-rehydrate'], '5')
  t.equal(h['x-tether-previous-upstream'], first.id)
  t.match(h['x-tether-moved'], new RegExp(`^from=${first.id}; reason=dead; epoch=1$`))
  t.equal(h['x-tether-epoch'], '1')
  const after = await get(tether.url, jar)
  t.equal(after.body.id, moved.body.id, 'stays on the new upstream')
  t.equal(after.body.n, 7)
  t.notOk(target.heads.at(-1)!['x-tether-rehydrate'], 'rehydration only on the move')
})

t.test('an upstream that refuses the state in a header (431: over its header limit) gets the request again without it; the user moves on', async (t) => {
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => counterApp(id, { stateBytes: 12_000 })))
  for (const a of apps) (a.server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = 8192 // a 12 KB header is over it: Node answers 431 before the app runs
  const tether = await startTether(testConfig(apps), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const before = await get(tether.url, jar)
  const first = apps.find((a) => a.id === before.body.id)!
  await first.close()
  const moved = await get(tether.url, jar)
  t.equal(moved.status, 200, 'the user gets an answer, not the 431')
  t.not(moved.body.id, first.id, 'moved to another upstream')
  const target = apps.find((a) => a.id === moved.body.id)!
  t.equal(target.heads.length, 1, 'its application ran once (the refused head never reached it)')
  const h = target.heads[0]!
  t.equal(h['x-tether-rehydrate-status'], 'too_large', 'told the state was there but too large for a header')
  t.notOk(h['x-tether-rehydrate'], 'without the state')
  t.notOk(h['x-tether-previous-upstream'])
  t.match(h['x-tether-moved'], new RegExp(`^from=${first.id}; reason=dead; epoch=1$`), 'still told of the move')
  const after = await get(tether.url, jar)
  t.equal(after.body.id, moved.body.id, 'stays on the new upstream')
})

/** The warnings that the upstream refused the user's state in a header. */
function stateRefusedWarnings(logs: LogCapture): Record<string, unknown>[] {
  return logs.records.filter((r) => /refused the user's state in X-Tether-Rehydrate \(431/.test(String(r['msg'])))
}

t.test("a 431 to a moved user's request that is over the upstream's header limit without the state too (the client's own head) counts as any 4xx answer: no rehydration error, no warning; the state's own 431 keeps both", async (t) => {
  let stateBytes = 100
  const seen: string[] = []
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id, (req, res) => {
    seen.push(`${id} ${req.headers['x-tether-rehydrate-status'] ?? '-'}`)
    res.writeHead(200, { 'x-tether-state': 's'.repeat(stateBytes) }).end(JSON.stringify({ id, n: 1 }))
  })))
  for (const a of apps) (a.server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = 8192 // Node answers 431 before the app runs
  const logs = new LogCapture()
  const tether = await startTether(testConfig(apps), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const home = (await get(tether.url, jar)).body.id
  tether.health.disable(home)
  // the client's own head is over the limit: refused with the (small) state and again without it
  const big = await new Promise<number>((resolve, reject) => {
    http.get(tether.url, { agent: false, headers: { cookie: jar.header()!, 'x-big': 'b'.repeat(10_000) } }, (res) => {
      jar.apply(res.headers['set-cookie'])
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    }).on('error', reject)
  })
  t.equal(big, 431, "the upstream's 431 reaches the client")
  await waitFor(() => logs.access().length === 2, 5_000, 'the access line')
  t.match(logs.access()[1], { status: 431, route: 'failover', outcome: 'head_too_large' }, "logged as the client's own head refused: no move made, not an error")
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'no rehydration error: the state was not what the upstream refused')
  t.same(stateRefusedWarnings(logs), [], "no warning to raise the upstream's limit for the state")
  t.match(await tether.metrics.render(), /tether_http_requests_total\{upstream="[abc]",method="GET",status_class="4xx"\} 1/, 'counted as a 4xx answer')
  t.same(seen, [`${home} -`], 'no application ran for it')

  // the state itself is over the limit (the client's head is small): sent again without it, the
  // user moves on, and the refused state counts as a rehydration error, with the warning
  await t.test("the state's own 431", async (t) => {
    const jar2 = new CookieJar()
    jar2.cookies.set('user', 'u2')
    tether.health.enable(home)
    stateBytes = 12_000
    const home2 = (await get(tether.url, jar2)).body.id
    tether.health.disable(home2)
    const errors = (await rehydrations(tether)).error
    const warned = stateRefusedWarnings(logs).length
    const moved = await get(tether.url, jar2)
    t.equal(moved.status, 200, 'the user gets an answer, not the 431')
    t.equal(seen.at(-1), `${moved.body.id} too_large`, 'sent again without the state')
    t.equal((await rehydrations(tether)).error, errors + 1, 'the refused state is a rehydration error')
    t.equal(stateRefusedWarnings(logs).length, warned + 1, 'warned once, with the remedy')
  })
})

for (const affinity of ['cookie', 'header'] as const) {
  t.test(`a moved user whose request is refused 431 for its own head (${affinity} affinity) keeps their state: not moved there by that answer, their next request moves with the state`, async (t) => {
    const apps = await Promise.all(['a', 'b', 'c'].map((id) => counterApp(id)))
    for (const a of apps) (a.server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = 8192 // Node answers 431 before the app runs
    const overrides = affinity === 'header' ? { affinity: { key: 'header' as const, header: { name: 'X-Tenant' } } } : {}
    const tenant = { 'x-tenant': 't1' } // read with `key: header` (a table key), ignored with cookies
    const tether = await startTether(testConfig(apps, overrides), { logger: createLogger('silent') })
    t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
    const jar = new CookieJar()
    jar.cookies.set('user', 'u1')
    await get(tether.url, jar, tenant)
    const home = (await get(tether.url, jar, tenant)).body
    t.equal(home.n, 2, 'two requests counted on the home upstream')
    tether.health.disable(home.id)
    const big = await new Promise<{ status: number; setCookie: string[] | undefined }>((resolve, reject) => {
      http.get(tether.url, { agent: false, headers: { cookie: jar.header()!, ...tenant, 'x-big': 'b'.repeat(10_000) } }, (res) => {
        jar.apply(res.headers['set-cookie'])
        res.resume()
        res.on('end', () => resolve({ status: res.statusCode ?? 0, setCookie: res.headers['set-cookie'] }))
      }).on('error', reject)
    })
    t.equal(big.status, 431, "the upstream's 431 reaches the client")
    t.notOk(big.setCookie?.some((c) => c.startsWith('tether=')), 'no affinity cookie moving the user there')
    const next = await get(tether.url, jar, tenant)
    t.equal(next.status, 200)
    t.not(next.body.id, home.id, 'moved off the disabled upstream')
    t.equal(apps.find((a) => a.id === next.body.id)!.heads.at(-1)!['x-tether-rehydrate-status'], 'delivered', 'the next request brings the state')
    t.equal(next.body.n, 3, 'the count goes on from the stored state, not from scratch')
    t.equal((await rehydrations(tether)).delivered, 1, 'one rehydration delivered')
  })
}

t.test('an upstream replaced (another url) while it refused the state (431): the request is decided again and reaches the new process with the state, not sent on without it', async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => counterApp(id)))
  const newer = new Map<string, Awaited<ReturnType<typeof counterApp>>>()
  for (const a of apps) newer.set(a.id, await counterApp(a.id))
  let refused = 0
  // each app answers with a checkpoint and refuses a request carrying the state (as its header
  // limit would), but first its id is given another url (its next process: a reload, a pod
  // re-created), as may happen while an attempt is out: the 431 comes once the new set is in use
  for (const a of apps) {
    a.server.removeAllListeners('request')
    a.server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
      a.heads.push(req.headers)
      if (req.headers['x-tether-rehydrate'] === undefined) return void res.writeHead(200, { 'x-tether-state': '1' }).end(JSON.stringify({ id: a.id, n: 1 }))
      refused++
      const next = newer.get(a.id)!
      tether.reload({ ...tether.config, upstreams: tether.config.upstreams.map((u) => (u.id === a.id ? { ...u, url: next.url } : u)) })
      res.writeHead(431).end()
    })
  }
  const tether = await startTether(testConfig(apps), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all([...apps, ...newer.values()].map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const home = (await get(tether.url, jar)).body.id
  await apps.find((a) => a.id === home)!.close()
  const other = apps.find((a) => a.id !== home)!
  const moved = await get(tether.url, jar)
  t.equal(refused, 1, 'the state was refused once')
  t.equal(moved.status, 200)
  t.equal(other.heads.length, 1, 'the replaced process got nothing after it refused the state')
  const next = newer.get(other.id)!.heads
  t.equal(next.length, 1, 'its new process got the request')
  t.equal(next[0]?.['x-tether-rehydrate'], '1', 'with the state')
  t.equal(moved.body.n, 2, 'the count goes on from the checkpoint')
  const moves = [...(await tether.metrics.render()).matchAll(/^tether_failovers_total\{[^}]*\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0)
  t.equal(moves, 1, 'one request, one move: the decision made again is not counted a second time')
})

t.test("a user moved without their state (431) starts it again there: its first checkpoint replaces the old one whatever the versions, and the next ones follow it", async (t) => {
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => counterApp(id, { stateBytes: 12_000, version: true })))
  for (const a of apps) (a.server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = 8192
  const tether = await startTether(testConfig(apps), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  let r = await get(tether.url, jar)
  for (let i = 0; i < 4; i++) r = await get(tether.url, jar)
  t.equal(r.body.n, 5, 'version 5 stored from the first upstream')
  await apps.find((a) => a.id === r.body.id)!.close()
  const counts = [] as number[]
  for (let i = 0; i < 3; i++) counts.push((await get(tether.url, jar)).body.n)
  t.same(counts, [1, 2, 3], 'the new upstream got no state: its versions start again')
  const metrics = await tether.metrics.render()
  t.match(metrics, /tether_checkpoints_total\{result="stored"\} 8/, 'all eight stored: the first of the new state replaced version 5')
  t.notMatch(metrics, /tether_checkpoints_total\{result="stale"\} [1-9]/, 'none refused as stale')
})

t.test("with hedging, an upstream's own 431 (no state in that attempt) reaches the client and is not sent again", async (t) => {
  let phase = 1
  let home = ''
  const seen: Record<string, number> = { a: 0, b: 0 }
  const app = (id: string) => startUpstream(id, (_req, res) => {
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'S'.repeat(200) }).end(JSON.stringify({ id, n: 1 }))
    seen[id]!++
    // the home answers its own 431 late; the hedge (which carries the user's state) fails
    if (id === home) setTimeout(() => res.writeHead(431).end('{}'), 300)
    else setTimeout(() => res.socket?.destroy(), 1_000)
  })
  const ups = [await app('a'), await app('b')]
  // (one extra attempt, the hedge's: a hedge counts against retries.attempts; none is left for a retry)
  const tether = await startTether(testConfig(ups, { retries: { hedge_after: 100, attempts: 1 } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(ups.map((u) => u.close())) })
  const jar = new CookieJar()
  home = (await get(tether.url, jar)).body.id
  phase = 2
  const r = await get(tether.url, jar)
  t.equal(r.status, 431, "the home's 431")
  t.equal(seen[home], 1, 'the home ran the request once')
})

t.test('clients cannot inject state or routing headers', async (t) => {
  const app = await counterApp('a')
  const tether = await startTether(testConfig([app]), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await app.close() })
  const jar = new CookieJar()
  await get(tether.url, jar, { 'x-tether-rehydrate': '999', 'x-tether-state': '999', 'x-tether-moved': 'from=x', 'x-tether-epoch': '42' })
  const h = app.heads.at(-1)!
  t.notOk(h['x-tether-rehydrate'])
  t.notOk(h['x-tether-state'])
  t.notOk(h['x-tether-moved'])
  t.equal(h['x-tether-epoch'], '0', "Tether's own epoch, not the client's")
})

t.test('an older version never overwrites a newer checkpoint; oversize ones are refused, the request succeeds', async (t) => {
  const { MemoryCheckpointStore } = await import('../src/state/memory-store.js')
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: { now: () => 1 } })
  const { StateProtocol } = await import('../src/state/protocol.js')
  const results: string[] = []
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 8, timeout: 50, ttl: 60_000 }, { now: () => 1 }, {
    checkpoint: (r) => results.push(r), rehydration: () => undefined, operation: () => undefined,
  })
  await p.write('s', { value: 'v7', version: 7 }, 'a', 0)
  await p.write('s', { value: 'v5', version: 5 }, 'a', 0) // one upstream (two at one epoch are ordered by time: see "two upstreams answer one user")
  await p.write('s', { value: 'way too large', version: 9 }, 'a', 0)
  t.same(results, ['stored', 'stale', 'too_large'])
  t.match(await p.fetch('s'), { status: 'found', checkpoint: { value: 'v7', version: 7, upstream: 'a' } })
  t.same(p.read({ 'x-tether-state': 'abc', 'x-tether-state-version': '12' }), { value: 'abc', version: 12 })
  t.same(p.read({ 'x-tether-state': 'abc', 'x-tether-state-version': 'twelve' }), { value: 'abc', version: null })

  const big = await counterApp('big', { stateBytes: 70_000 })
  const tether = await startTether(testConfig([big]), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await big.close() })
  const r = await get(tether.url, new CookieJar())
  t.equal(r.status, 200, 'an oversize checkpoint does not fail the request')
  t.match(await tether.metrics.render(), /tether_checkpoints_total\{result="too_large"\} 1/)
})

t.test('a version is any safe integer, a microsecond clock included (16 digits); what is not one counts as none', async (t) => {
  const { MemoryCheckpointStore } = await import('../src/state/memory-store.js')
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: { now: () => 1 } })
  const { StateProtocol } = await import('../src/state/protocol.js')
  const results: string[] = []
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 64, timeout: 50, ttl: 60_000 }, { now: () => 1 }, {
    checkpoint: (r) => results.push(r), rehydration: () => undefined, operation: () => undefined,
  })
  const us = 1_764_086_400_000_000
  const version = (v: string): number | null => p.read({ 'x-tether-state': 'abc', 'x-tether-state-version': v })!.version
  t.equal(version(String(us)), us, 'microseconds since the epoch')
  t.equal(version(' 42 '), 42, 'trimmed')
  t.equal(version('9007199254740991'), Number.MAX_SAFE_INTEGER, 'the largest safe integer')
  for (const v of ['9007199254740992', '12345678901234567', '-3', '1.5', '1e3', '0x10', '']) t.equal(version(v), null, `${JSON.stringify(v)}: none`)
  // the answers of two concurrent requests, the newer state's first: the older one is refused
  await p.write('s', { value: 'newer', version: version(String(us + 5)) }, 'a', 0)
  await p.write('s', { value: 'older', version: version(String(us)) }, 'a', 0)
  t.same(results, ['stored', 'stale'], 'microsecond versions order checkpoints')
  t.match(await p.fetch('s'), { status: 'found', checkpoint: { value: 'newer', version: us + 5 } })
})

t.test('a clock stepped back does not make a newer versionless checkpoint stale (writtenAt never goes back in a process)', async (t) => {
  const { MemoryCheckpointStore } = await import('../src/state/memory-store.js')
  const { StateProtocol } = await import('../src/state/protocol.js')
  let now = 10_000
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: { now: () => 1 } })
  const results: string[] = []
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 64, timeout: 50, ttl: 60_000 }, { now: () => now }, {
    checkpoint: (r) => results.push(r), rehydration: () => undefined, operation: () => undefined,
  })
  await p.write('s', { value: 'cart=1', version: null }, 'a', 0)
  now -= 1_000 // NTP steps the clock back
  await p.write('s', { value: 'cart=1,2', version: null }, 'a', 0)
  t.same(results, ['stored', 'stored'])
  t.match(await p.fetch('s'), { status: 'found', checkpoint: { value: 'cart=1,2', writtenAt: 10_000 } })
})

t.test('with rehydrate: hook the state is POSTed to the new upstream before the request', async (t) => {
  const hookPath = '/_tether/rehydrate'
  const apps = await Promise.all(['a', 'b'].map((id) => counterApp(id, { hookPath })))
  const tether = await startTether(testConfig(apps, { state: { rehydrate: 'hook', hook_path: hookPath } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u2')
  let last = await get(tether.url, jar)
  last = await get(tether.url, jar)
  t.equal(last.body.n, 2)
  await apps.find((a) => a.id === last.body.id)!.close()
  const moved = await get(tether.url, jar)
  t.equal(moved.body.n, 3, 'the hook restored the count before the request')
  t.notOk(apps.find((a) => a.id === moved.body.id)!.heads.at(-1)!['x-tether-rehydrate'], 'no header in hook mode')
})

t.test('with state.store: none, upstream checkpoint headers are still stripped', async (t) => {
  const app = await counterApp('a')
  const tether = await startTether(testConfig([app], { state: { store: 'none' } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await app.close() })
  const r = await get(tether.url, new CookieJar())
  t.notOk(r.headers['x-tether-state'], 'X-Tether-* from an upstream never reaches a client')
})

t.test('rekey copies the newest checkpoint to the new key (the old keeps its copy) and never replaces a newer one', async (t) => {
  const { MemoryCheckpointStore } = await import('../src/state/memory-store.js')
  const { StateProtocol } = await import('../src/state/protocol.js')
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: { now: () => 1 } })
  const ops: string[] = []
  const p = new StateProtocol(store, { header: 'X-Tether-State', maxBytes: 64, timeout: 50, ttl: 60_000 }, { now: () => 1 }, {
    checkpoint: () => undefined, rehydration: () => undefined, operation: (op) => ops.push(op),
  })
  t.equal(p.seenCheckpoint, false, 'before any checkpoint, the request path skips re-keying (an app that never checkpoints pays nothing)')
  await p.write('v1', { value: 'state 7', version: 7 }, 'a', 2)
  t.equal(p.seenCheckpoint, true)
  t.equal(await p.rekey('v1', 'v2'), 'copied')
  t.match(await p.fetch('v2'), { status: 'found', checkpoint: { value: 'state 7', version: 7, upstream: 'a', epoch: 2 } }, 'unchanged: value, version, writer, epoch')
  t.match(await p.fetch('v1'), { status: 'found', checkpoint: { value: 'state 7' } }, 'the old value keeps its copy (a request in flight may carry it)')
  t.equal(await p.rekey('v2', 'v3'), 'copied', 'chains over several rotations')
  t.match(await p.fetch('v3'), { status: 'found', checkpoint: { version: 7 } })
  await p.write('v4', { value: 'state 9', version: 9 }, 'a', 2)
  t.equal(await p.rekey('v3', 'v4'), 'stale', 'an older checkpoint never replaces a newer one')
  t.match(await p.fetch('v4'), { status: 'found', checkpoint: { value: 'state 9' } })
  t.equal(await p.rekey('nothing', 'v5'), 'missing')
  t.ok(ops.includes('get') && ops.includes('put'), 'its store operations are timed like the others')
})

/**
 * An app that rotates its session cookie `sid` on every answer (as Laravel re-encrypts
 * laravel_session) and keeps a per-user count (user = the `user` cookie); it checkpoints
 * only on /save (/big: an oversize checkpoint), so other answers rotate without one.
 */
async function rotatingApp(id: string): Promise<Upstream & { heads: http.IncomingHttpHeaders[] }> {
  const counts = new Map<string, number>()
  const heads: http.IncomingHttpHeaders[] = []
  let serial = 0
  const up = await startUpstream(id, (req, res) => {
    heads.push(req.headers)
    const user = /user=(\w+)/.exec(req.headers.cookie ?? '')?.[1] ?? 'anon'
    const restored = req.headers['x-tether-rehydrate']
    if (typeof restored === 'string' && Number(restored) > (counts.get(user) ?? 0)) counts.set(user, Number(restored))
    const n = (counts.get(user) ?? 0) + 1
    counts.set(user, n)
    const headers: Record<string, string> = { 'content-type': 'application/json', 'set-cookie': `sid=${id}-${++serial}; path=/` }
    if (req.url === '/save') Object.assign(headers, { 'x-tether-state': String(n), 'x-tether-state-version': String(n) })
    if (req.url === '/big') Object.assign(headers, { 'x-tether-state': 'x'.repeat(200), 'x-tether-state-version': String(n) })
    res.writeHead(200, headers)
    res.end(JSON.stringify({ id, n }))
  })
  return Object.assign(up, { heads })
}

t.test('app_cookie rotated on every answer: a checkpoint written under an earlier value is delivered after a move', async (t) => {
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => rotatingApp(id)))
  const tether = await startTether(testConfig(apps, {
    affinity: { key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' } },
    state: { max_bytes: 100 },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u3')
  const first = await get(`${tether.url}/save`, jar)
  const home = first.body.id
  const seen = [jar.cookies.get('sid')]
  let last = first
  for (const path of ['/plain', '/plain', '/big', '/plain']) {
    last = await get(`${tether.url}${path}`, jar)
    t.equal(last.body.id, home, `${path}: the rotated value still routes home`)
    seen.push(jar.cookies.get('sid'))
  }
  t.equal(new Set(seen).size, seen.length, 'the cookie had a new value on every answer')
  t.equal(last.body.n, 5)
  await apps.find((a) => a.id === home)!.close()
  const moved = await get(`${tether.url}/plain`, jar)
  t.not(moved.body.id, home, 'moved off the dead upstream')
  const target = apps.find((a) => a.id === moved.body.id)!
  t.equal(target.heads.at(-1)!['x-tether-rehydrate'], '1', 'the checkpoint of the first answer followed four rotations (one refused as too large)')
  t.equal(moved.body.n, 2, 'so the app restored it')
})

t.test('a reload that removes the upstream a user is moving to while its hook runs: the request is decided again (not a retry), never a 502', async (t) => {
  const hookPath = '/_tether/rehydrate'
  let release!: () => void
  const released = new Promise<void>((resolve) => { release = resolve })
  const hooks: string[] = []
  let hookStarted!: (id: string) => void
  const firstHook = new Promise<string>((resolve) => { hookStarted = resolve })
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id, (req, res) => {
    if (req.url === hookPath) {
      req.resume()
      hooks.push(id)
      hookStarted(id)
      // the first hook is held until the test removed its upstream; later ones answer at once
      void released.then(() => res.end('restored'))
      return
    }
    res.writeHead(200, { 'content-type': 'application/json', 'x-tether-state': 'n' })
    res.end(JSON.stringify({ id, n: 1 }))
  })))
  const config = testConfig(apps, { state: { rehydrate: 'hook', hook_path: hookPath }, retries: { attempts: 0 } })
  const tether = await startTether(config, { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const home = (await get(tether.url, jar)).body.id
  tether.health.disable(home)
  const moving = get(tether.url, jar)
  const target = await firstHook
  tether.reload({ ...config, upstreams: config.upstreams.filter((u) => u.id !== target) })
  release()
  const r = await moving
  t.equal(r.status, 200, 'answered')
  const last = apps.map((a) => a.id).find((id) => id !== home && id !== target)!
  t.equal(r.body.id, last, 'by the one upstream left')
  t.same(hooks, [target, last], 'whose hook got the state too')
})

/**
 * A user whose home is slow is hedged onto the other upstream (hook mode; the hedge fired once
 * the home's app has the request: HedgeTimers), whose rehydration hook runs `onHook` (given
 * the replacement processes each id may be moved to); once `hookOver` is called, the home
 * answers 300 ms later. The requests seen are "id" or "id:hook" (a replacement's id has a "'").
 * An upstream that already ran a hook answers a request at once. With `homeFails`, the home
 * resets the connection instead of answering.
 */
async function hedgeThroughHook(t: Test, onHook: (id: string, res: http.ServerResponse, tether: Tether, newer: Map<string, Upstream>, hookOver: () => void) => void, homeFails = false): Promise<{ status: number; id: string; home: string; other: string; requests: string[]; access: Record<string, unknown> | undefined; rehydrations: { delivered: number; no_state: number; error: number } }> {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  const requests: string[] = []
  let hookOver!: () => void
  const over = new Promise<void>((resolve) => { hookOver = resolve })
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === hookPath) {
      requests.push(`${id}:hook`)
      return onHook(id, res, tether, newer, hookOver)
    }
    requests.push(id)
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'n' }).end(JSON.stringify({ id, n: 1 }))
    if (requests.includes(`${id}:hook`)) return void res.end(JSON.stringify({ id, n: 1 })) // the hedge
    // the home is slow (so the request is hedged), and answers once the hedge's hook is over
    void over.then(() => setTimeout(() => (homeFails ? req.socket.destroy() : res.end(JSON.stringify({ id, n: 2 }))), 300))
  })
  const ups = [await app('a'), await app('b')]
  const newer = new Map<string, Upstream>()
  for (const u of ups) newer.set(u.id, await startUpstream(`${u.id}'`, (req, res) => {
    requests.push(`${u.id}'${req.url === hookPath ? ':hook' : ''}`)
    req.resume()
    res.end(JSON.stringify({ id: `${u.id}'`, n: 1 }))
  }))
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const tether = await startTether(testConfig(ups, { state: { rehydrate: 'hook', hook_path: hookPath }, retries: { hedge_after: HEDGE_AFTER } }), { logger: createLogger('info', logs), timers })
  t.teardown(async () => { await tether.close(0); await Promise.all([...ups, ...newer.values()].map((u) => u.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const home = (await get(tether.url, jar)).body.id
  phase = 2
  requests.length = 0
  const pending = get(tether.url, jar)
  await waitFor(() => requests.includes(home), 20_000, "the home's request") // (polled: the app notes it)
  await timers.hedge()
  const r = await pending
  // the access line is written as the answer ends (before the client reads its end)
  await waitFor(() => logs.access().length === 2, 5_000, 'the access line')
  return { status: r.status, id: r.body.id, home, other: ups.find((u) => u.id !== home)!.id, requests, access: logs.access()[1], rehydrations: await rehydrations(tether) }
}

t.test("a hedge whose upstream is replaced (another url) while its hook runs is not sent: the first attempt answers, no process gets the request without its state", async (t) => {
  const r = await hedgeThroughHook(t, (id, res, tether, newer, hookOver) => {
    // the id's process is replaced (a reload gives it another url) while its state is posted
    tether.reload({ ...tether.config, upstreams: tether.config.upstreams.map((u) => (u.id === id ? { ...u, url: newer.get(id)!.url } : u)) })
    res.end('restored')
    hookOver()
  })
  t.equal(r.status, 200)
  t.equal(r.id, r.home, 'the first attempt answered')
  t.same(r.requests, [r.home, `${r.other}:hook`], 'the hedge stopped after its hook: neither the replaced process nor its new one got the request')
  t.match(r.access, { upstream: r.home, outcome: 'ok' }, 'the access line is the first attempt\'s: no rehydration of the unsent hedge claimed')
  t.same(r.rehydrations, { delivered: 0, no_state: 0, error: 0 }, 'nor counted: the state fetched for it reached no answer')
})

t.test("a hedge not sent (its upstream replaced during the hook) and a first attempt that then fails: the retry goes to the id's new process, with the state through its hook", async (t) => {
  const r = await hedgeThroughHook(t, (id, res, tether, newer, hookOver) => {
    tether.reload({ ...tether.config, upstreams: tether.config.upstreams.map((u) => (u.id === id ? { ...u, url: newer.get(id)!.url } : u)) })
    res.end('restored')
    hookOver()
  }, true)
  t.equal(r.status, 200)
  t.equal(r.id, `${r.other}'`, "the retry was answered by the id's new process")
  // (the home's kept-alive connection closed with nothing read: the GET went once more to the
  // home on a new connection first, which failed alike; see forward.ts, ExchangeHandler.resend)
  t.same(r.requests, [r.home, `${r.other}:hook`, r.home, `${r.other}':hook`, `${r.other}'`], 'which got the state through its own hook first')
  t.match(r.access, { upstream: r.other, outcome: 'rehydrated', retries: 1 })
  t.same(r.rehydrations, { delivered: 1, no_state: 0, error: 0 }, 'one rehydration counted: the answered one (not the unsent hedge\'s fetch)')
})

t.test("a streamed POST whose body goes past retries.replay_buffer_bytes around the 431 (state in a header) is never sent again truncated: whole without the state, or the 431", async (t) => {
  // The 431 is sent again only while the body is replayable (checked as its head arrives); the
  // abort that follows destroys the attempt's body at once, so bytes arriving after it wait for
  // the resend and cannot empty the replay buffer in between. Each way the rest of the body
  // arrives (after the resend started, as the 431 goes out, before the 431), the upstream gets
  // all of it or the client gets the 431.
  const LIMIT = 1024
  let phase = 1
  const bodies: { id: string; state: boolean; bytes: number; sha: string }[] = []
  let onResend: () => void = () => undefined
  let on431: () => void = () => undefined
  let refuseAfter = 0 // body bytes the upstream reads before it answers 431
  const app = (id: string) => startUpstream(id, (req, res) => {
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'S'.repeat(200) }).end(JSON.stringify({ id }))
    const state = req.headers['x-tether-rehydrate'] !== undefined
    if (state) {
      let read = 0
      const refuse = (): void => {
        bodies.push({ id, state, bytes: read, sha: '' })
        res.writeHead(431, { connection: 'close' }).end(() => on431())
      }
      if (refuseAfter === 0) return refuse()
      const onData = (c: Buffer): void => {
        read += c.length
        if (read <= refuseAfter) return
        req.off('data', onData)
        req.pause()
        refuse()
      }
      req.on('data', onData)
      return
    }
    const hash = createHash('sha256')
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
    req.on('end', () => {
      const sha = hash.digest('hex')
      bodies.push({ id, state, bytes, sha })
      res.end(JSON.stringify({ bytes, sha }))
    })
    onResend()
  })
  const ups = [await app('a'), await app('b'), await app('c')]
  const tether = await startTether(testConfig(ups, { retries: { replay_buffer_bytes: LIMIT } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all(ups.map((u) => u.close())) })

  /** A chunked POST: `head` bytes at once, the rest once `when` lets it go. */
  const post = (jar: CookieJar, head: Buffer, rest: Buffer, when: (send: () => void) => void): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = http.request(tether.url, { method: 'POST', agent: false, headers: { cookie: jar.header()!, 'content-type': 'application/octet-stream' } }, (res) => {
        let s = ''
        res.on('data', (c) => (s += c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: s }))
      })
      req.on('error', reject)
      req.flushHeaders()
      req.write(head)
      when(() => req.end(rest))
    })

  const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
  const all = tether.config.upstreams
  let user = 0
  /** A user bound to one upstream, which is then closed: their next request moves with the state. */
  const movingUser = async (): Promise<CookieJar> => {
    phase = 1
    tether.reload({ ...tether.config, upstreams: all })
    const jar = new CookieJar()
    jar.cookies.set('user', `u${++user}`)
    const home = (await get(tether.url, jar)).body.id
    tether.reload({ ...tether.config, upstreams: all.filter((u) => u.id !== home) })
    phase = 2
    bodies.length = 0
    return jar
  }
  const head = randomBytes(100)
  const rest = randomBytes(64 * 1024) // far past the replay buffer

  // the rest arrives once the resend (without the state) is at the upstream
  let jar = await movingUser()
  let r = await post(jar, head, rest, (send) => { onResend = send })
  t.equal(r.status, 200, 'sent again without the state')
  t.same(bodies.map((b) => b.state), [true, false], 'refused once with the state, then taken without')
  t.same(JSON.parse(r.body), { bytes: head.length + rest.length, sha: sha(Buffer.concat([head, rest])) }, 'the whole body, not what was past the buffer alone')

  // the rest arrives as the 431 goes out: before Tether reads it (the 431 reaches the client)
  // or after (the body is whole at the resend), whichever comes first
  onResend = () => undefined
  jar = await movingUser()
  r = await post(jar, head, rest, (send) => { on431 = send })
  on431 = () => undefined
  if (r.status === 431) t.same(bodies.map((b) => b.state), [true], 'the 431, not sent again')
  else {
    t.equal(r.status, 200)
    t.same(JSON.parse(r.body), { bytes: head.length + rest.length, sha: sha(Buffer.concat([head, rest])) }, 'the whole body')
  }

  // the body is past the buffer before the 431: it cannot be sent again, the client gets the 431
  refuseAfter = LIMIT
  jar = await movingUser()
  r = await post(jar, head, rest, (send) => send())
  t.equal(r.status, 431, "the upstream's 431 reaches the client")
  t.same(bodies.map((b) => b.state), [true], 'the request was not sent again')
})

t.test("a hedge whose rehydration hook hangs is stopped when the first attempt answers: the request ends then, not at the hook's timeout", async (t) => {
  let hook: http.ServerResponse | null = null
  const r = await hedgeThroughHook(t, (_id, res, _tether, _newer, hookOver) => {
    // the hedge's upstream takes the state and never answers it (frozen); the home answers
    hook = res
    hookOver()
  })
  t.equal(r.status, 200)
  t.equal(r.id, r.home, 'the first attempt answered')
  t.match(r.access, { upstream: r.home, outcome: 'ok' }, 'its access line written as it ended (within seconds, not timeouts.response_headers)')
  await waitFor(() => hook!.destroyed, 5_000, 'the hung hook to be stopped')
  t.same(r.requests, [r.home, `${r.other}:hook`], 'the hedge was not sent')
  t.same(r.rehydrations, { delivered: 0, no_state: 0, error: 0 }, 'no rehydration counted')
})

t.test("a hedge that carried the state but lost to the first attempt: the access line claims no rehydration", async (t) => {
  let phase = 1
  let held: http.ServerResponse | null = null // a's request, answered once the hedge reached b
  let carried: string | undefined // the state in the hedge's head at b
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'n' }).end(JSON.stringify({ id, n: 1 }))
    if (id === 'a') return void (held = res)
    carried = String(req.headers['x-tether-rehydrate'])
    holdHead(res, id) // b is slower still: no head until it is stopped
  })
  const ups = [await app('a'), await app('b')]
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const tether = await startTether(testConfig(ups, { retries: { hedge_after: HEDGE_AFTER } }), { logger: createLogger('info', logs), timers })
  t.teardown(async () => { await tether.close(0); await Promise.all(ups.map((u) => u.close())) })
  // a user on a (slow: its request is hedged onto b, which is slower still)
  let jar = new CookieJar()
  for (let i = 0; ; i++) {
    jar = new CookieJar()
    jar.cookies.set('user', `w${i}`)
    if ((await get(tether.url, jar)).body.id === 'a') break
  }
  phase = 2
  const before = logs.access().length
  const pending = get(tether.url, jar)
  await waitFor(() => held !== null, 20_000, "a's request") // (polled: the app sets it)
  await timers.hedge()
  await waitFor(() => carried !== undefined, 20_000, 'the hedge at b')
  t.equal(carried, 'n', 'the hedge carried the state')
  ;(held as http.ServerResponse | null)!.end(JSON.stringify({ id: 'a', n: 2 }))
  const r = await pending
  t.equal(r.body.id, 'a', 'the first attempt answered')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { upstream: 'a', outcome: 'ok' }, "the first attempt's line: the hedge's delivered state is not claimed")
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'nor counted as a rehydration')
})

t.test("a hedge whose rehydration hook fails (health took its upstream out while the state was posted) is not sent: the first attempt answers", async (t) => {
  const r = await hedgeThroughHook(t, (id, res, tether, _newer, hookOver) => {
    // the upstream is taken out (as health does a frozen one) while its hook waits: the hook is stopped
    res.on('close', hookOver)
    tether.health.disable(id)
  })
  t.equal(r.status, 200)
  t.equal(r.id, r.home, 'the first attempt answered')
  t.same(r.requests, [r.home, `${r.other}:hook`], 'the hedge stopped after its failed hook: its upstream did not get the request without the state')
  t.match(r.access, { upstream: r.home, outcome: 'ok' }, 'the access line is the first attempt\'s: no rehydration of the unsent hedge claimed')
  t.same(r.rehydrations, { delivered: 0, no_state: 0, error: 0 }, 'nor counted')
})

t.test("a hedge whose hook answers 500 and then loses to the first attempt: no rehydration counted, and no restart mark left for the user's later move", async (t) => {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  let version = 5
  const hooks: string[] = []
  let held: http.ServerResponse | null = null // the home's request, answered once the hedge reached the other
  let hedgeArrived = false
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === hookPath) {
      hooks.push(id)
      return void res.writeHead(phase === 2 ? 500 : 200).end()
    }
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': `v${version}`, 'x-tether-state-version': String(version) }).end(JSON.stringify({ id, n: version }))
    // slow (so the request is hedged), but faster than the hedge: the first attempt wins
    if (phase === 2 && id === home) return void (held = res)
    if (phase === 2) {
      hedgeArrived = true
      const timer = setTimeout(() => res.end(JSON.stringify({ id, n: 0 })), 10_000)
      return void res.on('close', () => clearTimeout(timer))
    }
    // the user's real move: this upstream answers with a version of its own, lower than the stored one
    res.writeHead(200, { 'x-tether-state': 'v1', 'x-tether-state-version': '1' }).end(JSON.stringify({ id, n: 1 }))
  })
  let home = ''
  const ups = [await app('a'), await app('b')]
  const timers = new HedgeTimers()
  const { tether, jar } = await tetherWithUser(t, ups, { state: { rehydrate: 'hook', hook_path: hookPath }, retries: { hedge_after: HEDGE_AFTER } }, createLogger('silent'), timers)
  home = (await get(tether.url, jar)).body.id
  const other = ups.find((u) => u.id !== home)!.id
  phase = 2
  const pending = get(tether.url, jar)
  await waitFor(() => held !== null, 20_000, "the home's request") // (polled: the app sets it)
  await timers.hedge()
  await waitFor(() => hedgeArrived, 20_000, 'the hedge at the other upstream')
  ;(held as http.ServerResponse | null)!.writeHead(200, { 'x-tether-state': 'v6', 'x-tether-state-version': '6' }).end(JSON.stringify({ id: home, n: 6 }))
  const r = await pending
  t.equal(r.body.id, home, 'the first attempt answered')
  t.same(hooks, [other], "the hedge's hook refused the state (the hedge was sent and lost)")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stored"}'), 2, "the first attempt's checkpoint (version 6) is stored")
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'the losing hedge and its refused hook are no rehydration')
  // the user really moves (their upstream taken out) at the epoch the hedge had; its hook takes the state
  phase = 3
  tether.health.disable(home)
  const moved = await get(tether.url, jar)
  t.equal(moved.body.id, other, 'moved')
  await checkpointsTaken(tether, 3, "the moved answer's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 1, 'its older version is refused: no restart mark from the losing hedge replaced version 6')
  t.same(await rehydrations(tether), { delivered: 1, no_state: 0, error: 0 }, 'the move is one rehydration')
})

t.test("a move whose hook answers 500: counted once as a rehydration error, and the new upstream's first checkpoint replaces the old one", async (t) => {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === hookPath) return void res.writeHead(500).end()
    const version = phase === 1 ? '5' : '1' // the new upstream starts its versions again
    res.writeHead(200, { 'x-tether-state': `v${version}`, 'x-tether-state-version': version }).end(JSON.stringify({ id, n: Number(version) }))
  })
  const ups = [await app('a'), await app('b')]
  const { tether, jar, home } = await withUserMoving(t, ups, { state: { rehydrate: 'hook', hook_path: hookPath } })
  phase = 2
  const moved = await get(tether.url, jar)
  t.not(moved.body.id, home, 'moved')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 }, 'the refused state is no delivery')
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stored"}'), 2, "the new upstream's version 1 replaced version 5 (marked restarted)")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0)
})

t.test("a moved user's client that leaves before the new upstream's answer head: no rehydration counted (no upstream answered)", async (t) => {
  let phase = 1
  let got: (() => void) | null = null
  const reached = new Promise<void>((resolve) => { got = resolve })
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'v1' }).end(JSON.stringify({ id, n: 1 }))
    // the moved request (with the state) gets no answer head before its client leaves
    got!()
    const timer = setTimeout(() => res.end(JSON.stringify({ id, n: 2 })), 30_000)
    res.on('close', () => clearTimeout(timer))
  })
  const ups = [await app('a'), await app('b')]
  const logs = new LogCapture()
  const { tether, jar } = await tetherWithUser(t, ups, {}, createLogger('info', logs))
  const home = (await get(tether.url, jar)).body.id
  phase = 2
  tether.health.disable(home)
  const before = logs.access().length
  const req = http.get(tether.url, { agent: false, headers: { cookie: jar.header()! } })
  req.on('error', () => {})
  await reached
  req.destroy()
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { outcome: 'client_abort' })
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'the state reached no answer: nothing counted')
})

t.test("a move whose hook answers 500: the access line says failover, not rehydrated (as tether_rehydrations_total says error)", async (t) => {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === hookPath) return void res.writeHead(phase === 2 ? 500 : 200).end()
    res.writeHead(200, { 'x-tether-state': 'v' }).end(JSON.stringify({ id, n: 1 }))
  })
  const ups = [await app('a'), await app('b'), await app('c')]
  const logs = new LogCapture()
  const { tether, jar } = await tetherWithUser(t, ups, { state: { rehydrate: 'hook', hook_path: hookPath } }, createLogger('info', logs))
  const home = (await get(tether.url, jar)).body.id
  phase = 2
  tether.health.disable(home)
  let before = logs.access().length
  const refused = await get(tether.url, jar)
  t.not(refused.body.id, home, 'moved')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { upstream: refused.body.id, outcome: 'failover' }, 'the state did not get there: no rehydration claimed')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 })
  // a hook that takes the state: rehydrated, as before
  phase = 3
  tether.health.disable(refused.body.id)
  before = logs.access().length
  const taken = await get(tether.url, jar)
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { upstream: taken.body.id, outcome: 'rehydrated' })
  t.same(await rehydrations(tether), { delivered: 1, no_state: 0, error: 1 })
})

t.test("a hedge whose hook answers 500 and then wins: one rehydration error, and its upstream's first checkpoint replaces the stored one (marked restarted)", async (t) => {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  const told: string[] = []
  let reached = false // the home has the request
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === hookPath) return void res.writeHead(500).end()
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'v5', 'x-tether-state-version': '5' }).end(JSON.stringify({ id, n: 5 }))
    if (id === home) {
      // no head until it is stopped: the hedge answers
      reached = true
      return holdHead(res, id)
    }
    // the hedge's upstream started without the state: its versions start again
    told.push(String(req.headers['x-tether-rehydrate-status']))
    res.writeHead(200, { 'x-tether-state': 'v1', 'x-tether-state-version': '1' }).end(JSON.stringify({ id, n: 1 }))
  })
  let home = ''
  const ups = [await app('a'), await app('b')]
  const timers = new HedgeTimers()
  const { tether, jar } = await tetherWithUser(t, ups, { state: { rehydrate: 'hook', hook_path: hookPath }, retries: { hedge_after: HEDGE_AFTER } }, createLogger('silent'), timers)
  home = (await get(tether.url, jar)).body.id
  phase = 2
  const pending = get(tether.url, jar)
  await waitFor(() => reached, 20_000, "the home's request") // (polled: the app sets it)
  await timers.hedge()
  const r = await pending
  t.not(r.body.id, home, 'the hedge answered')
  t.same(told, ['refused'], "the hedge's request says its hook did not take the state")
  await checkpointsTaken(tether, 2, "the hedge's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0, 'version 1 is not refused as stale')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 }, 'one rehydration, its state refused')
})

t.test("a moved user's WebSocket handshake: one rehydration counted, when the upstream switches", async (t) => {
  const apps = await Promise.all(['a', 'b'].map(async (id) => {
    const up = await startUpstream(id, (req, res) => { req.resume(); res.writeHead(200, { 'x-tether-state': 'v' }).end(JSON.stringify({ id, n: 1 })) })
    up.server.on('upgrade', (req: http.IncomingMessage, sock: import('node:net').Socket) => {
      sock.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\nx-status: ${req.headers['x-tether-rehydrate-status'] ?? '-'}\r\n\r\n`)
    })
    return up
  }))
  const { tether, jar } = await tetherWithUser(t, apps, {})
  const home = (await get(tether.url, jar)).body.id
  tether.health.disable(home)
  const switched = await new Promise<string>((resolve, reject) => {
    const req = http.request(tether.url, { agent: false, headers: { cookie: jar.header()!, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' } })
    req.on('upgrade', (res, sock) => { resolve(`${res.headers['x-up']}|${res.headers['x-status']}`); sock.destroy() })
    req.on('response', (res) => reject(new Error(`status ${res.statusCode}`)))
    req.on('error', reject)
    req.end()
  })
  const [to, status] = switched.split('|')
  t.not(to, home, 'moved')
  t.equal(status, 'delivered', 'with the state')
  await waitFor(async () => (await rehydrations(tether)).delivered === 1, 5_000, 'the rehydration counted')
  t.same(await rehydrations(tether), { delivered: 1, no_state: 0, error: 0 })
})

t.test("a move whose hook refuses the state (500): the upstream is told `X-Tether-Rehydrate-Status: refused`, not delivered, for a request and a WebSocket handshake", async (t) => {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  const seen: string[] = []
  const apps = await Promise.all(['a', 'b', 'c'].map(async (id) => {
    const up = await startUpstream(id, (req, res) => {
      req.resume()
      if (req.url === hookPath) return void res.writeHead(phase === 1 ? 200 : 500).end()
      seen.push(`${id} ${req.headers['x-tether-rehydrate-status'] ?? '-'}`)
      res.writeHead(200, { 'x-tether-state': 'v' }).end(JSON.stringify({ id, n: 1 }))
    })
    up.server.on('upgrade', (req: http.IncomingMessage, sock: import('node:net').Socket) => {
      sock.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\nx-status: ${req.headers['x-tether-rehydrate-status'] ?? '-'}\r\n\r\n`)
    })
    return up
  }))
  const { tether, jar, home } = await withUserMoving(t, apps, { state: { rehydrate: 'hook', hook_path: hookPath } })
  phase = 2
  const moved = await get(tether.url, jar)
  t.not(moved.body.id, home, 'moved')
  t.same(seen.at(-1), `${moved.body.id} refused`, 'the request says the state did not get there')
  // the user's WebSocket handshake, moved again (off the upstream whose hook refused)
  tether.health.disable(moved.body.id)
  const h = await handshake(tether.url, jar)
  t.equal(h.status, 101)
  t.not(h.headers['x-up'], home, 'moved')
  t.not(h.headers['x-up'], moved.body.id, 'moved')
  t.equal(h.headers['x-status'], 'refused', 'the handshake says the state did not get there')
})

t.test("a moved user's WebSocket handshake answered with an invalid status (Tether's 502): no rehydration counted, as for a failed HTTP attempt", async (t) => {
  let phase = 1
  const apps = await Promise.all(['a', 'b'].map(async (id) => {
    const up = await startUpstream(id, (req, res) => { req.resume(); res.writeHead(200, { 'x-tether-state': 'v' }).end(JSON.stringify({ id, n: 1 })) })
    up.server.on('upgrade', (_req: http.IncomingMessage, sock: import('node:net').Socket) => {
      if (phase === 2) return void sock.end('HTTP/1.1 999 Weird\r\nContent-Length: 2\r\n\r\nno')
      sock.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\n\r\n`)
    })
    return up
  }))
  const logs = new LogCapture()
  const { tether, jar, home } = await withUserMoving(t, apps, { retries: { attempts: 0 } }, createLogger('info', logs))
  phase = 2
  const before = logs.access().length
  const bad = await handshake(tether.url, jar)
  t.equal(bad.status, 502, "Tether's 502, not the upstream's answer")
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { protocol: 'websocket', status: 502, outcome: 'TETHER_UPSTREAM_PROTOCOL' })
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'the state reached no answer: nothing counted')
  // the user's next handshake (still a move: nothing answered them) switches: counted then
  phase = 3
  const good = await handshake(tether.url, jar)
  t.equal(good.status, 101)
  t.not(good.headers['x-up'], home, 'moved')
  await waitFor(async () => (await rehydrations(tether)).delivered === 1, 5_000, 'the rehydration counted')
  t.same(await rehydrations(tether), { delivered: 1, no_state: 0, error: 0 }, 'once')
})

t.test("a 431 passed on to the client (the body could not be sent again without the state) counts a rehydration error, not delivered, its access line says failover, and the new upstream's first checkpoint replaces the stored one", async (t) => {
  let phase = 1
  const seen: string[] = []
  const app = (id: string) => startUpstream(id, (req, res) => {
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length })
    req.on('end', () => {
      // the state in a header is over this upstream's limit (as Node's own 431 would say), told once the body is read
      if (phase === 2 && req.headers['x-tether-rehydrate'] !== undefined) return void res.writeHead(431, { connection: 'close' }).end()
      seen.push(`${id} ${req.headers['x-tether-rehydrate-status'] ?? '-'}`)
      // the new upstream starts its versions again (it got no state)
      const version = phase === 1 ? '5' : '1'
      res.writeHead(200, { 'x-tether-state': `v${version}`, 'x-tether-state-version': version }).end(JSON.stringify({ id, n: bytes }))
    })
  })
  const ups = [await app('a'), await app('b')]
  const logs = new LogCapture()
  const { tether, jar, home } = await withUserMoving(t, ups, { retries: { replay_buffer_bytes: 1024 } }, createLogger('info', logs))
  phase = 2
  const before = logs.access().length
  const status = await new Promise<number>((resolve, reject) => {
    const req = http.request(tether.url, { method: 'POST', agent: false, headers: { cookie: jar.header()!, 'content-type': 'application/octet-stream' } }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(randomBytes(8192)) // past retries.replay_buffer_bytes: not sent again
  })
  t.equal(status, 431, "the upstream's 431 reached the client")
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 431, outcome: 'failover' }, 'the state did not get there: no rehydration claimed')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 }, 'the refused state is no delivery')
  // the 431 pinned the user to the new upstream, which never got their state: its versions start again
  const next = await get(tether.url, jar)
  t.not(next.body.id, home, 'the user stays on the new upstream')
  t.same(seen, [`${home} -`, `${next.body.id} -`], 'as an ordinary request (no second move)')
  await checkpointsTaken(tether, 2, "the new upstream's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0, 'its version 1 replaced version 5 (marked restarted), not refused as stale')
})

/**
 * Two apps for a user hedged off a slow home: in phase 1 each answers with a 200-byte checkpoint;
 * from phase 2 the home (set by the test) holds its head (`held`), the other notes its
 * X-Tether-Rehydrate-Status in `told` and refuses 431 a head that carries the state (its header
 * limit), else answers; in phase 3 the home answers at once, noting in `told` what the request
 * said of a move. Only the requests the test hedges (`timers`: see hedgeRefusedWhileHomeHolds) are.
 */
async function hedgedOffHome(t: Test, retries: { attempts?: number }, refuseAll = false) {
  const s: HedgedOffHome = { phase: 1, home: '', held: [], told: [] }
  const app = (id: string) => startUpstream(id, hedgedOffHomeApp(s, id, refuseAll))
  const ups = [await app('a'), await app('b')]
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const { tether, jar } = await tetherWithUser(t, ups, { retries: { ...retries, hedge_after: HEDGE_AFTER } }, createLogger('info', logs), timers)
  s.home = (await get(tether.url, jar)).body.id
  await waitFor(async () => (await metric(tether, 'tether_checkpoints_total{result="stored"}')) >= 1, 5_000, "the home's checkpoint stored")
  const other = ups.find((u) => u.id !== s.home)!.id
  s.phase = 2
  return { s, tether, jar, logs, other, timers }
}

interface HedgedOffHome { phase: number; home: string; held: http.ServerResponse[]; told: string[] }

/** The request handler of upstream `id` in hedgedOffHome's world `s`. */
function hedgedOffHomeApp(s: HedgedOffHome, id: string, refuseAll = false): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  return (req, res) => {
    req.resume()
    if (s.phase === 1) return void res.writeHead(200, { 'x-tether-state': 'S'.repeat(200) }).end(JSON.stringify({ id, n: 1 }))
    if (id === s.home) {
      if (s.phase === 2) return void s.held.push(res)
      s.told.push(`${id} ${String(req.headers['x-tether-moved'] ?? '-')} ${String(req.headers['x-tether-rehydrate-status'] ?? '-')}`)
      return void res.end(JSON.stringify({ id, n: 3 }))
    }
    s.told.push(`${id} ${String(req.headers['x-tether-rehydrate-status'])}`)
    if (refuseAll || req.headers['x-tether-rehydrate'] !== undefined) return void res.writeHead(431).end('{}')
    res.end(JSON.stringify({ id, n: 2 }))
  }
}

/** The warnings that a hedge's state was refused. */
function hedgeRefusals(logs: LogCapture): Record<string, unknown>[] {
  return logs.records.filter((r) => /refused the user's state in X-Tether-Rehydrate of a hedge/.test(String(r['msg'])))
}

/**
 * Once the home holds the request in flight (the `n`th), hedges it (`timers`), and waits until
 * the hedge was refused by its upstream and is over (its app told, Tether's attempt done):
 * resolves with that upstream's id.
 */
async function hedgeRefusedWhileHomeHolds(tether: Tether, s: { held: unknown[]; told: string[] }, timers: HedgeTimers, n: number): Promise<string> {
  await waitFor(() => s.held.length === n, 20_000, `the home's request ${n}`) // (polled: the app notes it)
  await timers.hedge()
  await waitFor(() => s.told.length === n, 20_000, `the hedge ${n}`)
  const at = s.told[n - 1]!.split(' ')[0]!
  await waitFor(async () => (await metric(tether, `tether_upstream_in_flight{upstream="${at}"}`)) === 0, 20_000, `the hedge ${n} over`)
  return at
}

t.test("a hedge refused 431 for its state while the home is slow but answers: the client gets the home's answer, and the user stays there with their state (the hedge is not sent again without it)", async (t) => {
  const { s, tether, jar, logs, other, timers } = await hedgedOffHome(t, {})
  const before = logs.access().length
  let answered = false
  const pending = get(tether.url, jar).finally(() => { answered = true })
  await hedgeRefusedWhileHomeHolds(tether, s, timers, 1)
  t.notOk(answered, 'no answer while the home holds its head')
  s.held[0]!.end(JSON.stringify({ id: s.home, n: 2 }))
  const r = await pending
  t.equal(r.status, 200)
  t.same(r.body, { id: s.home, n: 2 }, "the home's answer")
  t.same(s.told, [`${other} delivered`], 'the hedge went once, with the state, and was not sent again without it')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 200, upstream: s.home, outcome: 'ok', retries: 0 }, 'no move')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'no rehydration: the hedge answered nothing')
  t.equal(hedgeRefusals(logs).length, 1, 'the refusal warned')
  s.phase = 3
  s.told.length = 0
  t.same((await get(tether.url, jar)).body, { id: s.home, n: 3 }, 'the next request goes to the home')
  t.same(s.told.filter((x) => x.startsWith(s.home)), [`${s.home} - -`], 'as an ordinary request: no move, no rehydration (the user kept their upstream and its state)')
})

t.test("a hedge refused 431 for its state, then a first attempt that fails: the retry to the hedge's upstream goes without the state at once (refused once, not twice)", async (t) => {
  // (two extra attempts: the hedge's, refused but sent, and the retry's)
  const { s, tether, jar, logs, other, timers } = await hedgedOffHome(t, { attempts: 2 })
  const before = logs.access().length
  const pending = get(tether.url, jar)
  await hedgeRefusedWhileHomeHolds(tether, s, timers, 1)
  // the home fails (no head): its kept-alive connection closes with nothing read, so the GET goes
  // once more to the home on a new connection (see forward.ts, ExchangeHandler.resend); that fails too
  s.held[0]!.socket?.destroy()
  await waitFor(() => s.held.length === 2, 5_000, 'the GET sent again to the home')
  s.held[1]!.socket?.destroy()
  const r = await pending
  t.equal(r.status, 200)
  t.same(r.body, { id: other, n: 2 }, "the retry on the hedge's upstream answers")
  t.same(s.told, [`${other} delivered`, `${other} too_large`], 'the hedge with the state (refused), then the retry without it: no second refused head')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 200, upstream: other, outcome: 'failover', retries: 1 })
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 }, 'the state did not reach the upstream that answered')
  t.same((await get(tether.url, jar)).body, { id: other, n: 2 }, 'pinned to the new upstream (the home still holds what it gets)')
})

t.test("a hedge refused 431 for its state, a first attempt that fails, and a 431 to the retry sent without the state: the client's own head, passed on, no rehydration counted", async (t) => {
  // (two extra attempts: the hedge's, refused but sent, and the retry's)
  const { s, tether, jar, logs, other, timers } = await hedgedOffHome(t, { attempts: 2 }, true)
  const before = logs.access().length
  const pending = get(tether.url, jar)
  await hedgeRefusedWhileHomeHolds(tether, s, timers, 1)
  // the home fails (no head): its kept-alive connection closes with nothing read, so the GET goes
  // once more to the home on a new connection (see forward.ts, ExchangeHandler.resend); that fails too
  s.held[0]!.socket?.destroy()
  await waitFor(() => s.held.length === 2, 5_000, 'the GET sent again to the home')
  s.held[1]!.socket?.destroy()
  const r = await pending
  t.equal(r.status, 431, "the upstream's 431 to the client's own head")
  t.same(s.told, [`${other} delivered`, `${other} too_large`], 'refused with the state (the hedge), then without it (the retry, at once)')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 431, upstream: other, outcome: 'head_too_large', retries: 1 }, 'no move recorded')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'no rehydration counted (no application ran)')
})

t.test("hedges refused 431 for their state request after request: warned once, then at most once per 30 s (not a line per request)", async (t) => {
  const { s, tether, jar, logs, other, timers } = await hedgedOffHome(t, {})
  for (let i = 0; i < 3; i++) {
    const pending = get(tether.url, jar)
    t.equal(await hedgeRefusedWhileHomeHolds(tether, s, timers, i + 1), other, `request ${i}: hedged to the other upstream`)
    s.held[i]!.end(JSON.stringify({ id: s.home, n: 2 }))
    t.same((await pending).body, { id: s.home, n: 2 }, `request ${i}: the home answered`)
  }
  const warned = hedgeRefusals(logs)
  t.equal(warned.length, 1, 'one warning for three refused hedges')
  t.match(warned[0], { upstream: other, bytes: 200 })
})

t.test("hedge refusals are warned per upstream: two upstreams' refusals get one warning each, and the key of an upstream that left the set (discovery) goes with it", async (t) => {
  // three pods found through Kubernetes discovery (a discovery change keeps the request path; a reload builds a new one)
  const s: HedgedOffHome = { phase: 1, home: '', held: [], told: [] }
  const pods = await Promise.all(['web-0', 'web-1', 'web-2'].map((id) => startUpstream(id, hedgedOffHomeApp(s, id))))
  const slice = (pod: Upstream) => endpointSlice(`web-${pod.id}`, 'web', [{ pod: pod.id, ip: '127.0.0.1' }], { ports: [{ name: 'http', port: Number(new URL(pod.url).port) }] })
  const api = new FakeKubeApi()
  const { url } = await api.start()
  for (const pod of pods) api.put('endpointslices', slice(pod))
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const tether = await startTether(testConfig([], {
    affinity: { drain_timeout: 200 },
    discovery: { kubernetes: { service: 'web', namespace: null, port: 'http', kubeconfig: kubeconfigFor(url), weight_annotation: null } },
    retries: { hedge_after: HEDGE_AFTER },
  }), { logger: createLogger('info', logs), timers })
  t.teardown(async () => { await tether.close(0); await api.close(); await Promise.all(pods.map((p) => p.close())) })
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  s.home = (await get(tether.url, jar)).body.id
  await waitFor(async () => (await metric(tether, 'tether_checkpoints_total{result="stored"}')) >= 1, 5_000, "the home's checkpoint stored")
  s.phase = 2
  /** The user's next request, held at the home until its hedge, to `to` (or the next upstream), was refused. */
  const hedged = async (n: number, to?: string): Promise<string> => {
    const pending = get(tether.url, jar)
    const at = await hedgeRefusedWhileHomeHolds(tether, s, timers, n)
    s.held[n - 1]!.end(JSON.stringify({ id: s.home, n: 2 }))
    t.same((await pending).body, { id: s.home, n: 2 }, `request ${n}: the home answered`)
    if (to !== undefined) t.equal(at, to, `hedge ${n} went to ${to}`)
    return at
  }
  const first = await hedged(1)
  await hedged(2, first) // the same upstream within 30 s: not warned again
  const second = pods.find((p) => p.id !== s.home && p.id !== first)!.id
  // the first hedge's upstream leaves the set (its slice deleted, then its drain_timeout)
  api.delete('endpointslices', `web-${first}`)
  await waitFor(() => !tether.router.ids.includes(first), 10_000, `${first} to leave`)
  await hedged(3, second) // another upstream: warned at once (and the left one's key forgotten)
  // it comes back (the same pod: same address, same uid) and refuses again: a new problem, warned at once
  api.put('endpointslices', slice(pods.find((p) => p.id === first)!))
  await waitFor(() => tether.router.ids.includes(first), 10_000, `${first} to come back`)
  await hedged(4, first)
  const warned = hedgeRefusals(logs)
  t.same(warned.map((w) => w['upstream']), [first, second, first], 'one warning per upstream, and again for the one whose key was forgotten')
  t.notOk(warned.some((w) => 'repeated' in w), 'each a first warning (none stands for earlier ones)')
})

t.test("a hedged move (retries.hedge_after) whose attempt is refused 431 for its state is sent again without it, as without hedging", async (t) => {
  const told: string[] = []
  let phase = 1
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'S'.repeat(200) }).end(JSON.stringify({ id, n: 1 }))
    told.push(`${id} ${String(req.headers['x-tether-rehydrate-status'])}`)
    if (req.headers['x-tether-rehydrate'] !== undefined) return void res.writeHead(431).end('{}')
    res.end(JSON.stringify({ id, n: 1 }))
  })
  const ups = [await app('a'), await app('b')]
  // (on HedgeTimers, never fired: the setup's request is not hedged, and the move has no upstream to hedge onto)
  const { tether, jar, home } = await withUserMoving(t, ups, { retries: { hedge_after: HEDGE_AFTER } }, createLogger('silent'), new HedgeTimers())
  phase = 2
  const r = await get(tether.url, jar)
  const to = ups.find((u) => u.id !== home)!.id
  t.equal(r.status, 200, 'the app answers the resend')
  t.same(told, [`${to} delivered`, `${to} too_large`], 'refused with the state, then sent again without it')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 })
})

/**
 * A user moving off their home (taken out) with `retries.hedge_after` (hedged by the test:
 * `timers`, once `s.first` is set), over three upstreams
 * whose phase-1 answers carry version 5 of a 200-byte state. In phase 2 the move's first
 * attempt is the first request an upstream gets (`s.first`): it refuses the head that carries
 * the state (431) once the hedge (`s.hedge`, the request another upstream gets) has arrived, and
 * `onResend` handles its resend without the state; the hedge's upstream runs `onHedge`. `s.told`
 * notes each request's upstream and X-Tether-Rehydrate-Status; `s.closed` the requests whose
 * connection Tether closed before they were answered (attempts stopped).
 */
async function refusedMoveHedged(t: Test, onResend: (res: http.ServerResponse, s: RefusedMoveHedged) => void, onHedge: (res: http.ServerResponse, s: RefusedMoveHedged) => void) {
  const s: RefusedMoveHedged = { phase: 1, first: '', hedge: '', refuse: null, resent: null, told: [], closed: [] }
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (s.phase === 1) return void res.writeHead(200, { 'x-tether-state': 'S'.repeat(200), 'x-tether-state-version': '5' }).end(JSON.stringify({ id, n: 5 }))
    const status = String(req.headers['x-tether-rehydrate-status'])
    s.told.push(`${id} ${status}`)
    res.on('close', () => { if (!res.writableEnded) s.closed.push(`${id} ${status}`) })
    if (s.first === '') {
      s.first = id
      s.refuse = () => res.writeHead(431).end('{}')
      if (s.hedge !== '') s.refuse()
      return
    }
    if (id === s.first) {
      s.resent?.()
      return onResend(res, s)
    }
    s.hedge = id
    s.refuse?.()
    onHedge(res, s)
  })
  const ups = [await app('a'), await app('b'), await app('c')]
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const { tether, jar, home } = await withUserMoving(t, ups, { retries: { hedge_after: HEDGE_AFTER } }, createLogger('info', logs), timers)
  await checkpointsTaken(tether, 1, "the home's checkpoint")
  s.phase = 2
  /** The user's request, hedged once its first attempt reached its upstream: the answer. */
  const hedged = async (): Promise<Awaited<ReturnType<typeof get>>> => {
    const pending = get(tether.url, jar)
    await waitFor(() => s.first !== '', 20_000, "the move's first attempt") // (polled: the app sets it)
    await timers.hedge()
    return pending
  }
  return { s, tether, jar, home, logs, hedged }
}

interface RefusedMoveHedged {
  phase: number
  first: string
  hedge: string
  /** Answers the first attempt 431 (set once it arrived). */
  refuse: (() => void) | null
  /** Told when the first attempt's resend arrives. */
  resent: (() => void) | null
  told: string[]
  closed: string[]
}

t.test("a hedged move whose first attempt is refused 431 for its state while the hedge is out: sent again there without it at once, it answers without waiting for the hedge, which is stopped", async (t) => {
  const { s, tether, jar, home, logs, hedged } = await refusedMoveHedged(t,
    (res) => void res.writeHead(200, { 'x-tether-state': 'new', 'x-tether-state-version': '1' }).end(JSON.stringify({ id: s.first, n: 1 })),
    (res) => holdHead(res, s.hedge)) // the hedge sends no head until it is stopped
  const before = logs.access().length
  const r = await hedged()
  t.equal(r.status, 200)
  t.same(r.body, { id: s.first, n: 1 }, "the resend's answer, while the hedge still held its head")
  t.not(s.first, home)
  t.same(s.told, [`${s.first} delivered`, `${s.hedge} delivered`, `${s.first} too_large`], 'the first attempt with the state (refused), the hedge with it, the resend without it')
  await waitFor(() => s.closed.includes(`${s.hedge} delivered`), 10_000, 'the hedge stopped')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 200, upstream: s.first, outcome: 'failover' }, "the resend's line: the hedge's delivered state is not claimed")
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 }, "counted as the resend's upstream got it (too_large), not as the hedge's (delivered)")
  t.equal(stateRefusedWarnings(logs).length, 1, 'warned once with the remedy')
  await checkpointsTaken(tether, 2, "the resend's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0, "version 1 replaces version 5: the resend's upstream started the state again (marked restarted)")
  s.phase = 1
  t.equal((await get(tether.url, jar)).body.id, s.first, 'the user stays on the upstream that answered')
})

t.test("a hedged move whose first attempt is refused 431 for its state, and a hedge that answers while the resend without it is out: the hedge's answer, its rehydration counted as delivered", async (t) => {
  let hedgeRes: http.ServerResponse | null = null
  const { s, tether, logs, hedged } = await refusedMoveHedged(t,
    (res) => {
      holdHead(res, s.first) // the resend sends no head until it is stopped
      hedgeRes!.writeHead(200, { 'x-tether-state': 'S6', 'x-tether-state-version': '6' }).end(JSON.stringify({ id: s.hedge, n: 6 }))
    },
    (res) => {
      hedgeRes = res // answers once the resend is out
      holdHead(res, s.hedge)
    })
  const before = logs.access().length
  const r = await hedged()
  t.same(r.body, { id: s.hedge, n: 6 }, "the hedge's answer")
  t.same(s.told, [`${s.first} delivered`, `${s.hedge} delivered`, `${s.first} too_large`])
  await waitFor(() => s.closed.includes(`${s.first} too_large`), 10_000, 'the resend stopped')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 200, upstream: s.hedge, outcome: 'rehydrated' }, "the hedge's line")
  t.same(await rehydrations(tether), { delivered: 1, no_state: 0, error: 0 }, "the hedge's rehydration, not the resend's too_large")
  await checkpointsTaken(tether, 2, "the hedge's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stored"}'), 2, 'version 6 stored')
})

const refusingHookPath = '/_tether/rehydrate'

/**
 * Three replicas for a move whose first upstream's hook (at `refusingHookPath`) refuses the state
 * (500) and any later one's takes it. In phase 1 they answer with version 5; in phase 2 the
 * refusing upstream answers with `refused`, any other notes its X-Tether-Rehydrate-Status in
 * `told` and, though it got the state, writes an older version (3): ordered by version as any.
 */
async function refusedThenOlder(refused: (req: http.IncomingMessage, res: http.ServerResponse, id: string) => void): Promise<{ ups: Upstream[]; told: string[]; refusedBy: () => string; phase: { n: number } }> {
  const phase = { n: 1 }
  let refusedBy = ''
  const told: string[] = []
  const app = (id: string) => startUpstream(id, (req, res) => {
    req.resume()
    if (req.url === refusingHookPath) {
      if (refusedBy === '') refusedBy = id
      return void res.writeHead(id === refusedBy ? 500 : 200).end()
    }
    if (phase.n === 1) return void res.writeHead(200, { 'x-tether-state': 'v5', 'x-tether-state-version': '5' }).end(JSON.stringify({ id, n: 5 }))
    if (id === refusedBy) return refused(req, res, id)
    told.push(String(req.headers['x-tether-rehydrate-status']))
    res.writeHead(200, { 'x-tether-state': 'v3', 'x-tether-state-version': '3' }).end(JSON.stringify({ id, n: 3 }))
  })
  return { ups: [await app('a'), await app('b'), await app('c')], told, refusedBy: () => refusedBy, phase }
}

t.test("a move whose hook refused the state, hedged onto an upstream whose hook took it: the hedge's answer leaves no restart mark (an older version it writes is refused as stale)", async (t) => {
  // the first attempt gets no head until it is stopped: the hedge answers
  let reached = false
  const { ups, told, refusedBy, phase } = await refusedThenOlder((_req, res, id) => { reached = true; holdHead(res, id) })
  const timers = new HedgeTimers()
  const { tether, jar, home } = await withUserMoving(t, ups, { state: { rehydrate: 'hook', hook_path: refusingHookPath }, retries: { hedge_after: HEDGE_AFTER } }, createLogger('silent'), timers)
  phase.n = 2
  const pending = get(tether.url, jar)
  await waitFor(() => reached, 20_000, "the move's first attempt") // (polled: the app sets it)
  await timers.hedge()
  const r = await pending
  t.not(r.body.id, home, 'moved')
  t.not(r.body.id, refusedBy(), 'the hedge answered')
  t.same(told, ['delivered'], "the hedge's upstream got the state")
  await checkpointsTaken(tether, 2, "the hedge's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 1, "version 3 does not replace version 5: the first attempt's restart mark is not the hedge's")
  t.same(await rehydrations(tether), { delivered: 1, no_state: 0, error: 0 }, 'one rehydration, delivered')
})

t.test("a burst at one move: a hedge that got the state and answers leaves the restart mark of another request sent without it to the first upstream (that upstream's new state is stored, and a later move delivers it)", async (t) => {
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  let refusedBy = ''
  const hooked: string[] = []
  let release: (() => void) | null = null
  let getHeld = false // the burst's GET reached the move's first upstream
  const app = (id: string) => startUpstream(id, (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c })
    req.on('end', () => {
      if (req.url === hookPath) {
        // the move's first upstream refuses the state (both requests of the burst); the hedge's takes it
        if (refusedBy === '') refusedBy = id
        if (phase === 2 && id === refusedBy) return void res.writeHead(500).end()
        hooked.push(`${id} ${body}`)
        return void res.writeHead(200).end()
      }
      if (phase === 1) return void res.writeHead(200, { 'x-tether-state': 'v5', 'x-tether-state-version': '5' }).end(JSON.stringify({ id, n: 5 }))
      if (phase === 2 && id === refusedBy) {
        if (req.method === 'GET') {
          // no head until it is stopped: the hedge answers
          getHeld = true
          return holdHead(res, id)
        }
        // the POST of the same burst, answered after the hedged GET: this upstream got no
        // state, its versions start again
        release = () => res.writeHead(200, { 'x-tether-state': 'b1', 'x-tether-state-version': '1' }).end(JSON.stringify({ id, n: 1 }))
        return
      }
      res.writeHead(200).end(JSON.stringify({ id, n: 0 }))
    })
  })
  const ups = [await app('a'), await app('b'), await app('c')]
  const timers = new HedgeTimers()
  const { tether, jar } = await withUserMoving(t, ups, { state: { rehydrate: 'hook', hook_path: hookPath }, retries: { hedge_after: HEDGE_AFTER } }, createLogger('silent'), timers)
  phase = 2
  // the burst: a POST and a GET with the same cookie, both the same move (one epoch)
  const post = postWith(tether.url, jar)
  await waitFor(() => release !== null, 5_000, 'the POST reached the first upstream, without the state')
  const pending = get(tether.url, jar)
  await waitFor(() => getHeld, 20_000, 'the GET at the first upstream') // (polled: the app sets it)
  await timers.hedge() // (the POST, not idempotent, has no hedge timer)
  const r = await pending
  t.not(r.body.id, refusedBy, 'the hedge answered the GET')
  release!()
  const p = await post
  t.equal(p.status, 200)
  jar.apply(p.setCookie) // the POST answered last: the user is on its upstream
  await checkpointsTaken(tether, 2, "the POST's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0, "the restarted upstream's version 1 replaced version 5")
  // that upstream goes too: the user's next upstream gets the state they built there, not the old one
  phase = 3
  tether.health.disable(refusedBy)
  await get(tether.url, jar)
  t.match(hooked.at(-1), / b1$/, 'the newest state is delivered')
})

t.test("two upstreams answer one user at one epoch (a burst plus a hedge): the one the user stays on has its checkpoints stored, whatever the other wrote first; a later move delivers its state", async (t) => {
  // counting apps with per-user state in memory, versions = the count; a hook restores a count
  // (the move's first upstream refuses the state: it starts the user again from 0)
  const hookPath = '/_tether/rehydrate'
  let phase = 1
  let fresh = ''
  const hooked: string[] = []
  let release: (() => void) | null = null
  let holdGet = true
  let getHeld = false // the burst's GET reached the move's first upstream
  const app = (id: string) => {
    const counts = new Map<string, number>()
    return startUpstream(id, (req, res) => {
      let body = ''
      req.on('data', (c: Buffer) => { body += c })
      req.on('end', () => {
        if (req.url === hookPath) {
          if (phase === 2 && fresh === '') fresh = id
          if (id === fresh && phase === 2) return void res.writeHead(500).end()
          hooked.push(`${id} ${body}`)
          counts.set('u1', Number(body))
          return void res.writeHead(200).end()
        }
        const answer = (): void => {
          const n = (counts.get('u1') ?? 0) + 1
          counts.set('u1', n)
          res.writeHead(200, { 'x-tether-state': String(n), 'x-tether-state-version': String(n) }).end(JSON.stringify({ id, n }))
        }
        if (phase === 2 && id === fresh && req.method === 'GET' && holdGet) {
          // the burst's GET gets no head until it is stopped: the hedge answers it
          holdGet = false
          getHeld = true
          return holdHead(res, id)
        }
        // the burst's POST is answered after the hedged GET
        if (phase === 2 && id === fresh && req.method === 'POST') return void (release = answer)
        answer()
      })
    })
  }
  const ups = [await app('a'), await app('b'), await app('c')]
  const timers = new HedgeTimers()
  const { tether, jar } = await tetherWithUser(t, ups, { state: { rehydrate: 'hook', hook_path: hookPath }, retries: { hedge_after: HEDGE_AFTER } }, createLogger('silent'), timers)
  for (let i = 0; i < 4; i++) await get(tether.url, jar) // the home's count (and version) reaches 5
  tether.health.disable((await get(tether.url, jar)).body.id)
  phase = 2
  // the burst: a POST and a GET with the same cookie, both the same move (one epoch)
  const post = postWith(tether.url, jar)
  await waitFor(() => release !== null, 5_000, 'the POST reached the move\'s first upstream, without the state')
  const pending = get(tether.url, jar)
  await waitFor(() => getHeld, 20_000, "the GET at the move's first upstream") // (polled: the app sets it)
  await timers.hedge() // (the POST, not idempotent, has no hedge timer)
  const hedged = await pending
  t.not(hedged.body.id, fresh, 'the hedge answered the GET, with the state (count 6: its version 6 is stored)')
  t.equal(hedged.body.n, 6)
  release!()
  const p = await post
  t.equal(p.status, 200)
  jar.apply(p.setCookie) // the POST answered last: the user is on its upstream, which started them again
  const next = await get(tether.url, jar)
  t.same(next.body, { id: fresh, n: 2 }, 'the user goes on where the POST was answered: an update acknowledged there')
  await checkpointsTaken(tether, 8, 'every checkpoint taken')
  // that upstream goes too: the user's next upstream must get the state they built there (count
  // 2), not the hedge's (6), which they left
  phase = 3
  tether.health.disable(fresh)
  const after = await get(tether.url, jar)
  t.match(hooked.at(-1), / 2$/, 'the state of the upstream the user stayed on is delivered')
  t.equal(after.body.n, 3, 'the acknowledged updates are kept')
})

t.test("a move whose hook refused the state, whose upstream then failed (retried on one whose hook took it): an older version the retry's upstream writes is refused as stale", async (t) => {
  // the first upstream resets the request (retried: an idempotent method)
  const { ups, told, refusedBy, phase } = await refusedThenOlder((req) => void req.socket.destroy())
  const { tether, jar } = await withUserMoving(t, ups, { state: { rehydrate: 'hook', hook_path: refusingHookPath } })
  phase.n = 2
  const r = await get(tether.url, jar)
  t.not(r.body.id, refusedBy(), 'retried elsewhere')
  t.same(told, ['delivered'], "the retry's upstream got the state")
  await checkpointsTaken(tether, 2, "the retry's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 1, "version 3 does not replace version 5: the failed attempt's restart mark is not the retry's")
})

/**
 * App replicas for the WebSocket 431 cases: plain requests answer with a checkpoint (version 5
 * in phase 1, then 1: a replica that got no state starts again); a handshake carrying the state
 * in a header is refused 431 with a body (as a header limit would), any other one switches
 * (101; in phase 3, never answered) and keeps what the client sends through the tunnel. `seen` lists each request and
 * handshake with its X-Tether-Rehydrate-Status.
 */
async function wsRefusingApps(t: Test, ids: string[]): Promise<{ apps: Upstream[]; seen: string[]; tunnelled: string[]; phase: { n: number } }> {
  const phase = { n: 1 }
  const seen: string[] = []
  const tunnelled: string[] = []
  const sockets: import('node:net').Socket[] = []
  const apps = await Promise.all(ids.map(async (id) => {
    const up = await startUpstream(id, (req, res) => {
      req.resume()
      seen.push(`${id} ${req.headers['x-tether-rehydrate-status'] ?? '-'}`)
      const version = phase.n === 1 ? '5' : '1'
      res.writeHead(200, { 'x-tether-state': `v${version}`, 'x-tether-state-version': version }).end(JSON.stringify({ id, n: 1 }))
    })
    up.server.on('upgrade', (req: http.IncomingMessage, sock: import('node:net').Socket, head: Buffer) => {
      sockets.push(sock)
      sock.on('error', () => undefined) // a refused handshake's connection is cut by Tether
      const status = req.headers['x-tether-rehydrate-status'] ?? '-'
      seen.push(`${id} ws ${status}${req.headers['x-tether-previous-upstream'] === undefined ? '' : ' +previous'}`)
      const got = head.toString()
      if (req.headers['x-tether-rehydrate'] !== undefined) {
        // anything the client's early bytes would bring on this connection is recorded as such
        if (got !== '') tunnelled.push(`${id} refused ${got}`)
        sock.on('data', (c: Buffer) => tunnelled.push(`${id} refused ${c}`))
        return void sock.end('HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 21\r\n\r\nREFUSAL-BODY-NOT-SENT')
      }
      if (got !== '') tunnelled.push(`${id} ${got}`)
      sock.on('data', (c: Buffer) => tunnelled.push(`${id} ${c}`))
      if (phase.n === 3) return // phase 3: a handshake without the state is never answered
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\nx-status: ${status}\r\n\r\n`)
    })
    // its tunnels are no connections the server closes: closed with it
    return { ...up, close: () => { for (const s of sockets) s.destroy(); return up.close() } }
  }))
  return { apps, seen, tunnelled, phase }
}

/**
 * A raw WebSocket handshake with `early` right behind its head (in the same write), read until
 * `until(what the client read)`: what the client reads, and its socket.
 */
async function rawHandshake(t: Test, url: string, jar: CookieJar, early: string, until: (received: string) => boolean, what: string): Promise<{ received: () => string; socket: import('node:net').Socket }> {
  const { port } = new URL(url)
  const sock = (await import('node:net')).connect(Number(port), '127.0.0.1')
  t.teardown(() => { sock.destroy() })
  let received = ''
  sock.on('data', (c: Buffer) => { received += c.toString('latin1') })
  sock.on('error', () => undefined)
  sock.write(`GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nCookie: ${jar.header()!}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n${early}`)
  await waitFor(() => until(received), 5_000, what)
  return { received: () => received, socket: sock }
}

/** wsRefusingApps behind Tether, user u1 moving off their home `home` to `to`, in `phase`; `before`: access lines so far. */
async function wsUserMoving(t: Test, phase: number) {
  const { apps, seen, tunnelled, phase: now } = await wsRefusingApps(t, ['a', 'b'])
  const logs = new LogCapture()
  const { tether, jar, home } = await withUserMoving(t, apps, {}, createLogger('info', logs))
  now.n = phase
  return { seen, tunnelled, logs, tether, jar, home, to: apps.find((a) => a.id !== home)!.id, before: logs.access().length }
}

t.test("a moved user's WebSocket handshake whose upstream refuses the state in a header (431) is sent again without it: the 101 reaches the client, the 431 never does, and the accounting is the HTTP case's", async (t) => {
  const { seen, tunnelled, logs, tether, jar, home, to, before } = await wsUserMoving(t, 2)
  const client = await rawHandshake(t, tether.url, jar, 'EARLY-BYTES', (r) => r.includes('\r\n\r\n'), 'the answer head')
  t.match(client.received(), /^HTTP\/1\.1 101 /, 'the client gets the 101, not the 431')
  t.match(client.received(), new RegExp(`x-up: ${to}\r\n`, 'i'))
  t.match(client.received(), /x-status: too_large\r\n/i, 'the resend said the state was too large for a header')
  // the early bytes reach the connection that switched, once, and none of the refused one
  await waitFor(() => tunnelled.length > 0, 5_000, 'the early bytes through the tunnel')
  t.same(tunnelled, [`${to} EARLY-BYTES`], 'the early bytes once, on the connection that switched')
  t.same(seen, [`${home} -`, `${to} ws delivered +previous`, `${to} ws too_large`], 'the handshake with the state, then again without it (nor the previous upstream) on the same upstream')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.notMatch(client.received(), /REFUSAL-BODY|431/, "nothing of the 431's answer reached the client")
  t.match(logs.access()[before], { protocol: 'websocket', status: 101, outcome: 'failover', upstream: to }, 'as the HTTP case: the move, no rehydration claimed')
  const warned = logs.records.filter((r) => /refused the user's state in X-Tether-Rehydrate \(431/.test(String(r['msg'])))
  t.match(warned, [{ level: 40, upstream: to, bytes: 2 }], "warned once, with the checkpoint's size")
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 }, 'the refused state is no delivery (as the HTTP case)')
  // the user is on the new upstream, which never got their state: its versions start again
  const next = await get(tether.url, jar)
  t.equal(next.body.id, to, 'the user stays on the new upstream')
  t.same(seen.slice(3), [`${to} -`], 'as an ordinary request (no second move)')
  await checkpointsTaken(tether, 2, "the new upstream's checkpoint")
  t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0, 'its version 1 replaced version 5 (marked restarted), not refused as stale')
})

t.test("the connection of a WebSocket handshake refused 431 for the state is closed by Tether whatever the upstream does with it (keep-alive, a body larger than a socket buffer); nothing of it reaches the client", async (t) => {
  const refused: { ended: boolean }[] = []
  const sockets: import('node:net').Socket[] = []
  const apps = await Promise.all(['a', 'b'].map(async (id) => {
    const up = await startUpstream(id, (req, res) => { req.resume(); res.writeHead(200, { 'x-tether-state': 'v5' }).end(JSON.stringify({ id, n: 1 })) })
    up.server.on('upgrade', (req: http.IncomingMessage, sock: import('node:net').Socket) => {
      sockets.push(sock)
      sock.on('error', () => undefined)
      if (req.headers['x-tether-rehydrate'] === undefined) return void sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\n\r\n`)
      // a keep-alive 431 whose 1 MiB body is more than the sockets buffer: the upstream would
      // keep this connection (and Tether its side) for as long as nobody closes it
      const seen = { ended: false }
      refused.push(seen)
      sock.on('end', () => { seen.ended = true })
      sock.on('close', () => { seen.ended = true })
      sock.write('HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: keep-alive\r\nContent-Length: 1048576\r\n\r\n')
      sock.write(Buffer.alloc(1024 * 1024, 'z'))
    })
    return { ...up, close: () => { for (const s of sockets) s.destroy(); return up.close() } }
  }))
  const { tether, jar } = await withUserMoving(t, apps, {})
  const client = await rawHandshake(t, tether.url, jar, '', (r) => r.includes('\r\n\r\n'), 'the answer head')
  t.match(client.received(), /^HTTP\/1\.1 101 /, 'the client gets the 101 of the resend')
  t.equal(refused.length, 1, 'one handshake refused')
  await waitFor(() => refused[0]!.ended, 5_000, 'Tether to close the refused connection')
  t.notMatch(client.received(), /431|zzz/, "nothing of the 431's answer reached the client")
})

t.test("a WebSocket handshake whose state is over a Node upstream's header limit (Node's own 431, before the app runs) switches on the resend without it", async (t) => {
  const apps = await Promise.all(['a', 'b'].map(async (id) => {
    const up = await counterApp(id, { stateBytes: 12_000 })
    ;(up.server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = 8192
    const sockets: import('node:net').Socket[] = []
    up.server.on('upgrade', (req: http.IncomingMessage, sock: import('node:net').Socket) => {
      sockets.push(sock)
      sock.on('error', () => undefined)
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\nx-status: ${req.headers['x-tether-rehydrate-status'] ?? '-'}\r\n\r\n`)
    })
    return Object.assign(up, { close: () => { for (const s of sockets) s.destroy(); return new Promise<void>((r) => { up.server.closeAllConnections(); up.server.close(() => r()) }) } })
  }))
  const { tether, jar } = await withUserMoving(t, apps, {})
  const h = await handshake(`${tether.url}/ws`, jar)
  t.equal(h.status, 101)
  t.equal(h.headers['x-status'], 'too_large', 'sent again without the state')
})

t.test("a moved user's WebSocket handshake refused 431 for its own head (with the state and without it) does not move the user: their next request brings the state", async (t) => {
  const apps = await Promise.all(['a', 'b', 'c'].map(async (id) => {
    const up = await counterApp(id)
    ;(up.server as http.Server & { maxHeaderSize?: number }).maxHeaderSize = 8192 // Node answers 431 before the app runs
    up.server.on('upgrade', (_req: http.IncomingMessage, sock: import('node:net').Socket) => sock.destroy()) // never reached
    return up
  }))
  const logs = new LogCapture()
  const { tether, jar, home } = await withUserMoving(t, apps, {}, createLogger('info', logs))
  const before = logs.access().length
  const refused = await new Promise<{ status: number; setCookie: string[] | undefined }>((resolve, reject) => {
    const req = http.request(`${tether.url}/ws`, { agent: false, headers: { cookie: jar.header()!, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13', 'x-big': 'b'.repeat(10_000) } })
    req.on('upgrade', (_res, sock) => { sock.destroy(); resolve({ status: 101, setCookie: undefined }) })
    req.on('response', (res) => { jar.apply(res.headers['set-cookie']); res.resume(); resolve({ status: res.statusCode ?? 0, setCookie: res.headers['set-cookie'] }) })
    req.on('error', reject)
    req.end()
  })
  t.equal(refused.status, 431, "the upstream's 431 reaches the client")
  t.notOk(refused.setCookie?.some((c) => c.startsWith('tether=')), 'no affinity cookie moving the user there')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { protocol: 'websocket', status: 431, outcome: 'head_too_large' }, "logged as the client's own head refused, not a move")
  const next = await get(tether.url, jar)
  t.not(next.body.id, home, 'moved off the disabled upstream')
  t.equal(apps.find((a) => a.id === next.body.id)!.heads.at(-1)!['x-tether-rehydrate-status'], 'delivered', 'the next request brings the state')
  t.equal(next.body.n, 2, 'the count goes on from the stored state')
})

t.test("a WebSocket handshake without the user's state that its upstream answers 431 (its own refusal): the client gets that 431 whole, and it is not sent again", async (t) => {
  const handshakes: string[] = []
  const apps = await Promise.all(['a', 'b'].map(async (id) => {
    const up = await startUpstream(id, (_req, res) => res.end(id))
    up.server.on('upgrade', (_req: http.IncomingMessage, sock: import('node:net').Socket) => {
      handshakes.push(id)
      sock.on('error', () => undefined)
      sock.end('HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 7\r\n\r\nown-431')
    })
    return up
  }))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const tether = await startTether(testConfig(apps, { retries: { attempts: 2 } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const sock = (await import('node:net')).connect(tether.port, '127.0.0.1')
  t.teardown(() => { sock.destroy() })
  let received = ''
  sock.on('data', (c: Buffer) => { received += c.toString('latin1') })
  sock.on('error', () => undefined)
  const ended = new Promise((r) => sock.once('end', r))
  sock.write('GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  await within(ended, 5_000, 'the answer to end')
  t.match(received, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n[\s\S]*\r\n\r\nown-431$/, "the upstream's 431, whole")
  t.equal(handshakes.length, 1, 'sent once')
})

t.test("a WebSocket client that leaves while its handshake is sent again without the state (after a 431) is logged client_abort, as a plain request's", async (t) => {
  const { seen, tunnelled, logs, tether, jar, home, to, before } = await wsUserMoving(t, 3)
  const client = await rawHandshake(t, tether.url, jar, 'EARLY', () => seen.length === 3, 'the handshake sent again')
  t.same(seen, [`${home} -`, `${to} ws delivered +previous`, `${to} ws too_large`])
  client.socket.destroy()
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { protocol: 'websocket', status: 0, outcome: 'client_abort', upstream: to })
  t.equal(client.received(), '', 'the client got nothing (the 431 least of all)')
  t.same(tunnelled, [], 'its early bytes went nowhere: no connection switched')
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 0 }, 'no answer: nothing counted, as for a plain request')
})

t.test("a retried WebSocket handshake (its upstream refused the connection) refused 431 for the state is sent again without it to the same upstream, as a plain request", async (t) => {
  const { apps, seen, tunnelled, phase } = await wsRefusingApps(t, ['a', 'b'])
  const logs = new LogCapture()
  const { tether, jar } = await tetherWithUser(t, apps, {}, createLogger('info', logs))
  const home = (await get(tether.url, jar)).body.id
  const to = apps.find((a) => a.id !== home)!.id
  await apps.find((a) => a.id === home)!.close() // its port refuses connections; health does not know yet
  phase.n = 2
  const before = logs.access().length
  const client = await rawHandshake(t, tether.url, jar, 'EARLY', (r) => r.includes('\r\n\r\n'), 'the answer head')
  t.match(client.received(), new RegExp(`^HTTP/1\\.1 101 [^]*x-up: ${to}\r\n`, 'i'), 'switched on the retry\'s upstream')
  await waitFor(() => tunnelled.length > 0, 5_000, 'the early bytes through the tunnel')
  t.same(tunnelled, [`${to} EARLY`], 'once, through the tunnel')
  t.same(seen, [`${home} -`, `${to} ws delivered +previous`, `${to} ws too_large`], 'the retry carried the state; its resend without it went to the same upstream')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { protocol: 'websocket', status: 101, outcome: 'failover', upstream: to, retries: 1 })
  t.same(await rehydrations(tether), { delivered: 0, no_state: 0, error: 1 })
})
