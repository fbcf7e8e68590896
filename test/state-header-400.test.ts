// A moved user's state in a header refused 400 rather than 431: nginx (and Apache) answer an
// over-long header line `400 Request Header Or Cookie Too Large`. A state line over 4 KiB
// refused 400 is sent again without the state (as for a 431); a 400 to a shorter one is the
// application's own and is passed on. A real nginx 1.22 with its stock limits is the upstream.
import t, { type Test } from 'tap'
import http from 'node:http'
import type { Socket } from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import type { Timers } from '../src/clock.js'
import { createLogger } from '../src/observability/logger.js'
import { STATE_LINE_400_BYTES } from '../src/proxy/request-context.js'
import { startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { startNginx } from './fixtures/nginx.js'
import { CookieJar, handshake } from './fixtures/users.js'
import { LogCapture } from './fixtures/log-capture.js'
import { onEvent, waitFor, when, within } from './fixtures/wait.js'
import { metric } from './fixtures/drill.js'
import { HEDGE_AFTER, HedgeTimers } from './fixtures/hedge-timers.js'

/** What each app saw: `<id> <X-Tether-Rehydrate-Status or -> <X-Tether-Rehydrate length or ->`. */
type Seen = string[]

/**
 * App replicas whose answers carry a checkpoint of `stateBytes` bytes; an app answers 400 itself
 * to any request carrying a state when `refuseState` is set (an application's own 400).
 * A handshake switches (101) with `x-status` its X-Tether-Rehydrate-Status. An app for which
 * `hold(id, res)` is true sends no answer head (the test answers `res` itself, or never).
 */
async function apps(t: Test, ids: string[], stateBytes: number, refuseState = false, hold: (id: string, res: http.ServerResponse) => boolean = () => false, fill = 's'): Promise<{ ups: Upstream[]; seen: Seen }> {
  const seen: Seen = []
  const ups = await Promise.all(ids.map(async (id) => {
    const up = await startUpstream(id, (req, res) => {
      req.resume()
      const state = req.headers['x-tether-rehydrate']
      seen.push(`${id} ${req.headers['x-tether-rehydrate-status'] ?? '-'} ${typeof state === 'string' ? state.length : '-'}`)
      if (refuseState && state !== undefined) return void res.writeHead(400, { 'content-type': 'text/plain' }).end('the app refused it')
      if (hold(id, res)) return
      res.writeHead(200, { 'content-type': 'application/json', 'x-tether-state': fill.repeat(stateBytes) }).end(JSON.stringify({ id }))
    })
    const sockets: Socket[] = []
    up.server.on('upgrade', (req: http.IncomingMessage, sock: Socket) => {
      sockets.push(sock)
      sock.on('error', () => undefined)
      const state = req.headers['x-tether-rehydrate']
      seen.push(`${id} ws ${req.headers['x-tether-rehydrate-status'] ?? '-'} ${typeof state === 'string' ? state.length : '-'}`)
      if (refuseState && state !== undefined) return void sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 18\r\n\r\nthe app refused it')
      sock.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nx-up: ${id}\r\nx-status: ${req.headers['x-tether-rehydrate-status'] ?? '-'}\r\n\r\n`)
    })
    return { ...up, close: () => { for (const s of sockets) s.destroy(); return up.close() } }
  }))
  t.teardown(() => Promise.all(ups.map((u) => u.close())))
  return { ups, seen }
}

async function get(url: string, jar: CookieJar): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers: { cookie: jar.header()! } }, (res) => {
      jar.apply(res.headers['set-cookie'])
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: s }))
    }).on('error', reject)
  })
}

/** tether_rehydrations_total{result="error"} and the warnings that the state was refused and sent again without it. */
async function refusals(tether: Tether, logs: LogCapture): Promise<{ errors: number; warnings: number }> {
  return {
    errors: await metric(tether, 'tether_rehydrations_total{result="error"}'),
    warnings: logs.records.filter((r) => /refused the user's state in X-Tether-Rehydrate \(.*sent again without it/.test(String(r['msg']))).length,
  }
}

/** An nginx (stock limits) in front of each of `ups`: the targets (id -> nginx's url) for Tether. */
async function behindNginx(t: Test, ups: Upstream[]): Promise<{ id: string; url: string }[]> {
  const fronts = await Promise.all(ups.map(async (u) => ({ id: u.id, nginx: await startNginx(u.port) })))
  t.teardown(() => Promise.all(fronts.map((f) => f.nginx.close())))
  return fronts.map((f) => ({ id: f.id, url: f.nginx.url }))
}

/** Tether over `targets` (id -> url) with user u1 answered once by their home (its checkpoint stored). */
async function userAtHome(t: Test, targets: { id: string; url: string }[], overrides: Parameters<typeof testConfig>[1] = {}, timers?: Timers): Promise<{ tether: Tether; jar: CookieJar; home: string; logs: LogCapture }> {
  const logs = new LogCapture()
  const tether = await startTether(testConfig(targets, overrides), { logger: createLogger('info', logs), ...(timers === undefined ? {} : { timers }) })
  t.teardown(() => tether.close(0))
  const jar = new CookieJar()
  jar.cookies.set('user', 'u1')
  const first = await get(tether.url, jar)
  t.equal(first.status, 200)
  const home = (JSON.parse(first.body) as { id: string }).id
  await waitFor(async () => (await metric(tether, 'tether_checkpoints_total{result="stored"}')) === 1, 5_000, 'the checkpoint stored')
  // (a test counts its own access lines from here)
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 5_000, "the first request's access line")
  return { tether, jar, home, logs }
}

/** As userAtHome, then home taken out as health does: u1's next request moves, with the state. */
async function userMoving(t: Test, targets: { id: string; url: string }[]): Promise<{ tether: Tether; jar: CookieJar; home: string; logs: LogCapture }> {
  const user = await userAtHome(t, targets)
  user.tether.health.disable(user.home)
  return user
}

t.test("nginx refuses a 10 KiB state line 400 (not 431): the moved user's request is sent again without it and gets the app's answer, counted and warned as for a 431", async (t) => {
  const { ups, seen } = await apps(t, ['a', 'b'], 10_000)
  const fronts = await behindNginx(t, ups)
  const { tether, jar, home, logs } = await userMoving(t, fronts)
  const to = ups.find((u) => u.id !== home)!.id
  const moved = await get(tether.url, jar)
  t.equal(moved.status, 200, "the user gets the app's answer, not nginx's 400")
  t.same(JSON.parse(moved.body), { id: to })
  t.same(seen.filter((s) => s.startsWith(to)), [`${to} too_large -`], 'the app ran once, told the state was too large for a header (nginx kept the refused head)')
  t.same(await refusals(tether, logs), { errors: 1, warnings: 1 }, 'one rehydration error, one warning')
  t.match(logs.access().at(-1), { status: 200, outcome: 'failover' })
  const again = await get(tether.url, jar)
  t.same(JSON.parse(again.body), { id: to }, 'pinned to the new upstream')
})

/** The warnings that a hedge's state was refused (the hedge dropped). */
function hedgeRefusals(logs: LogCapture): number {
  return logs.records.filter((r) => /refused the user's state in X-Tether-Rehydrate of a hedge .*the hedge is dropped/.test(String(r['msg']))).length
}

/**
 * GET with `jar` while the home's app holds its head back (`held()` is its answer once the
 * request reached it), hedged then (`timers`): resolves once the hedge's refusal was warned (or
 * an answer came first: the fault), with the held answer and the pending one.
 */
async function whileHedgeRefused(tether: Tether, jar: CookieJar, logs: LogCapture, timers: HedgeTimers, held: () => http.ServerResponse | null): Promise<{ res: http.ServerResponse | null; pending: Promise<{ status: number; body: string }> }> {
  let answered = false
  const pending = get(tether.url, jar).finally(() => { answered = true })
  await waitFor(() => answered || held() !== null, 20_000, "the home's request") // (polled: the app sets it)
  if (!answered) await timers.hedge()
  await waitFor(() => answered || hedgeRefusals(logs) === 1, 20_000, "the hedge's refusal (or an answer)")
  return { res: held(), pending } // (an async function would wait for a promise it returns)
}

t.test("a hedge (retries.hedge_after) whose 10 KiB state line nginx refuses 400 while the home holds its answer: the client gets the home's answer, not nginx's 400; no rehydration counted, one warning", async (t) => {
  let holding = ''
  let held: http.ServerResponse | null = null
  const { ups, seen } = await apps(t, ['a', 'b'], 10_000, false, (id, res) => id === holding && (held = res) !== null)
  const fronts = await behindNginx(t, ups)
  const timers = new HedgeTimers()
  const { tether, jar, home, logs } = await userAtHome(t, fronts, { retries: { hedge_after: HEDGE_AFTER } }, timers)
  const to = ups.find((u) => u.id !== home)!.id
  holding = home // the home sends no head: the hedge, with the user's state, is sent and refused
  const before = logs.access().length
  const seenBefore = seen.length
  const { res, pending } = await whileHedgeRefused(tether, jar, logs, timers, () => held)
  holding = ''
  res?.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ id: home }))
  const r = await pending
  t.equal(r.status, 200, "the home's answer reaches the client, not the hedge's 400")
  t.same(JSON.parse(r.body), { id: home })
  t.same(seen.slice(seenBefore).filter((s) => s.startsWith(to)), [], "the hedge's app never ran (nginx refused its head), and it was not sent again")
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 200, upstream: home, outcome: 'ok' }, "the first attempt's line")
  t.same(await refusals(tether, logs), { errors: 0, warnings: 0 }, 'no rehydration error: the state was for the hedge, which did not answer')
  t.equal(await metric(tether, 'tether_rehydrations_total{result="delivered"}'), 0, 'nor a delivery')
  t.equal(hedgeRefusals(logs), 1, 'one warning: the hedge was dropped')
  const seenAgain = seen.length
  t.same(JSON.parse((await get(tether.url, jar)).body), { id: home }, 'the user stays on their upstream')
  t.same(seen.slice(seenAgain), [`${home} - -`], 'as an ordinary request: no move, no rehydration (the user kept their state there)')
})

/**
 * A user whose home is a: the first user key (u0, u1, ...) the hash places there (which upstream
 * a key lands on differs from run to run: one fixed key would be on b half the time).
 */
async function userOnA(tether: Tether): Promise<CookieJar> {
  for (let i = 0; i < 64; i++) {
    const jar = new CookieJar()
    jar.cookies.set('user', `u${i}`)
    if (JSON.parse((await get(tether.url, jar)).body).id === 'a') return jar
  }
  throw new Error('no user key of 64 landed on a')
}

/**
 * A user on a (the Node app itself: its reset is a failed attempt, where nginx would answer 502)
 * whose next request a holds until its hedge to b (behind nginx, which refuses the 10 KiB state
 * line) is refused; then a's held request fails (its socket destroyed, no head). Resolves with
 * the client's answer, and the access lines and app requests from before that request.
 */
async function hedgeRefusedThenHomeFails(t: Test, attempts: number) {
  let holding = ''
  let held: http.ServerResponse | null = null
  const { ups, seen } = await apps(t, ['a', 'b'], 10_000, false, (id, res) => id === holding && (held = res) !== null)
  const [front] = await behindNginx(t, [ups[1]!])
  const logs = new LogCapture()
  const timers = new HedgeTimers()
  const tether = await startTether(testConfig([{ id: 'a', url: ups[0]!.url }, front!], { retries: { hedge_after: HEDGE_AFTER, attempts } }), { logger: createLogger('info', logs), timers })
  t.teardown(() => tether.close(0))
  const jar = await userOnA(tether)
  await waitFor(async () => seen.includes('a - -') && (await metric(tether, 'tether_checkpoints_total{result="stored"}')) >= 1, 5_000, "a's checkpoint stored")
  const stored = await metric(tether, 'tether_checkpoints_total{result="stored"}')
  t.equal(JSON.parse((await get(tether.url, jar)).body).id, 'a', 'the user is on a')
  await waitFor(async () => (await metric(tether, 'tether_checkpoints_total{result="stored"}')) === stored + 1, 5_000, 'its checkpoint stored')
  // (this request's access line is counted from here: one line for each request an app saw)
  await when(onEvent(logs, 'record'), () => logs.access().length === seen.length, 5_000, "the setup's access lines")
  holding = 'a'
  const before = logs.access().length
  const seenBefore = seen.length
  const { res, pending } = await whileHedgeRefused(tether, jar, logs, timers, () => held)
  res?.socket?.destroy() // the first attempt fails (no head)
  // its kept-alive connection closed with nothing read: the GET goes once more to a on a new
  // connection (see forward.ts, ExchangeHandler.resend), which fails alike
  await waitFor(() => (held as http.ServerResponse | null) !== res, 5_000, 'the GET sent again to a')
  ;(held as http.ServerResponse | null)?.socket?.destroy()
  return { tether, logs, r: await pending, before, seenByB: () => seen.slice(seenBefore).filter((s) => s.startsWith('b')) }
}

t.test("a hedge refused for its state, then a first attempt that fails: the retry goes to the hedge's upstream without the state at once (nginx refuses it once, not again)", async (t) => {
  // (two extra attempts: the hedge's, refused but sent, and the retry's)
  const { tether, logs, r, before, seenByB } = await hedgeRefusedThenHomeFails(t, 2)
  t.equal(r.status, 200, "the app's answer, not nginx's 400")
  t.same(JSON.parse(r.body), { id: 'b' }, 'retried on b')
  t.same(seenByB(), ['b too_large -'], 'b ran the request once, told the state was too large (nginx kept the refused head)')
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 200, upstream: 'b', outcome: 'failover', retries: 1 })
  t.same(await refusals(tether, logs), { errors: 1, warnings: 0 }, "one rehydration error (b answered without the state); no retry refused with the state and sent again")
  t.equal(hedgeRefusals(logs), 1, "one warning, the hedge's")
})

t.test("a hedge refused for its state, then a first attempt that fails with no retry left: one answer, the first attempt's 502, nothing counted", async (t) => {
  // (one extra attempt: the hedge's, refused but sent, so none for a retry)
  const { tether, logs, r, before, seenByB } = await hedgeRefusedThenHomeFails(t, 1)
  t.equal(r.status, 502, "the first attempt's failure, not nginx's 400")
  t.same(seenByB(), [], "b's app never ran")
  await waitFor(() => logs.access().length === before + 1, 5_000, 'the access line')
  t.match(logs.access()[before], { status: 502, upstream: 'a' })
  t.equal(logs.access().length, before + 1, 'one access line')
  t.same(await refusals(tether, logs), { errors: 0, warnings: 0 }, 'no rehydration counted')
  t.equal(await metric(tether, 'tether_rehydrations_total{result="delivered"}'), 0)
  t.equal(hedgeRefusals(logs), 1)
})

t.test("a client that leaves after its hedge was refused for its state: one client_abort line, no rehydration counted, the home's request stopped", async (t) => {
  let holding = ''
  let held: http.ServerResponse | null = null
  const { ups } = await apps(t, ['a', 'b'], 10_000, false, (id, res) => id === holding && (held = res) !== null)
  const fronts = await behindNginx(t, ups)
  const timers = new HedgeTimers()
  const { tether, jar, home, logs } = await userAtHome(t, fronts, { retries: { hedge_after: HEDGE_AFTER } }, timers)
  holding = home
  const before = logs.access().length
  const req = http.get(tether.url, { agent: false, headers: { cookie: jar.header()! } })
  req.on('error', () => undefined)
  let answered = false
  req.on('response', () => { answered = true })
  await waitFor(() => answered || held !== null, 20_000, "the home's request") // (polled: the app sets it)
  if (!answered) await timers.hedge()
  await waitFor(() => answered || hedgeRefusals(logs) === 1, 20_000, "the hedge's refusal (or an answer)")
  t.notOk(answered, 'no answer reached the client')
  const stopped = new Promise((resolve) => (held as http.ServerResponse | null)?.on('close', resolve))
  req.destroy()
  await waitFor(() => logs.access().length === before + 1, 10_000, 'the access line')
  t.match(logs.access()[before], { status: 0, upstream: home, outcome: 'client_abort' })
  await within(stopped, 10_000, "the home's request closed (nginx's connection to it)")
  t.same(await refusals(tether, logs), { errors: 0, warnings: 0 })
  t.equal(await metric(tether, 'tether_rehydrations_total{result="delivered"}'), 0)
})

t.test("a moved user's WebSocket handshake whose state line nginx refuses 400 is sent again without it: the client gets the 101", async (t) => {
  const { ups, seen } = await apps(t, ['a', 'b'], 10_000)
  const fronts = await behindNginx(t, ups)
  const { tether, jar, home, logs } = await userMoving(t, fronts)
  const to = ups.find((u) => u.id !== home)!.id
  const h = await handshake(tether.url, jar)
  t.equal(h.status, 101, "the client gets the 101, not nginx's 400")
  t.equal(h.headers['x-up'], to)
  t.equal(h.headers['x-status'], 'too_large', 'the resend said the state was too large for a header')
  t.same(seen.filter((s) => s.startsWith(to)), [`${to} ws too_large -`], 'the app saw the resend only (nginx kept the refused head)')
  t.same(await refusals(tether, logs), { errors: 1, warnings: 1 })
})

t.test(`the ${STATE_LINE_400_BYTES}-byte bound on the state line: an app's own 400 to a state line within it is passed on (the app sees one request); over it, the request is sent again without the state`, async (t) => {
  const nameAndSeparator = 'x-tether-rehydrate: '.length
  for (const [bytes, resent] of [[STATE_LINE_400_BYTES - nameAndSeparator, false], [STATE_LINE_400_BYTES - nameAndSeparator + 1, true]] as const) {
    await t.test(`a ${bytes + nameAndSeparator}-byte line`, async (t) => {
      const { ups, seen } = await apps(t, ['a', 'b'], bytes, true)
      const { tether, jar, home, logs } = await userMoving(t, ups)
      const to = ups.find((u) => u.id !== home)!.id
      const moved = await get(tether.url, jar)
      if (resent) {
        t.equal(moved.status, 200, 'sent again without the state: the app answers')
        t.same(seen.filter((s) => s.startsWith(to)), [`${to} delivered ${bytes}`, `${to} too_large -`])
        t.same(await refusals(tether, logs), { errors: 1, warnings: 1 })
      } else {
        t.equal(moved.status, 400, "the app's 400 reaches the client")
        t.equal(moved.body, 'the app refused it')
        t.same(seen.filter((s) => s.startsWith(to)), [`${to} delivered ${bytes}`], 'the app saw exactly one request: not sent again')
        t.same(await refusals(tether, logs), { errors: 0, warnings: 0 }, 'no rehydration error, no warning: the state was delivered')
      }
    })
  }
})

t.test('a state of header bytes 0x80-0xFF (latin1 to Node, one byte each on the wire) is measured in those bytes: a 4096-byte line of them refused 400 by the app is passed on, and it arrives unchanged', async (t) => {
  // (its UTF-8 length, twice its bytes, is what Redis holds, not what the header line takes)
  const bytes = STATE_LINE_400_BYTES - 'x-tether-rehydrate: '.length
  const { ups, seen } = await apps(t, ['a', 'b'], bytes, true, () => false, '\u00e9')
  const { tether, jar, home, logs } = await userMoving(t, ups)
  const to = ups.find((u) => u.id !== home)!.id
  const moved = await get(tether.url, jar)
  t.equal(moved.status, 400, "the app's 400 reaches the client")
  t.same(seen.filter((s) => s.startsWith(to)), [`${to} delivered ${bytes}`], `the app saw one request, with the ${bytes} bytes sent: not sent again`)
  t.same(await refusals(tether, logs), { errors: 0, warnings: 0 }, 'no rehydration error, no warning')
})

t.test("a small state's handshake refused 400 by the app is passed on; a long one's is sent again without it", async (t) => {
  for (const [bytes, resent] of [[100, false], [STATE_LINE_400_BYTES, true]] as const) {
    await t.test(`${bytes} bytes of state`, async (t) => {
      const { ups, seen } = await apps(t, ['a', 'b'], bytes, true)
      const { tether, jar, home } = await userMoving(t, ups)
      const to = ups.find((u) => u.id !== home)!.id
      const h = await handshake(tether.url, jar)
      if (resent) {
        t.equal(h.status, 101, 'the resend switches')
        t.equal(h.headers['x-status'], 'too_large')
        t.same(seen.filter((s) => s.startsWith(to)), [`${to} ws delivered ${bytes}`, `${to} ws too_large -`])
      } else {
        t.equal(h.status, 400, "the app's 400 reaches the client")
        t.same(seen.filter((s) => s.startsWith(to)), [`${to} ws delivered ${bytes}`], 'not sent again')
      }
    })
  }
})
