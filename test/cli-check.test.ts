// The tether command line, run as a real child process from dist/ (npm test builds first): `tether
// check` on valid files (what it counts and what it will discover) and on invalid ones
// (file:line:col, the key, the line with a caret, a hint), and a key with no effect warned of by
// check and run alike. Split from cli.test.ts, with cli-errors.test.ts and cli-run.test.ts.
import t from 'tap'
import net from 'node:net'
import { openSync, readFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { CLI, cliCommand, ROOT, runCli, startCli, tempFile } from './fixtures/cli.js'
import { waitFor } from './fixtures/wait.js'

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

// stdin given a directory (`tether check - < /tmp`) is said so: until 2026-12-05 the line went on
// with the hint for a directory given by name, about a file named "-" ("a directory: name the
// YAML file in it (it holds none)"). `tether import -` alike.
t.test('check - and import - with a directory for stdin say so, without a hint about a directory named "-"', async (t) => {
  const [check, imp] = await Promise.all([runFromDirectory(['check', '-']), runFromDirectory(['import', '-'])])
  t.same([check.code, check.stderr], [1, '<stdin>: cannot read config: standard input is a directory\n'])
  t.same([imp.code, imp.stderr], [1, 'tether import: cannot read <stdin>: standard input is a directory\n'])
})

// `tether import -` names its input `<stdin>` in every line, as `check -` does (and gcc and
// Python): until 2026-12-05 its positions named it `-` (`-:5:7: YAML syntax error`, `Ingress a
// (-:1)`, `... in -`), which reads as a stray dash.
t.test('import -: its errors, findings and output name the input <stdin>, as check - does', async (t) => {
  const ingress = 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: a\nspec: {}\n'
  const [syntax, noBackend, nothing] = await Promise.all([
    runCli(['import', '-'], {}, 15000, [], 'apiVersion: v1\nkind: Service\nmetadata:\n  name: a\nspec: [\n'),
    runCli(['import', '-'], {}, 15000, [], ingress),
    runCli(['import', '-'], {}, 15000, [], 'a: 1\n'),
  ])
  t.equal(syntax.code, 1)
  t.match(syntax.stderr, /^tether import: <stdin>:5:7: YAML syntax error: /)
  t.same([noBackend.code, noBackend.stderr], [1, 'tether import: Ingress a (<stdin>:1) names no backend Service: nothing to discover\n'])
  t.equal(nothing.code, 1)
  t.match(nothing.stderr, / in <stdin>\n$/)
  const service = 'apiVersion: v1\nkind: Service\nmetadata: { name: shop, namespace: shop }\nspec:\n  selector: { app: shop }\n  sessionAffinity: ClientIP\n  ports: [{ port: 80 }]\n'
  const ok = await runCli(['import', '-'], {}, 15000, [], service)
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /from <stdin>\./, 'the output names where it came from')
  t.notMatch(ok.stdout + ok.stderr, /(^|[ (])-(:\d|[.,)]|$)/m, 'no line names the input "-"')
})

/** Run the CLI with `args` and the test directory itself as its stdin (as a shell's `< test`). */
function runFromDirectory(args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(...cliCommand([CLI, ...args]), { cwd: ROOT, stdio: [openSync(ROOT, 'r'), 'ignore', 'pipe'] })
    let stderr = ''
    p.stderr!.on('data', (c) => (stderr += c))
    p.on('close', (code) => resolve({ code, stderr }))
  })
}

// stdin that is non-blocking (O_NONBLOCK belongs to the pipe or socket, so whoever shares it may
// have set it: here the test, through its own handle on the socket) answers EAGAIN while nothing is
// written yet: until 2026-12-05 `check -` (readFileSync(0)) failed there with "<stdin>: cannot
// read config: resource temporarily unavailable (EAGAIN)". The first half of the config is
// written at once; the rest only once the child has read that half (the kernel's receive queue
// of its socket, /proc/net/tcp, is empty): its next read finds nothing yet.
t.test('check - reads a non-blocking stdin whose writer has not written yet (EAGAIN): it waits for the rest', async (t) => {
  const config = 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\n'
  const server = net.createServer({ pauseOnConnect: true })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve))
  const writer = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1')
  await new Promise<void>((resolve) => writer.once('connect', resolve))
  const stdin = await accepted // paused: this process never reads what the child is to read
  const p = spawn(...cliCommand([CLI, 'check', '-']), { cwd: ROOT, stdio: [stdin, 'pipe', 'pipe'] })
  // libuv makes a child's stdio blocking before it runs the command (uv__process_child_init):
  // once it runs, the socket is made non-blocking again through this process's handle on it
  // (the flag is the socket's, shared), before anything is written
  await new Promise<void>((resolve, reject) => { p.once('spawn', resolve); p.once('error', reject) })
  t.equal((stdin as unknown as { _handle: { setBlocking(blocking: boolean): number } })._handle.setBlocking(false), 0, 'the socket is non-blocking')
  stdin.destroy() // the child holds its own copy
  let stdout = ''
  let stderr = ''
  p.stdout!.on('data', (c) => (stdout += c))
  p.stderr!.on('data', (c) => (stderr += c))
  let exited = false
  const code = new Promise<number | null>((resolve) => p.on('close', (c) => { exited = true; resolve(c) }))
  const half = config.length >> 1
  await new Promise<void>((resolve, reject) => writer.write(config.slice(0, half), (err) => (err ? reject(err) : resolve()))) // in the child's receive queue (loopback)
  await waitFor(() => exited || receiveQueue(writer.localPort!, (server.address() as net.AddressInfo).port) === 0, 15_000, 'the child reads the first half')
  writer.end(config.slice(half))
  t.same([await code, stdout, stderr], [0, '<stdin>: ok (1 static upstream)\n', ''])
})

/** The bytes not read yet by the socket at local port `local` connected from port `remote` (IPv4 loopback), from /proc/net/tcp. */
function receiveQueue(remote: number, local: number): number | null {
  const hex = (n: number): string => n.toString(16).toUpperCase().padStart(4, '0')
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/)
    if (f[1]?.endsWith(`:${hex(local)}`) && f[2]?.endsWith(`:${hex(remote)}`)) return parseInt(f[4]!.split(':')[1]!, 16)
  }
  return null
}

// `tether check --syntax-only` (added 2026-12-05): a CI job or pre-commit hook validates the
// ConfigMap's proxy.yaml where the files it names do not exist (the TLS overlay's
// /etc/tether-tls/tls.crt, a kubeconfig), as promtool's `check config --syntax-only`. The full
// check fails naming each file; --syntax-only validates everything else, says the files it did
// not read, and still fails on a syntax error, an unknown key or an empty path.
t.test('check --syntax-only: missing PEM files and kubeconfig fail the full check naming each, pass without reading them; other errors still fail', async (t) => {
  const config = [
    'listen:',
    '  port: 8443',
    '  tls: { cert: /nonexistent/tether-tls/tls.crt, key: /nonexistent/tether-tls/tls.key }',
    'upstreams: []',
    'discovery:',
    '  kubernetes: { service: web, port: http, kubeconfig: /nonexistent/kubeconfig }',
    '',
  ].join('\n')
  const file = tempFile('syntax-only.yaml', config)
  const [full, syntaxOnly, viaOption, viaStdin] = await Promise.all([
    runCli(['check', file]),
    runCli(['check', '--syntax-only', file]),
    runCli(['check', '--config', file, '--syntax-only']),
    runCli(['check', '--syntax-only', '-'], {}, 15000, [], config),
  ])
  t.equal(full.code, 1)
  t.equal(full.stdout, '')
  for (const [key, path] of [['listen.tls.cert', '/nonexistent/tether-tls/tls.crt'], ['listen.tls.key', '/nonexistent/tether-tls/tls.key'], ['discovery.kubernetes.kubeconfig', '/nonexistent/kubeconfig']]) {
    t.match(full.stderr, `${key}: `, `the full check names ${key}`)
    t.match(full.stderr, path)
  }
  const discovers = "Kubernetes discovery of Service web (the kubeconfig context's namespace) port http (EndpointSlices, through kubeconfig /nonexistent/kubeconfig)"
  const unread = 'not read (--syntax-only): /nonexistent/tether-tls/tls.crt, /nonexistent/tether-tls/tls.key, /nonexistent/kubeconfig'
  t.same([syntaxOnly.code, syntaxOnly.stdout, syntaxOnly.stderr], [0, `${file}: syntax ok (${discovers}); ${unread}\n`, ''])
  t.same([viaOption.code, viaOption.stdout], [0, syntaxOnly.stdout], 'check --config <file> --syntax-only alike')
  t.same([viaStdin.code, viaStdin.stdout], [0, `<stdin>: syntax ok (${discovers}); ${unread}\n`], 'check --syntax-only - alike')
  const none = tempFile('syntax-only-none.yaml', 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\n')
  const [noFiles, syntax, key, empty] = await Promise.all([
    runCli(['check', '--syntax-only', none]),
    runCli(['check', '--syntax-only', '-'], {}, 15000, [], `${config}log: { level: [\n`),
    runCli(['check', '--syntax-only', '-'], {}, 15000, [], config.replace('port: 8443', 'prot: 8443')),
    runCli(['check', '--syntax-only', '-'], {}, 15000, [], config.replace('/nonexistent/tether-tls/tls.key', '""')),
  ])
  t.same([noFiles.code, noFiles.stdout], [0, `${none}: syntax ok (1 static upstream); it names no files: nothing was left unread\n`])
  t.equal(syntax.code, 1, 'a syntax error still fails')
  t.match(syntax.stderr, /^<stdin>:7:\d+: YAML syntax error: /)
  t.same([key.code, key.stdout, key.stderr], [1, '', '<stdin>:2:3 listen.prot: unknown key, did you mean `port`?\n'], 'an unknown key still fails')
  t.equal(empty.code, 1, 'an empty path still fails: paths are checked as values')
  t.match(empty.stderr, /^<stdin>:3:\d+ listen\.tls\.key: /)
})
