// The tether command line, run as a real child process from dist/ (npm test builds first): `tether
// run` proxying, its JSON access lines and request ids, LOG_LEVEL, a port in use, and Kubernetes
// discovery without credentials. Split from cli.test.ts, with cli-check.test.ts and
// cli-errors.test.ts.
import t from 'tap'
import net from 'node:net'
import { runCli, startCli, tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { request, startUpstream } from './fixtures/upstream.js'

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

t.test('run: a LOG_LEVEL that is no level (a typo) is said in a warn line, not ignored without a word', async (t) => {
  const file = tempFile('run.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nlog: { level: info }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n`)
  const tether = await startCli(file, { LOG_LEVEL: 'verbose' })
  t.equal((await tether.stop()).code, 0)
  const lines = tether.stdout().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)
  const warned = lines.filter((l) => l['LOG_LEVEL'] !== undefined)
  t.equal(warned.length, 1, 'one warn line')
  t.match(warned[0], { level: 40, LOG_LEVEL: 'verbose', log_level: 'info', msg: 'LOG_LEVEL is not a log level (fatal, error, warn, info, debug, trace or silent): ignored, log.level applies' })
  t.ok(lines.some((l) => l['msg'] === 'tether listening'), 'log.level (info) applies')
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
  // matched as sets: an access line is written when its exchange ends, which under load can
  // come after the next request's line
  const sorted = (a: unknown[]) => a.map(String).sort()
  t.same(sorted(lines.map((l) => l['request_id'])), sorted(ids), 'the log lines name the ids the upstream saw')
  t.same(lines.map((l) => l['key']), ['cookie', 'cookie', 'cookie'], 'the key kind, never the cookie value')
  t.notOk(tether.stdout().includes('tether='), 'no cookie value in the logs')
})

t.test('run: Kubernetes discovery without credentials exits 1 with what to do, before listening', async (t) => {
  const file = tempFile('k8s.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\ndiscovery:\n  kubernetes: { service: web, port: http }\n`)
  const r = await runCli(['--config', file], { KUBERNETES_SERVICE_HOST: '' })
  t.equal(r.code, 1)
  t.equal(r.stderr, "tether: Kubernetes discovery: KUBERNETES_SERVICE_HOST is not set, so Tether is not running in a pod: set discovery.kubernetes.kubeconfig to run outside a cluster\n")
})
