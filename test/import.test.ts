// `tether import`: the converter on the realistic manifests in test/fixtures/import (each
// output must pass Tether's own config checker, every annotation of the input must be either
// converted or listed), the --manifests output against the Kubernetes schemas, and the CLI.
import t from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { ConfigError, parseConfig, parseYamlDocuments, plainValue, type Config } from '../src/config/index.js'
import { convertManifests, ImportError, type ImportResult } from '../src/import/convert.js'
import { gatewayDuration } from '../src/import/gateway-api.js'
import { ROOT, runCli, tempFile } from './fixtures/cli.js'
import { validateObject } from './fixtures/kubernetes-schema.js'

const DIR = join(ROOT, 'test', 'fixtures', 'import')
const ENV = { TETHER_SECRET: 'x'.repeat(32), TETHER_ADMIN_TOKEN: 'admin' }
const source = (name: string) => ({ file: name, text: readFileSync(join(DIR, name), 'utf8') })
const convert = (...names: string[]): ImportResult => convertManifests(names.map(source), { manifests: false })
const configOf = (r: ImportResult): Config => parseConfig(r.proxyYaml, 'imported proxy.yaml', ENV)
/** proxy.yaml with wrapped comment lines joined again (for matching sentences). */
const flat = (r: ImportResult): string => r.proxyYaml.replace(/\n\s*# {3}/g, ' ')
const whats = (r: ImportResult): string[] => r.findings.map((f) => f.what.replace(/: .*$/s, ''))

t.test('ingress-nginx cookie affinity: every session-cookie annotation, timeouts, body size and retries', async (t) => {
  const r = convert('ingress-nginx-cookie.yaml')
  const c = configOf(r)
  t.equal(r.converted, 'Ingress shop/shop (ingress-nginx-cookie.yaml:36)')
  t.same(c.discovery.kubernetes, { service: 'shop', namespace: 'shop', port: 'web', kubeconfig: null, weight_annotation: null }, 'the backend Service, its port by name')
  t.same(c.upstreams, [])
  t.match(c.affinity, {
    key: 'cookie', on_scale_up: 'rebalance', idle_timeout: 86_400_000, absolute_timeout: 172_800_000, strict: false,
    cookie: { name: 'shop_route', secret: [ENV.TETHER_SECRET], path: '/', max_age: 172_800_000, same_site: 'Lax', secure: true },
  })
  t.match(c.timeouts, { connect: 5_000, response_headers: 120_000, body_idle: 120_000 })
  t.equal(c.limits.max_body_bytes, 20 * 1024 * 1024)
  t.equal(c.retries.attempts, 2, 'tries 3 = the first + 2 retries')
  t.same(c.admin.listen, { host: '0.0.0.0', port: 9901 })
  t.equal(c.admin.token, 'admin')
  t.same(whats(r).sort(), [
    'cert-manager.io/cluster-issuer',
    'hosts shop.example.com',
    'kubernetes.io/ingress.class',
    'nginx.ingress.kubernetes.io/configuration-snippet',
    'nginx.ingress.kubernetes.io/proxy-next-upstream',
    'nginx.ingress.kubernetes.io/proxy-send-timeout',
    'nginx.ingress.kubernetes.io/session-cookie-conditional-samesite-none',
    'nginx.ingress.kubernetes.io/session-cookie-expires',
    'nginx.ingress.kubernetes.io/ssl-redirect',
    'spec.tls',
  ], 'what was not converted, each named')
  t.match(flat(r), /# from ingress-nginx-cookie\.yaml:46 nginx\.ingress\.kubernetes\.io\/session-cookie-name: "shop_route"\n\s*name: shop_route\n/, 'each key says where it came from')
  t.match(flat(r), /# differs: Tether's cookie is signed/, 'and how Tether differs')
  t.match(r.proxyYaml, /^# Not converted \(review each\):\n# - ingress-nginx-cookie\.yaml:/m, 'the list heads the file')
})

t.test('ingress-nginx upstream-hash-by $http_x: header key; a numeric port mapped through the Service; other backends and path rules listed', async (t) => {
  const r = convert('ingress-nginx-hash.yaml')
  const c = configOf(r)
  t.equal(c.affinity.key, 'header')
  t.equal(c.affinity.header.name, 'X-Tenant-Id', "nginx's $http_x_tenant_id")
  t.same(c.discovery.kubernetes, { service: 'api', namespace: 'saas', port: 3000, kubeconfig: null, weight_annotation: null }, 'Service port 80 (unnamed) -> targetPort 3000, the pods\' port')
  t.equal(c.timeouts.response_headers, 30_000)
  t.same(whats(r).sort(), [
    'backend Service docs port 8080',
    'hosts api.example.com',
    'nginx.ingress.kubernetes.io/load-balance',
    'nginx.ingress.kubernetes.io/rewrite-target',
    'nginx.ingress.kubernetes.io/upstream-hash-by-subset',
    'nginx.ingress.kubernetes.io/use-regex',
  ])
  t.match(r.findings.find((f) => f.what.startsWith('backend Service docs'))?.why, /Tether fronts one set of pods \(Service api\)/)
})

t.test('ingress-nginx upstream-hash-by $cookie_x: the app cookie; unlimited body and tries', async (t) => {
  const r = convert('ingress-nginx-hash-cookie.yaml')
  const c = configOf(r)
  t.match(c.affinity, { key: 'app_cookie', app_cookie: { name: 'PHPSESSID', fallback: 'client_ip' } })
  t.equal(c.limits.max_body_bytes, null, 'proxy-body-size 0 = no limit')
  t.equal(c.retries.attempts, 10, 'tries 0 (no limit) -> at most 10')
  t.equal(c.retries.try_duration, 15_000)
  t.same(c.discovery.kubernetes, { service: 'legacy-php', namespace: null, port: 'http', kubeconfig: null, weight_annotation: null }, 'the default backend; no namespace in the input')
  t.same(whats(r), ['nginx.ingress.kubernetes.io/backend-protocol'])
  t.match(r.findings[0]!.why, /HTTP\/1\.1 to the pods/)
})

t.test('ingress-nginx upstream-hash-by of two variables ($cookie_a$cookie_b) is not converted, and said so', async (t) => {
  const text = readFileSync(join(DIR, 'ingress-nginx-hash-cookie.yaml'), 'utf8').replace('"$cookie_PHPSESSID"', '"$cookie_a$cookie_b"')
  const r = convertManifests([{ file: 'combined.yaml', text }], { manifests: false })
  t.not(configOf(r).affinity.key, 'app_cookie', 'no cookie named "a$cookie_b"')
  t.ok(whats(r).includes('nginx.ingress.kubernetes.io/upstream-hash-by'), 'listed as not converted')
})

t.test('ingress-nginx upstream-hash-by $remote_addr from a kubectl List: client IP; a port number without its Service is flagged', async (t) => {
  const r = convert('ingress-nginx-remote-addr.yaml')
  const c = configOf(r)
  t.equal(c.affinity.key, 'client_ip')
  t.same(c.discovery.kubernetes, { service: 'chat', namespace: 'chat', port: 4000, kubeconfig: null, weight_annotation: null })
  t.same(whats(r), ['nginx.ingress.kubernetes.io/affinity-mode', 'the port of Service chat'])
  t.match(r.findings[0]!.why, /no effect without nginx\.ingress\.kubernetes\.io\/affinity: cookie/)
  t.match(r.findings[1]!.why, /Service chat is not among the input files/)
  t.notMatch(r.proxyYaml, /last-applied-configuration/, "kubectl's last-applied copy is not a setting")
  t.match(flat(r), /trusted_proxies/, 'the client IP note says how to trust a load balancer')
})

t.test('a Service with sessionAffinity ClientIP: client IP with its timeout, the first port', async (t) => {
  const r = convert('service-clientip.yaml')
  const c = configOf(r)
  t.equal(r.converted, 'Service games/game (service-clientip.yaml:23)')
  t.equal(c.affinity.key, 'client_ip')
  t.equal(c.affinity.idle_timeout, 1_800_000, 'timeoutSeconds 1800')
  t.same(c.discovery.kubernetes, { service: 'game', namespace: 'games', port: 'ws', kubeconfig: null, weight_annotation: null })
  t.same(whats(r), ['ports ws, metrics'])
  t.match(flat(r), /kube-proxy keeps its table on each node/)
})

t.test('Gateway API HTTPRoute sessionPersistence Cookie: name, idle and absolute timeouts, Permanent lifetime; the rest listed', async (t) => {
  const r = convert('httproute-cookie.yaml')
  const c = configOf(r)
  t.equal(r.converted, 'HTTPRoute portal/portal (httproute-cookie.yaml:26)')
  t.match(c.affinity, { key: 'cookie', idle_timeout: 1_800_000, absolute_timeout: 28_800_000, cookie: { name: 'portal-session', max_age: 28_800_000 } })
  t.same(c.discovery.kubernetes, { service: 'portal', namespace: 'portal', port: 'http', kubeconfig: null, weight_annotation: null })
  t.same(whats(r).sort(), ['backend Service portal-canary port 8080', 'backendRefs weights', 'rule 1 (no sessionPersistence)'])
})

t.test('Gateway API HTTPRoute sessionPersistence Header: header key, timeouts capped and kept coherent', async (t) => {
  const r = convert('httproute-header.yaml')
  const c = configOf(r)
  t.match(c.affinity, { key: 'header', header: { name: 'X-Agent-Session' }, idle_timeout: 86_400_000, absolute_timeout: 172_800_000 })
  t.same(c.discovery.kubernetes?.port, 8000)
  t.same(whats(r), ['the port of Service agents'])
  t.match(flat(r), /it never issues the header itself/)
})

t.test('several sources: the Ingress wins, the Service behind it is reported, not silently dropped', async (t) => {
  const behind = `apiVersion: v1
kind: Service
metadata: { name: shop, namespace: shop }
spec:
  selector: { app: shop }
  sessionAffinity: ClientIP
  ports: [{ name: web, port: 80, targetPort: http }]
`
  const r = convertManifests([source('ingress-nginx-cookie.yaml'), { file: 'svc.yaml', text: behind }, source('httproute-cookie.yaml')], { manifests: false })
  t.equal(configOf(r).affinity.key, 'cookie')
  const service = r.findings.find((f) => f.what.startsWith('Service shop/shop'))
  t.match(service?.why, /its sessionAffinity: ClientIP was not converted: ingress-nginx sends to the pods directly/)
  t.match(r.findings.find((f) => f.what.startsWith('HTTPRoute portal/portal'))?.why, /one Tether replaces one source of stickiness/)
})

t.test('every annotation of every fixture is converted or listed', async (t) => {
  for (const name of readdirSync(DIR).filter((f) => f.endsWith('.yaml') && f !== 'nothing.yaml')) {
    const r = convert(name)
    const docs = parseYamlDocuments(readFileSync(join(DIR, name), 'utf8'), name).map(plainValue) as any[]
    const objects = docs.flatMap((d) => (d.kind === 'List' ? d.items : [d]))
    for (const o of objects) {
      for (const key of Object.keys(o.metadata?.annotations ?? {})) {
        if (key === 'kubectl.kubernetes.io/last-applied-configuration') continue
        t.ok(r.proxyYaml.includes(key), `${name}: ${key} appears in the output`)
      }
    }
    t.doesNotThrow(() => configOf(r), `${name}: the output passes tether check`)
  }
})

t.test('nothing to import, or unreadable YAML, is a clear error', async (t) => {
  t.throws(() => convert('nothing.yaml'), new ImportError('nothing to import: no Ingress, no HTTPRoute with sessionPersistence and no Service with sessionAffinity: ClientIP in nothing.yaml'))
  t.throws(() => convertManifests([{ file: 'bad.yaml', text: 'kind: Ingress\nmetadata: {name: x\n' }], { manifests: false }), ConfigError)
  t.throws(() => convertManifests([{ file: 'i.yaml', text: 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\nspec: {}\n' }], { manifests: false }), { message: 'Ingress x (i.yaml:1) names no backend Service: nothing to discover' })
})

t.test('Gateway API durations', async (t) => {
  t.equal(gatewayDuration('1h30m'), 5_400_000)
  t.equal(gatewayDuration('500ms'), 500)
  t.equal(gatewayDuration('10s'), 10_000)
  t.equal(gatewayDuration('1d'), undefined)
  t.equal(gatewayDuration('1.5h'), undefined)
  t.equal(gatewayDuration(30), undefined)
})

t.test('--manifests: valid Kubernetes objects in the app namespace, the ConfigMap holds the proxy.yaml', async (t) => {
  const r = convertManifests([source('ingress-nginx-cookie.yaml')], { manifests: true, image: 'ghcr.io/example/tether:0.1.0' })
  const objects = parseYamlDocuments(r.manifests!, 'manifests').map(plainValue) as Record<string, any>[]
  t.same(objects.map((o) => `${o['kind']}/${o['metadata'].name}`), [
    'ServiceAccount/tether', 'Role/tether-discovery', 'RoleBinding/tether-discovery', 'ConfigMap/tether-config',
    'Deployment/tether', 'Service/tether', 'PodDisruptionBudget/tether', 'NetworkPolicy/tether',
  ])
  for (const o of objects) {
    t.same(validateObject(o), [], `${o['kind']} is valid`)
    t.equal(o['metadata'].namespace, 'shop', `${o['kind']} in the app's namespace`)
  }
  const cm = objects[3]!
  t.equal(cm['data']['proxy.yaml'], r.proxyYaml)
  t.doesNotThrow(() => parseConfig(cm['data']['proxy.yaml'], 'cm', ENV))
  t.same(objects[1]!['rules'], [{ apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] }])
  t.same(objects[2]!['subjects'], [{ kind: 'ServiceAccount', name: 'tether', namespace: 'shop' }])
  t.match(r.manifests, /^# Tether for Ingress shop\/shop/)
  t.match(r.manifests, /kubectl -n shop create secret generic tether-secrets/)
})

t.test('the CLI: tether import prints proxy.yaml, lists what was not converted on stderr, and its output passes tether check', async (t) => {
  const file = join(DIR, 'service-clientip.yaml')
  // independent runs at once (each is a node start-up)
  const [r, m, nothing, missing, usage] = await Promise.all([
    runCli(['import', file]),
    runCli(['import', '--manifests', file]),
    runCli(['import', join(DIR, 'nothing.yaml')]),
    runCli(['import', join(DIR, 'missing.yaml')]),
    runCli(['import', '--bogus', file]),
  ])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stderr, /^tether import: converted Service games\/game \(.*service-clientip\.yaml:23\)\ntether import: not converted \(1, also listed at the top of the output\):\n  .*service-clientip\.yaml:\d+ ports ws, metrics: /)
  const check = await runCli(['check', tempFile('proxy.yaml', r.stdout)], ENV)
  t.equal(check.code, 0, check.stderr)
  t.match(check.stdout, /ok \(Kubernetes discovery of Service game \(games\) port ws/)
  t.equal(m.code, 0)
  t.match(m.stdout, /image: ghcr\.io\/example\/tether:\d+\.\d+\.\d+\n/, "the image is tagged with Tether's version")
  t.equal(nothing.code, 1)
  t.match(nothing.stderr, /^tether import: nothing to import: /)
  t.equal(nothing.stdout, '')
  t.equal(missing.code, 1)
  t.match(missing.stderr, /^tether import: cannot read .*missing\.yaml: no such file or directory \(ENOENT\)\n$/)
  t.equal(usage.code, 2)
  t.match(usage.stderr, /unknown argument "--bogus"/)
})
