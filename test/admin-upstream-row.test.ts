// The documented JSON row of GET /upstreams: snake_case, RFC 3339 times, null for unknown;
// built from a real health table on a fake clock. docs/admin-api.md documents every field.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { HealthTable } from '../src/health/health-table.js'
import { rfc3339, sessionsCounted, upstreamRow, type UpstreamCounters } from '../src/admin/upstream-row.js'
import type { AffinityKeyKind } from '../src/config/schema.js'
import { FakeClock, FAKE_EPOCH } from './fixtures/clock.js'
import { ROOT } from './fixtures/cli.js'
import { section } from './fixtures/markdown.js'

const S = 1_000
const COUNTERS: UpstreamCounters = { url: 'http://10.0.0.1:8080', weight: 2, in_flight: 3, websockets: 1, sessions: 7, sessions_remaining: 4 }

function health(): { clock: FakeClock; table: HealthTable } {
  const clock = new FakeClock()
  const table = new HealthTable({
    active: { healthy_threshold: 2, unhealthy_threshold: 2 },
    passive: { consecutive_failures: 3, count_5xx: true, base_ejection: 30 * S, max_ejection: 300 * S, max_ejection_percent: 100 },
    slow_start: 0,
  }, clock)
  table.setUpstreams(['app-0', 'app-1', 'app-2'])
  return { clock, table }
}

t.test('a row joins health and counters in snake_case, with RFC 3339 times', async (t) => {
  const { clock, table } = health()
  table.reportPassive('app-1', 'connect_refused') // ejected for 30 s
  clock.advance(5 * S)
  table.drain('app-0')
  const [draining, ejected, healthy] = table.snapshot().map((e) => upstreamRow(e, COUNTERS))
  t.same(draining, {
    id: 'app-0', url: 'http://10.0.0.1:8080', weight: 2, state: 'draining', ready: true, accepts_new: false,
    draining: true, draining_since: '2025-11-25T16:00:05.000Z', disabled: false, active_failed: false,
    active_successes: 0, active_failures: 0, passive_failures: 0, ejected_until: null, ejection: null, times_ejected: 0,
    slow_start_weight: 1, in_flight: 3, queued: 0, websockets: 1, sessions: 7, migrating: false, sessions_remaining: 4,
  })
  t.match(ejected, { id: 'app-1', state: 'ejected', ready: false, accepts_new: false, ejected_until: '2025-11-25T16:00:30.000Z', times_ejected: 1, draining_since: null })
  t.same(ejected!.ejection, { reason: 'refused', until: '2025-11-25T16:00:30.000Z', ends: 'probes', passes_left: 2 }, 'the ejection: why, until when, what ends it')
  t.match(healthy, { id: 'app-2', state: 'healthy', ready: true, accepts_new: true, ejected_until: null, draining_since: null })
  for (const key of Object.keys(draining!)) t.match(key, /^[a-z]+(_[a-z]+)*$/, `${key} is snake_case`)
})

t.test('what Tether does not know is null, never a made-up number', async (t) => {
  const { table } = health()
  const row = upstreamRow(table.snapshot()[0]!, { url: null, weight: null, in_flight: 0, websockets: 0, sessions: null, sessions_remaining: null })
  t.match(row, { url: null, weight: null, sessions: null, in_flight: 0, websockets: 0 })
  t.equal(JSON.parse(JSON.stringify(row)).sessions, null, 'null survives JSON')
})

t.test('times are RFC 3339 UTC with milliseconds; null and impossible times stay null', async (t) => {
  const cases: [number | null, string | null][] = [
    [null, null],
    [0, '1970-01-01T00:00:00.000Z'],
    [FAKE_EPOCH, '2025-11-25T16:00:00.000Z'],
    [FAKE_EPOCH + 1_234, '2025-11-25T16:00:01.234Z'],
    [Number.NaN, null],
    [Number.POSITIVE_INFINITY, null],
    [8.64e15 + 1, null],
  ]
  for (const [ms, expected] of cases) t.equal(rfc3339(ms), expected, String(ms))
})

t.test('uid when known and addresses when more than one; neither otherwise', async (t) => {
  const entry = health().table.snapshot()[0]!
  const row = upstreamRow(entry, { ...COUNTERS, uid: 'uid-web-0', addresses: ['http://10.0.0.1:8080', 'http://[fd00::1]:8080'] })
  t.equal(row.uid, 'uid-web-0')
  t.same(row.addresses, ['http://10.0.0.1:8080', 'http://[fd00::1]:8080'])
  for (const counters of [COUNTERS, { ...COUNTERS, uid: undefined, addresses: ['http://10.0.0.1:8080'] }]) {
    const plain = upstreamRow(entry, counters)
    t.notOk('uid' in plain || 'addresses' in plain, 'no uid, one address: neither field')
  }
})

t.test('sessions are counted only for affinity keys that keep a table', async (t) => {
  const cases: [AffinityKeyKind, number | null, boolean][] = [
    ['none', null, false],
    ['none', 1.25, false],
    ['cookie', null, false],
    ['cookie', 1.25, true],
    ['app_cookie', null, true],
    ['client_ip', null, true],
    ['header', null, true],
  ]
  for (const [key, balance_factor, counted] of cases) {
    t.equal(sessionsCounted({ key, balance_factor }), counted, `key ${key}, balance_factor ${balance_factor}`)
  }
})

t.test('docs/admin-api.md documents every field of GET /upstreams and GET /readyz, and no other', async (t) => {
  const doc = readFileSync(join(ROOT, 'docs', 'admin-api.md'), 'utf8')
  // the field list is the first bullet list under the route's own heading: "- `name` (type): ..."
  const documented = (heading: string): string[] => {
    const part = /^((?:- .*\n(?: {2}.*\n)*)+)/m.exec(section(doc, heading) ?? '')?.[1] ?? ''
    return [...part.matchAll(/^- `([a-z_]+)` \(([^)]+)\)/gm)].map((m) => m[1]!)
  }
  const { table } = health()
  // a discovered pod's row has every field (uid and addresses are absent otherwise)
  const discovered = { ...COUNTERS, uid: 'uid-web-0', addresses: ['http://10.0.0.1:8080', 'http://[fd00::1]:8080'] }
  t.same(documented('`GET /upstreams`'), Object.keys(upstreamRow(table.snapshot()[0]!, discovered)), 'GET /upstreams, in order')
  t.same(documented('`GET /readyz`'), ['ready', 'reasons', 'degraded'], 'GET /readyz, in order')
})
