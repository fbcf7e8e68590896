// Specification of ${ENV} substitution in config values and of the duration syntax.
import t from 'tap'
import { FILE, issuesOf, yaml } from './fixtures/config-issues.js'
import { fileURLToPath } from 'node:url'
import { loadConfigFile, parseConfig, parseDuration } from '../src/config/index.js'


/** A config whose single upstream has `id: <idValue>` at line 2, column 9. */
const withId = (idValue: string): string => yaml('upstreams:', `  - id: ${idValue}`, '    url: http://127.0.0.1:9001')
/** A valid config with `admin.token: <tokenValue>` at line 2. */
const withToken = (tokenValue: string): string => yaml('admin:', `  token: ${tokenValue}`, ...withId('a').split('\n'))


const substitutions: { name: string; value: string; env: Record<string, string>; token: string }[] = [
  { name: 'a whole value', value: '${ID}', env: { ID: 'app-1' }, token: 'app-1' },
  { name: 'part of a value', value: 'app-${N}.x', env: { N: '7' }, token: 'app-7.x' },
  { name: 'two references', value: '${A}${B}', env: { A: 'x', B: 'y' }, token: 'xy' },
  { name: 'a default when unset', value: '${ID:-fallback}', env: {}, token: 'fallback' },
  { name: 'a default when empty', value: '${ID:-fallback}', env: { ID: '' }, token: 'fallback' },
  { name: 'the variable over its default', value: '${ID:-fallback}', env: { ID: 'set' }, token: 'set' },
  { name: 'inside double quotes', value: '"${ID}"', env: { ID: 'q' }, token: 'q' },
  { name: 'inside single quotes', value: "'${ID}'", env: { ID: 'q' }, token: 'q' },
  { name: 'a lone $ untouched', value: 'a$b', env: {}, token: 'a$b' },
]

for (const c of substitutions) {
  t.test(`substitutes ${c.name}`, async (t) => {
    t.equal(parseConfig(withToken(c.value), FILE, c.env).admin.token, c.token)
  })
}

t.test('$${ is a literal ${ and is not substituted', async (t) => {
  const config = parseConfig(withToken('$${TOKEN} and $${X:-y}'), FILE, { TOKEN: 'x' })
  t.equal(config.admin.token, '${TOKEN} and ${X:-y}')
})

t.test('a substituted value that looks like YAML stays one string', async (t) => {
  for (const token of ['{a: 1}', '[1, 2]', 'x log: {level: debug}', 'true', '123', '*alias', '"quoted"', '# not a comment']) {
    const config = parseConfig(withToken('${TOKEN}'), FILE, { TOKEN: token })
    t.equal(config.admin.token, token, JSON.stringify(token))
    t.equal(config.log.level, 'info')
  }
  // (admin.token refuses a newline, which no Authorization header carries: a secret that takes any string)
  const config = parseConfig(yaml(...withId('a').split('\n'), 'log:', '  session_secret: ${SECRET}'), FILE, { SECRET: 'x\nlog: {level: debug}' })
  t.equal(config.log.session_secret, 'x\nlog: {level: debug}')
  t.equal(config.log.level, 'info')
})

t.test('an environment string fills typed keys: integers, booleans, durations and null', async (t) => {
  const text = yaml(
    'listen:',
    '  port: ${PORT}',
    'limits:',
    '  max_body_bytes: ${MAX_BODY:-null}',
    'forwarding:',
    '  x_forwarded: ${XFF}',
    'timeouts:',
    '  connect: ${CONNECT}',
    'admin:',
    '  token: ${ADMIN_TOKEN:-}',
    ...withId('a').split('\n'),
  )
  const config = parseConfig(text, FILE, { PORT: '8081', XFF: 'false', CONNECT: '250ms' })
  t.equal(config.listen.port, 8081)
  t.equal(config.limits.max_body_bytes, null)
  t.equal(config.forwarding.x_forwarded, false)
  t.equal(config.timeouts.connect, 250)
  t.equal(config.admin.token, null, 'an empty token from the environment means no token')
  t.strictSame(issuesOf(text, { PORT: 'eighty', XFF: 'yes', CONNECT: '1' }), [
    `${FILE}:2:9 listen.port: expected an integer, got "eighty"`,
    `${FILE}:6:16 forwarding.x_forwarded: expected a boolean, got "yes"`,
  ])
})

t.test('an unset variable without default is an error naming it, with line and column', async (t) => {
  t.strictSame(issuesOf(withId('app-${SUFFIX}'), {}), [
    `${FILE}:2:9 upstreams[0].id: environment variable SUFFIX is not set (write \${SUFFIX:-default} to give a default)`,
  ])
  t.strictSame(issuesOf(withId('${A}-${B}'), { A: 'x' }), [
    `${FILE}:2:9 upstreams[0].id: environment variable B is not set (write \${B:-default} to give a default)`,
  ])
})

t.test('malformed references are errors', async (t) => {
  const hint = 'expected ${NAME} or ${NAME:-default} (write $${ for a literal ${)'
  t.strictSame(issuesOf(withId('"${}"'), {}), [`${FILE}:2:9 upstreams[0].id: invalid variable reference "\${}": ${hint}`])
  t.strictSame(issuesOf(withId('"${1X}"'), {}), [`${FILE}:2:9 upstreams[0].id: invalid variable reference "\${1X}": ${hint}`])
  t.strictSame(issuesOf(withId('"a${OPEN"'), {}), [`${FILE}:2:9 upstreams[0].id: invalid variable reference "\${OPEN": ${hint}`])
  // (review s65 r1) in a secret, what follows "${" is the secret: named by its place only
  t.strictSame(issuesOf(withToken('"x${hunter2"'), {}), [`${FILE}:2:10 admin.token: invalid variable reference at character 2 of the value (not shown: a secret's): ${hint}`])
  t.strictSame(issuesOf(withToken('"${hunter 2}"'), {}), [`${FILE}:2:10 admin.token: invalid variable reference at character 1 of the value (not shown: a secret's): ${hint}`])
  // and before an @, in a URL's password (any key: state.redis.url, an upstream's url)
  t.strictSame(issuesOf(yaml('upstreams: [{ id: a, url: "http://u:x${hunter2@127.0.0.1:9001" }]')), [`${FILE}:1:27 upstreams[0].url: invalid variable reference at character 11 of the value (not shown: it may hold a password): ${hint}`])
})

t.test('a reference in a default is an error, never a literal or a stray brace (references do not nest)', async (t) => {
  // `${A:-${B}}` (nested, as docker compose reads it) ended the reference at the first `}`:
  // with A set the value was A's plus "}", unset it was the text "${B}" (a secret known to anyone who reads the file)
  const issue = `${FILE}:2:10 admin.token: the default of \${ADMIN_TOKEN:-...} holds a \${: references do not nest (write one variable, or a plain default)`
  for (const env of [{}, { ADMIN_TOKEN: 't0k' }, { OLD_TOKEN: 'old' }, { ADMIN_TOKEN: 't0k', OLD_TOKEN: 'old' }]) {
    t.strictSame(issuesOf(withToken('"${ADMIN_TOKEN:-${OLD_TOKEN}}"'), env), [issue], JSON.stringify(env))
  }
  t.strictSame(issuesOf(withToken('"${ADMIN_TOKEN:-${OLD_TOKEN:-x}}"'), {}), [issue], 'with a default of its own')
  t.strictSame(issuesOf(withToken('"${ADMIN_TOKEN:-a$${b}}"'), {}), [issue], 'an escaped one too (its } would end the reference)')
  t.equal(parseConfig(withToken('"${ADMIN_TOKEN:-$x}-$${y}"'), FILE, {}).admin.token, '$x-${y}', 'a $ alone in a default, and $${ outside one, stay as they are')
})

t.test("a secret written as a shell's $NAME or Kubernetes' $(NAME) is refused (it would be the secret's text), not shown", async (t) => {
  const MSG = "is a variable reference of another syntax ($NAME or $(NAME)), which Tether would take as the secret's text: write ${NAME} to read the variable (a secret that really is this text: put it in a variable and write ${NAME}; the value is not shown)"
  const secrets = (secret: string, password: string): string => yaml(
    'upstreams: [{ id: a, url: "http://127.0.0.1:9001" }]',
    `affinity: { cookie: { secret: "${secret}" } }`,
    `state: { redis: { password: "${password}" } }`,
  )
  // upper case (a variable's usual name) or a name set in the environment: a reference by mistake
  t.strictSame(issuesOf(secrets('$TETHER_SECRET_FOR_ALL', '$(REDIS_PASSWORD)')), [`${FILE}:2:31 affinity.cookie.secret: ${MSG}`, `${FILE}:3:29 state.redis.password: ${MSG}`])
  t.strictSame(issuesOf(withToken('"$admin_token"'), { admin_token: 'x' }), [`${FILE}:2:10 admin.token: ${MSG}`])
  // a password that only starts with $, a lower-case name nothing sets, or a generated one
  // (upper case and digits, no underscore: not how variables are named) is a password
  t.strictSame(issuesOf(secrets('$ecret-0123456789abcdef', '$pw')), [])
  t.strictSame(issuesOf(secrets('$X7Q9K2M4X7Q9K2M4Z', '$(X7Q9K2M4)')), [])
  // a one-word name (no digits) is a variable's, set or not
  t.strictSame(issuesOf(secrets('$TETHERCOOKIESECRET', '$PASSWORD')), [`${FILE}:2:31 affinity.cookie.secret: ${MSG}`, `${FILE}:3:29 state.redis.password: ${MSG}`])
  t.strictSame(issuesOf(withToken('"$(TOKEN)"')), [`${FILE}:2:10 admin.token: ${MSG}`])
  t.strictSame(issuesOf(secrets('$X7Q9K2M4X7Q9K2M4Z', '$X7Q9K2M4'), { X7Q9K2M4: 'set' }), [`${FILE}:3:29 state.redis.password: ${MSG}`], 'unless a variable of that name is set')
  t.strictSame(issuesOf(withToken('"$admin_token"')), [])
  // the braces Tether reads
  t.strictSame(issuesOf(secrets('${S}', '${P}'), { S: '0123456789abcdef', P: 'p' }), [])
})

t.test('comments and keys are not substituted', async (t) => {
  const text = yaml('# ${NOT_SET} here', ...withId('a').split('\n'))
  t.equal(parseConfig(text, FILE, {}).upstreams[0]?.id, 'a')
  t.strictSame(issuesOf(yaml('${KEY}: 1', ...withId('a').split('\n')), { KEY: 'log' }), [
    `${FILE}:1:1 \${KEY}: unknown key (expected one of: listen, admin, upstreams, affinity, timeouts, limits, forwarding, log, health, retries, discovery, shutdown, state, websocket, workers)`,
  ])
})

t.test('loadConfigFile substitutes from the env it is given', async (t) => {
  const path = fileURLToPath(new URL('./fixtures/config/env.yaml', import.meta.url))
  const config = loadConfigFile(path, { UPSTREAM_HOST: '10.0.0.5', ADMIN_TOKEN: 't0k' })
  t.equal(config.listen.port, 8080)
  t.equal(config.admin.token, 't0k')
  t.equal(config.upstreams[0]?.url, 'http://10.0.0.5:9001')
  t.throws(() => loadConfigFile(path, { ADMIN_TOKEN: 't' }), {
    name: 'ConfigError',
    issues: [`${path}:8:10 upstreams[0].url: environment variable UPSTREAM_HOST is not set (write \${UPSTREAM_HOST:-default} to give a default)`],
  })
})

const durations: [input: unknown, ms: number][] = [
  ['500ms', 500],
  ['0ms', 0],
  ['5s', 5_000],
  ['1.5s', 1_500],
  ['3m', 180_000],
  ['3h', 10_800_000],
  ['1d', 86_400_000],
  ['1.5d', 129_600_000],
  ['2w', 1_209_600_000],
  ['0.5ms', 1],
  [0, 0],
  [2, 2_000],
  [0.25, 250],
  ['30', 30_000],
  ['2.5', 2_500],
]

t.test('parseDuration reads units and plain seconds into milliseconds', async (t) => {
  for (const [input, ms] of durations) t.equal(parseDuration(input), ms, JSON.stringify(input))
})

const badDurations: [input: unknown, got: string][] = [
  ['5x', '"5x"'],
  ['1D', '"1D"'],
  ['1M', '"1M"'],
  ['1y', '"1y"'],
  ['1W', '"1W"'],
  ['5 s', '"5 s"'],
  ['5S', '"5S"'],
  ['-1s', '"-1s"'],
  ['', '""'],
  ['1h30m', '"1h30m"'],
  [-1, '-1'],
  [Number.POSITIVE_INFINITY, 'Infinity'],
  [Number.NaN, 'NaN'],
  [true, 'true'],
  [null, 'null'],
  [{}, 'a map'],
]

t.test('parseDuration rejects anything else with one clear line', async (t) => {
  for (const [input, got] of badDurations) {
    t.throws(
      () => parseDuration(input),
      { message: `expected a duration like "500ms", "5s", "3h" or a number of seconds, got ${got}` },
      String(got),
    )
  }
})
