// The admin listener alone, under hostile input: malformed escapes, dot segments, overlong
// and non-path targets, wrong methods, bad credentials, throwing handlers, big and slow
// requests. Every test ends by checking that the listener still answers.
import t, { type Test } from 'tap'
import net from 'node:net'
import { startAdmin, ADMIN_LIMITS, type AdminDeps, type AdminLimits, type AdminServer } from '../src/admin/admin-server.js'
import { adminDeps } from './fixtures/admin-deps.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request, type Reply } from './fixtures/upstream.js'

const TOKEN = 'admin-token-for-tests'
const AUTH = { authorization: `Bearer ${TOKEN}` }
const KNOWN = new Set(['a', '[::1]:8080'])

interface Harness {
  readonly admin: AdminServer
  readonly url: string
  /** Drain and undrain calls that reached the callbacks. */
  readonly calls: string[]
  readonly logs: LogCapture
}

async function harness(t: Test, over: Partial<AdminDeps> = {}, limits: AdminLimits = ADMIN_LIMITS): Promise<Harness> {
  const calls: string[] = []
  const logs = new LogCapture()
  const deps = adminDeps(logs, {
    drain: (id) => { calls.push(`drain ${id}`); return KNOWN.has(id) },
    undrain: (id) => { calls.push(`undrain ${id}`); return KNOWN.has(id) },
    token: TOKEN,
    now: () => Date.parse('2025-11-25T16:00:00.000Z'),
    ...over,
  })
  const admin = await startAdmin('127.0.0.1', 0, deps, limits)
  t.teardown(() => admin.close())
  return { admin, url: admin.url, calls, logs }
}

/** Sends `text` on a fresh connection and collects everything until the server closes it. */
function raw(url: string, text: string, end = true): Promise<string> {
  const { port } = new URL(url)
  return new Promise((resolve) => {
    let out = ''
    const s = net.connect(Number(port), '127.0.0.1', () => (end ? s.end(text) : s.write(text)))
    s.on('data', (c) => (out += c))
    s.on('error', () => { /* a reset after the answer: what was received counts */ })
    s.on('close', () => resolve(out))
  })
}

async function stillServing(t: Test, url: string): Promise<void> {
  const r = await request(`${url}/healthz`)
  t.equal(`${r.status} ${r.body}`, '200 ok\n', 'the listener still answers /healthz')
}

function noStack(t: Test, r: Reply | string, what: string): void {
  t.notMatch(typeof r === 'string' ? r : r.body, /at .*\.(js|ts):\d+|URIError|TypeError/, `${what}: no stack trace or error name`)
}

t.test('the request that ended the process gets 400, with and without a token, and the listener keeps serving', async (t) => {
  for (const token of [null, TOKEN]) {
    const h = await harness(t, { token })
    for (const headers of [{}, AUTH]) {
      const r = await request(`${h.url}/upstreams/%E0%A4%A/drain`, { method: 'POST', headers })
      t.equal(r.status, 400, `token ${token === null ? 'unset' : 'set'}, ${Object.keys(headers).length ? 'with' : 'without'} credentials`)
      t.match(r.body, /^Bad Request: malformed percent-escape/)
      noStack(t, r, 'the 400')
    }
    t.same(h.calls, [], 'nothing was drained')
    await stillServing(t, h.url)
  }
})

t.test('a malformed escape in any route position gets 400 for every method', async (t) => {
  const h = await harness(t)
  const targets = [
    '/%E0%A4%A', '/%E0%A4%A/a/drain', '/upstreams/%E0%A4%A', '/upstreams/%E0%A4%A/drain', '/upstreams/a/%E0%A4%A',
    '/healthz%', '/readyz%2', '/metrics%ZZ', '/upstreams%', '/%', '/upstreams/%C0%AF/drain', '/upstreams/%ED%A0%80/undrain',
    '/upstreams/%FF/drain', '/upstreams/a/drain%', '/%E0%A4%A/%E0%A4%A/%E0%A4%A',
  ]
  for (const method of ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'OPTIONS']) {
    for (const target of targets) {
      const r = await request(`${h.url}${target}`, { method, headers: AUTH })
      if (r.status !== 400) t.fail(`${method} ${target}: ${r.status} ${r.body}`)
    }
  }
  t.pass(`${targets.length} targets x 6 methods: 400`)
  t.same(h.calls, [], 'nothing was drained')
  await stillServing(t, h.url)
})

t.test('dot segments, non-path targets and overlong paths are refused, and nothing is drained', async (t) => {
  const h = await harness(t)
  for (const target of ['/upstreams/../healthz', '/upstreams/a/../../readyz', '/./healthz', '/upstreams/%2e%2e/drain', '/upstreams/../upstreams/a/drain']) {
    // raw: a URL string given to an HTTP client has its dot segments resolved before sending
    const out = await raw(h.url, `POST ${target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`)
    t.match(out, /^HTTP\/1\.1 400 [\s\S]*dot segments/, target)
  }
  const star = await raw(h.url, 'GET * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(star, /^HTTP\/1\.1 400 /, 'GET * (OPTIONS * is answered: see admin-listener-bounds.test.ts)')
  const absolute = await raw(h.url, `POST http://127.0.0.1/upstreams/a/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`)
  t.match(absolute, /^HTTP\/1\.1 400 /, 'absolute-form')
  const long = await request(`${h.url}/upstreams/${'a'.repeat(4000)}/drain`, { method: 'POST', headers: AUTH })
  t.equal(long.status, 414, 'a 4 KB path')
  const huge = await raw(h.url, `POST /upstreams/${'%41'.repeat(20_000)}/drain HTTP/1.1\r\nHost: x\r\n\r\n`)
  t.match(huge, /^HTTP\/1\.1 (414|431) /, 'a 60 KB request line is refused by the parser or by us')
  const badMethod = await raw(h.url, 'FOO /healthz HTTP/1.1\r\nHost: x\r\n\r\n')
  t.match(badMethod, /^HTTP\/1\.1 400 /, 'a method the parser does not know')
  t.same(h.calls, [], 'nothing was drained')
  await stillServing(t, h.url)
})

t.test('a path that is no route gets 404: matching is exact', async (t) => {
  const h = await harness(t)
  for (const target of ['/nope', '/healthz/', '//healthz', '/HEALTHZ', '/upstreams/', '/upstreams/a', '/upstreams/a/drain/x', '/upstreams/a/b/drain', '/upstreams//drain/x', '/admin/upstreams']) {
    const r = await request(`${h.url}${target}`, { headers: AUTH })
    t.equal(`${r.status} ${r.body}`, '404 Not Found\n', target)
  }
  await stillServing(t, h.url)
})

t.test('a known path with another method gets 405 with Allow; GET routes answer HEAD', async (t) => {
  const h = await harness(t)
  const cases: [string, string, string][] = [
    ['POST', '/healthz', 'GET, HEAD'], ['PUT', '/readyz', 'GET, HEAD'], ['DELETE', '/metrics', 'GET, HEAD'],
    ['POST', '/upstreams', 'GET, HEAD'], ['OPTIONS', '/upstreams', 'GET, HEAD'],
    ['GET', '/upstreams/a/drain', 'POST'], ['HEAD', '/upstreams/a/drain', 'POST'], ['PUT', '/upstreams/a/undrain', 'POST'],
    ['DELETE', '/upstreams/a/drain', 'POST'], ['PATCH', '/upstreams/a/undrain', 'POST'],
  ]
  for (const [method, target, allow] of cases) {
    const r = await request(`${h.url}${target}`, { method, headers: AUTH })
    t.equal(r.status, 405, `${method} ${target}`)
    t.equal(r.headers['allow'], allow, `${method} ${target}: Allow`)
  }
  const head = await request(`${h.url}/healthz`, { method: 'HEAD' })
  t.equal(head.status, 200, 'HEAD /healthz')
  t.equal(head.body, '', 'no body')
  t.equal(head.headers['content-length'], '3', 'the GET length')
  t.same(h.calls, [], 'a GET never drains')
  await stillServing(t, h.url)
})

t.test('with a token, every route but /healthz, /readyz and /metrics requires it', async (t) => {
  const h = await harness(t, { upstreams: () => [{ id: 'a', url: 'http://10.0.0.1:8080' } as never] })
  for (const target of ['/healthz', '/readyz', '/metrics']) {
    t.equal((await request(`${h.url}${target}`)).status, 200, `${target} without a token`)
    t.equal((await request(`${h.url}${target}`, { headers: { authorization: 'Bearer wrong' } })).status, 200, `${target} ignores a wrong token`)
  }
  const refused = await request(`${h.url}/upstreams`)
  t.equal(refused.status, 401, 'GET /upstreams without the token')
  t.equal(refused.headers['www-authenticate'], 'Bearer realm="tether-admin"')
  t.notMatch(refused.body, /10\.0\.0\.1/, 'no upstream URL leaks')
  t.equal((await request(`${h.url}/upstreams`, { method: 'HEAD' })).status, 401, 'HEAD /upstreams without the token')
  const listed = await request(`${h.url}/upstreams`, { headers: AUTH })
  t.equal(listed.status, 200)
  t.same(JSON.parse(listed.body), [{ id: 'a', url: 'http://10.0.0.1:8080' }])
  for (const route of ['drain', 'undrain']) {
    t.equal((await request(`${h.url}/upstreams/a/${route}`, { method: 'POST' })).status, 401, `POST ${route} without the token`)
  }
  t.same(h.calls, [])
  const drained = await request(`${h.url}/upstreams/a/drain`, { method: 'POST', headers: AUTH })
  t.same([drained.status, JSON.parse(drained.body)], [200, { id: 'a', draining: true }])
  const undrained = await request(`${h.url}/upstreams/a/undrain`, { method: 'POST', headers: AUTH })
  t.same([undrained.status, JSON.parse(undrained.body)], [200, { id: 'a', draining: false }])
  t.same(h.calls, ['drain a', 'undrain a'])
})

t.test('missing, malformed, wrong and duplicated credentials are refused, logged without the token, and change nothing', async (t) => {
  const h = await harness(t)
  const cases: [string, string, number][] = [
    ['no Authorization header', '', 401],
    ['an empty header', 'Authorization: \r\n', 401],
    ['"Bearer" with no token', 'Authorization: Bearer\r\n', 401],
    ['"Bearer " and spaces', 'Authorization: Bearer    \r\n', 401],
    ['the token without a scheme', `Authorization: ${TOKEN}\r\n`, 401],
    ['Basic credentials', `Authorization: Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}\r\n`, 401],
    ['a wrong token', 'Authorization: Bearer not-the-token-XYZ\r\n', 401],
    ['a lower-case scheme with a wrong token', 'authorization: bearer not-the-token-XYZ\r\n', 401],
    ['the token in another header', `X-Admin-Token: ${TOKEN}\r\n`, 401],
    ['two headers, right then wrong', `Authorization: Bearer ${TOKEN}\r\nAuthorization: Bearer not-the-token-XYZ\r\n`, 400],
    ['two headers, wrong then right', `Authorization: Bearer not-the-token-XYZ\r\nauthorization: Bearer ${TOKEN}\r\n`, 400],
    ['the right header twice', `Authorization: Bearer ${TOKEN}\r\nAuthorization: Bearer ${TOKEN}\r\n`, 400],
  ]
  for (const [name, header, status] of cases) {
    for (const [method, target] of [['POST', '/upstreams/a/drain'], ['GET', '/upstreams']]) {
      const out = await raw(h.url, `${method} ${target} HTTP/1.1\r\nHost: x\r\n${header}Connection: close\r\n\r\n`)
      t.match(out, new RegExp(`^HTTP/1\\.1 ${status} `), `${name}: ${method} ${target} -> ${status}`)
    }
  }
  t.same(h.calls, [], 'nothing was drained')
  const refusals = h.logs.records.filter((r) => r['msg'] === 'admin request refused: missing or wrong token')
  t.equal(refusals.length, 18, 'each 401 is logged')
  t.match(refusals[0], { level: 40, method: 'POST', path: '/upstreams/a/drain', verdict: 'missing' })
  t.notMatch(JSON.stringify(h.logs.records), /not-the-token-XYZ/, 'presented tokens are never logged')
  await raw(h.url, `DELETE /sessions/10.0.0.77 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
  t.match(h.logs.records.at(-1), { msg: 'admin request refused: missing or wrong token', path: '/sessions/<key>' }, 'a refused session request is logged without its key')
  t.notMatch(JSON.stringify(h.logs.records), /10\.0\.0\.77/, 'the key (a client IP here) is not logged')
  const lower = await raw(h.url, `POST /upstreams/a/drain HTTP/1.1\r\nHost: x\r\nauthorization: bearer ${TOKEN}\r\nConnection: close\r\n\r\n`)
  t.match(lower, /^HTTP\/1\.1 200 /, 'a lower-case scheme with the right token is accepted')
  await stillServing(t, h.url)
})

t.test('without a token every route is open', async (t) => {
  const h = await harness(t, { token: null })
  t.equal((await request(`${h.url}/upstreams`)).status, 200)
  t.equal((await request(`${h.url}/upstreams/a/drain`, { method: 'POST' })).status, 200)
  t.equal((await request(`${h.url}/upstreams/a/drain`, { method: 'POST', headers: { authorization: 'Bearer anything' } })).status, 200, 'credentials are ignored')
  t.same(h.calls, ['drain a', 'drain a'])
})

t.test('the percent-decoded id reaches drain; an unknown id is 404 with the id quoted', async (t) => {
  const h = await harness(t)
  const v6 = await request(`${h.url}/upstreams/%5B%3A%3A1%5D%3A8080/drain`, { method: 'POST', headers: AUTH })
  t.same([v6.status, JSON.parse(v6.body)], [200, { id: '[::1]:8080', draining: true }])
  const unknown = await request(`${h.url}/upstreams/%3Cscript%3E%00/undrain`, { method: 'POST', headers: AUTH })
  t.equal(unknown.status, 404)
  t.equal(unknown.body, 'Not Found: unknown upstream "<script>\\u0000"\n', 'quoted as JSON, control characters escaped')
  t.match(unknown.headers['content-type'], /^text\/plain/)
  t.equal(unknown.headers['x-content-type-options'], 'nosniff')
  t.same(h.calls, ['drain [::1]:8080', 'undrain <script>\u0000'])
})

t.test('a handler that throws or rejects gets 500 with a short body, its cause logged, and the listener keeps serving', async (t) => {
  const boom = (what: string) => (): never => { throw new Error(`${what} exploded`) }
  const h = await harness(t, {
    upstreams: boom('upstreams'),
    drain: boom('drain'),
    notReady: boom('notReady'),
    metrics: () => Promise.reject(new Error('metrics exploded')),
    degraded: () => [],
  })
  const cases: [string, string, string][] = [
    ['GET', '/upstreams', 'upstreams exploded'],
    ['POST', '/upstreams/a/drain', 'drain exploded'],
    ['GET', '/readyz', 'notReady exploded'],
    ['GET', '/metrics', 'metrics exploded'],
  ]
  for (const [method, target, cause] of cases) {
    const r = await request(`${h.url}${target}`, { method, headers: AUTH })
    t.equal(`${r.status} ${r.body}`, '500 Internal Server Error\n', `${method} ${target}`)
    const logged = h.logs.records.find((l) => l['msg'] === 'admin request failed' && (l['err'] as { message?: string } | undefined)?.message === cause)
    t.match(logged, { level: 50, method, path: target, err: { message: cause, stack: /exploded/ } }, `${cause}: logged with its stack`)
  }
  const circular: Record<string, unknown> = {}
  circular['self'] = circular
  const bad = await harness(t, { upstreams: () => [circular as never] })
  const r = await request(`${bad.url}/upstreams`, { headers: AUTH })
  t.equal(r.status, 500, 'an answer that cannot be serialized is a 500 too')
  await stillServing(t, h.url)
  await stillServing(t, bad.url)
})

t.test('request bodies are read, ignored and bounded', async (t) => {
  const h = await harness(t)
  const small = await request(`${h.url}/upstreams/a/drain`, { method: 'POST', headers: AUTH, body: '{"ignored":true}' })
  t.same([small.status, JSON.parse(small.body)], [200, { id: 'a', draining: true }], 'a small body is ignored')
  const pipelined = await raw(h.url,
    `POST /upstreams/a/undrain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 10\r\n\r\n0123456789` +
    'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
  t.match(pipelined, /^HTTP\/1\.1 200 [\s\S]*"draining": false[\s\S]*HTTP\/1\.1 200 [\s\S]*\r\n\r\nok\n$/, 'the body is consumed: the next request on the connection is read as one')
  const declared = await raw(h.url, `POST /upstreams/a/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 1000000\r\n\r\n`, false)
  t.match(declared, /^HTTP\/1\.1 413 [\s\S]*connection: close/i, 'a declared body over the limit: 413 before it is sent, then closed')
  const chunk = `4000\r\n${'x'.repeat(0x4000)}\r\n`
  const streamed = await raw(h.url, `POST /upstreams/a/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}`, false)
  t.match(streamed, /^HTTP\/1\.1 413 /, 'a chunked body over the limit: 413, then closed')
  t.same(h.calls, ['drain a', 'undrain a'], 'refused bodies drained nothing')
  await stillServing(t, h.url)
})

t.test('a CONNECT gets 405 with an empty Allow and a close, as on the proxy port (Node closed it unanswered)', async (t) => {
  const h = await harness(t)
  const answer = await raw(h.url, 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n', false)
  t.match(answer, /^HTTP\/1\.1 405 Method Not Allowed\r\n[\s\S]*\r\nallow: \r\n[\s\S]*connection: close\r\n\r\nMethod Not Allowed: the admin API tunnels nothing \(CONNECT\)\n$/i)
  await stillServing(t, h.url)
})

t.test('a CONNECT client that keeps its side open after the 405 does not hold the socket, nor the listener\'s close', async (t) => {
  const h = await harness(t)
  const { port } = new URL(h.url)
  // allowHalfOpen: the client's side stays open after the server's end, as a stuck client's would
  const s = net.connect({ port: Number(port), host: '127.0.0.1', allowHalfOpen: true })
  t.teardown(() => s.destroy())
  s.on('error', () => { /* a reset once the server destroys it */ })
  let out = ''
  s.on('data', (c) => (out += c))
  const ended = new Promise((resolve) => s.once('end', resolve))
  s.write('CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n')
  await ended
  t.match(out, /^HTTP\/1\.1 405 /, 'answered 405')
  // the socket was no longer tracked by the server: close() waited for it for ever (bounded here
  // far past the linger, so that only a socket held for good fails)
  let timer: NodeJS.Timeout | undefined
  const closed = await Promise.race([
    h.admin.close().then(() => 'closed'),
    new Promise<string>((resolve) => { timer = setTimeout(() => resolve('still open after 15 s'), 15_000) }),
  ])
  clearTimeout(timer)
  t.equal(closed, 'closed', "the listener's close completes while the client still holds its side")
})

t.test('a client that never finishes its request head or body is cut off with 408', async (t) => {
  const h = await harness(t, {}, { ...ADMIN_LIMITS, headersTimeout: 200, requestTimeout: 400 })
  const head = await raw(h.url, 'GET /healthz HTTP/1.1\r\nHost: x\r\n', false)
  t.match(head, /^HTTP\/1\.1 408 /, 'a stalled head')
  const body = await raw(h.url, `POST /upstreams/a/drain HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Length: 10\r\n\r\n01234`, false)
  t.match(body, /^HTTP\/1\.1 408 /, 'a stalled body')
  t.same(h.calls, [], 'the stalled drain never ran')
  await stillServing(t, h.url)
})

t.test('?migrate=true asks for a drain that migrates; another value is a 400 that drains nothing', async (t) => {
  const asked: string[] = []
  const h = await harness(t, { drain: (id, migrate) => { asked.push(`${id} ${migrate}`); return KNOWN.has(id) } })
  const migrating = await request(`${h.url}/upstreams/a/drain?migrate=true`, { method: 'POST', headers: AUTH })
  t.same([migrating.status, JSON.parse(migrating.body)], [200, { id: 'a', draining: true, migrate: true }])
  t.equal((await request(`${h.url}/upstreams/a/drain?migrate=false`, { method: 'POST', headers: AUTH })).status, 200)
  const bad = await request(`${h.url}/upstreams/a/drain?migrate=maybe`, { method: 'POST', headers: AUTH })
  t.equal(`${bad.status} ${bad.body}`, '400 Bad Request: migrate must be true or false\n')
  t.same(asked, ['a true', 'a false'], 'the bad one reached no drain')
  const sessions = await request(`${h.url}/sessions/x`, { method: 'PUT', headers: AUTH })
  t.equal(sessions.status, 405)
  t.equal(sessions.headers['allow'], 'GET, HEAD, DELETE', 'every method of the path is allowed, none else')
})
