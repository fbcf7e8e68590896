// Hot reload: a changed config file (also a Kubernetes ConfigMap's symlink swap) is validated
// and applied without touching the listener; an invalid one is rejected and the old config
// keeps running; SIGHUP re-reads the file. No sleeps: the tests wait for Tether's log lines
// ('config reloaded', 'config reload rejected') under deadlines.
import t from 'tap'
import { mkdtempSync, renameSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startTether } from '../src/app.js'
import { CONFIG_WARNING, loadConfigFile } from '../src/config/index.js'
import { DEFAULTS } from '../src/config/schema.js'
import { diffConfig } from '../src/config/reload.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, request, proxyFor, testConfig } from './fixtures/upstream.js'
import { CookieJar, agentFor, get } from './fixtures/users.js'
import { startCli } from './fixtures/cli.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, when } from './fixtures/wait.js'
import { FakeTimers } from './fixtures/timers.js'
import { makeCertificates } from './fixtures/tls.js'
import https from 'node:https'
import type { AddressInfo } from 'node:net'

const yaml = (ups: { id: string; url: string }[], extra = ''): string =>
  `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\n` +
  `affinity: { key: none }\nupstreams:\n${ups.map((u) => `  - { id: ${u.id}, url: "${u.url}" }`).join('\n')}\n${extra}`

/** Tether on `file`, watching it, with its log captured; `logged(msg, n)` waits for the n-th `msg` line. */
async function watched(file: string) {
  const log = new LogCapture()
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('info', log), configPath: file })
  const logged = (msg: string, n = 1): Promise<void> =>
    when(onEvent(log, 'record'), () => log.records.filter((r) => r['msg'] === msg).length >= n, 5000, `${n} '${msg}' log line(s)`)
  return { tether, logged, log }
}

const reloads = async (metricsText: Promise<string>, result: 'ok' | 'failed'): Promise<number> => {
  const m = new RegExp(`tether_config_reloads_total\\{result="${result}"\\} (\\d+)`).exec(await metricsText)
  return m ? Number(m[1]) : 0
}

t.test('a changed file adds an upstream live; an invalid one is rejected and the old config stays', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  const dir = mkdtempSync(join(tmpdir(), 'tether-reload-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const { tether, logged } = await watched(file)
  t.teardown(async () => { await tether.close(0); await a.close(); await b.close() })
  const port = tether.port
  t.same(tether.router.ids, ['a'])

  writeFileSync(file, yaml([a, b]))
  await logged('config reloaded')
  t.same(tether.router.ids, ['a', 'b'], 'the new upstream is in')
  t.equal(tether.port, port, 'the listener is untouched')
  const seen = new Set<string>()
  for (let i = 0; i < 4; i++) seen.add((await request(tether.url)).body.trim())
  t.same([...seen].sort(), ['a', 'b'], 'both upstreams serve')
  t.equal(await reloads(tether.metrics.render(), 'ok'), 1)

  writeFileSync(file, yaml([a, { id: 'c', url: 'not a url' }]))
  await logged('config reload rejected; the running config stays')
  t.equal(await reloads(tether.metrics.render(), 'failed'), 1, 'the rejected reload is counted')
  t.same(tether.router.ids, ['a', 'b'], 'the running config stays')
  t.equal((await request(tether.url)).status, 200, 'still serving')
  const rejected = tether.reloadFile()
  t.match(rejected, { issues: [new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\d+:\\d+ upstreams\\[1\\]\\.url: `)] }, 'the same located errors as tether check')
})

t.test('a reloaded file with a key that has no effect (state.redis.name without sentinels) logs a warning naming it and its line', async (t) => {
  const a = await startUpstream('a')
  const dir = mkdtempSync(join(tmpdir(), 'tether-warn-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const { tether, logged, log } = await watched(file)
  t.teardown(async () => { await tether.close(0); await a.close() })
  writeFileSync(file, yaml([a], 'state:\n  store: redis\n  redis:\n    url: redis://127.0.0.1:1\n    name: mymaster\n'))
  t.type(tether.reloadFile(), 'object')
  await logged(CONFIG_WARNING)
  t.match(log.records.find((r) => r['msg'] === CONFIG_WARNING), { level: 40, warning: `${file}:10:11 state.redis.name: ignored without sentinels (it names the Sentinel master)` })
})

t.test('a ConfigMap-style symlink swap is picked up', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  const dir = mkdtempSync(join(tmpdir(), 'tether-cm-'))
  // the layout the kubelet writes: proxy.yaml -> ..data/proxy.yaml, ..data -> ..<timestamp>
  mkdirSync(join(dir, '..2026_11_25_01'))
  writeFileSync(join(dir, '..2026_11_25_01', 'proxy.yaml'), yaml([a]))
  symlinkSync('..2026_11_25_01', join(dir, '..data'))
  symlinkSync(join('..data', 'proxy.yaml'), join(dir, 'proxy.yaml'))
  const file = join(dir, 'proxy.yaml')
  const { tether, logged } = await watched(file)
  t.teardown(async () => { await tether.close(0); await a.close(); await b.close() })

  mkdirSync(join(dir, '..2026_11_25_02'))
  writeFileSync(join(dir, '..2026_11_25_02', 'proxy.yaml'), yaml([b]))
  symlinkSync('..2026_11_25_02', join(dir, '..data_tmp'))
  renameSync(join(dir, '..data_tmp'), join(dir, '..data')) // the atomic swap
  await logged('config reloaded')
  t.same(tether.router.ids, ['b'], 'the swapped config is in')
  t.equal((await request(tether.url)).body, 'b\n')
})

t.test('changes that need a restart are reported and not applied', async (t) => {
  const a = await startUpstream('a')
  const dir = mkdtempSync(join(tmpdir(), 'tether-restart-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await a.close() })
  writeFileSync(file, yaml([a], 'timeouts: { connect: 5s }\nretries: { attempts: 0 }\n'))
  t.match(tether.reloadFile(), { issues: ['no config file to reload'] }, 'without configPath there is nothing to read')
  const result = tether.reload(loadConfigFile(file, {}))
  t.same(result, { applied: ['retries'], needsRestart: ['timeouts'], restartKeys: ['timeouts.connect'] }, 'the key that waits is named')
})

t.test('the static upstreams wait for a restart with the discovery or forwarding.tls change they come with: a switch to discovery keeps serving', async (t) => {
  const a = await startUpstream('a')
  const dir = mkdtempSync(join(tmpdir(), 'tether-switch-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await a.close() })
  // one edit: no static upstream, DNS discovery instead (which needs a restart)
  writeFileSync(file, 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\naffinity: { key: none }\nupstreams: []\ndiscovery: { dns: { name: app.invalid, port: 8080 } }\n')
  const result = tether.reload(loadConfigFile(file, {}))
  t.same(result, { applied: [], needsRestart: ['upstreams', 'discovery'], restartKeys: ['upstreams', 'discovery.dns'] }, 'neither applied')
  t.equal((await request(tether.url)).status, 200, 'still served by the upstream it had, not 503')
  // forwarding.tls (merged into each https upstream's TLS) changed with a change that needs a
  // restart: the upstreams keep their TLS settings too, not half of the section
  const secure = { id: 'b', url: 'https://127.0.0.1:9' }
  writeFileSync(file, yaml([a, secure]))
  const fresh = await startTether(loadConfigFile(file, {}), { logger: createLogger('silent') })
  t.teardown(() => fresh.close(0))
  writeFileSync(file, yaml([a, secure], 'forwarding: { upstream_header: true, tls: { verify: false } }\n'))
  t.same(fresh.reload(loadConfigFile(file, {})), { applied: [], needsRestart: ['upstreams', 'forwarding'], restartKeys: ['upstreams', 'forwarding.upstream_header', 'forwarding.tls.verify'] })
})

t.test('a reload that removes an upstream lets its requests in flight finish there (not 504, not sent again elsewhere)', async (t) => {
  let release: (() => void) | null = null
  // only the POST is held (a health probe reaching a first must not take its place)
  const a = await startUpstream('a', (req, res) => {
    req.resume()
    if (req.method === 'POST') release = () => res.end('a done')
    else res.end('ok')
  })
  const b = await startUpstream('b')
  const dir = mkdtempSync(join(tmpdir(), 'tether-remove-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await a.close(); await b.close() })
  const slow = request(`${tether.url}/slow`, { method: 'POST', body: 'x' })
  await when(onEvent(a.server, 'request'), () => release !== null, 5000, 'the POST to reach a')
  writeFileSync(file, yaml([b]))
  t.same(tether.reload(loadConfigFile(file, {})), { applied: ['upstreams'], needsRestart: [], restartKeys: [] })
  release!()
  const r = await slow
  t.same([r.status, r.body], [200, 'a done'], 'answered by a, where it was sent')
  t.equal(b.seen.filter((s) => s.method === 'POST').length, 0, 'never sent again to b')
})

t.test('a reload reads the files the config names as tether check does: a kubeconfig the restart would fail on is refused now', async (t) => {
  const a = await startUpstream('a')
  const dir = mkdtempSync(join(tmpdir(), 'tether-kube-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const { tether } = await watched(file)
  t.teardown(async () => { await tether.close(0); await a.close() })
  writeFileSync(file, yaml([a], 'discovery:\n  kubernetes: { service: web, port: http, kubeconfig: /nonexistent/kubeconfig }\n'))
  const result = tether.reloadFile()
  t.match(result, { issues: [/discovery\.kubernetes\.kubeconfig: cannot read the kubeconfig \/nonexistent\/kubeconfig: ENOENT/] }, 'rejected, with the key and line')
})

t.test('SIGHUP re-reads the file and the process keeps serving', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  t.teardown(async () => { await a.close(); await b.close() })
  const dir = mkdtempSync(join(tmpdir(), 'tether-hup-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const tether = await startCli(file)
  t.teardown(() => tether.stop('SIGKILL'))
  t.equal((await request(tether.url)).body, 'a\n')
  // each stdout chunk is an event; stdout() has it by then (the fixture's listener runs first)
  const logged = (line: string, n = 1): Promise<void> =>
    when(onEvent(tether.proc.stdout!, 'data'), () => tether.stdout().split(line).length > n, 5000, `${n} '${line}' log line(s)`)
  tether.proc.kill('SIGHUP')
  await logged('"SIGHUP: reloading the config"')
  await logged('"config reloaded"')
  writeFileSync(file, yaml([b])) // the file watcher may reload it before the SIGHUP does: either reads b
  tether.proc.kill('SIGHUP')
  await logged('"config reloaded"', 2)
  t.equal((await request(tether.url)).body, 'b\n', 'the new upstream serves')
  t.equal((await tether.stop('SIGTERM')).code, 0)
})

t.test("a reload that removes a serving upstream moves its users with reason=drain (a planned removal), not dead", async (t) => {
  const moved: string[] = []
  const ups = await Promise.all(['a', 'b'].map((id) => startUpstream(id, (req, res) => {
    if (typeof req.headers['x-tether-moved'] === 'string') moved.push(req.headers['x-tether-moved'])
    res.end(id)
  })))
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  const tether = await proxyFor(t, ups, { affinity: { key: 'cookie' } })
  const agent = agentFor(t)
  const onB: CookieJar[] = []
  for (let i = 0; i < 200 && onB.length < 5; i++) {
    const jar = new CookieJar()
    if ((await get(`${tether.url}/`, agent, {}, jar)).body === 'b') onB.push(jar)
  }
  t.equal(onB.length, 5, 'five users live on b')
  tether.reload(testConfig([ups[0]!], { affinity: { key: 'cookie' } }))
  const answers = await Promise.all(onB.map((jar) => get(`${tether.url}/`, agent, {}, jar)))
  t.ok(answers.every((r) => r.status === 200 && r.body === 'a'), 'they are served by a')
  t.same(moved.map((m) => /reason=(\w+)/.exec(m)?.[1]), ['drain', 'drain', 'drain', 'drain', 'drain'], 'X-Tether-Moved says reason=drain')
})

t.test('state.redis.username and sentinel_username wait for a restart: the keys are named, never their values', (t) => {
  const redis = { ...DEFAULTS.state.redis, sentinels: ['127.0.0.1:26379'], name: 'mymaster' }
  const current = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }], { state: { store: 'redis', redis: { ...redis, username: 'old-user', sentinel_username: 'old-watch' } } })
  const next = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }], { state: { store: 'redis', redis: { ...redis, username: 'new-user', sentinel_username: 'new-watch' } } })
  const { effective, ...result } = diffConfig(current, next)
  t.same(result, { applied: [], needsRestart: ['state'], restartKeys: ['state.redis.username', 'state.redis.sentinel_username'] }, 'both keys named')
  t.equal(effective.state.redis.username, 'old-user', 'the running user is kept')
  t.notMatch(JSON.stringify(result), /old-|new-/, 'no value in what is logged')
  t.end()
})

t.test('a SIGHUP reload of a changed file is the only reload of it: the file watch does not apply it again', async (t) => {
  const a = await startUpstream('a')
  const b = await startUpstream('b')
  const c = await startUpstream('c')
  const dir = mkdtempSync(join(tmpdir(), 'tether-hup-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const log = new LogCapture()
  // the watch's time is driven by hand (its file events are real): a second reload would come
  // at the end of its debounce and settle
  const timers = new FakeTimers()
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('info', log), configPath: file, timers })
  t.teardown(async () => { await tether.close(0); await a.close(); await b.close(); await c.close() })
  const reloaded = (): number => log.records.filter((r) => r['msg'] === 'config reloaded').length
  timers.advance(0) // the watch's first look: the file as started
  writeFileSync(file, yaml([a, b]))
  await timers.scheduled(100) // the write's event armed the watch's debounce
  t.match(tether.reloadFile(), { applied: ['upstreams'] }, 'SIGHUP applies it at once')
  timers.advance(100 + 1_000 + 1_000)
  t.equal(reloaded(), 1, 'once')
  t.equal(await reloads(tether.metrics.render(), 'ok'), 1)
  writeFileSync(file, yaml([a, b, c]))
  await timers.scheduled(100)
  timers.advance(100 + 1_000)
  t.equal(reloaded(), 2, 'a later edit is still seen by the watch')
  t.same(tether.router.ids, ['a', 'b', 'c'])
})

t.test('a reload during the shutdown (a SIGHUP then) is refused: the stopping proxy keeps its config', async (t) => {
  const held: import('node:http').ServerResponse[] = []
  // (an active probe, `OPTIONS *` with health.active.path null, is answered: only the request is held)
  const a = await startUpstream('a', (req, res) => { if (req.method === 'OPTIONS') res.end(); else held.push(res) })
  const b = await startUpstream('b')
  const dir = mkdtempSync(join(tmpdir(), 'tether-stopping-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const { tether, log } = await watched(file)
  t.teardown(async () => { await a.close(); await b.close() })
  const answer = request(tether.url) // in flight: the shutdown waits for it
  await when(onEvent(a.server, 'request'), () => held.length === 1, 5000, 'the request at a')
  const closed = tether.close(5000)
  writeFileSync(file, yaml([a, b]))
  t.match(tether.reloadFile(), { issues: ['tether is shutting down: the config is not reloaded'] })
  t.same(tether.router.ids, ['a'], 'not applied')
  t.notOk(log.records.some((r) => r['msg'] === 'config reloaded'), 'no reload logged')
  held[0]!.end('a\n')
  t.equal((await answer).status, 200)
  await closed
})

t.test('a reload refused for a file the config names that is not there yet (a Secret updated after the ConfigMap) is applied once that file is there, with one error logged', async (t) => {
  const { ca, cert, key } = makeCertificates()
  const a = await startUpstream('a')
  const c = https.createServer({ cert, key }, (_req, res) => res.end('c\n'))
  await new Promise<void>((r) => c.listen(0, '127.0.0.1', r))
  const cUrl = `https://127.0.0.1:${(c.address() as AddressInfo).port}`
  const dir = mkdtempSync(join(tmpdir(), 'tether-named-'))
  const file = join(dir, 'proxy.yaml')
  writeFileSync(file, yaml([a]))
  const log = new LogCapture()
  const timers = new FakeTimers()
  const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('info', log), configPath: file, timers })
  t.teardown(async () => { await tether.close(0); await a.close(); c.closeAllConnections(); c.close() })
  const count = (msg: string): number => log.records.filter((r) => r['msg'] === msg).length
  timers.advance(0)
  writeFileSync(file, yaml([a], `  - { id: c, url: "${cUrl}", tls: { ca: ca.pem } }\n`).replace('\n\n', '\n'))
  await timers.scheduled(100)
  timers.advance(100 + 1_000)
  t.equal(count('config reload rejected; the running config stays'), 1, 'refused: ca.pem is missing')
  t.same(tether.router.ids, ['a'])
  timers.advance(2_000 + 4_000 + 8_000)
  t.equal(count('config reload rejected; the running config stays'), 1, 'tried again, but the same refusal is logged once')
  t.equal(await reloads(tether.metrics.render(), 'failed'), 1, 'and counted once')
  writeFileSync(join(dir, 'ca.pem'), ca) // the Secret's update lands
  timers.advance(16_000)
  t.equal(count('config reloaded'), 1, 'applied at the next try')
  t.same(tether.router.ids, ['a', 'c'])
  t.equal(await reloads(tether.metrics.render(), 'ok'), 1)
  const seen = new Set<string>()
  for (let i = 0; i < 4; i++) seen.add((await request(tether.url)).body.trim())
  t.same([...seen].sort(), ['a', 'c'], 'c serves, its certificate verified with the CA that came later')
})

t.test('listen.proxy_protocol waits for a restart (it changes how every connection is read): named, the running value kept', (t) => {
  const current = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }])
  const next = testConfig([{ id: 'a', url: 'http://127.0.0.1:1' }], { listen: { proxy_protocol: true } })
  const { effective, ...result } = diffConfig(current, next)
  t.same(result, { applied: [], needsRestart: ['listen'], restartKeys: ['listen.proxy_protocol'] })
  t.equal(effective.listen.proxy_protocol, false)
  t.end()
})
