// The README is part of the product: its key table and its error table must match the code.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ERRORS } from '../src/errors.js'
import { loadConfigFile } from '../src/config/index.js'
import { ROOT } from './fixtures/cli.js'

const readme = readFileSync(join(ROOT, 'README.md'), 'utf8')

/** Key paths of a validated config, lists as `name[]`, e.g. `upstreams[].id`. */
function keyPaths(value: unknown, prefix = ''): string[] {
  if (Array.isArray(value)) {
    // a list of maps documents its items' keys (`upstreams[].id`); a list of scalars is one key
    return value[0] !== null && typeof value[0] === 'object' ? [prefix, ...keyPaths(value[0], `${prefix}[]`)] : [prefix]
  }
  if (value !== null && typeof value === 'object') {
    return Object.entries(value).flatMap(([k, v]) => keyPaths(v, prefix ? `${prefix}.${k}` : k))
  }
  return [prefix]
}

t.test('every config key is documented in the README table, and nothing else', async (t) => {
  // full.yaml sets every key, so the loaded config has every key path
  const config = loadConfigFile(join(ROOT, 'test', 'fixtures', 'config', 'full.yaml'), {})
  // a status range {min, max} is one key; a map-or-null section is documented as itself too
  const inCode = new Set([...keyPaths(config).map((p) => p.replace(/\.expected_status\.(min|max)$/, '.expected_status')), 'discovery.dns', 'discovery.kubernetes'])
  const documented = new Set([...readme.matchAll(/^\| `([a-z0-9_.[\]]+)` \|/gm)].map((m) => m[1]!).filter((k) => !k.startsWith('TETHER_') && !k.startsWith('tether_')))
  for (const k of inCode) t.ok(documented.has(k), `README documents ${k}`)
  for (const k of documented) t.ok(inCode.has(k), `README's ${k} exists in the config`)
})

t.test('every error code is documented in the README with its status', async (t) => {
  for (const [code, { status }] of Object.entries(ERRORS)) {
    t.match(readme, new RegExp(`\\| \`${code}\` \\| ${status} \\|`), `${code} ${status}`)
  }
})

t.test("the README's two set-up commands are the package's scripts", async (t) => {
  t.match(readme, /npm ci && npm start/)
  t.match(readme, /npm test/)
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
  t.ok(pkg.scripts['start'], 'start script')
  t.ok(pkg.scripts['test'], 'test script')
})

t.test('every metric is documented in the README with its type', async (t) => {
  const { METRIC_DOCS } = await import('../src/observability/metrics.js')
  for (const m of METRIC_DOCS) t.match(readme, new RegExp(`\\| \`${m.name}\` \\| ${m.type} \\|`), m.name)
})
