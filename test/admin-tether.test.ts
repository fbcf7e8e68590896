// The admin API of a whole Tether: the real CLI process survives hostile admin and proxy
// requests (a malformed escape once ended it), the token guards GET /upstreams, and the
// upstream rows keep their documented shape (snake_case, RFC 3339 times, null for unknown).
import t from 'tap'
import { startCli, tempFile } from './fixtures/cli.js'
import { request, startProxy, startUpstream } from './fixtures/upstream.js'
import { healthState } from './fixtures/wait.js'

const TOKEN = 'admin-token-for-tests'
const AUTH = { authorization: `Bearer ${TOKEN}` }

t.test('the real process answers hostile admin and proxy requests and keeps serving both listeners', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  // the default admin section: no token, so the malformed drain needs no credentials
  const tether = await startCli(tempFile('admin.yaml', [
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    'upstreams:',
    `  - { id: a, url: "${app.url}" }`,
    '',
  ].join('\n')))
  t.teardown(async () => { if (tether.proc.exitCode === null && tether.proc.signalCode === null) await tether.stop('SIGKILL') })
  const line = tether.stdout().split('\n').find((l) => l.includes('"tether listening"'))!
  const adminUrl = (JSON.parse(line) as { admin: string }).admin

  const hostile: [string, string][] = [
    ['POST', '/upstreams/%E0%A4%A/drain'], ['POST', '/upstreams/%E0%A4%A/undrain'], ['GET', '/%E0%A4%A'],
    ['GET', '/upstreams/%/drain'], ['POST', '/upstreams/%ED%A0%80/drain'], ['GET', '/healthz%'], ['GET', '/readyz%FF'],
    ['POST', `/upstreams/${'x'.repeat(5000)}/drain`], ['DELETE', '/upstreams'], ['GET', '/upstreams/a/drain'],
  ]
  for (const [method, path] of hostile) {
    const r = await request(`${adminUrl}${path}`, { method })
    if (r.status < 400 || r.status >= 500) t.fail(`admin ${method} ${path}: ${r.status}`)
    const p = await request(`${tether.url}${path}`, { method, headers: { cookie: 'tether=%E0%A4%A' } })
    if (p.status === 0) t.fail(`proxy ${method} ${path}: no answer`)
  }
  const malformed = await request(`${adminUrl}/upstreams/%E0%A4%A/drain`, { method: 'POST' })
  t.equal(`${malformed.status} ${malformed.body}`, '400 Bad Request: malformed percent-escape in the path\n', 'the issue\'s request gets 400')
  t.equal(tether.proc.exitCode, null, 'the process is still running')
  t.equal(tether.proc.signalCode, null)
  t.equal((await request(`${adminUrl}/healthz`)).status, 200, 'the admin listener still answers')
  t.equal((await request(tether.url)).body, 'a\n', 'the proxy still serves')
  t.notMatch(tether.stderr(), /URIError|uncaught/i, 'nothing uncaught on stderr')
})

t.test('with admin.token set, GET /upstreams needs it while /healthz, /readyz and /metrics stay open', async (t) => {
  const app = await startUpstream('a')
  const tether = await startProxy([app], { admin: { token: TOKEN } })
  t.teardown(async () => { await tether.close(0); await app.close() })
  const open = await Promise.all(['/healthz', '/readyz', '/metrics'].map((p) => request(`${tether.adminUrl}${p}`)))
  t.same(open.map((r) => r.status), [200, 200, 200], 'probes and scrapers need no token')
  const refused = await request(`${tether.adminUrl}/upstreams`)
  t.equal(refused.status, 401)
  t.match(refused.body, /^Unauthorized: admin\.token required/, 'no token: the answer says one is needed')
  const wrong = await request(`${tether.adminUrl}/upstreams`, { headers: { authorization: 'Bearer not-the-token' } })
  t.same([wrong.status, wrong.body], [401, 'Unauthorized: wrong admin token\n'], 'a wrong one: the answer says so')
  t.notMatch(refused.body, new RegExp(app.url.replace(/[.]/g, '\\.')), 'the upstream URL is not shown')
  t.equal((await request(`${tether.adminUrl}/upstreams`, { headers: { authorization: 'Bearer' } })).status, 401, '"Bearer" with no token')
  t.equal((await request(`${tether.adminUrl}/upstreams`, { headers: { authorization: `bearer ${TOKEN}` } })).status, 200, 'a lower-case scheme')
  const rows = JSON.parse((await request(`${tether.adminUrl}/upstreams`, { headers: AUTH })).body) as Record<string, unknown>[]
  t.same(Object.keys(rows[0]!), [
    'id', 'url', 'weight', 'state', 'ready', 'accepts_new', 'draining', 'draining_since', 'disabled', 'active_failed',
    'active_successes', 'active_failures', 'passive_failures', 'ejected_until', 'ejection', 'times_ejected', 'slow_start_weight',
    'in_flight', 'queued', 'websockets', 'sessions', 'migrating', 'sessions_remaining',
  ], 'the documented fields, in order')
  t.match(rows[0], { id: 'a', url: app.url, weight: 1, state: 'healthy', accepts_new: true, draining_since: null, ejected_until: null, ejection: null })
  t.equal(rows[0]!['sessions'], null, 'the default signed-cookie key keeps no table: sessions unknown, not 0')
})

t.test('GET /upstreams shows drains and ejections as RFC 3339 times and counts client_ip sessions', async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  const tether = await startProxy(apps, { affinity: { key: 'client_ip' } })
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const home = (await request(tether.url)).body.trim()
  const other = home === 'a' ? 'b' : 'a'
  const rows = async (): Promise<Record<string, Record<string, unknown>>> => {
    const list = JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as Record<string, unknown>[]
    return Object.fromEntries(list.map((r) => [r['id'] as string, r]))
  }
  t.same([(await rows())[home]!['sessions'], (await rows())[other]!['sessions']], [1, 0], 'the client IP is one session on its upstream')

  const before = Date.now()
  t.equal((await request(`${tether.adminUrl}/upstreams/${other}/drain`, { method: 'POST' })).status, 200)
  const drained = (await rows())[other]!
  t.match(drained, { state: 'draining', draining: true, accepts_new: false, draining_since: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/ })
  t.ok(Date.parse(drained['draining_since'] as string) >= before - 1, 'draining_since is now, as a wall-clock time')

  await apps.find((a) => a.id === home)!.close()
  await request(tether.url) // a refused connection ejects it at once, and the user moves
  await healthState(tether.health, home, 'ejected', 5_000)
  const ejected = (await rows())[home]!
  t.match(ejected, { ready: false, times_ejected: 1, ejected_until: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/ })
  t.ok(Date.parse(ejected['ejected_until'] as string) > Date.now(), 'ejected_until is in the future')
  t.same(ejected['ejection'], { reason: 'refused', until: ejected['ejected_until'], ends: 'time', passes_left: null }, 'why, and what ends it (no active checks here: its time)')
})

t.test('a plain drain of an upstream whose drain migrates answers migrate: true (the migration goes on until an undrain)', async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  const tether = await startProxy(apps)
  t.teardown(async () => { await tether.close(0); await Promise.all(apps.map((a) => a.close())) })
  const drain = async (q: string): Promise<unknown> => JSON.parse((await request(`${tether.adminUrl}/upstreams/a/drain${q}`, { method: 'POST' })).body)
  t.same(await drain(''), { id: 'a', draining: true }, 'a plain drain')
  t.same(await drain('?migrate=true'), { id: 'a', draining: true, migrate: true }, 'made to migrate')
  t.same(await drain('?migrate=false'), { id: 'a', draining: true, migrate: true }, 'asked again without: it still migrates, and says so')
  t.equal(tether.health.drainMigrates('a'), true)
  await request(`${tether.adminUrl}/upstreams/a/undrain`, { method: 'POST' })
  t.same(await drain(''), { id: 'a', draining: true }, 'after an undrain, a plain drain again')
})
