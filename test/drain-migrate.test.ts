// A drain that migrates, measured end to end: 200 active users of one app replica (a real
// child process speaking the state protocol) are drained with `tether drain --migrate --wait`
// (the real CLI, as a preStop hook). Nobody moves mid-visit; each user moves, with their state,
// at their first request after an idle gap; no request fails and no update is lost; the CLI
// returns once no session remains. Tether runs on a FakeClock, so the idle gap is a clock step.
import t from 'tap'
import http from 'node:http'
import { CounterUsers, startCounter, type Counter, type CounterAnswer } from './fixtures/counter-upstream.js'
import { proxyFor, request, startUpstream } from './fixtures/upstream.js'
import { agentFor, get, runPool } from './fixtures/users.js'
import { spawn } from 'node:child_process'
import { CLI, runCli } from './fixtures/cli.js'
import { FakeClock } from './fixtures/clock.js'
import { freePort } from './fixtures/ports.js'
import { healthState, waitFor } from './fixtures/wait.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { startAll } from './fixtures/children.js'
import { DEFAULTS } from '../src/config/schema.js'

const USERS = 200
const TOKEN = 'drain-migrate-admin-token'
const MIN_IDLE = 2_000

t.test(`${USERS} active users of a drained upstream all move with their state at their next request after an idle gap, 0 failed, 0 lost`, async (t) => {
  const counters: Counter[] = await startAll(['app-0', 'app-1', 'app-2'].map((id) => startCounter(id)))
  t.teardown(() => Promise.all(counters.map((c) => c.kill())))
  const clock = new FakeClock()
  const tt = await proxyFor(t, counters, {
    admin: { token: TOKEN },
    affinity: { key: 'cookie', cookie: { ...DEFAULTS.affinity.cookie, secure: false }, drain: { migrate: false, min_idle: MIN_IDLE } },
    state: { store: 'memory' },
  }, clock)
  const agent = agentFor(t, 50)
  const users = new CounterUsers(USERS)
  /** Each request's time in the last round, ms. */
  let times: number[] = []
  const NONE: CounterAnswer = { id: '', user: '', n: 0, rehydrated: false, epoch: null, moved: null, sid: null }
  /** One request of every user (concurrently, 50 at a time); the counter must go on where it was. */
  const round = (): Promise<CounterAnswer[]> => (times = [], runPool(USERS, 50, async (i) => {
    const sent = performance.now()
    const a = await users.request(i, tt.url, agent)
    times.push(performance.now() - sent)
    return a ?? NONE
  }))

  // every user starts on app-0 (the others take no new users for a moment)
  tt.health.drain('app-1')
  tt.health.drain('app-2')
  t.ok((await round()).every((a) => a.id === 'app-0'), `${USERS} users on app-0`)
  tt.health.undrain('app-1')
  tt.health.undrain('app-2')
  clock.advance(100)
  await round()

  // the preStop hook: drain app-0 so that its users migrate, and wait for them to leave
  const started = Date.now()
  const hook = runCli(['drain', 'app-0', '--migrate', '--wait', '--timeout', '60s', '--admin', tt.adminUrl, '--token', TOKEN], {}, 70_000)
  await healthState(tt.health, 'app-0', 'draining', 10_000)
  t.equal(tt.health.drainMigrates('app-0'), true, 'the drain migrates')

  // still mid-visit (requests 100 ms apart): nobody moves
  for (let k = 0; k < 3; k++) {
    clock.advance(100)
    const answers = await round()
    t.equal(answers.filter((a) => a.id !== 'app-0').length, 0, `burst ${k + 1}: every user stays on app-0`)
  }
  const rows = async (): Promise<Record<string, { sessions_remaining: number | null; migrating: boolean }>> => {
    const r = await get(`${tt.adminUrl}/upstreams`, agent, { authorization: `Bearer ${TOKEN}` })
    return Object.fromEntries((JSON.parse(r.body) as { id: string; sessions_remaining: number | null; migrating: boolean }[]).map((u) => [u.id, u]))
  }
  t.match((await rows())['app-0'], { sessions_remaining: USERS, migrating: true }, 'GET /upstreams: every user remains')

  // a pause of min_idle (the user reads the page), then the next visit
  clock.advance(MIN_IDLE)
  const next = await round()
  const moveTimes = [...times].sort((a, b) => a - b)
  const moved = next.filter((a) => a.id !== 'app-0' && a.moved !== null && /reason=drain/.test(a.moved))
  t.equal(moved.length, USERS, 'every user moved at their first request after the gap, with reason=drain')
  t.equal(next.filter((a) => a.rehydrated).length, USERS, 'every one with their checkpoint')
  clock.advance(100)
  const after = await round()
  t.ok(after.every((a, i) => a.id === next[i]!.id && a.moved === null), 'and stays on its new upstream')
  const spread = new Map<string, number>()
  for (const a of after) spread.set(a.id, (spread.get(a.id) ?? 0) + 1)

  const done = await hook
  const hookMs = Date.now() - started
  t.equal(done.code, 0, done.stderr)
  t.match(done.stdout, /app-0: draining, users migrate\n(?:app-0: waiting up to 1m for them to move: each at their next request after an idle gap \(one who does not come back counts until their session expires\)\n(?:app-0: \d+ sessions remain\n)+)?app-0: no session remains\n$/)
  t.match((await rows())['app-0'], { sessions_remaining: 0 })
  t.equal(users.failed, 0, 'no request failed')
  t.equal(users.lost, 0, 'no update was lost')
  t.comment(`drain that migrates: ${USERS} users on app-0; moved ${moved.length} (rehydrated ${next.filter((a) => a.rehydrated).length}) ` +
    `at their next request (that request took p50 ${moveTimes[USERS >> 1]!.toFixed(1)} ms, max ${moveTimes.at(-1)!.toFixed(1)} ms, 50 users at a time); ` +
    `moved mid-visit 0; failed requests ${users.failed}; lost updates ${users.lost}; spread after ${JSON.stringify(Object.fromEntries(spread))}; ` +
    `tether drain --wait returned after ${hookMs} ms`)
})

t.test('tether drain --wait says that the drain started, and each new count, as they happen (a preStop hook cut short has said so)', async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const tt = await proxyFor(t, apps, { admin: { token: TOKEN }, affinity: { key: 'header', header: { name: 'X-Tenant' } } })
  const home = (await request(tt.url, { headers: { 'x-tenant': 'acme' } })).body.trim()
  const hook = spawn(process.execPath, [CLI, 'drain', home, '--wait', '--timeout', '5m', '--admin', tt.adminUrl], { env: { ...process.env, TETHER_ADMIN_TOKEN: TOKEN } })
  const exited = new Promise<number | null>((resolve) => hook.on('close', resolve))
  t.teardown(() => { hook.kill('SIGKILL') })
  let stdout = ''
  hook.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  // what it waits for and how long, before the count: a wait that runs to its deadline for a user who does not come back must not look hung
  const said = `${home}: draining\n${home}: waiting up to 5m for them to move: each as their session expires, or at their next request after affinity.drain_timeout (--migrate moves them sooner)\n${home}: 1 session remains\n`
  await waitFor(() => stdout === said, 10_000, 'the first three lines while it waits')
  t.equal(hook.exitCode, null, 'printed while it still waits')
  hook.kill('SIGTERM') // the kubelet cutting a preStop hook short
  await exited
  t.equal(stdout, said, 'what it said stays said')
})

t.test('tether drain --wait exits 0 at its deadline while users remain, and 1 when the drain itself fails', async (t) => {
  const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const tt = await proxyFor(t, apps, { admin: { token: TOKEN }, affinity: { key: 'header', header: { name: 'X-Tenant' } } })
  const home = (await request(tt.url, { headers: { 'x-tenant': 'acme' } })).body.trim()
  const waited = await runCli(['drain', home, '--wait', '--timeout', '1500ms', '--admin', tt.adminUrl], { TETHER_ADMIN_TOKEN: TOKEN })
  t.equal(waited.code, 0, 'a preStop hook never blocks past its deadline')
  t.match(waited.stdout, new RegExp(`^${home}: draining\\n(?:${home}: waiting up to [12]s for them to move: [^\\n]+\\n${home}: 1 session remains\\n)?${home}: deadline passed, 1 session remains\\n$`), 'the count once, as it does not change')
  t.equal(tt.health.drainMigrates(home), false, 'without --migrate the drain does not migrate')
  const unknown = await runCli(['drain', 'nope', '--admin', tt.adminUrl, '--token', TOKEN])
  t.equal(unknown.code, 1)
  t.equal(unknown.stderr, 'tether drain: unknown upstream "nope" (known: a, b)\n', 'the ids it knows, listed')
  const closed = await freePort()
  const unreachable = await runCli(['drain', 'a', '--admin', `http://127.0.0.1:${closed}`])
  t.equal(unreachable.code, 1)
  t.match(unreachable.stderr, `cannot reach the admin API at http://127.0.0.1:${closed}: ECONNREFUSED`)
  t.equal((await runCli(['drain', 'a', '--timeout', 'soon'])).code, 2, 'a bad --timeout is a usage error')
})

t.test('an application that gives its session cookie a new value on every answer: its active users stay through a migrating drain, and move after an idle gap', async (t) => {
  let n = 0
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id, (req, res) => {
    res.setHeader('set-cookie', `sid=${id}-${++n}; Path=/`)
    res.end(`${id}|${req.headers['x-tether-moved'] ?? '-'}\n`)
  })))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const clock = new FakeClock()
  const tt = await proxyFor(t, apps, { affinity: { key: 'app_cookie', app_cookie: { name: 'sid', fallback: 'random' }, drain: { migrate: false, min_idle: MIN_IDLE } } }, clock)
  let cookie = ''
  const go = async (): Promise<string[]> => {
    const r = await request(tt.url, { headers: cookie === '' ? {} : { cookie } })
    cookie = /^(sid=[^;]+)/.exec(String(r.headers['set-cookie']))![1]!
    return r.body.trim().split('|')
  }
  const [home] = await go()
  await go() // the value the first answer set, learned: pinned to home
  tt.health.drain(home!, true)
  for (let i = 0; i < 6; i++) {
    clock.advance(MIN_IDLE / 2)
    t.same(await go(), [home, '-'], `a request every ${MIN_IDLE / 2} ms, each with the value the last answer set: stays (${i})`)
  }
  clock.advance(MIN_IDLE)
  const [to, moved] = await go()
  t.not(to, home, 'after an idle gap: moved')
  t.match(moved, `from=${home}; reason=drain`)
})

/** Tether keyed by x-user, draining with migrate, its state in the Redis at `url` (150 ms timeout: a paused Redis is soon `unavailable`). */
function heldProxy(t: Parameters<typeof proxyFor>[0], apps: Parameters<typeof proxyFor>[1], url: string, prefix: string, clock: FakeClock): ReturnType<typeof proxyFor> {
  return proxyFor(t, apps, {
    affinity: { key: 'header', header: { name: 'x-user' }, drain: { migrate: true, min_idle: MIN_IDLE } },
    state: { store: 'redis', redis: { url, key_prefix: prefix }, timeout: 150 },
  }, clock)
}

/**
 * Redis, upstreams a, b, c (each answers `id|moved|rehydrate status|rehydrated state` and checkpoints
 * `<id>-<its count of requests>`), and a held-moves Tether under `prefix` on a FakeClock; `go()`
 * is one request of user u1, split at "|".
 */
async function heldSetup(t: Parameters<typeof proxyFor>[0], prefix: string): Promise<{ redis: Awaited<ReturnType<typeof startRedis>>; tt: Awaited<ReturnType<typeof proxyFor>>; clock: FakeClock; go: () => Promise<string[]> }> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const counts = new Map<string, number>()
  const apps = await Promise.all(['a', 'b', 'c'].map((id) => startUpstream(id, (req, res) => {
    const n = (counts.get(id) ?? 0) + 1
    counts.set(id, n)
    res.setHeader('x-tether-state', `${id}-${n}`)
    res.end(`${id}|${req.headers['x-tether-moved'] ?? '-'}|${req.headers['x-tether-rehydrate-status'] ?? '-'}|${req.headers['x-tether-rehydrate'] ?? '-'}\n`)
  })))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const clock = new FakeClock()
  const tt = await heldProxy(t, apps, redis.url, prefix, clock)
  const go = async (): Promise<string[]> => (await request(tt.url, { headers: { 'x-user': 'u1' } })).body.trim().split('|')
  return { redis, tt, clock, go }
}

t.test("a move by choice whose state the store cannot give (Redis paused) is held: the user stays where their state is, and moves with it once the store answers", async (t) => {
  const { redis, tt, clock, go } = await heldSetup(t, 'hold:')
  const [home] = await go()
  await go()
  tt.health.drain(home!, true)
  clock.advance(MIN_IDLE + 1)
  await redisCli(redis.port, 'CLIENT', 'PAUSE', '1000', 'ALL')
  const held = await go()
  t.same(held.slice(0, 2), [home, '-'], 'the store did not answer: the user stays on the draining upstream (no move)')
  t.notMatch(await tt.metrics.render(), /tether_failovers_total\{[^}]*reason="drain"[^}]*\} [1-9]/, 'and no failover is counted')
  await redisCli(redis.port, 'PING') // answered once the pause is over
  clock.advance(MIN_IDLE + 1)
  const [to, moved, status, state] = await go()
  t.not(to, home, 'once the store answers: moved')
  t.match(moved, `from=${home}; reason=drain`)
  t.same([status, state], ['delivered', `${home}-3`], "with the newest state, the held request's included")
})

t.test("a held user whose checkpoint the store lost (Redis down, not paused) stays held after the store is back, until a checkpoint of theirs is stored", async (t) => {
  const { redis, tt, clock, go } = await heldSetup(t, 'lost:')
  const [home] = await go()
  await go() // home-2 stored
  await redisCli(redis.port, 'SAVE') // Redis keeps its data across the outage, as after a failover or a network cut
  tt.health.drain(home!, true)
  clock.advance(MIN_IDLE + 1)
  await redis.kill()
  t.same((await go()).slice(0, 2), [home, '-'], 'Redis down: held on home, whose answer (home-3) the store cannot take')
  const redisUp = async (): Promise<boolean> => /^tether_redis_up 1$/m.test(await tt.metrics.render())
  await waitFor(async () => !(await redisUp()), 10_000, 'Tether to see Redis down')
  await redis.restart()
  await waitFor(redisUp, 10_000, 'Tether back on Redis')
  clock.advance(MIN_IDLE + 1)
  t.same((await go()).slice(0, 2), [home, '-'], 'the store answers, but holds home-2, older than home\'s state: still held (this answer, home-4, is stored)')
  clock.advance(MIN_IDLE + 1)
  const [to, moved, status, state] = await go()
  t.not(to, home, 'moved once a checkpoint of theirs is stored')
  t.match(moved, `from=${home}; reason=drain`)
  t.same([status, state], ['delivered', `${home}-4`], 'with home\'s newest state: the update of the request held while Redis was down is not lost')
})

/** A WebSocket handshake as user `user`: what the upstream that took it said (its id, the move, the rehydrate status). */
function upgrade(url: string, user: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { agent: false, headers: { 'x-user': user, connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-version': '13' } })
    req.on('upgrade', (res, sock) => { resolve(`${res.headers['x-up']}|${res.headers['x-moved']}|${res.headers['x-status']}`); sock.destroy() })
    req.on('response', (res) => resolve(`status ${res.statusCode}`))
    req.on('error', reject)
    req.end()
  })
}

t.test('held moves: a WebSocket handshake is held too, and an unpin ordered through the admin API waits for the store', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps = await Promise.all(['a', 'b', 'c'].map(async (id) => {
    const up = await startUpstream(id, (req, res) => { res.setHeader('x-tether-state', `${id}-s`); res.end(`${id}|${req.headers['x-tether-moved'] ?? '-'}\n`) })
    up.server.on('upgrade', (req: http.IncomingMessage, sock: import('node:net').Socket) => {
      sock.end(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\nx-moved: ${req.headers['x-tether-moved'] ?? '-'}\r\nx-status: ${req.headers['x-tether-rehydrate-status'] ?? '-'}\r\n\r\n`)
    })
    return up
  }))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const clock = new FakeClock()
  const tt = await heldProxy(t, apps, redis.url, 'held:', clock)
  const go = async (user: string): Promise<string[]> => (await request(tt.url, { headers: { 'x-user': user } })).body.trim().split('|')
  const paused = async (): Promise<void> => { await redisCli(redis.port, 'CLIENT', 'PAUSE', '700', 'ALL') }
  const resumed = async (): Promise<void> => { await redisCli(redis.port, 'PING') }

  // a WebSocket handshake of a user whose upstream drains (migrating), with the store paused: held
  const [home] = await go('ws')
  await go('ws')
  tt.health.drain(home!, true)
  clock.advance(MIN_IDLE + 1)
  await paused()
  t.equal(await upgrade(tt.url, 'ws'), `${home}|-|-`, 'the handshake stays on the draining upstream (no move without the state)')
  await resumed()
  tt.health.undrain(home!)

  // an unpin (DELETE /sessions/<key>) of a user moved off their hash place, with the store paused
  const [place] = await go('u2')
  const other = ['a', 'b', 'c'].find((id) => id !== place)!
  t.equal((await request(`${tt.adminUrl}/sessions/u2/move?to=${other}`, { method: 'POST' })).status, 202)
  t.same(await go('u2'), [other, `from=${place}; reason=admin; epoch=1`], 'moved by the order')
  t.equal((await request(`${tt.adminUrl}/sessions/u2`, { method: 'DELETE' })).status, 202)
  await paused()
  t.same(await go('u2'), [other, '-'], 'held: no move without the state')
  t.match(JSON.parse((await request(`${tt.adminUrl}/sessions/u2`)).body), { pending_move: { to: null } }, 'the unpin is still pending')
  await resumed()
  t.same(await go('u2'), [place, `from=${other}; reason=admin; epoch=2`], 'done once the store answers')
})
