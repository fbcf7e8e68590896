// Issue 10 defect 5 end to end: Tether with `state.store: memory` and a small
// `state.memory.max_bytes`, returning users (two requests before the flood, one during it), and a
// flood of cookieless one-request visitors whose answers each carry a 32 KB checkpoint from a
// real upstream on loopback. Afterwards the old upstream is removed, so every user moves and is
// rehydrated from the store: each returning user's newest checkpoint must be there, and the
// visitors' checkpoints that survived must fit in the bound with the users'. Nothing sleeps.
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS } from '../src/config/schema.js'
import { checkpointCost } from '../src/state/memory-store.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'
import { CookieJar, get, runPool, userAgent } from './fixtures/users.js'

const MAX_BYTES = 1024 * 1024
const USERS = 16
const USER_STATE = 8 * 1024
const VISITORS = 400
const VISITOR_STATE = 32 * 1024
const SESSION_KEY = '0'.repeat(32) // the cookie's session id: 32 hex digits

/** User `user`'s `n`-th checkpoint: USER_STATE bytes, distinct per user and request. */
const userState = (user: string, n: number): string => `${user}:${n}:`.padEnd(USER_STATE, 's')

t.test('a flood of cookieless 32 KB checkpoints leaves every returning user\'s checkpoint in place', async (t) => {
  // app-a speaks the protocol: the X-User header names a returning user (versioned states);
  // any other request is a one-request visitor with its own 32 KB state
  const counts = new Map<string, number>()
  let visitors = 0
  const a = await startUpstream('app-a', (req, res) => {
    req.resume()
    const user = req.headers['x-user']
    const headers: http.OutgoingHttpHeaders = { 'content-type': 'text/plain' }
    if (typeof user === 'string') {
      const n = (counts.get(user) ?? 0) + 1
      counts.set(user, n)
      headers['x-tether-state'] = userState(user, n)
      headers['x-tether-state-version'] = String(n)
    } else {
      headers['x-tether-state'] = `visitor:${visitors++}:`.padEnd(VISITOR_STATE, 'v')
    }
    res.writeHead(200, headers)
    res.end('a\n')
  })
  // app-b only reports what it was rehydrated with (and checkpoints nothing); a 32 KB
  // X-Tether-Rehydrate needs more than Node's default 16 KB request head
  const b = http.createServer({ maxHeaderSize: 128 * 1024 }, (req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify({ id: 'app-b', rehydrate: req.headers['x-tether-rehydrate'] ?? null }))
  })
  await new Promise<void>((r) => b.listen(0, '127.0.0.1', r))
  const bUrl = `http://127.0.0.1:${(b.address() as AddressInfo).port}`
  const tt = await startTether(testConfig([a], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['state-memory-flood-0123456789'] } },
    state: { store: 'memory', timeout: 1_000, memory: { max_bytes: MAX_BYTES } },
  }), { logger: createLogger('silent') })
  t.teardown(async () => {
    await tt.close(0)
    b.closeAllConnections()
    await Promise.all([a.close(), new Promise((r) => b.close(r))])
  })
  const agent = userAgent(16)
  t.teardown(() => agent.destroy())
  const ask = async (jar: CookieJar, headers: http.OutgoingHttpHeaders = {}): Promise<string> => {
    const r = await get(tt.url, agent, headers, jar)
    if (r.status !== 200) throw new Error(`status ${r.status}: ${r.body}`)
    return r.body
  }

  // returning users: a first visit (cookieless: probation) and a second one (promoted)
  const users = Array.from({ length: USERS }, (_, i) => ({ name: `user-${i}`, jar: new CookieJar() }))
  for (const u of users) {
    await ask(u.jar, { 'x-user': u.name })
    await ask(u.jar, { 'x-user': u.name })
  }
  // the flood, with each user coming back once while it runs
  const jars = Array.from({ length: VISITORS }, () => new CookieJar())
  const returning = VISITORS / USERS
  await runPool(VISITORS, 8, async (i) => {
    await ask(jars[i]!)
    if (i % returning === 0) {
      const u = users[i / returning]!
      await ask(u.jar, { 'x-user': u.name })
    }
  })
  t.equal(visitors, VISITORS)
  t.ok(jars.every((j) => j.cookies.has('tether')), 'every visitor got a session cookie')

  // every user moves to app-b and must be rehydrated with their third checkpoint
  tt.reload({ ...tt.config, upstreams: [{ id: 'app-b', url: bUrl, weight: 1 }] })
  let kept = 0
  for (const u of users) {
    const body = JSON.parse(await ask(u.jar)) as { id: string; rehydrate: string | null }
    t.equal(body.id, 'app-b')
    if (body.rehydrate === userState(u.name, 3)) kept++
    else t.fail(`${u.name}: rehydrated with ${body.rehydrate === null ? 'nothing' : body.rehydrate.slice(0, 20)}`)
  }
  t.equal(kept, USERS, 'every returning user\'s newest checkpoint was in the store')

  // the visitors' checkpoints still held (reads only: app-b writes none, so nothing is evicted)
  const survived = (await runPool(VISITORS, 8, async (i) => {
    const body = JSON.parse(await ask(jars[i]!)) as { rehydrate: string | null }
    return body.rehydrate !== null
  })).filter(Boolean).length
  const usersBytes = USERS * checkpointCost(SESSION_KEY, userState('user-0', 3))
  const visitorCost = checkpointCost(SESSION_KEY, 'v'.repeat(VISITOR_STATE))
  const room = Math.floor((MAX_BYTES - usersBytes) / visitorCost)
  t.comment(`bound ${MAX_BYTES} B: ${USERS} users (${usersBytes} B) + ${survived} of ${VISITORS} visitors (${survived * visitorCost} B) held`)
  t.ok(usersBytes + survived * visitorCost <= MAX_BYTES, 'what the store held fits in state.memory.max_bytes')
  t.equal(survived, room, 'the visitors used exactly the room the users left')
})
