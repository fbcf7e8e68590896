// `tether import`: Kubernetes manifests in, a proxy.yaml (and, if asked, the Tether manifests)
// out, reproducing the stickiness the user had (ingress-nginx annotations, a Service's ClientIP
// affinity, a Gateway API HTTPRoute's sessionPersistence) with comments for what differs, and
// a list of what was not converted. Pure: file texts in, texts out; cli-commands.ts does the I/O.
import { ConfigError, decodeYamlBytes, escapeControls, notYamlText, parseConfig, toYaml } from '../config/index.js'
import { convertHttpRoute } from './gateway-api.js'
import { convertIngress } from './ingress-nginx.js'
import { COOKIE_SECRET, readManifests, type Backend, type Finding, type Manifest, type Setting } from './manifests.js'
import { renderProxyYaml } from './proxy-yaml.js'
import { convertServiceAffinity } from './service-affinity.js'
import { tetherManifests } from './tether-manifests.js'

export type { Finding } from './manifests.js'

export interface ImportOptions {
  /** Also write the Tether manifests (ConfigMap with the proxy.yaml, Deployment, Service, RBAC, ...). */
  readonly manifests: boolean
  /** The image of the Tether Deployment. Default `ghcr.io/example/tether:latest`. */
  readonly image?: string
}

export interface ImportResult {
  /** The proxy.yaml text (comments included). */
  readonly proxyYaml: string
  /** With `manifests`: the Tether objects as one YAML stream (`---` between them); else null. */
  readonly manifests: string | null
  /** The object whose stickiness was converted, e.g. `Ingress shop/web (ingress.yaml:1)`. */
  readonly converted: string
  /** What was not converted (also listed at the top of proxy.yaml). */
  readonly findings: readonly Finding[]
}

/**
 * Nothing to convert, or input that is not usable; the message says which.
 * Example: "nothing to import: no Ingress, no HTTPRoute with sessionPersistence and no Service with sessionAffinity: ClientIP in a.yaml".
 */
export class ImportError extends Error {
  readonly code = 'TETHER_IMPORT'
  constructor(message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'ImportError'
  }
}

/**
 * A manifest file's bytes as text, read as the config loader reads a config (UTF-8, or UTF-16
 * with a byte order mark: `kubectl get ... -o yaml > file` in Windows PowerShell 5 writes
 * UTF-16LE with one). A file that is not text (compressed, an archive, binary data) is refused
 * with the config loader's line (`notYamlText`); UTF-16 without a BOM, told only by its zero
 * bytes, with advice (ImportError); a NUL left in text, by convertManifests.
 * Example: `manifestText('in.yaml', Buffer.from('\ufeffkind: Service', 'utf16le'))` -> "kind: Service".
 */
export function manifestText(file: string, bytes: Buffer): string {
  const read = decodeYamlBytes(bytes)
  const binary = notYamlText(bytes, read, file)
  if (binary !== null) throw new ImportError(binary)
  if (read.encoding !== 'utf-8' && !read.bom) throw notUtf8(file)
  return read.text
}

/**
 * A NUL in text that is not UTF-16 read as UTF-8: YAML allows none (1.2, 5.1), and a binary
 * file has them; where the first is, as `file:line:col`. Null when there is none.
 */
function nulError(file: string, text: string): ImportError | null {
  const at = text.indexOf('\u0000')
  if (at < 0) return null
  const before = text.slice(0, at).split('\n')
  return new ImportError(`${file}:${before.length}:${before.at(-1)!.length + 1} holds a NUL byte, which YAML text cannot: not a manifest file (binary?)`)
}

function notUtf8(file: string): ImportError {
  return new ImportError(`${file} is not UTF-8 text (UTF-16 without a byte order mark?): convert it first, e.g. \`iconv -f UTF-16 -t UTF-8\`, or write it with \`| Out-File -Encoding utf8\``)
}

/**
 * Throws ImportError when `proxyYaml` does not pass the config checker (every `${NAME}` given a
 * placeholder value), so `tether import` never prints a file that `tether check` rejects.
 */
function checkOwnOutput(proxyYaml: string): void {
  const env = Object.fromEntries([...proxyYaml.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => [m[1]!, 'tether-import-placeholder-0123456789']))
  try {
    parseConfig(proxyYaml, 'proxy.yaml', env)
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    throw new ImportError(`the proxy.yaml converted from the input does not pass tether check, so it is not printed (please report this with the input): ${err.issues.join('; ')}`, err)
  }
}

/**
 * The settings that make the cookie key shared between Tether replicas when the converted ones
 * leave the key at Tether's default, cookie (no stickiness in the input, or one that was not
 * converted), or set it without the secret: without `affinity.cookie.secret` each replica
 * signs with a random secret of its own and rejects the cookies of the others.
 */
function sharedCookieSecret(converted: readonly Setting[], source: string, why = `${source} gave no stickiness Tether converts`): Setting[] {
  if (converted.some((s) => s.path === 'affinity.cookie.secret')) return []
  const key = converted.findLast((s) => s.path === 'affinity.key')
  if (key !== undefined) return key.value === 'cookie' ? [COOKIE_SECRET] : []
  return [
    { path: 'affinity.key', value: 'cookie', note: `Tether's default: ${why}, so each user is pinned to a pod by a signed cookie (affinity.key: none spreads requests by weighted round robin instead)` },
    COOKIE_SECRET,
  ]
}

/**
 * An image reference as the container runtime parses it (distribution's grammar): an optional
 * registry host[:port]/, lower-case path components, an optional :tag and @digest.
 */
const IMAGE_REFERENCE = /^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?)\/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$/

/** The kinds import reads (the objects of other kinds, Pods, ReplicaSets, ..., are not even parsed). */
const READ_KINDS: ReadonlySet<string> = new Set(['Ingress', 'Service', 'HTTPRoute', 'GRPCRoute', 'BackendLBPolicy'])

const NAME = (m: Manifest): string => `${m.kind} ${m.namespace === null ? '' : `${m.namespace}/`}${m.name}`
const DESCRIBE = (m: Manifest): string => `${NAME(m)} (${m.at})`

/**
 * Why the ClientIP affinity of a Service behind `ingress` (a non-sticky Ingress sending to it)
 * is not converted. ingress-nginx balances over the Service's endpoints itself (kube-proxy never sees
 * that traffic); with `service-upstream: "true"` it sends to the ClusterIP, and kube-proxy's
 * affinity then keys on the ingress-nginx pod's address, not the client's.
 */
function bypassedAffinity(ingress: Manifest): string {
  const raw = ingress.obj['metadata']?.annotations?.['nginx.ingress.kubernetes.io/service-upstream']
  const serviceUpstream = ['1', 't', 'T', 'true', 'True', 'TRUE'].includes(String(raw ?? '').trim()) // Go's ParseBool
  const had = `clients had no stickiness through ${NAME(ingress)}`
  return serviceUpstream
    ? `its sessionAffinity: ClientIP was not converted: with service-upstream: "true" ingress-nginx sends to the Service's ClusterIP, so kube-proxy pinned by the ingress-nginx pod's address, not the client's (each controller pod to one app pod): ${had}; remove it once Tether is in front`
    : `its sessionAffinity: ClientIP was not converted: ingress-nginx sends to the pods directly (their endpoints, not the Service's ClusterIP), so kube-proxy's affinity never applied to traffic through the Ingress: ${had}. Clients reaching the Service directly (LoadBalancer, NodePort) did have it: import the Service alone for a Tether in their path`
}

/**
 * Converts the manifests in `sources`. The stickiness comes from one object, in this order: an
 * ingress-nginx Ingress with affinity or upstream-hash-by, an HTTPRoute with
 * sessionPersistence, a Service with `sessionAffinity: ClientIP`, else the first Ingress (for
 * its timeouts and limits). Its backend Service (the first one) becomes
 * `discovery.kubernetes`. Everything else is reported in `findings`, never dropped silently.
 * Throws ImportError when there is nothing to convert, ConfigError on a YAML syntax error.
 * Example: `convertManifests([{ file: 'ingress.yaml', text }], { manifests: false }).proxyYaml`.
 */
export function convertManifests(sources: readonly { readonly file: string; readonly text: string }[], options: ImportOptions): ImportResult {
  for (const { file, text } of sources) {
    // UTF-16 bytes read as UTF-8: a NUL beside every ASCII letter, YAML of one odd string, which
    // would be "nothing to import" (manifestText reads a file's bytes as the config loader does)
    if (text.includes('\u0000')) throw decodeYamlBytes(Buffer.from(text, 'utf8')).encoding !== 'utf-8' ? notUtf8(file) : nulError(file, text)!
  }
  const image = options.image ?? 'ghcr.io/example/tether:latest'
  if (options.manifests && !IMAGE_REFERENCE.test(image)) {
    throw new ImportError(`--image: expected an image reference like ghcr.io/example/tether:0.1.0 (lower-case repository, optional :tag or @sha256:digest), got ${JSON.stringify(image)}`)
  }
  const all = readManifests(sources, READ_KINDS)
  const findings: Finding[] = []
  const ingresses = all.filter((m) => m.kind === 'Ingress' && /^(networking\.k8s\.io|extensions)\//.test(m.apiVersion))
  const routes = all.filter((m) => m.kind === 'HTTPRoute' && m.apiVersion.startsWith('gateway.networking.k8s.io/'))
  const services = all.filter((m) => m.kind === 'Service' && m.apiVersion === 'v1') // not Knative's serving.knative.dev Service
  // sessionPersistence Tether does not convert: listed (or named when nothing else converts)
  const persistence: Finding[] = all.flatMap((m): Finding[] => {
    if (!m.apiVersion.startsWith('gateway.networking.k8s.io/')) return []
    const rules: any[] = Array.isArray(m.obj['spec']?.rules) ? m.obj['spec'].rules : []
    if (m.kind === 'GRPCRoute' && rules.some((r) => r?.sessionPersistence != null)) {
      return [{ at: m.at, what: `${DESCRIBE(m)} sessionPersistence`, why: 'not converted: Tether does not proxy gRPC (HTTP/1.1 to the pods); keep this route on the Gateway' }]
    }
    if (m.kind === 'BackendLBPolicy' && m.obj['spec']?.sessionPersistence != null) {
      return [{ at: m.at, what: `${DESCRIBE(m)} sessionPersistence`, why: "not converted: Tether reads sessionPersistence from an HTTPRoute rule; put this one on the rule that sends to its Service (the same fields) and import again" }]
    }
    return []
  })

  type Candidate = { manifest: Manifest; settings: Setting[]; findings: Finding[]; backends: Backend[]; sticky: boolean }
  const candidates: Candidate[] = []
  for (const m of ingresses) {
    const c = convertIngress(m, all)
    candidates.push({ manifest: m, settings: c.settings, findings: c.findings, backends: c.backends, sticky: c.sticky })
  }
  for (const m of routes) {
    const c = convertHttpRoute(m, all)
    if (c !== null) candidates.push({ manifest: m, settings: c.settings, findings: c.findings, backends: c.backends, sticky: true })
  }
  for (const m of services) {
    const c = convertServiceAffinity(m, all)
    if (c !== null) candidates.push({ manifest: m, settings: c.settings, findings: c.findings, backends: c.backend === null ? [] : [c.backend], sticky: true })
  }
  // A Service an Ingress sends to: ingress-nginx sends to its pods' endpoints, not through its
  // ClusterIP (unless service-upstream: "true"), so kube-proxy's ClientIP affinity never applied
  // to that traffic: the Ingress is what clients went through, and its stickiness (or none) is
  // what they had. Converting the Service's affinity instead would pin every client behind the
  // Ingress by the address of an ingress-nginx pod.
  const frontOf = (svc: Manifest): Candidate | undefined => candidates.find((c) => c.manifest.kind === 'Ingress'
    && c.backends.some((b) => b.service === svc.name && (b.namespace === null || svc.namespace === null || b.namespace === svc.namespace)))
  const chosen = candidates.find((c) => c.sticky && c.manifest.kind === 'Ingress')
    ?? candidates.find((c) => c.manifest.kind === 'HTTPRoute')
    ?? candidates.find((c) => c.manifest.kind === 'Service' && frontOf(c.manifest) === undefined)
    ?? candidates.map((c) => (c.manifest.kind === 'Service' ? frontOf(c.manifest) : undefined)).find((c) => c !== undefined)
    ?? candidates[0]
  if (chosen === undefined) {
    const files = sources.map((s) => s.file).join(', ')
    const not = persistence.length === 0 ? '' : `; not converted: ${persistence.map((f) => `${f.what}: ${f.why}`).join('; ')}`
    throw new ImportError(`nothing to import: no Ingress, no HTTPRoute with sessionPersistence and no Service with sessionAffinity: ClientIP in ${files === '' ? 'the input' : files}${not}`)
  }
  const backend = chosen.backends[0]
  if (backend === undefined) throw new ImportError(`${DESCRIBE(chosen.manifest)} names no backend Service: nothing to discover`)
  findings.push(...chosen.findings, ...persistence)
  for (const other of chosen.backends.slice(1)) {
    findings.push({ at: other.from, what: `backend Service ${other.service} port ${other.port}`, why: `Tether fronts one set of pods (Service ${backend.service}): keep routing to ${other.service} on the Ingress or Gateway, or run a second Tether for it` })
  }
  if (backend.portNote !== undefined) findings.push({ at: backend.from, what: `the port of Service ${backend.service}`, why: backend.portNote })
  const bypassed: Manifest[] = []
  for (const c of candidates) {
    if (c === chosen) continue
    const front = c.manifest.kind === 'Service' ? frontOf(c.manifest) : undefined
    const affinity = c.manifest.kind === 'Service' && chosen.manifest.kind !== 'Service' && c.manifest.name === backend.service
      && (c.manifest.namespace === null || (backend.namespace ?? chosen.manifest.namespace) === null || c.manifest.namespace === (backend.namespace ?? chosen.manifest.namespace))
    if (front === chosen && !chosen.sticky) bypassed.push(c.manifest)
    findings.push({
      at: c.manifest.at,
      what: `${DESCRIBE(c.manifest)}`,
      why: front === chosen && !chosen.sticky ? bypassedAffinity(chosen.manifest)
        : affinity
          ? `its sessionAffinity: ClientIP was not converted: ${chosen.manifest.kind === 'Ingress' ? 'ingress-nginx sends to the pods directly, so it did not apply behind the Ingress' : 'the HTTPRoute\'s persistence is what clients saw'}; remove it once Tether is in front`
          : `not converted: one Tether replaces one source of stickiness, and ${DESCRIBE(chosen.manifest)} was converted`,
    })
  }

  const namespace = backend.namespace ?? chosen.manifest.namespace
  const base: Setting[] = [
    { path: 'listen.host', value: '0.0.0.0', note: 'Tether runs in its own pods; the Service tether sends port 80 here' },
    { path: 'listen.port', value: 8080 },
    { path: 'admin.listen.host', value: '0.0.0.0', note: 'the kubelet probes /healthz and /readyz on the pod IP; the NetworkPolicy fences this port' },
    { path: 'admin.listen.port', value: 9901 },
    { path: 'admin.token', value: '${TETHER_ADMIN_TOKEN}', raw: true, note: 'from the Secret tether-secrets (drain, undrain and the upstream table need it)' },
    { path: 'upstreams', value: '[]', raw: true, note: 'none listed: every pod of the Service below is one, found through its EndpointSlices' },
    { path: 'discovery.kubernetes.service', value: backend.service, from: `${backend.from}, the backend of ${DESCRIBE(chosen.manifest)}` },
    namespace === null
      ? { path: 'discovery.kubernetes.namespace', value: null, note: "no namespace in the input: Tether's own" }
      : { path: 'discovery.kubernetes.namespace', value: namespace },
    { path: 'discovery.kubernetes.port', value: backend.port, ...(backend.portNote === undefined ? {} : { differs: backend.portNote }) },
  ]
  const why = bypassed.length === 0 ? undefined
    : `${NAME(chosen.manifest)} had no stickiness of its own and ingress-nginx bypassed the ClientIP affinity of ${bypassed.map((m) => `Service ${m.name}`).join(', ')} (it sends to the pods directly), so clients were spread over the pods`
  const settings = [...base, ...chosen.settings, ...sharedCookieSecret(chosen.settings, DESCRIBE(chosen.manifest), why)]
  // the input's values and file names as the findings and the header quote them: control and
  // bidi characters escaped (JSON.stringify leaves U+202E), for the terminal and the comments alike
  const shown = findings.map((f) => ({ at: escapeControls(f.at), what: escapeControls(f.what), why: escapeControls(f.why) }))
  const header = [
    `proxy.yaml written by \`tether import\` from ${sources.map((s) => s.file).join(', ')}.`,
    `Converted: ${DESCRIBE(chosen.manifest)}.`,
    'Check it with `tether check proxy.yaml` (with TETHER_SECRET and TETHER_ADMIN_TOKEN set).',
    'State rehydration uses the in-memory store here (state.store: memory); to share checkpoints between Tether replicas use Redis (deploy/kubernetes/ingress).',
    '',
    ...(findings.length === 0
      ? ['Everything was converted.']
      : ['Not converted (review each):', ...shown.map((f) => `- ${f.at} ${f.what}: ${f.why}`)]),
  ].map(escapeControls)
  const proxyYaml = renderProxyYaml(header, settings)
  checkOwnOutput(proxyYaml)
  // no namespace in the input: none in the objects either (not "default"), so that
  // `kubectl apply -n X` places them where the app runs (it refuses an object naming another)
  const ns = namespace ?? '<namespace>'
  const manifests = options.manifests
    ? [
        `# Tether for ${DESCRIBE(chosen.manifest)}, written by \`tether import --manifests\`.`,
        ...(namespace === null ? ["# The input names no namespace, so these objects name none: apply them in the app's namespace."] : []),
        '# Create the Secret first (the cookie secret must be the same in every replica):',
        `#   kubectl -n ${ns} create secret generic tether-secrets \\`,
        '#     --from-literal=TETHER_SECRET="$(openssl rand -base64 32)" --from-literal=TETHER_ADMIN_TOKEN="$(openssl rand -hex 24)"',
        `# then \`kubectl -n ${ns} apply -f\` this file, and point your Ingress or Gateway at Service tether port 80`,
        '# (without the affinity settings it had). The image is a placeholder: build it from the Dockerfile.',
        tetherManifests({ namespace, proxyYaml, image })
          .map((o) => `---\n${toYaml(o)}`).join(''),
      ].join('\n')
    : null
  return { proxyYaml, manifests, converted: escapeControls(DESCRIBE(chosen.manifest)), findings: shown }
}
