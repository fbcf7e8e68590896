// Parsing an admin request target: total (never throws), decodes per segment, refuses what
// the admin API never needs (malformed escapes, dot segments, non-path targets, huge paths).
import t from 'tap'
import { MAX_TARGET_LENGTH, parseAdminTarget, type AdminTarget } from '../src/admin/admin-target.js'

const ok = (...segments: string[]): AdminTarget => ({ ok: true, segments })

t.test('a path is split at slashes, then each segment is percent-decoded; the query is ignored', async (t) => {
  const cases: [string, AdminTarget][] = [
    ['/healthz', ok('healthz')],
    ['/', ok('')],
    ['/healthz?verbose=1&x=%ZZ', ok('healthz')],
    ['/healthz#frag', ok('healthz')],
    ['/upstreams/app-0/drain', ok('upstreams', 'app-0', 'drain')],
    ['/upstreams/%5B%3A%3A1%5D%3A8080/drain', ok('upstreams', '[::1]:8080', 'drain')],
    ['/upstreams/a%2Fb/drain', ok('upstreams', 'a/b', 'drain')],
    ['/upstreams/%E0%A4%A8/drain', ok('upstreams', '\u0928', 'drain')],
    ['/upstr%65ams', ok('upstreams')],
    ['//healthz/', ok('', 'healthz', '')],
    ['/upstreams/..%2Fhealthz/drain', ok('upstreams', '../healthz', 'drain')],
    ['/upstreams/%00/drain', ok('upstreams', '\u0000', 'drain')],
  ]
  for (const [target, expected] of cases) t.same(parseAdminTarget(target), expected, target)
})

t.test('a malformed or non-UTF-8 percent-escape in any position is a 400, never a throw', async (t) => {
  const targets = [
    '/upstreams/%E0%A4%A/drain', // the escape that once ended the process
    '/%E0%A4%A/a/drain', '/upstreams/a/%E0%A4%A', '/healthz%', '/%', '/%%', '/%G0', '/%0',
    '/upstreams/%C0%AF/drain', // overlong UTF-8 for "/"
    '/upstreams/%ED%A0%80/drain', // a UTF-16 surrogate
    '/upstreams/%FF/drain', '/upstreams/%80/drain', '/readyz%E0',
  ]
  for (const target of targets) {
    const r = parseAdminTarget(target)
    t.match(r, { ok: false, status: 400, reason: /percent-escape/ }, target)
  }
})

t.test('dot segments are refused, raw or encoded, and never normalized', async (t) => {
  for (const target of ['/upstreams/../healthz', '/./healthz', '/upstreams/a/../../readyz', '/upstreams/%2e%2e/drain', '/upstreams/%2E/drain', '/..', '/.']) {
    t.match(parseAdminTarget(target), { ok: false, status: 400, reason: /dot segments/ }, target)
  }
})

t.test('a target that is not a path is a 400, an overlong one a 414', async (t) => {
  for (const target of [undefined, '', '*', 'http://127.0.0.1:9901/healthz', 'healthz', '%2Fhealthz']) {
    t.match(parseAdminTarget(target), { ok: false, status: 400, reason: /must be a path/ }, String(target))
  }
  const longest = `/${'a'.repeat(MAX_TARGET_LENGTH - 1)}`
  t.equal(parseAdminTarget(longest).ok, true, 'exactly the limit is read')
  t.match(parseAdminTarget(`${longest}a`), { ok: false, status: 414 })
  t.match(parseAdminTarget(`/upstreams/${'%E0'.repeat(10_000)}/drain`), { ok: false, status: 414 }, 'the length is checked before decoding')
})
