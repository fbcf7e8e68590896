// The admin API's browser guard alone (pure): which requests a browser may have sent for a
// hostile page are refused (cross-site changes, rebindable Hosts, repeated headers), and which
// must pass (the CLI, curl, probes, scrapers, the status page's own requests), in every spelling.
import t from 'tap'
import { browserVerdict, type GuardedRequest } from '../src/admin/browser-guard.js'

const ADMIN = '127.0.0.1:9901'

interface Case {
  readonly name: string
  readonly method?: string
  readonly headers: readonly string[]
  readonly hostMustBeKnown?: boolean
  readonly allowed?: readonly string[]
  /** 'ok' or the refusal reason. */
  readonly expect: 'ok' | 'cross_site' | 'unknown_host' | 'ambiguous'
}

const CASES: readonly Case[] = [
  // callers that are not browsers: no Origin, no Sec-Fetch-Site
  { name: 'the CLI (Node fetch: Sec-Fetch-Mode alone) drains', method: 'POST', headers: ['host', ADMIN, 'sec-fetch-mode', 'cors', 'user-agent', 'node'], expect: 'ok' },
  { name: 'curl drains by a DNS name', method: 'POST', headers: ['Host', 'tether-admin.internal:9901', 'User-Agent', 'curl/7.88.1'], expect: 'ok' },
  { name: 'a kubelet probe with Host = pod IP passes', method: 'GET', headers: ['Host', '10.244.1.7:9901', 'User-Agent', 'kube-probe/1.32'], expect: 'ok' },
  { name: 'a Prometheus scrape by a Service name passes (an open route)', method: 'GET', headers: ['Host', 'tether.default.svc:9901'], expect: 'ok' },
  { name: 'an HTTP/1.0 request without Host passes when nothing shows a browser', method: 'GET', headers: [], expect: 'ok' },
  // the status page's own requests
  { name: 'the status page button (same origin) drains', method: 'POST', headers: ['Host', ADMIN, 'Origin', `http://${ADMIN}`, 'Sec-Fetch-Site', 'same-origin'], expect: 'ok' },
  { name: "the status page's polling GET passes", method: 'GET', headers: ['Host', ADMIN, 'Sec-Fetch-Site', 'same-origin', 'Sec-Fetch-Mode', 'cors'], expect: 'ok' },
  { name: 'a page at localhost drains its own listener', method: 'DELETE', headers: ['Host', 'localhost:9901', 'Origin', 'http://localhost:9901'], expect: 'ok' },
  { name: 'a page at [::1] drains its own listener', method: 'POST', headers: ['Host', '[::1]:9901', 'Origin', 'http://[::1]:9901'], expect: 'ok' },
  { name: 'mixed-case header names and values are read alike', method: 'post', headers: ['HOST', 'LocalHost:9901', 'oRiGiN', 'HTTP://LOCALHOST:9901', 'SEC-FETCH-SITE', 'Same-Origin'], expect: 'ok' },
  { name: 'a default port may be written in Host and left out of Origin', method: 'POST', headers: ['Host', '127.0.0.1:80', 'Origin', 'http://127.0.0.1'], expect: 'ok' },
  { name: 'a default port may be left out of Host', method: 'POST', headers: ['Host', '127.0.0.1', 'Origin', 'http://127.0.0.1:80'], expect: 'ok' },
  { name: 'an https origin behind a TLS proxy matches its Host', method: 'POST', headers: ['Host', 'admin.example', 'Origin', 'https://admin.example'], allowed: ['admin.example'], expect: 'ok' },
  { name: 'a typed URL (Sec-Fetch-Site: none) passes', method: 'GET', headers: ['Host', ADMIN, 'Sec-Fetch-Site', 'none'], expect: 'ok' },
  { name: 'a link from another site to the status page passes (a GET changes nothing)', method: 'GET', headers: ['Host', ADMIN, 'Sec-Fetch-Site', 'cross-site'], expect: 'ok' },
  // cross-site changes
  { name: 'a cross-site form POST is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', 'https://evil.example', 'Sec-Fetch-Site', 'cross-site'], expect: 'cross_site' },
  { name: 'a cross-site POST with Origin alone is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', 'https://evil.example'], expect: 'cross_site' },
  { name: 'a cross-site DELETE with Sec-Fetch-Site alone is refused', method: 'DELETE', headers: ['Host', ADMIN, 'Sec-Fetch-Site', 'cross-site'], expect: 'cross_site' },
  { name: 'a same-site POST (another port of localhost) is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', 'http://127.0.0.1:3000', 'Sec-Fetch-Site', 'same-site'], expect: 'cross_site' },
  { name: 'Origin: null (a sandboxed frame, a data: URL) is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', 'null'], expect: 'cross_site' },
  { name: 'an empty Origin is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', ''], expect: 'cross_site' },
  { name: 'an Origin with a path is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', `http://${ADMIN}/`], expect: 'cross_site' },
  { name: 'an Origin of another scheme is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', `ftp://${ADMIN}`], expect: 'cross_site' },
  { name: 'a same-origin Origin with a cross-site Sec-Fetch-Site is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', `http://${ADMIN}`, 'Sec-Fetch-Site', 'cross-site'], expect: 'cross_site' },
  { name: 'an unknown Sec-Fetch-Site value is refused for a change', method: 'POST', headers: ['Host', ADMIN, 'Sec-Fetch-Site', 'same-ish'], expect: 'cross_site' },
  { name: 'Origin for another port of the same IP is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', 'http://127.0.0.1:9902'], expect: 'cross_site' },
  { name: 'an unknown method is judged as a change', method: 'PATCH', headers: ['Host', ADMIN, 'Origin', 'https://evil.example'], expect: 'cross_site' },
  // DNS rebinding: the Host is the attacker's name
  { name: 'a rebound POST (Origin equals its own Host) is refused by its Host', method: 'POST', headers: ['Host', 'rebind.evil.example:9901', 'Origin', 'http://rebind.evil.example:9901'], expect: 'unknown_host' },
  { name: 'a rebound GET with Sec-Fetch-Site is refused by its Host', method: 'GET', headers: ['Host', 'rebind.evil.example:9901', 'Sec-Fetch-Site', 'same-origin'], expect: 'unknown_host' },
  { name: 'a rebound GET with no browser header is refused on a tokenless data route', method: 'GET', headers: ['Host', 'rebind.evil.example:9901', 'Accept', '*/*'], hostMustBeKnown: true, expect: 'unknown_host' },
  { name: 'a Host without port is judged by its name', method: 'GET', headers: ['Host', 'rebind.evil.example', 'Origin', 'http://rebind.evil.example'], expect: 'unknown_host' },
  { name: 'localhost with a trailing dot is not localhost', method: 'GET', headers: ['Host', 'localhost.:9901', 'Sec-Fetch-Site', 'same-origin'], expect: 'unknown_host' },
  { name: 'a name under localhost is not localhost', method: 'GET', headers: ['Host', 'a.localhost:9901', 'Sec-Fetch-Site', 'same-origin'], expect: 'unknown_host' },
  { name: 'a short-form IPv4 is not an IP literal', method: 'GET', headers: ['Host', '127.1:9901', 'Sec-Fetch-Site', 'same-origin'], expect: 'unknown_host' },
  { name: 'a bracketed name is not an IPv6 literal', method: 'GET', headers: ['Host', '[evil.example]:9901', 'Sec-Fetch-Site', 'same-origin'], expect: 'unknown_host' },
  { name: 'a missing Host with browser headers is refused', method: 'GET', headers: ['Sec-Fetch-Site', 'same-origin'], expect: 'unknown_host' },
  { name: 'an empty Host on a tokenless data route is refused', method: 'GET', headers: ['Host', ''], hostMustBeKnown: true, expect: 'unknown_host' },
  { name: 'a malformed port in Host is refused', method: 'GET', headers: ['Host', '127.0.0.1:99999x', 'Origin', 'http://127.0.0.1'], expect: 'unknown_host' },
  { name: 'a data route without token by an IPv6 Host passes', method: 'GET', headers: ['Host', '[::1]:9901'], hostMustBeKnown: true, expect: 'ok' },
  { name: 'a data route without token by an IPv6 Host without port passes', method: 'GET', headers: ['Host', '[fd00::7]'], hostMustBeKnown: true, expect: 'ok' },
  { name: 'a data route without token by pod IP passes', method: 'GET', headers: ['Host', '10.244.1.7:9901'], hostMustBeKnown: true, expect: 'ok' },
  { name: 'an allowed name passes, in any case', method: 'POST', headers: ['Host', 'Tether-Admin.Internal:9901', 'Origin', 'http://tether-admin.internal:9901'], allowed: ['TETHER-ADMIN.internal'], expect: 'ok' },
  // admin.allowed_hosts takes a fully qualified name with its root dot (`tether-admin.internal.`):
  // it was then matched by no browser, which sends the name as typed (without the dot)
  { name: 'an allowed name written with its root dot passes without it', method: 'GET', headers: ['Host', 'tether-admin.internal:9901', 'Sec-Fetch-Site', 'same-origin'], allowed: ['tether-admin.internal.'], expect: 'ok' },
  { name: 'an allowed name passes with its root dot', method: 'POST', headers: ['Host', 'tether-admin.internal.:9901', 'Origin', 'http://tether-admin.internal.:9901'], allowed: ['tether-admin.internal'], expect: 'ok' },
  { name: 'an allowed name with a root dot does not allow its subdomains', method: 'GET', headers: ['Host', 'x.tether-admin.internal.', 'Sec-Fetch-Site', 'same-origin'], allowed: ['tether-admin.internal.'], expect: 'unknown_host' },
  { name: 'two root dots are no name', method: 'GET', headers: ['Host', 'tether-admin.internal..', 'Sec-Fetch-Site', 'same-origin'], allowed: ['tether-admin.internal.'], expect: 'unknown_host' },
  { name: 'an allowed name does not allow its subdomains', method: 'GET', headers: ['Host', 'x.tether-admin.internal:9901', 'Sec-Fetch-Site', 'same-origin'], allowed: ['tether-admin.internal'], expect: 'unknown_host' },
  // repeated headers
  { name: 'two Origin headers are refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', `http://${ADMIN}`, 'origin', 'https://evil.example'], expect: 'ambiguous' },
  { name: 'two Origin headers are refused on a GET too', method: 'GET', headers: ['Host', ADMIN, 'Origin', `http://${ADMIN}`, 'ORIGIN', `http://${ADMIN}`], expect: 'ambiguous' },
  { name: 'two Sec-Fetch-Site headers are refused', method: 'POST', headers: ['Host', ADMIN, 'Sec-Fetch-Site', 'same-origin', 'sec-fetch-site', 'cross-site'], expect: 'ambiguous' },
  { name: 'two Host headers are refused for a browser', method: 'GET', headers: ['Host', ADMIN, 'Host', 'evil.example', 'Sec-Fetch-Site', 'same-origin'], expect: 'ambiguous' },
  { name: 'a joined Origin list (as a front passes repeats on) is refused', method: 'POST', headers: ['Host', ADMIN, 'Origin', `http://${ADMIN}, https://evil.example`], expect: 'cross_site' },
]

for (const c of CASES) {
  t.test(c.name, async (t) => {
    const req: GuardedRequest = { method: c.method ?? 'GET', rawHeaders: c.headers, hostMustBeKnown: c.hostMustBeKnown ?? false }
    const v = browserVerdict(req, c.allowed ?? [])
    t.equal(v.ok ? 'ok' : v.reason, c.expect)
  })
}

t.test('a refusal has a one-line Forbidden message and names what decided', async (t) => {
  const v = browserVerdict({ method: 'POST', rawHeaders: ['Host', ADMIN, 'Origin', 'https://evil.example', 'Sec-Fetch-Site', 'cross-site'], hostMustBeKnown: false }, [])
  if (v.ok) return t.fail('refused')
  t.match(v.message, /^Forbidden: cross-site request refused/)
  t.notMatch(v.message, /\n/)
  t.same(v.seen, { origin: 'https://evil.example', host: ADMIN, fetch_site: 'cross-site' })
})

t.test('the rebinding refusal names the Host and the config key, cut short', async (t) => {
  const long = `${'a'.repeat(300)}.example`
  const v = browserVerdict({ method: 'GET', rawHeaders: ['Host', long, 'Origin', `http://${long}`], hostMustBeKnown: false }, [])
  if (v.ok) return t.fail('refused')
  t.match(v.message, /^Forbidden: Host "a+\.\.\." is not an IP address, localhost or a name in admin\.allowed_hosts/)
  t.ok(v.message.length < 400, 'the message stays short')
  t.equal(v.seen.fetch_site, null)
})

t.test('the verdict is the same for the same request, whatever was judged before', async (t) => {
  const req: GuardedRequest = { method: 'POST', rawHeaders: ['Host', ADMIN, 'Origin', `http://${ADMIN}`], hostMustBeKnown: true }
  t.same([browserVerdict(req, []), browserVerdict(req, ['x']), browserVerdict(req, [])], [{ ok: true }, { ok: true }, { ok: true }])
})
