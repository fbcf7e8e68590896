// The header rules, table-driven: reserved names in every spelling in both directions, the
// underscore rule, X-Forwarded-* from trusted and untrusted peers, Host and request targets.
import t from 'tap'
import { DEFAULTS } from '../src/config/schema.js'
import { clientResponseHeaders, headerPolicy, fieldsAreValid, requestTarget, upstreamRequestHeaders, type HeaderPolicy } from '../src/proxy/headers.js'
import { ReservedHeaders, foldHeaderName } from '../src/reserved-headers.js'

function policy(over: { state_header?: string; allow_underscores?: boolean; trusted?: string[]; x_forwarded?: boolean } = {}): HeaderPolicy {
  return headerPolicy({
    forwarding: { ...DEFAULTS.forwarding, allow_underscores: over.allow_underscores ?? false, x_forwarded: over.x_forwarded ?? true },
    state: { ...DEFAULTS.state, header: over.state_header ?? 'X-Tether-State' },
    affinity: { ...DEFAULTS.affinity, client_ip: { trusted_proxies: over.trusted ?? [] } },
  } as Parameters<typeof headerPolicy>[0])
}

const ctx = { peer: '203.0.113.7', proto: 'http' as const, port: 8080, upstreamHost: '127.0.0.1:9001', requestId: 'rid-1' }

/** Header list -> lower-case name -> values. */
function names(list: string[]): Map<string, string[]> {
  const m = new Map<string, string[]>()
  for (let i = 0; i < list.length; i += 2) {
    const k = list[i]!.toLowerCase()
    m.set(k, [...(m.get(k) ?? []), list[i + 1]!])
  }
  return m
}

t.test('every spelling of a reserved name is reserved; other names are not', async (t) => {
  const r = new ReservedHeaders('X-App-State')
  for (const name of ['x-tether-rehydrate', 'x_tether_rehydrate', 'x-tether_state', 'x_tether-previous-upstream', 'x-app-state', 'x_app_state', 'x-app_state-version', 'x_app_state_version',
    'x.tether.rehydrate', 'x-tether.state', 'x.app_state.version']) {
    t.ok(r.has(name), `${name} is reserved`)
  }
  for (const name of ['x-tether', 'x-tetherx-a', 'x-app-states', 'x-request-id', 'cookie', 'x-app']) t.notOk(r.has(name), `${name} is not reserved`)
  t.equal(foldHeaderName('x_a-b_c'), 'x-a-b-c')
  t.equal(foldHeaderName('x.a-b_c'), 'x-a-b-c', "PHP reads '.' in a name as '_' (HTTP_X_A_B_C)")
  t.equal(foldHeaderName("x!a~b|c`d'e"), 'x-a-b-c-d-e', "lighttpd hands PHP-FPM every byte but a letter or digit as '_'")
})

t.test('a client cannot send any spelling of a reserved header upstream, with underscores allowed or not', async (t) => {
  const raw = [
    'Host', 'a.example', 'X_Tether_Rehydrate', 'forged', 'X-Tether_State', 'forged', 'X_TETHER_PREVIOUS_UPSTREAM', 'app-9',
    'x-tether-epoch', '99', 'X-App-State', 'forged', 'x_app_state-Version', '7', 'X.Tether.Rehydrate', 'forged', 'X-App.State', 'forged', 'Accept', '*/*',
  ]
  for (const allow of [false, true]) {
    const out = names(upstreamRequestHeaders(raw, policy({ state_header: 'X-App-State', allow_underscores: allow }), ctx))
    for (const k of out.keys()) t.notOk(k.replace(/[_.]/g, '-').startsWith('x-tether-') || k.replace(/[_.]/g, '-').startsWith('x-app-state'), `allow_underscores=${allow}: ${k} was stripped`)
    t.same(out.get('accept'), ['*/*'])
  }
})

t.test('header names with "_" are dropped unless allow_underscores, and reported for the debug log', async (t) => {
  const raw = ['Host', 'a', 'X_Custom', '1', 'X-Custom', '2']
  const dropped: string[] = []
  const off = names(upstreamRequestHeaders(raw, policy(), { ...ctx, dropped }))
  t.notOk(off.has('x_custom'))
  t.same(off.get('x-custom'), ['2'])
  t.same(dropped, ['X_Custom'])
  const on = names(upstreamRequestHeaders(raw, policy({ allow_underscores: true }), ctx))
  t.same(on.get('x_custom'), ['1'])
})

t.test('header names with "." are dropped as "_" ones are (PHP reads X.Real.IP as HTTP_X_REAL_IP), unless allow_underscores, and then folded for the rules', async (t) => {
  const raw = ['Host', 'a', 'X.Custom', '1', 'X.Real.IP', '192.0.2.9', 'X.Forwarded.For', '6.6.6.6', 'X-Forwarded.Proto', 'https']
  const dropped: string[] = []
  const off = names(upstreamRequestHeaders(raw, policy(), { ...ctx, dropped }))
  t.same([...off.keys()].filter((k) => k.includes('.')), [], 'no dotted name passes')
  t.same(dropped, ['X.Custom', 'X.Real.IP', 'X.Forwarded.For', 'X-Forwarded.Proto'])
  const on = names(upstreamRequestHeaders(raw, policy({ allow_underscores: true }), ctx))
  t.same(on.get('x.custom'), ['1'], 'an ordinary dotted name passes with allow_underscores')
  t.notOk(on.has('x.real.ip'), "an untrusted peer's X.Real.IP is dropped as X-Real-IP is")
  t.notOk(on.has('x-forwarded.proto'), "and its X-Forwarded.Proto as X-Forwarded-Proto")
  t.same(on.get('x-forwarded-proto'), ['http'])
  t.same(on.get('x-forwarded-for'), ['6.6.6.6, 203.0.113.7'], 'X.Forwarded.For joins the one list')
})

t.test('with underscores allowed, an underscore spelling of X-Forwarded-For joins the one list (PHP would read it as one)', async (t) => {
  const out = names(upstreamRequestHeaders(['Host', 'a', 'X_Forwarded_For', '6.6.6.6'], policy({ allow_underscores: true }), ctx))
  t.notOk(out.has('x_forwarded_for'))
  t.same(out.get('x-forwarded-for'), ['6.6.6.6, 203.0.113.7'])
})

t.test('X-Forwarded-Proto/-Host/-Port and Forwarded are replaced for an untrusted peer', async (t) => {
  const raw = ['Host', 'shop.example', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'evil.example', 'X-Forwarded-Port', '443', 'Forwarded', 'for=1.2.3.4;proto=https']
  const out = names(upstreamRequestHeaders(raw, policy({ trusted: ['10.0.0.0/8'] }), ctx))
  t.same(out.get('x-forwarded-proto'), ['http'])
  t.same(out.get('x-forwarded-host'), ['shop.example'])
  t.same(out.get('x-forwarded-port'), ['8080'])
  t.notOk(out.has('forwarded'))
  t.same(out.get('x-forwarded-for'), ['203.0.113.7'])
})

t.test('X-Forwarded-Proto/-Host/-Port and Forwarded from a trusted peer are kept (TLS ended before Tether)', async (t) => {
  const raw = ['Host', 'shop.example', 'X-Forwarded-For', '198.51.100.1', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'shop.example', 'X-Forwarded-Port', '443', 'Forwarded', 'for=198.51.100.1;proto=https']
  const out = names(upstreamRequestHeaders(raw, policy({ trusted: ['10.0.0.0/8'] }), { ...ctx, peer: '10.1.2.3' }))
  t.same(out.get('x-forwarded-proto'), ['https'])
  t.same(out.get('x-forwarded-host'), ['shop.example'])
  t.same(out.get('x-forwarded-port'), ['443'])
  t.same(out.get('forwarded'), ['for=198.51.100.1;proto=https'])
  t.same(out.get('x-forwarded-for'), ['198.51.100.1, 10.1.2.3'])
  // a trusted peer that says nothing gets Tether's own values
  const bare = names(upstreamRequestHeaders(['Host', 'shop.example'], policy({ trusted: ['10.0.0.0/8'] }), { ...ctx, peer: '10.1.2.3' }))
  t.same(bare.get('x-forwarded-proto'), ['http'])
  t.same(bare.get('x-forwarded-port'), ['8080'])
})

t.test("a client listing Host, X-Forwarded-* or Forwarded in Connection does not remove them (a trusted balancer's values stay)", async (t) => {
  const raw = ['Host', 'shop.example', 'Connection', 'X-Forwarded-For, x-forwarded-proto', 'Connection', 'Host, Forwarded, X-Real-IP, X-Hop',
    'X-Forwarded-For', '198.51.100.1', 'X-Forwarded-Proto', 'https', 'Forwarded', 'for=198.51.100.1;proto=https', 'X-Real-IP', '198.51.100.1', 'X-Hop', '1']
  const out = names(upstreamRequestHeaders(raw, policy({ trusted: ['10.0.0.0/8'] }), { ...ctx, peer: '10.1.2.3' }))
  t.same(out.get('x-forwarded-for'), ['198.51.100.1, 10.1.2.3'], "the balancer's client stays first")
  t.same(out.get('x-forwarded-proto'), ['https'])
  t.same(out.get('forwarded'), ['for=198.51.100.1;proto=https'])
  t.same(out.get('x-real-ip'), ['198.51.100.1'])
  t.same(out.get('host'), ['shop.example'], "the client's Host, not the upstream's address")
  t.notOk(out.has('x-hop'), 'any other header listed is removed')
  // from an untrusted client, listing changes nothing either: its claims are replaced as always
  const direct = names(upstreamRequestHeaders(raw, policy(), ctx))
  t.same(direct.get('x-forwarded-for'), ['198.51.100.1, 203.0.113.7'])
  t.same(direct.get('x-forwarded-proto'), ['http'])
  t.notOk(direct.has('x-real-ip') || direct.has('forwarded'))
})

t.test('no spelling listed in Connection removes a header Tether decides, in any spelling sent (allow_underscores), repeated or not', async (t) => {
  // a trusted balancer's headers, each spelt as it may be (dash, `_`, `.`, other case), and a
  // client behind it (its Connection passed on) listing them in every spelling, in two
  // Connection lines, twice
  const decided = ['Host', 'X-Forwarded-For', 'X-Forwarded-Proto', 'X-Forwarded-Host', 'X-Forwarded-Port', 'Forwarded', 'X-Real-IP', 'X-Forwarded-Server']
  const spellings = (n: string): string[] => [...new Set([n, n.toUpperCase(), n.toLowerCase(), n.replace(/-/g, '_'), n.replace(/-/g, '_').toUpperCase(), n.replace(/-/g, '.'), n.replace(/-/g, '~')])]
  const listedTokens = decided.flatMap(spellings)
  for (const name of decided) {
    for (const sent of spellings(name)) {
      // (Host's value is the client's Host, which a removed Host would turn into the upstream's address)
      const value = name === 'Host' ? 'shop.example' : 'balancer-value'
      const raw = [...(name === 'Host' ? [] : ['Host', 'shop.example']), sent, value,
        'Connection', `keep-alive, ${listedTokens.join(', ')}`, 'Connection', listedTokens.join(',')]
      const out = upstreamRequestHeaders(raw, policy({ allow_underscores: true, trusted: ['10.0.0.0/8'] }), { ...ctx, peer: '10.1.2.3' })
      // as sent, or merged into Tether's own (X-Forwarded-For: `balancer-value, 10.1.2.3`)
      const values = [...names(out).entries()].filter(([k]) => foldHeaderName(k) === foldHeaderName(name.toLowerCase())).flatMap(([, v]) => v)
      t.ok(values.some((v) => v.startsWith(value)), `${sent} listed in Connection in every spelling: kept (${JSON.stringify(values)})`)
    }
  }
  // a header that is not Tether's is still removed when listed under its own spelling
  const raw = ['Host', 'a', 'Connection', 'X_Hop, x-other', 'X_Hop', '1', 'X_Other', '2']
  const out = names(upstreamRequestHeaders(raw, policy({ allow_underscores: true }), ctx))
  t.notOk(out.has('x_hop'), 'X_Hop listed as X_Hop: removed')
  t.notOk(out.has('x_other'), 'X_Other listed as x-other (what it folds to): removed')
  // without allow_underscores such a spelling is dropped for its own sake (nginx's default); the dash one, listed as `_`, stays
  const plain = upstreamRequestHeaders(['Host', 'a', 'Connection', 'X_Forwarded_Proto, x_real_ip', 'X-Forwarded-Proto', 'https', 'X-Real-IP', '1.2.3.4', 'X_Forwarded_Proto', 'http'],
    policy({ trusted: ['10.0.0.0/8'] }), { ...ctx, peer: '10.1.2.3' })
  t.same(names(plain).get('x-forwarded-proto'), ['https'], "the balancer's X-Forwarded-Proto, not the `_` one")
  t.same(names(plain).get('x-real-ip'), ['1.2.3.4'])
  t.notOk(names(plain).has('x_forwarded_proto'))
})

t.test('the older and rarer client-address and path claims are dropped from an untrusted client, kept from a trusted one', async (t) => {
  const raw = ['Host', 'a', 'Client-IP', '6.6.6.6', 'X-Forwarded', 'for=6.6.6.6', 'Forwarded-For', '6.6.6.6', 'X-Original-URL', '/admin', 'X-Rewrite-URL', '/admin']
  const claims = ['client-ip', 'x-forwarded', 'forwarded-for', 'x-original-url', 'x-rewrite-url']
  const direct = names(upstreamRequestHeaders(raw, policy(), ctx))
  for (const h of claims) t.notOk(direct.has(h), `${h} dropped`)
  const behind = names(upstreamRequestHeaders(raw, policy({ trusted: ['10.0.0.0/8'] }), { ...ctx, peer: '10.1.2.3' }))
  for (const h of claims) t.ok(behind.has(h), `${h} kept from a trusted peer`)
})

t.test('with x_forwarded off, the client headers pass untouched and nothing is added', async (t) => {
  const out = names(upstreamRequestHeaders(['Host', 'a', 'X-Forwarded-Proto', 'https'], policy({ x_forwarded: false }), ctx))
  t.same(out.get('x-forwarded-proto'), ['https'])
  t.notOk(out.has('x-forwarded-for'))
})

t.test('an absolute-form authority replaces Host', async (t) => {
  const out = names(upstreamRequestHeaders(['Host', 'other.example'], policy(), { ...ctx, authority: 'a.example:81' }))
  t.same(out.get('host'), ['a.example:81'])
  t.same(out.get('x-forwarded-host'), ['a.example:81'])
})

t.test('no reserved header of any spelling, and no configured state header, reaches a client', async (t) => {
  const headers: Record<string, string | string[] | undefined> = {
    'x-tether-state': 'x', 'x_tether_state': 'x', 'x-app-state': 'secret', 'x-app-state-version': '3', 'x_app_state': 's',
    'set-cookie': ['a=1', 'b=2'], 'content-type': 'text/plain', connection: 'keep-alive', 'keep-alive': 'timeout=5',
  }
  const out = clientResponseHeaders(headers, new ReservedHeaders('X-App-State'))
  t.same(Object.keys(out).sort(), ['content-type', 'set-cookie'])
  t.same(out['set-cookie'], ['a=1', 'b=2'])
  t.equal(Object.keys(headers).length, 9, "undici's object is left as it was (the answer gets a copy)")
})

t.test('an upstream answer loses the headers its Connection header names, in any case', async (t) => {
  const headers = { connection: 'close, X-Internal', 'x-internal': 'secret', 'x-public': 'ok' }
  t.same(clientResponseHeaders(headers, new ReservedHeaders('X-App-State')), { 'x-public': 'ok' })
})

t.test('Host must be one valid authority (RFC 9112 section 3.2)', async (t) => {
  const cases: [string[], boolean][] = [
    [['Host', 'a.example'], true],
    [['Host', 'a.example:8080'], true],
    [['Host', '[::1]:8080'], true],
    [['Host', '127.0.0.1'], true],
    [['Host', ''], true],
    [[], true],
    [['Host', 'a', 'host', 'b'], false],
    [['Host', 'a', 'Host', 'a'], false],
    [['Host', 'evil.example/x?y@z'], false],
    [['Host', 'a b'], false],
    [['Host', 'user@a.example'], false],
    [['Host', 'a.example:99999'], false],
    [['Host', 'a.example:80x'], false],
    [['Host', '[::1'], false],
    // an empty host before a port is an empty host (RFC 9110 section 4.2.1)
    [['Host', ':80'], false],
    [['Host', ':'], false],
    [['Host', '[::1]:80'], true],
    [['Host', '[::1]'], true],
    [['Host', 'a:'], true],
  ]
  for (const [raw, ok] of cases) t.equal(fieldsAreValid(raw), ok, JSON.stringify(raw))
})

t.test('a second line of a field that may appear once is refused, in any case; other fields may repeat', async (t) => {
  const cases: [string[], boolean][] = [
    [['Authorization', 'Basic a', 'authorization', 'Basic b'], false],
    [['AUTHORIZATION', 'x', 'Authorization', 'x'], false],
    [['proxy-authorization', 'a', 'Proxy-Authorization', 'b'], false],
    [['If-Match', '"a"', 'If-Match', '"b"'], false],
    [['If-None-Match', '"a"', 'if-none-match', '"a"'], false],
    [['If-Modified-Since', 'x', 'If-Modified-Since', 'y'], false],
    [['If-Unmodified-Since', 'x', 'If-Unmodified-Since', 'y'], false],
    [['If-Range', 'x', 'If-Range', 'y'], false],
    [['Content-Range', 'x', 'Content-Range', 'x'], false],
    [['Content-Length', '1', 'content-length', '1'], false],
    [['Transfer-Encoding', 'gzip', 'Transfer-Encoding', 'chunked'], false],
    [['Expect', '100-continue', 'expect', '100-continue'], false],
    [['Host', 'a', 'Authorization', 'x', 'Proxy-Authorization', 'y', 'If-Match', 'a', 'If-None-Match', 'b', 'If-Range', 'c',
      'If-Modified-Since', 'd', 'If-Unmodified-Since', 'e', 'Content-Range', 'f', 'Content-Length', '1', 'Transfer-Encoding', 'chunked', 'Expect', 'g'], true],
    [['User-Agent', 'a', 'User-Agent', 'b', 'Cookie', 'a=1', 'Cookie', 'b=2', 'Range', 'bytes=0-1', 'Range', 'bytes=2-3', 'Content-Type', 'a', 'Content-Type', 'b'], true],
    [['X-Authorization', 'a', 'X-Authorization', 'b', 'Authorizatiom', 'a', 'Authorizatiom', 'b', 'Hosts', 'a', 'Hosts', 'b'], true],
  ]
  for (const [raw, ok] of cases) t.equal(fieldsAreValid(raw), ok, JSON.stringify(raw))
})

t.test('request targets: origin-form and absolute-form paths pass exactly as written; bad ones are refused', async (t) => {
  t.same(requestTarget('/a/../admin?x=1'), { path: '/a/../admin?x=1', authority: null })
  t.same(requestTarget('http://a.example/a/../admin?x=1'), { path: '/a/../admin?x=1', authority: 'a.example' })
  t.same(requestTarget('HTTP://a.example:81'), { path: '/', authority: 'a.example:81' })
  t.same(requestTarget('http://a.example?q=1'), { path: '/?q=1', authority: 'a.example' })
  t.same(requestTarget('https://[::1]:8443/x'), { path: '/x', authority: '[::1]:8443' })
  t.same(requestTarget('*'), { path: '*', authority: null })
  for (const bad of ['http://[bad/x', 'http://evil.example:99999/x', 'http:///x', 'http://u:p@a.example/x', 'ftp://a.example/x', 'a.example:80', 'x', '', undefined, 'http://:80/x', 'http://:/x', 'https://:443']) {
    t.equal(requestTarget(bad), null, String(bad))
  }
})

t.test('request targets: the visible-US-ASCII check is for h2 only (llhttp admits exactly 0x21-0x7e in an HTTP/1.1 target)', async (t) => {
  // over h2 a :path reaches Tether with bytes 0x80-0xff as they came: 400
  for (const bad of ['/caf\u00e9', '/a b', '/\u0080', 'http://a.example/\u00ff']) t.equal(requestTarget(bad, true), null, JSON.stringify(bad))
  t.same(requestTarget('/a|b{c}^d`e"f%zz<>\\[]', true), { path: '/a|b{c}^d`e"f%zz<>\\[]', authority: null })
  // over HTTP/1.1 the parser refused such bytes already: not scanned again on every request
  t.same(requestTarget('/caf\u00e9', false), { path: '/caf\u00e9', authority: null })
  t.same(requestTarget('/caf\u00e9'), { path: '/caf\u00e9', authority: null })
})

t.test("a trusted peer's X-Forwarded-Proto without -Port: the port is its authority's, else its scheme's", async (t) => {
  const trusted = policy({ trusted: ['10.0.0.0/8'] })
  const port = (raw: string[]): string[] | undefined => names(upstreamRequestHeaders(raw, trusted, { ...ctx, peer: '10.1.2.3' })).get('x-forwarded-port')
  t.same(port(['Host', 'shop.example', 'X-Forwarded-Proto', 'https']), ['443'])
  t.same(port(['Host', 'shop.example', 'X-Forwarded-Proto', 'wss']), ['443'])
  t.same(port(['Host', 'shop.example', 'X-Forwarded-Proto', 'http, https']), ['80'], 'the first element is the client\'s')
  t.same(port(['Host', 'shop.example:8443', 'X-Forwarded-Proto', 'https']), ['8443'])
  t.same(port(['Host', 'internal:9000', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', 'shop.example, internal:9000']), ['443'])
  t.same(port(['Host', 'internal', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', '[2001:db8::1]']), ['443'])
  t.same(port(['Host', 'internal', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Host', '2001:db8::1']), ['443'], 'an unbracketed IPv6 address names no port')
  t.same(port(['Host', 'shop.example', 'X-Forwarded-Proto', 'gopher']), ['8080'], 'an unknown scheme: the listener port')
  t.same(port(['Host', 'shop.example', 'X-Forwarded-Proto', 'https', 'X-Forwarded-Port', '4443']), ['4443'], 'its own port is kept')
  // from an untrusted peer nothing of this is believed
  t.same(names(upstreamRequestHeaders(['Host', 'shop.example', 'X-Forwarded-Proto', 'https'], trusted, ctx)).get('x-forwarded-port'), ['8080'])
})
