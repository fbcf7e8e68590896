// Protocol edges compared with nginx 1.22 and HAProxy 2.6 (test/fixtures/protocol-diff.ts):
// 1xx answers, bodies on bodiless answers, close-delimited answers to keep-alive clients, unasked
// trailers, large answer heads, odd status codes, absolute-form and fragment targets, TRACE and
// unknown methods, request-line spacing, Expect: 100-continue refused on the head. Each case is
// one raw exchange in front of a raw recording upstream; the test asserts Tether's line, and the
// case records what nginx and HAProxy did (bench/hostile-compare.ts differential prints all three
// again; neither is needed here).
import t from 'tap'
import { DIFFERENTIAL, observe } from './fixtures/protocol-diff.js'
import { startHarness, type Harness } from './fixtures/raw-tether.js'

let h: Harness
t.before(async () => {
  // as bench/hostile-compare.ts runs Tether: no replay, no ejection between cases
  h = await startHarness({ retries: { attempts: 0 }, timeouts: { client_headers: 2000, response_headers: 2000 }, health: { passive: { enabled: false } } })
})
t.teardown(() => h.close())

for (const c of DIFFERENTIAL) {
  t.test(`${c.name}: ${c.tether}`, async (t) => {
    t.equal(await observe(h, c), c.tether, `nginx 1.22: ${c.nginx}; HAProxy 2.6: ${c.haproxy}`)
    t.same(h.unhandled(), [], 'no error logged')
  })
}
