// Kubernetes manifests as `tether import` reads them: every object of every YAML file (a
// `List` unpacked), with where it starts, and the small vocabulary the converters share (a
// setting for proxy.yaml with where it came from, a finding about what was not converted).
// Pure: takes file texts, reads YAML through the config loader (the one yaml adapter).
import { parseYamlDocuments, plainValue, type SourceNode } from '../config/index.js'

/** One Kubernetes object from the input. `at` is `file:line` of its first line. */
export interface Manifest {
  readonly apiVersion: string
  readonly kind: string
  readonly name: string
  readonly namespace: string | null
  readonly at: string
  /** The object as plain JSON. */
  readonly obj: Record<string, any>
  /** Located nodes, to name the line of a field (`lineOf`). */
  readonly node: SourceNode
  readonly file: string
}

/**
 * Reads every object of the given files. A `kind: List` (as `kubectl get -o yaml` prints) is
 * unpacked into its items. Documents that are not Kubernetes objects (no `kind`) are skipped.
 * Throws ConfigError (with file:line:col) on a YAML syntax error.
 * Example: `readManifests([{ file: 'app.yaml', text: 'kind: Service\nmetadata: {name: web}\n' }])`
 * -> `[{ kind: 'Service', name: 'web', at: 'app.yaml:1', ... }]`.
 */
export function readManifests(sources: readonly { readonly file: string; readonly text: string }[]): Manifest[] {
  const out: Manifest[] = []
  const add = (file: string, node: SourceNode): void => {
    const obj = plainValue(node)
    if (!isMap(obj) || typeof obj['kind'] !== 'string') return
    if (obj['kind'] === 'List' || obj['kind'].endsWith('List')) {
      const items = child(node, 'items')
      if (items?.kind === 'seq') for (const item of items.items) add(file, item)
      return
    }
    const meta = isMap(obj['metadata']) ? obj['metadata'] : {}
    out.push({
      apiVersion: typeof obj['apiVersion'] === 'string' ? obj['apiVersion'] : '',
      kind: obj['kind'],
      name: typeof meta['name'] === 'string' ? meta['name'] : '',
      namespace: typeof meta['namespace'] === 'string' ? meta['namespace'] : null,
      at: `${file}:${node.pos.line}`,
      obj, node, file,
    })
  }
  for (const { file, text } of sources) for (const node of parseYamlDocuments(text, file)) add(file, node)
  return out
}

/**
 * `file:line` of the field at `path` under a manifest (the deepest that exists).
 * Example: `lineOf(ingress, ['metadata', 'annotations', 'nginx.ingress.kubernetes.io/affinity'])` -> 'ingress.yaml:7'.
 */
export function lineOf(m: Manifest, path: readonly (string | number)[]): string {
  let node = m.node
  for (const key of path) {
    const next = typeof key === 'number' ? (node.kind === 'seq' ? node.items[key] : undefined) : child(node, key)
    if (next === undefined) break
    node = next
  }
  return `${m.file}:${node.pos.line}`
}

function child(node: SourceNode, key: string): SourceNode | undefined {
  return node.kind === 'map' ? node.entries.find((e) => e.key === key)?.value : undefined
}

function isMap(v: unknown): v is Record<string, any> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/**
 * One value for proxy.yaml: its key path, the value (a string is written quoted unless `raw`),
 * where it came from (`from`, a place in the input) or why it is there (`note`, for values the
 * input has no place for), and how Tether's behaviour differs, if it does.
 * Example: `{ path: 'affinity.cookie.name', value: 'route', from: 'ingress.yaml:8 nginx.ingress.kubernetes.io/session-cookie-name: "route"' }`.
 */
export interface Setting {
  readonly path: string
  readonly value: string | number | boolean | null
  readonly from?: string
  readonly note?: string
  readonly differs?: string
  /** Write the value as is (`${TETHER_SECRET}`, `[]`), not quoted. */
  readonly raw?: boolean
}

/** Tether's cookie signing secret, the same in every Tether replica (--manifests sets TETHER_SECRET from the Secret). */
export const COOKIE_SECRET: Setting = { path: 'affinity.cookie.secret', value: '${TETHER_SECRET}', raw: true, note: 'the signing secret, the same in every Tether replica (at least 16 bytes): from the Secret tether-secrets' }

/**
 * Something in the input that was not converted, or converted only in part.
 * Example: `{ at: 'ingress.yaml:12', what: 'nginx.ingress.kubernetes.io/ssl-redirect: "true"', why: 'TLS and redirects stay with ...' }`.
 */
export interface Finding {
  readonly at: string
  readonly what: string
  readonly why: string
}

/** What one converter made of its objects. */
export interface Conversion {
  readonly settings: Setting[]
  readonly findings: Finding[]
}

/** Where the upstream pods are: a Service and a port (name or pod port number), for discovery.kubernetes. */
export interface Backend {
  readonly service: string
  readonly namespace: string | null
  readonly port: string | number
  /** Where it was named, e.g. `ingress.yaml:20`. */
  readonly from: string
  /** Why the port may need a look (a Service port number that could not be mapped to a name or targetPort). */
  readonly portNote?: string
}

/**
 * The `discovery.kubernetes.port` for a Service port given by name or number: a name as is (an
 * EndpointSlice carries the Service's port names); a number mapped through the Service, when
 * it is among the inputs, to its port name, or else to a numeric targetPort.
 * Example: Service web with `{ name: '', port: 80, targetPort: 3000 }`, number 80 -> `{ port: 3000 }`.
 */
export function backendPort(manifests: readonly Manifest[], service: string, namespace: string | null, port: { name?: unknown; number?: unknown }): { port: string | number; note?: string } {
  if (typeof port.name === 'string' && port.name !== '') return { port: port.name }
  const n = typeof port.number === 'number' ? port.number : Number(port.number)
  const svc = manifests.find((m) => m.kind === 'Service' && m.apiVersion === 'v1' && m.name === service && (namespace === null || m.namespace === null || m.namespace === namespace))
  const ports: Record<string, any>[] = Array.isArray(svc?.obj['spec']?.ports) ? svc!.obj['spec'].ports : []
  const p = ports.find((q) => q?.['port'] === n)
  if (p !== undefined && typeof p['name'] === 'string' && p['name'] !== '') return { port: p['name'] }
  if (p !== undefined && (typeof p['targetPort'] === 'number' || p['targetPort'] === undefined)) return { port: typeof p['targetPort'] === 'number' ? p['targetPort'] : n }
  if (!Number.isInteger(n) || n < 1 || n > 65535) return { port: 'http', note: `no usable port in the input (${JSON.stringify(port)}): set the Service port's name` }
  const why = svc === undefined
    ? `Service ${service} is not among the input files, so its port ${n} could not be mapped: a number here is the port the pods listen on (the Service's targetPort); use the Service port's name if it has one`
    : p === undefined
      ? `Service ${service} has no port ${n} (its ports: ${ports.map((q) => q?.['port']).join(', ') || 'none'}): set the port the pods listen on, or the Service port's name`
      : `Service ${service} port ${n} has an unnamed, named-container targetPort ${JSON.stringify(p?.['targetPort'])}: set the number the pods listen on, or name the Service port and use that name`
  return { port: n, note: why }
}
