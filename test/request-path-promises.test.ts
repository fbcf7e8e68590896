// What the request path costs a plain request in promises: a keep-alive GET of a user whose
// Tether cookie names a ready upstream waits for nothing but its answer, so it enters no async
// function (its frame, promise and await were ~0.7 KB of the ~17 KB a request allocates: see
// bench/README.md, "Bytes allocated per request"), and its attempt tells its result by a
// callback, not a promise of its own. Counted with a promise hook (async_hooks), which sees
// every promise made and the stack that made it: deterministic, no timing. Both the request
// path and its HTTP transport (forward.ts) count: the attempt's end is told from the transport.
import t from 'tap'
import { createHook } from 'node:async_hooks'
import { boundCookieUser } from './fixtures/plain-requests.js'

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
  const user = await boundCookieUser(t)
  const requests = 20
  hook.enable()
  t.teardown(() => hook.disable())
  counting = true
  await user.send(requests)
  counting = false
  hook.disable()
  t.ok(made / requests <= 1, `promises a request on the request path and its transport: ${made / requests} (at most 1)`)
})
