// Kubernetes manifests as `tether import` reads them: every object of every YAML file (a
// `List` unpacked), with where it starts, and the small vocabulary the converters share (a
// setting for proxy.yaml with where it came from, a finding about what was not converted).
// Pure: takes file texts, reads YAML through the config loader (the one yaml adapter); out of
// a big export (`kubectl get all -A -o yaml`) only the objects of the kinds asked for are parsed.
import { parseYamlParts, plainValue, type SourceNode, type YamlPart } from '../config/index.js'

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
 * With `kinds`, the objects of other kinds are skipped too, and those whose `kind` line is plain
 * to see in block style are never parsed (see `keptParts`): a 50 MB export of a cluster is
 * read in the time of its Ingresses and Services, not of its Pods.
 * Throws ConfigError (with file:line:col) on a YAML syntax error (in the objects parsed).
 * Example: `readManifests([{ file: 'app.yaml', text: 'kind: Service\nmetadata: {name: web}\n' }])`
 * -> `[{ kind: 'Service', name: 'web', at: 'app.yaml:1', ... }]`.
 */
export function readManifests(sources: readonly { readonly file: string; readonly text: string }[], kinds?: ReadonlySet<string>): Manifest[] {
  const out: Manifest[] = []
  const add = (file: string, node: SourceNode): void => {
    const obj = plainValue(node)
    if (!isMap(obj) || typeof obj['kind'] !== 'string') return
    if (obj['kind'] === 'List' || obj['kind'].endsWith('List')) {
      const items = child(node, 'items')
      if (items?.kind === 'seq') for (const item of items.items) add(file, item)
      return
    }
    if (kinds !== undefined && !kinds.has(obj['kind'])) return
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
  for (const { file, text } of sources) {
    const parts = kinds === undefined ? [{ start: 0, end: text.length, line: 1, items: false }] : keptParts(text, kinds)
    parseYamlParts(text, file, parts).forEach((nodes, i) => {
      for (const node of nodes) {
        if (parts[i]!.items && node.kind === 'seq') for (const item of node.items) add(file, item)
        else add(file, node)
      }
    })
  }
  return out
}

/** A part of a file to parse: a whole document (or several), or a run of a List's items (`items`: a sequence of them). */
export interface KeptPart extends YamlPart {
  readonly items: boolean
}

/**
 * The lines of a text (`\n` or `\r\n` breaks), by number from 0: where each starts, its
 * indentation (spaces; a tab in it makes `rest` start with the tab, not a plain key), and its
 * text after the indentation, sliced only when asked for (a 50 MB export has 2 million lines).
 */
class Lines {
  readonly length: number
  readonly #text: string
  readonly #starts: Int32Array // length + 1 entries: the last is the end of the text
  readonly #indents: Int32Array

  constructor(text: string) {
    let count = 0
    for (let at = text.indexOf('\n'); at !== -1; at = text.indexOf('\n', at + 1)) count++
    if (text.length > 0 && !text.endsWith('\n')) count++
    this.#text = text
    this.length = count
    this.#starts = new Int32Array(count + 1)
    this.#indents = new Int32Array(count)
    let start = 0
    for (let i = 0; i < count; i++) {
      this.#starts[i] = start
      let indent = 0
      while (text.charCodeAt(start + indent) === 32) indent++
      this.#indents[i] = indent
      const nl = text.indexOf('\n', start)
      start = nl === -1 ? text.length : nl + 1
    }
    this.#starts[count] = text.length
  }

  /** Offset of the first character of line `i` (the text's length for `i === length`). */
  start(i: number): number {
    return this.#starts[i]!
  }

  indent(i: number): number {
    return this.#indents[i]!
  }

  /** The line after its indentation, without its line break. */
  rest(i: number): string {
    let end = this.#starts[i + 1]!
    if (end > this.#starts[i]! && this.#text.charCodeAt(end - 1) === 10) end--
    if (end > this.#starts[i]! && this.#text.charCodeAt(end - 1) === 13) end--
    return this.#text.slice(Math.min(this.#starts[i]! + this.#indents[i]!, end), end)
  }

  /** True for a line with more than spaces and a comment. */
  content(i: number): boolean {
    const c = this.#text.charCodeAt(this.#starts[i]! + this.#indents[i]!)
    return !(c === 10 || c === 13 || c === 35 || Number.isNaN(c)) // \n \r # or the end
  }
}

/** A plain mapping key at the start of a line (`kind:`, `metadata:`), as kubectl prints them. */
const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_.\/-]*:(?:[ \t]|$)/
/** `kind: Name` (plain or quoted) and its value. */
const KIND_LINE = /^kind:[ \t]+(?:([A-Za-z][A-Za-z0-9.-]*)|"([A-Za-z][A-Za-z0-9.-]*)"|'([A-Za-z][A-Za-z0-9.-]*)')[ \t]*(?:#.*)?$/
/**
 * True when `text[start, end)` may hold an alias: a `*` after indentation, `: `, `- `, `? `, a
 * flow indicator or a tag (a `*` inside a scalar, `"*"` or `a * b`, may count too: that only
 * means a slower read), and an anchor for it (an alias names an anchor of its own document,
 * YAML 1.2 section 7.1: with no `&` where an anchor can stand, a `*` is scalar text, such as a
 * ConfigMap's ` * comment` lines, or an undefined alias the parser refuses where it is read).
 * Such documents are parsed whole, as an alias may name an anchor anywhere.
 */
function mayHaveAlias(text: string, start: number, end: number): boolean {
  return mayHaveNode(text, start, end, '*') && mayHaveNode(text, start, end, '&')
}

/** True when `text[start, end)` may hold an alias (`mark` `*`) or an anchor (`&`) where a node can begin. */
function mayHaveNode(text: string, start: number, end: number, mark: '*' | '&'): boolean {
  for (let at = text.indexOf(mark, start); at !== -1 && at < end; at = text.indexOf(mark, at + 1)) {
    let i = at - 1
    while (i >= start && (text[i] === ' ' || text[i] === '\t')) i--
    const spaced = i < at - 1
    const before = i < start ? '\n' : text[i]!
    if (before === '\n' || '[{,'.includes(before) || (spaced && ':?-'.includes(before))) return true
    if (spaced) { // after a tag: `!tag *alias`
      let j = i
      while (j >= start && !' \t\n'.includes(text[j]!)) j--
      if (text[j + 1] === '!') return true
    }
  }
  return false
}

/**
 * The parts of `text` to parse for objects of `kinds`: a document is skipped when its one
 * top-level `kind:` line names another kind; in a `kind: List` document (kubectl's export), each
 * item whose `kind:` line names another kind is skipped, the runs of the others are kept.
 * Whatever the scan does not recognise for sure (flow style, quoted or complex keys, several
 * `kind:` lines, directives, a possible alias, since an alias may refer to an anchor in a
 * skipped item) is kept and left to the YAML parser, so skipping never changes what is read:
 * in valid YAML, a line at an object's own indentation that starts with a plain key is a key of
 * that object (scalars and nested nodes continue at a deeper indentation).
 * Example: `'kind: Pod\n---\nkind: Service\n'` with kinds {Service} -> one part, from line 3.
 */
export function keptParts(text: string, kinds: ReadonlySet<string>): KeptPart[] {
  const lines = new Lines(text)
  // directives and document-end markers: read whole
  if (/^(?:%|\.\.\.(?:[ \t\r]|$))/m.test(text)) {
    return [{ start: 0, end: text.length, line: 1, items: false }]
  }
  const parts: KeptPart[] = []
  const keep = (from: number, to: number, items: boolean): void => {
    if (from >= to) return
    const last = parts.at(-1)
    const start = lines.start(from)
    const end = lines.start(to)
    // runs of the same shape next to each other are one part (fewer, larger parses)
    if (last !== undefined && last.items === items && last.end === start) parts[parts.length - 1] = { ...last, end }
    else parts.push({ start, end, line: from + 1, items })
  }
  let from = 0
  for (let i = 0; i <= lines.length; i++) {
    if (i < lines.length && !(i > from && lines.indent(i) === 0 && /^---(?:[ \t]|$)/.test(lines.rest(i)))) continue
    documentParts(text, lines, from, i, kinds, keep)
    from = i
  }
  return parts
}

/** The parts of the document on lines `[from, to)` (see keptParts). */
function documentParts(text: string, lines: Lines, from: number, to: number, kinds: ReadonlySet<string>, keep: (from: number, to: number, items: boolean) => void): void {
  let first = from
  if (first < to && /^---(?:[ \t]|$)/.test(lines.rest(first)) && lines.indent(first) === 0) {
    if (lines.rest(first).replace(/^---[ \t]*(?:#.*)?$/, '') !== '') return keep(from, to, false) // content on the marker line
    first++
  }
  const top: number[] = [] // lines at column 0 with content
  for (let i = first; i < to; i++) {
    if (!lines.content(i)) continue
    if (lines.indent(i) === 0) top.push(i)
    else if (top.length === 0) return keep(from, to, false) // content before any top-level key: not a block mapping
  }
  if (top.length === 0) return // blank or comments only
  if (mayHaveAlias(text, lines.start(first), lines.start(to))) return keep(from, to, false)
  const kindLines = top.filter((i) => lines.rest(i).startsWith('kind:'))
  const kind = kindLines.length === 1 ? kindOf(lines.rest(kindLines[0]!)) : undefined
  if (kind === undefined || top.some((i) => !PLAIN_KEY.test(lines.rest(i)) && !lines.rest(i).startsWith('- ') && lines.rest(i) !== '-')) return keep(from, to, false)
  if (!kind.endsWith('List')) return kinds.has(kind) ? keep(from, to, false) : undefined
  // a List: its items, one by one
  const itemsKey = top.filter((i) => lines.rest(i).startsWith('items:'))
  if (itemsKey.length !== 1 || !/^items:[ \t]*(?:#.*)?$/.test(lines.rest(itemsKey[0]!))) return keep(from, to, false)
  const start = itemsKey[0]! + 1
  let end = start
  while (end < to && !(lines.indent(end) === 0 && lines.content(end) && !lines.rest(end).startsWith('-'))) end++
  if (!listItems(lines, start, end, kinds, keep)) return keep(from, to, false)
}

/**
 * Keeps the items on lines `[from, to)` (a block sequence) whose kind is in `kinds` or not plain
 * to see; false when the lines are not a block sequence this scan knows (the caller keeps all).
 */
function listItems(lines: Lines, from: number, to: number, kinds: ReadonlySet<string>, keep: (from: number, to: number, items: boolean) => void): boolean {
  let i = from
  while (i < to && !lines.content(i)) i++
  if (i === to) return true
  const seq = lines.indent(i) // the items' `-` column
  const entries: number[] = []
  for (let j = i; j < to; j++) {
    if (!lines.content(j) || lines.indent(j) > seq) continue
    const rest = lines.rest(j)
    if (lines.indent(j) === seq && (rest === '-' || rest.startsWith('- '))) entries.push(j)
    else return false
  }
  entries.forEach((at, n) => {
    const next = n + 1 < entries.length ? entries[n + 1]! : to
    // leading comments and blank lines before the first entry go with it
    const begin = n === 0 ? from : at
    if (!skippable(lines, at, next, seq, kinds)) keep(begin, next, true)
  })
  return true
}

/** True when the item on lines `[at, next)` (its `-` at column `seq`) has one plain `kind:` line naming a kind not in `kinds`, and only plain keys at its indentation. */
function skippable(lines: Lines, at: number, next: number, seq: number, kinds: ReadonlySet<string>): boolean {
  const after = lines.rest(at).slice(1)
  const gap = after.length - after.trimStart().length
  let indent: number
  const keys: string[] = []
  if (after.trim() === '') {
    let j = at + 1
    while (j < next && !lines.content(j)) j++
    if (j === next) return false
    indent = lines.indent(j)
  } else {
    indent = lines.indent(at) + 1 + gap
    keys.push(after.trimStart())
  }
  if (indent <= seq) return false
  for (let j = at + 1; j < next; j++) {
    if (!lines.content(j) || lines.indent(j) > indent) continue
    if (lines.indent(j) < indent) return false
    keys.push(lines.rest(j))
  }
  if (keys.some((k) => !PLAIN_KEY.test(k))) return false
  const kindLines = keys.filter((k) => k.startsWith('kind:'))
  const kind = kindLines.length === 1 ? kindOf(kindLines[0]!) : undefined
  return kind !== undefined && !kind.endsWith('List') && !kinds.has(kind)
}

/** The kind named by a `kind:` line, or undefined when it is not plain to see. */
function kindOf(line: string): string | undefined {
  const m = KIND_LINE.exec(line)
  return m === null ? undefined : (m[1] ?? m[2] ?? m[3])
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

/** The v1 Services of `manifests` by name, in input order; built once per list (an export has thousands: no search per Ingress). */
const SERVICES = new WeakMap<readonly Manifest[], Map<string, Manifest[]>>()

function servicesNamed(manifests: readonly Manifest[], name: string): readonly Manifest[] {
  let byName = SERVICES.get(manifests)
  if (byName === undefined) {
    byName = new Map()
    for (const m of manifests) {
      if (m.kind !== 'Service' || m.apiVersion !== 'v1') continue
      const same = byName.get(m.name)
      if (same === undefined) byName.set(m.name, [m])
      else same.push(m)
    }
    SERVICES.set(manifests, byName)
  }
  return byName.get(name) ?? []
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
  const svc = servicesNamed(manifests, service).find((m) => namespace === null || m.namespace === null || m.namespace === namespace)
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
