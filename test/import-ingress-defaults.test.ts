// ingress-nginx defaults `tether import` must carry over as the migration docs' table says: no
// affinity-mode annotation is ingress-nginx's balanced (Tether's on_scale_up: rebalance, not its
// own default persistent); and spec.tls is listed with where TLS can go now that Tether has
// listen.tls, not as "Tether speaks plain HTTP"; no stickiness converted is Tether's default
// cookie key, with the shared ${TETHER_SECRET} (not a random secret per replica).
import t from 'tap'
import { ingressYaml } from './fixtures/ingress.js'
import { parseConfig } from '../src/config/index.js'
import { convertManifests } from '../src/import/convert.js'

const ENV = { TETHER_SECRET: 'x'.repeat(32), TETHER_ADMIN_TOKEN: 'admin' }

const convert = (annotations: Record<string, string>, tls = false) =>
  convertManifests([{ file: 'ingress.yaml', text: ingressYaml(annotations, tls) }], { manifests: false })

t.test("cookie affinity without affinity-mode is ingress-nginx's balanced: on_scale_up rebalance, saying why", async (t) => {
  const r = convert({ affinity: 'cookie' })
  t.equal(parseConfig(r.proxyYaml, 'proxy.yaml', ENV).affinity.on_scale_up, 'rebalance')
  t.match(r.proxyYaml.replace(/\n\s*# {3}/g, ' '), "# differs: no affinity-mode: ingress-nginx's default is balanced;")
  t.equal(parseConfig(convert({ affinity: 'cookie', 'affinity-mode': 'persistent' }).proxyYaml, 'proxy.yaml', ENV).affinity.on_scale_up, 'persistent')
  t.equal(parseConfig(convert({ affinity: 'cookie', 'affinity-mode': 'balanced' }).proxyYaml, 'proxy.yaml', ENV).affinity.on_scale_up, 'rebalance')
})

t.test('spec.tls is listed with both places TLS can be: in front, or listen.tls in Tether', async (t) => {
  const finding = convert({ affinity: 'cookie' }, true).findings.find((f) => f.what === 'spec.tls')
  t.equal(finding?.why, 'not converted: keep TLS on this Ingress (or the load balancer) in front of Tether and point it at the Tether Service, or terminate TLS in Tether with listen.tls from the same certificate Secret (docs/tls.md)')
  t.notMatch(finding?.why, /plain HTTP/)
})

t.test("no stickiness converted: Tether's default cookie key, signed with the shared ${TETHER_SECRET}", async (t) => {
  // with a random per-process secret, the replicas of the --manifests Deployment would reject
  // each other's cookies
  const inputs: Record<string, string>[] = [{ 'upstream-hash-by': '$request_uri' }, {}, { 'proxy-body-size': '8m' }]
  for (const annotations of inputs) {
    const r = convert(annotations)
    const config = parseConfig(r.proxyYaml, 'proxy.yaml', ENV)
    t.equal(config.affinity.key, 'cookie', JSON.stringify(annotations))
    t.same(config.affinity.cookie.secret, [ENV.TETHER_SECRET], `${JSON.stringify(annotations)}: the secret from TETHER_SECRET`)
    t.match(r.proxyYaml.replace(/\n\s*# {3}/g, ' '), "# Tether's default: Ingress shop/shop (ingress.yaml:1) gave no stickiness Tether converts")
  }
  const manifests = convertManifests([{ file: 'ingress.yaml', text: ingressYaml({ 'upstream-hash-by': '$request_uri' }) }], { manifests: true }).manifests
  t.match(manifests, /name: TETHER_SECRET\n\s+valueFrom:/, 'the Deployment sets TETHER_SECRET from the Secret')
})

t.test('a key other than cookie gets no cookie secret; cookie affinity gets it once', async (t) => {
  const none = convert({ 'load-balance': 'round_robin' })
  t.equal(parseConfig(none.proxyYaml, 'proxy.yaml', ENV).affinity.key, 'none')
  t.notMatch(none.proxyYaml, /secret: \$\{TETHER_SECRET\}/)
  t.notMatch(convert({ 'upstream-hash-by': '$remote_addr' }).proxyYaml, /secret: \$\{TETHER_SECRET\}/)
  t.equal(convert({ affinity: 'cookie' }).proxyYaml.match(/secret: \$\{TETHER_SECRET\}/g)?.length, 1)
})

t.test('an annotation not converted whose value is a URL with credentials is listed with its password masked (stderr and the output)', async (t) => {
  const r = convertManifests([{ file: 'ingress.yaml', text: ingressYaml({ affinity: 'cookie', 'auth-url': 'http://u:s3cretpw@auth.svc/check' }) }], { manifests: false })
  const finding = r.findings.find((f) => f.what.includes('auth-url'))
  t.ok(finding, 'auth-url is listed as not converted')
  t.match(finding!.what, 'http://u:***@auth.svc/check')
  t.notMatch(`${finding!.what} ${finding!.why}`, /s3cretpw/)
  t.notMatch(r.proxyYaml, /s3cretpw/, 'nor in the comment at the top of the output')
})
