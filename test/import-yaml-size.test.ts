// `tether import` on big YAML streams: a `kubectl get -o yaml` List of thousands of objects is
// one document of well over 100000 nodes, none from an alias, and must be read; a small file of
// many documents, each multiplying aliases just under the limit, must be refused (the budget of
// alias-expanded nodes is the file's, not each document's).
import t from 'tap'
import { convertManifests, type ImportResult } from '../src/import/convert.js'

const convert = (text: string, file = 'in.yaml'): ImportResult => convertManifests([{ file, text }], { manifests: false })

t.test('a kubectl List of thousands of objects is read: no alias in it', async (t) => {
  const items = Array.from({ length: 6000 }, (_, i) => `  - { apiVersion: v1, kind: ConfigMap, metadata: { name: c${i}, namespace: shop, labels: { a: b, c: d } }, data: { k1: v, k2: v, k3: v, k4: v, k5: v, k6: v, k7: v, k8: v } }`)
  const list = `apiVersion: v1\nkind: List\nitems:\n${items.join('\n')}\n  - { apiVersion: v1, kind: Service, metadata: { name: web, namespace: shop }, spec: { sessionAffinity: ClientIP, ports: [{ name: http, port: 80 }] } }\n`
  t.equal(convert(list).converted, 'Service shop/web (in.yaml:6004)')
})

t.test('aliases multiplied over many documents are refused, each document under the limit', async (t) => {
  // each document under 100000 nodes, 200 of them: millions of nodes from a 100 KB file
  const doc = (i: number) => `apiVersion: v1\nkind: ConfigMap\nmetadata: { name: c${i} }\nb0: &b0 [${Array(40).fill('1').join(',')}]\nb1: &b1 [${Array(40).fill('*b0').join(',')}]\nb2: [${Array(40).fill('*b1').join(',')}]\n`
  const bomb = Array.from({ length: 200 }, (_, i) => doc(i)).join('---\n')
  t.throws(() => convert(bomb), { message: /too many nodes \(alias expansion\?\)/ })
})
