// Cookie lifetimes over 596h (ingress-nginx's common 30 days): cookie.max_age is a Max-Age sent
// to the browser, not a timer, so it goes up to the 400 days browsers keep; absolute_timeout
// stays within 596h and `tether import` lowers it with a note. And `tether import` checks the
// proxy.yaml it writes with the real config parser, so it never prints one `tether check` rejects.
import t from 'tap'
import { ingressYaml } from './fixtures/ingress.js'
import { ConfigError, parseConfig, type Config } from '../src/config/index.js'
import { convertManifests, ImportError, type ImportResult } from '../src/import/convert.js'

const ENV = { TETHER_SECRET: 'x'.repeat(32), TETHER_ADMIN_TOKEN: 'admin' }
const configOf = (r: ImportResult): Config => parseConfig(r.proxyYaml, 'imported proxy.yaml', ENV)
const flat = (r: ImportResult): string => r.proxyYaml.replace(/\n\s*# {3}/g, ' ')
const H = 3_600_000

function route(sessionPersistence: string): string {
  return [
    'apiVersion: gateway.networking.k8s.io/v1',
    'kind: HTTPRoute',
    'metadata: { name: portal, namespace: portal }',
    'spec:',
    '  rules:',
    `    - sessionPersistence: ${sessionPersistence}`,
    '      backendRefs: [{ name: portal, port: 8080 }]',
    '',
  ].join('\n')
}

const convert = (file: string, text: string): ImportResult => convertManifests([{ file, text }], { manifests: false })

t.test('cookie.max_age goes up to 400 days (a Max-Age, not a timer); absolute_timeout stays within 596h', async (t) => {
  const yaml = (affinity: string): string => `upstreams: [{ id: a, url: "http://127.0.0.1:9001" }]\naffinity: ${affinity}\n`
  t.equal(parseConfig(yaml('{ cookie: { max_age: 720h } }'), 'proxy.yaml').affinity.cookie.max_age, 720 * H)
  t.equal(parseConfig(yaml('{ cookie: { max_age: 9600h } }'), 'proxy.yaml').affinity.cookie.max_age, 9600 * H)
  t.throws(() => parseConfig(yaml('{ cookie: { max_age: 9601h } }'), 'proxy.yaml'), new ConfigError(['proxy.yaml:2:32 affinity.cookie.max_age: expected a duration <= 9600h, got "9601h"']))
  t.throws(() => parseConfig(yaml('{ absolute_timeout: 597h }'), 'proxy.yaml'), new ConfigError(['proxy.yaml:2:31 affinity.absolute_timeout: expected a duration <= 596h (24.8 days, the Node.js timer limit), got "597h"']))
})

t.test('ingress-nginx session-cookie-max-age of 30 days: max_age 720h, absolute_timeout lowered to 596h with a note', async (t) => {
  const r = convert('ingress.yaml', ingressYaml({ affinity: 'cookie', 'session-cookie-max-age': '2592000' }))
  const c = configOf(r)
  t.equal(c.affinity.cookie.max_age, 720 * H)
  t.equal(c.affinity.absolute_timeout, 596 * H)
  t.equal(c.affinity.idle_timeout, 24 * H)
  t.match(flat(r), "differs: Tether's absolute_timeout is at most 596h (24.8 days)")
})

t.test('ingress-nginx session-cookie-expires of 500 days: max_age lowered to 400 days with a note', async (t) => {
  const r = convert('ingress.yaml', ingressYaml({ affinity: 'cookie', 'session-cookie-expires': String(500 * 86_400) }))
  const c = configOf(r)
  t.equal(c.affinity.cookie.max_age, 9600 * H)
  t.equal(c.affinity.absolute_timeout, 596 * H)
  t.match(flat(r), 'differs: sent as Max-Age (the same lifetime; Expires is the legacy form); lowered to 9600h (400 days), the longest Max-Age browsers keep')
})

t.test('Gateway API absoluteTimeout of 30 days with a Permanent cookie: max_age 720h, absolute_timeout 596h', async (t) => {
  const r = convert('route.yaml', route('{ type: Cookie, idleTimeout: 1h, absoluteTimeout: 720h, cookieConfig: { lifetimeType: Permanent } }'))
  const c = configOf(r)
  t.equal(c.affinity.cookie.max_age, 720 * H)
  t.equal(c.affinity.absolute_timeout, 596 * H)
  t.equal(c.affinity.idle_timeout, 1 * H)
  t.match(flat(r), 'differs: lowered to 596h (24.8 days), the longest Tether allows')
  const long = configOf(convert('route.yaml', route('{ type: Cookie, absoluteTimeout: 10000h, cookieConfig: { lifetimeType: Permanent } }')))
  t.equal(long.affinity.cookie.max_age, 9600 * H)
})

t.test('tether import refuses to print a proxy.yaml that tether check rejects', async (t) => {
  // a __Host- cookie cannot have a Domain: converted key by key, the pair is not valid
  const text = ingressYaml({ affinity: 'cookie', 'session-cookie-name': '__Host-route', 'session-cookie-domain': 'shop.example.com' })
  t.throws(() => convert('ingress.yaml', text), ImportError)
  t.throws(() => convert('ingress.yaml', text), {
    message: /^the proxy\.yaml converted from the input does not pass tether check, so it is not printed \(please report this with the input\): proxy\.yaml:\d+:\d+ affinity\.cookie: .*__Host-/,
  })
})
