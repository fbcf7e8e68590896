// "Where is this user?" end to end: GET /sessions/<key> on a real Tether in front of real
// upstreams, for every key kind, by the raw key and by the access log's form; moves and
// unpins ordered through the admin API happen at the next request with reason=admin and
// rehydration; mutations need the token; with affinity.shared: redis every replica answers
// the same; `tether session` prints it for a person.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { showSession } from '../src/admin/admin-client.js'
import { SCAN_TIMEOUT, SessionLookup } from '../src/admin/session-lookup.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { SessionRecords } from '../src/affinity/session-records.js'
import { headTimeout, startAdminFront } from '../src/workers/admin-front.js'
import { startTether, type Tether } from '../src/app.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { SessionIds } from '../src/affinity/session-id.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request, startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { runCli } from './fixtures/cli.js'
import { startRedis, type RedisServer } from './fixtures/redis-server.js'
import { setCookieValue, decodeTetherCookie } from './fixtures/users.js'

const TOKEN = 'admin-token-for-session-tests'
const AUTH = { authorization: `Bearer ${TOKEN}` }

/** An upstream that answers its id plus the move headers it got, and checkpoints `v<n>` (n counts the answers of all of `counter`'s apps). */
async function app(id: string, counter: { n: number }): Promise<Upstream> {
  return startUpstream(id, (req, res) => {
    const n = ++counter.n
    res.writeHead(200, { 'content-type': 'application/json', 'x-tether-state': `v${n}`, 'x-tether-state-version': String(n) })
    res.end(JSON.stringify({ id, moved: req.headers['x-tether-moved'] ?? null, rehydrate: req.headers['x-tether-rehydrate'] ?? null }))
  })
}

async function apps(t: Test, ids: string[]): Promise<Upstream[]> {
  const counter = { n: 0 }
  const ups = await Promise.all(ids.map((id) => app(id, counter)))
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  return ups
}

async function tether(t: Test, ups: Upstream[], affinity: Partial<Config['affinity']>, over: Parameters<typeof testConfig>[1] = {}): Promise<{ tt: Tether; logs: LogCapture }> {
  const logs = new LogCapture()
  const tt = await startTether(testConfig(ups, { admin: { token: TOKEN }, ...over, affinity }), { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  return { tt, logs }
}

async function lookup(tt: Tether, key: string): Promise<{ status: number; body: Record<string, unknown> | string }> {
  const r = await request(`${tt.adminUrl}/sessions/${encodeURIComponent(key)}`, { headers: AUTH })
  return { status: r.status, body: r.status === 200 ? JSON.parse(r.body) as Record<string, unknown> : r.body }
}

async function admin(tt: Tether, method: string, path: string, headers: http.OutgoingHttpHeaders = AUTH): Promise<{ status: number; body: string }> {
  const r = await request(`${tt.adminUrl}${path}`, { method, headers })
  return { status: r.status, body: r.body }
}

const CLIENT_IP: Partial<Config['affinity']> = { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } }
const HEADER: Partial<Config['affinity']> = { key: 'header', header: { name: 'X-Tenant' } }

t.test('a client_ip user is found by the raw IP and by the hash the access log shows; the log never carries the IP', async (t) => {
  const ups = await apps(t, ['a', 'b'])
  const { tt, logs } = await tether(t, ups, CLIENT_IP, { state: { store: 'memory' } })
  const ip = '203.0.113.77'
  const first = JSON.parse((await request(tt.url, { headers: { 'x-forwarded-for': ip } })).body) as { id: string }
  const line = logs.access().at(-1)!
  const logged = line['session'] as string
  t.match(logged, /^h:[0-9a-f]{32}$/, 'the access log shows a keyed hash')
  t.notOk(JSON.stringify(logs.records).includes(ip), 'the raw IP is in no log line')

  const byIp = await lookup(tt, ip)
  t.equal(byIp.status, 200)
  t.match(byIp.body, {
    key: ip, session: logged, key_kind: 'client_ip', upstream: first.id, epoch: 0, source: 'table',
    last_move: null, pending_move: null, checkpoint: { version: 1, bytes: 2, upstream: first.id, epoch: 0 }, checkpoint_status: 'found', drain: null,
  })
  t.match((byIp.body as Record<string, unknown>)['created'], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/, 'created is RFC 3339')
  const byHash = await lookup(tt, logged)
  t.equal(byHash.status, 200, 'the logged form finds the same session')
  t.match(byHash.body, { key: logged, session: logged, upstream: first.id })
  t.notOk(JSON.stringify(byHash.body).includes(ip), 'asked by its hash, the answer does not show the raw IP')

  t.equal((await lookup(tt, '198.51.100.1')).status, 404, 'an IP never seen: 404')
  t.equal((await lookup(tt, 'h:00000000000000000000000000000000')).status, 404, 'a hash that matches nothing: 404')
  const draining = await admin(tt, 'POST', `/upstreams/${first.id}/drain`)
  t.equal(draining.status, 200)
  t.match((await lookup(tt, ip)).body, { drain: { migrate: false } }, 'the drain of its upstream shows')
})

t.test('a signed-cookie user (no table) is found by the session id inside the cookie, as logged', async (t) => {
  const ups = await apps(t, ['a', 'b'])
  const { tt, logs } = await tether(t, ups, { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secure: false } }, { state: { store: 'none' } })
  const r = await request(tt.url)
  const cookie = setCookieValue(r.headers['set-cookie'], 'tether')!
  const sessionId = decodeTetherCookie(cookie).sessionId
  t.equal(logs.access().at(-1)!['session'], sessionId, 'the access log carries the session id inside the cookie')
  const found = await lookup(tt, sessionId)
  t.equal(found.status, 200)
  t.match(found.body, { key: sessionId, session: sessionId, key_kind: 'cookie', upstream: (JSON.parse(r.body) as { id: string }).id, epoch: 0, source: 'seen', checkpoint: null, checkpoint_status: 'none' })
  t.equal((await lookup(tt, 'AAAAAAAAAAAAAAAAAAAAAA')).status, 404)
  t.equal((await lookup(tt, new SessionIds(null).hash(sessionId))).status, 404, 'an h: form names no cookie session (they are logged as they are)')
})

t.test('an application-cookie user is found by the cookie value and by its logged form; the log never carries the value', async (t) => {
  const ups = await Promise.all(['a', 'b'].map((id) => startUpstream(id, (req, res) => {
    res.writeHead(200, { 'set-cookie': 'sid=s3ss10n-v4lue-0123; Path=/', 'content-type': 'text/plain' })
    res.end(`${id}\n`)
  })))
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  const { tt, logs } = await tether(t, ups, { key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'client_ip' } }, { state: { store: 'memory' } })
  const home = (await request(tt.url)).body.trim()
  t.equal((await request(tt.url, { headers: { cookie: 'sid=s3ss10n-v4lue-0123' } })).body.trim(), home, 'the learned cookie routes home')
  const logged = logs.access().at(-1)!['session'] as string
  t.match(logged, /^h:[0-9a-f]{32}$/)
  t.notOk(JSON.stringify(logs.records).includes('s3ss10n-v4lue'), 'the cookie value is in no log line')
  t.match((await lookup(tt, 's3ss10n-v4lue-0123')).body, { session: logged, key_kind: 'app_cookie', upstream: home, source: 'table' })
  t.match((await lookup(tt, logged)).body, { key: logged, upstream: home })
})

t.test('with the access log off, a header user is still found by the logged form another replica with the same secret would log', async (t) => {
  const ups = await apps(t, ['a', 'b'])
  const secret = 'shared-log-secret-0123456789'
  const { tt, logs } = await tether(t, ups, HEADER, { log: { access: false, session_secret: secret } })
  const homes = new Map<string, string>()
  for (let i = 0; i < 50; i++) homes.set(`tenant-${i}`, (JSON.parse((await request(tt.url, { headers: { 'x-tenant': `tenant-${i}` } })).body) as { id: string }).id)
  t.equal(logs.access().length, 0, 'no access log')
  const form = new SessionIds(secret).hash('tenant-37')
  const found = await lookup(tt, form)
  t.equal(found.status, 200, 'the logged form finds the session')
  t.match(found.body, { key: form, session: form, key_kind: 'header', upstream: homes.get('tenant-37'), source: 'table' })
  t.equal((await lookup(tt, new SessionIds(secret).hash('tenant-never-seen'))).status, 404, 'the form of a key never seen: 404')
})

t.test('a header value in UTF-8 is found by its text (Node holds its bytes as latin1 characters)', async (t) => {
  const ups = await apps(t, ['a', 'b'])
  const { tt } = await tether(t, ups, HEADER)
  const text = 'société-7'
  const bytes = Buffer.from(text, 'utf8').toString('latin1') // what the client sends, byte for byte
  const home = (JSON.parse((await request(tt.url, { headers: { 'x-tenant': bytes } })).body) as { id: string }).id
  const found = await lookup(tt, text)
  t.equal(found.status, 200, 'asked by the UTF-8 text')
  t.match(found.body, { key: text, upstream: home, source: 'table' })
  t.equal((await lookup(tt, bytes)).status, 200, 'and by the latin1 spelling of its bytes')
  t.equal((await lookup(tt, 'soci\u00e9t\u00e9-8')).status, 404, 'another text: 404')
})

t.test('a move ordered through the admin API happens at the next request, with reason=admin and the checkpoint', async (t) => {
  const ups = await apps(t, ['a', 'b', 'c'])
  const { tt } = await tether(t, ups, HEADER, { state: { store: 'memory' } })
  const go = async (): Promise<{ id: string; moved: string | null; rehydrate: string | null }> =>
    JSON.parse((await request(tt.url, { headers: { 'x-tenant': 'acme' } })).body) as { id: string; moved: string | null; rehydrate: string | null }
  const home = (await go()).id
  await go()
  const to = ['a', 'b', 'c'].find((id) => id !== home)!

  t.equal((await admin(tt, 'POST', `/sessions/acme/move?to=${to}`, {})).status, 401, 'a move needs the token')
  t.equal((await admin(tt, 'DELETE', '/sessions/acme', {})).status, 401, 'an unpin needs the token')
  t.equal((await admin(tt, 'GET', '/sessions/acme', {})).status, 401, 'so does the lookup')
  t.equal((await admin(tt, 'POST', '/sessions/acme/move')).status, 400, 'a move without ?to=')
  t.equal((await admin(tt, 'POST', '/sessions/acme/move?to=nope')).status, 409, 'a move to an unknown upstream')
  t.equal((await admin(tt, 'POST', '/sessions/nobody/move?to=a')).status, 404, 'a move of an unknown session')
  t.equal((await admin(tt, 'POST', '/sessions/nobody/move?to=nope')).status, 404, 'an unknown session, to an unknown upstream: the session is what is missing')
  t.equal((await admin(tt, 'PUT', '/sessions/acme')).status, 405)

  const ordered = await admin(tt, 'POST', `/sessions/acme/move?to=${to}`)
  t.same([ordered.status, JSON.parse(ordered.body)], [202, { key: 'acme', to, applies: 'at the next request' }])
  t.match((await lookup(tt, 'acme')).body, { upstream: home, pending_move: { to } }, 'pending until the next request')
  const moved = await go()
  t.equal(moved.id, to, 'the next request goes where the admin said')
  t.match(moved.moved, new RegExp(`^from=${home}; reason=admin; epoch=1$`))
  t.equal(moved.rehydrate, 'v2', 'with the newest checkpoint')
  t.equal((await go()).id, to, 'and stays')
  const after = (await lookup(tt, 'acme')).body
  t.match(after, { upstream: to, epoch: 1, pending_move: null, last_move: { from: home, to, reason: 'admin' } })

  // unpin: the hash decides again (back home, since home is where the hash put it first)
  t.equal((await admin(tt, 'DELETE', '/sessions/acme')).status, 202)
  const back = await go()
  t.equal(back.id, home, 'unpinned: placed by the hash again')
  t.match(back.moved, /reason=admin; epoch=2$/)
  t.equal(back.rehydrate, 'v4', 'with the newest checkpoint (the one the moved-to upstream wrote)')

  // by the logged form (h:...): the order is kept under the raw key, which the router reads
  const logged = ((await lookup(tt, 'acme')).body as { session: string }).session
  t.equal((await admin(tt, 'POST', `/sessions/${logged}/move?to=${to}`)).status, 202)
  t.match((await lookup(tt, logged)).body, { pending_move: { to } }, 'the order shows, by either form')
  t.equal((await go()).id, to, 'a move ordered by the logged form is done at the next request')
  t.equal((await admin(tt, 'DELETE', `/sessions/${logged}`)).status, 202)
  t.equal((await go()).id, home, 'and so is an unpin')
})

t.test('with key: none there are no sessions: the access log names none and the lookup answers 404', async (t) => {
  const ups = await apps(t, ['a'])
  const logs = new LogCapture()
  const tt = await startTether(testConfig(ups, { affinity: { key: 'none' } }), { logger: createLogger('info', logs) })
  t.teardown(() => tt.close(0))
  await request(tt.url)
  t.equal(logs.access().at(-1)!['session'], null, 'round robin: no session in the log')
  t.equal((await request(`${tt.adminUrl}/sessions/x`)).status, 404)
  t.equal((await request(`${tt.adminUrl}/sessions/x`, { method: 'DELETE' })).status, 404)
})

t.test('with affinity.shared: redis every replica answers the same for a user only one of them served', async (t) => {
  const redis: RedisServer = await startRedis()
  t.teardown(() => redis.stop())
  const ups = await apps(t, ['a', 'b', 'c'])
  const over = { state: { store: 'redis' as const, timeout: 200, redis: { ...DEFAULTS.state.redis, url: redis.url, key_prefix: 'sess:' } } }
  const [one, two] = [await tether(t, ups, { ...HEADER, shared: 'redis' }, over), await tether(t, ups, { ...HEADER, shared: 'redis' }, over)]
  const served = JSON.parse((await request(one.tt.url, { headers: { 'x-tenant': 'globex' } })).body) as { id: string }
  const a = await lookup(one.tt, 'globex')
  let b = await lookup(two.tt, 'globex')
  // the binding is written through to Redis without waiting: poll the other replica with a deadline
  for (const deadline = Date.now() + 2_000; b.status !== 200 && Date.now() < deadline;) b = await lookup(two.tt, 'globex')
  t.equal(b.status, 200, 'the replica that never served the user knows it')
  t.match(a.body, { upstream: served.id, epoch: 0, source: 'shared', checkpoint: { version: 1 } })
  t.match(b.body, { upstream: served.id, epoch: 0, source: 'shared', checkpoint: { version: 1 } })
  const placed = one.tt.sessions.peek('globex', Date.now())?.createdAt
  t.equal((a.body as Record<string, unknown>)['created'], new Date(placed!).toISOString(), 'created: when the replica that served the user placed it')
  t.equal((b.body as Record<string, unknown>)['created'], (a.body as Record<string, unknown>)['created'], 'the same from the replica that never served the user (the placement time stored beside the binding)')
})

t.test('tether session prints the lookup for a person, and says clearly when it cannot', async (t) => {
  const ups = await apps(t, ['a', 'b'])
  const { tt } = await tether(t, ups, HEADER, { state: { store: 'memory' } })
  const home = (JSON.parse((await request(tt.url, { headers: { 'x-tenant': 'initech' } })).body) as { id: string }).id
  const hash = new SessionIds(null) // another process's secret: its form differs
  const shown = await runCli(['session', 'initech', '--admin', tt.adminUrl, '--token', TOKEN])
  t.equal(shown.code, 0, shown.stderr)
  t.match(shown.stdout, new RegExp(`^session    h:[0-9a-f]{32} \\(key: header\\)\\nupstream   ${home} \\(epoch 0, from this replica's pin\\)\\n`))
  t.match(shown.stdout, /\ncheckpoint version 1, 2 bytes, stored \S+ by /)
  t.match(shown.stdout, /\nlast move  -\n/)
  const json = await runCli(['session', 'initech', '--json', '--admin', tt.adminUrl], { TETHER_ADMIN_TOKEN: TOKEN })
  t.match(JSON.parse(json.stdout), { key: 'initech', upstream: home })
  const unknown = await runCli(['session', hash.hash('initech'), '--admin', tt.adminUrl, '--token', TOKEN])
  t.equal(unknown.code, 1)
  t.match(unknown.stderr, /^tether session: 404 Not Found: no session "h:[0-9a-f]+" known to this Tether\n$/)
  const refused = await runCli(['session', 'initech', '--admin', tt.adminUrl])
  t.equal(refused.code, 1)
  t.match(refused.stderr, /401 Unauthorized/)
  t.equal((await runCli(['session'])).code, 2, 'no key: a usage error')
})

t.test('a lookup by logged form (a scan of every key) gets a longer wait than a raw key, and a silent admin API is named', async (t) => {
  // an admin API that never answers: each lookup ends at its own timeout, with a sentence saying so
  const server = http.createServer(() => undefined)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const admin = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, token: null }
  const timeouts = { call: 100, scan: 400 }
  const raw = await showSession(admin, 'initech', false, timeouts)
  t.same([raw.code, raw.err], [1, `tether session: the admin API at ${admin.url} did not answer within 0.1 s\n`])
  const scan = await showSession(admin, `h:${'0'.repeat(32)}`, false, timeouts)
  t.same([scan.code, scan.err], [1, `tether session: the admin API at ${admin.url} did not answer within 0.4 s\n`])
  // with workers, the primary's admin front waits as long for the leading worker's scan
  for (const path of [`/sessions/h:${'0'.repeat(32)}`, `/sessions/h%3A${'0'.repeat(32)}`, '/sessions/h%3aab', `/sessions/%68:${'0'.repeat(32)}/move?to=a`]) t.equal(headTimeout(path), SCAN_TIMEOUT, path)
  for (const path of ['/sessions/initech', '/sessions/hx', '/sessions/h%E0%A4%A', '/upstreams/h:x', '/upstreams', '/']) t.equal(headTimeout(path), 10_000, path)
})

t.test('the logged form is a keyed hash: the same under one secret, different under another', async (t) => {
  const a = new SessionIds('0123456789abcdef-log')
  const b = new SessionIds('0123456789abcdef-log')
  const key = { kind: 'table', value: '10.0.0.5', learned: false, checkpoints: true, learn: false } as const
  t.equal(a.logged(key), b.logged(key), 'one secret, one form (every replica)')
  t.not(new SessionIds(null).logged(key), new SessionIds(null).logged(key), 'a random secret per process')
  t.match(a.logged(key), /^h:[0-9a-f]{32}$/)
  t.equal(a.logged({ kind: 'none', learn: false }), null)
})

t.test("workers' admin front: a session by raw key is asked of each worker in turn until one knows it; one that does not answer is passed over; a logged form is the leading worker's", async (t) => {
  const asked: string[] = []
  /** A worker's private admin listener that answers `status` to /sessions/... (null: closed port). */
  const fakeWorker = async (name: string, status: number | null): Promise<string> => {
    const server = http.createServer((req, res) => {
      asked.push(`${name} ${req.method} ${req.url}`)
      res.writeHead(status!, { 'content-type': 'text/plain' })
      res.end(`${name}\n`)
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    if (status === null) await new Promise<void>((r) => server.close(() => r()))
    else t.teardown(() => new Promise<void>((r) => server.close(() => r())))
    return url
  }
  const front = async (admins: string[]) => {
    const f = await startAdminFront('127.0.0.1', 0, { admins: () => admins, metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
    t.teardown(() => f.close())
    return f.url
  }
  const ask = async (url: string, path: string, method = 'GET'): Promise<string> => {
    const r = await request(`${url}${path}`, { method })
    return `${r.status} ${r.body.trim()}`
  }
  const [lead, gone, knows, alsoKnows] = [await fakeWorker('lead', 404), await fakeWorker('gone', null), await fakeWorker('knows', 200), await fakeWorker('also', 200)]
  const url = await front([lead, gone, knows, alsoKnows])
  t.equal(await ask(url, '/sessions/abc'), '200 knows', 'the first worker that knows the session answers (one not answering passed over)')
  t.same(asked, ['lead GET /sessions/abc', 'knows GET /sessions/abc'], 'asked in turn, no further')
  asked.length = 0
  t.equal(await ask(url, '/sessions/abc/move?to=a', 'POST'), '200 knows', 'a move too: ordered once, where the session is known')
  t.same(asked, ['lead POST /sessions/abc/move?to=a', 'knows POST /sessions/abc/move?to=a'])
  asked.length = 0
  t.equal(await ask(url, `/sessions/h:${'0'.repeat(32)}`), '404 lead', 'a logged form (table keys: every worker holds the pins) is the leading worker\'s alone')
  t.same(asked, [`lead GET /sessions/h:${'0'.repeat(32)}`])
  t.equal(await ask(await front([lead, lead]), '/sessions/abc'), '404 lead', 'known nowhere: 404')
  t.match(await ask(await front([lead, gone]), '/sessions/abc'), /^502 /, 'not known by those that answered, but one did not: 502, not 404')
  t.match(await ask(await front([gone, gone]), '/sessions/abc'), /^502 /, 'no worker answered: 502')
})

t.test('with workers, an ordered move is taken (202) only once the other workers have it', async (t) => {
  const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
  const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null, pins: sessions.table })
  sessions.pin('acme', 'a', 0, 1_000)
  let reached: () => void = () => undefined
  const told: unknown[] = []
  const lookup = new SessionLookup({
    keyKind: 'header', sessions, records, shared: null, store: null, now: () => 2_000,
    health: { drainingSince: () => null, drainMigrates: () => false }, mayTake: () => true,
    ordered: (key, to, at) => {
      told.push([key, to, at])
      return new Promise<void>((r) => { reached = r })
    },
  })
  let verdict: string | null = null
  const moving = lookup.move('acme', 'b').then((v) => { verdict = v })
  await new Promise((r) => setImmediate(r))
  t.same(told, [['acme', 'b', 2_000]], 'the order goes to the other workers, named by when it was made')
  t.match(records.ordered('acme'), { to: 'b', at: 2_000 }, 'and is held here')
  t.equal(verdict, null, 'not answered while the others do not have it')
  reached()
  await moving
  t.equal(verdict, 'ordered', 'answered once they have it')
})

t.test('with key client_ip, a client address asked in another spelling (IPv4-mapped, upper case, expanded, bracketed) finds the key Tether holds; a header key is taken as written', async (t) => {
  const lookupOf = (keyKind: 'client_ip' | 'header'): { lookup: SessionLookup; records: SessionRecords } => {
    const sessions = new SessionTable({ maxEntries: 10, idleTimeout: 60_000, absoluteTimeout: null })
    const records = new SessionRecords({ maxEntries: 10, idleTimeout: 60_000, secret: null, pins: sessions.table })
    // the keys as Tether holds them: Node's peer address with an IPv4-mapped prefix stripped, IPv6 canonical
    sessions.pin('203.0.113.7', 'a', 0, 1_000)
    sessions.pin('2001:db8::1', 'b', 0, 1_000)
    const lookup = new SessionLookup({
      keyKind, sessions, records, shared: null, store: null, now: () => 2_000,
      health: { drainingSince: () => null, drainMigrates: () => false }, mayTake: () => true,
    })
    return { lookup, records }
  }
  const { lookup, records } = lookupOf('client_ip')
  // '::ffff:203.0.113.7' is what the upstream sees in X-Forwarded-For from a dual-stack listener
  for (const [asked, upstream] of [['::ffff:203.0.113.7', 'a'], ['::FFFF:203.0.113.7', 'a'], ['::ffff:cb00:7107', 'a'], ['2001:DB8::1', 'b'], ['2001:0db8:0:0:0:0:0:1', 'b'], ['[2001:db8::1]', 'b']] as const) {
    t.match(await lookup.find(asked), { key: asked, upstream, source: 'table' }, `${asked} finds the user`)
  }
  t.equal(await lookup.find('203.0.113.8'), null, 'another address is still unknown')
  t.equal(await lookup.move('::ffff:203.0.113.7', 'c'), 'ordered')
  t.match(records.ordered('203.0.113.7'), { to: 'c' }, 'the order is kept under the key Tether holds')
  t.equal(await lookupOf('header').lookup.find('::ffff:203.0.113.7'), null, 'a header value is not an address: taken as written')
})
