// A request waiting in its upstream's queue (limits.max_upstream_connections busy) is silent
// on its client connection; the client idle bound (max(body_idle, response_headers) + 1 s) cut
// that connection under it, so the client got a closed connection instead of the queue's 503
// (with Retry-After) at timeouts.queue (review s64 r2; also before the queue moved into Tether).
// With an upstream bound, the idle bound counts timeouts.queue on top of response_headers. The
// one connection is kept busy by an answer the upstream streams a chunk every 200 ms (inside
// body_idle). Without the fix: "socket hang up" after 2 s, before the queue's 3 s. The bound
// follows a reload that adds the first upstream bound too (review s64 r3: it was read at start).
import t, { type Test } from 'tap'
import type { Tether } from '../src/app.js'
import { request, startUpstream, waitFor } from './fixtures/upstream.js'
import { tether, queued } from './fixtures/upstream-queue.js'

/**
 * An upstream that streams `/stream` a chunk every 200 ms (its own pace, inside body_idle) and
 * answers the rest at once, behind Tether (timeouts.queue 3 s, response_headers and body_idle
 * 1 s, `bounded`: limits.max_upstream_connections 1 from the start, else none); `start` makes
 * Tether's one connection busy with `/stream`.
 */
async function setup(t: Test, bounded: boolean): Promise<{ tt: Tether; start: () => Promise<void>; stop: () => void }> {
  const streams = new Set<NodeJS.Timeout>()
  const stop = (): void => { for (const s of streams) clearInterval(s) }
  const up = await startUpstream('a', (req, res) => {
    req.resume()
    if (req.url !== '/stream') return void res.end('ok')
    res.writeHead(200)
    const chunk = setInterval(() => res.write('.'), 200)
    streams.add(chunk)
    res.on('close', () => clearInterval(chunk))
  })
  t.teardown(() => { stop(); return up.close() })
  const tt = await tether(t, [up], { limits: { max_upstream_connections: bounded ? 1 : null }, timeouts: { queue: 3000, response_headers: 1000, body_idle: 1000 } })
  const start = async (): Promise<void> => {
    request(`${tt.url}/stream`).catch(() => undefined)
    await waitFor(() => streams.size === 1, 5000, '/stream at the upstream')
  }
  return { tt, start, stop }
}

/** `/next` sent while the connection is busy: once it waits in the queue, what its client gets. */
async function next(tt: Tether): Promise<{ status: number; retry: unknown }> {
  const answer = request(`${tt.url}/next`).then((r) => ({ status: r.status, retry: r.headers['retry-after'] }), (e: Error) => ({ status: 0, retry: e.message }))
  await waitFor(async () => await queued(tt, 'a') === 1, 5000, '/next waiting')
  return answer
}

t.test('timeouts.queue 3s, response_headers and body_idle 1s: the waiting request gets the queue\'s 503, not a cut connection', async (t) => {
  const { tt, start, stop } = await setup(t, true)
  await start()
  t.same(await next(tt), { status: 503, retry: '1' }, 'the queue\'s 503 with Retry-After: 1')
  stop()
})

t.test('no bound at start, reload adds max_connections 1: the waiting request gets the queue\'s 503', async (t) => {
  const { tt, start, stop } = await setup(t, false)
  tt.reload({ ...tt.config, upstreams: tt.config.upstreams.map((u) => ({ ...u, max_connections: 1 })) })
  await start()
  t.same(await next(tt), { status: 503, retry: '1' }, 'the queue\'s 503 with Retry-After: 1')
  stop()
})
