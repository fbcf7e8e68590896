// The docs are part of the product: the reference tables in docs/ must match the code, every
// link must lead somewhere, every config key path the docs name must exist, and every example
// config must pass `tether check`. The rules are written down in docs/development.md
// ("Documentation that stays true"); change both together.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { dirname, join, posix } from 'node:path'
import { parse as parseYaml, parseDocument, stringify } from 'yaml'
import ts from 'typescript'
import { ERRORS } from '../src/errors.js'
import { loadConfigFile, parseConfig } from '../src/config/index.js'
import { ROOT } from './fixtures/cli.js'
import { anchors, codeSpans, headings, links, section, slug, splitFences, trackedFiles, type Fence } from './fixtures/markdown.js'
import { MAX_DURATION_MS } from '../src/config/validate.js'
import { formatDuration, parseDuration } from '../src/config/duration.js'

const read = (file: string): string => readFileSync(join(ROOT, file), 'utf8')
const README = 'README.md'
const KEY_TABLE = 'docs/configuration.md'
const ERROR_TABLE = 'docs/errors.md'
const METRIC_TABLE = 'docs/metrics.md'

const tracked = trackedFiles(ROOT)
const trackedSet = new Set(tracked)
const markdown = tracked.filter((f) => f.endsWith('.md'))

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

// full.yaml sets every key, so the loaded config has every key path
const FULL = loadConfigFile(join(ROOT, 'test', 'fixtures', 'config', 'full.yaml'), {})
// a status range {min, max} is one key; a map-or-null section is documented as itself too
const MAP_OR_NULL = ['discovery.dns', 'discovery.kubernetes', 'listen.tls', 'listen.tls.hsts', 'listen.redirect', 'upstreams[].tls', 'affinity.spill']
const KEYS = new Set([...keyPaths(FULL).map((p) => p.replace(/\.expected_status\.(min|max)$/, '.expected_status')), ...MAP_OR_NULL])
/** Every key path and every section on the way to one (`affinity`, `affinity.cookie`, `upstreams[]`). */
const PATHS = new Set([...KEYS].flatMap((k) => k.split('.').map((_, i, parts) => parts.slice(0, i + 1).join('.'))))
/** Names of sections (keys holding a map or a list of maps), at any depth: `affinity`, `cookie`, `upstreams[]`. */
const SECTIONS = new Set([...PATHS].filter((p) => [...PATHS].some((q) => q.startsWith(`${p}.`))).map((p) => p.split('.').pop()!))
const TOP_SECTIONS = new Set(Object.keys(FULL))

/** The rows `| \`key.path\` | ...` of a Markdown table. */
function keyRows(text: string): string[] {
  return [...text.matchAll(/^\| `([a-z0-9_.[\]]+)` \|/gm)].map((m) => m[1]!)
}

t.test('every config key is documented in the key table, and nothing else', async (t) => {
  const documented = new Set(keyRows(read(KEY_TABLE)))
  for (const k of KEYS) t.ok(documented.has(k), `${KEY_TABLE} documents ${k}`)
  for (const k of documented) t.ok(KEYS.has(k), `${KEY_TABLE}'s ${k} exists in the config`)
})

// Loading one key of the key table with a value of one's choice, in a config that is valid
// around it. The sections a key lives in, with what they need to be valid (no files are read):
const CONTEXTS: [string, Record<string, unknown>][] = [
  ['listen.tls', { listen: { tls: { cert: 'c.pem', key: 'k.pem' } } }],
  ['listen.tls.hsts', { listen: { tls: { hsts: { max_age: '24h' } } } }],
  ['listen.redirect', { listen: { port: 8443, tls: { cert: 'c.pem', key: 'k.pem' }, redirect: {} } }],
  ['discovery.dns', { discovery: { dns: { name: 'app.example', port: 80 } } }],
  ['discovery.kubernetes', { discovery: { kubernetes: { service: 'web', port: 'http' } } }],
  ['affinity.spill', { affinity: { spill: {} } }],
]

function merge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out = { ...a }
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k]
    out[k] = prev !== null && typeof prev === 'object' && !Array.isArray(prev) && v !== null && typeof v === 'object' && !Array.isArray(v)
      ? merge(prev as Record<string, unknown>, v as Record<string, unknown>) : v
  }
  return out
}

const at = (o: unknown, path: string[]): unknown => path.reduce<unknown>((v, k) => (v as Record<string, unknown> | undefined)?.[k], o)
const load = (tree: Record<string, unknown>): Record<string, unknown> => parseConfig(stringify(tree), 'defaults.yaml') as unknown as Record<string, unknown>

/** Configs around one key of the key table: with a value, without the key, and where it is in the loaded config. */
function around(key: string): { withValue: (value: unknown) => Record<string, unknown>; without: Record<string, unknown>; where: string[] } {
  const item = key.startsWith('upstreams[].')
  const path = (item ? key.slice('upstreams[].'.length) : key).split('.')
  let base: Record<string, unknown> = item ? {} : { upstreams: [{ id: 'a', url: 'http://127.0.0.1:1' }] }
  for (const [prefix, ctx] of CONTEXTS) if (key.startsWith(`${prefix}.`)) base = merge(base, ctx)
  const withValue = (value: unknown): Record<string, unknown> => {
    const leaf = path.reduceRight<unknown>((v, k) => ({ [k]: v }), value) as Record<string, unknown>
    return item ? { upstreams: [merge({ id: 'a', url: 'https://127.0.0.1:1' }, leaf)] } : merge(base, leaf)
  }
  const without = item ? { upstreams: [{ id: 'a', url: 'https://127.0.0.1:1', ...(path.length > 1 ? { [path[0]!]: {} } : {}) }] } : base
  return { withValue, without, where: item ? ['upstreams', '0', ...path] : path }
}

/** What the key loads to with `value` (JSON), or why it is refused (`(refused: ...)`). */
function loadsTo(key: string, value: unknown): string {
  const { withValue, where } = around(key)
  try {
    return JSON.stringify(at(load(withValue(value)), where))
  } catch (err) {
    return `(refused: ${(err as Error).message.split('\n')[0]})`
  }
}

/** The key table's rows: key path, type column and the rest, with the line. */
function tableRows(): { key: string; type: string; line: number }[] {
  return read(KEY_TABLE).split('\n').flatMap((text, i) => {
    const m = /^\| `([a-z0-9_.[\]]+)` \| ((?:[^|\\]|\\\|)*) \|/.exec(text)
    return m ? [{ key: m[1]!, type: m[2]!, line: i + 1 }] : []
  })
}

t.test("the key table's defaults are the code's: each default written out loads to the config the key left out gives", async (t) => {
  let checked = 0
  let inherited = 0
  // the type column may hold escaped bars (`cookie \| header`); every row whose default starts
  // with a code span is checked (the rows counted below must all be matched)
  const rows = [...read(KEY_TABLE).matchAll(/^\| `([a-z0-9_.[\]]+)` \| (?:[^|\\]|\\\|)* \| `/gm)].length
  for (const m of read(KEY_TABLE).matchAll(/^\| `([a-z0-9_.[\]]+)` \| (?:[^|\\]|\\\|)* \| `([^`]*)`/gm)) {
    const [, key, text] = m as unknown as [string, string, string]
    if (KEYS.has(text)) { // another key's value (`upstreams[].tls.ca` defaults to `forwarding.tls.ca`)
      inherited++
      continue
    }
    const { without, where } = around(key)
    // the default as YAML reads it, else as the plain string it shows (`tether:`)
    const candidates = [(() => { try { return parseYaml(text) as unknown } catch { return text } })(), text]
    const expected = JSON.stringify(at(load(without), where))
    const got = candidates.map((v) => loadsTo(key, v))
    t.ok(got.includes(expected), `${key}: documented \`${text}\` loads to ${got[0]}, the default is ${expected}`)
    checked++
  }
  t.ok(checked >= 110, `${checked} documented defaults checked`)
  t.equal(checked + inherited, rows, `every row with a default in code is checked (${inherited} name another key's)`)
})

/**
 * How the key table writes a duration's range: `duration > 0` or `duration >= 0`, then
 * `, <= 24h` when its bound is not every duration's (`MAX_DURATION_MS`), `or null` when null is
 * accepted, and a rule against another key in parentheses: `duration > 0 or null (at least
 * idle_timeout)`.
 */
const DURATION_TYPE = /^duration (>=?) 0(?:, <= ([0-9]+(?:ms|s|m|h)))?(,? or null)?(?: \(([^)]+)\))?$/

t.test("every duration's documented range is the validator's: 0 allowed or not, its bound, null", async (t) => {
  let checked = 0
  const bounded: string[] = []
  for (const { key, type, line } of tableRows()) {
    const where = `${KEY_TABLE}:${line} ${key}`
    // a duration key is one that loads "1.5s" as 1500 ms (or, past a rule's minimum, "100h"), whatever its row says
    const isDuration = loadsTo(key, '1.5s') === '1500' || loadsTo(key, '100h') === '360000000'
    t.equal(type.startsWith('duration'), isDuration, `${where}: the type column says duration exactly when the key is one`)
    if (!isDuration) continue
    checked++
    const m = DURATION_TYPE.exec(type)
    if (m === null) {
      t.fail(`${where}: type \`${type}\` is not written as \`duration > 0\`, \`duration >= 0\`, then \`, <= <max>\`, \`or null\`, \`(rule)\``)
      continue
    }
    const [, op, maxText, orNull, rule] = m
    if (maxText !== undefined) bounded.push(key)
    t.equal(loadsTo(key, 0) === '0', op === '>=', `${where}: the row says 0 is ${op === '>=' ? 'accepted' : 'refused'}; the validator gives ${loadsTo(key, 0)}`)
    // a rule against another key (absolute_timeout >= idle_timeout) may refuse the smallest values
    if (rule === undefined) t.equal(loadsTo(key, '1ms'), '1', `${where}: 1ms is accepted (no minimum above 0)`)
    const max = maxText === undefined ? MAX_DURATION_MS : parseDuration(maxText)
    if (maxText !== undefined) t.not(max, MAX_DURATION_MS, `${where}: a bound of ${formatDuration(MAX_DURATION_MS)} is every duration's, not written`)
    t.equal(loadsTo(key, `${max}ms`), String(max), `${where}: ${formatDuration(max)} is accepted`)
    t.match(loadsTo(key, `${max + 1}ms`), /^\(refused: /, `${where}: more than ${formatDuration(max)} is refused`)
    t.equal(loadsTo(key, null) === 'null', orNull !== undefined, `${where}: the row says null is ${orNull !== undefined ? 'accepted' : 'refused'}; the validator gives ${loadsTo(key, null)}`)
    if (rule !== undefined) t.ok([...KEYS].some((k) => rule.includes(k.split('.').pop()!)), `${where}: the rule (${rule}) names a key`)
  }
  t.ok(checked >= 20, `${checked} durations checked`)
  // the Durations section states every duration's bound, and names each key with its own
  const durations = section(read(KEY_TABLE), 'Durations') ?? ''
  t.match(durations, `\`${formatDuration(MAX_DURATION_MS)}\``, `the Durations section names ${formatDuration(MAX_DURATION_MS)}`)
  for (const key of bounded) t.match(durations, `\`${key}\``, `the Durations section names ${key}, whose bound is its own`)
})

t.test('there is one key table: no other Markdown file has rows of config keys', async (t) => {
  for (const file of markdown.filter((f) => f !== KEY_TABLE)) {
    const rows = keyRows(read(file)).filter((k) => KEYS.has(k))
    t.same(rows, [], `${file} has no key table rows (they belong in ${KEY_TABLE})`)
  }
})

t.test('every error code is documented with its status, and no other code', async (t) => {
  const doc = read(ERROR_TABLE)
  for (const [code, { status }] of Object.entries(ERRORS)) {
    t.match(doc, new RegExp(`^\\| \`${code}\` \\| ${status} \\|`, 'm'), `${code} ${status}`)
  }
  const documented = [...doc.matchAll(/^\| `(TETHER_[A-Z_]+)` \|/gm)].map((m) => m[1]!)
  for (const code of documented) t.ok(code in ERRORS, `${ERROR_TABLE}'s ${code} is in the catalogue`)
})

t.test('every metric is documented row for row as METRIC_DOCS declares it, and no other', async (t) => {
  const { METRIC_DOCS } = await import('../src/observability/metrics.js')
  const doc = read(METRIC_TABLE)
  for (const m of METRIC_DOCS) {
    const labels = m.labels.length > 0 ? m.labels.map((l) => `\`${l}\``).join(', ') : '–'
    const row = `| \`${m.name}\` | ${m.type} | ${labels} | ${m.help} |`
    t.ok(doc.split('\n').includes(row), `${m.name}: ${row}`)
  }
  const names = new Set<string>(METRIC_DOCS.map((m) => m.name))
  for (const [, name] of doc.matchAll(/^\| `(tether_[a-z_]+)` \|/gm)) t.ok(names.has(name!), `${METRIC_TABLE}'s ${name} exists`)
})

/** The fields of every `logger.info({ ... }, 'access')` line in src/, per call (read from the code's syntax tree). */
function accessLineFields(): { file: string; fields: string[] }[] {
  const out: { file: string; fields: string[] }[] = []
  for (const file of tracked.filter((f) => /^src\/.*\.ts$/.test(f))) {
    const text = read(file)
    if (!text.includes("'access'")) continue
    const visit = (node: ts.Node): void => {
      if (ts.isCallExpression(node) && node.arguments.length === 2) {
        const [fields, msg] = node.arguments
        if (msg !== undefined && ts.isStringLiteral(msg) && msg.text === 'access' && fields !== undefined && ts.isObjectLiteralExpression(fields)) {
          out.push({ file, fields: fields.properties.map((p) => p.name !== undefined && (ts.isIdentifier(p.name) || ts.isStringLiteral(p.name)) ? p.name.text : `(${p.getText()})`) })
        }
      }
      ts.forEachChild(node, visit)
    }
    visit(ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true))
  }
  return out
}

t.test("the access line's fields are documented in Metrics and logs, each with its meaning, and no other", async (t) => {
  const calls = accessLineFields()
  t.ok(calls.length >= 2, `access lines found in ${calls.map((c) => c.file).join(', ')}`)
  const logs = section(read(METRIC_TABLE), 'Logs') ?? ''
  const rows = [...logs.matchAll(/^\| `([a-z_]+)` \| ([^|]+) \|$/gm)].map((m) => ({ field: m[1]!, meaning: m[2]!.trim() }))
  const documented = new Set(rows.map((r) => r.field))
  const logged = new Set(calls.flatMap((c) => c.fields))
  for (const f of logged) t.ok(documented.has(f), `${METRIC_TABLE}'s Logs table documents the access line's ${f}`)
  for (const f of documented) t.ok(logged.has(f), `${METRIC_TABLE}'s Logs table's ${f} is a field of an access line`)
  for (const r of rows) t.ok(r.meaning.length > 10, `${r.field} has a meaning`)
  // the shorter line (fewer fields: a request refused before the request path) names each of its fields
  const from = logs.indexOf('A request refused before it reaches the request path gets a shorter line')
  const shorter = from < 0 ? '' : logs.slice(from).split('\n\n')[0]!
  t.ok(shorter, 'the Logs section describes the shorter line')
  const fewest = calls.reduce((a, b) => (b.fields.length < a.fields.length ? b : a))
  for (const f of fewest.fields) t.match(shorter, `\`${f}\``, `the shorter line's ${f} (${fewest.file}) is named`)
})

t.test("the README's two set-up commands are the package's scripts", async (t) => {
  const readme = read(README)
  t.match(readme, /npm ci && npm start/)
  t.match(readme, /npm test/)
  const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string> }
  t.ok(pkg.scripts['start'], 'start script')
  t.ok(pkg.scripts['test'], 'test script')
  t.ok(pkg.scripts['tour'], 'tour script (the Quick start names `npm run tour`)')
})

t.test('the Debian packages the README and Development name are the ones npm test and CI install', async (t) => {
  // scripts/test.sh: `need+=(redis-tools)` for each missing one; .ci/run: PKGS="..."
  const needed = [...read('scripts/test.sh').matchAll(/need\+=\(([a-z0-9-]+)\)/g)].map((m) => m[1]!).sort()
  t.ok(needed.length >= 8, `scripts/test.sh installs ${needed.join(' ')}`)
  const ci = /^PKGS="([^"]+)"/m.exec(read('.ci/run'))?.[1]?.split(' ').sort() ?? []
  t.same(ci, needed, '.ci/run installs the same packages')
  const readme = /apt-installs ([^)]+) if missing/.exec(read(README))?.[1]?.split(/, | and /).sort() ?? []
  t.same(readme, needed, "the README's Quick start names them")
  const dev = /The tests need Debian's ([\s\S]+?): run as root/.exec(read('docs/development.md'))?.[1] ?? ''
  const devNames = [...dev.replace(/\([^)]*\)/g, '').matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1]!).sort()
  t.same(devNames, needed, 'docs/development.md names them')
})

t.test('the README is a front door: the failover tour, docker run, limits, and a map of every docs page', async (t) => {
  const readme = read(README)
  t.match(readme, /^kill -9 \$\(curl -s -b \/tmp\/tether\.jar http:\/\/127\.0\.0\.1:8080\/pid\)$/m, 'the Quick start kills the user\'s replica')
  t.match(readme, /`npm run tour`/, 'the Quick start names the tour')
  t.match(readme, /^## Limits$/m, 'a Limits section')
  t.match(readme, /^## Coming from /m, 'a Coming from section')
  // docker run mounts the config where the image reads it and publishes the port it exposes
  const dockerfile = read('Dockerfile')
  const configPath = /^CMD \["--config", "([^"]+)"\]/m.exec(dockerfile)?.[1]
  t.ok(configPath, 'the Dockerfile names its config file')
  t.match(readme, new RegExp(`docker run [^\\n]*-v "[^"]+:${configPath}:ro"`), `docker run mounts ${configPath}`)
  t.match(readme, /docker run [^\n]*-p 8080:8080/, 'docker run publishes the proxy port')
  t.match(dockerfile, /^EXPOSE 8080\b/m)
  const docsPages = tracked.filter((f) => /^docs\/[^/]+\.md$/.test(f))
  const linked = new Set(links(splitFences(readme).prose).map((l) => l.target.split('#')[0]))
  for (const page of docsPages) t.ok(linked.has(page), `the README links ${page}`)
})

t.test('every relative link in every tracked Markdown file resolves, anchors included', async (t) => {
  const anchorsOf = new Map<string, Set<string>>()
  const anchorsIn = (file: string): Set<string> => {
    if (!anchorsOf.has(file)) anchorsOf.set(file, anchors(splitFences(read(file)).prose))
    return anchorsOf.get(file)!
  }
  const dirs = new Set(tracked.flatMap((f) => f.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))))
  let checked = 0
  for (const file of markdown) {
    for (const { target, line } of links(splitFences(read(file)).prose)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('//')) continue // http:, mailto:, ...
      checked++
      const hash = target.indexOf('#')
      const pathPart = decodeURIComponent(hash < 0 ? target : target.slice(0, hash))
      const anchor = hash < 0 ? null : decodeURIComponent(target.slice(hash + 1))
      const resolved = pathPart === '' ? file
        : posix.normalize(pathPart.startsWith('/') ? pathPart.slice(1) : posix.join(dirname(file), pathPart)).replace(/\/$/, '')
      const where = `${file}:${line}: ${target}`
      if (!trackedSet.has(resolved) && !dirs.has(resolved)) {
        t.fail(`${where}: no tracked file or directory ${resolved}`)
        continue
      }
      if (anchor !== null && resolved.endsWith('.md')) {
        t.ok(anchorsIn(resolved).has(anchor), `${where}: ${resolved} has a heading #${anchor}`)
      }
    }
  }
  t.ok(checked > 50, `links were found and checked (${checked})`)
})

/** Directories of the repository that docs name files in, from its root. */
const PATH = /(?<![\w./$-])((?:src|test|scripts|bench|examples|deploy|docs|config|\.ci)\/[\w.*/-]*)/g

/** Whether a path named in the docs is a tracked file or directory, or a glob matching one, or under a git-ignored directory. */
function pathExists(path: string, dirs: Set<string>, ignored: readonly string[]): boolean {
  const p = path.replace(/[.,:;]+$/, '').replace(/\/$/, '')
  if (ignored.some((d) => `${p}/`.startsWith(d))) return true
  if (!p.includes('*')) return trackedSet.has(p) || dirs.has(p)
  const glob = new RegExp(`^${p.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}$`)
  return tracked.some((f) => glob.test(f)) || [...dirs].some((d) => glob.test(d))
}

t.test('every repository path a tracked Markdown file names exists (src/, test/, scripts/, bench/, ...)', async (t) => {
  const dirs = new Set(tracked.flatMap((f) => f.split('/').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('/'))))
  const ignored = read('.gitignore').split('\n').filter((l) => l.endsWith('/') && l.includes('/', 0)).map((l) => l.replace(/^\//, ''))
  let checked = 0
  const srcNames = new Set(tracked.filter((f) => f.startsWith('src/')).map((f) => f.split('/').pop()!))
  for (const file of markdown) {
    const { prose } = splitFences(read(file))
    // docs/architecture.md names source files from src/ (`proxy/forward.ts`, `placement/*`, and
    // after a directory just its files' names: `redis/*` (... `connection.ts` ...)); test/ from the root
    if (file === 'docs/architecture.md') {
      for (const { code, line } of codeSpans(prose)) {
        const where = `${file}:${line}`
        if (/^(test|scripts|bench|docs)\//.test(code)) t.ok(pathExists(code, dirs, ignored), `${where}: ${code} exists`)
        else if (/^[a-z-]+(\/[a-z-]+)*(\.c?ts|\/\*)$/.test(code) && code.includes('/')) t.ok(pathExists(`src/${code}`, dirs, ignored), `${where}: src/${code} exists`)
        else if (/^[a-z-]+\.c?ts$/.test(code)) t.ok(srcNames.has(code), `${where}: ${code} is a file in src/`)
        else continue
        checked++
      }
      continue
    }
    // prose, and `text` blocks (the source layout in docs/development.md); not commands or configs
    const texts = splitFences(read(file)).fences.filter((f) => f.info === 'text')
      .flatMap((f) => f.body.split('\n').map((text, i) => ({ n: f.line + 1 + i, text })))
    for (const { n, text } of [...prose, ...texts]) {
      for (const m of text.matchAll(PATH)) {
        checked++
        t.ok(pathExists(m[1]!, dirs, ignored), `${file}:${n}: ${m[1]} exists`)
      }
    }
  }
  t.ok(checked > 200, `paths were found and checked (${checked})`)
})

t.test('a section is referred to by a link, not a quoted title; a link named as a section of its page goes to that section', async (t) => {
  let checked = 0
  for (const file of markdown) {
    const { prose } = splitFences(read(file))
    for (const { n, text } of prose) {
      for (const m of text.replace(/`[^`]*`/g, 'code').matchAll(/\b[Ss]ee "([^"]+)"/g)) t.fail(`${file}:${n}: see "${m[1]}": write it as a link to its section`)
      // [Title](page.md#anchor) where Title is itself a heading (or <a id>) of page.md
      for (const m of text.matchAll(/\[([^\]]+)\]\(([^()#\s]*\.md|)#([^()\s]+)\)/g)) {
        const [, title, page, anchor] = m as unknown as [string, string, string, string]
        const target = page === '' ? file : posix.normalize(posix.join(dirname(file), page))
        if (!trackedSet.has(target)) continue // the link check says so
        const named = slug(title)
        const { prose: targetProse } = splitFences(read(target))
        // a page's own title (its level-1 heading) names the page: [Sticky routing](sticky-routing.md#keys)
        if (!anchors(targetProse).has(named) || headings(targetProse).some((h) => h.level === 1 && slug(h.text) === named)) continue
        checked++
        t.equal(anchor, named, `${file}:${n}: [${title}] goes to its section #${named} of ${target}`)
      }
    }
  }
  t.ok(checked > 20, `links named as a section were checked (${checked})`)
})

t.test("every src/ file is named in docs/architecture.md's layer table", async (t) => {
  const rows = (section(read('docs/architecture.md'), 'Layers') ?? '').split('\n').filter((l) => /^\| \d /.test(l))
  t.equal(rows.length, 6, 'six layers')
  const spans = rows.map((row) => [...row.matchAll(/`([^`]+)`/g)].map((m) => m[1]!))
  for (const file of tracked.filter((f) => f.startsWith('src/')).map((f) => f.slice('src/'.length))) {
    const dir = posix.dirname(file)
    const base = posix.basename(file)
    // as its path, as `dir/*`, or by its name in a row that names its directory (`redis/*` (... `connection.ts` ...))
    const named = spans.some((row) => row.includes(file) || row.includes(`${dir}/*`)
      || (dir !== '.' && row.includes(base) && row.some((sp) => sp.startsWith(`${dir}/`))))
    t.ok(named, `docs/architecture.md's layer table names src/${file}`)
  }
  // and docs/development.md's layout block has a line for every directory of src/
  const layout = splitFences(read('docs/development.md')).fences.find((f) => f.info === 'text' && f.body.startsWith('src/'))?.body ?? ''
  const srcDirs = new Set(tracked.filter((f) => /^src\/[^/]+\//.test(f)).map((f) => f.split('/')[1]!))
  for (const d of srcDirs) t.match(layout, new RegExp(`^src/${d}/ `, 'm'), `docs/development.md's layout names src/${d}/`)
})

/**
 * The config key paths written in code spans (the rule is in docs/development.md): the whole
 * span is dotted lower-case snake_case names (list items as `[]` or `[0]`) and the first name is
 * a config section. From a top-level section the path must exist as written; from a lower one it
 * must be the end of an existing path (`client_ip.trusted_proxies`).
 */
function isKeyPath(span: string): boolean {
  return /^[a-z][a-z0-9_]*(\[\d*\])?(\.[a-z][a-z0-9_]*(\[\d*\])?)+$/.test(span) && SECTIONS.has(span.split('.')[0]!.replace(/\[\d+\]/, '[]'))
}

/** Why a code span that is a key path names no config key, or null (also for spans that are no key path). */
function keyPathProblem(span: string): string | null {
  if (!isKeyPath(span) || /\.(conf|ya?ml|json|md|ts|js|mjs|php)$/.test(span)) return null // a file name
  const path = span.replace(/\[\d+\]/g, '[]')
  if (TOP_SECTIONS.has(path.split(/[.[]/)[0]!)) return PATHS.has(path) ? null : 'no such key'
  return [...PATHS].some((p) => p.endsWith(`.${path}`)) ? null : 'no key path ends like this'
}

t.test('the key-path rule reads config paths and leaves other dotted names alone', async (t) => {
  const cases: [string, string | null][] = [
    ['affinity.key', null],
    ['state.redis.url', null],
    ['upstreams[].id', null],
    ['upstreams[1].url', null],
    ['health.active.expected_status', null],
    ['client_ip.trusted_proxies', null],
    ['redis.key_prefix', null],
    ['affinity.cookies.name', 'no such key'],
    ['state.redis.uri', 'no such key'],
    ['cookie.secrets', 'no key path ends like this'],
    ['proxy.yaml', null],
    ['redis.conf', null], // a file name, though `redis` is a section
    ['connect.sid', null], // `connect` is a key but not a section
    ['session.lifetime', null],
    ['key: app_cookie', null],
    ['affinity', null], // one name: not a path
  ]
  for (const [span, problem] of cases) t.equal(keyPathProblem(span), problem, span)
})

t.test('every config key path in a code span of a tracked Markdown file exists', async (t) => {
  let checked = 0
  for (const file of markdown) {
    for (const { code, line } of codeSpans(splitFences(read(file)).prose)) {
      if (!isKeyPath(code)) continue
      checked++
      const problem = keyPathProblem(code)
      if (problem !== null) t.fail(`${file}:${line}: \`${code}\`: ${problem}`)
    }
  }
  t.ok(checked > 100, `key paths were found and checked (${checked})`)
})

/** What `tether check` would print on stderr for a config ('' when it is valid). */
function problems(load: () => unknown): string {
  try {
    load()
    return ''
  } catch (err) {
    return (err as Error).message
  }
}

/** An env giving every `${NAME}` without a default a placeholder (a valid cookie secret too). */
function placeholders(text: string): Record<string, string> {
  return Object.fromEntries([...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((m) => [m[1]!, 'docs-test-placeholder-0123456789']))
}

t.test('every YAML config under config/ and examples/ passes tether check', async (t) => {
  const configs = tracked.filter((f) => /^(config|examples)\/.*\.ya?ml$/.test(f))
  t.ok(configs.length >= 5, `configs found: ${configs.join(', ')}`)
  for (const file of configs) {
    // `tether check` is loadConfigFile with the process's env, then a summary line
    t.equal(problems(() => loadConfigFile(join(ROOT, file), placeholders(read(file)))), '', file)
  }
})

/** A `yaml` fence whose top-level keys are all config sections: a Tether config (or part of one). */
function isConfigFence(fence: Fence): boolean {
  if (!/^ya?ml$/.test(fence.info)) return false
  const doc = parseDocument(fence.body)
  const top = doc.contents !== null && typeof doc.contents === 'object' && 'items' in doc.contents
    ? (doc.toJS() as Record<string, unknown> | null) : null
  return top !== null && !Array.isArray(top) && Object.keys(top).length > 0 && Object.keys(top).every((k) => TOP_SECTIONS.has(k))
}

t.test('every YAML config block in a tracked Markdown file passes tether check', async (t) => {
  let checked = 0
  for (const file of markdown) {
    for (const fence of splitFences(read(file)).fences.filter(isConfigFence)) {
      checked++
      const top = Object.keys(parseDocument(fence.body).toJS() as object)
      // a snippet shows a few sections; give it the one required thing it may leave out
      const text = top.includes('upstreams') || top.includes('discovery')
        ? fence.body
        : `${fence.body}\nupstreams: [{ id: placeholder, url: "http://127.0.0.1:9" }]\n`
      t.equal(problems(() => parseConfig(text, `${file}:${fence.line}`, placeholders(text))), '', `${file}:${fence.line}`)
    }
  }
  t.ok(checked >= 3, `config blocks were found and checked (${checked})`)
})
