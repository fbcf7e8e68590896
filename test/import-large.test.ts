// `tether import` on a big cluster export (`kubectl get all,ingress -A -o yaml`, 50 MB in real
// clusters): only the objects of the kinds import reads are parsed (checked by the bytes handed
// to the YAML parser, not by time), and skipping never changes what is read: line numbers,
// items the scan cannot see through (flow style, aliases, several kind lines) and syntax errors
// in the objects read. The speed itself is measured by bench/import-large.mjs.
import t from 'tap'
import { ConfigError } from '../src/config/index.js'
import { convertManifests } from '../src/import/convert.js'
import { keptParts, readManifests } from '../src/import/manifests.js'
// @ts-expect-error plain ESM bench helper without types
import { kubectlExport } from '../bench/lib/kubectl-export.mjs'

const KINDS = new Set(['Ingress', 'Service', 'HTTPRoute', 'GRPCRoute', 'BackendLBPolicy'])
const read = (text: string) => readManifests([{ file: 'in.yaml', text }], KINDS).map((m) => `${m.kind} ${m.name} ${m.at}`)
/** What parsing everything reads, of the same kinds. */
const readAll = (text: string) => readManifests([{ file: 'in.yaml', text }]).filter((m) => KINDS.has(m.kind)).map((m) => `${m.kind} ${m.name} ${m.at}`)

t.test('an export of a cluster: the YAML parser sees its Services and Ingresses, not its Deployments, ReplicaSets and Pods', async (t) => {
  const text: string = kubectlExport({ apps: 40, pods: 4, stickyEvery: 7 })
  const parts = keptParts(text, KINDS)
  const parsed = parts.reduce((n, p) => n + p.end - p.start, 0)
  // the items of the read kinds, as the generator wrote them (each starts at "- apiVersion:" on column 0)
  const items = text.split(/\n(?=- )/).slice(1).map((s) => s.replace(/\nkind: List\n[\s\S]*$/, ''))
  const wanted = items.filter((s) => /^ {2}kind: (Service|Ingress)$/m.test(s)).reduce((n, s) => n + s.length + 1, 0)
  t.equal(items.length, 40 * 9)
  t.equal(parsed, wanted, `parsed ${parsed} of ${text.length} bytes: the Services' and Ingresses' only`)
  t.ok(parts.every((p) => p.items), 'List items, parsed as such')
  const all = readManifests([{ file: 'in.yaml', text }], KINDS)
  t.same(new Set(all.map((m) => m.kind)), new Set(['Service', 'Ingress']))
  t.equal(all.length, 80)
  // the same objects, at the same lines, as parsing everything
  const everything = readManifests([{ file: 'in.yaml', text }]).filter((m) => KINDS.has(m.kind))
  t.same(all.map((m) => [m.kind, m.name, m.namespace, m.at, m.obj]), everything.map((m) => [m.kind, m.name, m.namespace, m.at, m.obj]))
  const r = convertManifests([{ file: 'export.yaml', text }], { manifests: false })
  t.equal(r.converted, `Ingress app-0/web-0 (export.yaml:${everything.find((m) => m.kind === 'Ingress')!.at.split(':')[1]})`)
})

t.test('what the scan cannot see through is parsed, so nothing is skipped that is read', async (t) => {
  const list = (...items: string[]) => `apiVersion: v1\nitems:\n${items.join('')}kind: List\nmetadata: {}\n`
  const pod = '- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p\n    annotations:\n      note: |\n        kind: Service\n        spec: x\n'
  const svc = (name: string) => `- apiVersion: v1\n  kind: Service\n  metadata: { name: ${name} }\n`
  t.same(read(list(pod, svc('a'), pod, svc('b'))), ['Service a in.yaml:11', 'Service b in.yaml:22'], 'a block scalar holding "kind: Service" in a Pod is not an object')
  t.same(read(list(pod, '- { apiVersion: v1, kind: Service, metadata: { name: flow } }\n')), ['Service flow in.yaml:11'], 'a flow-style item')
  t.same(read(list('-\n  apiVersion: v1\n  kind: Service\n  metadata: { name: below }\n')), ['Service below in.yaml:4'], 'an item starting on the line after its dash')
  t.same(read(list('  - apiVersion: v1\n    kind: Pod\n    metadata: { name: p }\n', '  - apiVersion: v1\n    kind: Service\n    metadata: { name: deeper }\n')), ['Service deeper in.yaml:6'], 'items indented under items:')
  t.throws(() => read(list('- apiVersion: v1\n  kind: Pod\n  "kind": Service\n  metadata: { name: quoted }\n')), { message: /in\.yaml:5:3: YAML syntax error: Map keys must be unique/ }, 'a quoted key: the item is parsed, and its duplicate kind refused as before')
  t.same(read(`apiVersion: v1\nkind: Pod\nmetadata: { name: p }\n---\napiVersion: v1\nkind: Service\nmetadata: { name: doc }\n`), ['Service doc in.yaml:5'], 'documents')
  t.same(read('apiVersion: v1\r\nkind: Pod\r\nmetadata: { name: p }\r\n---\r\napiVersion: v1\r\nkind: Service\r\nmetadata: { name: crlf }\r\n'), ['Service crlf in.yaml:5'], 'CRLF line breaks')
  // an alias may name an anchor in an item of another kind: the whole List is parsed
  const anchored = list('- apiVersion: v1\n  kind: ConfigMap\n  metadata: { name: c }\n  data: &shared { name: from-anchor }\n', '- apiVersion: v1\n  kind: Service\n  metadata: *shared\n')
  t.same(read(anchored), ['Service from-anchor in.yaml:7'])
  t.same(keptParts(anchored, KINDS), [{ start: 0, end: anchored.length, line: 1, items: false }])
  t.same(read('%YAML 1.2\n---\napiVersion: v1\nkind: Service\nmetadata: { name: directive }\n'), ['Service directive in.yaml:3'], 'directives: read whole')
  // a `*` at a line's start in a block scalar (a ConfigMap's JSDoc, a Markdown list) with no anchor in the document: no alias can be there
  const jsdoc = list(pod, '- apiVersion: v1\n  kind: ConfigMap\n  metadata: { name: js }\n  data:\n    app.js: |\n      /**\n       * Starts the app.\n       */\n', svc('c'))
  t.same(read(jsdoc), ['Service c in.yaml:19'])
  t.same(keptParts(jsdoc, KINDS).map((p) => jsdoc.slice(p.start, p.end)), [svc('c')], 'only the Service is parsed: a * without an anchor does not make the List read whole')
  t.same(read(jsdoc), readAll(jsdoc), 'as parsing everything')
  for (const text of [list(pod, svc('a'), pod, svc('b')), list('-\n  apiVersion: v1\n  kind: Service\n  metadata: { name: below }\n'), anchored]) {
    t.same(read(text), readAll(text), 'as parsing everything')
  }
})

t.test('a syntax error in an object that is read is located in the file', async (t) => {
  const text = 'apiVersion: v1\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: { name: p }\n- apiVersion: v1\n  kind: Service\n  metadata: { name: "broken }\nkind: List\n'
  const err = (() => {
    try {
      read(text)
    } catch (e) {
      return e
    }
    return undefined
  })()
  t.ok(err instanceof ConfigError)
  t.match((err as ConfigError).issues[0], /^in\.yaml:8:\d+: YAML syntax error/, 'the line in the file, not in the item')
  t.match((err as ConfigError).detail?.[0], /^ {2}8 \| {3}metadata: \{ name: "broken \}$/, 'the line shown is that line')
})
