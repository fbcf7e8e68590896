// Draining an upstream through the admin API (new users avoid it, its users stay until
// affinity.drain_timeout, then move once and stay moved), and graceful shutdown of the real
// CLI process on SIGTERM (readiness first, in-flight requests finish, grace period expiry).
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { startCli, tempFile, type Running } from './fixtures/cli.js'
import { request, startUpstream, testConfig, type Handler, type Upstream } from './fixtures/upstream.js'
import { onEvent, waitFor, when } from './fixtures/wait.js'
import { CookieJar, agentFor, get, tally } from './fixtures/users.js'
import { FakeClock } from './fixtures/clock.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'

const TOKEN = 'admin-token-for-tests'
const DRAIN_TIMEOUT = 300

/** Answers JSON { id, moved, epoch } echoing X-Tether-Moved / X-Tether-Epoch. */
function echo(id: string): Handler {
  return (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ id, moved: req.headers['x-tether-moved'] ?? null, epoch: req.headers['x-tether-epoch'] ?? null }))
  }
}

interface Echo { id: string; moved: string | null; epoch: string | null }

interface User { jar: CookieJar; seen: Echo[] }

function admin(url: string, method: string, token?: string): Promise<{ status: number; body: string; json: () => unknown }> {
  return request(url, { method, headers: token === undefined ? {} : { authorization: `Bearer ${token}` } })
    .then((r) => ({ status: r.status, body: r.body, json: () => JSON.parse(r.body) as unknown }))
}

t.test('drain via the admin API: new users avoid it, its users stay until drain_timeout, then move once and stay', async (t) => {
  const ups: Upstream[] = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id, echo(id))))
  t.teardown(async () => { await Promise.all(ups.map((u) => u.close())) })
  const clock = new FakeClock()
  const tether = await startTether(testConfig(ups, {
    admin: { token: TOKEN },
    // a large balance factor never changes a placement, but records cookie sessions so that
    // GET /upstreams can count them
    affinity: { key: 'cookie', drain_timeout: DRAIN_TIMEOUT, balance_factor: 10 },
  }), { logger: createLogger('silent'), clock })
  t.teardown(() => tether.close(0))
  const agent = agentFor(t)

  const ask = async (u: User): Promise<Echo> => {
    const r = await get(`${tether.url}/page`, agent, {}, u.jar)
    if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
    const e = JSON.parse(r.body) as Echo
    u.seen.push(e)
    return e
  }
  const users: User[] = Array.from({ length: 30 }, () => ({ jar: new CookieJar(), seen: [] }))
  for (const u of users) { await ask(u); await ask(u) }
  const counts = tally(users.map((u) => u.seen[0]!.id))
  const target = [...counts].sort((x, y) => y[1] - x[1])[0]![0]
  const mine = users.filter((u) => u.seen[0]!.id === target)
  t.ok(users.every((u) => u.seen[1]!.id === u.seen[0]!.id), 'users are sticky before the drain')

  // the admin API: token, unknown id, listing, probes
  const drainUrl = `${tether.adminUrl}/upstreams/${target}/drain`
  t.equal((await admin(drainUrl, 'POST')).status, 401, 'no token: 401')
  t.equal((await admin(drainUrl, 'POST', 'wrong-token')).status, 401, 'wrong token: 401')
  t.equal(tether.health.state(target), 'healthy', 'a refused drain changed nothing')
  t.equal((await admin(`${tether.adminUrl}/upstreams/nope/drain`, 'POST', TOKEN)).status, 404, 'unknown id: 404')
  t.equal((await admin(drainUrl, 'GET', TOKEN)).status, 405, 'GET on a mutating endpoint: 405')
  const drained = await admin(drainUrl, 'POST', TOKEN)
  t.equal(drained.status, 200)
  t.same(drained.json(), { id: target, draining: true })
  t.equal((await admin(`${tether.adminUrl}/upstreams`, 'GET')).status, 401, 'the upstream list needs the token too')
  const list = await admin(`${tether.adminUrl}/upstreams`, 'GET', TOKEN)
  t.equal(list.status, 200)
  const rows = list.json() as { id: string; state: string; draining: boolean; draining_since: string | null; sessions: number; ready: boolean; accepts_new: boolean }[]
  const row = rows.find((r) => r.id === target)
  t.match(row, { state: 'draining', draining: true, ready: true, accepts_new: false, draining_since: new Date(clock.now()).toISOString() })
  t.equal(row?.sessions, mine.length, `sessions counts its ${mine.length} users`)
  t.same(rows.map((r) => r.id).sort(), ['a', 'b', 'c'])
  t.ok(rows.filter((r) => r.id !== target).every((r) => r.state === 'healthy'))
  const readyz = await admin(`${tether.adminUrl}/readyz`, 'GET')
  t.equal(readyz.status, 200, 'still ready: other upstreams are healthy')
  const ready = readyz.json() as { ready: boolean; reasons: string[] }
  t.equal(ready.ready, true)
  t.same(ready.reasons, [], 'no reason not to be ready')
  t.equal((await admin(`${tether.adminUrl}/healthz`, 'GET')).status, 200)

  // while draining, before drain_timeout: new users never land on it, its users stay
  const newcomers: User[] = Array.from({ length: 40 }, () => ({ jar: new CookieJar(), seen: [] }))
  for (const u of newcomers) await ask(u)
  t.notOk(newcomers.some((u) => u.seen[0]!.id === target), `no new user landed on the draining ${target}`)
  for (const u of mine) { await ask(u); await ask(u) }
  t.ok(mine.every((u) => u.seen.every((e) => e.id === target && e.moved === null)), 'its users keep going to it')

  // drain_timeout passes: its users move once, with reason=drain
  clock.advance(DRAIN_TIMEOUT + 1)
  for (const u of mine) { await ask(u); await ask(u); await ask(u) }
  for (const u of mine) {
    const after = u.seen.slice(4)
    if (!(after[0]!.id !== target && after[0]!.moved === `from=${target}; reason=drain; epoch=1` && after[0]!.epoch === '1')) {
      t.fail(`user moved with the drain note: ${JSON.stringify(after)}`)
      return
    }
    if (!after.slice(1).every((e) => e.id === after[0]!.id && e.moved === null && e.epoch === '1')) {
      t.fail(`user stays moved: ${JSON.stringify(after)}`)
      return
    }
  }
  t.pass(`all ${mine.length} users of ${target} moved once with "X-Tether-Moved: from=${target}; reason=drain; epoch=1" and stayed`)
  const others = users.filter((u) => !mine.includes(u))
  for (const u of others) await ask(u)
  t.ok(others.every((u) => u.seen.every((e) => e.id === u.seen[0]!.id && e.moved === null)), 'the other users never moved')

  // undrain: moved users stay where they are; new users may land on it again
  const undrained = await admin(`${tether.adminUrl}/upstreams/${target}/undrain`, 'POST', TOKEN)
  t.equal(undrained.status, 200)
  t.same(undrained.json(), { id: target, draining: false })
  t.equal(tether.health.state(target), 'healthy')
  for (const u of mine) await ask(u)
  t.ok(mine.every((u) => u.seen.at(-1)!.id === u.seen.at(-2)!.id && u.seen.at(-1)!.id !== target), 'moved users stay moved after undrain')
  const later: User[] = Array.from({ length: 40 }, () => ({ jar: new CookieJar(), seen: [] }))
  for (const u of later) await ask(u)
  t.ok(later.some((u) => u.seen[0]!.id === target), `new users land on ${target} again`)
})

/** An upstream whose /slow requests wait until release() (or forever). */
async function heldUpstream(t: Test): Promise<{ up: Upstream; held: http.ServerResponse[]; release: () => void }> {
  const held: http.ServerResponse[] = []
  const up = await startUpstream('held', (req, res) => {
    if (req.url === '/slow') { held.push(res); return }
    res.end('fast\n')
  })
  t.teardown(() => up.close())
  return { up, held, release: () => { for (const res of held.splice(0)) res.end('done\n') } }
}

async function cli(t: Test, upstreamUrl: string, grace: string): Promise<{ tether: Running; adminUrl: string }> {
  const file = tempFile('shutdown.yaml', [
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    'upstreams:',
    `  - { id: held, url: "${upstreamUrl}" }`,
    `shutdown: { grace_period: ${grace} }`,
    '',
  ].join('\n'))
  const tether = await startCli(file)
  t.teardown(async () => { if (tether.proc.exitCode === null && tether.proc.signalCode === null) await tether.stop('SIGKILL') })
  const line = tether.stdout().split('\n').find((l) => l.includes('"tether listening"'))!
  return { tether, adminUrl: (JSON.parse(line) as { admin: string }).admin }
}

/** A GET that resolves with its answer, or with the client-side error code. */
function pending(url: string): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string } | { error: string }> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      res.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
    })
    req.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }))
  })
}

function refused(url: string): Promise<boolean> {
  const u = new URL(url)
  return new Promise((resolve) => {
    const s = net.connect(Number(u.port), u.hostname, () => { s.destroy(); resolve(false) })
    s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'))
  })
}

t.test('SIGTERM: not ready at once, no new connections, the in-flight request finishes with Connection: close, exit 0', async (t) => {
  const { up, held, release } = await heldUpstream(t)
  const { tether, adminUrl } = await cli(t, up.url, '5s')
  // ready once the upstream passed its first active check (they start with the listeners)
  await waitFor(async () => (await request(`${adminUrl}/readyz`)).status === 200, 5_000, 'ready before the signal')
  let settled = false
  const inflight = pending(`${tether.url}/slow`).finally(() => { settled = true })
  await when(onEvent(up.server, 'request'), () => held.length === 1, 5_000, 'the slow request to reach the upstream')
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => tether.proc.once('exit', (code, signal) => resolve({ code, signal })))
  tether.proc.kill('SIGTERM')
  // Tether logs "tether shutting down" once it has turned not ready
  await when(onEvent(tether.proc.stdout!, 'data'), () => tether.stdout().includes('"tether shutting down"'), 5_000, 'the shutdown log line')
  const readyz = await request(`${adminUrl}/readyz`)
  t.equal(readyz.status, 503, '/readyz turns 503 at once')
  t.match(JSON.parse(readyz.body), { ready: false, reasons: ['shutting down'] }, '/readyz says why')
  t.equal((await request(`${adminUrl}/healthz`)).status, 200, 'still live while draining')
  // polled: nothing announces that the listener has closed
  await waitFor(() => refused(tether.url), 5_000, 'new proxy connections to be refused')
  t.pass('new connections to the proxy port are refused')
  t.notOk(settled, 'the in-flight request is still pending')
  t.equal(tether.proc.exitCode, null, 'the process waits for it')
  const releasedAt = Date.now()
  release()
  const answer = await inflight
  t.ok('status' in answer, `the in-flight request completed (${JSON.stringify(answer)})`)
  if ('status' in answer) {
    t.equal(answer.status, 200)
    t.equal(answer.body, 'done\n')
    t.equal(answer.headers['connection'], 'close', 'its answer carries Connection: close')
  }
  const exit = await exited
  t.equal(exit.code, 0, 'exit 0')
  t.ok(Date.now() - releasedAt < 2_000, `exited ${Date.now() - releasedAt} ms after the last request finished, well before the 5 s grace`)
  t.match(tether.stdout(), /"tether stopped"/)
})

t.test('SIGTERM with a request that never finishes: exit 0 after the grace period, the client sees the connection closed', async (t) => {
  const { up, held } = await heldUpstream(t)
  const { tether } = await cli(t, up.url, '300ms')
  const inflight = pending(`${tether.url}/slow`)
  await when(onEvent(up.server, 'request'), () => held.length === 1, 5_000, 'the slow request to reach the upstream')
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => tether.proc.once('exit', (code, signal) => resolve({ code, signal })))
  const start = Date.now()
  tether.proc.kill('SIGTERM')
  const exit = await exited
  const ms = Date.now() - start
  t.equal(exit.code, 0, 'exit 0')
  t.ok(ms >= 250, `waited for the grace period (${ms} ms)`)
  t.ok(ms < 300 + 1_500, `exited within grace + margin (${ms} ms)`)
  const answer = await inflight
  t.ok('error' in answer, `the client saw the connection closed (${JSON.stringify(answer)})`)
})

