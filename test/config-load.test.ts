// Specification of config loading and validation: defaults, located errors, freezing.
import t, { type Test } from 'tap'
import { fileURLToPath } from 'node:url'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, DEFAULTS, configWarnings, didYouMean, loadConfigFile, nearest, parseConfig, parseYamlDocuments, type Config } from '../src/config/index.js'
import { pemFiles } from '../src/tls/pem.js'

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/config/${name}`, import.meta.url))
const FILE = 'config/proxy.yaml'
const yaml = (...lines: string[]): string => lines.join('\n') + '\n'
const UPSTREAM = ['upstreams:', '  - id: a', '    url: http://127.0.0.1:9001']

/** The issues a config text is rejected with (fails the test if it is accepted). */
function issuesOf(t: Test, text: string, env: Record<string, string> = {}): readonly string[] {
  try {
    parseConfig(text, FILE, env)
  } catch (err) {
    if (err instanceof ConfigError) {
      t.equal(err.code, 'TETHER_CONFIG_INVALID')
      t.equal(err.message, [...err.issues, ...err.detail].join('\n'))
      return err.issues
    }
    throw err
  }
  t.fail('config was accepted')
  return []
}

t.test('a minimal config gets every default', async (t) => {
  const config = loadConfigFile(fixture('minimal.yaml'))
  t.strictSame(config, {
    listen: { host: '0.0.0.0', port: 8080, tls: null, http2: { enabled: true, cleartext: false, max_concurrent_streams: 100 }, redirect: null, proxy_protocol: false },
    admin: { listen: { host: '127.0.0.1', port: 9901 }, token: null, allowed_hosts: [], readiness: { require_upstream: 'startup' } },
    upstreams: [{ id: 'a', url: 'http://127.0.0.1:9001', weight: 1, tls: null, max_connections: null }],
    affinity: {
      key: 'cookie',
      cookie: { name: 'tether', secret: null, path: '/', domain: null, max_age: null, secure: true, http_only: true, same_site: 'Lax' },
      app_cookie: { name: null, fallback: 'client_ip' },
      client_ip: { trusted_proxies: [] },
      header: { name: null },
      idle_timeout: 10_800_000,
      absolute_timeout: null,
      on_scale_up: 'persistent',
      rebalance: { min_idle: 300_000, max_moves_per_second: 20 },
      balance_factor: null,
      spill: null,
      max_entries: 1_000_000,
      strict: false,
      drain_timeout: 900_000,
      drain: { migrate: false, min_idle: 2_000 },
      shared: 'none',
    },
    timeouts: { connect: 2_000, response_headers: 60_000, body_idle: 60_000, client_keep_alive: 5_000, client_headers: 10_000, client_connection_max: 3_600_000, queue: 5_000 },
    limits: { max_header_bytes: 16384, max_body_bytes: null, max_requests_per_connection: 1000, max_upstream_connections: null },
    forwarding: {
      preserve_host: true, x_forwarded: true, upstream_header: false, allow_underscores: false,
      tls: { ca: null, servername: null, cert: null, key: null, verify: true },
    },
    log: { level: 'info', access: true, session_secret: null },
    health: {
      active: { enabled: true, path: null, interval: 2_000, timeout: 500, healthy_threshold: 2, unhealthy_threshold: 2, expected_status: { min: 200, max: 399 } },
      passive: { enabled: true, consecutive_failures: 3, count_5xx: true, base_ejection: 10_000, max_ejection: 300_000, max_ejection_percent: 50 },
      slow_start: 0,
      shared: 'none',
    },
    retries: { attempts: 2, try_duration: 10_000, replay_buffer_bytes: 65_536, hedge_after: null },
    discovery: { dns: null, kubernetes: null },
    shutdown: { grace_period: 10_000 },
    websocket: { max_connections: 10_000, idle_timeout: 3_600_000 },
    workers: 1,
    state: {
      store: 'memory', header: 'X-Tether-State', max_bytes: 65_536, rehydrate: 'header',
      hook_path: '/.well-known/tether/rehydrate', timeout: 50, durability: 'best_effort', confirm_timeout: 1_000,
      memory: { max_bytes: 67_108_864 },
      redis: { url: null, password: null, username: null, sentinels: [], name: null, sentinel_password: null, sentinel_username: null, nodes: [], key_prefix: 'tether:' },
    },
  } satisfies Config)
})

t.test('a full config round-trips every key, durations in ms and URLs as origins', async (t) => {
  const tls = (name: string): string => fixture(`tls/${name}`)
  const forwardingTls = { ca: tls('ca.crt'), servername: 'app.internal', cert: tls('client.crt'), key: tls('client.key'), verify: false }
  t.strictSame(loadConfigFile(fixture('full.yaml')), {
    listen: {
      host: '127.0.0.1',
      port: 8000,
      tls: {
        cert: tls('server.crt'), key: tls('server.key'),
        certificates: [{ cert: tls('other.crt'), key: tls('other.key') }],
        min_version: 'TLSv1.3',
        hsts: { max_age: 31_536_000_000, include_subdomains: true, preload: true },
      },
      http2: { enabled: false, cleartext: false, max_concurrent_streams: 50 },
      redirect: { host: '127.0.0.1', port: 8002, https_port: null },
      proxy_protocol: true,
    },
    admin: { listen: { host: '127.0.0.1', port: 8001 }, token: 's3cret', allowed_hosts: ['tether-admin.internal', 'Tether-0.tether.default.svc.cluster.local'], readiness: { require_upstream: 'always' } },
    upstreams: [
      // the keys an upstream sets override forwarding.tls, one by one
      { id: 'app-a', url: 'https://127.0.0.1:9001', weight: 3, tls: { ...forwardingTls, servername: 'app-a.internal', verify: true }, max_connections: 8 },
      { id: 'app_b.2', url: 'http://localhost:9002', weight: 1, tls: null, max_connections: null },
    ],
    affinity: {
      key: 'app_cookie',
      cookie: {
        name: '__Host-tether', secret: ['0123456789abcdef-new', '0123456789abcdef-old'], path: '/', domain: null,
        max_age: 86_400_000, secure: true, http_only: false, same_site: 'None',
      },
      app_cookie: { name: 'laravel_session', fallback: 'random' },
      client_ip: { trusted_proxies: ['10.0.0.0/8', 'fd00::/8'] },
      header: { name: 'X-Tenant' },
      idle_timeout: 5_400_000,
      absolute_timeout: 43_200_000,
      on_scale_up: 'gradual',
      rebalance: { min_idle: 600_000, max_moves_per_second: 50 },
      balance_factor: 1.25,
      spill: { factor: 1.5, min_idle: 45_000, max_moves_per_second: 15 },
      max_entries: 5000,
      strict: true,
      drain_timeout: 120_000,
      drain: { migrate: true, min_idle: 3_000 },
      shared: 'redis',
    },
    timeouts: { connect: 500, response_headers: 15_000, body_idle: 0, client_keep_alive: 2_500, client_headers: 60_000, client_connection_max: 600_000, queue: 3_000 },
    limits: { max_header_bytes: 32768, max_body_bytes: 1_048_576, max_requests_per_connection: 500, max_upstream_connections: 20 },
    forwarding: { preserve_host: false, x_forwarded: false, upstream_header: true, allow_underscores: true, tls: forwardingTls },
    log: { level: 'debug', access: false, session_secret: '0123456789abcdef-log' },
    health: {
      active: { enabled: false, path: '/healthz', interval: 3_000, timeout: 700, healthy_threshold: 3, unhealthy_threshold: 1, expected_status: { min: 200, max: 204 } },
      passive: { enabled: false, consecutive_failures: 5, count_5xx: false, base_ejection: 5_000, max_ejection: 60_000, max_ejection_percent: 30 },
      slow_start: 30_000,
      shared: 'redis',
    },
    retries: { attempts: 1, try_duration: 3_000, replay_buffer_bytes: 1024, hedge_after: 250 },
    discovery: {
      dns: { name: 'app-headless.default.svc.cluster.local', port: 8080, srv: true, interval: 10_000, family: 'ipv4', servers: ['127.0.0.1:5353'] },
      kubernetes: { service: 'web', namespace: 'shop', port: 'http', kubeconfig: '/etc/tether/kubeconfig', weight_annotation: 'tether.io/weights' },
    },
    shutdown: { grace_period: 25_000 },
    websocket: { max_connections: 500, idle_timeout: 600_000 },
    workers: 'auto',
    state: {
      store: 'redis', header: 'X-App-State', max_bytes: 4096, rehydrate: 'hook',
      hook_path: '/_tether/rehydrate', timeout: 80, durability: 'confirmed', confirm_timeout: 2_000,
      memory: { max_bytes: 16_777_216 },
      redis: { url: null, password: 'pw', username: 'tether', sentinels: ['10.0.0.1:26379', '10.0.0.2:26379'], name: 'mymaster', sentinel_password: 'spw', sentinel_username: 'watcher', nodes: [], key_prefix: 'app:' },
    },
  })
})

t.test('Kubernetes discovery alone is a source of upstreams; its port is a name or a number', async (t) => {
  const named = parseConfig(yaml('discovery:', '  kubernetes: { service: web, port: http }'), FILE)
  t.strictSame(named.discovery.kubernetes, { service: 'web', namespace: null, port: 'http', kubeconfig: null, weight_annotation: null })
  t.strictSame(named.upstreams, [])
  const numbered = parseConfig(yaml('discovery:', '  kubernetes: { service: web, port: "${PORT}" }'), FILE, { PORT: '8080' })
  t.equal(numbered.discovery.kubernetes?.port, 8080, 'a number from the environment is a number')
  const srv = parseConfig(yaml('discovery:', '  dns: { name: _http._tcp.web.default.svc.cluster.local, srv: true }'), FILE)
  t.strictSame(srv.discovery.dns, { name: '_http._tcp.web.default.svc.cluster.local', port: null, srv: true, interval: 5000, family: 'any', servers: [] })
})

t.test('a partly given section keeps the defaults of its other keys', async (t) => {
  const config = parseConfig(yaml('listen:', '  port: 0', 'timeouts:', '  connect: 1s', ...UPSTREAM), FILE)
  t.strictSame(config.listen, { ...DEFAULTS.listen, port: 0 })
  t.strictSame(config.timeouts, { ...DEFAULTS.timeouts, connect: 1000 })
})

t.test('affinity.spill is off by default; {} turns it on with its defaults, a partial map keeps the others', async (t) => {
  t.equal(parseConfig(yaml(...UPSTREAM), FILE).affinity.spill, null)
  t.strictSame(parseConfig(yaml(...UPSTREAM, 'affinity:', '  spill: {}'), FILE).affinity.spill, { factor: 1.5, min_idle: 30_000, max_moves_per_second: 10 })
  t.strictSame(parseConfig(yaml(...UPSTREAM, 'affinity:', '  spill: { factor: 2 }'), FILE).affinity.spill, { ...DEFAULTS.spill, factor: 2 })
  t.equal(parseConfig(yaml(...UPSTREAM, 'affinity:', '  spill: null'), FILE).affinity.spill, null)
})

t.test('durations in days and weeks load as nginx reads them (1d, 3w), under the timer limit and the cookie bound', async (t) => {
  const config = parseConfig(yaml(...UPSTREAM, 'affinity:', '  idle_timeout: 1d', '  absolute_timeout: 3w', '  cookie: { max_age: 400d }', 'websocket: { idle_timeout: 0.5d }'), FILE)
  t.equal(config.affinity.idle_timeout, 86_400_000)
  t.equal(config.affinity.absolute_timeout, 21 * 86_400_000)
  t.equal(config.affinity.cookie.max_age, 400 * 86_400_000)
  t.equal(config.websocket.idle_timeout, 43_200_000)
})

t.test('the result is deeply frozen and shares nothing with DEFAULTS', async (t) => {
  const config = parseConfig(yaml(...UPSTREAM), FILE)
  const objects = [config, config.listen, config.admin, config.admin.listen, config.upstreams, config.upstreams[0],
    config.affinity, config.timeouts, config.limits, config.forwarding, config.log]
  for (const o of objects) t.ok(Object.isFrozen(o))
  t.not(config.listen, DEFAULTS.listen)
  t.throws(() => {
    ;(config.listen as { port: number }).port = 1
  }, TypeError)
})

const errorCases: { name: string; text: string; issues: string[] }[] = [
  {
    name: 'an empty file',
    text: '# nothing here\n',
    issues: [`${FILE}:1:1: config is empty; expected a map with at least \`upstreams\``],
  },
  {
    name: 'a top level that is not a map',
    text: yaml('- a', '- b'),
    issues: [`${FILE}:1:1: expected a map at the top level, got a list`],
  },
  {
    name: 'a YAML syntax error (located at the unclosed bracket, not where the parser gave up)',
    text: yaml('upstreams:', '  - id: a', '    url: [http://x', 'log: {}'),
    issues: [`${FILE}:3:10: YAML syntax error: Flow sequence in block collection must be sufficiently indented and end with a ]`],
  },
  {
    name: 'a duplicate key (YAML error)',
    text: yaml(...UPSTREAM, 'log: {}', 'log: {}'),
    issues: [`${FILE}:5:1: YAML syntax error: Map keys must be unique`],
  },
  {
    name: 'missing upstreams (located at the parent map)',
    text: yaml('', 'listen:', '  port: 80'),
    issues: [`${FILE}:2:1 upstreams: missing required key (or set discovery.dns or discovery.kubernetes)`],
  },
  {
    name: 'an empty upstream list',
    text: yaml('upstreams: []'),
    issues: [`${FILE}:1:12 upstreams: expected a non-empty list (or set discovery.dns or discovery.kubernetes)`],
  },
  {
    name: 'DNS discovery without a port and without srv',
    text: yaml('discovery:', '  dns:', '    name: web.default.svc.cluster.local'),
    issues: [`${FILE}:3:5 discovery.dns.port: required unless srv is true (SRV records carry the port)`],
  },
  {
    name: 'Kubernetes discovery: a bad Service name, namespace, port and annotation key, each located',
    text: yaml('discovery:', '  kubernetes:', '    service: Web_1', '    namespace: "-shop"', '    port: HTTP', '    weight_annotation: "a b"'),
    issues: [
      `${FILE}:3:14 discovery.kubernetes.service: expected a Service name (lower-case letters, digits and "-", starting with a letter), got "Web_1"`,
      `${FILE}:4:16 discovery.kubernetes.namespace: expected a namespace name (lower-case letters, digits and "-"), got "-shop"`,
      `${FILE}:5:11 discovery.kubernetes.port: expected a Service port name (up to 15 lower-case letters, digits and "-") or a port number, got "HTTP"`,
      `${FILE}:6:24 discovery.kubernetes.weight_annotation: expected an annotation key like tether.io/weights, got "a b"`,
    ],
  },
  {
    name: 'Kubernetes discovery: the Service and the port are required; a port number must be a port',
    text: yaml('discovery:', '  kubernetes:', '    namespace: shop', '  dns:', '    name: a.b', '    port: 0'),
    issues: [
      `${FILE}:3:5 discovery.kubernetes.service: missing required key`,
      `${FILE}:3:5 discovery.kubernetes.port: missing required key`,
      `${FILE}:6:11 discovery.dns.port: expected an integer between 1 and 65535, got 0`,
    ],
  },
  {
    name: "upstreams written as addresses alone, as nginx's server lines: the map each needs, with its address",
    text: yaml('upstreams:', '  - http://10.0.0.5:8000', '  - 10.0.0.6:8000', '  - "http://u:pw@10.0.0.7:8000"', '  - 42'),
    issues: [
      `${FILE}:2:5 upstreams[0]: expected a map with an id and a url, like { id: app-0, url: "http://10.0.0.5:8000" }, got "http://10.0.0.5:8000"`,
      `${FILE}:3:5 upstreams[1]: expected a map with an id and a url, like { id: app-1, url: "http://10.0.0.6:8000" }, got "10.0.0.6:8000"`,
      `${FILE}:4:5 upstreams[2]: expected a map with an id and a url, like { id: app-2, url: "http://10.0.0.5:8000" }, got "http://u:***@10.0.0.7:8000"`,
      `${FILE}:5:5 upstreams[3]: expected a map, got 42`,
    ],
  },
  {
    name: 'a section that is not a map',
    text: yaml(...UPSTREAM, 'timeouts: 5s'),
    issues: [`${FILE}:4:11 timeouts: expected a map, got "5s"`],
  },
  {
    name: 'an empty value (located at its key)',
    text: yaml(...UPSTREAM, 'listen:', '  port:'),
    issues: [`${FILE}:5:3 listen.port: expected an integer, got null`],
  },
  {
    name: 'wrong scalar types',
    text: yaml(...UPSTREAM, 'listen: {host: 8080, port: abc}', 'forwarding: {x_forwarded: yes}', 'admin: {token: [a]}'),
    issues: [
      `${FILE}:4:16 listen.host: expected a string, got 8080`,
      `${FILE}:4:28 listen.port: expected an integer, got "abc"`,
      `${FILE}:5:27 forwarding.x_forwarded: expected a boolean, got "yes"`,
      `${FILE}:6:16 admin.token: expected a string, got a list`,
    ],
  },
  {
    name: 'an admin.allowed_hosts entry with a port or a scheme',
    text: yaml(...UPSTREAM, 'admin: {allowed_hosts: [ok.internal, "tether:9901", "http://x"]}'),
    issues: [
      `${FILE}:4:38 admin.allowed_hosts[1]: expected a host name without port or scheme (e.g. tether-admin.internal), got "tether:9901"`,
      `${FILE}:4:53 admin.allowed_hosts[2]: expected a host name without port or scheme (e.g. tether-admin.internal), got "http://x"`,
    ],
  },
  {
    name: 'integers out of range',
    text: yaml(
      ...UPSTREAM,
      'listen: {port: 70000}',
      'limits: {max_header_bytes: 512, max_body_bytes: -1}',
      'admin: {listen: {port: 1.5}}',
    ),
    issues: [
      `${FILE}:4:16 listen.port: expected an integer between 0 and 65535, got 70000`,
      `${FILE}:5:28 limits.max_header_bytes: expected an integer between 1024 and 1048576, got 512`,
      `${FILE}:5:49 limits.max_body_bytes: expected an integer >= 0, got -1`,
      `${FILE}:6:24 admin.listen.port: expected an integer, got 1.5`,
    ],
  },
  {
    name: 'the connections to an upstream and their queue',
    text: yaml(
      ...UPSTREAM,
      'limits: {max_upstream_connections: 0}',
      'timeouts:',
      '  queue: 0',
    ),
    issues: [
      `${FILE}:4:36 limits.max_upstream_connections: expected an integer between 1 and 1000000, got 0`,
      `${FILE}:6:10 timeouts.queue: expected a duration > 0, got 0`,
    ],
  },
  {
    name: 'enumerations',
    text: yaml(...UPSTREAM, 'affinity:', '  key: sticky', 'log:', '  level: verbose', 'admin: { readiness: { require_upstream: never } }'),
    issues: [
      `${FILE}:5:8 affinity.key: expected one of: "none", "cookie", "app_cookie", "client_ip", "header", got "sticky"`,
      `${FILE}:7:10 log.level: expected one of: "fatal", "error", "warn", "info", "debug", "trace", "silent", got "verbose"`,
      `${FILE}:8:41 admin.readiness.require_upstream: expected one of: "startup", "always", got "never"`,
    ],
  },
  {
    name: 'a near miss in an enumeration, with a suggestion (case aside)',
    text: yaml(...UPSTREAM, 'affinity:', '  key: cookies', '  cookie: { same_site: strict }', 'log: { level: INFO }', 'state: { store: 1 }'),
    issues: [
      `${FILE}:5:8 affinity.key: expected one of: "none", "cookie", "app_cookie", "client_ip", "header", got "cookies"; did you mean "cookie"?`,
      `${FILE}:6:24 affinity.cookie.same_site: expected one of: "Strict", "Lax", "None", got "strict"; did you mean "Strict"?`,
      `${FILE}:7:15 log.level: expected one of: "fatal", "error", "warn", "info", "debug", "trace", "silent", got "INFO"; did you mean "info"?`,
      `${FILE}:8:17 state.store: expected one of: "memory", "redis", "none", got 1`,
    ],
  },
  {
    name: 'a key without a space after its colon (YAML reads "port:8080" as a string)',
    text: yaml(...UPSTREAM, 'listen:', '  port:8080'),
    issues: [`${FILE}:5:3 listen: expected a map, got "port:8080" (a key needs a space after its colon: "key: value")`],
  },
  {
    name: 'affinity rules: the chosen key needs its settings, secrets and CIDRs are checked',
    text: yaml(
      ...UPSTREAM,
      'affinity:',
      '  key: app_cookie',
      '  cookie: { secret: [short], same_site: None, secure: false }',
      '  client_ip: { trusted_proxies: ["10.0.0.0/33"] }',
      '  idle_timeout: 2h',
      '  absolute_timeout: 1h',
      '  balance_factor: 0.5',
    ),
    issues: [
      `${FILE}:6:22 affinity.cookie.secret[0]: expected a secret of at least 16 bytes, got 5`,
      `${FILE}:7:34 affinity.client_ip.trusted_proxies[0]: invalid CIDR "10.0.0.0/33": prefix length must be 0-32 for an IPv4 network`,
      `${FILE}:10:19 affinity.balance_factor: expected a number between 1 and 100, got 0.5`,
    ],
  },
  {
    name: 'affinity rules across keys',
    text: yaml(
      ...UPSTREAM,
      'affinity:',
      '  key: header',
      '  cookie: { same_site: None, secure: false }',
      '  idle_timeout: 2h',
      '  absolute_timeout: 1h',
    ),
    issues: [
      `${FILE}:5:3 affinity.header.name: required when key is header`,
      `${FILE}:6:11 affinity.cookie: cookie same_site None requires secure: true`,
      `${FILE}:8:21 affinity.absolute_timeout: must be at least idle_timeout (2h)`,
    ],
  },
  {
    name: 'affinity.spill: its factor, idle gap and budget are checked, and it needs a key',
    text: yaml(
      ...UPSTREAM,
      'affinity:',
      '  key: none',
      '  spill: { factor: 0.9, min_idle: soon, max_moves_per_second: 0 }',
    ),
    issues: [
      `${FILE}:6:20 affinity.spill.factor: expected a number between 1 and 100, got 0.9`,
      `${FILE}:6:35 affinity.spill.min_idle: expected a duration like "500ms", "5s", "3h" or a number of seconds, got "soon"`,
      `${FILE}:6:63 affinity.spill.max_moves_per_second: expected an integer between 1 and 1000000, got 0`,
    ],
  },
  {
    name: 'affinity.spill moves pinned users, so key none (round robin) is refused',
    text: yaml(...UPSTREAM, 'affinity:', '  key: none', '  spill: {}'),
    issues: [`${FILE}:6:10 affinity.spill: moves pinned users, so it needs a key (affinity.key is none: round robin pins nobody)`],
  },
  {
    name: 'a self-referencing alias (no stack overflow)',
    text: yaml('a: &x [*x]', ...UPSTREAM),
    issues: [`${FILE}:1:8: alias *x refers to itself`],
  },
  {
    name: 'listen.proxy_protocol is a boolean (a string "on" is refused, with the key and line)',
    text: yaml('listen: { proxy_protocol: "on" }', ...UPSTREAM),
    issues: [`${FILE}:1:27 listen.proxy_protocol: expected a boolean, got "on"`],
  },
  {
    name: 'a bracketed IPv6 bind address',
    text: yaml('listen: { host: "[::1]" }', ...UPSTREAM),
    issues: [`${FILE}:1:17 listen.host: write IPv6 addresses without brackets (::1)`],
  },
  {
    name: 'state.redis needs exactly one way to reach Redis',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { url: "http://x", nodes: ["a:1"] }'),
    issues: [`${FILE}:6:17 state.redis.url: expected a redis:// or rediss:// URL, got "http://x"`],
  },
  {
    name: 'state.redis with two ways',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { url: "redis://x:6379", nodes: ["a:1"] }'),
    issues: [`${FILE}:6:10 state.redis: set exactly one of url, sentinels (with name) or nodes when store is redis`],
  },
  {
    name: 'state.redis.sentinel_password is a string or null',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { sentinels: ["s:26379"], name: m, sentinel_password: 123 }'),
    issues: [`${FILE}:6:64 state.redis.sentinel_password: expected a string (quote it), got a number`],
  },
  {
    name: 'state.redis.sentinel_password only with sentinels',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis:', '    url: redis://x:6379', '    sentinel_password: s3cret'),
    issues: [`${FILE}:8:24 state.redis.sentinel_password: only with sentinels (the password of the server or of the Cluster nodes is state.redis.password)`],
  },
  {
    name: 'state.redis.username is a string or null',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { url: "redis://x:6379", username: 7 }'),
    issues: [`${FILE}:6:45 state.redis.username: expected a string, got 7`],
  },
  {
    name: 'state.redis.sentinel_username is a string or null',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { sentinels: ["s:26379"], name: m, sentinel_username: [a] }'),
    issues: [`${FILE}:6:64 state.redis.sentinel_username: expected a string, got a list`],
  },
  {
    name: 'state.redis.sentinel_username only with sentinels',
    text: yaml(...UPSTREAM, 'state:', '  store: redis', '  redis:', '    nodes: ["a:7000"]', '    sentinel_username: watcher'),
    issues: [`${FILE}:8:24 state.redis.sentinel_username: only with sentinels (the user of the server or of the Cluster nodes is state.redis.username)`],
  },
  {
    name: 'state.memory.max_bytes is a byte count of at least 1 MiB',
    text: yaml(...UPSTREAM, 'state:', '  memory: { max_bytes: 64MiB }'),
    issues: [`${FILE}:5:24 state.memory.max_bytes: expected an integer, got "64MiB"`],
  },
  {
    name: 'state.memory.max_bytes below the minimum',
    text: yaml(...UPSTREAM, 'state:', '  memory:', '    max_bytes: 65536'),
    issues: [`${FILE}:6:16 state.memory.max_bytes: expected an integer >= 1048576, got 65536`],
  },
  {
    name: 'the memory store must hold five of the largest checkpoints',
    text: yaml(...UPSTREAM, 'state:', '  max_bytes: 1048576', '  memory:', '    max_bytes: 4194304'),
    issues: [`${FILE}:7:16 state.memory.max_bytes: must be at least 5 x max_bytes (5242880) when store is memory`],
  },
  {
    name: 'a shared affinity table needs the Redis state store',
    text: yaml(...UPSTREAM, 'affinity:', '  shared: redis'),
    issues: [`${FILE}:5:11 affinity.shared: redis needs state.store: redis (the shared table lives in that Redis)`],
  },
  {
    name: 'duration rules',
    text: yaml(
      ...UPSTREAM,
      'affinity:',
      '  idle_timeout: 25h',
      'timeouts:',
      '  connect: 0s',
      '  response_headers: 5x',
      '  body_idle: -1',
      '  client_keep_alive: 1000h',
      '  client_headers: 0',
    ),
    issues: [
      `${FILE}:5:17 affinity.idle_timeout: expected a duration <= 24h, got "25h"`,
      `${FILE}:7:12 timeouts.connect: expected a duration > 0, got "0s"`,
      `${FILE}:8:21 timeouts.response_headers: expected a duration like "500ms", "5s", "3h" or a number of seconds, got "5x"`,
      `${FILE}:9:14 timeouts.body_idle: expected a duration like "500ms", "5s", "3h" or a number of seconds, got -1`,
      `${FILE}:10:22 timeouts.client_keep_alive: expected a duration <= 596h (24.8 days, the Node.js timer limit), got "1000h"`,
      `${FILE}:11:19 timeouts.client_headers: expected a duration > 0, got 0`,
    ],
  },
  {
    // Node.js warns and fires a timer longer than 2^31-1 ms after 1 ms: 25d would close every
    // idle client at once, not after 25 days
    name: 'durations in days past the timer limit are refused at their key and line; a bound in h is said in days too',
    text: yaml(...UPSTREAM, 'affinity:', '  idle_timeout: 2d', 'timeouts:', '  client_keep_alive: 25d', '  body_idle: 4w', 'shutdown: { grace_period: 24.9d }'),
    issues: [
      `${FILE}:5:17 affinity.idle_timeout: expected a duration <= 24h, got "2d"`,
      `${FILE}:7:22 timeouts.client_keep_alive: expected a duration <= 596h (24.8 days, the Node.js timer limit), got "25d"`,
      `${FILE}:8:14 timeouts.body_idle: expected a duration <= 596h (24.8 days, the Node.js timer limit), got "4w"`,
      `${FILE}:9:27 shutdown.grace_period: expected a duration <= 596h (24.8 days, the Node.js timer limit), got "24.9d"`,
    ],
  },
  {
    name: 'unknown keys, with a suggestion when one is close',
    text: yaml(...UPSTREAM, 'tiemouts: {}', 'listen:', '  prot: 1', 'colour: red', '    '),
    issues: [
      `${FILE}:4:1 tiemouts: unknown key, did you mean \`timeouts\`?`,
      `${FILE}:6:3 listen.prot: unknown key, did you mean \`port\`?`,
      `${FILE}:7:1 colour: unknown key (expected one of: listen, admin, upstreams, affinity, timeouts, limits, forwarding, log, health, retries, discovery, shutdown, state, websocket, workers)`,
    ],
  },
  {
    // the docs name keys by their dotted path (`affinity.key`); a newcomer writes that path as the key
    name: 'a dotted key path written as a key: told to nest it, not given the list of keys',
    text: yaml(...UPSTREAM, 'affinity.key: client_ip', 'affinity:', '  cookie.secret: x', 'colour.x: red'),
    issues: [
      `${FILE}:4:1 affinity.key: unknown key: YAML does not nest keys by dots; write \`affinity: { key: ... }\`, or each key on its own line indented under the one before`,
      `${FILE}:6:3 affinity.cookie.secret: unknown key: YAML does not nest keys by dots; write \`cookie: { secret: ... }\`, or each key on its own line indented under the one before`,
      `${FILE}:7:1 colour.x: unknown key (expected one of: listen, admin, upstreams, affinity, timeouts, limits, forwarding, log, health, retries, discovery, shutdown, state, websocket, workers)`,
    ],
  },
  {
    name: 'an upstream without id or url',
    text: yaml('upstreams:', '  - weight: 2', '  - {id: b}'),
    issues: [
      `${FILE}:2:5 upstreams[0].id: missing required key`,
      `${FILE}:2:5 upstreams[0].url: missing required key`,
      `${FILE}:3:5 upstreams[1].url: missing required key`,
    ],
  },
  {
    name: 'bad upstream ids, weights and max_connections',
    text: yaml(
      'upstreams:',
      '  - {id: "a b", url: "http://a", weight: 0}',
      `  - {id: "-a", url: "http://a", weight: 1001}`,
      `  - {id: ${'x'.repeat(64)}, url: "http://a"}`,
      '  - {id: none, url: "http://a"}',
      '  - {id: c, url: "http://c", max_connections: 0}',
    ),
    issues: [
      `${FILE}:2:10 upstreams[0].id: expected an id of up to 63 letters, digits, ".", "_" or "-", starting with a letter or digit (not "none", the metrics\' label for no upstream), got "a b"`,
      `${FILE}:2:42 upstreams[0].weight: expected an integer between 1 and 1000, got 0`,
      `${FILE}:3:10 upstreams[1].id: expected an id of up to 63 letters, digits, ".", "_" or "-", starting with a letter or digit (not "none", the metrics\' label for no upstream), got "-a"`,
      `${FILE}:3:41 upstreams[1].weight: expected an integer between 1 and 1000, got 1001`,
      `${FILE}:4:10 upstreams[2].id: expected an id of up to 63 letters, digits, ".", "_" or "-", starting with a letter or digit (not "none", the metrics\' label for no upstream), got "${'x'.repeat(57)}..."`,
      `${FILE}:5:10 upstreams[3].id: expected an id of up to 63 letters, digits, ".", "_" or "-", starting with a letter or digit (not "none", the metrics\' label for no upstream), got "none"`,
      `${FILE}:6:47 upstreams[4].max_connections: expected an integer between 1 and 1000000, got 0`,
    ],
  },
  {
    name: 'duplicate ids name both indexes (even when the duplicate is otherwise invalid)',
    text: yaml(
      'upstreams:',
      '  - {id: a, url: "http://a"}',
      '  - {id: b, url: "http://b"}',
      '  - {id: a, url: "http://c"}',
      '  - {id: b, url: "nope"}',
    ),
    issues: [
      `${FILE}:4:10 upstreams[2].id: duplicate id "a" (also used by upstreams[0])`,
      `${FILE}:5:10 upstreams[3].id: duplicate id "b" (also used by upstreams[1])`,
      `${FILE}:5:18 upstreams[3].url: expected an http:// or https:// URL, got "nope"`,
    ],
  },
  {
    name: 'the admin listener on the proxy address',
    text: yaml(...UPSTREAM, 'listen: {host: 127.0.0.1, port: 9000}', 'admin:', '  listen: {port: 9000}'),
    issues: [`${FILE}:6:11 admin.listen: must not be the same address as listen (127.0.0.1:9000)`],
  },
  {
    name: 'the admin listener on a port the wildcard proxy listener holds',
    text: yaml(...UPSTREAM, 'listen: {port: 9901}'),
    issues: [`${FILE}:4:9 admin.listen: must not be the same address as listen (127.0.0.1:9901)`],
  },
  {
    name: 'drains that migrate and the log session secret: booleans, durations and secrets are checked where they stand',
    text: yaml(...UPSTREAM, 'affinity:', '  drain: { migrate: maybe, min_idle: -2s, idle: 1s }', 'log:', '  session_secret: short'),
    issues: [
      `${FILE}:5:21 affinity.drain.migrate: expected a boolean, got "maybe"`,
      `${FILE}:5:38 affinity.drain.min_idle: expected a duration like "500ms", "5s", "3h" or a number of seconds, got "-2s"`,
      `${FILE}:5:43 affinity.drain.idle: unknown key (expected one of: migrate, min_idle)`,
      `${FILE}:7:19 log.session_secret: expected a secret of at least 16 bytes, got 5`,
    ],
  },
  {
    name: 'many errors at once, in file order',
    text: yaml('listen:', '  port: -1', 'upstreams:', '  - id: a', '    url: ftp://a', 'log:', '  acces: true'),
    issues: [
      `${FILE}:2:9 listen.port: expected an integer between 0 and 65535, got -1`,
      `${FILE}:5:10 upstreams[0].url: expected an http:// or https:// URL, got "ftp://a"`,
      `${FILE}:7:3 log.acces: unknown key, did you mean \`access\`?`,
    ],
  },
]

for (const c of errorCases) {
  t.test(`rejects ${c.name}`, async (t) => {
    t.strictSame(issuesOf(t, c.text), c.issues)
  })
}

/** The common YAML mistakes: where the error points, the line and caret shown, and the hint. */
const syntaxCases: { name: string; text: string; issue: string; detail: string[] }[] = [
  {
    name: 'a tab as indentation',
    text: yaml('upstreams:', '\t- id: a'),
    issue: `${FILE}:2:1: YAML syntax error: Tabs are not allowed as indentation`,
    detail: ['  2 | →- id: a', '    | ^', 'hint: YAML indents with spaces only, and this line has a tab (shown as →): replace it with spaces'],
  },
  {
    name: 'a tab inside the indentation (the parser calls it a misaligned key)',
    text: yaml(...UPSTREAM.slice(0, 2), '  \turl: http://x'),
    issue: `${FILE}:3:3: YAML syntax error: All mapping items must start at the same column`,
    detail: ['  3 |   →url: http://x', '    |   ^', 'hint: YAML indents with spaces only, and this line has a tab (shown as →): replace it with spaces'],
  },
  {
    name: 'an unclosed double quote (located where it opens, not at the end of the file)',
    text: yaml('upstreams:', '  - id: a', '    url: "http://x', 'log: {}'),
    issue: `${FILE}:3:10: YAML syntax error: Missing closing "quote`,
    detail: ['  3 |     url: "http://x', '    |          ^', 'hint: this quoted value is never closed: end it with " on the same line'],
  },
  {
    name: 'an unclosed single quote after an escaped one',
    text: yaml('upstreams:', "  - id: 'it''s", '    url: x'),
    issue: `${FILE}:2:9: YAML syntax error: Missing closing 'quote`,
    detail: ["  2 |   - id: 'it''s", '    |         ^', "hint: this quoted value is never closed: end it with ' on the same line"],
  },
  {
    name: 'an unclosed flow map',
    text: yaml('listen: { host: a, port: 1', ...UPSTREAM),
    issue: `${FILE}:1:9: YAML syntax error: Flow map in block collection must be sufficiently indented and end with a }`,
    detail: ['  1 | listen: { host: a, port: 1', '    |         ^', 'hint: this { is not closed: a one-line {} map needs its } before the next key'],
  },
  {
    name: 'a key indented more than the one above it',
    text: yaml('upstreams:', '  - id: a', '     url: http://x'),
    issue: `${FILE}:3:6: YAML syntax error: Nested mappings are not allowed in compact mappings`,
    detail: ['  3 |      url: http://x', '    |      ^', 'hint: this line is indented more than the key above it, so YAML reads it as part of that value: line it up with the keys beside it'],
  },
  {
    name: 'a key indented less than the one above it',
    text: yaml(...UPSTREAM, 'listen:', '  host: a', ' port: 1'),
    issue: `${FILE}:6:2: YAML syntax error: All mapping items must start at the same column`,
    detail: ['  6 |  port: 1', '    |  ^', 'hint: the keys of one map must start at the same column: this line is indented differently from the key above it'],
  },
  {
    name: 'a list item key not lined up with the item\'s first key',
    text: yaml('upstreams:', '  - id: a', '   url: x'),
    issue: `${FILE}:3:4: YAML syntax error: Sequence item without - indicator`,
    detail: ['  3 |    url: x', '    |    ^', 'hint: this line is indented like an item of the list above but is not lined up with its keys: indent it like them, or start a new item with "- "'],
  },
  {
    name: 'a value containing ": "',
    text: yaml('upstreams:', '  - id: a', '    url: http://x: y'),
    issue: `${FILE}:3:10: YAML syntax error: Nested mappings are not allowed in compact mappings`,
    detail: ['  3 |     url: http://x: y', '    |          ^', 'hint: a value that contains ": " must be quoted, e.g. key: "a: b"'],
  },
  {
    name: 'a key without its colon',
    text: yaml('listen', '  port: 1'),
    issue: `${FILE}:1:1: YAML syntax error: Implicit keys need to be on a single line`,
    detail: ['  1 | listen', '    | ^', 'hint: a key needs a colon after it: write "listen:"'],
  },
  {
    name: 'a list item where a key was expected',
    text: yaml('log: {}', '- a'),
    issue: `${FILE}:2:1: YAML syntax error: Implicit keys need to be on a single line`,
    detail: ['  2 | - a', '    | ^', 'hint: a list item ("- ...") where a key was expected: indent it under the key whose list it is'],
  },
  {
    name: 'a duplicate key',
    text: yaml(...UPSTREAM, 'log: {}', 'log: {}'),
    issue: `${FILE}:5:1: YAML syntax error: Map keys must be unique`,
    detail: ['  5 | log: {}', '    | ^', 'hint: this key is already set above in the same map: keep one of them'],
  },
  {
    name: 'a value starting with a reserved character',
    text: yaml('admin: { token: @secret }', ...UPSTREAM),
    issue: `${FILE}:1:17: YAML syntax error: Plain value cannot start with reserved character @`,
    detail: ['  1 | admin: { token: ******* }', '    |                 ^', 'hint: a value starting with @ must be quoted, e.g. key: "@..."'],
  },
  {
    name: 'text after a closing quote',
    text: yaml(...UPSTREAM, 'admin: { token: "a" b }'),
    issue: `${FILE}:4:21: YAML syntax error: Unexpected scalar at node end`,
    detail: ['  4 | admin: { token: "*"** }', '    |                     ^', 'hint: there is text after the end of a value (after a closing quote or bracket): quote the whole value or remove the extra text'],
  },
  {
    // README's flow style with an unquoted variable: the "{" of "${" opens a map inside { }
    name: 'an unquoted ${VAR} inside a flow map: quote it (the caret under its $)',
    text: yaml('upstreams:', '  - { id: a, url: ${APP_URL} }'),
    issue: `${FILE}:2:19: YAML syntax error: Unexpected flow-map-start at node end`,
    detail: ['  2 |   - { id: a, url: ${APP_URL} }', '    |                   ^', 'hint: a ${VAR} inside { } or [ ] must be quoted, since YAML reads its { as the start of a map: write "${VAR}" (quotes around the whole value)'],
  },
  {
    name: 'two YAML documents (the parser\'s advice to call another function is left out)',
    text: yaml(...UPSTREAM, '---', 'log: {}'),
    issue: `${FILE}:4:1: YAML syntax error: Source contains multiple documents`,
    detail: ['  4 | ---', '    | ^', 'hint: the file holds more than one YAML document (a "---" line): keep one config per file'],
  },
  {
    name: 'a long one-line (JSON) config: the part of the line around the column',
    text: `{"upstreams": [{"id": "a", "url": "http://127.0.0.1:9001"}], "listen": {"host": "0.0.0.0", "port": 8080}, "log": {"level": "info", "access": true}, "admin": {"token": "y}\n`,
    issue: `${FILE}:1:168: YAML syntax error: Missing closing "quote`,
    detail: [
      '  1 | …el": "info", "access": true}, "admin": {"token": "**',
      `    | ${' '.repeat(50)}^`,
      'hint: this quoted value is never closed: end it with " on the same line',
    ],
  },
]

for (const c of syntaxCases) {
  t.test(`a YAML syntax error shows the line, a caret and a hint: ${c.name}`, async (t) => {
    try {
      parseConfig(c.text, FILE)
      t.fail('config was accepted')
    } catch (err) {
      t.ok(err instanceof ConfigError)
      const e = err as ConfigError
      t.strictSame(e.issues, [c.issue])
      t.strictSame(e.detail, c.detail)
      t.equal(e.message, [c.issue, ...c.detail].join('\n'))
    }
  })
}

/**
 * Secrets on the line a syntax error shows: masked character for character (the caret still
 * under the mistake), in every shape a password, passphrase, token or secret is written.
 */
const secretLineCases: { name: string; text: string; secret: string; detail: string[] }[] = [
  {
    name: 'a block password with ": " in it',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    password: hunter2: x'),
    secret: 'hunter2',
    detail: ['  6 |     password: **********', '    |               ^'],
  },
  {
    name: 'a URL with credentials',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    url: redis://u:s3cret@h:6379: x'),
    secret: 's3cret',
    detail: ['  6 |     url: redis://u:******@h:6379: x', '    |          ^'],
  },
  {
    name: 'a URL with credentials on a line of its own',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    url: redis://h:6379', '    redis://u:s3cret@h'),
    secret: 's3cret',
    detail: ['  7 |     redis://u:******@h', '    |     ^'],
  },
  {
    name: 'a flow mapping',
    text: yaml(...UPSTREAM, 'state: { redis: { password: hunter2, x: [ } }'),
    secret: 'hunter2',
    detail: ['  4 | state: { redis: { password: *******, x: [ } }', '    |                                         ^'],
  },
  {
    name: 'a URL in a flow mapping',
    text: yaml(...UPSTREAM, 'state: { redis: { url: redis://u:s3cret@h:6379, x: [ } }'),
    secret: 's3cret',
    detail: ['  4 | state: { redis: { url: redis://u:******@h:6379, x: [ } }', '    |                                                    ^'],
  },
  {
    name: 'an unclosed quoted Sentinel password (any case, `_`)',
    text: yaml(...UPSTREAM, 'state:', '  redis:', "    Sentinel_Password: 'hunter2"),
    secret: 'hunter2',
    detail: ["  6 |     Sentinel_Password: '*******", '    |                        ^'],
  },
  {
    name: 'a quoted passphrase with text after it (`-`)',
    text: yaml(...UPSTREAM, 'tls:', '  key-passphrase: "hunter2" x'),
    secret: 'hunter2',
    detail: ['  5 |   key-passphrase: "*******"**', '    |                             ^'],
  },
  {
    name: 'a quoted key in a JSON-style line',
    text: yaml(...UPSTREAM, '{"log": {"session_secret": "hunter2", "x": [}}'),
    secret: 'hunter2',
    detail: ['  4 | {"log": {"session_secret": "*******", "x": [}}', '    |                                            ^'],
  },
  {
    name: "a kubeconfig's private key (client-key-data)",
    text: yaml('users:', '  - name: u', '    user: { client-key-data: LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t, x: [ }'),
    secret: 'LS0tLS1CRUdJTi',
    detail: [`  3 |     user: { client-key-data: ${'*'.repeat(36)}, x: [ }`, `    | ${' '.repeat(70)}^`],
  },
  {
    name: 'JSON written without spaces',
    text: yaml(...UPSTREAM, 'state: {"redis":{"password":"hunter2","x":[}}'),
    secret: 'hunter2',
    detail: ['  4 | state: {"redis":{"password":"*******","x":[}}', '    |                                           ^'],
  },
  {
    name: 'a URL whose password has an @, after a character outside the BMP',
    text: yaml(...UPSTREAM, 'state: { redis: { key_prefix: "😀", url: redis://u:p@ss@h, x: [ } }'),
    secret: 'ss@',
    detail: ['  4 | state: { redis: { key_prefix: "😀", url: redis://u:****@h, x: [ } }', `    | ${' '.repeat(62)}^`],
  },
  {
    name: 'the second line of a password (its value on the next line)',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    password:', '      hunter2: x: y'),
    secret: 'hunter2',
    detail: ['  7 |       *************', '    |                ^'],
  },
  {
    name: 'the second line of a plain password over two lines',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    password: hunter', '      2: x'),
    secret: '2: x',
    detail: ['  7 |       ****', '    |       ^'],
  },
  {
    name: 'an explicit key (`? password`), its value on the line below',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    ? password', '    : "hunter2'),
    secret: 'hunter2',
    detail: ['  7 |     : "*******', '    |       ^'],
  },
  {
    name: 'a quoted password after a tag: the caret at its opening quote',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    password: !!str "hunter2'),
    secret: 'hunter2',
    detail: ['  6 |     password: ******"*******', '    |                     ^'],
  },
  {
    name: 'cookie secrets in rotation, a flow list',
    text: yaml(...UPSTREAM, 'affinity: { cookie: { secret: [s3cret-one, s3cret-two], x: [ } }'),
    secret: 's3cret-two',
    detail: [`  4 | affinity: { cookie: { secret: ${'*'.repeat(24)}, x: [ } }`, `    | ${' '.repeat(59)}^`],
  },
  {
    name: 'cookie secrets in rotation, a block list at the key\'s column',
    text: yaml(...UPSTREAM, 'affinity:', '  cookie:', '    secret:', '    - s3cret-one', '    - s3cret-two: x: y'),
    secret: 's3cret-two',
    detail: ['  8 |     ******************', '    |                   ^'],
  },
  {
    name: 'a value anchored for a password (the alias on a later line)',
    text: yaml(...UPSTREAM, 'common: { pw: &pw hunter2, x: [ }', 'state:', '  redis:', '    password: *pw'),
    secret: 'hunter2',
    detail: ['  4 | common: { pw: &pw *******, x: [ }', `    | ${' '.repeat(30)}^`],
  },
  {
    name: 'a password whose colon is missing (the hint repeats the line)',
    text: yaml(...UPSTREAM, 'state:', '  redis:', '    password hunter2', '    db: 1'),
    secret: 'hunter2',
    detail: ['  6 |     password *******', '    |     ^'],
  },
]

for (const c of secretLineCases) {
  t.test(`a YAML syntax error's line shows no secret, the caret still at the mistake: ${c.name}`, async (t) => {
    try {
      parseConfig(c.text, FILE)
      t.fail('config was accepted')
    } catch (err) {
      const e = err as ConfigError
      t.ok(e instanceof ConfigError)
      t.strictSame(e.detail.slice(0, 2), c.detail)
      t.notMatch(e.message, c.secret)
      t.equal(e.detail[1]!.indexOf('^') - '    | '.length, Number(/^:\d+:(\d+):/.exec(e.issues[0]!.slice(FILE.length))![1]) - 1, 'caret under the column the issue names')
    }
  })
}

t.test("a manifest's Kubernetes Secret (tether import): a syntax error in its data shows no value", async (t) => {
  const text = yaml('apiVersion: v1', 'kind: Secret', 'metadata: { name: db }', 'stringData:', '  DB_PASS: "hunter2', '---', 'kind: Service')
  try {
    parseYamlDocuments(text, 'app.yaml')
    t.fail('the manifest was accepted')
  } catch (err) {
    t.strictSame((err as ConfigError).detail.slice(0, 2), ['  5 |   DB_PASS: "*******', '    |            ^'])
    t.notMatch((err as ConfigError).message, 'hunter2')
  }
})

t.test("a manifest's Kubernetes Secret in JSON (kubectl -o json): a syntax error in its data shows no value", async (t) => {
  const text = yaml('{', '  "kind": "Secret",', '  "data": {', '    "tls.key": "LS0tLS1CRUdJTi" x', '  }', '}')
  try {
    parseYamlDocuments(text, 'app.json')
    t.fail('the manifest was accepted')
  } catch (err) {
    t.strictSame((err as ConfigError).detail.slice(0, 2), ['  4 |     ********** **************** *', `    | ${' '.repeat(32)}^`])
    t.notMatch((err as ConfigError).message, 'LS0t')
  }
})

t.test('validation errors carry no detail lines: the message is the issues', async (t) => {
  try {
    parseConfig(yaml(...UPSTREAM, 'log: { level: loud }'), FILE)
    t.fail('config was accepted')
  } catch (err) {
    t.strictSame((err as ConfigError).detail, [])
    t.equal((err as ConfigError).message, (err as ConfigError).issues.join('\n'))
  }
})

const urlCases: [url: string, result: string][] = [
  ['http://127.0.0.1:9001', 'http://127.0.0.1:9001'],
  ['http://127.0.0.1:9001/', 'http://127.0.0.1:9001'],
  ['http://Example.COM:80/', 'http://example.com'],
  ['http://[::1]:9001', 'http://[::1]:9001'],
  ['foo', 'expected an http:// or https:// URL, got "foo"'],
  ['127.0.0.1:9001', 'expected an http:// or https:// URL, got "127.0.0.1:9001"'],
  ['https://a:9001', 'https://a:9001'],
  ['HTTPS://A:443/', 'https://a'],
  ['ftp://a', 'expected an http:// or https:// URL, got "ftp://a"'],
  ['http://a/app', 'expected an http:// or https:// URL without a path, got "http://a/app"'],
  ['http://a/?x=1', 'expected an http:// or https:// URL without a query or fragment, got "http://a/?x=1"'],
  ['http://a?', 'expected an http:// or https:// URL without a query or fragment, got "http://a?"'],
  ['http://a#top', 'expected an http:// or https:// URL without a query or fragment, got "http://a#top"'],
  ['http://user:pw@a', 'expected an http:// or https:// URL without credentials'],
  ['http://a:99999', 'expected a port between 1 and 65535, got 99999 (in "http://a:99999")'],
]

t.test('upstream URLs are normalised to their origin or rejected', async (t) => {
  for (const [url, result] of urlCases) {
    const text = yaml('upstreams:', '  - id: a', `    url: ${JSON.stringify(url)}`)
    if (/^https?:\/\//.test(result)) {
      t.equal(parseConfig(text, FILE).upstreams[0]?.url, result, url)
    } else {
      t.strictSame(issuesOf(t, text), [`${FILE}:3:10 upstreams[0].url: ${result}`], url)
    }
  }
})

t.test('a file on disk: issues carry the path as given', async (t) => {
  const path = fixture('invalid.yaml')
  t.throws(() => loadConfigFile(path), {
    name: 'ConfigError',
    issues: [
      `${path}:2:9 listen.port: expected an integer between 0 and 65535, got 70000`,
      `${path}:5:10 upstreams[0].url: expected an http:// or https:// URL, got "foo"`,
    ],
  })
})

t.test('an unreadable file is a one-line ConfigError', async (t) => {
  const path = 'test/fixtures/config/does-not-exist.yaml'
  t.throws(() => loadConfigFile(path), {
    code: 'TETHER_CONFIG_INVALID',
    message: `${path}: cannot read config: no such file or directory (ENOENT)`,
  })
})

/** The issues of a config text whose PEM files are checked, relative to test/fixtures/config/. */
function fileIssuesOf(t: Test, text: string): readonly string[] {
  try {
    parseConfig(text, fixture('tls.yaml'), {}, pemFiles)
  } catch (err) {
    if (err instanceof ConfigError) return err.issues
    throw err
  }
  t.fail('config was accepted')
  return []
}

t.test('TLS files are checked where the config names them: readable, the right PEM, a matching pair', async (t) => {
  const at = (line: number, col: number, rest: string): string => `${fixture('tls.yaml')}:${line}:${col} ${rest}`
  const tlsAt = (name: string): string => fixture(`tls/${name}`)
  t.strictSame(fileIssuesOf(t, yaml(...UPSTREAM, 'listen:', '  tls: { cert: tls/missing.crt, key: tls/server.key }')), [
    at(5, 16, `listen.tls.cert: ${tlsAt('missing.crt')}: cannot read the certificate file (ENOENT)`),
  ], 'a missing file')
  t.strictSame(fileIssuesOf(t, yaml(...UPSTREAM, 'listen:', '  tls: { cert: tls/server.key, key: tls/server.crt }')), [
    at(5, 16, `listen.tls.cert: ${tlsAt('server.key')}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)`),
    at(5, 37, `listen.tls.key: ${tlsAt('server.crt')}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)`),
  ], 'certificate and key swapped')
  t.strictSame(fileIssuesOf(t, yaml(...UPSTREAM, 'listen:', '  tls: { cert: tls/server.crt, key: tls/other.key }')), [
    at(5, 37, 'listen.tls.key: the private key does not belong to the certificate'),
  ], 'a key of another certificate')
  t.strictSame(fileIssuesOf(t, yaml(...UPSTREAM, 'listen:', '  tls:', '    cert: tls/server.crt', '    key: tls/server.key', '    certificates: [{ cert: tls/other.crt, key: tls/client.key }]')), [
    at(8, 48, 'listen.tls.certificates[0].key: the private key does not belong to the certificate'),
  ], 'an SNI pair that does not match')
  t.strictSame(fileIssuesOf(t, yaml('upstreams:', '  - id: a', '    url: https://127.0.0.1:9001', '    tls: { ca: tls/ca.key }')), [
    at(4, 16, `upstreams[0].tls.ca: ${tlsAt('ca.key')}: cannot read the CA bundle file (ENOENT)`),
  ], 'a CA that is not there')
  t.strictSame(fileIssuesOf(t, yaml('upstreams:', '  - id: a', '    url: https://127.0.0.1:9001', '    tls: { cert: tls/client.crt }')), [
    at(4, 10, 'upstreams[0].tls.key: required with cert'),
  ], 'a client certificate without its key')
  const ok = parseConfig(yaml('upstreams:', '  - id: a', '    url: https://127.0.0.1:9001', 'forwarding:', '  tls: { ca: tls/ca.crt, cert: tls/client.crt, key: tls/client.key }'), fixture('tls.yaml'), {}, pemFiles)
  t.strictSame(ok.upstreams[0]?.tls, { ca: tlsAt('ca.crt'), servername: null, cert: tlsAt('client.crt'), key: tlsAt('client.key'), verify: true }, 'relative paths resolve from the config file\'s directory')
})

const tlsRuleCases: { name: string; text: string; issues: string[] }[] = [
  {
    name: 'tls on an http:// upstream',
    text: yaml('upstreams:', '  - id: a', '    url: http://127.0.0.1:9001', '    tls: { verify: false }'),
    issues: [`${FILE}:4:10 upstreams[0].tls: is for https:// upstreams only`],
  },
  {
    name: 'a redirect listener without tls',
    text: yaml(...UPSTREAM, 'listen:', '  redirect: { port: 8081 }'),
    issues: [`${FILE}:5:13 listen.redirect: redirects to https://, so it needs listen.tls`],
  },
  {
    name: 'cleartext h2 on a TLS listener',
    text: yaml(...UPSTREAM, 'listen:', '  tls: { cert: /c.pem, key: /k.pem }', '  http2: { cleartext: true }'),
    issues: [`${FILE}:6:23 listen.http2.cleartext: is for a listener without tls (h2 over TLS is negotiated by ALPN)`],
  },
  {
    name: 'a redirect listener on the TLS listener\'s port',
    text: yaml(...UPSTREAM, 'listen:', '  port: 8443', '  tls: { cert: /c.pem, key: /k.pem }', '  redirect: { port: 8443 }'),
    issues: [`${FILE}:7:13 listen.redirect: must not be the same address as listen (0.0.0.0:8443)`],
  },
  {
    name: 'HSTS preload without includeSubDomains and a year',
    text: yaml(...UPSTREAM, 'listen:', '  tls: { cert: /c.pem, key: /k.pem, hsts: { max_age: 1h, preload: true } }'),
    issues: [`${FILE}:5:67 listen.tls.hsts.preload: needs include_subdomains: true and a max_age of at least 365 days (hstspreload.org)`],
  },
  {
    name: 'an unknown TLS version and a servername that is not a DNS name',
    text: yaml(...UPSTREAM, 'listen:', '  tls: { cert: /c.pem, key: /k.pem, min_version: TLSv1.1 }', 'forwarding:', '  tls: { servername: "a b" }'),
    issues: [
      `${FILE}:5:50 listen.tls.min_version: expected one of: "TLSv1.2", "TLSv1.3", got "TLSv1.1"; did you mean "TLSv1.2" or "TLSv1.3"?`,
      `${FILE}:7:22 forwarding.tls.servername: expected a DNS name, got "a b"`,
    ],
  },
]

for (const c of tlsRuleCases) {
  t.test(`rejects ${c.name}`, async (t) => {
    t.strictSame(issuesOf(t, c.text), c.issues)
  })
}

t.test('state.redis.name without sentinels is accepted (an existing file keeps loading) with a warning naming the key and its line', async (t) => {
  const text = yaml(...UPSTREAM, 'state:', '  store: redis', '  redis:', '    url: redis://x:6379', '    name: mymaster')
  const config = parseConfig(text, FILE)
  t.equal(config.state.redis.name, 'mymaster', 'accepted as before')
  t.strictSame(configWarnings(config), [`${FILE}:8:11 state.redis.name: ignored without sentinels (it names the Sentinel master)`])
  const sentinel = parseConfig(yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { sentinels: ["s:26379"], name: mymaster }'), FILE)
  t.strictSame(configWarnings(sentinel), [], 'none with sentinels')
  const memory = parseConfig(yaml(...UPSTREAM, 'state:', '  store: memory', '  redis: { name: mymaster }'), FILE)
  t.strictSame(configWarnings(memory), [], 'none when Redis is not used')
})

t.test('a way to reach Redis set while state.store is not redis is accepted with a warning naming the key and its line', async (t) => {
  const url = parseConfig(yaml(...UPSTREAM, 'state:', '  redis:', '    url: redis://x:6379'), FILE)
  t.equal(url.state.store, 'memory', 'accepted as before: the memory store')
  t.strictSame(configWarnings(url), [`${FILE}:6:10 state.redis.url: ignored with state.store: memory (Tether uses Redis only with store: redis)`])
  const none = parseConfig(yaml(...UPSTREAM, 'state:', '  store: none', '  redis: { sentinels: ["s:26379"], name: m }'), FILE)
  t.strictSame(configWarnings(none), [`${FILE}:6:23 state.redis.sentinels: ignored with state.store: none (Tether uses Redis only with store: redis)`])
})

t.test('affinity.header.name with a byte other than a letter, a digit or "-" is accepted with a warning: it routes but is not forwarded unless forwarding.allow_underscores', async (t) => {
  const tilde = parseConfig(yaml(...UPSTREAM, 'affinity:', '  key: header', '  header: { name: X~Tenant }'), FILE)
  t.equal(tilde.affinity.header.name, 'X~Tenant', 'accepted')
  t.strictSame(configWarnings(tilde), [`${FILE}:6:19 affinity.header.name: X~Tenant routes, but is not forwarded to the upstream: a name with a byte other than a letter, a digit or "-" is dropped unless forwarding.allow_underscores: true`])
  t.strictSame(configWarnings(parseConfig(yaml(...UPSTREAM, 'affinity:', '  key: header', '  header: { name: X_Tenant }', 'forwarding:', '  allow_underscores: true'), FILE)), [], 'none when such names are forwarded')
  t.strictSame(configWarnings(parseConfig(yaml(...UPSTREAM, 'affinity:', '  key: header', '  header: { name: X-Tenant }'), FILE)), [], 'none for a plain name')
  t.strictSame(configWarnings(parseConfig(yaml(...UPSTREAM, 'affinity:', '  key: cookie', '  header: { name: X_Tenant }'), FILE)), [], 'none when the key is not the header')
})

t.test('retries.hedge_after that can never fire (attempts 0, or not before try_duration) is accepted with a warning naming the key and its line', async (t) => {
  const none = parseConfig(yaml(...UPSTREAM, 'retries:', '  attempts: 0', '  hedge_after: 200ms'), FILE)
  t.equal(none.retries.hedge_after, 200, 'accepted as before')
  t.strictSame(configWarnings(none), [`${FILE}:6:16 retries.hedge_after: never fires with retries.attempts: 0 (a hedge is one of the attempts; set attempts to 1 or more)`])
  const late = parseConfig(yaml(...UPSTREAM, 'retries:', '  try_duration: 100ms', '  hedge_after: 200ms'), FILE)
  t.strictSame(configWarnings(late), [`${FILE}:6:16 retries.hedge_after: never fires: it is not shorter than retries.try_duration (a hedge starts only within try_duration)`])
  t.strictSame(configWarnings(parseConfig(yaml(...UPSTREAM, 'retries:', '  attempts: 1', '  hedge_after: 200ms'), FILE)), [], 'none when a hedge can fire')
  t.strictSame(configWarnings(parseConfig(yaml(...UPSTREAM, 'retries:', '  attempts: 0'), FILE)), [], 'none without hedge_after')
})

t.test('an invalid state.redis.url never shows its password, even one with a / (a base64 password) or a #', async (t) => {
  for (const [url, shown] of [
    ['redis://tether:pa/ss+w0rd=@redis:6379', 'redis://***@redis:6379'],
    ['redis://:s3/cr3t@redis', 'redis://***@redis'],
    ['redis://tether:s3cr3t@redis:99999', 'redis://***@redis:99999'],
    ['redis://tether:s3#cr/et@redis', 'redis://***@redis'],
  ] as const) {
    const issues = issuesOf(t, yaml(...UPSTREAM, 'state:', '  store: redis', `  redis: { url: "${url}" }`))
    t.strictSame(issues, [`${FILE}:6:17 state.redis.url: expected a redis:// or rediss:// URL, got "${shown}"`], url)
  }
  // one that is no address once they are masked (its @host forgotten, a password in its place, a
  // path) is not shown at all: its length only
  for (const url of ['redis://:s3cr3t', 's3cr3t', 'http://redis:6379/s3cr3t']) {
    const issues = issuesOf(t, yaml(...UPSTREAM, 'state:', '  store: redis', `  redis: { url: "${url}" }`))
    t.strictSame(issues, [`${FILE}:6:17 state.redis.url: expected a redis:// or rediss:// URL, got a value of ${url.length} characters that is no address (not shown: it may hold a password)`], url)
  }
  // a valid URL whose "path" is the end of such a password: refused by tether check, not at start-up
  t.strictSame(issuesOf(t, yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { url: "redis://tether:s3@cr/et@redis" }')),
    [`${FILE}:6:17 state.redis.url: expected a redis:// or rediss:// URL whose path is a db number (e.g. redis://redis:6379/0); a / in a password is written %2F`])
  t.equal(parseConfig(yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { url: "redis://tether:s3%2Fcr@redis:6379/2" }'), FILE).state.redis.url, 'redis://tether:s3%2Fcr@redis:6379/2', 'a db number and an escaped / are fine')
})

t.test('a state.redis.url with a query is refused without showing it: Tether reads none of its parameters (a ?password= would be ignored)', async (t) => {
  for (const url of ['redis://redis:6379/0?password=s3cret', 'rediss://tether@redis?sentinelPassword=s3cret&db=1', 'redis://redis?family=6']) {
    const issues = issuesOf(t, yaml(...UPSTREAM, 'state:', '  store: redis', `  redis: { url: "${url}" }`))
    t.strictSame(issues, [`${FILE}:6:17 state.redis.url: expected a redis:// or rediss:// URL without a query (?...): Tether reads none of its parameters; write the db as the path (redis://host:6379/1) and the password in state.redis.password or as redis://user:password@host`], url)
  }
  // an invalid URL is quoted without its query
  t.strictSame(issuesOf(t, yaml(...UPSTREAM, 'state:', '  store: redis', '  redis: { url: "redis://redis:99999?password=s3cret" }')),
    [`${FILE}:6:17 state.redis.url: expected a redis:// or rediss:// URL, got "redis://redis:99999?***"`])
})

t.test('a password, token or secret written unquoted as a number is refused without showing it (a reload logs the issues)', async (t) => {
  const issues = issuesOf(t, yaml(
    'admin: { token: 31415926535897932 }',
    'affinity: { cookie: { secret: 27182818284590452 } }',
    ...UPSTREAM,
    'state:', '  store: redis', '  redis: { sentinels: ["s:26379"], name: m, password: 16180339887, sentinel_password: 14142135623 }',
  ))
  t.equal(issues.length, 4, issues.join('\n'))
  for (const issue of issues) t.match(issue, /: expected a string \(quote it\), got a number$/, issue)
  for (const digits of ['31415', '27182', '16180', '14142']) t.notMatch(issues.join('\n'), digits, `${digits}... not shown`)
})

t.test('a file saved by Windows tools loads as its UTF-8 twin: a BOM, CRLF line ends, UTF-16 (PowerShell 5\'s >) with or without a BOM', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-'))
  const text = yaml(...UPSTREAM, 'listen: { port: 8081 }')
  const crlf = text.replace(/\n/g, '\r\n')
  const utf16be = (s: string): Buffer => Buffer.from(s, 'utf16le').swap16()
  const files: [string, Buffer][] = [
    ['utf-8 with a BOM', Buffer.from(`\ufeff${text}`, 'utf8')],
    ['utf-8, CRLF', Buffer.from(crlf, 'utf8')],
    ['UTF-16LE with a BOM, CRLF (Windows PowerShell 5: tether import x.yaml > proxy.yaml)', Buffer.from(`\ufeff${crlf}`, 'utf16le')],
    ['UTF-16LE without a BOM', Buffer.from(text, 'utf16le')],
    ['UTF-16BE with a BOM', utf16be(`\ufeff${text}`)],
    ['UTF-16BE without a BOM', utf16be(text)],
  ]
  const expected = parseConfig(text, FILE)
  for (const [name, bytes] of files) {
    const path = join(dir, 'proxy.yaml')
    writeFileSync(path, bytes)
    t.strictSame(loadConfigFile(path, {}), expected, name)
  }
  // its mistakes located as in the UTF-8 file
  const path = join(dir, 'bad.yaml')
  writeFileSync(path, Buffer.from(`\ufeff${yaml(...UPSTREAM, 'listen: { prot: 8081 }').replace(/\n/g, '\r\n')}`, 'utf16le'))
  const error = ((): unknown => { try { return loadConfigFile(path, {}) } catch (err) { return err } })()
  t.ok(error instanceof ConfigError)
  t.strictSame((error as ConfigError).issues, [`${path}:4:11 listen.prot: unknown key, did you mean \`port\`?`])
})

t.test('a UTF-8 file with a zero byte second is read as UTF-8, not as UTF-16 (one zero byte is no pattern); UTF-16 without a BOM still is', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-'))
  const text = yaml(...UPSTREAM, 'listen: { port: 8081 }')
  const expected = parseConfig(text, FILE)
  const utf16be = (s: string): Buffer => Buffer.from(s, 'utf16le').swap16()
  const files: [string, Buffer][] = [
    ['UTF-8, a comment whose first character is NUL (an export tool\'s), odd length', Buffer.from(`#\u0000 exported\n${text}`, 'utf8')],
    ['UTF-8, the same, even length', Buffer.from(`#\u0000 exported.\n${text}`, 'utf8')],
    ['UTF-16LE without a BOM, a first line in Japanese', Buffer.from(`# 設定ファイル\n${text}`, 'utf16le')],
    ['UTF-16BE without a BOM, a first line in Japanese', utf16be(`# 設定ファイル\n${text}`)],
  ]
  for (const [name, bytes] of files) {
    const path = join(dir, 'proxy.yaml')
    writeFileSync(path, bytes)
    t.strictSame(loadConfigFile(path, {}), expected, name)
  }
})

t.test('"did you mean" names every candidate equally close (up to 5, the rest counted), never one picked by chance', async (t) => {
  const cases: [string, string[], string | undefined][] = [
    ['cookies', ['none', 'cookie'], 'did you mean "cookie"?'],
    ['TLSv1.1', ['TLSv1.2', 'TLSv1.3'], 'did you mean "TLSv1.2" or "TLSv1.3"?'],
    ['app-3', ['app-0', 'app-1', 'app-2', 'web-0'], 'did you mean "app-0", "app-1" or "app-2"?'],
    ['app-9', ['app-10', 'app-1'], 'did you mean "app-1"?'], // the closer one alone
    ['pod-x', ['pod-0', 'pod-1', 'pod-2', 'pod-3', 'pod-4', 'pod-5', 'pod-6'], 'did you mean one of "pod-0", "pod-1", "pod-2", "pod-3", "pod-4" (or 2 more as close)?'],
    ['sticky', ['none', 'cookie'], undefined],
  ]
  for (const [word, candidates, said] of cases) t.equal(didYouMean(nearest(word, candidates)), said, word)
  t.equal(didYouMean(nearest('prot', ['port', 'pert']), (k) => `\`${k}\``), 'did you mean `port` or `pert`?', 'keys in backquotes')
})

t.test('a control character in a key or value from the file is echoed escaped (as JSON.stringify writes it), never raw', async (t) => {
  const keys = ['upstreams: []', '"fo\\0o": 1', '"lo\\ag": x', 'listen: { "po\\x85rt": 1 }', 'workers: "a\\x7fb"', 'log: { level: "\\u202Einfo" }']
  t.strictSame(issuesOf(t, yaml(...keys)), [
    `${FILE}:2:1 "fo\\u0000o": unknown key (expected one of: listen, admin, upstreams, affinity, timeouts, limits, forwarding, log, health, retries, discovery, shutdown, state, websocket, workers)`,
    `${FILE}:3:1 "lo\\u0007g": unknown key, did you mean \`log\`?`,
    `${FILE}:4:11 listen."po\\u0085rt": unknown key, did you mean \`port\`?`,
    `${FILE}:5:10 workers: expected an integer between 1 and 256 or "auto", got "a\\u007fb"`,
    `${FILE}:6:15 log.level: expected one of: "fatal", "error", "warn", "info", "debug", "trace", "silent", got "\\u202einfo"; did you mean "info"?`,
  ])
  // a syntax error's quoted line: each control character shown as its symbol (U+2400 + code), so the caret keeps its column
  let detail: readonly string[] = []
  try { parseConfig('upstreams: []\nlog: [ "x\u0002\u001b[31m \n', FILE) } catch (err) { detail = (err as ConfigError).detail }
  t.strictSame(detail.slice(0, 2), ['  2 | log: [ "x\u2402\u241b[31m ', '    |        ^'])
})

t.test('a binary file given as the config (gzip, an archive, NUL bytes) is one line naming it and what it looks like', async (t) => {
  const { gzipSync } = await import('node:zlib')
  const dir = mkdtempSync(join(tmpdir(), 'tether-binary-'))
  const text = yaml(...UPSTREAM, 'affinity: { key: cookie }')
  const latin1 = Buffer.from(`${text}# ${'réglé à été '.repeat(3)}\n`, 'latin1')
  const cases: [string, Buffer, string][] = [
    ['proxy.yaml.gz', gzipSync(text), 'gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (gunzip -k FILE)'],
    ['proxy.zip', Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.from(text)]), 'a zip archive (it starts with 50 4b 03 04), not YAML text'],
    ['tether', Buffer.from('\x7fELF\x02\x01\x01\x00\x00\x00', 'latin1'), 'an ELF executable (it starts with 7f 45 4c 46), not YAML text'],
    ['nul.bin', Buffer.concat([Buffer.from(`${text}log:\n  level: in`), Buffer.from([0, 0, 0, 1, 2, 3, 0, 0, 0, 9, 5, 0, 0])]), 'binary data (12 NUL or other control bytes, the first at line 6, column 12), not YAML text'],
    // the decompression hint runs as given: gunzip -k/unxz -k/unzstd want the format's suffix, gzip -dc does not
    ['proxy.yaml', gzipSync(text), "gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (gzip -dc FILE > DIR/proxy.decompressed.yaml)"],
    ['proxy.yaml.xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0]), 'xz-compressed data (it starts with fd 37 7a 58 5a 00), not YAML text: decompress it first (unxz -k FILE)'],
    ['proxy.xz.yaml', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0]), 'xz-compressed data (it starts with fd 37 7a 58 5a 00), not YAML text: decompress it first (xz -dc FILE > DIR/proxy.xz.decompressed.yaml)'],
    ['proxy.yaml.zst', Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0]), 'zstd-compressed data (it starts with 28 b5 2f fd), not YAML text: decompress it first (unzstd FILE)'],
    ['conf', Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0]), 'zstd-compressed data (it starts with 28 b5 2f fd), not YAML text: decompress it first (zstd -dc FILE > DIR/conf.decompressed.yaml)'],
    // "line L, column C" counts characters as an editor does: an emoji is one, a BOM none
    ['emoji.bin', Buffer.from(`# \u{1F680} ${'\0'.repeat(9)}\n`, 'utf8'), 'binary data (9 NUL or other control bytes, the first at line 1, column 5), not YAML text'],
    ['bom.bin', Buffer.from(`\ufeff# ${'\0'.repeat(9)}\n`, 'utf8'), 'binary data (9 NUL or other control bytes, the first at line 1, column 3), not YAML text'],
  ]
  for (const [name, bytes, what] of cases) {
    const file = join(dir, name)
    writeFileSync(file, bytes)
    const err = (() => { try { loadConfigFile(file, {}) } catch (e) { return e } return undefined })()
    t.ok(err instanceof ConfigError, `${name}: refused`)
    t.strictSame((err as ConfigError).issues, [`${file}: ${what.replace('FILE', file).replace('DIR', dir)}`], name)
    t.strictSame((err as ConfigError).detail, [], `${name}: one line, no excerpt of its bytes`)
  }
  // a relative name that starts with "-" is written ./-name in the hint, else the tool takes it
  // for its options (gunzip: "invalid option -- 's'"); the hint runs as given
  const cwd = process.cwd()
  process.chdir(dir)
  try {
    writeFileSync('-svc.yaml.gz', gzipSync(text))
    const dash = (() => { try { loadConfigFile('-svc.yaml.gz', {}) } catch (e) { return e } return undefined })()
    t.strictSame((dash as ConfigError).issues, ['-svc.yaml.gz: gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (gunzip -k ./-svc.yaml.gz)'])
    const { execFileSync } = await import('node:child_process')
    execFileSync('sh', ['-c', 'gunzip -k ./-svc.yaml.gz'])
    t.equal(readFileSync('-svc.yaml', 'utf8'), text, 'the hint decompresses the file')
  } finally {
    process.chdir(cwd)
  }
  // a lone NUL (in a comment: an export tool's) is no sign of binary data; in a value, it is validated (and escaped)
  const nul = join(dir, 'nul.yaml')
  writeFileSync(nul, `${text}log:\n  level: in\0fo\n`)
  const lone = (() => { try { loadConfigFile(nul, {}) } catch (e) { return e } return undefined })()
  t.strictSame((lone as ConfigError).issues, [`${nul}:6:10 log.level: expected one of: "fatal", "error", "warn", "info", "debug", "trace", "silent", got "in\\u0000fo"; did you mean "info"?`])
  // bytes that are not UTF-8 (comments saved as Latin-1 or cp1252), few or many, are text read as before (each replaced)
  const few = join(dir, 'few.yaml')
  writeFileSync(few, Buffer.from(`${text}# réglé\n`, 'latin1'))
  t.equal(loadConfigFile(few, {}).affinity.key, 'cookie')
  const many = join(dir, 'latin1.yaml')
  writeFileSync(many, latin1)
  t.equal(loadConfigFile(many, {}).affinity.key, 'cookie', 'a Latin-1 file with 15 accented bytes in a comment')
  const cp1252 = join(dir, 'cp1252.yaml')
  writeFileSync(cp1252, Buffer.concat([Buffer.from([0x23, 0x20, ...Array(5).fill([0x93, 0x61, 0x94, 0x96]).flat()]), Buffer.from(`\n${text}`)]))
  t.equal(loadConfigFile(cp1252, {}).affinity.key, 'cookie', 'a cp1252 comment with 20 curly quotes and dashes')
})
