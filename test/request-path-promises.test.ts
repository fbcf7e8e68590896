// What the request path costs a plain request in promises: a keep-alive GET of a user whose
// Tether cookie names a ready upstream waits for nothing but its answer, so it enters no async
// function (its frame, promise and await were ~0.7 KB of the ~17 KB a request allocates: see
// bench/README.md, "Bytes allocated per request"), and its attempt tells its result by a
// callback, not a promise of its own. Counted with a promise hook (async_hooks), which sees
// every promise made and the stack that made it: deterministic, no timing. Both the request
// path and its HTTP transport (forward.ts) count: the attempt's end is told from the transport.
import t from 'tap'
import { createHook } from 'node:async_hooks'
import { proxyFor, startUpstream } from './fixtures/upstream.js'
import { agentFor, CookieJar, get } from './fixtures/users.js'

/** Promises made by a stack through src/proxy/request-path or src/proxy/forward while `counting`. */
let counting = false
let made = 0
const hook = createHook({
  init(_id, type) {
    if (!counting || type !== 'PROMISE') return
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 64
    const stack = new Error().stack ?? ''
    Error.stackTraceLimit = limit
    if (/(request-path|forward)\.[jt]s/.test(stack)) made++
  },
})

t.test('a plain GET of a user bound to a ready upstream makes at most one promise on the request path and its transport: the reaction that tells the attempt\'s result', async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tt = await proxyFor(t, [up], { affinity: { key: 'cookie' } })
  const agent = agentFor(t, 1)
  const jar = new CookieJar()
  // the first request starts the session (its cookie), the next ones are the common case
  const first = await get(`${tt.url}/`, agent, {}, jar)
  t.equal(first.status, 200)
  t.ok(jar.header(), 'the first answer set the cookie')
  await get(`${tt.url}/`, agent, {}, jar)
  const requests = 20
  hook.enable()
  t.teardown(() => hook.disable())
  counting = true
  for (let i = 0; i < requests; i++) {
    const r = await get(`${tt.url}/`, agent, {}, jar)
    if (r.status !== 200 || r.body !== 'app-0\n') t.fail(`request ${i}: ${r.status} ${r.body}`)
  }
  counting = false
  hook.disable()
  t.ok(made / requests <= 1, `promises a request on the request path and its transport: ${made / requests} (at most 1)`)
})
