// The primary's admin listener and metrics as an operator meets them (`workers: 2`), each the same
// as with one process: the admin token the primary started with stays in force after a roll (a
// token change needs a restart, as the log says); the metrics summed over workers never fall when a
// worker is replaced, and a reload counts once; the unset cookie secret is warned of; during
// SIGTERM's grace period /healthz, /readyz and /metrics answer as a single process's do while
// requests drain; and the listener bounds a client (413, 408, 405) as one process's does. Split
// from workers-admin-edges.test.ts (shared helpers in test/fixtures/workers-admin-edges.ts), with
// workers-admin-edges-combined.test.ts and workers-admin-edges-start.test.ts.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, slotOf, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { rawAnswer, total } from './fixtures/workers-admin-edges.js'

t.test('with two workers, the admin listener and /metrics answer as with one process: token, counters over a crash, reloads, shutdown', async (t) => {
  let release: (() => void) | null = null
  const app = await startUpstream('app-0', (req, res) => {
    if (req.url === '/slow') {
      release = () => res.end('slow\n')
      return
    }
    res.end('app-0\n')
  })
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const admin = `http://127.0.0.1:${adminPort}`
  const yaml = (token: string, idle: string): string => workersYaml({
    listen: port, adminPort, workers: 2, upstreams: [{ id: 'app-0', url: app.url }],
    extra: [`admin: { listen: { host: 127.0.0.1, port: ${adminPort} }, token: ${token} }`, `affinity: { idle_timeout: ${idle} }`, 'shutdown: { grace_period: 10s }'],
  }).replace(`admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }\n`, '')
  const file = tempFile('workers-admin-edges.yaml', yaml('old-token-123', '1h'))
  const { proc, out } = await startPrimary(t, file)
  const auth = (token: string) => ({ headers: { authorization: `Bearer ${token}` } })

  t.match(out(), /affinity\.cookie\.secret is not set/, 'the unset cookie secret is warned of, as with one process')

  // counters summed over workers never fall when one is replaced
  for (let i = 0; i < 20; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200)
  const before = total((await request(`${admin}/metrics`, null)).body, 'tether_client_requests_total')
  t.ok(before >= 20, `counted ${before} requests over both workers`)
  const victim = workerPids(proc).find((pid) => slotOf(pid) === 1)!
  process.kill(victim, 'SIGKILL')
  await waitFor(() => workerPids(proc).length === 2 && !workerPids(proc).includes(victim) && out().split('"tether listening"').length - 1 >= 3, 60_000, 'the crashed worker to be replaced')
  const after = total((await request(`${admin}/metrics`, null)).body, 'tether_client_requests_total')
  t.ok(after >= before, `not fewer after a worker was replaced (${before} -> ${after})`)

  // a reload counts once, whatever the worker count
  const reloads = (): Promise<number> => request(`${admin}/metrics`, null).then((r) => total(r.body, 'tether_config_reloads_total', 'result="ok"'))
  t.equal(await reloads(), 0)
  proc.kill('SIGHUP')
  await waitFor(async () => (await reloads()) >= 1, 10_000, 'the reload to be counted')
  t.equal(await reloads(), 1, 'one reload counted once')

  // a target naming another host (protocol-relative, absolute-form) stays at the workers'
  // admin listener: the primary never sends it elsewhere (it forwarded it, Authorization included)
  const elsewhere: string[] = []
  const other = await startUpstream('other', (req, res) => { elsewhere.push(`${req.method} ${req.url}`); res.end('other\n') })
  t.teardown(() => other.close())
  const otherHost = new URL(other.url).host
  for (const [method, target] of [['GET', `//${otherHost}/x`], ['POST', `//${otherHost}/upstreams/app-0/drain`], ['GET', `http://${otherHost}/abs`]] as const) {
    const answer = await new Promise<string>((resolve, reject) => {
      const s = net.connect(adminPort!, '127.0.0.1', () => s.write(`${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer old-token-123\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`))
      let out = ''
      s.on('data', (c) => (out += c))
      s.on('close', () => resolve(out))
      s.on('error', reject)
    })
    t.match(answer, /^HTTP\/1\.1 4\d\d /, `${method} ${target}: refused by the admin API (404, 400)`)
  }
  t.same(elsewhere, [], 'nothing reached the other host')
  // the client's header lines reach the worker as sent: two Authorization headers are refused, as by one process
  const twice = await new Promise<string>((resolve, reject) => {
    const s = net.connect(adminPort!, '127.0.0.1', () => s.write('GET /upstreams HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer old-token-123\r\nAuthorization: Bearer wrong\r\nConnection: close\r\n\r\n'))
    let out = ''
    s.on('data', (c) => (out += c))
    s.on('close', () => resolve(out))
    s.on('error', reject)
  })
  t.match(twice, /^HTTP\/1\.1 400 [^]*more than one Authorization header/, 'two Authorization headers: 400')
  // an HTTP/1.0 health check without Host (HAProxy's option httpchk) is answered, as by one process
  for (const path of ['/healthz', '/readyz']) {
    const old = await new Promise<string>((resolve, reject) => {
      const s = net.connect(adminPort!, '127.0.0.1', () => s.write(`GET ${path} HTTP/1.0\r\n\r\n`))
      let out = ''
      s.on('data', (c) => (out += c))
      s.on('close', () => resolve(out))
      s.on('error', reject)
    })
    t.match(old, /^HTTP\/1\.1 200 /, `HTTP/1.0 ${path} without Host: 200`)
  }

  // a token change needs a restart of the primary: a roll (for affinity) does not apply it
  t.equal((await request(`${admin}/upstreams`, null, auth('old-token-123'))).status, 200)
  writeFileSync(file, yaml('new-token-456', '2h'))
  await waitFor(() => out().includes('"workers replaced"'), 40_000, 'the roll to end')
  t.match(out(), /admin: a change of the admin listener needs a restart of the primary/)
  t.equal((await request(`${admin}/upstreams`, null, auth('old-token-123'))).status, 200, 'the token the primary started with still opens the admin API')
  t.equal((await request(`${admin}/upstreams`, null, auth('new-token-456'))).status, 401, 'the new one does not, until a restart')
  t.notOk(/"sections":\[[^\]]*"admin"[^\]]*\][^\n]*need new workers/.test(out()), 'no worker takes the admin section from the file')

  // SIGTERM with a request in flight: the admin listener answers as one process's does meanwhile
  const slow = new Promise<number>((resolve, reject) => {
    http.get(`http://127.0.0.1:${port}/slow`, { agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)) }).on('error', reject)
  })
  await waitFor(() => release !== null, 10_000, 'the slow request to reach the upstream')
  proc.kill('SIGTERM')
  await waitFor(() => out().includes('"signal received: stopping the workers"'), 10_000, 'the primary to start stopping')
  const healthz = await request(`${admin}/healthz`, null)
  t.equal(healthz.status, 200, '/healthz: the process is alive while requests drain')
  const readyz = await request(`${admin}/readyz`, null)
  t.equal(readyz.status, 503, '/readyz: not ready')
  t.match(JSON.parse(readyz.body), { ready: false, reasons: ['shutting down'] }, 'in the documented shape')
  t.ok(total((await request(`${admin}/metrics`, null)).body, 'tether_client_requests_total') >= after, '/metrics still counts while requests drain')
  release!()
  t.equal(await slow, 200, 'the request in flight finishes')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0)
})

t.test("the primary's admin listener bounds a client as one process's does: a declared body over 16 KiB gets 413 at once, a stalled head 408, a CONNECT 405", async (t) => {
  const app = await startUpstream('app-0', (_req, res) => res.end('app-0\n'))
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  await startPrimary(t, tempFile('workers-admin-bounds.yaml', workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] })))
  // it read the whole declared 100 MB (here: waited for it) before answering, on a connection kept open
  const declared = await rawAnswer(adminPort!, 'POST /upstreams/app-0/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000000\r\n\r\nabc')
  t.match(declared, /^HTTP\/1\.1 413 [\s\S]*connection: close[\s\S]*\r\n\r\nContent Too Large: the admin API reads at most 16384 bytes of body\n$/i, '413 before the body is sent, with the admin API\'s message, then closed')
  const chunk = `4000\r\n${'x'.repeat(0x4000)}\r\n`
  const streamed = await rawAnswer(adminPort!, `POST /upstreams/app-0/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n${chunk}${chunk}`)
  t.match(streamed, /^HTTP\/1\.1 413 [\s\S]*connection: close[\s\S]*\r\n\r\nContent Too Large: the admin API reads at most 16384 bytes of body\n$/i, 'a chunked body over the limit: the same 413, then closed')
  // Node closed a CONNECT's connection unanswered (no 'connect' listener): 405, as on the proxy port
  const connect = await rawAnswer(adminPort!, 'CONNECT 127.0.0.1:80 HTTP/1.1\r\nHost: 127.0.0.1:80\r\n\r\n')
  t.match(connect, /^HTTP\/1\.1 405 [\s\S]*\r\nallow: \r\n[\s\S]*\r\n\r\nMethod Not Allowed: the admin API tunnels nothing \(CONNECT\)\n$/i, 'CONNECT: 405 with an empty Allow, then closed')
  const upstreams = JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { draining: boolean }[]
  t.same(upstreams.map((u) => u.draining), [false], 'the refused drains drained nothing')

  // the head deadline bites on time (Node checked it every 30 s by default: a stalled head was
  // held up to 40 s, not 10): shortened limits, so that the default check would not come in time
  const { startAdminFront } = await import('../src/workers/admin-front.js')
  const { createLogger } = await import('../src/observability/logger.js')
  const { ADMIN_LIMITS } = await import('../src/admin/admin-server.js')
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => [`http://127.0.0.1:${adminPort}`], metrics: () => Promise.resolve([]), stopping: () => false },
    createLogger('silent'), [], { ...ADMIN_LIMITS, headersTimeout: 200, requestTimeout: 400 })
  t.teardown(() => front.close())
  const frontPort = Number(new URL(front.url).port)
  t.match(await rawAnswer(frontPort, 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n', 10_000), /^HTTP\/1\.1 408 /, 'a stalled head: 408, then closed')
  t.match(await rawAnswer(frontPort, 'POST /upstreams/app-0/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n01234', 10_000), /^HTTP\/1\.1 408 /, 'a stalled body: 408, then closed')
})
