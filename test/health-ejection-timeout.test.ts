// An ejection for timeouts is named apart from one for connection errors and resets: real
// upstreams on 127.0.0.1, one that takes the request and never answers (no head within
// timeouts.response_headers: TETHER_UPSTREAM_TIMEOUT), one that closes every connection it
// gets a request on (TETHER_UPSTREAM_RESET). GET /upstreams says `timeout` for the first and
// `error` for the second (both were `error`); the status page words them apart too; and a
// `down` for a timeout tells it to the other replicas, while a Tether that does not know the
// reason (an older one) still ejects for its time, showing `unknown`, as it does today.
/// <reference lib="dom" />
import t from 'tap'
import type http from 'node:http'
import { HealthTable } from '../src/health/health-table.js'
import { SharedHealth } from '../src/health/shared-health.js'
import { createLogger } from '../src/observability/logger.js'
import type { PeerChannel } from '../src/peers/peer-channel.js'
import { openPage } from './fixtures/browser.js'
import { FakeClock } from './fixtures/clock.js'
import { proxyFor, request, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

type Row = { id: string; state: string; ejected_until: string | null; ejection: { reason: string; ends: string } | null }

t.test('GET /upstreams: an upstream that never answers is ejected for `timeout`, one that resets for `error`', async (t) => {
  const ok = await startUpstream('ok')
  const held: http.ServerResponse[] = []
  const silent = await startUpstream('silent', (req, res) => { req.resume(); held.push(res) }) // never answers
  const resetting = await startUpstream('resetting', (req) => { req.socket.destroy() })
  t.teardown(async () => { for (const res of held) res.destroy(); await ok.close(); await silent.close(); await resetting.close() })
  const tether = await proxyFor(t, [ok, silent, resetting], {
    timeouts: { response_headers: 300 },
    health: {
      active: { enabled: false },
      passive: { consecutive_failures: 1, count_5xx: true, base_ejection: 60_000, max_ejection: 300_000, max_ejection_percent: 100 },
    },
  })
  // new users (no cookie) land all over the hash ring: until both are ejected
  await waitFor(async () => {
    await request(tether.url)
    return tether.health.state('silent') === 'ejected' && tether.health.state('resetting') === 'ejected'
  }, 15_000, 'the silent and the resetting upstream to be ejected', 0)
  const rows = new Map((JSON.parse((await request(`${tether.adminUrl}/upstreams`)).body) as Row[]).map((r) => [r.id, r]))
  t.match(rows.get('silent'), { state: 'ejected', ejection: { reason: 'timeout', ends: 'time' } }, 'no head in time: timeout')
  t.match(rows.get('resetting'), { state: 'ejected', ejection: { reason: 'error', ends: 'time' } }, 'the connection reset: error')
  t.match(rows.get('ok'), { state: 'healthy', ejection: null })

  // the status page, in a real headless Chromium
  const { page, errors } = await openPage(t)
  await page.goto(`${tether.adminUrl}/`)
  const progress = (id: string): Promise<string> => page.locator(`tr[data-upstream="${id}"] td[data-label="Ejection / drain"]`).innerText()
  await page.waitForFunction(() => document.querySelectorAll('tr[data-upstream][data-state="ejected"]').length === 2, null, { timeout: 5_000 })
  t.match(await progress('silent'), /^timeouts: back in \d+ s \(ejection 1\)$/, "the status page words a timeout's ejection")
  t.match(await progress('resetting'), /^connection errors or resets: back in \d+ s \(ejection 1\)$/, "and an error's apart")
  t.same(errors, [], 'no console or page errors')
})

/** Two replicas' health tables over one in-memory channel, and what was published. */
async function replicas(knows: (r: unknown) => boolean): Promise<{ sender: HealthTable; receiver: HealthTable; published: Record<string, unknown>[] }> {
  const opts = { active: { healthy_threshold: 1, unhealthy_threshold: 1, enabled: false }, passive: { consecutive_failures: 1, count_5xx: true, base_ejection: 30_000, max_ejection: 100_000, max_ejection_percent: 100 }, slow_start: 0 }
  const published: Record<string, unknown>[] = []
  const listeners: ((m: string) => void)[] = []
  const channel: PeerChannel = {
    publish: (m) => { published.push(JSON.parse(m) as Record<string, unknown>); for (const l of listeners) l(m); return Promise.resolve(true) },
    subscribe: (fn, onSubscribed) => { listeners.push(fn); onSubscribed?.(); return Promise.resolve() },
    remember: () => Promise.resolve(true),
    members: () => Promise.resolve(new Map()),
  }
  const tables = [new HealthTable(opts, new FakeClock()), new HealthTable(opts, new FakeClock())]
  for (const h of tables) h.setUpstreams(['a', 'b'])
  const [sender, receiver] = tables as [HealthTable, HealthTable]
  await new SharedHealth(channel, sender, createLogger('silent')).start()
  // the receiver: a SharedHealth reading the message as a Tether that knows `knows` reasons would
  const older: PeerChannel = { ...channel, subscribe: (fn, onSubscribed) => channel.subscribe((m) => {
    const parsed = JSON.parse(m) as Record<string, unknown>
    if (!knows(parsed['reason'])) parsed['reason'] = 'not-a-reason-here'
    fn(JSON.stringify(parsed))
  }, onSubscribed) }
  await new SharedHealth(older, receiver, createLogger('silent')).start()
  return { sender, receiver, published }
}

t.test("a `down` for a timeout says `timeout`; the receiver shows it; a receiver that does not know it ejects for the time, `unknown`", async (t) => {
  const now = await replicas(() => true)
  now.sender.reportPassive('a', 'timeout')
  t.match(now.published.at(-1), { kind: 'down', id: 'a', reason: 'timeout' }, 'the down says timeout')
  t.notOk('refused' in now.published.at(-1)!, 'not a refusal')
  t.match(now.receiver.ejection('a'), { reason: 'timeout', ends: 'time' }, 'the receiver shows why')
  now.sender.reportPassive('b', 'connect_failure')
  t.match(now.published.at(-1), { kind: 'down', id: 'b', reason: 'error' }, 'a reset still says error (as older Tethers read it)')

  const old = await replicas((r) => r === 'refused' || r === 'error' || r === '5xx')
  old.sender.reportPassive('a', 'timeout')
  const sender = old.sender.ejection('a')!
  t.same(old.receiver.ejection('a'), { reason: 'unknown', until: sender.until, ends: 'time', passesLeft: null }, 'ejected for the same time, as before the reason was split')
})
