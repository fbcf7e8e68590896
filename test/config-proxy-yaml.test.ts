// config/proxy.yaml is the commented reference file (docs/configuration.md: "every key, with
// its default in a comment"). Its conventions, checked here:
//   - a line `#key: value` (no space after the #) is a key left out, shown at its default:
//     removing every such # gives the same config;
//   - with those lines, every key of the schema is in the file;
//   - each "Default X" in the comment above a key is that key's default: the key set to X
//     gives the value Tether uses when the key is left out;
//   - the values written are the defaults, but for the demo's few choices.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parse } from 'yaml'
import { parseConfig, type Config } from '../src/config/index.js'
import { ROOT } from './fixtures/cli.js'

const FILE = 'config/proxy.yaml'
const text = readFileSync(join(ROOT, FILE), 'utf8')
const lines = text.split('\n')

/** `  #key: value`: a key left out, at its default. */
const LEFT_OUT = /^(\s*)#([a-z][a-z0-9_]*:(?: .*)?)$/
/** A key line; `value` is empty for a section (a map written on the lines below). */
const KEY_LINE = /^(?<indent>\s*)(?<key>[a-z][a-z0-9_]*):(?: (?<value>.*))?$/
/** A comment that is prose (`#` then a space, or a bare `#`). */
const PROSE = /^\s*#( |$)/

const uncommented = lines.map((l) => l.replace(LEFT_OUT, '$1$2'))
const parsed = (ls: readonly string[], what: string): Config => parseConfig(ls.join('\n'), `${FILE} (${what})`, {})
/** What Tether uses for every key left out. */
const defaults = parseConfig('upstreams:\n  - { id: a, url: "http://127.0.0.1:1" }\n', 'defaults', {})

const isMap = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
const at = (v: unknown, path: readonly string[]): unknown => path.reduce((o, k) => (isMap(o) ? o[k] : undefined), v)

t.test('`#key: value` lines are keys at their defaults: uncommenting them changes nothing', async (t) => {
  const leftOut = lines.filter((l) => LEFT_OUT.test(l))
  t.ok(leftOut.length >= 30, `${leftOut.length} keys shown commented out`)
  t.same(parsed(uncommented, 'keys left out uncommented'), parsed(lines, 'as written'))
})

t.test('every key of the schema is in the file (written or commented out)', async (t) => {
  const missing = (config: unknown, yaml: unknown, path: string[]): string[] =>
    isMap(config) && isMap(yaml)
      ? Object.keys(config).flatMap((k) => (Object.hasOwn(yaml, k) ? missing(config[k], yaml[k], [...path, k]) : [[...path, k].join('.')]))
      : []
  t.same(missing(parsed(uncommented, 'keys left out uncommented'), parse(uncommented.join('\n')), []), [])
})

t.test('each "Default X" above a key is what Tether uses when the key is left out', async (t) => {
  const stack: { indent: number; key: string }[] = []
  let checked = 0
  uncommented.forEach((line, i) => {
    const m = KEY_LINE.exec(line)
    if (m === null) return
    const { indent, key, value } = m.groups as { indent: string; key: string; value?: string }
    while (stack.length > 0 && stack.at(-1)!.indent >= indent.length) stack.pop()
    const path = [...stack.map((s) => s.key), key]
    if (value === undefined || value === '') stack.push({ indent: indent.length, key })
    // the comment block right above (prose lines, up to a blank line, a key or a key left out)
    let comment = ''
    for (let j = i - 1; j >= 0 && PROSE.test(lines[j]!); j--) comment = `${lines[j]} ${comment}`
    const claims = [...comment.matchAll(/\bDefault (\S+)/g)].map((c) => c[1]!.replace(/[.,;:]+$/, ''))
    if (claims.length === 0) return
    const where = `${FILE}:${i + 1} ${path.join('.')}`
    if (claims.length > 1 || value === undefined || value === '' || path[0] === 'upstreams') {
      t.fail(`${where}: the comment above must name one default, of this key: ${comment.trim()}`)
      return
    }
    checked++
    let stated: Config
    try {
      stated = parsed(uncommented.with(i, `${indent}${key}: ${claims[0]}`), `${path.join('.')}: ${claims[0]}`)
    } catch (err) {
      t.fail(`${where}: Default ${claims[0]} is not a value of this key: ${(err as Error).message}`)
      return
    }
    t.same(at(stated, path), at(defaults, path), `${where}: Default ${claims[0]}`)
  })
  const stated = text.match(/\bDefault /g)?.length ?? 0
  t.equal(checked, stated, `every "Default" in the file is checked (${checked})`)
  t.ok(checked >= 70, `${checked} stated defaults`)
})

t.test('the values written are the defaults, but for the demo choices its comments explain', async (t) => {
  const config = parsed(lines, 'as written')
  const expected = structuredClone(defaults) as { -readonly [K in keyof Config]: any }
  expected.upstreams = config.upstreams
  expected.listen.host = '127.0.0.1' // ${TETHER_HOST:-127.0.0.1}: loopback unless the image's TETHER_HOST
  expected.affinity.cookie.secure = false // the demo runs on plain http://127.0.0.1
  expected.forwarding.upstream_header = true // shows where a request landed
  expected.health.active.path = '/healthz' // the demo app answers it
  t.same(config, expected)
})
