// Header names spelled with any RFC 9110 tchar where a `-` belongs. lighttpd (1.4.69, Debian 12)
// builds a CGI/FastCGI/SCGI variable name by turning EVERY byte that is not a letter or digit
// into `_` (http_cgi_encode_varname), so behind lighttpd + PHP-FPM a client's `X!Tether!Rehydrate`
// (or `X~Real~IP`, `Client|IP`, ...) is $_SERVER['HTTP_X_TETHER_REHYDRATE'] (HTTP_X_REAL_IP,
// HTTP_CLIENT_IP): a forged checkpoint or a spoofed client address. Tether drops every request
// header name with a byte outside [A-Za-z0-9-] unless forwarding.allow_underscores (as nginx's
// default, ignore_invalid_headers on), and judges every name, in both directions, by what it
// folds to. Checked on the header rules, then through a real Tether over HTTP/1.1 and h2 in front
// of a raw recording upstream on 127.0.0.1.
import t, { type Test } from 'tap'
import http2 from 'node:http2'
import { DEFAULTS } from '../src/config/schema.js'
import { headerPolicy, upstreamRequestHeaders } from '../src/proxy/headers.js'
import { ReservedHeaders } from '../src/reserved-headers.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'
import { exchange } from './fixtures/raw-client.js'
import { ok } from './fixtures/raw-upstream.js'
import type { HeaderLine } from './fixtures/raw-http.js'

/** Every RFC 9110 tchar that is not a letter, a digit or `-`. */
const TCHARS = "!#$%&'*+.^_`|~".split('')

/** Reserved names (state.header is X-App-State below) and names that claim the client's address or scheme. */
const RESERVED = ['X-Tether-Rehydrate', 'X-Tether-State', 'X-Tether-Previous-Upstream', 'X-App-State', 'X-App-State-Version']
const CLAIMS = ['X-Real-IP', 'Client-IP', 'True-Client-IP', 'X-Client-IP', 'X-Forwarded-Proto', 'X-Forwarded-Host', 'X-Forwarded-Ssl', 'X-Forwarded-Server', 'X-Host', 'X-Original-Host']

/** `name` with `c` for every `-`, and for its last `-` only (X!Tether!State, X-Tether!State). */
const spellings = (name: string, c: string): string[] => [name.replaceAll('-', c), name.replace(/-([^-]*)$/, (_m, rest: string) => c + rest)]

/** Every tchar spelling of every name in `names`. */
const everySpelling = (names: readonly string[]): string[] => TCHARS.flatMap((c) => names.flatMap((n) => spellings(n, c)))

/** A name as lighttpd hands it to PHP-FPM, read back as a header name: lower case, every byte but a letter or digit as `-`. */
const folded = (name: string): string => name.toLowerCase().replace(/[^a-z0-9]/g, '-')

const FOLDED_RESERVED = new Set(RESERVED.map(folded))
const FOLDED_CLAIMS = new Set(CLAIMS.map(folded))
/** Names Tether sets itself, exactly so spelled. */
const TETHERS_OWN = new Set(['host', 'x-request-id', 'x-tether-epoch', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port'])

/** Names in `names` a backend reads as a reserved or client-claim name (Tether's own, so spelled, left out). */
function forbidden(names: readonly string[]): string[] {
  return names.filter((k) => !TETHERS_OWN.has(k) && (folded(k).startsWith('x-tether-') || FOLDED_RESERVED.has(folded(k)) || FOLDED_CLAIMS.has(folded(k))))
}

// ---- the header rules

t.test('every tchar spelling of a reserved name is reserved, and a name merely containing one is not', async (t) => {
  const reserved = new ReservedHeaders('X-App-State')
  for (const name of everySpelling(RESERVED)) t.ok(reserved.has(name.toLowerCase()), `${name} is reserved`)
  for (const c of TCHARS) t.notOk(reserved.has(`x${c}custom`), `x${c}custom is not reserved`)
})

for (const allow of [false, true]) {
  t.test(`allow_underscores: ${allow}: no tchar spelling of a reserved or client-address name is sent upstream`, async (t) => {
    const policy = headerPolicy({
      forwarding: { ...DEFAULTS.forwarding, allow_underscores: allow },
      state: { ...DEFAULTS.state, header: 'X-App-State' },
      affinity: { ...DEFAULTS.affinity, client_ip: { trusted_proxies: [] } },
    } as Parameters<typeof headerPolicy>[0])
    const names = everySpelling([...RESERVED, ...CLAIMS])
    const custom = TCHARS.map((c) => `X${c}Custom`)
    const raw = ['Host', 'a', ...[...names, ...custom].flatMap((n) => [n, 'forged'])]
    const dropped: string[] = []
    const out = upstreamRequestHeaders(raw, policy, { peer: '203.0.113.7', proto: 'http', port: 8080, upstreamHost: 'u', requestId: 'r', dropped })
    const sent = out.filter((_, i) => i % 2 === 0)
    t.same(forbidden(sent), [], `none of ${names.length} spellings is sent`)
    t.same(sent.filter((k) => /[^A-Za-z0-9-]/.test(k)), allow ? custom : [], allow ? 'every other such name passes' : 'no name with such a byte passes')
    t.same(dropped, allow ? [] : [...names, ...custom], allow ? 'none is reported dropped' : 'every one is reported for the debug log')
  })
}

// ---- through a real Tether, HTTP/1.1 and h2

/** The upstream's answer: every tchar spelling of every reserved name. */
const UPSTREAM_RESERVED = everySpelling(RESERVED).map((n) => `${n}: internal\r\n`).join('')

async function harness(t: Test, allow: boolean): Promise<Harness> {
  const h = await startHarness({ listen: { http2: { cleartext: true } }, state: { header: 'X-App-State' }, forwarding: { allow_underscores: allow } }, (_q, c) => c.write(ok('ok', UPSTREAM_RESERVED)))
  t.teardown(() => h.close())
  return h
}

/** The names of the one request the upstream received (fails the test otherwise), and those carrying a forged value. */
function receivedNames(t: Test, h: Harness): { names: string[]; forged: HeaderLine[] } {
  const got = h.received()
  t.equal(got.length, 1, 'the upstream received exactly one request')
  const headers = got[0]?.headers ?? []
  return { names: headers.map(([k]) => k), forged: headers.filter(([, v]) => v === 'forged') }
}

for (const allow of [false, true]) {
  t.test(`allow_underscores: ${allow}, HTTP/1.1: no tchar spelling of a reserved or client-address name reaches the upstream, nor one of the upstream's reserved names the client`, async (t) => {
    const h = await harness(t, allow)
    const lines = everySpelling([...RESERVED, ...CLAIMS]).map((n) => `${n}: forged\r\n`).join('')
    const r = await exchange(h.port, `GET / HTTP/1.1\r\nHost: a\r\n${lines}\r\n`, { responses: 1 })
    t.equal(r.first, '200')
    const q = receivedNames(t, h)
    t.same(forbidden(q.names), [], 'the upstream saw no such name')
    t.same(q.forged, [], 'nor any forged value')
    t.same(forbidden((r.finals[0]?.headers ?? []).map(([k]) => k)), [], 'the client saw none of the upstream\'s')
  })

  t.test(`allow_underscores: ${allow}, h2: no tchar spelling of a reserved or client-address name reaches the upstream, nor one of the upstream's reserved names the client`, async (t) => {
    const h = await harness(t, allow)
    const s = http2.connect(`http://127.0.0.1:${h.port}`)
    t.teardown(() => s.destroy())
    s.on('error', () => undefined)
    // h2 field names are lower case (RFC 9113 section 8.2.1)
    const head: http2.OutgoingHttpHeaders = { ':path': '/' }
    for (const n of everySpelling([...RESERVED, ...CLAIMS])) head[n.toLowerCase()] = 'forged'
    const answer = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
      const req = s.request(head)
      req.on('response', resolve)
      req.on('error', reject)
      req.resume()
    })
    t.equal(answer[':status'], 200)
    await h.barrier()
    const q = receivedNames(t, h)
    t.same(forbidden(q.names), [], 'the upstream saw no such name')
    t.same(q.forged, [], 'nor any forged value')
    t.same(forbidden(Object.keys(answer)), [], 'the client saw none of the upstream\'s')
  })
}
