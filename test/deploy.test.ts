// The deployment material is part of the product: every manifest under deploy/kubernetes must
// be a valid Kubernetes object (checked offline against the schemas bundled in
// kubernetes-models, plus a strict field check those schemas don't do), every proxy.yaml in a
// ConfigMap must pass Tether's own config checker, and the pieces must agree with each other
// (probe ports, grace periods, Services, Secret keys) and with the Dockerfile.
import t, { type Test } from 'tap'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { tmpdir } from 'node:os'
import { dirname, join, relative } from 'node:path'
import { parseAllDocuments } from 'yaml'
import { parseConfig, type Config } from '../src/config/index.js'
import { ROOT } from './fixtures/cli.js'
import { validateObject } from './fixtures/kubernetes-schema.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { tetherManifests } from '../src/import/tether-manifests.js'
import { SERVING_ENV, SERVING_V8_FLAGS } from '../src/workers/worker-flags.js'
import { upstreamId } from '../src/upstream/address.js'

const DEPLOY = join(ROOT, 'deploy', 'kubernetes')
/** The image's `--config` (Dockerfile CMD) and where the manifests mount the ConfigMap. */
const CONFIG_PATH = '/etc/tether/proxy.yaml'
const SECRET_EXAMPLE = join(DEPLOY, 'ingress', 'secret.example.yaml')

// ---- loading -------------------------------------------------------------------------------

type Obj = Record<string, any> // parsed YAML: shapes are checked by the schemas below

interface Doc {
  readonly file: string // relative to the repository root
  readonly index: number // document number in the file
  readonly obj: Obj
}

function walk(dir: string): string[] {
  return readdirSync(dir).sort().flatMap((name) => {
    const p = join(dir, name)
    return statSync(p).isDirectory() ? walk(p) : [p]
  })
}

const yamlFiles = walk(DEPLOY).filter((f) => /\.ya?ml$/.test(f))
const isKustomization = (f: string): boolean => /(^|\/)kustomization\.ya?ml$/.test(f)

function loadDocs(file: string): Doc[] {
  const docs = parseAllDocuments(readFileSync(file, 'utf8'), { version: '1.2' })
  if (!Array.isArray(docs)) return [] // an empty stream
  return docs.flatMap((d, index) => {
    const errors = [...d.errors, ...d.warnings]
    if (errors.length > 0) throw new Error(`${relative(ROOT, file)} document ${index}: ${errors[0]!.message}`)
    const obj: unknown = d.toJS()
    return obj === null ? [] : [{ file: relative(ROOT, file), index, obj: obj as Obj }]
  })
}

const manifests: Doc[] = yamlFiles.filter((f) => !isKustomization(f)).flatMap(loadDocs)
const byKind = (kind: string): Doc[] => manifests.filter((d) => d.obj['kind'] === kind)
const where = (d: Doc): string => `${d.file}#${d.index} ${d.obj['kind']}/${d.obj['metadata']?.name}`

t.test('the deploy tree has manifests to check', async (t) => {
  t.ok(yamlFiles.length >= 10, `${yamlFiles.length} YAML files under deploy/kubernetes`)
  t.ok(byKind('Deployment').length >= 2, 'a Deployment per mode')
})

t.test('the validators catch what they are meant to (negative controls)', async (t) => {
  const good = structuredClone(byKind('Deployment')[0]!.obj)
  t.same(validateObject(good), [], 'a real Deployment passes')
  const wrongType = structuredClone(good)
  wrongType['spec'].replicas = 'two'
  t.match(validateObject(wrongType).join('\n'), /replicas must be integer/, 'schema: wrong type')
  const missing = structuredClone(good)
  delete missing['spec'].template.spec.containers[0].name
  t.match(validateObject(missing).join('\n'), /must have required property '?name'?/, 'schema: missing required field')
  const typo = structuredClone(good)
  typo['spec'].template.spec.containers[0].readinesProbe = typo['spec'].template.spec.containers[0].readinessProbe
  typo['spec'].template.spec.containers[0].resources.limits.memory = '512Mi'
  typo['spec'].template.spec.containers[0].env[0].valueFrom.secretKeyRef.optinal = true
  typo['spec'].template.metadata.labels.anything = 'labels are free-form'
  t.same(
    validateObject(typo),
    ['unknown field spec.template.spec.containers[0].env[0].valueFrom.secretKeyRef.optinal', 'unknown field spec.template.spec.containers[0].readinesProbe'],
    'strict: misspelt fields, however deep',
  )
  t.throws(() => validateObject({ apiVersion: 'example.com/v1', kind: 'Widget' }), /no model/, 'unknown kind is an error')
})

t.test('every Kubernetes object validates against its schema, with no unknown fields', async (t) => {
  for (const d of manifests) {
    t.ok(typeof d.obj['metadata']?.name === 'string' && d.obj['metadata'].name.length > 0, `${where(d)}: has a name`)
    let problems: string[]
    try {
      problems = validateObject(d.obj)
    } catch (err) {
      t.fail(`${where(d)}: ${(err as Error).message}`)
      continue
    }
    t.same(problems, [], `${where(d)} is valid`)
  }
})

// ---- kustomizations ------------------------------------------------------------------------

t.test('every kustomization lists existing resources and every manifest beside it', async (t) => {
  const kustomizations = yamlFiles.filter(isKustomization)
  t.ok(kustomizations.some((k) => dirname(k) === DEPLOY), 'deploy/kubernetes/kustomization.yaml exists')
  const listed = new Set<string>()
  for (const k of kustomizations) {
    const docs = loadDocs(k)
    t.equal(docs.length, 1, `${relative(ROOT, k)}: one document`)
    const kz = docs[0]!.obj
    t.equal(kz['apiVersion'], 'kustomize.config.k8s.io/v1beta1', `${relative(ROOT, k)}: apiVersion`)
    t.equal(kz['kind'], 'Kustomization', `${relative(ROOT, k)}: kind`)
    const resources: unknown = kz['resources']
    t.ok(Array.isArray(resources) && resources.length > 0, `${relative(ROOT, k)}: resources`)
    for (const r of resources as string[]) {
      const p = join(dirname(k), r)
      listed.add(p)
      const ok = existsSync(p) && (statSync(p).isFile() || existsSync(join(p, 'kustomization.yaml')))
      t.ok(ok, `${relative(ROOT, k)}: resource ${r} exists (a file, or a directory with a kustomization.yaml)`)
    }
    // a manifest beside a kustomization but not in it would silently not be deployed
    for (const f of readdirSync(dirname(k))) {
      const p = join(dirname(k), f)
      if (!/\.ya?ml$/.test(f) || isKustomization(p) || p === SECRET_EXAMPLE) continue
      t.ok(listed.has(p), `${relative(ROOT, p)} is listed in ${relative(ROOT, k)}`)
    }
  }
  t.ok(listed.has(join(DEPLOY, 'ingress')), '`kubectl apply -k deploy/kubernetes` deploys the ingress mode')
  t.notOk(listed.has(SECRET_EXAMPLE), 'the example Secret (placeholders) is in no kustomization')
})

// ---- overlays: rendered offline (resources + namespace, the only kustomize features used) ----

/**
 * What `kubectl apply -k <dir>` applies, rendered here without kubectl: the resources of the
 * kustomization (files, and directories rendered the same way), then its `namespace:` on every
 * object and on RoleBinding subjects naming a ServiceAccount of the set (as kustomize does).
 * The kubectl test below checks this equals `kubectl kustomize`.
 */
function render(dir: string): Doc[] {
  const kz = loadDocs(join(dir, 'kustomization.yaml'))[0]!.obj
  for (const key of Object.keys(kz)) {
    if (!['apiVersion', 'kind', 'resources', 'namespace'].includes(key)) throw new Error(`${relative(ROOT, dir)}: kustomize feature ${key} is not rendered offline here: extend render()`)
  }
  const docs = (kz['resources'] as string[]).flatMap((r) => {
    const p = join(dir, r)
    return statSync(p).isDirectory() ? render(p) : loadDocs(p)
  })
  const ns: unknown = kz['namespace']
  if (typeof ns !== 'string') return docs
  const accounts = new Set(docs.filter((d) => d.obj['kind'] === 'ServiceAccount').map((d) => d.obj['metadata'].name))
  return docs.map((d) => {
    const obj = structuredClone(d.obj)
    obj['metadata'].namespace = ns
    for (const s of obj['subjects'] ?? []) if (s.kind === 'ServiceAccount' && accounts.has(s.name)) s.namespace = ns
    return { ...d, obj }
  })
}

/** Every setup a user applies: `kubectl apply -k` of each must give a working Tether. */
const OVERLAYS = ['.', 'ingress', 'ingress/overlays/sentinel', 'ingress/overlays/no-redis', 'ingress/overlays/servicemonitor', 'ingress/overlays/tls', 'sidecar']
/** Parts of overlays, never applied alone. */
const BASES = ['ingress/tether', 'ingress/redis', 'ingress/redis-sentinel', 'ingress/config']
const rendered = new Map(OVERLAYS.map((o) => [o, render(join(DEPLOY, o))]))

t.test('every kustomization is a setup to apply or a part of one', async (t) => {
  const dirs = yamlFiles.filter(isKustomization).map((k) => relative(DEPLOY, dirname(k)) || '.').sort()
  t.same(dirs, [...OVERLAYS, ...BASES].sort())
})

const hasKubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0
if (!hasKubectl) console.log('# kubectl is not installed: the kubectl kustomize check of every overlay is skipped (the offline checks still run)')

t.test('kubectl kustomize renders every kustomization, and each overlay exactly as checked here', { skip: hasKubectl ? false : 'kubectl is not installed' }, async (t) => {
  for (const dir of [...OVERLAYS, ...BASES]) {
    const r = spawnSync('kubectl', ['kustomize', join(DEPLOY, dir)], { encoding: 'utf8' })
    t.equal(r.status, 0, `kubectl kustomize ${dir} ${r.stderr.trim()}`)
    const docs = parseAllDocuments(r.stdout)
    const objects = Array.isArray(docs) ? docs.map((d) => d.toJS() as Obj) : []
    if (!OVERLAYS.includes(dir)) continue
    const key = (o: Obj): string => `${o['kind']}/${o['metadata'].name}`
    const mine = new Map(rendered.get(dir)!.map((d) => [key(d.obj), d.obj]))
    t.same(objects.map(key).sort(), [...mine.keys()].sort(), `${dir}: the same objects`)
    for (const o of objects) t.same(o, mine.get(key(o)), `${dir}: ${key(o)} as rendered offline`)
  }
})

// ---- the Secret ----------------------------------------------------------------------------

const secretExample = loadDocs(SECRET_EXAMPLE)[0]!.obj
const secretKeys = new Set(Object.keys(secretExample['stringData'] ?? {}))

t.test('the example Secret holds placeholders only', async (t) => {
  t.equal(secretExample['kind'], 'Secret')
  t.equal(secretExample['metadata'].name, 'tether-secrets')
  t.notOk(secretExample['data'], 'no base64 data: placeholders in stringData')
  for (const [k, v] of Object.entries(secretExample['stringData'] as Record<string, string>)) {
    t.match(v, /CHANGE-ME/, `${k} is a placeholder`)
  }
  t.same([...secretKeys].sort(), ['REDIS_PASSWORD', 'TETHER_ADMIN_TOKEN', 'TETHER_SECRET'])
})

// ---- each overlay: Deployments, their proxy.yaml, Services, RBAC, Redis, policies ----------

/**
 * How long a container's preStop hook holds SIGTERM back: `min` whatever happens (its sleeps),
 * `max` at most (plus the longest `tether drain --wait --timeout <n>s` it runs).
 */
function preStopSeconds(container: Obj): { min: number; max: number } {
  const preStop = container['lifecycle']?.preStop
  if (preStop?.sleep) return { min: Number(preStop.sleep.seconds), max: Number(preStop.sleep.seconds) }
  const cmd: unknown = preStop?.exec?.command
  if (!Array.isArray(cmd)) return { min: 0, max: 0 }
  if (/(^|\/)sleep$/.test(String(cmd[0])) && cmd.length === 2) return { min: Number(cmd[1]), max: Number(cmd[1]) }
  // a script (sh -c) running `sleep <n>` and `tether drain <id> --migrate --wait --timeout <n>s` one after the other
  if (!(/(^|\/)sh$/.test(String(cmd[0])) && cmd[1] === '-c' && cmd.length === 3)) return { min: 0, max: 0 }
  const script = String(cmd[2])
  const sleeps = [...script.matchAll(/(?:^|[;&|]\s*)sleep (\d+)(?=\s*(?:;|&&|$))/g)].reduce((sum, m) => sum + Number(m[1]), 0)
  const drains = [...script.matchAll(/\bdist\/cli\.js drain \S+ --migrate --wait --timeout (\d+)s(?=\s*(?:;|&&|$))/g)].reduce((sum, m) => sum + Number(m[1]), 0)
  return { min: sleeps, max: sleeps + drains }
}

function portNumber(container: Obj, port: number | string): number | undefined {
  if (typeof port === 'number') return port
  return (container['ports'] as Obj[] | undefined)?.find((p) => p['name'] === port)?.['containerPort']
}

const selects = (selector: Record<string, string> | undefined, labels: Record<string, string>): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v)

/** The environment a container really gets: literal values, and a stand-in for each required Secret key. */
function containerEnv(container: Obj): Record<string, string> {
  const env: Record<string, string> = {}
  for (const e of (container['env'] ?? []) as Obj[]) {
    const ref = e['valueFrom']?.secretKeyRef
    if (typeof e['value'] === 'string') env[e['name']] = e['value']
    else if (ref && ref.optional !== true) env[e['name']] = `stand-in-for-${ref.key}-0123456789abcdef`
  }
  return env
}

interface TetherPod {
  readonly deployment: Doc
  readonly pod: Obj // spec.template
  readonly container: Obj // the tether container
  readonly config: Config
}

/** The Tether container of each Deployment of `docs`, its mounted ConfigMap's proxy.yaml, validated. */
function tetherPods(t: Test, docs: readonly Doc[]): TetherPod[] {
  return docs.filter((d) => d.obj['kind'] === 'Deployment').flatMap((deployment) => {
    const pod = deployment.obj['spec'].template
    const container = (pod.spec.containers as Obj[]).find((c) => String(c['image']).includes('/tether:'))
    if (container === undefined) {
      t.fail(`${where(deployment)}: no tether container`)
      return []
    }
    t.same(container['args'], ['--config', CONFIG_PATH], `${where(deployment)}: runs ${CONFIG_PATH}`)
    const mount = (container['volumeMounts'] as Obj[]).find((m) => m['mountPath'] === dirname(CONFIG_PATH))
    const volume = (pod.spec.volumes as Obj[]).find((v) => v['name'] === mount?.['name'])
    const cmName: string | undefined = volume?.['configMap']?.name
    const cm = docs.find((d) => d.obj['kind'] === 'ConfigMap' && d.obj['metadata'].name === cmName)
    const item = (volume?.['configMap']?.items as Obj[] | undefined)?.find((i) => i['path'] === 'proxy.yaml')
    const configText: unknown = cm?.obj['data']?.[item?.['key'] ?? 'proxy.yaml']
    if (typeof configText !== 'string') {
      t.fail(`${where(deployment)}: ${CONFIG_PATH} does not come from a ConfigMap of the same overlay`)
      return []
    }
    try {
      return [{ deployment, pod, container, config: parseConfig(configText, `${cm!.file}:${cmName}/proxy.yaml`, containerEnv(container)) }]
    } catch (err) {
      t.fail(`${where(deployment)}: proxy.yaml is invalid with the container's env:\n${(err as Error).message}`)
      return []
    }
  })
}

t.test("every ConfigMap's proxy.yaml passes Tether's config checker", async (t) => {
  const configMaps = byKind('ConfigMap').filter((d) => typeof d.obj['data']?.['proxy.yaml'] === 'string')
  t.ok(configMaps.length >= 4, `${configMaps.length} proxy.yaml files`)
  const env = { TETHER_SECRET: 'x'.repeat(32), TETHER_ADMIN_TOKEN: 'admin-token', LOG_LEVEL: 'info' }
  for (const cm of configMaps) {
    const text = String(cm.obj['data']['proxy.yaml'])
    const config = parseConfig(text, `${cm.file}/proxy.yaml`, env)
    if (config.listen.tls === null) t.equal(config.listen.port, 8080, `${where(cm)}: proxy port 8080`)
    else {
      // the TLS edge: TLS on 8443, the redirect listener on 8080, the certificate from the Secret's mount
      t.equal(config.listen.port, 8443, `${where(cm)}: TLS proxy port 8443`)
      t.equal(config.listen.redirect?.port, 8080, `${where(cm)}: redirect listener on 8080`)
      t.same([config.listen.tls.cert, config.listen.tls.key], ['/etc/tether-tls/tls.crt', '/etc/tether-tls/tls.key'], `${where(cm)}: certificate from the tether-tls Secret's files`)
    }
    t.equal(config.affinity.key, 'cookie', `${where(cm)}: signed cookie`)
    t.same(config.affinity.cookie.secret, [env.TETHER_SECRET], `${where(cm)}: one shared cookie secret`)
    t.match(text, /secret: \$\{TETHER_SECRET\}/, `${where(cm)}: cookie secret from the environment`)
    t.match(text, /token: \$\{TETHER_ADMIN_TOKEN\}/, `${where(cm)}: admin token from the environment`)
    t.equal(config.admin.token, 'admin-token')
    t.equal(config.affinity.cookie.secure, true, `${where(cm)}: Secure cookie`)
    t.equal(config.upstreams.length, 0, `${where(cm)}: upstreams from discovery only`)
    t.equal(config.shutdown.grace_period, 20_000, `${where(cm)}: 20s grace period`)
    if (cm.file.includes('/ingress/')) {
      t.same(config.discovery.kubernetes, { service: 'web', namespace: null, port: 'http', kubeconfig: null, weight_annotation: null }, `${where(cm)}: the pods of Service web by name, in Tether's namespace`)
      t.equal(config.discovery.dns, null)
    } else {
      t.match(config.discovery.dns?.name, /^[a-z0-9-]+\.[a-z0-9-]+\.svc\.cluster\.local$/, `${where(cm)}: a Service's cluster DNS name`)
    }
    if (config.state.store === 'redis') t.equal(config.state.redis.password, null, `${where(cm)}: REDIS_PASSWORD unset means no password`)
    const { LOG_LEVEL: _unused, ...withoutLogLevel } = env
    t.equal(parseConfig(text, 'x', withoutLogLevel).log.level, 'info', `${where(cm)}: log level defaults to info`)
  }
})

for (const overlay of OVERLAYS) {
  t.test(`overlay ${overlay}: a complete, self-consistent setup`, async (t) => {
    const docs = rendered.get(overlay)!
    const of = (kind: string): Doc[] => docs.filter((d) => d.obj['kind'] === kind)
    const names = docs.map((d) => `${d.obj['kind']}/${d.obj['metadata'].name}`)
    t.same(names.filter((n, i) => names.indexOf(n) !== i), [], 'no object twice')
    for (const d of docs) t.same(validateObject(d.obj), [], `${where(d)} is valid`)
    const pods = tetherPods(t, docs)
    t.equal(pods.length, of('Deployment').length, 'every Deployment runs a Tether with a valid config from this overlay')
    for (const { deployment, pod, container, config } of pods) {
      const name = where(deployment)
      const labels: Record<string, string> = pod.metadata.labels
      const adminPort = config.admin.listen.port

      // image and container
      t.match(container['image'], /^ghcr\.io\/example\/tether:\d+\.\d+\.\d+$/, `${name}: pinned tether image`)
      t.ok(selects(deployment.obj['spec'].selector.matchLabels, labels), `${name}: selector matches the pod labels`)
      t.ok(deployment.obj['spec'].replicas >= 2, `${name}: at least 2 replicas`)
      if (config.listen.tls === null) t.equal(portNumber(container, 'http'), config.listen.port, `${name}: container port http = listen.port`)
      else {
        t.equal(portNumber(container, 'https'), config.listen.port, `${name}: container port https = listen.port (TLS)`)
        t.equal(portNumber(container, 'http'), config.listen.redirect?.port, `${name}: container port http = listen.redirect.port`)
        const mount = (container['volumeMounts'] as Obj[]).find((m) => m['mountPath'] === dirname(config.listen.tls!.cert))
        const volume = (pod.spec.volumes as Obj[]).find((v) => v['name'] === mount?.['name'])
        t.equal(volume?.['secret']?.secretName, 'tether-tls', `${name}: the certificate directory is the Secret tether-tls`)
        t.notOk(mount?.['subPath'], `${name}: mounted as a directory (a subPath mount never sees a renewal)`)
        const service = of('Service').find((d) => d.obj['metadata'].name === 'tether')
        t.ok((service?.obj['spec'].ports as Obj[] | undefined)?.some((p) => p['port'] === 443 && p['targetPort'] === 'https'), `${name}: the Service serves 443 -> https`)
      }
      t.equal(portNumber(container, 'admin'), adminPort, `${name}: container port admin = admin.listen.port`)

      // probes on the admin listener, reachable by the kubelet on the pod IP
      t.not(config.admin.listen.host, '127.0.0.1', `${name}: admin listener on the pod IP, not loopback`)
      const sidecar = config.discovery.dns !== null && of('Service').some((s) => s.obj['spec'].clusterIP === 'None' && selects(s.obj['spec'].selector, labels))
      const probes = sidecar ? ['readinessProbe', 'livenessProbe'] as const : ['startupProbe', 'readinessProbe', 'livenessProbe'] as const
      for (const probe of probes) {
        const get = container[probe]?.httpGet
        t.ok(get, `${name}: ${probe} is an HTTP GET`)
        t.equal(portNumber(container, get?.port), adminPort, `${name}: ${probe} on the admin port ${adminPort}`)
      }
      t.equal(container['livenessProbe'].httpGet.path, '/healthz', `${name}: liveness is /healthz`)
      // sidecar mode: the pod is itself an upstream found through a headless Service of ready
      // pods only, so /readyz ("no healthy upstream") could never turn ready on a fresh deploy
      t.equal(container['readinessProbe'].httpGet.path, sidecar ? '/healthz' : '/readyz', `${name}: readiness ${sidecar ? '/healthz (sidecar)' : '/readyz'}`)
      if (!sidecar) t.equal(container['startupProbe'].httpGet.path, '/healthz', `${name}: startup is /healthz`)
      if (config.discovery.dns !== null) {
        const headless = of('Service').find((s) => s.obj['spec'].clusterIP === 'None' && `${s.obj['metadata'].name}` === config.discovery.dns?.name.split('.')[0])
        t.ok(headless, `${name}: the discovered headless Service is in the overlay`)
        t.equal(headless?.obj['spec'].publishNotReadyAddresses ?? false, false, 'ready pods only')
        const port = (headless?.obj['spec'].ports as Obj[] | undefined)?.find((p) => p['port'] === config.discovery.dns?.port)
        t.ok(port, `serves discovery.dns.port ${config.discovery.dns?.port}`)
        const app = (pod.spec.containers as Obj[]).find((c) => c !== container)
        if (sidecar) t.equal(portNumber(app ?? {}, port?.['targetPort']), config.discovery.dns?.port, `${name}: the app container listens on the discovered port`)
      }

      // Kubernetes discovery: a ServiceAccount with its token, bound to a Role that reads EndpointSlices
      if (config.discovery.kubernetes !== null) {
        const sa = pod.spec.serviceAccountName
        t.ok(of('ServiceAccount').some((d) => d.obj['metadata'].name === sa), `${name}: its ServiceAccount ${sa} is in the overlay`)
        t.equal(pod.spec.automountServiceAccountToken, true, `${name}: the token is mounted`)
        const bindings = of('RoleBinding').filter((b) => (b.obj['subjects'] as Obj[]).some((s) => s['kind'] === 'ServiceAccount' && s['name'] === sa && s['namespace'] === deployment.obj['metadata'].namespace))
        const rules = bindings.flatMap((b) => of('Role').filter((r) => r.obj['metadata'].name === b.obj['roleRef'].name).flatMap((r) => r.obj['rules'] as Obj[]))
        const may = (verb: string): boolean => rules.some((r) => r['apiGroups'].includes('discovery.k8s.io') && r['resources'].includes('endpointslices') && r['verbs'].includes(verb))
        t.ok(bindings.length > 0, `${name}: a RoleBinding names its ServiceAccount in its namespace`)
        t.ok(['get', 'list', 'watch'].every(may), `${name}: the Role allows get, list and watch on endpointslices`)
        t.same(rules.flatMap((r) => r['verbs']).filter((v: string) => !['get', 'list', 'watch'].includes(v)), [], `${name}: and nothing that writes`)
      } else {
        t.not(pod.spec.automountServiceAccountToken, true, `${name}: no API token where none is needed`)
      }

      // Redis, when the config uses it, is part of the overlay and reachable as configured
      const redis = config.state.store === 'redis' ? config.state.redis : null
      if (redis !== null) {
        const [host, port] = redis.url !== null ? [new URL(redis.url).hostname, Number(new URL(redis.url).port)] : redis.sentinels[0]!.split(':') as [string, string]
        const service = of('Service').find((s) => s.obj['metadata'].name === host)
        t.ok(service, `${name}: Redis ${host} is a Service of the overlay`)
        t.ok((service?.obj['spec'].ports as Obj[] | undefined)?.some((p) => p['port'] === Number(port)), `${host} serves ${port}`)
        const sts = of('StatefulSet').find((s) => selects(service?.obj['spec'].selector, s.obj['spec'].template.metadata.labels))
        t.ok(sts, `${host} selects the pods of a StatefulSet`)
        t.ok(sts?.obj['spec'].volumeClaimTemplates?.length > 0, `${where(sts!)}: data on a PersistentVolume`)
        if (redis.sentinels.length > 0) {
          t.ok((sts?.obj['spec'].template.spec.containers as Obj[]).some((c) => c['name'] === 'sentinel'), 'Sentinels run beside the Redis servers')
          t.equal(redis.name, 'mymaster', 'the master name the Sentinels monitor')
          t.ok(sts?.obj['spec'].replicas >= 3, 'at least 3 pods for a quorum of 2')
        }
        const policy = of('NetworkPolicy').find((p) => selects(p.obj['spec'].podSelector.matchLabels, sts?.obj['spec'].template.metadata.labels ?? {}))
        const froms = (policy?.obj['spec'].ingress as Obj[] | undefined)?.flatMap((r) => r['from'] ?? [{}]) ?? []
        t.ok(froms.some((f: Obj) => selects(f['podSelector']?.matchLabels, labels)), 'a NetworkPolicy lets Tether reach Redis')
        t.ok(froms.every((f: Obj) => f['podSelector']?.matchLabels !== undefined && f['namespaceSelector'] === undefined), 'and only pods of this namespace it names')
      } else {
        t.notOk(of('StatefulSet').some((s) => /redis/.test(s.obj['metadata'].name)), 'no Redis where the config does not use one')
      }

      // graceful shutdown: the pod lives long enough for preStop + grace_period
      // (endpoint removal reaches kube-proxy and load balancers late: SIGTERM, which closes the
      // listener, must wait for it even when a preStop drain returns at once)
      const preStop = preStopSeconds(container)
      t.ok(preStop.min >= 5, `${name}: preStop waits at least 5s (${preStop.min}s) before SIGTERM, whatever a drain does`)
      const tgps: number = pod.spec.terminationGracePeriodSeconds
      t.ok(tgps > config.shutdown.grace_period / 1000 + preStop.max, `${name}: terminationGracePeriodSeconds ${tgps} > grace_period ${config.shutdown.grace_period / 1000}s + preStop up to ${preStop.max}s`)

      // non-root, least privilege
      const sc = { ...pod.spec.securityContext, ...container['securityContext'] }
      t.equal(sc.runAsNonRoot, true, `${name}: runAsNonRoot`)
      t.ok(Number.isInteger(sc.runAsUser) && sc.runAsUser > 0, `${name}: numeric non-root runAsUser (${sc.runAsUser})`)
      t.equal(container['securityContext']?.readOnlyRootFilesystem, true, `${name}: read-only root filesystem`)
      t.equal(container['securityContext']?.allowPrivilegeEscalation, false, `${name}: no privilege escalation`)
      t.same(container['securityContext']?.capabilities?.drop, ['ALL'], `${name}: drops all capabilities`)
      t.ok(container['resources']?.requests && container['resources']?.limits, `${name}: resource requests and limits`)

      // environment from the Secret: the only object referenced and not in the overlay
      const env = new Map((container['env'] as Obj[]).map((e) => [e['name'] as string, e]))
      for (const key of ['TETHER_SECRET', 'TETHER_ADMIN_TOKEN', 'REDIS_PASSWORD']) {
        const ref = env.get(key)?.['valueFrom']?.secretKeyRef
        t.equal(ref?.name, 'tether-secrets', `${name}: ${key} from Secret tether-secrets`)
        t.ok(secretKeys.has(ref?.key), `${name}: ${key} is a key of the example Secret`)
        t.equal(ref?.optional === true, key === 'REDIS_PASSWORD', `${name}: ${key} ${key === 'REDIS_PASSWORD' ? 'optional' : 'required'}`)
      }
      for (const d of docs) {
        const refs = JSON.stringify(d.obj).match(/"secretKeyRef":\{"name":"[^"]+"/g) ?? []
        t.same(refs.filter((r) => !r.endsWith('"tether-secrets"')), [], `${where(d)}: Secrets referenced: tether-secrets only`)
        for (const v of (d.obj['spec']?.template?.spec?.volumes ?? []) as Obj[]) {
          if (v['configMap']) t.ok(of('ConfigMap').some((c) => c.obj['metadata'].name === v['configMap'].name), `${where(d)}: ConfigMap ${v['configMap'].name} is in the overlay`)
        }
      }

      // Services: the public one never exposes the admin port; a headless admin Service only for Prometheus
      const services = of('Service').filter((s) => selects(s.obj['spec'].selector, labels))
      t.ok(services.some((s) => s.obj['spec'].clusterIP !== 'None'), `${name}: a Service for clients`)
      for (const s of services) {
        const exposesAdmin = (s.obj['spec'].ports as Obj[]).some((p) => p['port'] === adminPort || portNumber(container, p['targetPort'] ?? p['port']) === adminPort)
        if (s.obj['spec'].clusterIP === 'None' && exposesAdmin) {
          t.ok(of('ServiceMonitor').some((m) => selects(m.obj['spec'].selector.matchLabels, s.obj['metadata'].labels)), `${where(s)}: the admin port is published only for a ServiceMonitor`)
        } else {
          t.notOk(exposesAdmin, `${where(s)}: does not publish the admin port`)
        }
        if (s.obj['spec'].clusterIP !== 'None') {
          const http = (s.obj['spec'].ports as Obj[])[0]!
          t.equal(http['port'], 80, `${where(s)}: port 80`)
          // port 80 is the proxy listener, or with TLS the redirect listener
          t.equal(portNumber(container, http['targetPort']), config.listen.redirect?.port ?? config.listen.port, `${where(s)}: -> Tether's listen.port (listen.redirect.port with TLS)`)
          t.notOk(s.obj['spec'].sessionAffinity && s.obj['spec'].sessionAffinity !== 'None', `${where(s)}: no sessionAffinity (Tether does it)`)
        }
      }
      for (const m of of('ServiceMonitor')) {
        const target = of('Service').find((s) => selects(m.obj['spec'].selector.matchLabels, s.obj['metadata'].labels))
        const endpoint = (m.obj['spec'].endpoints as Obj[])[0]!
        const port = (target?.obj['spec'].ports as Obj[] | undefined)?.find((p) => p['name'] === endpoint['port'])
        t.equal(portNumber(container, port?.['targetPort']), adminPort, `${where(m)}: scrapes the admin port`)
        t.equal(endpoint['path'], '/metrics', `${where(m)}: /metrics`)
      }

      // NetworkPolicy: the proxy port open, the admin port from this namespace and `monitoring` only
      if (!sidecar) {
        const policy = of('NetworkPolicy').find((p) => selects(p.obj['spec'].podSelector.matchLabels, labels))
        t.ok(policy, `${name}: a NetworkPolicy selects Tether's pods`)
        const rules = (policy?.obj['spec'].ingress ?? []) as Obj[]
        const rulesFor = (port: string): Obj[] => rules.filter((r) => (r['ports'] as Obj[]).some((p) => p['port'] === port || p['port'] === portNumber(container, port)))
        t.ok(rulesFor('http').some((r) => r['from'] === undefined), 'the proxy port is open')
        const admin = rulesFor('admin')
        t.ok(admin.length > 0 && admin.every((r) => Array.isArray(r['from'])), 'the admin port is not open to all')
        t.same(admin.flatMap((r) => r['from']), [{ podSelector: {} }, { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }], 'the admin port: pods of this namespace and the monitoring namespace')
      }

      // a PodDisruptionBudget keeps one pod through voluntary disruptions
      const pdb = of('PodDisruptionBudget').find((p) => selects(p.obj['spec'].selector.matchLabels, labels))
      t.equal(pdb?.obj['spec'].minAvailable, 1, `${name}: PodDisruptionBudget minAvailable 1`)
      t.ok((container['volumeMounts'] as Obj[]).every((m) => m['mountPath'] !== dirname(CONFIG_PATH) || m['readOnly'] === true), `${name}: config mounted read-only`)
    }
  })
}

t.test("a preStop drain names the pod's upstream id as discovery writes it, for an IPv4 and an IPv6 pod", async (t) => {
  // sidecar mode: DNS discovery names each pod address:port, an IPv6 one in brackets
  // (src/upstream/address.ts); a drain of the unbracketed address is "unknown upstream"
  // on an IPv6 cluster, and the pod's users do not migrate before it stops. The script runs
  // in sh with `node` and `sleep` on PATH replaced by scripts that print their arguments.
  const bin = mkdtempSync(join(tmpdir(), 'tether-prestop-'))
  t.teardown(() => rmSync(bin, { recursive: true, force: true }))
  writeFileSync(join(bin, 'node'), '#!/bin/sh\nprintf "%s\\n" "$@"\n', { mode: 0o755 })
  writeFileSync(join(bin, 'sleep'), '#!/bin/sh\n', { mode: 0o755 })
  let checked = 0
  for (const d of byKind('Deployment')) {
    for (const container of d.obj['spec'].template.spec.containers as Obj[]) {
      const cmd: unknown = container['lifecycle']?.preStop?.exec?.command
      if (!Array.isArray(cmd) || !/\bdist\/cli\.js drain\b/.test(String(cmd[2]))) continue
      const port = Number(/:(\d+)\\?"/.exec(String(cmd[2]))?.[1])
      for (const ip of ['10.0.0.6', 'fd00::6']) {
        checked++
        const run = spawnSync(String(cmd[0]), cmd.slice(1).map(String), { env: { PATH: `${bin}:/usr/bin:/bin`, POD_IP: ip }, encoding: 'utf8' })
        const argv = run.stdout.split('\n')
        t.equal(argv[argv.indexOf('drain') + 1], upstreamId(ip, port), `${where(d)} ${container['name']}: POD_IP=${ip} drains ${upstreamId(ip, port)}`)
      }
    }
  }
  t.ok(checked >= 2, `preStop drains run: ${checked}`)
})

t.test('tether import --manifests prints the objects of deploy/kubernetes/ingress/tether (no drift)', async (t) => {
  const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version
  const generated = tetherManifests({ namespace: 'default', proxyYaml: '', image: `ghcr.io/example/tether:${version}` }).filter((o) => o['kind'] !== 'ConfigMap')
  const deployed = rendered.get('ingress/overlays/no-redis')!.filter((d) => d.file.includes('ingress/tether/')).map((d) => d.obj)
  const key = (o: Obj): string => `${o['kind']}/${o['metadata'].name}`
  t.same(generated.map(key).sort(), deployed.map(key).sort())
  for (const o of generated) t.same(o, deployed.find((d) => key(d) === key(o)), `${key(o)} is the same object`)
})

t.test('every redis.conf is accepted by a real redis-server', async (t) => {
  const confs = byKind('ConfigMap').filter((d) => typeof d.obj['data']?.['redis.conf'] === 'string')
  t.equal(confs.length, 2, 'the single Redis and the Sentinel setup')
  for (const cm of confs) {
    const dir = mkdtempSync(join(tmpdir(), 'tether-redis-conf-'))
    const file = join(dir, 'redis.conf')
    // as written, but the data directory (redis-server enters it while reading the file)
    writeFileSync(file, String(cm.obj['data']['redis.conf']).replace(/^dir \/data$/m, `dir ${dir}`))
    const redis = await startRedis({ config: file })
    t.teardown(() => redis.stop())
    t.equal((await redisCli(redis.port, 'CONFIG', 'GET', 'maxmemory-policy')).trim().split('\n').at(-1), 'noeviction', `${where(cm)}: loaded (its maxmemory-policy is in effect: Tether's keys are never evicted)`)
    await redis.stop()
  }
})

// ---- Dockerfile ----------------------------------------------------------------------------

interface Instruction {
  readonly op: string
  readonly args: string
}

/** Instructions (continuations joined, comments dropped), grouped into stages by FROM. */
function dockerStages(text: string): Instruction[][] {
  const stages: Instruction[][] = []
  const joined = text.replace(/\\\n/g, ' ')
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line)
    if (!m || line.trimStart().startsWith('#')) continue
    const ins = { op: m[1]!.toUpperCase(), args: m[2]!.trim() }
    if (ins.op === 'FROM') stages.push([])
    stages.at(-1)?.push(ins)
  }
  return stages
}

t.test('the Dockerfile: build as CI does, production deps, non-root, health check on the admin port', async (t) => {
  const stages = dockerStages(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))
  t.equal(stages.length, 2, 'two stages: build and runtime')
  const [build, runtime] = stages as [Instruction[], Instruction[]]
  const runs = (stage: Instruction[]): string[] => stage.filter((i) => i.op === 'RUN').map((i) => i.args)
  for (const stage of stages) t.match(stage[0]!.args, /^node:24-bookworm-slim\b/, 'current Node LTS, slim')

  // the build stage runs CI's commands: `npm ci`, then the build script
  const ci = readFileSync(join(ROOT, '.ci', 'run'), 'utf8')
  t.match(ci, /\bnpm ci\b/, 'CI installs with npm ci')
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  t.match(pkg.scripts['build'], /\btsc\b/, 'the build script compiles with tsc')
  t.ok(runs(build).includes('npm ci'), 'build stage: npm ci')
  t.ok(runs(build).includes('npm run build'), 'build stage: npm run build')
  t.ok(runs(build).indexOf('npm ci') < runs(build).indexOf('npm run build'), 'install before build')

  // runtime: production dependencies only, dist and config, non-root
  t.ok(runs(runtime).some((r) => /^npm ci --omit=dev\b/.test(r)), 'runtime stage: npm ci --omit=dev')
  t.notOk(runs(runtime).some((r) => /\bnpm (run build|install)\b/.test(r)), 'runtime stage does not build')
  t.ok(runtime.some((i) => i.op === 'ENV' && /NODE_ENV=production/.test(i.args)), 'NODE_ENV=production')
  for (const [name, value] of Object.entries(SERVING_ENV)) t.ok(runtime.some((i) => i.op === 'ENV' && i.args === `${name}=${value}`), `${name}=${value} (SERVING_ENV)`)
  t.ok(runtime.some((i) => i.op === 'COPY' && /--from=build \/app\/dist/.test(i.args)), 'copies dist/ from the build stage')
  const users = runtime.filter((i) => i.op === 'USER')
  t.equal(users.at(-1)?.args, 'node', 'runs as the non-root node user')
  const expose = runtime.find((i) => i.op === 'EXPOSE')?.args.split(/\s+/) ?? []
  t.same(expose.sort(), ['8080', '9901'], 'exposes 8080 and 9901')
  t.equal(runtime.find((i) => i.op === 'ENTRYPOINT')?.args, JSON.stringify(['node', ...SERVING_V8_FLAGS, 'dist/cli.js']).replaceAll(',', ', '), 'entrypoint: node with the serving V8 flags')
  t.equal(runtime.find((i) => i.op === 'CMD')?.args, `["--config", "${CONFIG_PATH}"]`, 'default config path')

  // HEALTHCHECK hits GET /healthz on the admin port the configs use
  const hc = runtime.find((i) => i.op === 'HEALTHCHECK')?.args ?? ''
  t.match(hc, /CMD \["node", "-e", /, 'health check runs node (no curl in the slim image)')
  const port = Number(/127\.0\.0\.1:(\d+)\/healthz/.exec(hc)?.[1])
  t.equal(port, 9901, 'health check: GET http://127.0.0.1:9901/healthz')
  const baked = parseConfig(readFileSync(join(ROOT, 'config', 'proxy.yaml'), 'utf8'), 'config/proxy.yaml', {})
  t.equal(baked.admin.listen.port, port, "the image's default config has its admin listener on the health-check port")
  for (const { config, deployment } of [...rendered.values()].flatMap((docs) => tetherPods(t, docs))) {
    t.equal(config.admin.listen.port, port, `${where(deployment)}: admin port matches the health check`)
  }

  // the build context keeps what the COPY lines need
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim())
  for (const needed of ['src', 'config', 'package.json', 'package-lock.json', 'tsconfig.json']) {
    t.notOk(ignored.includes(needed), `.dockerignore keeps ${needed}`)
  }
  t.ok(ignored.includes('node_modules') && ignored.includes('dist'), '.dockerignore drops host-built node_modules and dist')
})
