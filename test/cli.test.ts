// The tether command line, run as a real child process from dist/ (npm test builds first).
import t from 'tap'
import { mkdtempSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import net from 'node:net'
import { ROOT, runCli, startCli, tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { request, startUpstream } from './fixtures/upstream.js'

const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version

t.test('--help and --version', async (t) => {
  const help = await runCli(['--help'])
  t.equal(help.code, 0)
  t.match(help.stdout, /tether check <file>/)
  const v = await runCli(['--version'])
  t.equal(v.code, 0)
  t.equal(v.stdout.trim(), `tether ${version}`)
})

t.test('an unknown argument exits 2 with usage', async (t) => {
  const r = await runCli(['--bogus'])
  t.equal(r.code, 2)
  t.match(r.stderr, /unknown argument "--bogus"/)
  t.match(r.stderr, /Usage:/)
})

t.test('a URL with credentials echoed in an error reaches stderr with its password masked', async (t) => {
  // a Redis url pasted as an argument: the usage error names it
  const usage = await runCli(['run', 'redis://u:pw@h:6379'])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /unknown argument "redis:\/\/u:\*\*\*@h:6379"/)
  t.notMatch(usage.stderr, /pw/)
  // an admin URL with credentials: the admin client's error names it (port 1: nothing listens)
  const admin = await runCli(['session', 'k', '--admin', 'http://u:pw@127.0.0.1:1'])
  t.equal(admin.code, 1)
  t.match(admin.stderr, /http:\/\/u:\*\*\*@127\.0\.0\.1:1/)
  t.notMatch(admin.stderr, /pw/)
})

t.test('check: a valid file exits 0 and counts its static upstreams', async (t) => {
  const file = tempFile('ok.yaml', 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\n')
  const r = await runCli(['check', file])
  t.equal(r.code, 0)
  t.equal(r.stdout, `${file}: ok (1 static upstream)\n`)
})

t.test('check: a discovery config says what it will discover', async (t) => {
  const dns = 'discovery:\n  dns: { name: app-headless.default.svc.cluster.local, port: 8080 }\n'
  const both = tempFile('both.yaml', `upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\n  - { id: b, url: "http://127.0.0.1:9002" }\n${dns}`)
  const r = await runCli(['check', both])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, `${both}: ok (2 static upstreams; DNS discovery of app-headless.default.svc.cluster.local port 8080 every 5s)\n`)
  const only = tempFile('dns.yaml', 'discovery:\n  dns: { name: app.svc, port: 80, interval: 10s, family: ipv6, servers: ["127.0.0.1:5353"] }\n')
  const r2 = await runCli(['check', only])
  t.equal(r2.code, 0, r2.stderr)
  t.equal(r2.stdout, `${only}: ok (DNS discovery of app.svc port 80 every 10s, IPv6 only, asking 127.0.0.1:5353)\n`)
})

t.test('check: a YAML syntax error names file:line:col, shows the line with a caret under the column and a hint', async (t) => {
  const file = tempFile('syntax.yaml', 'upstreams:\n  - id: a\n    url: "http://127.0.0.1:9001\nlog: { level: info }\n')
  const r = await runCli(['check', file])
  t.equal(r.code, 1)
  t.equal(r.stdout, '')
  t.equal(r.stderr, [
    `${file}:3:10: YAML syntax error: Missing closing "quote`,
    '  3 |     url: "http://127.0.0.1:9001',
    '    |          ^',
    'hint: this quoted value is never closed: end it with " on the same line',
    '',
  ].join('\n'))
})

t.test('check: a misspelt choice gets a "did you mean"', async (t) => {
  const file = tempFile('enum.yaml', 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\naffinity:\n  key: cookies\n')
  const r = await runCli(['check', file])
  t.equal(r.code, 1)
  t.equal(r.stderr, `${file}:4:8 affinity.key: expected one of: "none", "cookie", "app_cookie", "client_ip", "header", got "cookies"; did you mean "cookie"?\n`)
})

t.test('check: an invalid file exits 1 naming file, line, column and key', async (t) => {
  const file = tempFile('bad.yaml', [
    'listen: { host: 0.0.0.0, port: 8080 }',
    'upstreams:',
    '  - { id: a, url: "http://127.0.0.1:9001" }',
    '  - { id: b, url: "foo" }',
    '',
  ].join('\n'))
  const r = await runCli(['check', file])
  t.equal(r.code, 1)
  t.match(r.stderr, new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:4:\\d+ upstreams\\[1\\]\\.url: `, 'm'))
  t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
})

t.test('check: a missing environment variable is named', async (t) => {
  const file = tempFile('env.yaml', 'upstreams:\n  - { id: a, url: "${APP_URL}" }\n')
  const bad = await runCli(['check', file])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /:2:\d+ upstreams\[0\]\.url: environment variable APP_URL is not set/)
  const good = await runCli(['check', file], { APP_URL: 'http://127.0.0.1:9001' })
  t.equal(good.code, 0, good.stderr)
})

t.test('check: a missing file exits 1 with a one-line error', async (t) => {
  const r = await runCli(['check', '/nonexistent/proxy.yaml'])
  t.equal(r.code, 1)
  t.match(r.stderr, /\/nonexistent\/proxy\.yaml/)
  t.equal(r.stderr.trim().split('\n').length, 1)
})

t.test('check and run: a config file that cannot be read is told with a URL\'s password in its path or OS message masked', async (t) => {
  for (const cmd of ['check', '--config']) {
    const r = await runCli([cmd, '/nonexistent/redis://u:pw@h/proxy.yaml'])
    t.equal(r.code, 1, cmd)
    t.match(r.stderr, /\/nonexistent\/redis:\/\/u:\*\*\*@h\/proxy\.yaml/, `${cmd}: the path told, masked`)
    t.notMatch(r.stderr, /pw/, `${cmd}: no password`)
  }
})

t.test('check, run and import: a config or manifest that cannot be read (a directory) is one line naming the file and the reason, no stack', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-'))
  for (const args of [['check', dir], ['--config', dir], ['run', '--config', dir]]) {
    const r = await runCli(args)
    t.equal(r.code, 1, args.join(' '))
    t.equal(r.stderr, `${dir}: cannot read config: illegal operation on a directory (EISDIR)\n`, args.join(' '))
  }
  const r = await runCli(['import', dir])
  t.equal(r.code, 1, 'import')
  t.equal(r.stderr, `tether import: cannot read ${dir}: illegal operation on a directory (EISDIR)\n`, 'import')
})

t.test('check: a syntax error on a line with a URL password keeps its caret under the column (the password masked one * per character)', async (t) => {
  const r = await runCli(['check', tempFile('proxy.yaml', 'upstreams: [ { id: a, url: "http://u:longpassword@h:1" }, x: [ }\n')])
  t.equal(r.code, 1)
  t.notMatch(r.stderr, /longpassword/)
  const lines = r.stderr.split('\n')
  const at = lines.findIndex((l) => l.startsWith('  1 | '))
  t.equal(lines[at], '  1 | upstreams: [ { id: a, url: "http://u:************@h:1" }, x: [ }')
  t.equal(lines[at]![lines[at + 1]!.indexOf('^')], '[', 'the caret under the [ that is not closed')
})

// loaded before the CLI: once the command sends its request (fetch's diagnostics channel), a throw
// nobody catches, from an event handler, with a URL password in its message
const THROW_HOOK = `data:text/javascript,${encodeURIComponent(`import { subscribe } from 'node:diagnostics_channel'
subscribe('undici:request:create', () => setImmediate(() => { throw new Error('stray throw from a test hook: redis://u:' + 'pw-in-hook' + '@h:6379\\n  on two lines') }))`)}`

t.test('session and drain: an exception nobody caught is one masked line and exit 1, not a stack', async (t) => {
  // an admin API that never answers: the command waits, the hook's throw comes first
  const sockets = new Set<net.Socket>()
  const admin = net.createServer((s) => { sockets.add(s) })
  await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of sockets) s.destroy(); admin.close() })
  const url = `http://127.0.0.1:${(admin.address() as net.AddressInfo).port}`
  for (const args of [['session', 'k', '--admin', url], ['drain', 'a', '--admin', url]]) {
    const r = await runCli(args, {}, 15000, [`--import=${THROW_HOOK}`])
    t.equal(r.code, 1, args[0])
    t.equal(r.stderr, 'tether: uncaught exception (a bug in Tether or a library): stray throw from a test hook: redis://u:***@h:6379 on two lines\n', args[0])
  }
})

t.test('check and run: state.redis.name without sentinels is a warning naming the key and its line, not a refusal', async (t) => {
  const file = tempFile('name.yaml', 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\nstate:\n  store: redis\n  redis:\n    url: redis://127.0.0.1:1\n    name: mymaster\n')
  const warning = `${file}:9:11 state.redis.name: ignored without sentinels (it names the Sentinel master)`
  const r = await runCli(['check', file])
  t.equal(r.code, 0, 'accepted')
  t.equal(r.stderr, `warning: ${warning}\n`)
  const tether = await startCli(file)
  await tether.stop('SIGTERM')
  const lines = tether.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.match(lines.filter((l) => l['msg'] === 'config warning: a key has no effect as set'), [{ level: 40, warning }], 'run logs it once, as a warn line')
})

t.test('run: proxies, logs JSON access lines, and stops cleanly on SIGTERM', async (t) => {
  const up = await startUpstream('a')
  t.teardown(() => up.close())
  const file = tempFile('run.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "${up.url}" }\n`)
  const tether = await startCli(file)
  const r = await request(`${tether.url}/hello?x=1`)
  t.equal(r.body, 'a\n')
  const exit = await tether.stop('SIGTERM')
  t.equal(exit.code, 0)
  const access = tether.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((l) => l['msg'] === 'access')
  t.match(access, { method: 'GET', path: '/hello?x=1', status: 200, upstream: 'a', outcome: 'ok' })
  t.type(access?.['duration_ms'], 'number')
})

t.test('run: LOG_LEVEL=warn overrides log.level and silences access lines', async (t) => {
  const up = await startUpstream('a')
  t.teardown(() => up.close())
  const port = await freePort()
  const file = tempFile('run.yaml', `listen: { host: 127.0.0.1, port: ${port} }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nlog: { level: info, access: true }\naffinity: { key: none }\nupstreams:\n  - { id: a, url: "${up.url}" }\n`)
  const tether = await startCli(file, { LOG_LEVEL: 'warn' }, undefined, port)
  t.equal((await request(tether.url)).body, 'a\n')
  t.equal((await tether.stop()).code, 0)
  t.equal(tether.stdout(), '', 'nothing below warn was logged')
})

t.test('run: a port already in use exits 1 with a one-line reason naming the key and the file', async (t) => {
  const blocker = net.createServer()
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r))
  t.teardown(() => blocker.close())
  const port = (blocker.address() as net.AddressInfo).port
  const file = tempFile('busy.yaml', `listen: { host: 127.0.0.1, port: ${port} }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n`)
  const adminFile = tempFile('busy-admin.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: ${port} } }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n`)
  const [r, admin] = await Promise.all([runCli(['--config', file]), runCli(['--config', adminFile])])
  t.equal(r.code, 1)
  t.equal(r.stderr, `tether: cannot listen on 127.0.0.1:${port} (listen.port in ${file}): address already in use (EADDRINUSE)\n`)
  t.notMatch(r.stdout, /stack|listener error/, 'and no log line with a stack trace besides')
  t.equal(admin.code, 1)
  t.equal(admin.stderr, `tether: cannot listen on 127.0.0.1:${port} (admin.listen.port in ${adminFile}): address already in use (EADDRINUSE)\n`)
})

t.test('run: the access log carries a request id (kept when well-formed, passed upstream) and the key kind', async (t) => {
  const ids: (string | undefined)[] = []
  const up = await startUpstream('a', (req, res) => {
    if (req.method !== 'OPTIONS') ids.push(req.headers['x-request-id'] as string | undefined) // not the health probes
    res.end('a\n')
  })
  t.teardown(() => up.close())
  const file = tempFile('rid.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "${up.url}" }\n`)
  const tether = await startCli(file)
  await request(tether.url, { headers: { 'x-request-id': 'abc-123' } })
  await request(tether.url, { headers: { 'x-request-id': 'bad id with spaces' } })
  await request(tether.url)
  t.equal((await tether.stop()).code, 0)
  t.equal(ids[0], 'abc-123', 'a well-formed client id is kept')
  t.match(ids[1], /^[0-9a-f-]{36}$/, 'a malformed one is replaced')
  t.match(ids[2], /^[0-9a-f-]{36}$/, 'a missing one is generated')
  const lines = tether.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l['msg'] === 'access')
  t.same(lines.map((l) => l['request_id']), ids, 'the log line names the id the upstream saw')
  t.same(lines.map((l) => l['key']), ['cookie', 'cookie', 'cookie'], 'the key kind, never the cookie value')
  t.notOk(tether.stdout().includes('tether='), 'no cookie value in the logs')
})

t.test('check: Kubernetes and SRV discovery say what they will discover', async (t) => {
  const k8s = tempFile('k8s.yaml', 'discovery:\n  kubernetes: { service: web, port: http }\n')
  const r = await runCli(['check', k8s])
  t.equal(r.code, 0, r.stderr)
  t.equal(r.stdout, `${k8s}: ok (Kubernetes discovery of Service web (the pod's namespace) port http (EndpointSlices))\n`)
  // check reads the kubeconfig as discovery will, so it must be there
  const kubeconfig = tempFile('config', 'apiVersion: v1\nkind: Config\ncurrent-context: dev\ncontexts: [{ name: dev, context: { cluster: dev } }]\nclusters: [{ name: dev, cluster: { server: "http://127.0.0.1:8001" } }]\n')
  const both = tempFile('both.yaml', `discovery:\n  kubernetes: { service: web, namespace: shop, port: 8080, kubeconfig: ${kubeconfig} }\n  dns: { name: _http._tcp.web.shop.svc.cluster.local, srv: true }\n`)
  const r2 = await runCli(['check', both])
  t.equal(r2.code, 0, r2.stderr)
  t.equal(r2.stdout, `${both}: ok (DNS SRV discovery of _http._tcp.web.shop.svc.cluster.local ports from SRV records every 5s; Kubernetes discovery of Service web (shop) port 8080 (EndpointSlices, through kubeconfig ${kubeconfig}))\n`)
})

t.test('run: Kubernetes discovery without credentials exits 1 with what to do, before listening', async (t) => {
  const file = tempFile('k8s.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\ndiscovery:\n  kubernetes: { service: web, port: http }\n`)
  const r = await runCli(['--config', file], { KUBERNETES_SERVICE_HOST: '' })
  t.equal(r.code, 1)
  t.equal(r.stderr, "tether: Kubernetes discovery: KUBERNETES_SERVICE_HOST is not set, so Tether is not running in a pod: set discovery.kubernetes.kubeconfig to run outside a cluster\n")
})

t.test('TETHER_WORKER set outside a primary (a value left in a shell): a one-line error and exit 1, never a wait for a primary', async (t) => {
  const bad = await runCli(['--config', 'config/proxy.yaml'], { TETHER_WORKER: '{"index":0}' })
  t.equal(bad.code, 1)
  t.match(bad.stderr, /TETHER_WORKER is set by Tether's primary for its workers .*: unset it/)
  const orphan = await runCli(['--config', 'config/proxy.yaml'], { TETHER_WORKER: '0' })
  t.equal(orphan.code, 1)
  t.match(orphan.stderr, /TETHER_WORKER is set, but this process was not started by a Tether primary: unset it/)
})
