// The masker of secrets in a config line quoted by an error and in logged error text: every
// shape a secret is written in comes back masked, one `*` per UTF-16 unit (a caret's column),
// and the text around it unchanged.
import t from 'tap'
import { maskSecretLine, maskSecretLines, maskUrlCredentials } from '../src/secret-text.js'

const lineCases: [name: string, line: string, masked: string][] = [
  ['a character outside the BMP before the secret', 'x: { a: "😀", password: hunter2, y: [ }', 'x: { a: "😀", password: *******, y: [ }'],
  ['a character outside the BMP in the secret', 'password: "p😀ss', 'password: "*****'],
  ['a flow map whose first key is the secret, no space after {', 'state: {password: hunter2, x: [ }', 'state: {password: *******, x: [ }'],
  ['JSON written without spaces', '{"state":{"password":"hunter2","x":[}}', '{"state":{"password":"*******","x":[}}'],
  ['a URL whose password has an @', 'url: redis://u:p@ss@h:6379: x', 'url: redis://u:****@h:6379: x'],
  ['a URL in a flow map, an @ after it', '{ url: redis://u:pw@h, to: a@b, x: [ }', '{ url: redis://u:**@h, to: a@b, x: [ }'],
  ['a quoted value after a tag: its opening quote stays', 'password: !!str "hunter2', 'password: ******"*******'],
  ['a quoted value after an anchor: its quotes stay', '{ token: &t "hunter2", x: [ }', '{ token: ***"*******", x: [ }'],
  ['a list of secrets in a flow map (cookie secrets in rotation)', 'affinity: { cookie: { secret: [s3cret-one, s3cret-two], x: [ } }', 'affinity: { cookie: { secret: ************************, x: [ } }'],
  ['a URL password with a space (a URL parser takes it), unquoted', 'url: redis://u:pa ss@h:6379: x', 'url: redis://u:*****@h:6379: x'],
  ['a URL password with spaces, quoted', '{ url: "redis://u:p a s@h:6379", x: [ }', '{ url: "redis://u:*****@h:6379", x: [ }'],
  ['an address without a scheme, quoted (a Sentinel)', 'sentinels: ["u:pw@h:26379", "h2:26379", x: [ }', 'sentinels: ["u:**@h:26379", "h2:26379", x: [ }'],
  ['an address without a scheme, an @ in its password, an IPv6 host', "nodes: [ 'u:p@w@[::1]:6379', x", "nodes: [ 'u:***@[::1]:6379', x"],
  ['an address without a scheme, a list item, no user', '  - ":pw@redis-0:6379', '  - ":**@redis-0:6379'],
  ['a URL password with spaces, a plain value', 'url: redis://u:p a s@h:6379/0 x: y', 'url: redis://u:*****@h:6379/0 x: y'],
  ['a URL password with a comma, in a flow map', '{ url: redis://u:p,w@h:6379, x: [ }', '{ url: redis://u:***@h:6379, x: [ }'],
  ['a password commented out, no space after #', '#password: hunter2', '#password: *******'],
  ['a token commented out after a value', 'x: [ #token:abc', 'x: [ #token:***'],
  ['an image digest and an e-mail address are no secrets', 'image: app:1.0@sha256:abc, to: a@b.c:25x, x: [', 'image: app:1.0@sha256:abc, to: a@b.c:25x, x: ['],
  ['a line without a secret', 'upstreams: [ { id: a, url: "http://a:1" }, x: [ }', 'upstreams: [ { id: a, url: "http://a:1" }, x: [ }'],
  // no credentials: a port or a time, and an @ after it
  ['a host and port, then an e-mail address later on the line', 'url: http://a:8080 then mail ops@corp.com', 'url: http://a:8080 then mail ops@corp.com'],
  ['a host and port, then an e-mail address as the next word', 'x: [ http://a:8080 ops@corp.com', 'x: [ http://a:8080 ops@corp.com'],
  ['a host and port and a comma, then an e-mail address', 'note: http://a:8080, then ops@corp.com', 'note: http://a:8080, then ops@corp.com'],
  ['a bracketed IPv6 host and port, then an e-mail address later on the line', 'url: http://[::1]:8080 then mail ops@corp.com', 'url: http://[::1]:8080 then mail ops@corp.com'],
  ['a bracketed IPv6 host and port, then an e-mail address as the next word', 'x: [ http://[::1]:8080 ops@corp.com', 'x: [ http://[::1]:8080 ops@corp.com'],
  ['a bracketed IPv6 host with a zone and a port and a comma, then an e-mail address', 'note: http://[fe80::1%25eth0]:8080, ops@corp.com', 'note: http://[fe80::1%25eth0]:8080, ops@corp.com'],
  ['a time before an @ and a host and port', 'window: 10:30@host:22', 'window: 10:30@host:22'],
  ['a time with seconds, quoted, in a flow map', '{ at: "10:30:15@host:22", x: [ }', '{ at: "10:30:15@host:22", x: [ }'],
  ['user@host without a password', 'ssh: deploy@bastion:22, url: redis://user@h:6379', 'ssh: deploy@bastion:22, url: redis://user@h:6379'],
  ['an IPv6 host and port without credentials', 'url: redis://[::1]:6379 # ops@corp.com', 'url: redis://[::1]:6379 # ops@corp.com'],
  // credentials, in the shapes real config files and errors write them
  ['a flow map, a URL with credentials and an IPv6 host', 'state: { redis: { url: redis://u:pw@[::1]:6379 }, x: [ }', 'state: { redis: { url: redis://u:**@[::1]:6379 }, x: [ }'],
  ['an empty user (`redis://:pw@host`), single-quoted', "url: 'redis://:hunter2@redis:6379'", "url: 'redis://:*******@redis:6379'"],
  ['a percent-encoded @ (`rediss://user:p%40ss@host`)', 'url: "rediss://user:p%40ss@host:6380/0"', 'url: "rediss://user:******@host:6380/0"'],
  ['two URLs with credentials on one line', 'urls: [redis://u:p1@h1:6379, "redis://:p2@h2"]', 'urls: [redis://u:**@h1:6379, "redis://:**@h2"]'],
  ['a password with an @, a : and a #', 'url: redis://u:p@ss:w#rd@h:6379', 'url: redis://u:*********@h:6379'],
  ['a password with a #, then a comment with an @', 'url: redis://u:p#w@h:6379 # owner ops@corp.com', 'url: redis://u:***@h:6379 # owner ops@corp.com'],
  ['a password with a #, quoted', '{ url: "redis://u:p#w@h:6379", x: [ }', '{ url: "redis://u:***@h:6379", x: [ }'],
  ['an address without a scheme whose password has a #', 'sentinels: ["u:p#w@h:26379", x', 'sentinels: ["u:***@h:26379", x'],
  ['a quoted URL password with ` #` and a space in it (no comment inside quotes)', 'url: "redis://u:pa #ss word@h:6379"', 'url: "redis://u:***********@h:6379"'],
  ['a single-quoted URL password with ` #` in it, in a flow map', "{ url: 'redis://u:a #b c@h:6379', x: [ }", "{ url: 'redis://u:******@h:6379', x: [ }"],
  ['a quoted URL password with ` #`, then a real comment with an @', 'x: "redis://u:a #b c@h" # ops@corp.com', 'x: "redis://u:******@h" # ops@corp.com'],
  ['a password in a URL query (ioredis takes it as an option), quoted, then another parameter', 'url: "redis://h:6379/0?password=s3cret&db=1"', 'url: "redis://h:6379/0?password=******&db=1"'],
  ['a Sentinel password in a URL query, its name percent-encoded, in a flow map', '{ url: rediss://h?x=1&sentinelPass%77ord=pw, x: [ }', '{ url: rediss://h?x=1&sentinelPass%77ord=**, x: [ }'],
  ['a query without a secret', 'health: /healthz?x=1&user=a', 'health: /healthz?x=1&user=a'],
  ['a password that is a number, no space after it', 'url: redis://u:6379@h:6379', 'url: redis://u:****@h:6379'],
]

t.test('maskSecretLine masks each shape, column for column', async (t) => {
  for (const [name, line, masked] of lineCases) {
    const out = maskSecretLine(line)
    t.equal(out, masked, name)
    t.equal(out.length, line.length, `${name}: as long as the line`)
  }
})

t.test('maskUrlCredentials masks a password with an @ up to the last @ before the host', async (t) => {
  t.equal(maskUrlCredentials('connect redis://u:p@ss@h:6379 failed'), 'connect redis://u:***@h:6379 failed')
  t.equal(maskUrlCredentials('at file:///app/dist/x.js:1:2'), 'at file:///app/dist/x.js:1:2')
})

t.test('maskUrlCredentials masks a password with spaces, up to the @ before the host, not past a word without one', async (t) => {
  t.equal(maskUrlCredentials('connect redis://u:pa ss@h:6379 failed'), 'connect redis://u:***@h:6379 failed')
  t.equal(maskUrlCredentials('connect redis://u:pw@h:6379 failed for a@b'), 'connect redis://u:***@h:6379 failed for a@b')
})

t.test('maskUrlCredentials masks a password that is all `*` (a log line), and keeps it only for a config line masked already', async (t) => {
  t.equal(maskUrlCredentials('connect redis://u:*****@h:6379 failed'), 'connect redis://u:***@h:6379 failed')
  t.equal(maskUrlCredentials('  1 | url: "http://u:************@h:1"', true), '  1 | url: "http://u:************@h:1"')
  t.equal(maskUrlCredentials('  1 | url: "http://u:pw@h:1"', true), '  1 | url: "http://u:***@h:1"')
})

t.test('maskUrlCredentials leaves a port or a time before a later @ alone, and masks every password on a line', async (t) => {
  t.equal(maskUrlCredentials('upstream http://a:8080 then mail ops@corp.com'), 'upstream http://a:8080 then mail ops@corp.com')
  t.equal(maskUrlCredentials('upstream http://a:8080 ops@corp.com'), 'upstream http://a:8080 ops@corp.com')
  t.equal(maskUrlCredentials('upstream http://a:8080) owner ops@corp.com'), 'upstream http://a:8080) owner ops@corp.com')
  t.equal(maskUrlCredentials('at 10:30@host:22'), 'at 10:30@host:22')
  t.equal(maskUrlCredentials('upstream http://[::1]:8080 then mail ops@corp.com'), 'upstream http://[::1]:8080 then mail ops@corp.com')
  t.equal(maskUrlCredentials('upstream http://[2001:db8::1]:8080) ops@corp.com'), 'upstream http://[2001:db8::1]:8080) ops@corp.com')
  t.equal(maskUrlCredentials('upstream http://[::1]:8080 ops@corp.com'), 'upstream http://[::1]:8080 ops@corp.com')
  t.equal(maskUrlCredentials('connect redis://u:pw@[::1]:6379 failed, mail ops@corp.com'), 'connect redis://u:***@[::1]:6379 failed, mail ops@corp.com')
  t.equal(maskUrlCredentials('connect rediss://user:p%40ss@h:6380 and redis://:pw@[::1]:6379 failed'), 'connect rediss://user:***@h:6380 and redis://:***@[::1]:6379 failed')
  t.equal(maskUrlCredentials('connect redis://u:p#w@h:6379 failed'), 'connect redis://u:***@h:6379 failed')
  t.equal(maskUrlCredentials('connect redis://u:p@ss:w#rd@h failed'), 'connect redis://u:***@h failed')
  t.equal(maskUrlCredentials('connect redis://u:123456@h failed'), 'connect redis://u:***@h failed')
  t.equal(maskUrlCredentials('connect redis://user@h:6379 failed'), 'connect redis://user@h:6379 failed')
})

t.test('maskUrlCredentials masks a query parameter named like a secret (ioredis reads ?password= and ?sentinelPassword=)', async (t) => {
  t.equal(maskUrlCredentials('connect redis://h:6379/0?password=s3cret failed'), 'connect redis://h:6379/0?password=*** failed')
  t.equal(maskUrlCredentials('connect redis://h?db=1&sentinelPassword=s3cret&family=6'), 'connect redis://h?db=1&sentinelPassword=***&family=6')
  t.equal(maskUrlCredentials('GET /x?access_token=abc&page=2'), 'GET /x?access_token=***&page=2')
  t.equal(maskUrlCredentials('connect redis://h?pass%77ord=s3cret'), 'connect redis://h?pass%77ord=***')
  t.equal(maskUrlCredentials('connect redis://h?username=tether&db=1&password='), 'connect redis://h?username=tether&db=1&password=')
  t.equal(maskUrlCredentials('  1 | url: "redis://h?password=******"', true), '  1 | url: "redis://h?password=******"')
})

t.test('a long run of letters is scanned in linear time, not once per letter', async (t) => {
  // quadratic, 200k letters took tens of seconds; linear, a few milliseconds
  for (const text of ['a'.repeat(200_000), ' a:b'.repeat(50_000), `redis://u:${' a@'.repeat(60_000)}`, `"a:${'b@'.repeat(100_000)}`, 'a:b@c:1'.repeat(30_000), '#'.repeat(200_000), `"${'a://b:'.repeat(30_000)}`, `"redis://u:${' #a'.repeat(60_000)}`, '?'.repeat(200_000), `?${'a'.repeat(200_000)}`, '&a='.repeat(60_000), `x: [ ${'&password=x'.repeat(20_000)}`]) {
    const t0 = performance.now()
    maskUrlCredentials(text)
    maskSecretLine(text)
    t.ok(performance.now() - t0 < 2000, `${text.slice(0, 12)}...: ${(performance.now() - t0).toFixed(0)} ms`)
  }
})

const multiLineCases: [name: string, lines: string[], masked: string[]][] = [
  ['a | block', ['  password: |', '    hunter2', '    more', '  db: 1'], ['  password: *', '    *******', '    ****', '  db: 1']],
  ['a > block, a blank line in it, then a line indented less than its first', ['password: >-', '    hunter2', '', '    x', '  bad: ['], ['password: **', '    *******', '', '    *', '  bad: [']],
  ['a value on the next line', ['  token:', '    hunter2: x: y', '  url: a'], ['  token:', '    *************', '  url: a']],
  ['a quoted value over two lines', ['  password: "hunter', '    2" x', '  db: 1'], ['  password: "******', '    ****', '  db: 1']],
  ['a plain value over two lines', ['- password: hunter', '    2: x', '- x: 1'], ['- password: ******', '    ****', '- x: 1']],
  ['a secret that ends on its line: the next keys are shown', ['password: hunter2', 'db: [', 'x: 1'], ['password: *******', 'db: [', 'x: 1']],
  ['an explicit key (`? password`), its value on the line below', ['  ? password', '  : "hunter2', '  db: 1'], ['  ? password', '  : "*******', '  db: 1']],
  ['an explicit key, its value over two lines', ["? 'token'", ': hunter', '  2', 'x: 1'], ["? 'token'", ': ******', '  *', 'x: 1']],
  ['an explicit key that is not a secret', ['? name', ': hunter2'], ['? name', ': hunter2']],
  ['a Kubernetes Secret: every value under data, whatever its key', ['apiVersion: v1', 'kind: Secret', 'data:', '  tls.key: LS0t', '  DB_PASS: "aHVu', 'type: Opaque'], ['apiVersion: v1', 'kind: Secret', 'data:', '  tls.key: ****', '  DB_PASS: "****', 'type: Opaque']],
  ['a Secret whose kind comes after its stringData, a block value', ['stringData:', '  config.yaml: |', '    a: b', 'kind: "Secret"', '---', 'kind: ConfigMap', 'data:', '  a.b: c'], ['stringData:', '  config.yaml: *', '    ****', 'kind: "Secret"', '---', 'kind: ConfigMap', 'data:', '  a.b: c']],
  ['a list of secrets at the key\'s own column', ['  cookie:', '    secret:', '    - s3cret-one', '    - s3cret-two: x', '    name: c'], ['  cookie:', '    secret:', '    ************', '    ***************', '    name: c']],
  ['a value anchored where a secret key\'s alias takes it from', ['common: { pw: &pw hunter2, y: [ }', 'other: &o plain', 'state:', '  redis:', '    password: *pw'], ['common: { pw: &pw *******, y: [ }', 'other: &o plain', 'state:', '  redis:', '    password: ***']],
  ['an anchored block value', ['pw: &pw |', '  hunter2', 'x: 1', 'token: *pw'], ['pw: &pw *', '  *******', 'x: 1', 'token: ***']],
  ['a Kubernetes Secret in JSON: its data whole, up to its closing brace', ['{', '  "kind": "Secret",', '  "data": {', '    "tls.key": "LS0t" x', '  },', '  "type": "Opaque"', '}'], ['{', '  "kind": "Secret",', '  "data": {', '    ********** ****** *', '  },', '  "type": "Opaque"', '}']],
  ['a Kubernetes Secret\'s data in flow style', ['kind: Secret', 'data: { a: LS0t, b: "c" }', 'x: [ }'], ['kind: Secret', 'data: { ** ***** ** *** }', 'x: [ }']],
  ['a secret key commented out ends with its line: the lines below are shown', ['#password:', '  url: redis://h:6379', '# token: |', '   db: 1'], ['#password:', '  url: redis://h:6379', '# token: *', '   db: 1']],
  ['a secret in a closed flow map', ['a: { token: x }', '  b: ['], ['a: { token: * }', '  b: [']],
  ['a quoted flow value with a ` #` before a quoted password over two lines', ['x: { a: "b #c", password: "hunter', '                    2" }', 'y: 1'], ['x: { a: "b #c", password: "******', '                    ****', 'y: 1']],
  ["a single-quoted flow value with a ` #` before it, a password's line below indented less than its key", ["x: { a: 'see #1', token: 'abc", "  def' }", 'y: 1'], ["x: { a: 'see #1', token: '***", '  ******', 'y: 1']],
  ['a key after a real comment is still in the comment', ['a: "b #c"  # password: |', '  x', 'y: 1'], ['a: "b #c"  # password: *', '  x', 'y: 1']],
  // a flow collection opened on an earlier line: its key's line need not hold the `{` or `[`
  ['a quoted password over two lines, its key on a line below the `{`', ['a:', '  x: { p: 1,', '    password: "hun', '    ter2" }', 'y: 1'], ['a:', '  x: { p: 1,', '    password: "***', '    *******', 'y: 1']],
  ['a plain password over two lines, its key on a line below the `{`', ['a:', '  x: { p: 1,', '    password: hun', '    ter2 }', 'y: 1'], ['a:', '  x: { p: 1,', '    password: ***', '    ******', 'y: 1']],
  ['a quoted password over two lines in a `{` opened on a line inside a `[` of an earlier line', ['x: [ a,', '  { password: "hun', '  ter2" } ]', 'y: 1'], ['x: [ a,', '  { password: "***', '  *********', 'y: 1']],
  ['a `[` in a plain value opens no collection: a quoted password closed too early still hides the lines below', ['note: range [0, 10)', 'password: "abc"', '  def"', 'y: 1'], ['note: range [0, 10)', 'password: "***"', '  ****', 'y: 1']],
  ['JSON: a quoted password closed on its line hides no line below', ['{', '  "state": {', '    "redis": {', '      "password": "x"', '    },', '    "store": "redis"', '  },', '  "listen": { "port": 8080 }', '}'], ['{', '  "state": {', '    "redis": {', '      "password": "*"', '    },', '    "store": "redis"', '  },', '  "listen": { "port": 8080 }', '}']],
  ["a single-quoted password whose line ends in an escaped quote goes on below", ['x: { a: 1,', "  password: 'hun''", "  ter2' }", 'y: 1'], ['x: { a: 1,', "  password: '*****", '  *******', 'y: 1']],
  ['a double-quoted password whose line ends in an escaped quote goes on below', ['x: { a: 1,', '  password: "hun\\"', '  ter2" }', 'y: 1'], ['x: { a: 1,', '  password: "*****', '  *******', 'y: 1']],
  ['a `{` opened on a line indented less than the `[` of an earlier line', ['    x: [ a,', '  { password: "hun', '   ter2" } ]', 'y: 1'], ['    x: [ a,', '  { password: "***', '   *********', 'y: 1']],
]

t.test('maskSecretLines also masks the lines a secret value goes on over', async (t) => {
  for (const [name, lines, masked] of multiLineCases) t.strictSame(maskSecretLines(lines), masked, name)
})

t.test('maskSecretLine masks a URL password without its @host and the value of a misspelt secret key (review s65 r1)', async (t) => {
  for (const [line, masked] of [
    ['    url: "redis://:hunter2', '    url: "redis://:*******'], // its @host forgotten, its quote not closed
    ['url: redis://u:hunter2/0', 'url: redis://u:*******/0'],
    ['x: { url: redis://:hunter2, y: 1 }', 'x: { url: redis://:*******, y: 1 }'],
    ['    pasword: "hunter2', '    pasword: "*******'], // within two edits of a secret word
    ['  tokn: hunter2', '  tokn: *******'],
    ['  sentinel_pasword: hunter2', '  sentinel_pasword: *******'],
    ['  secert: hunter2', '  secert: *******'], // two letters swapped
    ['  toekn: hunter2', '  toekn: *******'],
    ['  - passwrod: hunter2', '  - passwrod: *******'],
    // (as before: a port, an IPv6 host, a key near no secret word, secure near secret)
    ['url: "redis://h:6379', 'url: "redis://h:6379'],
    ['url: http://h:80/x', 'url: http://h:80/x'],
    ['url: http://[::1]:1', 'url: http://[::1]:1'],
    ['  secure: true', '  secure: true'],
    ['  timeout: 5s', '  timeout: 5s'],
  ]) t.equal(maskSecretLine(line!), masked, line)
})

t.test('maskSecretLine(s) leave harmless parts of a line alone: a host named near a secret word, a port, a ${VAR} port, a key such as tokyo (review s65 r3)', async (t) => {
  for (const l of ['    url: "http://app-tokyo:8080', '  url: redis://redis-tokyo:6379', '  - url: http://app-open:9000', '    address: "api-broken:6379"',
    '# admin API at http://127.0.0.1:9901.', '# see (http://localhost:9901)', '    url: http://app:${APP_PORT}/x', '  spoken: 1', '  open: true']) t.equal(maskSecretLine(l), l, l)
  const lines = ['zones:', '  tokyo:', '    host: a.example', '    port: 80']
  t.strictSame(maskSecretLines(lines), lines, 'a block under tokyo:')
})
