// DNS discovery against a real loopback DNS server (test/fixtures/dns-server.ts): the pure
// helpers table-driven, the refresh loop driven by FakeTimers (a tick fires the interval timer
// and waits for the resolution to set the next one), plus a few real-timer runs with short
// intervals, waiting on the DNS server's and the hooks' events under deadlines. Nothing sleeps;
// nothing leaves 127.0.0.1; the addresses served are never dialed.
import t, { type Test } from 'tap'
import { EventEmitter } from 'node:events'
import {
  DnsDiscovery,
  DnsDiscoveryError,
  diffUpstreams,
  srvTargetId,
  upstreamId,
  upstreamsFromSrv,
  upstreamsFromAddresses,
  upstreamUrl,
  type DiscoveredUpstream,
  
  type DnsDiscoveryOptions,
  type UpstreamDiff,
} from '../src/upstream/dns-discovery.js'
import { Membership } from '../src/upstream/membership.js'
import { createDiscovery } from '../src/upstream/discovery.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { FakeTimers } from './fixtures/timers.js'
import { onEvent, when, within } from './fixtures/wait.js'
import type { Timers } from '../src/clock.js'

const NAME = 'app-headless.default.svc.cluster.local'
const INTERVAL = 1000 // virtual ms under FakeTimers
const TIMEOUT = 60_000 // the deadline timer (virtual); c-ares' real backstop never fires first

/** One refresh: the interval timer fires, and the resolution it starts ends by setting the next one. */
async function tick(timers: FakeTimers): Promise<void> {
  const due = timers.pending(INTERVAL).length
  if (due !== 1) throw new Error(`expected one pending ${INTERVAL} ms timer, found ${due}`)
  timers.advance(INTERVAL)
  await timers.scheduled(INTERVAL)
}

/** Records hook calls; each call also emits 'hook'. */
class Recorder extends EventEmitter {
  readonly changes: { ids: string[]; diff: UpstreamDiff }[] = []
  readonly errors: { err: DnsDiscoveryError; n: number }[] = []
  readonly notes: string[] = []
  readonly hooks = {
    onNote: (message: string) => {
      this.notes.push(message)
    },
    onChange: (upstreams: readonly DiscoveredUpstream[], diff: UpstreamDiff) => {
      this.changes.push({ ids: upstreams.map((u) => u.id), diff })
      this.emit('hook')
    },
    onError: (err: DnsDiscoveryError, n: number) => {
      this.errors.push({ err, n })
      this.emit('hook')
    },
  }
}

const ids = (upstreams: readonly DiscoveredUpstream[]): string[] => upstreams.map((u) => u.id)

interface Setup {
  dns: TestDnsServer
  discovery: DnsDiscovery
  timers: FakeTimers
  rec: Recorder
  options: DnsDiscoveryOptions
}

/** A DNS server serving `records` for NAME, and a discovery on manual timers (not started). */
async function setup(
  t: Test,
  records: { a: string[]; aaaa: string[] } | null,
  options: Partial<DnsDiscoveryOptions> = {},
): Promise<Setup> {
  const dns = new TestDnsServer()
  const { port } = await dns.start()
  if (records) dns.set(NAME, records)
  const timers = new FakeTimers()
  const rec = new Recorder()
  const full: DnsDiscoveryOptions = {
    name: NAME,
    port: 8080,
    interval: INTERVAL,
    family: 'any',
    servers: [`127.0.0.1:${port}`],
    timeout: TIMEOUT,
    ...options,
  }
  const discovery = new DnsDiscovery(full, rec.hooks, timers, timers.clock)
  t.teardown(async () => {
    await discovery.stop()
    await dns.close()
  })
  return { dns, discovery, timers, rec, options: full }
}

t.test('pure helpers', async (t) => {
  t.test('ids and urls: address:port, IPv6 in brackets', async (t) => {
    const cases: [string, number, string, string][] = [
      ['10.0.0.1', 8080, '10.0.0.1:8080', 'http://10.0.0.1:8080'],
      ['192.168.1.254', 80, '192.168.1.254:80', 'http://192.168.1.254:80'],
      ['fd00::1', 8080, '[fd00::1]:8080', 'http://[fd00::1]:8080'],
      ['2001:db8::1:0:0:ff', 443, '[2001:db8::1:0:0:ff]:443', 'http://[2001:db8::1:0:0:ff]:443'],
      ['::ffff:10.0.0.1', 8080, '[::ffff:10.0.0.1]:8080', 'http://[::ffff:10.0.0.1]:8080'],
    ]
    for (const [address, port, id, url] of cases) {
      t.equal(upstreamId(address, port), id, `id of ${address}`)
      t.equal(upstreamUrl(address, port), url, `url of ${address}`)
    }
  })

  t.test('a set is deduplicated, sorted by id, weight 1, and frozen', async (t) => {
    const set = upstreamsFromAddresses(['10.0.0.2', 'fd00::1', '10.0.0.1', '10.0.0.2', '10.0.0.10'], 8080)
    // Code unit order, as placement sorts ids: '0' (0x30) sorts before ':' (0x3a).
    t.same(ids(set), ['10.0.0.10:8080', '10.0.0.1:8080', '10.0.0.2:8080', '[fd00::1]:8080'])
    t.same(set[1], { id: '10.0.0.1:8080', url: 'http://10.0.0.1:8080', weight: 1 })
    t.ok(Object.isFrozen(set) && set.every((u) => Object.isFrozen(u)), 'deeply frozen')
    t.same(upstreamsFromAddresses([], 80), [])
  })

  t.test('diff lists the ids added and removed', async (t) => {
    const set = (...a: string[]) => upstreamsFromAddresses(a, 80)
    const cases: [string, readonly DiscoveredUpstream[], readonly DiscoveredUpstream[], UpstreamDiff][] = [
      ['same set', set('10.0.0.1', '10.0.0.2'), set('10.0.0.2', '10.0.0.1'), { added: [], removed: [], changed: [] }],
      ['one added', set('10.0.0.1'), set('10.0.0.1', '10.0.0.2'), { added: ['10.0.0.2:80'], removed: [], changed: [] }],
      ['one removed', set('10.0.0.1', '10.0.0.2'), set('10.0.0.2'), { added: [], removed: ['10.0.0.1:80'], changed: [] }],
      ['replaced', set('10.0.0.1', '10.0.0.2'), set('10.0.0.2', '10.0.0.3'), { added: ['10.0.0.3:80'], removed: ['10.0.0.1:80'], changed: [] }],
      ['from empty', set(), set('fd00::1'), { added: ['[fd00::1]:80'], removed: [], changed: [] }],
    ]
    for (const [name, before, after, diff] of cases) t.same(diffUpstreams(before, after), diff, name)
  })
})

t.test('the constructor rejects invalid options with a precise message', async (t) => {
  const base: DnsDiscoveryOptions = { name: NAME, port: 8080, interval: 1000, family: 'any' }
  const hooks = { onChange: () => {} }
  const cases: [string, Partial<DnsDiscoveryOptions>, RegExp][] = [
    ['empty name', { name: '' }, /name must be a non-empty DNS name/],
    ['port 0', { port: 0 }, /port must be an integer 1\.\.65535, got 0/],
    ['port 70000', { port: 70_000 }, /port must be an integer/],
    ['interval 0', { interval: 0 }, /interval must be a positive number/],
    ['timeout NaN', { timeout: NaN }, /timeout must be a positive number/],
    ['family', { family: 'inet' as never }, /family must be 'any', 'ipv4' or 'ipv6'/],
    ['servers', { servers: ['not an address'] }, /invalid servers/],
  ]
  for (const [name, patch, message] of cases) {
    t.throws(() => new DnsDiscovery({ ...base, ...patch }, hooks), { message }, name)
  }
  t.doesNotThrow(() => new DnsDiscovery({ ...base, servers: ['127.0.0.1:5353', '[::1]:53'] }, hooks), 'valid servers')
})

t.test('start() resolves with the initial set and reports it through onChange', async (t) => {
  const { discovery, rec, timers } = await setup(t, { a: ['10.0.0.2', '10.0.0.1'], aaaa: [] })
  const initial = await discovery.start()
  t.same(ids(initial), ['10.0.0.1:8080', '10.0.0.2:8080'])
  t.same(initial[0], { id: '10.0.0.1:8080', url: 'http://10.0.0.1:8080', weight: 1 })
  t.equal(discovery.current(), initial, 'current() is the same frozen array')
  t.same(rec.changes, [{ ids: ['10.0.0.1:8080', '10.0.0.2:8080'], diff: { added: ['10.0.0.1:8080', '10.0.0.2:8080'], removed: [], changed: [] } }])
  t.same(rec.errors, [])
  t.same(timers.pending(INTERVAL).length, 1, 'the next resolution is scheduled')
  t.ok(timers.pending(INTERVAL)[0]!.unrefed, 'and its timer is unref()ed')
  t.equal(timers.pending(TIMEOUT).length, 0, 'the deadline of the finished resolution is cleared')
})

t.test('membership follows the answers; unchanged answers call no hook', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1', '10.0.0.2'], aaaa: [] })
  await discovery.start()
  t.equal(rec.changes.length, 1)

  await tick(timers)
  await tick(timers)
  t.equal(rec.changes.length, 1, 'two unchanged answers: no onChange')

  dns.set(NAME, { a: ['10.0.0.1', '10.0.0.2', '10.0.0.3'], aaaa: [] })
  await tick(timers)
  t.same(rec.changes.at(-1), {
    ids: ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080'],
    diff: { added: ['10.0.0.3:8080'], removed: [], changed: [] },
  }, 'an added address')

  dns.set(NAME, { a: ['10.0.0.3', '10.0.0.1'], aaaa: [] })
  await tick(timers)
  t.same(rec.changes.at(-1), { ids: ['10.0.0.1:8080', '10.0.0.3:8080'], diff: { added: [], removed: ['10.0.0.2:8080'], changed: [] } }, 'a removed address')

  dns.set(NAME, { a: ['10.0.0.1', '10.0.0.3', '10.0.0.1'], aaaa: [] })
  await tick(timers)
  t.equal(rec.changes.length, 3, 'the same set in another order, with a duplicate: no onChange')
  t.same(ids(discovery.current()), ['10.0.0.1:8080', '10.0.0.3:8080'])
  t.same(rec.errors, [])
})

t.test('a failed or empty resolution keeps the last set and reports why', async (t) => {
  const cases: [string, (s: Setup) => void | Promise<void>, string, RegExp][] = [
    ['SERVFAIL', (s) => void (s.dns.mode = 'servfail'), 'ESERVFAIL', /\(A\+AAAA\) failed: ESERVFAIL; keeping the last 2 upstreams$/],
    ['NXDOMAIN', (s) => void s.dns.records.clear(), 'ENOTFOUND', /returned no addresses \(no such name\): ENOTFOUND/],
    ['a name with no records', (s) => s.dns.set(NAME, { a: [], aaaa: [] }), 'ENODATA', /returned no addresses \(no records\): ENODATA/],
  ]
  for (const [name, breakIt, code, message] of cases) {
    t.test(name, async (t) => {
      const s = await setup(t, { a: ['10.0.0.1', '10.0.0.2'], aaaa: [] })
      const { discovery, rec, timers, dns } = s
      const initial = await discovery.start()
      await breakIt(s)
      await tick(timers)
      await tick(timers)
      t.equal(discovery.current(), initial, 'the last known set is kept')
      t.equal(rec.changes.length, 1, 'no onChange')
      t.same(rec.errors.map((e) => e.n), [1, 2], 'consecutive failures are counted')
      const { err } = rec.errors[0]!
      t.type(err, DnsDiscoveryError)
      t.equal(err.code, code)
      t.equal(err.hostname, NAME)
      t.match(err.message, new RegExp(`^DNS discovery of ${NAME.replaceAll('.', '\\.')} `), 'the message names the name')
      t.match(err.message, message)
      t.equal(dns.queries, 6, 'every resolution asked A and AAAA once')
    })
  }
})

t.test('a dropped query times out at the deadline and keeps the last set', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1'], aaaa: [] }, { family: 'ipv4' })
  const initial = await discovery.start()
  dns.mode = 'drop'
  const before = dns.queries
  timers.advance(INTERVAL)
  await when(onEvent(dns, 'query'), () => dns.queries === before + 1, 5000, 'the dropped query')
  t.equal(timers.pending(TIMEOUT).length, 1, 'the deadline is pending')
  t.ok(timers.pending(TIMEOUT)[0]!.unrefed, 'and unref()ed')
  t.equal(timers.pending(INTERVAL).length, 0, 'nothing else is scheduled while a query is in flight')
  timers.advance(TIMEOUT)
  await timers.scheduled(INTERVAL)
  t.equal(discovery.current(), initial)
  t.same(rec.errors.map((e) => [e.err.code, e.n]), [['ETIMEOUT', 1]])
  t.match(rec.errors[0]!.err.message, `DNS discovery of ${NAME} (A) timed out after ${TIMEOUT} ms: ETIMEOUT; keeping the last 1 upstream`)
})

t.test('a network error (nothing listening) keeps the last set', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1'], aaaa: [] })
  const initial = await discovery.start()
  await dns.close() // the port now answers ICMP port unreachable
  await tick(timers)
  t.equal(discovery.current(), initial)
  t.equal(rec.errors.length, 1)
  t.equal(rec.errors[0]!.err.code, 'ECONNREFUSED')
  t.match(rec.errors[0]!.err.message, /failed: ECONNREFUSED/)
  t.ok(rec.errors[0]!.err.cause instanceof Error, "the resolver's error rides along as cause")
})

t.test('recovery: a success resets the failure count and applies the new answer', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1'], aaaa: [] })
  await discovery.start()
  dns.mode = 'servfail'
  await tick(timers)
  await tick(timers)
  dns.mode = 'answer'
  dns.set(NAME, { a: ['10.0.0.1', '10.0.0.9'], aaaa: [] })
  await tick(timers)
  t.same(ids(discovery.current()), ['10.0.0.1:8080', '10.0.0.9:8080'], 'the new answer is applied')
  t.equal(rec.changes.length, 2)
  dns.mode = 'servfail'
  await tick(timers)
  t.same(rec.errors.map((e) => e.n), [1, 2, 1], 'the count restarts at 1 after a success')
})

t.test('the first resolution may fail: start() resolves with an empty set, a later one fills it', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, null)
  const initial = await discovery.start()
  t.same(initial, [])
  t.same(rec.changes, [], 'no onChange for an empty set')
  t.same(rec.errors.map((e) => [e.err.code, e.n]), [['ENOTFOUND', 1]])
  t.match(rec.errors[0]!.err.message, /keeping the last 0 upstreams$/)
  dns.set(NAME, { a: ['10.0.0.1'], aaaa: [] })
  await tick(timers)
  t.same(rec.changes.map((c) => c.ids), [['10.0.0.1:8080']])
})

t.test('IPv6 addresses get bracketed ids and urls', async (t) => {
  const { discovery } = await setup(t, { a: ['10.0.0.1'], aaaa: ['fd00::2', 'FD00:0:0::1', '2001:db8:0:0:1::ff'] })
  const set = await discovery.start()
  t.same(set, [
    { id: '10.0.0.1:8080', url: 'http://10.0.0.1:8080', weight: 1 },
    { id: '[2001:db8::1:0:0:ff]:8080', url: 'http://[2001:db8::1:0:0:ff]:8080', weight: 1 },
    { id: '[fd00::1]:8080', url: 'http://[fd00::1]:8080', weight: 1 },
    { id: '[fd00::2]:8080', url: 'http://[fd00::2]:8080', weight: 1 },
  ], 'addresses come back in canonical form, so ids are stable however the record was written')
})

t.test('family filtering', async (t) => {
  const both = { a: ['10.0.0.1'], aaaa: ['fd00::1'] }
  const cases: [DnsDiscoveryOptions['family'], { a: string[]; aaaa: string[] }, string[] | string, number][] = [
    ['any', both, ['10.0.0.1:8080', '[fd00::1]:8080'], 2],
    ['ipv4', both, ['10.0.0.1:8080'], 1],
    ['ipv6', both, ['[fd00::1]:8080'], 1],
    ['any', { a: ['10.0.0.1'], aaaa: [] }, ['10.0.0.1:8080'], 2], // AAAA NODATA = empty family
    ['any', { a: [], aaaa: ['fd00::1'] }, ['[fd00::1]:8080'], 2],
    ['ipv6', { a: ['10.0.0.1'], aaaa: [] }, 'ENODATA', 1],
    ['ipv4', { a: [], aaaa: ['fd00::1'] }, 'ENODATA', 1],
  ]
  for (const [family, records, expected, queries] of cases) {
    t.test(`${family}, A ${JSON.stringify(records.a)}, AAAA ${JSON.stringify(records.aaaa)}`, async (t) => {
      const { dns, discovery, rec } = await setup(t, records, { family })
      const set = await discovery.start()
      if (typeof expected === 'string') {
        t.same(set, [])
        t.equal(rec.errors[0]?.err.code, expected)
      } else {
        t.same(ids(set), expected)
      }
      t.equal(dns.queries, queries, `${queries} quer${queries === 1 ? 'y' : 'ies'} per resolution`)
    })
  }
})

t.test('no overlapping queries: one resolution in flight at a time, with real timers', async (t) => {
  const dns = new TestDnsServer()
  const { port } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: ['10.0.0.1'], aaaa: [] })
  dns.mode = 'drop'
  const rec = new Recorder()
  // Every resolution lasts 50 ms (the deadline), 50x the interval: overlapping would show at once.
  const discovery = new DnsDiscovery(
    { name: NAME, port: 8080, interval: 1, timeout: 50, family: 'ipv4', servers: [`127.0.0.1:${port}`] },
    rec.hooks,
  )
  await discovery.start()
  await when(onEvent(rec, 'hook'), () => rec.errors.length >= 4, 5000, 'four timeouts')
  await discovery.stop()
  const rounds = rec.errors.length
  t.same(rec.errors.map((e) => e.err.code), new Array(rounds).fill('ETIMEOUT'))
  t.same(rec.errors.map((e) => e.n), Array.from({ length: rounds }, (_, i) => i + 1))
  t.ok(dns.queries >= rounds && dns.queries <= rounds + 1, `${dns.queries} queries for ${rounds} finished resolutions (+1 cut by stop)`)
})

t.test('real timers: a 30 ms interval picks up changes, timers are unref()ed, stop() leaves none', async (t) => {
  const dns = new TestDnsServer()
  const { port } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: ['10.0.0.1'], aaaa: ['fd00::1'] })
  const rec = new Recorder()
  // The real timers, with a record of the live ones.
  const live = new Set<NodeJS.Timeout>()
  const timers: Timers = {
    setTimeout(callback, ms) {
      const handle = setTimeout(() => {
        live.delete(handle)
        callback()
      }, ms)
      live.add(handle)
      return handle
    },
    clearTimeout(handle) {
      live.delete(handle as NodeJS.Timeout)
      clearTimeout(handle as NodeJS.Timeout)
    },
  }
  const discovery = new DnsDiscovery(
    { name: NAME, port: 9000, interval: 30, family: 'any', servers: [`127.0.0.1:${port}`] },
    rec.hooks,
    timers,
  )
  t.same(ids(await discovery.start()), ['10.0.0.1:9000', '[fd00::1]:9000'])
  t.equal(live.size, 1, 'the next resolution is scheduled')
  t.notOk([...live][0]!.hasRef(), 'and does not keep the process alive')
  dns.set(NAME, { a: ['10.0.0.1', '10.0.0.2'], aaaa: ['fd00::1'] })
  await when(onEvent(rec, 'hook'), () => rec.changes.length === 2, 5000, 'the added address')
  t.same(rec.changes[1]!.ids, ['10.0.0.1:9000', '10.0.0.2:9000', '[fd00::1]:9000'])
  await discovery.stop()
  t.equal(live.size, 0, 'stop() leaves no timer behind')
  t.equal(rec.changes.length, 2)
  t.same(rec.errors, [])
})

t.test('stop() cancels an in-flight query at once and clears every timer', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1'], aaaa: ['fd00::1'] })
  await discovery.start()
  dns.mode = 'drop'
  const before = dns.queries
  timers.advance(INTERVAL)
  await when(onEvent(dns, 'query'), () => dns.queries === before + 2, 5000, 'both queries')
  await within(discovery.stop(), 2000, 'stop() (the deadline is a minute away)')
  t.equal(timers.pending().length, 0, 'no timer left')
  t.same(rec.errors, [], 'a cancellation is not reported as an error')
  t.equal(discovery.current().length, 2, 'current() still answers')
  await discovery.stop()
  t.pass('stop() is idempotent')
})

t.test('stop() during start(): start() resolves with an empty set, no hook is called', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1'], aaaa: [] })
  dns.mode = 'drop'
  const starting = discovery.start()
  await when(onEvent(dns, 'query'), () => dns.queries === 2, 5000, 'the first queries')
  await discovery.stop()
  t.same(await starting, [])
  t.same(rec.changes, [])
  t.same(rec.errors, [])
  t.equal(timers.pending().length, 0)
})

t.test('start() runs once: a second start() or a start() after stop() rejects', async (t) => {
  const { discovery } = await setup(t, { a: ['10.0.0.1'], aaaa: [] })
  await discovery.start()
  await t.rejects(discovery.start(), { message: 'DnsDiscovery: start() after start()' })
  await discovery.stop()
  await t.rejects(discovery.start(), { message: 'DnsDiscovery: start() after stop()' })
  const fresh = new DnsDiscovery({ name: NAME, port: 80, interval: 1000, family: 'any' }, { onChange: () => {} })
  await fresh.stop()
  await t.rejects(fresh.start(), { message: 'DnsDiscovery: start() after stop()' }, 'stop() before start()')
})

t.test('a hook may call stop(): the loop ends without scheduling another resolution', async (t) => {
  const dns = new TestDnsServer()
  const { port } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: ['10.0.0.1'], aaaa: [] })
  const timers = new FakeTimers()
  let stopping: Promise<void> | undefined
  const discovery: DnsDiscovery = new DnsDiscovery(
    { name: NAME, port: 80, interval: INTERVAL, family: 'ipv4', servers: [`127.0.0.1:${port}`] },
    { onChange: () => void (stopping = discovery.stop()) },
    timers,
  )
  t.same(ids(await discovery.start()), ['10.0.0.1:80'])
  await stopping
  t.equal(timers.pending().length, 0)
})

// ---- SRV (discovery.dns.srv) ----------------------------------------------------------------

const SRV_NAME = '_http._tcp.web.default.svc.cluster.local'
const pod = (n: number): string => `web-${n}.web.default.svc.cluster.local`
const srvRecord = (n: number, port = 8080) => ({ priority: 0, weight: 100, port, target: pod(n) })

/** A DNS server with SRV records for SRV_NAME and A records for their targets, and an SRV discovery (not started). */
async function srvSetup(t: Test, pods: Record<number, string>, options: Partial<DnsDiscoveryOptions> = {}): Promise<Setup> {
  const s = await setup(t, null, { name: SRV_NAME, srv: true, port: null, family: 'ipv4', ...options })
  setPods(s.dns, pods)
  return s
}

function setPods(dns: TestDnsServer, pods: Record<number, string>): void {
  dns.set(SRV_NAME, { a: [], aaaa: [], srv: Object.keys(pods).map((n) => srvRecord(Number(n))) })
  for (const [n, ip] of Object.entries(pods)) dns.set(pod(Number(n)), { a: [ip], aaaa: [] })
}

t.test('SRV helpers: the id is the target host name, the port the record port, one upstream per pod name', async (t) => {
  t.equal(srvTargetId('web-0.web.default.svc.cluster.local'), 'web-0')
  t.equal(srvTargetId('WEB-1.web.default.svc.cluster.local.'), 'web-1', 'case and the trailing dot do not matter')
  t.equal(srvTargetId('none.web.default.svc.cluster.local.'), '_none', 'a target named none (the metrics\' label for no upstream) gets an id no pod or static upstream can have')
  t.equal(srvTargetId('NONE.web.default.svc.cluster.local'), '_none')
  t.same(upstreamsFromSrv([{ name: 'none.web.default.svc.cluster.local', port: 8080, priority: 0, weight: 50 }], new Map([['none.web.default.svc.cluster.local', ['10.0.0.5']]]), null),
    [{ id: '_none', url: 'http://10.0.0.5:8080', weight: 1 }])
  const records = [
    { name: pod(1), port: 8080, priority: 0, weight: 50 },
    { name: pod(0), port: 9090, priority: 0, weight: 50 },
    { name: pod(0), port: 8080, priority: 0, weight: 50 },
    { name: pod(2), port: 8080, priority: 0, weight: 50 },
  ]
  const addresses = new Map([[pod(0), ['10.0.0.9', '10.0.0.5']], [pod(1), ['10.0.0.6']]])
  t.same(upstreamsFromSrv(records, addresses, null), [
    { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, addresses: ['http://10.0.0.5:8080', 'http://10.0.0.9:8080'] },
    { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1 },
  ], 'a pod named twice (two ports) counts once, at its lowest port; its first address in text order, all of them listed; a target without an address is left out')
  t.same(upstreamsFromSrv(records, addresses, 7000).map((u) => u.url), ['http://10.0.0.5:7000', 'http://10.0.0.6:7000'], 'a configured port wins over the records')
  t.same(diffUpstreams(
    upstreamsFromSrv(records, addresses, null),
    upstreamsFromSrv(records, new Map([[pod(0), ['10.0.0.9', '10.0.0.5']], [pod(1), ['10.0.0.7']]]), null),
  ), { added: [], removed: [], changed: ['web-1'] }, 'a pod with a new address keeps its id and is reported changed')
  t.same(diffUpstreams(
    upstreamsFromSrv(records, addresses, null),
    upstreamsFromSrv(records, new Map([[pod(0), ['10.0.0.5']], [pod(1), ['10.0.0.6']]]), null),
  ), { added: [], removed: [], changed: ['web-0'] }, 'one listed at fewer addresses (its url kept) is reported changed: the set carries its addresses')
})

t.test('SRV helpers: a target keeps the url it had while that address is still among its addresses (A and AAAA, or several)', async (t) => {
  const records = [{ name: pod(0), port: 8080, priority: 0, weight: 50 }]
  const had = [{ id: 'web-0', url: 'http://10.0.0.9:8080', weight: 1 }]
  t.equal(upstreamsFromSrv(records, new Map([[pod(0), ['10.0.0.9', '10.0.0.5']]]), null, had)[0]?.url, 'http://10.0.0.9:8080', 'an address sorting first does not move it')
  t.equal(upstreamsFromSrv(records, new Map([[pod(0), ['fd00::9', '10.0.0.9']]]), null, had)[0]?.url, 'http://10.0.0.9:8080', 'nor does an AAAA address')
  t.equal(upstreamsFromSrv(records, new Map([[pod(0), ['10.0.0.7', '10.0.0.5']]]), null, had)[0]?.url, 'http://10.0.0.5:8080', 'its address gone: the first in text order')
  t.equal(upstreamsFromSrv(records, new Map([[pod(0), ['10.0.0.9']]]), 7000, had)[0]?.url, 'http://10.0.0.9:7000', 'another port: another url')
})

t.test('SRV discovery: pods by name, a restarted pod keeps its id at its new address, a removed pod leaves', async (t) => {
  const { dns, discovery, rec, timers } = await srvSetup(t, { 0: '10.0.0.5', 1: '10.0.0.6' })
  const initial = await discovery.start()
  t.same(initial, [
    { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 },
    { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1 },
  ])
  setPods(dns, { 0: '10.0.0.5', 1: '10.0.0.16' })
  await tick(timers)
  t.same(rec.changes.at(-1), { ids: ['web-0', 'web-1'], diff: { added: [], removed: [], changed: ['web-1'] } }, 'same id, new url')
  t.equal(discovery.current()[1]!.url, 'http://10.0.0.16:8080')
  setPods(dns, { 0: '10.0.0.5', 1: '10.0.0.16', 2: '10.0.0.7' })
  await tick(timers)
  t.same(rec.changes.at(-1)?.diff, { added: ['web-2'], removed: [], changed: [] }, 'scale up')
  setPods(dns, { 0: '10.0.0.5' })
  await tick(timers)
  t.same(rec.changes.at(-1)?.diff, { added: [], removed: ['web-1', 'web-2'], changed: [] }, 'scale down')
  await tick(timers)
  t.equal(rec.changes.length, 4, 'an unchanged answer calls no hook')
  t.same(rec.errors, [])
})

t.test('SRV discovery: no SRV records, or targets that do not resolve, keep the last set', async (t) => {
  const { dns, discovery, rec, timers } = await srvSetup(t, { 0: '10.0.0.5' })
  const initial = await discovery.start()
  dns.set(SRV_NAME, { a: [], aaaa: [], srv: [] })
  await tick(timers)
  t.equal(rec.errors.at(-1)?.err.code, 'ENODATA')
  t.match(rec.errors.at(-1)?.err.message, /\(SRV, targets A\) returned no SRV records \(no records\): ENODATA; keeping the last 1 upstream$/)
  dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(7)] }) // web-7 has no A record
  await tick(timers)
  t.match(rec.errors.at(-1)?.err.message, /returned no target addresses \(no such name\): ENOTFOUND/)
  dns.mode = 'servfail'
  await tick(timers)
  t.equal(rec.errors.at(-1)?.err.code, 'ESERVFAIL')
  t.equal(discovery.current(), initial, 'the last known set stays through all of it')
  t.same(rec.errors.map((e) => e.n), [1, 2, 3])
})

t.test('SRV discovery: a configured port overrides the records; without srv a port is required', async (t) => {
  const { discovery } = await srvSetup(t, { 0: '10.0.0.5' }, { port: 9000 })
  t.same((await discovery.start()).map((u) => u.url), ['http://10.0.0.5:9000'])
  t.throws(() => new DnsDiscovery({ name: NAME, port: null, interval: 1000, family: 'any' }, { onChange: () => {} }), { message: /port must be an integer 1\.\.65535, got null/ })
})

// ---- one query failing among others (each family, each SRV target on its own) -------------

t.test('family any: a family whose query fails does not fail the other; it keeps its last known addresses', async (t) => {
  const { dns, discovery, rec, timers } = await setup(t, { a: ['10.0.0.1', '10.0.0.2'], aaaa: ['fd00::1'] })
  dns.failQuery(NAME, 'AAAA', 'servfail')
  const initial = await discovery.start()
  t.same(ids(initial), ['10.0.0.1:8080', '10.0.0.2:8080'], 'A answered, AAAA SERVFAIL: the A addresses serve from the first resolution')
  t.same(rec.changes.map((c) => c.ids), [['10.0.0.1:8080', '10.0.0.2:8080']])
  t.equal(rec.errors.length, 1, 'the failure is reported')
  const first = rec.errors[0]!
  t.equal(first.n, 1)
  t.equal(first.err.code, 'ESERVFAIL')
  t.equal(first.err.partial, true)
  t.equal(first.err.hostname, NAME)
  t.equal(first.err.message, `DNS discovery of ${NAME} (A+AAAA) failed in part (AAAA of ${NAME}: ESERVFAIL); using the answers that came and the last known addresses of what failed: 2 upstreams`)
  t.equal(discovery.failures, 1, 'degraded while AAAA fails')

  dns.set(NAME, { a: ['10.0.0.1', '10.0.0.2', '10.0.0.3'], aaaa: ['fd00::1'] })
  await tick(timers)
  t.same(rec.changes.at(-1)?.diff, { added: ['10.0.0.3:8080'], removed: [], changed: [] }, 'a new A address is added while AAAA still fails')
  t.same(rec.errors.map((e) => e.n), [1, 2])

  dns.failQuery(NAME, 'AAAA', 'answer')
  await tick(timers)
  t.same(ids(discovery.current()), ['10.0.0.1:8080', '10.0.0.2:8080', '10.0.0.3:8080', '[fd00::1]:8080'], 'AAAA answers again: its address joins')
  t.equal(discovery.failures, 0, 'and the failure count resets')
  t.equal(rec.errors.length, 2)

  dns.failQuery(NAME, 'A', 'servfail')
  dns.set(NAME, { a: [], aaaa: ['fd00::2'] })
  await tick(timers)
  t.same(rec.changes.at(-1)?.diff, { added: ['[fd00::2]:8080'], removed: ['[fd00::1]:8080'], changed: [] },
    'A SERVFAIL: the A addresses stay as last known, AAAA applies its new answer')
  t.match(rec.errors.at(-1)?.err.message, `failed in part (A of ${NAME}: ESERVFAIL)`)
  t.equal(rec.errors.at(-1)?.n, 1)

  dns.failQuery(NAME, 'AAAA', 'servfail')
  const before = discovery.current()
  await tick(timers)
  t.equal(discovery.current(), before, 'both fail: the whole last set is kept')
  t.equal(rec.errors.at(-1)?.err.partial, false)
  t.match(rec.errors.at(-1)?.err.message, /\(A\+AAAA\) failed: ESERVFAIL; keeping the last 4 upstreams$/)

  dns.failQuery(NAME, 'A', 'answer')
  await tick(timers)
  t.same(ids(discovery.current()), ['[fd00::2]:8080'], 'A answers empty again (NODATA): its addresses leave, AAAA keeps its last known one')
  t.equal(rec.errors.at(-1)?.err.partial, true)
})

t.test('family any: a family failing while the other answers empty reports the failure and keeps the last set', async (t) => {
  const { dns, discovery, rec } = await setup(t, { a: [], aaaa: [] })
  dns.failQuery(NAME, 'AAAA', 'servfail')
  t.same(await discovery.start(), [])
  t.same(rec.changes, [])
  t.equal(rec.errors[0]?.err.code, 'ESERVFAIL')
  t.equal(rec.errors[0]?.err.partial, false)
  t.match(rec.errors[0]?.err.message, `failed in part (AAAA of ${NAME}: ESERVFAIL) and the rest returned no addresses; keeping the last 0 upstreams`)
})

t.test('family any, real timers: an unanswered AAAA query times out alone; the A answer serves', async (t) => {
  const dns = new TestDnsServer()
  const { port } = await dns.start()
  t.teardown(() => dns.close())
  dns.set(NAME, { a: ['10.0.0.1'], aaaa: ['fd00::1'] })
  dns.failQuery(NAME, 'AAAA', 'drop')
  const rec = new Recorder()
  // The A answer comes over loopback at once; the deadline ends the AAAA query a second later.
  const discovery = new DnsDiscovery({ name: NAME, port: 8080, interval: 60_000, timeout: 1000, family: 'any', servers: [`127.0.0.1:${port}`] }, rec.hooks)
  t.teardown(() => discovery.stop())
  t.same(ids(await within(discovery.start(), 5000, 'the first resolution')), ['10.0.0.1:8080'])
  t.equal(rec.errors[0]?.err.code, 'ETIMEOUT')
  t.equal(rec.errors[0]?.err.partial, true)
  t.match(rec.errors[0]?.err.message, `failed in part (AAAA of ${NAME}: ETIMEOUT (no answer within 1000 ms))`)
})

t.test('SRV discovery: a target whose lookup fails keeps its last address; new targets are added meanwhile', async (t) => {
  const { dns, discovery, rec, timers } = await srvSetup(t, { 0: '10.0.0.5', 1: '10.0.0.6' })
  await discovery.start()
  setPods(dns, { 0: '10.0.0.5', 1: '10.0.0.16', 2: '10.0.0.7' })
  dns.failQuery(pod(1), 'A', 'servfail')
  await tick(timers)
  t.same(discovery.current(), [
    { id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 },
    { id: 'web-1', url: 'http://10.0.0.6:8080', weight: 1 },
    { id: 'web-2', url: 'http://10.0.0.7:8080', weight: 1 },
  ], 'web-2 is added; web-1 stays at its last known address')
  t.same(rec.changes.at(-1)?.diff, { added: ['web-2'], removed: [], changed: [] })
  const err = rec.errors.at(-1)!.err
  t.equal(err.code, 'ESERVFAIL')
  t.equal(err.partial, true)
  t.equal(err.message, `DNS discovery of ${SRV_NAME} (SRV, targets A) failed in part (A of ${pod(1)}: ESERVFAIL); using the answers that came and the last known addresses of what failed: 3 upstreams`, 'the message names the failing target')

  setPods(dns, { 0: '10.0.0.5', 1: '10.0.0.16', 2: '10.0.0.7', 3: '10.0.0.8' })
  dns.failQuery(pod(3), 'A', 'servfail')
  await tick(timers)
  t.same(ids(discovery.current()), ['web-0', 'web-1', 'web-2'], 'a new target that never answered is not added yet')
  t.match(rec.errors.at(-1)?.err.message, `failed in part (A of ${pod(1)}: ESERVFAIL, A of ${pod(3)}: ESERVFAIL)`)

  dns.failQuery(pod(1), 'A', 'answer')
  dns.failQuery(pod(3), 'A', 'answer')
  await tick(timers)
  t.same(rec.changes.at(-1)?.diff, { added: ['web-3'], removed: [], changed: ['web-1'] }, 'they answer again: web-1 at its new address, web-3 added')
  t.equal(discovery.failures, 0)

  const errors = rec.errors.length
  dns.failQuery(pod(2), 'A', 'servfail')
  setPods(dns, { 0: '10.0.0.5', 1: '10.0.0.16', 3: '10.0.0.8' })
  await tick(timers)
  t.same(rec.changes.at(-1)?.diff, { added: [], removed: ['web-2'], changed: [] }, 'a target gone from the SRV records leaves even while its lookup would fail')
  t.equal(rec.errors.length, errors, 'and nothing is reported: its lookup was not asked')

  dns.failQuery(pod(0), 'A', 'servfail')
  dns.failQuery(pod(1), 'A', 'servfail')
  dns.failQuery(pod(3), 'A', 'servfail')
  const before = discovery.current()
  await tick(timers)
  t.equal(discovery.current(), before, 'every target fails: the whole last set is kept')
  t.equal(rec.errors.at(-1)?.err.partial, false)
  t.match(rec.errors.at(-1)?.err.message, /\(SRV, targets A\) failed: ESERVFAIL; keeping the last 3 upstreams$/)
})

t.test('an empty servers list means the system resolver (c-ares with no server at all fails every query)', async (t) => {
  const rec = new Recorder()
  const discovery = new DnsDiscovery({ name: 'tether-test.invalid', port: 80, interval: 60_000, family: 'ipv4', servers: [], timeout: 1000 }, rec.hooks)
  t.teardown(() => discovery.stop())
  await discovery.start()
  const code = rec.errors[0]?.err.code
  t.ok(code !== undefined && !/UNKNOWN/.test(code), `the system resolver was asked (${code}: no such name, or no answer where there is no network)`)
})

// ---- SRV with family any: one family answering empty for a moment ----------------------------
// A url change is a replaced pod to the proxy (its WebSockets closed, its users rehydrated).

const GRACE = 1500 // emptyFamilyGrace (affinity.drain_timeout in the proxy), in virtual ms: the first empty answer and the next keep, the third applies

/** SRV discovery of one pod web-0, family any, at `a` and `aaaa` (started); `step` serves new records, resolves once and returns web-0's url. */
async function dualStack(t: Test, a: string[], aaaa: string[], grace = GRACE) {
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: grace })
  s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0)] })
  s.dns.set(pod(0), { a, aaaa })
  await s.discovery.start()
  const step = async (a: string[], aaaa: string[]): Promise<string | undefined> => {
    s.dns.set(pod(0), { a, aaaa })
    await tick(s.timers)
    return s.discovery.current()[0]?.url
  }
  return { ...s, step }
}

t.test('SRV discovery, family any: a family answering empty while the other answers its same addresses keeps its addresses: the url does not move', async (t) => {
  const { discovery, rec, step } = await dualStack(t, [], ['fd00::5'])
  t.equal(await step(['10.0.0.5'], ['fd00::5']), 'http://[fd00::5]:8080', 'an A address joins: the url stays on the IPv6 one')
  const dual = discovery.current()
  const changes = rec.changes.length
  t.same([await step(['10.0.0.5'], []), await step(['10.0.0.5'], ['fd00::5'])], ['http://[fd00::5]:8080', 'http://[fd00::5]:8080'],
    'AAAA answers empty (NODATA) once, A unchanged: the url stays, and stays when AAAA is back (without the rule: 10.0.0.5, a replacement, and it stayed there)')
  t.same(discovery.current(), dual, 'the set is as it was')
  t.same(rec.changes.slice(changes).map((c) => c.diff), [{ added: [], removed: [], changed: ['web-0'] }, { added: [], removed: [], changed: ['web-0'] }],
    'onChange twice, its url the same: when AAAA began to be kept (the set says since when, for a new lead), and when it was back')
  t.same(rec.errors, [], 'an empty answer is no error')

  t.same([await step([], ['fd00::5']), await step(['10.0.0.5'], ['fd00::5'])], ['http://[fd00::5]:8080', 'http://[fd00::5]:8080'], 'so does an A answer empty for a moment')
  t.same(discovery.current(), dual)

  t.same([await step(['10.0.0.5'], []), await step(['10.0.0.5'], [])], ['http://[fd00::5]:8080', 'http://[fd00::5]:8080'], 'AAAA empty for less than the grace: kept')
  t.equal(await step(['10.0.0.5'], []), 'http://10.0.0.5:8080', 'empty for the grace (from its first empty answer): the family goes, and the url with it')
  t.same(rec.changes.at(-1)?.diff, { added: [], removed: [], changed: ['web-0'] })
  t.equal(await step(['10.0.0.5'], []), 'http://10.0.0.5:8080')
  t.equal(await step(['10.0.0.5'], ['fd00::5']), 'http://10.0.0.5:8080', 'AAAA back: the url in use is still listed and stays')
  t.same(discovery.current()[0]?.addresses, ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'])
})

t.test('SRV discovery, family any: a re-created pod (its other family changes too) still moves at once', async (t) => {
  const { rec, step } = await dualStack(t, ['10.0.0.5'], ['fd00::5'])
  t.equal(await step(['10.0.0.5'], []), 'http://10.0.0.5:8080', 'AAAA empty, A unchanged: kept')
  t.equal(await step(['10.0.0.15'], []), 'http://10.0.0.15:8080', 'then A changes: the empty AAAA applies too; a new url')
  t.same(rec.changes.at(-1)?.diff, { added: [], removed: [], changed: ['web-0'] })
  t.same(rec.changes.at(-1)?.ids, ['web-0'])
  t.equal(await step(['10.0.0.15'], ['fd00::15']), 'http://10.0.0.15:8080')
  t.equal(await step(['10.0.0.25'], []), 'http://10.0.0.25:8080', 'A new and AAAA empty in one answer: a replacement')
  t.equal(await step(['10.0.0.35'], ['fd00::35']), 'http://10.0.0.35:8080', 'both new: a replacement')
  t.equal(await step(['10.0.0.35'], ['fd00::35']), 'http://10.0.0.35:8080')
})

t.test('SRV discovery, family any: an empty family is kept while the other fails and keeps its addresses; without a grace it applies at once', async (t) => {
  const { dns, discovery, rec, step } = await dualStack(t, ['10.0.0.5'], ['fd00::5'])
  dns.failQuery(pod(0), 'AAAA', 'servfail')
  t.equal(await step([], ['fd00::5']), 'http://10.0.0.5:8080', 'A empty, AAAA fails: both keep their addresses')
  t.same(discovery.current()[0]?.addresses, ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'])
  t.equal(rec.errors.at(-1)?.err.partial, true, 'the failure is reported')

  const none = await dualStack(t, ['10.0.0.5'], ['fd00::5'], 0)
  t.equal(await none.step([], ['fd00::5']), 'http://[fd00::5]:8080', 'grace 0: an empty answer is applied at once')
  t.throws(() => new DnsDiscovery({ name: NAME, port: 80, interval: 1000, family: 'any', emptyFamilyGrace: -1 }, { onChange: () => {} }), { message: /emptyFamilyGrace must be a number of ms >= 0, got -1/ })
})

t.test('family any without srv: the grace changes nothing (ids are addresses: an address gone leaves, no url moves)', async (t) => {
  const { dns, discovery, timers } = await setup(t, { a: ['10.0.0.1'], aaaa: ['fd00::1'] }, { emptyFamilyGrace: GRACE })
  await discovery.start()
  dns.set(NAME, { a: ['10.0.0.1'], aaaa: [] })
  await tick(timers)
  t.same(ids(discovery.current()), ['10.0.0.1:8080'])
})

t.test('SRV discovery, family any: a new lead (its first resolution) keeps an empty family its predecessor listed while the other is unchanged', async (t) => {
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: GRACE })
  s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0)] })
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: [] }) // AAAA: a stale NODATA at the new lead's first resolution
  // the set the predecessor reported: web-0 at its IPv6 address, listed at both
  const before: DiscoveredUpstream[] = [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, addresses: ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'] }]
  const lead = new DnsDiscovery(s.options, { ...s.rec.hooks, previous: () => before }, s.timers, s.timers.clock)
  t.teardown(() => lead.stop())
  const found = await lead.start()
  t.equal(found[0]?.url, 'http://[fd00::5]:8080', 'the url stays where the predecessor had it (it moved to 10.0.0.5: a replacement)')
  t.same(found[0]?.addresses, before[0]!.addresses)
  t.same(s.rec.errors, [], 'no error')
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: ['fd00::5'] })
  await tick(s.timers)
  t.equal(lead.current()[0]?.url, 'http://[fd00::5]:8080', 'AAAA back: still there')

  // a new lead whose predecessor had none of that family: the empty answer applies (nothing to keep)
  const v4: DiscoveredUpstream[] = [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }]
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: [] })
  const other = new DnsDiscovery(s.options, { onChange: () => {}, previous: () => v4 }, s.timers, s.timers.clock)
  t.teardown(() => other.stop())
  t.same(await other.start(), [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }])

  // so does a query failing at a new lead's first resolution: it keeps what the predecessor listed
  s.dns.failQuery(pod(0), 'AAAA', 'servfail')
  const third = new DnsDiscovery(s.options, { onChange: () => {}, previous: () => before }, s.timers, s.timers.clock)
  t.teardown(() => third.stop())
  t.same(await third.start(), before, 'AAAA fails: web-0 stays at [fd00::5] (it moved to 10.0.0.5)')
})

t.test('SRV discovery, family any: keeping an empty family, and letting it go, is noted (no error, but not silent)', async (t) => {
  const { rec, step } = await dualStack(t, ['10.0.0.5'], ['fd00::5'])
  t.same(rec.notes, [])
  await step(['10.0.0.5'], [])
  t.same(rec.notes, [`AAAA of ${pod(0)} answered empty while its A is unchanged: keeping its last addresses (fd00::5) for up to ${GRACE} ms`])
  await step(['10.0.0.5'], [])
  t.equal(rec.notes.length, 1, 'once while it lasts')
  await step(['10.0.0.5'], [])
  t.same(rec.notes.slice(1), [`AAAA of ${pod(0)} answered empty for ${GRACE} ms: its addresses (fd00::5) go`])
  await step(['10.0.0.5'], [])
  t.equal(rec.notes.length, 2, 'nothing more: the family has gone')
  t.same(rec.errors, [])
})

// ---- SRV: a target that leaves one answer and comes back -------------------------------------
// Wired as the proxy wires it: a real Membership (drain_timeout = the grace) takes each set, and
// is the set in use (`previous`) the discovery keeps urls from. A url change there is a replaced
// pod to the proxy (app.ts: isReplacement; WebSockets closed 1012, users rehydrated, reason=restart).

/** web-0 at 10.0.0.5 and fd00::5 (its url the IPv6 one: AAAA was listed first) and web-1, with a Membership fed as in the proxy. */
async function leavingTarget(t: Test) {
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: GRACE })
  const membership = new Membership([], GRACE, { onChange: () => {}, drain: () => {}, undrain: () => {} }, s.timers)
  t.teardown(() => membership.stop())
  const discovery = new DnsDiscovery(s.options, {
    ...s.rec.hooks,
    onChange: (found, diff) => {
      s.rec.hooks.onChange(found, diff)
      membership.setDiscovered(found, 'dns')
    },
    previous: () => membership.listedBy('dns'), // as createDiscovery wires it
  }, s.timers, s.timers.clock)
  t.teardown(() => discovery.stop())
  const serve = (srv: number[], web0: { a: string[]; aaaa: string[] }): void => {
    s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: srv.map((n) => srvRecord(n)) })
    s.dns.set(pod(0), web0)
    s.dns.set(pod(1), { a: ['10.0.0.6'], aaaa: [] })
  }
  serve([0, 1], { a: [], aaaa: ['fd00::5'] })
  await discovery.start()
  const urls: string[] = []
  /** Serves the records, resolves once, and returns web-0's url in the set in use (undefined: gone). */
  const step = async (srv: number[], web0: { a: string[]; aaaa: string[] }): Promise<string | undefined> => {
    serve(srv, web0)
    await tick(s.timers)
    const url = membership.current().get('web-0')?.url
    if (url !== undefined) urls.push(url)
    return url
  }
  t.equal(await step([0, 1], { a: ['10.0.0.5'], aaaa: ['fd00::5'] }), 'http://[fd00::5]:8080', 'an A address joins: web-0 stays at its IPv6 address')
  return { ...s, membership, discovery, step, urls }
}

const BOTH = { a: ['10.0.0.5'], aaaa: ['fd00::5'] }

t.test('SRV discovery: a target gone from one SRV answer that comes back keeps what it had: a failed or empty family at its return does not move it', async (t) => {
  const { dns, step, urls, rec } = await leavingTarget(t)
  t.equal(await step([1], BOTH), 'http://[fd00::5]:8080', 'web-0 missing from one SRV answer: it drains in the set in use, at its url')
  dns.failQuery(pod(0), 'AAAA', 'servfail')
  t.equal(await step([0, 1], BOTH), 'http://[fd00::5]:8080', 'back, its AAAA query failing: that family keeps what web-0 had (it moved to 10.0.0.5: a replacement)')
  t.equal(rec.errors.at(-1)?.err.partial, true, 'the failure is reported')
  dns.failQuery(pod(0), 'AAAA', 'answer')
  t.equal(await step([0, 1], BOTH), 'http://[fd00::5]:8080')

  t.equal(await step([1], BOTH), 'http://[fd00::5]:8080', 'gone from an answer again')
  t.equal(await step([0, 1], { a: ['10.0.0.5'], aaaa: [] }), 'http://[fd00::5]:8080', 'back, AAAA answering empty while A is unchanged: kept as for a target that stayed (it moved to 10.0.0.5)')
  t.equal(await step([0, 1], BOTH), 'http://[fd00::5]:8080')
  t.same(new Set(urls), new Set(['http://[fd00::5]:8080']), 'web-0 never changed url: no replacement')
})

t.test('SRV discovery: a target gone from one SRV answer keeps the time its empty family has been kept: the grace counts from the first empty answer', async (t) => {
  const { step, membership } = await leavingTarget(t)
  t.equal(await step([0, 1], { a: ['10.0.0.5'], aaaa: [] }), 'http://[fd00::5]:8080', 'AAAA empty: kept (its grace starts)')
  t.equal(membership.current().get('web-0')?.keptEmpty?.family, 6, 'the set in use says so (with workers, it is what a new lead starts from)')
  t.equal(await step([1], BOTH), 'http://[fd00::5]:8080', 'web-0 missing from one SRV answer')
  t.equal(await step([0, 1], { a: ['10.0.0.5'], aaaa: [] }), 'http://10.0.0.5:8080', `back with AAAA still empty, ${GRACE} ms after its first empty answer: the family goes (the grace did not start again)`)
})

t.test('SRV discovery, family any: a family answering empty while the other keeps its addresses and lists one more is kept too; one that lost an address is a change', async (t) => {
  const { discovery, rec, step } = await dualStack(t, [], ['fd00::5'])
  t.equal(await step(['10.0.0.5'], ['fd00::5']), 'http://[fd00::5]:8080', 'an A address joins: web-0 stays at its IPv6 address')
  t.equal(await step(['10.0.0.5', '10.0.0.7'], []), 'http://[fd00::5]:8080', 'AAAA empty while A lists 10.0.0.5 and a new 10.0.0.7: the pod still answers where it did, AAAA is kept (it moved to 10.0.0.5: a replacement)')
  t.same(discovery.current()[0]?.addresses, ['http://10.0.0.5:8080', 'http://10.0.0.7:8080', 'http://[fd00::5]:8080'], 'listed at all three')
  t.match(rec.notes.at(-1), /^AAAA of web-0\..* answered empty while its A still lists its addresses: keeping its last addresses \(fd00::5\)/)
  t.equal(await step(['10.0.0.5', '10.0.0.7'], ['fd00::5']), 'http://[fd00::5]:8080', 'AAAA back: still there')
  t.equal(await step(['10.0.0.7'], []), 'http://10.0.0.7:8080', 'AAAA empty while A lost 10.0.0.5: a change (what a re-created pod looks like), the empty answer applies')
})

t.test('SRV discovery, family any: the set says since when a family is kept empty, and a new lead counts the grace on from there (not up to twice drain_timeout)', async (t) => {
  const { discovery, timers, step } = await dualStack(t, ['10.0.0.5'], ['fd00::5'])
  t.equal(discovery.current()[0]?.keptEmpty, undefined)
  const first = timers.clock.now() + INTERVAL
  await step(['10.0.0.5'], [])
  t.same(discovery.current()[0]?.keptEmpty, { family: 6, since: first, base: ['10.0.0.5'] }, 'AAAA kept: the set carries the family, its first empty answer (wall ms: it travels to the workers) and the A addresses it leans on')
  await step(['10.0.0.5'], ['fd00::5'])
  t.equal(discovery.current()[0]?.keptEmpty, undefined, 'AAAA back: gone from the set')

  // a new lead whose predecessor has kept web-0's AAAA for 1000 ms (GRACE is 1500)
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: GRACE })
  s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0)] })
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: [] })
  s.timers.clock.advance(10_000)
  const before: DiscoveredUpstream[] = [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, addresses: ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'], keptEmpty: { family: 6, since: s.timers.clock.now() - 1000 } }]
  const lead = new DnsDiscovery(s.options, { ...s.rec.hooks, previous: () => before }, s.timers, s.timers.clock)
  t.teardown(() => lead.stop())
  t.equal((await lead.start())[0]?.url, 'http://[fd00::5]:8080', 'its first resolution keeps AAAA')
  t.same(lead.current()[0]?.keptEmpty, before[0]!.keptEmpty, 'since its predecessor\'s first empty answer')
  t.same(s.rec.notes, [], 'no new note: the predecessor told it')
  await tick(s.timers)
  t.equal(lead.current()[0]?.url, 'http://10.0.0.5:8080', `${GRACE} ms after the predecessor's first empty answer: the family goes (it stayed for ${GRACE} ms more from the new lead's start)`)
  t.same(s.rec.notes, [`AAAA of ${pod(0)} answered empty for ${GRACE} ms: its addresses (fd00::5) go`])
})

t.test('SRV discovery, family any: a kept empty family whose query fails for a while is still kept since its first empty answer (a failure says nothing: the grace does not start again, the set does not change)', async (t) => {
  const { dns, discovery, timers, rec, step } = await dualStack(t, [], ['fd00::5'])
  t.equal(await step(['10.0.0.5'], ['fd00::5']), 'http://[fd00::5]:8080', 'an A address joins: web-0 stays at its IPv6 address')
  const first = timers.clock.now() + INTERVAL
  t.equal(await step(['10.0.0.5'], []), 'http://[fd00::5]:8080', 'AAAA empty: kept')
  t.same(discovery.current()[0]?.keptEmpty, { family: 6, since: first, base: ['10.0.0.5'] })
  const changes = rec.changes.length
  dns.failQuery(pod(0), 'AAAA', 'servfail')
  t.equal(await step(['10.0.0.5'], []), 'http://[fd00::5]:8080', 'then AAAA fails: it keeps its addresses')
  t.same(discovery.current()[0]?.keptEmpty, { family: 6, since: first, base: ['10.0.0.5'] }, 'still kept since its first empty answer')
  t.equal(rec.changes.length, changes, 'the set did not change (no `upstreams updated`, no list to the workers)')
  dns.failQuery(pod(0), 'AAAA', 'answer')
  t.equal(await step(['10.0.0.5'], []), 'http://10.0.0.5:8080', `AAAA empty again, ${2 * INTERVAL} ms after its first empty answer (grace ${GRACE}): the family goes (it was kept ${GRACE} ms more)`)
  t.same(rec.notes, [
    `AAAA of ${pod(0)} answered empty while its A is unchanged: keeping its last addresses (fd00::5) for up to ${GRACE} ms`,
    `AAAA of ${pod(0)} answered empty for ${GRACE} ms: its addresses (fd00::5) go`,
  ], 'one note that it is kept (not a second one after the failure), one that it goes')
})

t.test('SRV discovery, family any: an address the other family lists for a while, during the grace, that leaves again does not end the grace (its old addresses are all still there)', async (t) => {
  const { step } = await dualStack(t, [], ['fd00::5'], 10 * INTERVAL)
  t.equal(await step(['10.0.0.5'], ['fd00::5']), 'http://[fd00::5]:8080', 'an A address joins: web-0 stays at its IPv6 address')
  t.equal(await step(['10.0.0.5', '10.0.0.7'], []), 'http://[fd00::5]:8080', 'AAAA empty, A lists one more: kept')
  t.equal(await step(['10.0.0.5'], []), 'http://[fd00::5]:8080', 'AAAA still empty, the extra A address gone again: A still lists every address it had when AAAA began to be kept, still kept (it moved to 10.0.0.5: a replacement)')
})

t.test('SRV discovery, family any: a new lead judges a kept family against the addresses its predecessor kept it on (an address the other family listed for a while, gone again, does not end it)', async (t) => {
  const { dns, discovery, step, timers, options, rec } = await dualStack(t, [], ['fd00::5'], 10 * INTERVAL)
  t.equal(await step(['10.0.0.5'], ['fd00::5']), 'http://[fd00::5]:8080', 'an A address joins: web-0 stays at its IPv6 address')
  t.equal(await step(['10.0.0.5'], []), 'http://[fd00::5]:8080', 'AAAA empty: kept, on A [10.0.0.5]')
  t.equal(await step(['10.0.0.5', '10.0.0.7'], []), 'http://[fd00::5]:8080', 'A lists one more: still kept')
  const set = discovery.current()
  // the lead dies; the next one starts from that set, when 10.0.0.7 has left A again
  await discovery.stop()
  dns.set(pod(0), { a: ['10.0.0.5'], aaaa: [] })
  const lead = new DnsDiscovery(options, { onChange: () => {}, onNote: (n) => void rec.notes.push(n), previous: () => set }, timers, timers.clock)
  t.teardown(() => lead.stop())
  t.equal((await lead.start())[0]?.url, 'http://[fd00::5]:8080',
    'still kept: A lists every address it had when AAAA began to be kept, as the predecessor would judge (it moved to 10.0.0.5, a replacement, when the new lead took A [10.0.0.5, 10.0.0.7] for that)')
  t.equal(rec.notes.length, 1, 'no note of a family newly kept')
})

// ---- SRV: the set in use lends only the DNS source's own upstreams ----------------------------

t.test('SRV discovery, wired by createDiscovery: a static or Kubernetes upstream with a target\'s id lends it no address (ids are unique within a source only)', async (t) => {
  for (const other of ['static', 'kubernetes'] as const) {
    const s = await srvSetup(t, {}, { family: 'any' })
    s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0)] })
    s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: [] })
    s.dns.failQuery(pod(0), 'AAAA', 'servfail') // its first resolution: a failed query keeps what the set in use lists for the target
    const elsewhere = { id: 'web-0', url: 'http://[fd00::99]:8080', weight: 1 }
    const membership = new Membership(other === 'static' ? [elsewhere] : [], GRACE, { onChange: () => {}, drain: () => {}, undrain: () => {} }, s.timers)
    t.teardown(() => membership.stop())
    if (other === 'kubernetes') membership.setDiscovered([elsewhere], 'kubernetes')
    const reported: (readonly DiscoveredUpstream[])[] = []
    const discovery = createDiscovery({ dns: { name: SRV_NAME, port: null, srv: true, interval: INTERVAL, family: 'any', servers: s.options.servers! }, kubernetes: null }, {
      membership: {
        setDiscovered: (found, source) => { reported.push(found); membership.setDiscovered(found, source) },
        current: () => membership.current(),
        listedBy: (source) => membership.listedBy(source),
      },
      logger: createLogger('info', new LogCapture()),
      metrics: { discoveryError: () => {}, setDiscoveryStatus: () => {} },
      env: {},
      timers: s.timers,
      clock: s.timers.clock,
      drainTimeout: GRACE,
    })
    t.teardown(() => discovery.stop())
    await discovery.start()
    t.same(reported.at(-1), [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }],
      `a ${other} web-0 at [fd00::99] is another upstream: the SRV target's failed AAAA keeps nothing of it (it took [fd00::99] as its url)`)
    t.same(membership.listedBy('dns').map((u) => u.url), other === 'static' ? [] : ['http://10.0.0.5:8080'], 'listedBy: the source\'s own, minus what a static upstream holds')
  }
})

t.test('SRV discovery, family any: two targets with one first label share the id; the kept empty family of the one dropped is not the id\'s', async (t) => {
  const twin = 'web-0.other.default.svc.cluster.local' // sorts before pod(0): its record makes web-0
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: GRACE })
  s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0), { priority: 0, weight: 100, port: 8080, target: twin }] })
  s.dns.set(twin, { a: ['10.0.0.8'], aaaa: ['fd00::8'] })
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: ['fd00::5'] })
  await s.discovery.start()
  t.same(s.discovery.current(), [{ id: 'web-0', url: 'http://10.0.0.8:8080', weight: 1, addresses: ['http://10.0.0.8:8080', 'http://[fd00::8]:8080'] }], 'one web-0, from the first target in SRV order')
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: [] }) // the dropped target's AAAA answers empty: it is kept, for that target
  await tick(s.timers)
  t.equal(s.discovery.current()[0]?.keptEmpty, undefined, 'web-0 (the other target) keeps no family: its AAAA answered')
  t.same(s.discovery.current()[0]?.addresses, ['http://10.0.0.8:8080', 'http://[fd00::8]:8080'])

  // a new lead: the set in use lists web-0 at the first target's addresses; that target now answers empty, so the
  // second one makes web-0, and its failed AAAA query takes none of the first's addresses
  s.dns.set(twin, { a: [], aaaa: [] })
  const before: DiscoveredUpstream[] = [{ id: 'web-0', url: 'http://[fd00::8]:8080', weight: 1, addresses: ['http://10.0.0.8:8080', 'http://[fd00::8]:8080'] }]
  const lead = new DnsDiscovery(s.options, { onChange: () => {}, previous: () => before }, s.timers, s.timers.clock)
  t.teardown(() => lead.stop())
  s.dns.failQuery(pod(0), 'AAAA', 'servfail')
  const found = await lead.start()
  t.same(found, [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }], 'web-0 from the second target, at its own address (it took [fd00::8], the first target\'s)')
})

t.test('SRV discovery, family any: both families kept at once (one kept fails, the other answers empty meanwhile) both travel, and a new lead carries both times on', async (t) => {
  const { dns, discovery, timers, rec, step, options } = await dualStack(t, ['10.0.0.5'], ['fd00::5'])
  const aaaaSince = timers.clock.now() + INTERVAL
  t.equal(await step(['10.0.0.5'], []), 'http://10.0.0.5:8080', 'AAAA empty: kept')
  dns.failQuery(pod(0), 'AAAA', 'servfail')
  const aSince = timers.clock.now() + INTERVAL
  t.equal(await step([], []), 'http://10.0.0.5:8080', 'then AAAA fails (kept, its addresses held) while A answers empty: A is kept on what AAAA holds, the url stays (it moved to [fd00::5]: a replacement)')
  const both = discovery.current()[0]!
  t.same([both.keptEmpty, both.keptEmptyAlso], [{ family: 6, since: aaaaSince, base: ['10.0.0.5'] }, { family: 4, since: aSince, base: ['fd00::5'] }], 'the set carries both, the first kept as keptEmpty (what an older Tether reads)')
  t.equal(rec.notes.length, 2, 'one note per family kept')

  // a new lead (the same answers) starts from that set: both families go on from their own first empty answer
  timers.clock.advance(200) // it takes over a little later
  const lead = new DnsDiscovery(options, { onChange: () => {}, onNote: (n) => void rec.notes.push(n), previous: () => [both] }, timers, timers.clock)
  t.teardown(() => lead.stop())
  const found = await lead.start()
  t.same(found, [both], 'the same set: the same url, both families kept since the same times')
  t.equal(rec.notes.length, 2, 'and no note of a family newly kept')
})

t.test('SRV discovery, family any: a cache flapping between a stale NODATA and the answer rebuilds no set and is noted once per grace, not per flap', async (t) => {
  const grace = 10 * INTERVAL
  const { discovery, rec, step, timers, options } = await dualStack(t, ['10.0.0.5'], ['fd00::5'], grace)
  void discovery
  // wired as the proxy wires it: a Membership fed each DNS set; its onChange is a rebuild (`upstreams updated`)
  const membership = new Membership([], grace, { onChange: () => void rebuilds++, drain: () => {}, undrain: () => {} }, timers)
  let rebuilds = 0
  t.teardown(() => membership.stop())
  const lead = new DnsDiscovery(options, { onChange: (found) => membership.setDiscovered(found, 'dns'), onNote: (n) => void rec.notes.push(n), previous: () => membership.listedBy('dns') }, timers, timers.clock)
  t.teardown(() => lead.stop())
  await lead.start()
  await discovery.stop() // one discovery from here on: the one wired to the membership
  t.equal(rebuilds, 1, 'the first set')
  const notes = rec.notes.length
  for (let i = 0; i < 4; i++) {
    await step(['10.0.0.5'], [])
    t.equal(membership.current().get('web-0')?.keptEmpty?.family, 6, `flap ${i + 1}: AAAA empty, kept (the set in use says so, for a new lead)`)
    await step(['10.0.0.5'], ['fd00::5'])
    t.equal(membership.current().get('web-0')?.keptEmpty, undefined, 'AAAA back')
  }
  t.equal(membership.current().get('web-0')?.url, 'http://10.0.0.5:8080')
  t.equal(rebuilds, 1, 'no rebuild: only the kept family changed, no url, address or id')
  t.equal(rec.notes.length - notes, 1, `one note of the family kept within ${grace} ms, not one per flap`)
  timers.clock.advance(grace)
  await step(['10.0.0.5'], [])
  t.equal(rec.notes.length - notes, 2, 'noted again once the grace has passed since the last note')
  await step(['10.0.0.7'], [])
  t.equal(rebuilds, 2, 'a real change (A lost its address: the empty AAAA applies, a new url) is still published')
})

t.test('SRV discovery, family any: of two targets with one first label, the one that makes the id inherits (the first has no address): a new lead keeps its url', async (t) => {
  const twin = 'web-0.other.default.svc.cluster.local' // sorts before pod(0): first in SRV order
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: GRACE })
  s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0), { priority: 0, weight: 100, port: 8080, target: twin }] })
  s.dns.set(twin, { a: [], aaaa: [] }) // no address: the second target, pod(0), makes web-0
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: ['fd00::5'] })
  // the set the predecessor reported: web-0 (pod(0)'s) at its IPv6 address, listed at both
  const before: DiscoveredUpstream[] = [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, addresses: ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'] }]
  s.dns.failQuery(pod(0), 'AAAA', 'servfail') // at the new lead's first resolution
  const lead = new DnsDiscovery(s.options, { onChange: () => {}, previous: () => before }, s.timers, s.timers.clock)
  t.teardown(() => lead.stop())
  t.same(await lead.start(), before, 'web-0 stays at [fd00::5] (it moved to 10.0.0.5: a false replacement, its WebSockets closed 1012)')
})

t.test('SRV discovery, family any: the first of two targets with one first label, back with an address of its own, takes nothing of the id the set in use had from the other', async (t) => {
  const twin = 'web-0.other.default.svc.cluster.local' // sorts before pod(0): first in SRV order
  const s = await srvSetup(t, {}, { family: 'any', emptyFamilyGrace: GRACE })
  s.dns.set(SRV_NAME, { a: [], aaaa: [], srv: [srvRecord(0), { priority: 0, weight: 100, port: 8080, target: twin }] })
  s.dns.set(twin, { a: ['10.0.0.9'], aaaa: [] }) // the first target has an address again: it makes web-0
  s.dns.set(pod(0), { a: ['10.0.0.5'], aaaa: ['fd00::5'] })
  // the set the predecessor reported: web-0 was pod(0)'s (the twin answered empty then)
  const before: DiscoveredUpstream[] = [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1, addresses: ['http://10.0.0.5:8080', 'http://[fd00::5]:8080'] }]
  s.dns.failQuery(twin, 'AAAA', 'servfail') // at the new lead's first resolution
  const lead = new DnsDiscovery(s.options, { onChange: () => {}, previous: () => before }, s.timers, s.timers.clock)
  t.teardown(() => lead.stop())
  t.same(await lead.start(), [{ id: 'web-0', url: 'http://10.0.0.9:8080', weight: 1 }],
    'web-0 is the twin at its own address (it kept pod(0)\'s [fd00::5]: web-0\'s traffic went to the other pod)')
})
