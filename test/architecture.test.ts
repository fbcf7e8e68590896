// The dependency layers of docs/architecture.md, enforced: every src file has a layer, no file
// imports one of a higher layer (type-only imports included), there are no import cycles, and
// each outside library is imported by exactly one adapter file.
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join, relative, dirname, resolve } from 'node:path'
import { ROOT } from './fixtures/cli.js'

/**
 * Layers, lowest first: 0 vocabulary (types, constants), 1 pure logic, 2 state owners, 3 adapters
 * (I/O, outside libraries), 4 flows (the request path, the admin server), 5 wiring. The first
 * pattern that matches a file decides. A new file must be placed here deliberately.
 */
const LAYERS: [RegExp, number][] = [
  [/^(routing|health|proxy|admin)\/create-[a-z]+\.ts$/, 5],
  [/^(errors|clock|reserved-headers|deadline)\.ts$/, 0],
  [/^listen\.ts$/, 3],
  [/^early-signals\.ts$/, 3],
  [/^config\/schema\.ts$/, 0],
  [/^routing\/decision\.ts$/, 0],
  [/^state\/checkpoint-store\.ts$/, 0],
  [/^affinity\/store\.ts$/, 0],
  [/^peers\/peer-channel\.ts$/, 0],
  [/^health\/health-copy\.ts$/, 0],
  [/^observability\/events\.ts$/, 0],
  [/^upstream\/upstream-set\.ts$/, 0],
  [/^placement\//, 1],
  [/^upstream\/(address|endpoint-slices)\.ts$/, 1],
  [/^affinity\/(key|client-ip|cookie-codec|cookie-issuer|session-id|key-hash)\.ts$/, 1],
  [/^config\/(validate|duration|env|reload)\.ts$/, 1],
  [/^secret-text\.ts$/, 1],
  [/^proxy\/(headers|retry|outcome|interim-response|websocket-frames)\.ts$/, 1],
  [/^affinity\/(table|session-table|session-records|app-cookie|bounded-map|key-slots|key-arena)\.ts$/, 2],
  [/^routing\/router\.ts$/, 2],
  [/^observability\/recent-traffic\.ts$/, 2],
  [/^observability\/metrics-wire\.ts$/, 1],
  [/^health\/(health-table|long-wait-watch|replay-window)\.ts$/, 2],
  [/^upstream\/membership\.ts$/, 2],
  [/^state\/(protocol|memory-store)\.ts$/, 2],
  [/^config\/(load|watch|index|config-files)\.ts$/, 3],
  [/^upstream\/.*discovery\.ts$/, 3],
  [/^health\/active-checker\.ts$/, 3],
  [/^upstream\/(kubernetes-api|kubernetes-credentials|list-watch)\.ts$/, 3],
  [/^import\//, 4],
  [/^redis\/(connection-options|reply-errors|auth-hint|listener-set)\.ts$/, 1],
  [/^redis\/acl-refusals\.ts$/, 2],
  [/^redis\//, 3],
  [/^tls\//, 3],
  [/^proxy\/(forward|upgrade-transport|respond|request-body|pipelining|client-error|request-line|request-context|exchange|in-flight|deadlines|h2-messages|proxy-protocol)\.ts$/, 3],
  [/^proxy\/request-id\.ts$/, 2],
  [/^observability\/(metrics|logger|redis-health-log|problem-log)\.ts$/, 3],
  [/^proxy\/(request-path|answer-head|listener|redirect-listener)\.ts$/, 4],
  [/^health\/shared-health\.ts$/, 4],
  [/^admin\/browser-guard\.ts$/, 1],
  [/^admin\//, 4],
  [/^(app|cli|cli-commands|cli-args|tether)\.ts$/, 5],
  [/^state\/create-state\.ts$/, 5],
  [/^workers\/messages\.ts$/, 0],
  [/^workers\/worker-flags\.ts$/, 1],
  [/^workers\/(hub|silence-watch|metrics-ledger)\.ts$/, 2],
  [/^workers\/(worker-count|worker-link|handoff-guard)\.ts$/, 3],
  [/^workers\/admin-front\.ts$/, 4],
  [/^workers\/(primary|worker-main)\.ts$/, 5],
  [/^workers\/worker-preload\.cts$/, 5],
]

/** Each outside library and the one file allowed to import it. */
const ADAPTERS: Record<string, string> = {
  undici: 'proxy/forward.ts',
  ioredis: 'redis/connection.ts',
  'http-proxy': 'proxy/upgrade-transport.ts',
  'prom-client': 'observability/metrics.ts',
  pino: 'observability/logger.ts',
  yaml: 'config/load.ts',
}

const SRC = join(ROOT, 'src')

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    return statSync(p).isDirectory() ? files(p) : /\.c?ts$/.test(p) ? [p] : []
  })
}

function layerOf(file: string): number | undefined {
  return LAYERS.find(([re]) => re.test(file))?.[1]
}

/** Every module specifier a file imports (static imports, re-exports and dynamic imports). */
function imports(text: string): string[] {
  const out: string[] = []
  for (const m of text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"]([^'"]+)['"]/gm)) out.push(m[1]!)
  for (const m of text.matchAll(/^\s*import\s+['"]([^'"]+)['"]/gm)) out.push(m[1]!)
  for (const m of text.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) out.push(m[1]!)
  return out
}

const all = files(SRC).map((p) => relative(SRC, p)).sort()
const graph = new Map<string, string[]>()
for (const file of all) {
  const text = readFileSync(join(SRC, file), 'utf8')
  graph.set(file, imports(text))
}

t.test('every src file has a layer', async (t) => {
  for (const file of all) t.not(layerOf(file), undefined, `${file} is placed in a layer`)
})

t.test('no file imports a file of a higher layer', async (t) => {
  let edges = 0
  for (const [file, specs] of graph) {
    const mine = layerOf(file)!
    for (const spec of specs) {
      if (!spec.startsWith('.')) continue
      const target = relative(SRC, resolve(dirname(join(SRC, file)), spec)).replace(/\.js$/, '.ts')
      const theirs = layerOf(target)
      edges++
      t.ok(theirs !== undefined && theirs <= mine, `${file} (layer ${mine}) -> ${target} (layer ${theirs})`)
    }
  }
  t.ok(edges > 100, `${edges} edges checked`)
})

t.test('there are no import cycles', async (t) => {
  const targets = (file: string): string[] => graph.get(file)!
    .filter((s) => s.startsWith('.'))
    .map((s) => relative(SRC, resolve(dirname(join(SRC, file)), s)).replace(/\.js$/, '.ts'))
  const state = new Map<string, 'visiting' | 'done'>()
  const cycles: string[] = []
  const visit = (file: string, path: string[]): void => {
    if (state.get(file) === 'done') return
    if (state.get(file) === 'visiting') {
      cycles.push([...path.slice(path.indexOf(file)), file].join(' -> '))
      return
    }
    state.set(file, 'visiting')
    for (const next of targets(file)) if (graph.has(next)) visit(next, [...path, file])
    state.set(file, 'done')
  }
  for (const file of all) visit(file, [])
  t.same(cycles, [], 'no cycles')
})

t.test('each outside library is imported by its one adapter file', async (t) => {
  for (const [lib, adapter] of Object.entries(ADAPTERS)) {
    const importers = [...graph].filter(([, specs]) => specs.some((s) => s === lib || s.startsWith(`${lib}/`))).map(([f]) => f)
    t.same(importers, [adapter], `${lib}: only ${adapter}`)
  }
  const outside = new Set([...graph.values()].flat().filter((s) => !s.startsWith('.') && !s.startsWith('node:')).map((s) => s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!))
  t.same([...outside].sort(), Object.keys(ADAPTERS).sort(), 'no other outside library is imported by src/')
})
