// A request sent again after a stale keep-alive connection (the upstream closed it as Tether
// reused it, nothing answered) goes to its upstream's current pool when a reload replaced the
// one it went on meanwhile (another url for the same upstream, a pod's new address): answered
// 200 from a new connection, with or without limits.max_upstream_connections. Review s64 r2:
// with a bound it waited in the retired pool's queue, counted nowhere (`queued` 0), and ended as
// 503 TETHER_UPSTREAM_QUEUE_TIMEOUT after timeouts.queue, an overload signal from an idle
// upstream; without one (and before the queue moved into Tether) it was 502
// TETHER_UPSTREAM_RESET at once. Both failed before the fix.
import t from 'tap'
import { request, startUpstream, waitFor } from './fixtures/upstream.js'
import { tether, queued } from './fixtures/upstream-queue.js'

for (const bound of [1, null] as const) {
  t.test(`max_upstream_connections ${bound}: the resend after a reload replaced the pool goes to the new pool`, async (t) => {
    let stale: (() => void) | null = null
    const up = await startUpstream('a', (req, res) => {
      req.resume()
      // the first /stale: the upstream drops its kept-alive connection, nothing answered
      if (req.url === '/stale' && stale === null) return void (stale = () => req.socket.destroy())
      res.end('a\n')
    })
    t.teardown(() => up.close())
    const tt = await tether(t, [up], { limits: { max_upstream_connections: bound }, timeouts: { queue: 2000, response_headers: 60_000 } })
    t.equal((await request(`${tt.url}/warm`)).status, 200, 'a kept-alive connection')
    const first = request(`${tt.url}/stale`)
    await waitFor(() => stale !== null, 5000, '/stale at the upstream')
    // the upstream gets another url (the same server): a new pool; /stale is on the old one
    tt.reload({ ...tt.config, upstreams: [{ id: 'a', url: up.url.replace('127.0.0.1', 'localhost'), weight: 1 }] })
    stale!()
    const r = await first
    t.equal(r.status, 200, `sent again, on the upstream's current pool (got ${r.status} ${String(r.headers['x-tether-error'] ?? '')})`)
    t.same(up.seen.map((s) => s.url), ['/warm', '/stale', '/stale'], 'the upstream saw it twice')
    t.equal(await queued(tt, 'a'), 0, 'nothing waits')
  })
}
