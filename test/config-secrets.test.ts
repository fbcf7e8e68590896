// The secret keys (admin.token, affinity.cookie.secret, log.session_secret): an empty value,
// written or from an empty environment variable, is a config error naming the key and line,
// never "no secret"; only absence or an explicit null leaves one unset. And the start-up
// warning for a tokenless admin listener that is not on loopback.
import t from 'tap'
import { FILE, issuesOf, yaml } from './fixtures/config-issues.js'
import { parseConfig } from '../src/config/index.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { testConfig } from './fixtures/upstream.js'

const UPSTREAMS = ['upstreams:', '  - { id: a, url: "http://127.0.0.1:9001" }']
const SECRET = 'a-secret-of-at-least-16-bytes'


t.test('an admin.token from an empty variable is an error naming the key, its line and the variable', async (t) => {
  const text = yaml('admin:', '  listen: { host: 0.0.0.0 }', '  token: "${TETHER_ADMIN_TOKEN}"', ...UPSTREAMS)
  t.strictSame(issuesOf(text, { TETHER_ADMIN_TOKEN: '' }), [
    `${FILE}:3:10 admin.token: is empty (from \${TETHER_ADMIN_TOKEN}): set it, or remove the key for no token`,
  ])
  t.strictSame(issuesOf(text, { TETHER_ADMIN_TOKEN: ' \n' }), [
    `${FILE}:3:10 admin.token: is empty (from \${TETHER_ADMIN_TOKEN}): set it, or remove the key for no token`,
  ], 'blank is empty too')
  t.equal(parseConfig(text, FILE, { TETHER_ADMIN_TOKEN: 't0k' }).admin.token, 't0k')
})

t.test('an affinity.cookie.secret from an empty variable is an error, alone or in a rotation list', async (t) => {
  const one = yaml(...UPSTREAMS, 'affinity:', '  cookie:', '    secret: ${TETHER_SECRET}')
  t.strictSame(issuesOf(one, { TETHER_SECRET: '' }), [
    `${FILE}:5:13 affinity.cookie.secret: is empty (from \${TETHER_SECRET}): set it, or remove the key for a random per-process secret`,
  ])
  const two = yaml(...UPSTREAMS, 'affinity:', '  cookie:', '    secret: ["${NEW}", "${OLD}"]')
  t.strictSame(issuesOf(two, { NEW: SECRET, OLD: '' }), [
    `${FILE}:5:24 affinity.cookie.secret[1]: is empty (from \${OLD}): set it, or remove it from the list`,
  ])
  t.strictSame(parseConfig(two, FILE, { NEW: SECRET, OLD: `${SECRET}-old` }).affinity.cookie.secret, [SECRET, `${SECRET}-old`])
})

t.test('a secret from an unset variable is told to export it, never to write a default in the file', async (t) => {
  const exportIt = (name: string) => `environment variable ${name} is not set: export it (from a Kubernetes Secret, or \`export ${name}=$(openssl rand -hex 32)\`); a default written in the file would be public`
  t.strictSame(issuesOf(yaml(...UPSTREAMS, 'affinity:', '  cookie:', '    secret: ${TETHER_SECRET}'), {}), [
    `${FILE}:5:13 affinity.cookie.secret: ${exportIt('TETHER_SECRET')}`,
  ])
  t.strictSame(issuesOf(yaml('admin:', '  token: "${TETHER_ADMIN_TOKEN}"', ...UPSTREAMS), {}), [
    `${FILE}:2:10 admin.token: ${exportIt('TETHER_ADMIN_TOKEN')}`,
  ])
  t.strictSame(issuesOf(yaml(...UPSTREAMS, 'affinity:', '  cookie:', '    secret: ["${NEW}", "${OLD}"]'), { NEW: SECRET }), [
    `${FILE}:5:24 affinity.cookie.secret[1]: ${exportIt('OLD')}`,
  ], 'in a rotation list too')
  t.strictSame(issuesOf(yaml('upstreams:', '  - { id: "${ID}", url: "http://127.0.0.1:9001" }'), {}), [
    `${FILE}:2:11 upstreams[0].id: environment variable ID is not set (write \${ID:-default} to give a default)`,
  ], 'a key that is no secret keeps the default hint')
})

t.test('a log.session_secret from an empty variable is an error', async (t) => {
  const text = yaml(...UPSTREAMS, 'log:', '  session_secret: ${LOG_SECRET}')
  t.strictSame(issuesOf(text, { LOG_SECRET: '' }), [
    `${FILE}:4:19 log.session_secret: is empty (from \${LOG_SECRET}): set it, or remove the key for a random secret per process`,
  ])
})

t.test('a secret written empty is an error too', async (t) => {
  t.strictSame(issuesOf(yaml('admin:', '  token: ""', ...UPSTREAMS), {}), [
    `${FILE}:2:10 admin.token: is empty: set it, or remove the key for no token`,
  ])
  t.strictSame(issuesOf(yaml(...UPSTREAMS, 'affinity: { cookie: { secret: " " } }'), {}), [
    `${FILE}:3:31 affinity.cookie.secret: is empty: set it, or remove the key for a random per-process secret`,
  ])
})

t.test('absence or an explicit null leaves a secret unset', async (t) => {
  const cases: [string, Record<string, string>][] = [
    ['null', {}],
    ['', {}], // `token:` with nothing: YAML null
    ['~', {}],
    ['${TOKEN:-null}', {}],
    ['${TOKEN:-null}', { TOKEN: '' }],
    ['${TOKEN}', { TOKEN: 'null' }],
    ['${TOKEN:-}', {}], // an empty default written in the file: the key may be left unset
  ]
  for (const [value, env] of cases) {
    const c = parseConfig(yaml('admin:', `  token: ${value}`, 'affinity:', '  cookie:', `    secret: ${value}`, 'log:', `  session_secret: ${value}`, ...UPSTREAMS), FILE, env)
    t.equal(c.admin.token, null, `admin.token ${value} ${JSON.stringify(env)}`)
    t.equal(c.affinity.cookie.secret, null, `affinity.cookie.secret ${value}`)
    t.equal(c.log.session_secret, null, `log.session_secret ${value}`)
  }
  t.equal(parseConfig(yaml(...UPSTREAMS), FILE, {}).admin.token, null, 'absent')
})

t.test('other nullable keys keep reading an empty variable as null', async (t) => {
  const c = parseConfig(yaml(...UPSTREAMS, 'limits:', '  max_body_bytes: ${MAX_BODY}', 'affinity:', '  cookie:', '    domain: ${DOMAIN}'), FILE, { MAX_BODY: '', DOMAIN: '' })
  t.equal(c.limits.max_body_bytes, null)
  t.equal(c.affinity.cookie.domain, null)
})

t.test('a tokenless admin listener off loopback is warned about once at start, naming the keys', async (t) => {
  const warnings = async (admin: { host: string; token: string | null }): Promise<Record<string, unknown>[]> => {
    const logs = new LogCapture()
    const tether = await startTether(testConfig([{ id: 'a', url: 'http://127.0.0.1:9' }], {
      admin: { listen: { host: admin.host, port: 0 }, token: admin.token },
    }), { logger: createLogger('warn', logs) })
    await tether.close(0)
    return logs.records.filter((r) => String(r['msg']).startsWith('admin.token is not set'))
  }
  const open = await warnings({ host: '0.0.0.0', token: null })
  t.equal(open.length, 1)
  t.equal(open[0]?.['level'], 40)
  t.equal(open[0]?.['msg'], 'admin.token is not set and admin.listen.host (0.0.0.0) is not loopback: every admin route (drain, sessions, upstreams) is open to anyone who reaches that address; set admin.token')
  t.same(await warnings({ host: '0.0.0.0', token: 't0k' }), [], 'a token: no warning')
  t.same(await warnings({ host: '127.0.0.1', token: null }), [], 'loopback: no warning')
})

t.test('warnOpenAdmin: the warning a primary gives too (with workers it owns the admin listener)', async (t) => {
  const { warnOpenAdmin } = await import('../src/admin/bearer-token.js')
  const said: unknown[][] = []
  const logger = { warn: (...a: unknown[]) => void said.push(a) }
  for (const host of ['127.0.0.1', '127.8.9.10', '::1', 'localhost', 'LOCALHOST']) warnOpenAdmin({ admin: { listen: { host, port: 0 }, token: null, allowed_hosts: [], readiness: { require_upstream: 'startup' } } }, logger)
  t.same(said, [], 'loopback: none')
  warnOpenAdmin({ admin: { listen: { host: '::', port: 0 }, token: null, allowed_hosts: [], readiness: { require_upstream: 'startup' } } }, logger)
  t.equal(said.length, 1, 'any address: one')
})

t.test('an admin.token no Authorization header can carry is an error naming the key, never its value', async (t) => {
  // a Kubernetes Secret made from a file (`echo t0k > token`) holds a trailing newline: such a
  // token was accepted, and every request was then refused 401 "wrong admin token" (a header
  // value carries no newline, and its surrounding spaces are not part of it)
  const text = yaml('admin:', '  token: "${TETHER_ADMIN_TOKEN}"', ...UPSTREAMS)
  const edge = `${FILE}:2:10 admin.token: starts or ends with whitespace (a newline at its end: a Secret made from a file, or a | block, where |- keeps none), which an Authorization header cannot carry: remove it`
  const control = `${FILE}:2:10 admin.token: holds a control character (U+0000-U+001F or U+007F), which an Authorization header cannot carry`
  const cases: [string, string][] = [['t0k-secret\n', edge], ['t0k-secret\r\n', edge], [' t0k-secret', edge], ['t0k-secret\t', edge], ['t0k\u0000secret', control], ['t0k\nsecret', control]]
  for (const [value, issue] of cases) {
    const issues = issuesOf(text, { TETHER_ADMIN_TOKEN: value })
    t.strictSame(issues, [issue], JSON.stringify(value))
    t.notOk(issues.join('\n').includes('t0k'), 'the value is not shown')
  }
  t.strictSame(issuesOf(yaml('admin:', '  token: "t0k \\n"', ...UPSTREAMS), {}), [`${FILE}:2:10 admin.token: starts or ends with whitespace (a newline at its end: a Secret made from a file, or a | block, where |- keeps none), which an Authorization header cannot carry: remove it`], 'written in the file too')
  t.strictSame(issuesOf(yaml('admin:', '  token: |', '    t0k-secret', ...UPSTREAMS), {}), [`${FILE}:2:10 admin.token: ${edge.slice(`${FILE}:2:10 admin.token: `.length)}`], 'a | block keeps its newline')
  t.equal(parseConfig(yaml('admin:', '  token: |-', '    t0k-secret', ...UPSTREAMS), FILE, {}).admin.token, 't0k-secret', 'a |- block keeps none')
  for (const ok of ['t0k secret', 't0k\tsecret', 'tökén', 'a=b/c+d~']) t.equal(parseConfig(text, FILE, { TETHER_ADMIN_TOKEN: ok }).admin.token, ok, `${JSON.stringify(ok)} is kept as it is`)
  t.equal(parseConfig(yaml(...UPSTREAMS, 'log:', '  session_secret: "${S}"'), FILE, { S: `${SECRET}\n` }).log.session_secret, `${SECRET}\n`, 'other secrets (never sent in a header) keep theirs')
})
