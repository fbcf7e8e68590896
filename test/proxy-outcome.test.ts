// How an upstream exchange's error is classified: what the client gets, whether the request may
// go to the next upstream, and what passive health hears. Pure functions of src/proxy/outcome.ts.
import t from 'tap'
import { classify, healthSignal } from '../src/proxy/outcome.js'
import { shouldRetry } from '../src/proxy/retry.js'

const failed = (code: string): Error => Object.assign(new Error(`connect ${code} 10.0.0.5:8000`), { code, syscall: 'connect' })

t.test('out of file descriptors is Tether\'s own failure: 503, no health signal, nothing was sent (the next upstream may be tried)', async (t) => {
  for (const code of ['EMFILE', 'ENFILE']) {
    const outcome = classify(failed(code), false)
    t.same(outcome, { kind: 'error', code: 'TETHER_OUT_OF_RESOURCES', connect: true }, code)
    t.equal(healthSignal({ status: 503, outcome, error: failed(code), responded: false }), null, `${code}: the upstream is not blamed`)
    t.equal(shouldRetry(outcome, 'POST', true), true, `${code}: nothing reached the upstream`)
  }
})

t.test('EADDRNOTAVAIL is the upstream\'s connect failure (ports run out per destination; an IPv6 upstream on a host without IPv6): counted, tried elsewhere', async (t) => {
  const outcome = classify(failed('EADDRNOTAVAIL'), false)
  t.same(outcome, { kind: 'error', code: 'TETHER_UPSTREAM_CONNECT', connect: true })
  t.equal(healthSignal({ status: 502, outcome, error: failed('EADDRNOTAVAIL'), responded: false }), 'connect_failure')
})

t.test('a request cut because a graceful stop\'s grace period ended (TETHER_SHUTTING_DOWN): no health signal, not retried', async (t) => {
  const outcome = { kind: 'error', code: 'TETHER_SHUTTING_DOWN', connect: false } as const
  const error = Object.assign(new Error('The client is destroyed'), { code: 'UND_ERR_DESTROYED' })
  t.equal(healthSignal({ status: 200, outcome, error, responded: true }), null, 'the upstream is not blamed')
  t.equal(shouldRetry(outcome, 'GET', true), false)
})

t.test('timeouts are told to health apart from connection errors and resets (the ejection says timeout, not error)', async (t) => {
  const cases: [string, string][] = [['UND_ERR_CONNECT_TIMEOUT', 'timeout'], ['UND_ERR_HEADERS_TIMEOUT', 'timeout'], ['UND_ERR_BODY_TIMEOUT', 'timeout'], ['ECONNRESET', 'connect_failure'], ['EHOSTUNREACH', 'connect_failure'], ['ECONNREFUSED', 'connect_refused']]
  for (const [code, signal] of cases) {
    const outcome = classify(failed(code), false)
    t.equal(healthSignal({ status: 0, outcome, error: failed(code), responded: false }), signal, code)
  }
})
