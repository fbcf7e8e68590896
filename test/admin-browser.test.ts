// The browser guard on a whole Tether's admin listener (real HTTP on 127.0.0.1) and through the
// primary's front with `workers: 2`: a hostile page's cross-site drain is refused and drains
// nothing, a rebound name is refused, while the status page's own requests, the CLI, curl-style
// callers and kubelet-style probes keep working.
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { drainUpstream } from '../src/admin/admin-client.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request, startUpstream, testConfig, type Reply } from './fixtures/upstream.js'
import { startCli, tempFile } from './fixtures/cli.js'
import { waitFor } from './fixtures/wait.js'

/** The admin URL's host:port, as a browser writes it in Host and Origin. */
const authority = (url: string): string => new URL(url).host

async function draining(adminUrl: string, id: string, headers: Record<string, string> = {}): Promise<boolean> {
  const rows = JSON.parse((await request(`${adminUrl}/upstreams`, { headers })).body) as { id: string; draining: boolean }[]
  return rows.find((r) => r.id === id)!.draining
}

t.test('on a tokenless admin listener, a cross-site drain is refused and drains nothing; the page, the CLI and probes still work', async (t) => {
  const app = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([{ id: 'a', url: app.url }]), { logger: createLogger('warn', logs) })
  t.teardown(async () => { await tether.close(0); await app.close() })
  const admin = tether.adminUrl
  const own = authority(admin)

  // a hostile page's "simple" form POST: no preflight, so only the guard stands in the way
  const crossSite = await request(`${admin}/upstreams/a/drain?migrate=true`, {
    method: 'POST',
    headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site', 'content-type': 'application/x-www-form-urlencoded' },
    body: 'x=1',
  })
  t.equal(crossSite.status, 403)
  t.match(crossSite.body, /^Forbidden: cross-site request refused/)
  t.equal(crossSite.headers['content-type'], 'text/plain; charset=utf-8')
  t.equal(await draining(admin, 'a'), false, 'the upstream is not draining')
  const line = logs.records.find((r) => r['msg'] === 'admin request refused: cross-site or DNS-rebinding browser request')
  t.match(line, { level: 40, method: 'POST', path: '/upstreams/a/drain?migrate=true', reason: 'cross_site', origin: 'https://evil.example', fetch_site: 'cross-site' }, 'the refusal is logged at warn')

  const session = await request(`${admin}/sessions/10.0.0.7`, { method: 'DELETE', headers: { origin: 'null' } })
  t.equal(session.status, 403, 'an unpin from Origin: null is refused')

  // the status page's button: same origin
  const page = await request(`${admin}/upstreams/a/drain`, { method: 'POST', headers: { origin: `http://${own}`, 'sec-fetch-site': 'same-origin', 'sec-fetch-mode': 'cors' } })
  t.equal(page.status, 200, 'the status page drains')
  t.equal(await draining(admin, 'a'), true)
  t.equal((await request(`${admin}/upstreams/a/undrain`, { method: 'POST', headers: { origin: `http://${own}` } })).status, 200, 'and undrains')

  // the CLI (Node's fetch: Sec-Fetch-Mode but no Origin)
  const cli = await drainUpstream({ url: admin, token: null }, 'a', { migrate: false, wait: false, timeout: 5_000, poll: 100 })
  t.equal(cli.code, 0, `the CLI drains: ${cli.err}`)
  t.equal(await draining(admin, 'a'), true)

  // DNS rebinding: the page's origin is the attacker's name, pointed at 127.0.0.1
  const rebind = { host: `rebind.evil.example:${new URL(admin).port}` }
  const rebound = await request(`${admin}/status`, { headers: { ...rebind, 'sec-fetch-site': 'same-origin' } })
  t.equal(rebound.status, 403, 'a rebound GET with Sec-Fetch-Site is refused')
  t.match(rebound.body, /^Forbidden: Host "rebind\.evil\.example:\d+" is not an IP address, localhost or a name in admin\.allowed_hosts/)
  const plainRebound = await request(`${admin}/sessions/10.0.0.7`, { headers: rebind })
  t.equal(plainRebound.status, 403, 'a rebound GET with no browser header is refused on a tokenless data route')
  t.equal((await request(`${admin}/upstreams/a/undrain`, { method: 'POST', headers: { ...rebind, origin: `http://${rebind.host}` } })).status, 403, 'a rebound undrain is refused')
  t.equal(await draining(admin, 'a'), true, 'and changed nothing')

  // kubelet and Prometheus: Host = pod IP or a Service name, no browser header, open routes
  for (const host of ['10.244.1.7:9901', 'tether.default.svc:9901']) {
    const probes = await Promise.all(['/healthz', '/readyz', '/metrics'].map((p) => request(`${admin}${p}`, { headers: { host, 'user-agent': 'kube-probe/1.32' } })))
    t.same(probes.map((r) => r.status), [200, 200, 200], `probes and scrapes with Host ${host} pass`)
  }
  t.equal((await request(`${admin}/upstreams`, { headers: { host: '10.244.1.7:9901' } })).status, 200, 'a data route by pod IP passes')
})

t.test('with admin.token, a browser from elsewhere is refused before the token is asked for, and names in admin.allowed_hosts pass', async (t) => {
  const app = await startUpstream('a')
  const token = 'admin-token-for-tests'
  const tether = await startTether(testConfig([{ id: 'a', url: app.url }], { admin: { token, allowed_hosts: ['Tether-Admin.internal'] } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await app.close() })
  const admin = tether.adminUrl
  const port = new URL(admin).port
  const auth = { authorization: `Bearer ${token}` }

  const crossSite = await request(`${admin}/upstreams/a/drain`, { method: 'POST', headers: { ...auth, origin: 'https://evil.example' } })
  t.equal(crossSite.status, 403, 'even with the token')
  t.equal((await request(`${admin}/upstreams/a/drain`, { method: 'POST', headers: { origin: 'https://evil.example' } })).status, 403, 'without it: 403, not 401')
  t.equal(await draining(admin, 'a', auth), false)

  // a DNS name without browser headers: the token guards the data, the Host is not judged
  t.equal((await request(`${admin}/upstreams`, { headers: { ...auth, host: `tether.default.svc:${port}` } })).status, 200, 'the CLI by a Service name, with the token')
  // the allowed name, as the status page opened at http://tether-admin.internal:<port>/ sends it
  const allowed = { host: `tether-admin.internal:${port}`, origin: `http://tether-admin.internal:${port}`, 'sec-fetch-site': 'same-origin' }
  const viaName = await request(`${admin}/upstreams/a/drain`, { method: 'POST', headers: { ...auth, ...allowed } })
  t.equal(viaName.status, 200, 'an allowed name drains from its own page')
  t.equal((await request(`${admin}/status`, { headers: { ...auth, ...allowed, host: `other.internal:${port}`, origin: `http://other.internal:${port}` } })).status, 403, 'another name is refused')

  // the status page under a rebound name (a top-level load sends no Origin or Sec-Fetch-* to a
  // plain-http name): refused, token or not, or it would keep the operator's token in that origin
  t.equal((await request(`${admin}/`, { headers: { host: `rebind.evil.example:${port}` } })).status, 403, 'the page under an unknown name')
  t.equal((await request(`${admin}/`, { headers: { host: `tether-admin.internal:${port}` } })).status, 200, 'under an allowed name')
  t.equal((await request(`${admin}/`, { headers: { host: `127.0.0.1:${port}` } })).status, 200, 'by address')
})

t.test('through the primary front of workers: 2, a cross-site drain is refused and a same-origin one passes', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const tether = await startCli(tempFile('browser-workers.yaml', [
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    'workers: 2',
    'upstreams:',
    `  - { id: a, url: "${app.url}" }`,
    '',
  ].join('\n')), {}, 30_000)
  t.teardown(async () => { if (tether.proc.exitCode === null && tether.proc.signalCode === null) await tether.stop('SIGKILL') })
  await waitFor(() => tether.stdout().includes('"tether primary: workers started"'), 30_000, 'the workers to start')
  const line = tether.stdout().split('\n').find((l) => l.includes('"tether primary: workers started"'))!
  const admin = (JSON.parse(line) as { admin: string }).admin
  const own = authority(admin)

  const refused: Reply = await request(`${admin}/upstreams/a/drain`, { method: 'POST', headers: { origin: 'https://evil.example', 'sec-fetch-site': 'cross-site' } })
  t.equal(refused.status, 403)
  t.match(refused.body, /^Forbidden: cross-site request refused/)
  t.equal(await draining(admin, 'a'), false, 'nothing drained')
  await waitFor(() => tether.stdout().includes('"reason":"cross_site"'), 5_000, 'the refusal in the log')
  const metrics = await request(`${admin}/metrics`, { headers: { host: `rebind.evil.example:${new URL(admin).port}`, 'sec-fetch-site': 'same-origin' } })
  t.equal(metrics.status, 403, "the front's own /metrics refuses a rebound browser request")
  t.equal((await request(`${admin}/upstreams`, { headers: { host: `rebind.evil.example:${new URL(admin).port}` } })).status, 403, 'the worker refuses a rebound data request the front passed on')

  const same = await request(`${admin}/upstreams/a/drain`, { method: 'POST', headers: { origin: `http://${own}`, 'sec-fetch-site': 'same-origin' } })
  t.equal(same.status, 200, 'the status page drains through the front')
  t.equal(await draining(admin, 'a'), true)
})
