// `tether import` and where the traffic really went: a non-sticky ingress-nginx Ingress in front
// of a Service with `sessionAffinity: ClientIP` (ingress-nginx sends to the pods' endpoints, not
// the Service's ClusterIP, so kube-proxy's affinity never applied to it), and `--manifests` for
// input that names no namespace (objects without one, so `kubectl apply -n X` places them).
import t from 'tap'
import { parseConfig, parseYamlDocuments, plainValue, type Config } from '../src/config/index.js'
import { convertManifests, type ImportResult } from '../src/import/convert.js'
import { ingressYaml } from './fixtures/ingress.js'
import { validateObject } from './fixtures/kubernetes-schema.js'

const ENV = { TETHER_SECRET: 'x'.repeat(32), TETHER_ADMIN_TOKEN: 'admin' }
const configOf = (r: ImportResult): Config => parseConfig(r.proxyYaml, 'imported proxy.yaml', ENV)
const flat = (r: ImportResult): string => r.proxyYaml.replace(/\n\s*# {3}/g, ' ')

const clientIpService = (namespace = 'shop') => `apiVersion: v1
kind: Service
metadata: { name: shop, namespace: ${namespace} }
spec:
  selector: { app: shop }
  sessionAffinity: ClientIP
  sessionAffinityConfig: { clientIP: { timeoutSeconds: 1800 } }
  ports: [{ name: web, port: 80, targetPort: http }]
`

t.test('a non-sticky Ingress in front of a ClientIP Service: the Ingress is converted, the bypassed affinity is reported, not turned into client-IP stickiness', async (t) => {
  const ingress = ingressYaml({ 'proxy-read-timeout': '120' })
  const r = convertManifests([{ file: 'ingress.yaml', text: ingress }, { file: 'svc.yaml', text: clientIpService() }], { manifests: false })
  t.equal(r.converted, 'Ingress shop/shop (ingress.yaml:1)', 'the path the traffic took')
  const c = configOf(r)
  t.not(c.affinity.key, 'client_ip', 'behind the Ingress every request came from an ingress-nginx pod: client_ip would pin them all to one pod')
  t.equal(c.affinity.key, 'cookie')
  t.equal(c.timeouts.response_headers, 120_000, "the Ingress's own settings are converted")
  const service = r.findings.find((f) => f.what.startsWith('Service shop/shop'))
  t.match(service?.why, /sessionAffinity: ClientIP was not converted/)
  t.match(service?.why, /ingress-nginx sends to the pods directly \(their endpoints, not the Service's ClusterIP\)/)
  t.match(service?.why, /clients had no stickiness through Ingress shop\/shop/)
  t.match(flat(r), /Ingress shop\/shop had no stickiness of its own and ingress-nginx bypassed the ClientIP affinity of Service shop/, 'the affinity.key comment says why')
  // with service-upstream: "true" nginx sends to the ClusterIP: kube-proxy saw the controller's address
  const upstream = convertManifests([{ file: 'ingress.yaml', text: ingressYaml({ 'service-upstream': 'true' }) }, { file: 'svc.yaml', text: clientIpService() }], { manifests: false })
  t.equal(upstream.converted, 'Ingress shop/shop (ingress.yaml:1)')
  t.match(upstream.findings.find((f) => f.what.startsWith('Service shop/shop'))?.why, /service-upstream: "true".*the ingress-nginx pod's address, not the client's/s)
})

t.test('a ClientIP Service that no Ingress sends to is still converted next to a non-sticky Ingress', async (t) => {
  const r = convertManifests([{ file: 'ingress.yaml', text: ingressYaml({}) }, { file: 'svc.yaml', text: clientIpService('games') }], { manifests: false })
  t.equal(r.converted, 'Service games/shop (svc.yaml:1)', 'another namespace: not the Ingress backend')
  t.equal(configOf(r).affinity.key, 'client_ip')
})

t.test('--manifests for input without a namespace: no namespace on the objects, so kubectl apply -n X places them', async (t) => {
  const text = 'apiVersion: v1\nkind: Service\nmetadata: { name: game }\nspec:\n  sessionAffinity: ClientIP\n  ports: [{ name: ws, port: 80 }]\n'
  const r = convertManifests([{ file: 'svc.yaml', text }], { manifests: true, image: 'ghcr.io/example/tether:0.1.0' })
  const objects = parseYamlDocuments(r.manifests!, 'manifests').map(plainValue) as Record<string, any>[]
  t.equal(objects.length, 8)
  for (const o of objects) {
    t.same(validateObject(o), [], `${o['kind']} is valid`)
    t.notOk('namespace' in o['metadata'], `${o['kind']} names no namespace (was "default": kubectl apply -n X refuses a mismatch)`)
  }
  // a RoleBinding's ServiceAccount subject without a namespace is the binding's own (Kubernetes RBAC)
  t.same(objects[2]!['subjects'], [{ kind: 'ServiceAccount', name: 'tether' }])
  t.notMatch(r.manifests, /-n default/)
  t.match(r.manifests, /kubectl -n <namespace> create secret generic tether-secrets/)
  t.match(r.manifests, /kubectl -n <namespace> apply -f/)
  t.equal(configOf(r).discovery.kubernetes?.namespace, null, "discovery watches Tether's own namespace")
})
