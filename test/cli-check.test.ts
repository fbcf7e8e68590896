// The tether command line, run as a real child process from dist/ (npm test builds first): `tether
// check` on valid files (what it counts and what it will discover) and on invalid ones
// (file:line:col, the key, the line with a caret, a hint), and a key with no effect warned of by
// check and run alike. Split from cli.test.ts, with cli-errors.test.ts and cli-run.test.ts.
import t from 'tap'
import { runCli, startCli, tempFile } from './fixtures/cli.js'

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

// `tether check -` (and `check --config -`) reads the config from stdin, as `tether import -`
// reads a manifest and as kubectl, yamllint and the like take "-" (CI: `kubectl get cm tether
// -o jsonpath='{.data.proxy\.yaml}' | tether check -`); its lines name `<stdin>` with line and
// column. Until 2026-12-05 `check -` was a usage error (`unknown argument "-"`) and `check
// --config -` looked for a file named "-".
t.test('check -: the config is read from stdin, and its lines name <stdin> with the line and column', async (t) => {
  const valid = 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\n'
  const [ok, viaOption] = await Promise.all([runCli(['check', '-'], {}, 15000, [], valid), runCli(['check', '--config', '-'], {}, 15000, [], valid)])
  t.same([ok.code, ok.stdout, ok.stderr], [0, '<stdin>: ok (1 static upstream)\n', ''])
  t.same([viaOption.code, viaOption.stdout], [0, '<stdin>: ok (1 static upstream)\n'], 'check --config - alike')
  const [key, syntax, empty] = await Promise.all([
    runCli(['check', '-'], {}, 15000, [], `${valid}listen:\n  prot: 80\n`),
    runCli(['check', '-'], {}, 15000, [], `${valid}listen:\n  port: [\n`),
    runCli(['check', '-'], {}, 15000, [], ''),
  ])
  t.same([key.code, key.stdout, key.stderr], [1, '', '<stdin>:4:3 listen.prot: unknown key, did you mean `port`?\n'])
  t.equal(syntax.code, 1)
  t.match(syntax.stderr, /^<stdin>:4:9: YAML syntax error: /)
  t.same([empty.code, empty.stderr], [1, '<stdin>:1:1: config is empty; expected a map with at least `upstreams`\n'], 'nothing piped in: an empty config')
})
