// While Tether starts, its liveness does not wait on outside dependencies: the admin port
// listens before discovery's first list and the waits for Redis, answers /healthz at once and
// /readyz 503 `starting` (naming what it waits for) until the start has ended. Without shared
// health the proxy port listens then too (as before the drains were read at the start) and
// answers 503 until upstreams are listed. A Kubernetes API that accepts connections and never
// answers (a blackholed API server) holds discovery's first list; Tether as a child process
// (dist/cli.js). First reported by the R3 review (test/r3-healthz-during-discovery).
import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import http from 'node:http'
import { spawn } from 'node:child_process'
import { kubeconfigFor } from './fixtures/kube-api-server.js'
import { CLI, tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { waitFor } from './fixtures/wait.js'

/** A GET on a new connection: status and body, or null when the port refused it (or did not answer within 2 s). */
function get(port: number, path: string): Promise<{ status: number; body: string } | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.setTimeout(2_000, () => req.destroy())
    req.on('error', () => resolve(null))
  })
}

/** A Kubernetes API server that takes connections and requests and never answers; `waiting()`: requests held now. */
async function silentApi(t: Test): Promise<{ url: string; waiting(): number }> {
  const held = new Set<net.Socket>()
  const server = net.createServer((s) => {
    s.on('error', () => undefined)
    s.once('data', () => held.add(s))
    s.on('close', () => held.delete(s))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of held) s.destroy(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`, waiting: () => held.size }
}

t.test('without Redis, /healthz answers while discovery waits for a Kubernetes API that never answers; /readyz says it is starting', async (t) => {
  const api = await silentApi(t)
  const [listen, admin] = await freePorts(2)
  const file = tempFile('admin-during-start.yaml', [
    `listen: { host: 127.0.0.1, port: ${listen} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${admin} } }`,
    'log: { level: info, access: false }',
    'upstreams: []',
    `discovery: { kubernetes: { service: web, namespace: null, port: http, kubeconfig: "${kubeconfigFor(api.url)}", weight_annotation: null } }`,
    '',
  ].join('\n'))
  const proc = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  t.teardown(async () => { proc.kill('SIGKILL'); await exited })
  proc.stdout.resume(); proc.stderr.resume()
  // discovery's first list request is out (and held: the API never answers it, for 10 s)
  await waitFor(() => api.waiting() > 0, 10_000, "discovery's first list request")
  let healthz: { status: number; body: string } | null = null
  // (a short poll: nothing tells a client when a port starts to accept)
  await waitFor(async () => (healthz = await get(admin!, '/healthz')) !== null, 15_000, '/healthz answered', 50)
  t.equal(api.waiting(), 1, "the first list is still unanswered when /healthz answers (it does not wait for discovery)")
  t.equal(healthz!.status, 200, '/healthz: 200 (alive)')
  const readyz = await get(admin!, '/readyz')
  t.equal(readyz?.status, 503, '/readyz: 503 while starting')
  const body = JSON.parse(readyz!.body) as { ready: boolean; reasons: string[] }
  t.equal(body.ready, false)
  t.equal(body.reasons[0], "starting: waiting for discovery's first list", '/readyz names what the start waits for')
  const proxied = await get(listen!, '/')
  t.equal(proxied?.status, 503, 'without shared health the proxy port listens too, 503 until upstreams are listed')
  t.equal(api.waiting(), 1, 'all of it while the first list is unanswered')
})

/**
 * Tether (dist/cli.js) whose Redis takes the connection and the commands and answers none, with
 * `health.shared: redis`, `extra` lines added to its config; its admin port, once the first
 * Redis command is out.
 */
async function startOnSilentRedis(t: Test, name: string, extra: readonly string[]): Promise<{ admin: number }> {
  const redis = await silentApi(t)
  const [listen, admin] = await freePorts(2)
  const file = tempFile(name, [
    `listen: { host: 127.0.0.1, port: ${listen} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${admin} } }`,
    'log: { level: info, access: false }',
    ...extra,
    'upstreams: [{ id: app-1, url: "http://127.0.0.1:1" }]',
    `state: { store: redis, redis: { url: "${redis.url.replace('http:', 'redis:')}" } }`,
    'health: { shared: redis, active: { enabled: false } }',
    '',
  ].join('\n'))
  const proc = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
  const exited = new Promise((resolve) => proc.once('exit', resolve))
  // SIGTERM: a workers' primary stops its workers (a SIGKILL would leave them to notice it)
  t.teardown(async () => { proc.kill('SIGTERM'); await exited })
  proc.stdout.resume(); proc.stderr.resume()
  await waitFor(() => redis.waiting() > 0, 15_000, 'the first Redis command')
  return { admin: admin! }
}

t.test("with workers, the primary's /healthz answers 200 while no worker has started (the workers' start waits on a Redis that never answers); /readyz 503", async (t) => {
  const { admin } = await startOnSilentRedis(t, 'admin-during-start-workers.yaml', ['workers: 2'])
  const notStarted = async () => {
    const r = await get(admin, '/readyz')
    return r !== null && r.status === 503 && (JSON.parse(r.body) as { reasons: string[] }).reasons[0] === 'no worker started yet'
  }
  // the workers wait (about 2 s) on Redis' answer: /healthz asked between two /readyz that both
  // say no worker has started is the primary's own answer
  let sample: { status: number; body: string } | null = null
  await waitFor(async () => {
    if (!await notStarted()) return false
    const healthz = await get(admin, '/healthz')
    if (await notStarted()) sample = healthz
    return true
  }, 15_000, '/readyz answered', 20)
  t.ok(sample !== null, '/healthz was asked while no worker had started')
  t.same(sample, { status: 200, body: 'ok\n' }, "/healthz: 200 from the primary (alive, its workers starting), not 503")
})

t.test('with health.shared: redis, /readyz names the drains and ejections recorded in Redis while the start waits for a Redis that never answers', async (t) => {
  const { admin } = await startOnSilentRedis(t, 'admin-during-start-redis.yaml', [])
  // the start waits about 2 s on Redis (then serves without it): the admin port answers meanwhile
  let reasons: string[] = []
  await waitFor(async () => {
    const r = await get(admin, '/readyz')
    if (r === null) return false
    reasons = (JSON.parse(r.body) as { reasons: string[] }).reasons
    return true
  }, 15_000, '/readyz answered', 20)
  t.equal(reasons[0], 'starting: waiting for Redis and the drains and ejections recorded in it', '/readyz names what the start waits for')
})
