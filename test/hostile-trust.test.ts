// Hostile input at the trust boundary: every header name Tether reserves, in every spelling a
// backend might fold together (case, `_` or `.` for `-`), in both directions, on plain requests and on
// WebSocket handshakes; a custom state.header; forged, tampered, expired and other-secret
// affinity cookies; spoofed X-Forwarded-For / -Proto / -Host / -Port and Forwarded with and
// without trusted proxies. Each case checks what the client got AND what the upstream received.
//
import t, { type Test } from 'tap'
import { CookieCodec } from '../src/affinity/cookie-codec.js'
import { DEFAULTS } from '../src/config/schema.js'
import { affinityEntry, startHarness } from './fixtures/raw-tether.js'
import { exchange } from './fixtures/raw-client.js'
import { ok } from './fixtures/raw-upstream.js'
import { header, headerValues, type HeaderLine, type ParsedRequest } from './fixtures/raw-http.js'
import { request, startProxy, startUpstream } from './fixtures/upstream.js'

/** Header names Tether uses itself (any `X-Tether-*` name is reserved). */
const RESERVED = [
  'X-Tether-State', 'X-Tether-State-Version', 'X-Tether-Rehydrate', 'X-Tether-Previous-Upstream',
  'X-Tether-Epoch', 'X-Tether-Moved', 'X-Tether-Upstream', 'X-Tether-Anything',
]

/** The same name in other letter cases. */
function caseSpellings(name: string): string[] {
  const alternating = [...name].map((ch, i) => (i % 2 === 0 ? ch.toUpperCase() : ch.toLowerCase())).join('')
  return [name, name.toLowerCase(), name.toUpperCase(), alternating]
}

/**
 * The same name with `_` (or `.`, which PHP reads as `_`: `X.Tether.State` is
 * `HTTP_X_TETHER_STATE` too) for some or all of its `-` (X_Tether_State, X-Tether_State,
 * X.Tether.State, ...).
 */
function underscoreSpellings(name: string): string[] {
  return [
    name.replaceAll('-', '_'),
    name.replace('-', '_'),
    name.replace(/-([^-]*)$/, '_$1'),
    name.toLowerCase().replaceAll('-', '_'),
    name.toUpperCase().replaceAll('-', '_'),
    name.replaceAll('-', '.'),
    name.replace(/-([^-]*)$/, '.$1'),
    name.replace('-', '_').replace(/-([^-]*)$/, '.$1'),
  ]
}

/** A header name as a backend that folds case and `_`/`.`/`-` reads it. */
const folded = (name: string): string => name.toLowerCase().replace(/[_.]/g, '-')

/** Header lines `name: forged-<i>` for every name. */
const forgedLines = (names: readonly string[]): string => names.map((n, i) => `${n}: forged-${i}\r\n`).join('')

/** Names of the headers the upstream received that carry a client's forged value. */
const forgedArrived = (q: ParsedRequest): string[] => q.headers.filter(([, v]) => v.startsWith('forged')).map(([k]) => k)

/** Reserved headers an answer carries: names that fold to `x-tether-*` or one of `extra`. */
function reservedIn(headers: readonly HeaderLine[], extra: readonly string[] = []): string[] {
  return headers.map(([k]) => k).filter((k) => folded(k).startsWith('x-tether-') || extra.includes(folded(k)))
}

const WS = (extra = ''): string =>
  'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n' +
  `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`
const SWITCH = (extra = ''): string =>
  'HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n' +
  `Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n${extra}\r\n`

/** The one request the upstream received (fails the test otherwise). */
function only(t: Test, got: ParsedRequest[]): ParsedRequest {
  t.equal(got.length, 1, 'the upstream received exactly one request')
  return got[0] ?? { method: '', target: '', version: '', headers: [], body: Buffer.alloc(0), framing: 'none', raw: Buffer.alloc(0) }
}

// ---- reserved headers, client -> upstream

t.test('a client X-Tether-* header in any letter case never reaches the upstream; only Tether\'s own epoch arrives', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const names = RESERVED.flatMap(caseSpellings)
  const r = await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${forgedLines(names)}\r\n`, { responses: 1 })
  t.equal(r.first, '200')
  const q = only(t, h.received())
  t.same(forgedArrived(q), [], `none of ${names.length} spellings arrived`)
  t.same(reservedIn(q.headers), ['x-tether-epoch'], 'the only reserved header upstream is the one Tether set')
  t.match(header(q, 'x-tether-epoch'), /^\d+$/)
})

t.test('a client X-Tether-* header spelled with _ for - never reaches the upstream (X_Tether_Rehydrate, X-Tether_State, ...)', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  const names = RESERVED.flatMap(underscoreSpellings)
  const r = await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${forgedLines(names)}\r\n`, { responses: 1 })
  t.equal(r.first, '200')
  const q = only(t, h.received())
  t.same(forgedArrived(q), [], `none of ${names.length} spellings arrived`)
})

t.test('header names containing _ or . are dropped by default (nginx\'s rule): X_Custom and X.Custom do not reach the upstream, X-Custom does', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\nX_Custom: forged-u\r\nX-Custom: kept\r\nX_Forwarded_Proto: forged-p\r\nX.Custom: forged-d\r\nX.Real.IP: forged-r\r\n\r\n', { responses: 1 })
  const q = only(t, h.received())
  t.same(forgedArrived(q), [])
  t.same(headerValues(q, 'x-custom'), ['kept'])
})

t.test('with forwarding.allow_underscores: true, X_Custom passes but a reserved name in any _ spelling is still stripped', async (t) => {
  const h = await startHarness({ forwarding: { allow_underscores: true } as never })
  t.teardown(() => h.close())
  const names = RESERVED.flatMap(underscoreSpellings)
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\nX_Custom: kept\r\n${forgedLines(names)}\r\n`, { responses: 1 })
  const q = only(t, h.received())
  t.same(headerValues(q, 'X_Custom'), ['kept'], 'an ordinary _ name passes')
  t.same(forgedArrived(q), [], 'no reserved spelling passes')
})

// ---- reserved headers on WebSocket handshakes

t.test('a WebSocket handshake carries no client X-Tether-* header in any letter case, and the 101 carries none of the upstream\'s', async (t) => {
  const h = await startHarness({}, (_q, c) => c.write(SWITCH(RESERVED.flatMap(caseSpellings).map((n) => `${n}: internal\r\n`).join(''))))
  t.teardown(() => h.close())
  const r = await exchange(h.port, WS(forgedLines(RESERVED.flatMap(caseSpellings))), { responses: 1 })
  t.equal(r.first, '101')
  t.same(reservedIn(r.finals[0]?.headers ?? []), [], 'the client sees no X-Tether-* header')
  const q = only(t, h.received())
  t.same(forgedArrived(q), [])
  t.same(reservedIn(q.headers), ['x-tether-epoch'])
})

t.test('a WebSocket handshake carries no client X-Tether-* header spelled with _, and the 101 none of the upstream\'s', async (t) => {
  const h = await startHarness({}, (_q, c) => c.write(SWITCH(RESERVED.flatMap(underscoreSpellings).map((n) => `${n}: internal\r\n`).join(''))))
  t.teardown(() => h.close())
  const r = await exchange(h.port, WS(forgedLines(RESERVED.flatMap(underscoreSpellings))), { responses: 1 })
  t.equal(r.first, '101')
  t.same(forgedArrived(only(t, h.received())), [], 'none reached the upstream')
  t.same(reservedIn(r.finals[0]?.headers ?? []), [], 'none reached the client')
})

// ---- reserved headers, upstream -> client

t.test('an upstream\'s X-Tether-* headers in any letter case never reach the client; with upstream_header only Tether\'s true X-Tether-Upstream does', async (t) => {
  const h = await startHarness({ forwarding: { upstream_header: true } },
    (_q, c) => c.write(ok('ok', RESERVED.flatMap(caseSpellings).map((n) => `${n}: internal\r\n`).join(''))))
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1 })
  t.equal(r.first, '200')
  const res = r.finals[0]!
  t.same(reservedIn(res.headers), ['x-tether-upstream'])
  t.same(headerValues(res, 'x-tether-upstream'), ['app-0'], "Tether's value, not the upstream's")
})

t.test('an upstream\'s X-Tether-* headers spelled with _ never reach the client', async (t) => {
  const h = await startHarness({}, (_q, c) => c.write(ok('ok', RESERVED.flatMap(underscoreSpellings).map((n) => `${n}: internal\r\n`).join(''))))
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1 })
  t.equal(r.first, '200')
  t.same(reservedIn(r.finals[0]!.headers), [])
})

// ---- a custom state.header

const APP_STATE = ['X-App-State', 'X-App-State-Version']
const APP_STATE_FOLDED = APP_STATE.map(folded)

t.test('with state.header: X-App-State, a client X-App-State or X-App-State-Version (any case) never reaches the upstream', async (t) => {
  const h = await startHarness({ state: { header: 'X-App-State' } })
  t.teardown(() => h.close())
  const names = APP_STATE.flatMap(caseSpellings)
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${forgedLines(names)}\r\n`, { responses: 1 })
  const q = only(t, h.received())
  t.same(forgedArrived(q), [])
  t.same(reservedIn(q.headers, APP_STATE_FOLDED), ['x-tether-epoch'])
})

t.test('with state.header: X-App-State, its _ spellings never reach the upstream either', async (t) => {
  const h = await startHarness({ state: { header: 'X-App-State' }, forwarding: { allow_underscores: true } as never })
  t.teardown(() => h.close())
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${forgedLines(APP_STATE.flatMap(underscoreSpellings))}\r\n`, { responses: 1 })
  t.same(forgedArrived(only(t, h.received())), [])
})

t.test('with state.header: X-App-State, an upstream\'s checkpoint is stored but never shown to the client', async (t) => {
  const h = await startHarness({ state: { header: 'X-App-State' } }, (_q, c) => c.write(ok('ok', 'X-App-State: secret-checkpoint\r\nX-App-State-Version: 3\r\n')))
  t.teardown(() => h.close())
  const r = await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1 })
  t.equal(r.first, '200')
  t.same(reservedIn(r.finals[0]!.headers, APP_STATE_FOLDED), [], 'no checkpoint header in the answer')
  t.notMatch(r.bytes.toString('latin1'), /secret-checkpoint/)
  t.match(await h.tether.metrics.render(), /tether_checkpoints_total\{result="stored"\} 1/, 'the checkpoint was stored')
})

t.test('with state.header: X-App-State, a 101 carries no checkpoint header to the client', async (t) => {
  const h = await startHarness({ state: { header: 'X-App-State' } }, (_q, c) => c.write(SWITCH('X-App-State: secret-checkpoint\r\nx-app-state-version: 3\r\n')))
  t.teardown(() => h.close())
  const r = await exchange(h.port, WS(), { responses: 1 })
  t.equal(r.first, '101')
  t.same(reservedIn(r.finals[0]?.headers ?? [], APP_STATE_FOLDED), [])
})

// ---- affinity cookies

const SECRET = 'hostile-suite-secret-0123456789'
const OTHER_SECRET = 'another-secret-entirely-9876543210'
const IDLE = 3 * 3_600_000

t.test('forged, tampered, re-pointed, expired and other-secret cookies are never believed: each gets a new session; a valid one routes', async (t) => {
  const h = await startHarness({ affinity: { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] } }, forwarding: { upstream_header: true } }, undefined, 2)
  t.teardown(() => h.close())
  const codec = new CookieCodec({ secrets: [SECRET], idleTimeout: IDLE })
  const now = Date.now()
  const valid = codec.issue('app-1', 0, now).value
  const bytes = Buffer.from(valid, 'base64url')
  const repointed = Buffer.from(bytes)
  repointed.write('app-0', 30, 'utf8') // the upstream id field, MAC unchanged
  const mid = Math.floor(valid.length / 2)
  const cases: [string, string][] = [
    ['forged (random bytes of a valid length)', Buffer.from(Array.from({ length: bytes.length }, (_, i) => (i * 37 + 11) & 0xff)).toString('base64url')],
    ['tampered (one character changed)', valid.slice(0, mid) + (valid[mid] === 'A' ? 'B' : 'A') + valid.slice(mid + 1)],
    ['re-pointed to app-0 with the MAC kept', repointed.toString('base64url')],
    ['expired (last seen 4 h ago, idle timeout 3 h)', codec.issue('app-1', 0, now - 4 * 3_600_000).value],
    ['signed with another secret', new CookieCodec({ secrets: [OTHER_SECRET], idleTimeout: IDLE }).issue('app-1', 0, now).value],
    ['4 KiB of garbage', 'x'.repeat(4096)],
    ['empty', ''],
  ]
  for (const [what, value] of cases) {
    const before = h.received().length
    const r = await exchange(h.port, `GET /c HTTP/1.1\r\nHost: a\r\nCookie: tether=${value}\r\n\r\n`, { responses: 1 })
    t.equal(r.first, '200', `${what}: answered`)
    t.ok(headerValues(r.finals[0]!, 'set-cookie').some((c) => c.startsWith('tether=') && !c.startsWith(`tether=${value};`)), `${what}: a new cookie is issued`)
    t.equal(h.received().length - before, 1, `${what}: one request upstream`)
    const access = h.logs.access().at(-1)
    t.equal(access?.['route'], 'new_session', `${what}: placed as a new session`)
  }
  const r = await exchange(h.port, `GET /c HTTP/1.1\r\nHost: a\r\nCookie: tether=${valid}\r\n\r\n`, { responses: 1 })
  t.same(headerValues(r.finals[0]!, 'x-tether-upstream'), ['app-1'], 'the valid cookie routes to the upstream it names')
  t.equal(h.logs.access().at(-1)?.['route'], 'cookie')
  t.same(h.unhandled(), [])
})

t.test("an upstream's Set-Cookie of Tether's cookie name is dropped (it would replace the user's affinity cookie); its other cookies pass", async (t) => {
  const up = await startUpstream('app-0', (_req, res) => {
    res.setHeader('set-cookie', ['tether=appval; Path=/', 'app=1; Path=/', ' tether=again', 'tether =spaced', '\ttether\t=tabbed', '=tether=nameless', ' = tether=nameless2'])
    res.end('ok')
  })
  const px = await startProxy([up], { affinity: { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secret: [SECRET] } } })
  t.teardown(async () => { await px.close(0); await up.close() })
  const first = await request(`${px.url}/`)
  const lines = [first.headers['set-cookie'] ?? []].flat()
  t.same(lines.filter((l) => !/^[ \t]*(=[ \t]*)?tether[ \t]*=/.test(l)), ['app=1; Path=/'], "the application's other cookie passes")
  t.notOk(lines.some((l) => /nameless/.test(l)), 'a nameless cookie "=tether=x" (a browser sends it back as tether=x) is dropped too')
  const ours = lines.filter((l) => /^[ \t]*tether[ \t]*=/.test(l))
  t.equal(ours.length, 1, "one cookie of Tether's name, in any spelling a browser reads: Tether's own")
  t.notMatch(ours[0]!, /appval|again|spaced|tabbed/)
  const again = await request(`${px.url}/`, { headers: { cookie: ours[0]!.split(';')[0]! } })
  t.same([again.headers['set-cookie'] ?? []].flat(), ['app=1; Path=/'], 'with a valid cookie (no refresh due): none of that name at all')
})

// ---- X-Forwarded-For and the client IP

t.test('X-Forwarded-For from an untrusted peer is appended to, never used as the client IP', async (t) => {
  const h = await startHarness({ affinity: { key: 'client_ip' } })
  t.teardown(() => h.close())
  await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n', { responses: 1, localAddress: '127.0.0.2' })
  const q = only(t, h.received())
  t.same(headerValues(q, 'x-forwarded-for'), ['203.0.113.9, 127.0.0.2'], 'the peer is appended')
  t.ok(affinityEntry(h.tether, '127.0.0.2') !== null, 'the peer address is the affinity key')
  t.equal(affinityEntry(h.tether, '203.0.113.9'), null, 'the spoofed address is not')
})

t.test('X-Forwarded-For names the client only when the peer is a trusted proxy', async (t) => {
  const h = await startHarness({ affinity: { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  t.teardown(() => h.close())
  await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 203.0.113.9\r\n\r\n', { responses: 1, localAddress: '127.0.0.1' })
  await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 198.51.100.7\r\n\r\n', { responses: 1, localAddress: '127.0.0.2' })
  await exchange(h.port, 'GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: unknown, , 999.1.1.1, ::ffff:zz\r\n\r\n', { responses: 1, localAddress: '127.0.0.1' })
  t.ok(affinityEntry(h.tether, '203.0.113.9') !== null, "the trusted proxy's client is the key")
  t.equal(affinityEntry(h.tether, '198.51.100.7'), null, "an untrusted peer's claim is not")
  t.ok(affinityEntry(h.tether, '127.0.0.2') !== null, 'the untrusted peer itself is')
  t.equal(h.received().length, 3, 'every request was forwarded, garbage in X-Forwarded-For included')
  t.same(h.unhandled(), [])
})

// ---- X-Forwarded-Proto / -Host / -Port and Forwarded (RFC 7239)

const SPOOF = 'X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 1\r\nForwarded: for=192.0.2.1;proto=https;host=evil.example\r\n'

t.test('from an untrusted peer, X-Forwarded-Proto and -Host are overwritten (http, the Host)', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${SPOOF}\r\n`, { responses: 1, localAddress: '127.0.0.2' })
  const q = only(t, h.received())
  t.same(headerValues(q, 'x-forwarded-proto'), ['http'])
  t.same(headerValues(q, 'x-forwarded-host'), ['a'])
})

t.test('from an untrusted peer, X-Forwarded-Port and Forwarded are overwritten too', async (t) => {
  const h = await startHarness()
  t.teardown(() => h.close())
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${SPOOF}\r\n`, { responses: 1, localAddress: '127.0.0.2' })
  const q = only(t, h.received())
  t.notOk(headerValues(q, 'x-forwarded-port').includes('1'), 'not the client\'s X-Forwarded-Port')
  t.notMatch(headerValues(q, 'forwarded').join(','), /evil\.example|192\.0\.2\.1/, "not the client's Forwarded")
})

/** The other headers a framework reads the scheme from (Rack: X-Forwarded-Ssl first), in mixed spellings. */
const SCHEME_SPOOF = 'X-Forwarded-Ssl: on\r\nx-forwarded-scheme: https\r\nX-Forwarded-Protocol: https\r\nX-Scheme: https\r\nFront-End-Https: On\r\nX-URL-SCHEME: https\r\nX-ARR-SSL: 2048|256\r\nX-Forwarded-Prefix: /evil\r\n' +
  'X-Real-IP: 192.0.2.9\r\nTrue-Client-IP: 192.0.2.9\r\nX-Client-IP: 192.0.2.9\r\nX-Cluster-Client-IP: 192.0.2.9\r\nCF-Connecting-IP: 192.0.2.9\r\nFastly-Client-IP: 192.0.2.9\r\n'
const SCHEME_NAMES = ['x-forwarded-ssl', 'x-forwarded-scheme', 'x-forwarded-protocol', 'x-scheme', 'front-end-https', 'x-url-scheme', 'x-arr-ssl', 'x-forwarded-prefix', 'x-real-ip', 'true-client-ip', 'x-client-ip', 'x-cluster-client-ip', 'cf-connecting-ip', 'fastly-client-ip']

t.test('from an untrusted peer, the other scheme and address claims (X-Forwarded-Ssl, X-Scheme, X-Real-IP, True-Client-IP, ...) are dropped, in any spelling', async (t) => {
  const h = await startHarness({ forwarding: { allow_underscores: true } })
  t.teardown(() => h.close())
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${SCHEME_SPOOF}X_Forwarded_Ssl: on\r\nX.Real.IP: 192.0.2.9\r\n\r\n`, { responses: 1, localAddress: '127.0.0.2' })
  const q = only(t, h.received())
  for (const name of SCHEME_NAMES) t.same(headerValues(q, name), [], `${name} dropped`)
  t.notOk(q.raw.toString('latin1').toLowerCase().includes('x_forwarded_ssl'), 'the underscore spelling too (allow_underscores)')
  t.notOk(q.raw.toString('latin1').toLowerCase().includes('x.real.ip'), 'and the dotted one (PHP reads it as HTTP_X_REAL_IP)')
  t.same(headerValues(q, 'x-forwarded-proto'), ['http'])
})

t.test('from a trusted proxy, its X-Forwarded-Proto, -Host, -Port and Forwarded are kept', async (t) => {
  const h = await startHarness({ affinity: { client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  t.teardown(() => h.close())
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${SPOOF}\r\n`, { responses: 1, localAddress: '127.0.0.1' })
  const q = only(t, h.received())
  t.same(headerValues(q, 'x-forwarded-proto'), ['https'])
  t.same(headerValues(q, 'x-forwarded-host'), ['evil.example'])
  t.same(headerValues(q, 'x-forwarded-port'), ['1'])
  t.match(headerValues(q, 'forwarded').join(','), /for=192\.0\.2\.1;proto=https;host=evil\.example/)
  await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${SCHEME_SPOOF}\r\n`, { responses: 1, localAddress: '127.0.0.1' })
  const q2 = h.received().at(-1)!
  for (const name of SCHEME_NAMES) t.equal(headerValues(q2, name).length, 1, `its ${name} kept`)
})

/**
 * The host, scheme and prefix claims of Jetty, Apache mod_wsgi and Yii (X-Forwarded-Server,
 * X-Host, X-Original-Host, ...), each in every spelling a backend folds together (case, `_`
 * or `.` for `-`) and twice, as header lines `name: forged-<i>`.
 */
const HOST_CLAIMS = ['X-Forwarded-Server', 'X-Host', 'X-Original-Host', 'X-Proxied-Https', 'Proxy-Ssl-Id', 'Proxy-Auth-Cert', 'X-Forwarded-HTTPS', 'X-HTTPS', 'X-Script-Name', 'X-Forwarded-Script-Name']
const HOST_CLAIM_SPELLINGS = [...new Set(HOST_CLAIMS.flatMap((n) => [...caseSpellings(n), ...underscoreSpellings(n)]))]
const HOST_CLAIM_LINES = forgedLines([...HOST_CLAIM_SPELLINGS, ...HOST_CLAIMS])
/**
 * Every one of them listed in Connection, as a client behind a balancer that passes it on would
 * list them to erase the balancer's: in every spelling sent (`Connection: X_Host` beside `X_Host`),
 * over two Connection lines.
 */
const HOST_CLAIMS_LISTED = `Connection: keep-alive, ${HOST_CLAIMS.join(', ').toLowerCase()}\r\nConnection: ${HOST_CLAIM_SPELLINGS.join(', ')}\r\n`

t.test('X-Forwarded-Server, X-Host, X-Original-Host and the other host, scheme and prefix claims: from an untrusted peer none arrives in any spelling or repeated, on a request or a handshake; a trusted proxy\'s all arrive, even listed in Connection in every spelling', async (t) => {
  const over = { forwarding: { allow_underscores: true } } as const
  const untrusted = await startHarness(over, (q, c) => c.write(q.headers.some(([k]) => k.toLowerCase() === 'upgrade') ? SWITCH() : 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n'))
  t.teardown(() => untrusted.close())
  const r = await exchange(untrusted.port, `GET / HTTP/1.1\r\nHost: a\r\n${HOST_CLAIM_LINES}\r\n`, { responses: 1, localAddress: '127.0.0.2' })
  t.equal(r.first, '200')
  t.same(forgedArrived(only(t, untrusted.received())), [], `none of ${HOST_CLAIM_SPELLINGS.length + HOST_CLAIMS.length} lines arrived`)
  const ws = await exchange(untrusted.port, WS(HOST_CLAIM_LINES), { responses: 1, localAddress: '127.0.0.2' })
  t.equal(ws.first, '101')
  t.same(forgedArrived(untrusted.received().at(-1)!), [], 'none in the handshake either')

  const trusted = await startHarness({ ...over, affinity: { client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  t.teardown(() => trusted.close())
  await exchange(trusted.port, `GET / HTTP/1.1\r\nHost: a\r\n${HOST_CLAIMS_LISTED}${HOST_CLAIM_LINES}\r\n`, { responses: 1, localAddress: '127.0.0.1' })
  const kept = forgedArrived(only(t, trusted.received()))
  t.equal(kept.length, HOST_CLAIM_SPELLINGS.length + HOST_CLAIMS.length, 'every line arrived, though listed in Connection')
  for (const name of HOST_CLAIMS) t.equal(headerValues(trusted.received()[0]!, name).length, HOST_CLAIM_SPELLINGS.filter((n) => n.toLowerCase() === name.toLowerCase()).length + 1, `${name}: each letter case, and the repeat`)
})

// A TLS-ending proxy in front (nginx with `proxy_set_header X-Forwarded-Proto $scheme`, HAProxy
// with `option forwardfor`) often sends X-Forwarded-Proto without X-Forwarded-Port. Tether's own
// listener port there is the proxy's hop, not the client's: beside `https` it made frameworks
// that trust the port (Symfony and Laravel's getPort) build links to https://shop.example:<port>.
t.test("from a trusted proxy that sends X-Forwarded-Proto but no -Port, the port follows its scheme and Host (as Traefik's), not Tether's listener", async (t) => {
  const h = await startHarness({ affinity: { client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  t.teardown(() => h.close())
  const cases: [head: string, port: string][] = [
    ['Host: shop.example\r\nX-Forwarded-Proto: https\r\n', '443'],
    ['Host: shop.example\r\nX-Forwarded-Proto: http\r\n', '80'],
    ['Host: shop.example:8443\r\nX-Forwarded-Proto: https\r\n', '8443'],
    ['Host: internal\r\nX-Forwarded-Proto: HTTPS\r\nX-Forwarded-Host: shop.example\r\n', '443'],
    ['Host: internal\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: [2001:db8::1]:9443\r\n', '9443'],
  ]
  for (const [head, port] of cases) {
    await exchange(h.port, `GET / HTTP/1.1\r\n${head}\r\n`, { responses: 1, localAddress: '127.0.0.1' })
    t.same(headerValues(h.received().at(-1)!, 'x-forwarded-port'), [port], JSON.stringify(head))
  }
  // a proxy that says nothing of the scheme: Tether's own scheme and listener port, together
  await exchange(h.port, 'GET / HTTP/1.1\r\nHost: shop.example\r\n\r\n', { responses: 1, localAddress: '127.0.0.1' })
  t.same(headerValues(h.received().at(-1)!, 'x-forwarded-port'), [String(h.port)])
})
