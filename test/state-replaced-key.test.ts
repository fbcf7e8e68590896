// A table key placed again at epoch 0 (its pin evicted while a request it routed was out) on
// another upstream: the old upstream's late answer neither overwrites the new upstream's
// checkpoint nor pins the user back, with the memory store and with a real redis-server.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { request, startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { startRedis, waitFor } from './fixtures/redis-server.js'
import { metric } from './fixtures/drill.js'

/** A replica counting per `x-user` (state and version = the count; a rehydration sets it); GET /slow is held until released. */
async function app(id: string): Promise<Upstream & { held: Map<string, () => void>; rehydrated: string[] }> {
  const counts = new Map<string, number>()
  const held = new Map<string, () => void>()
  const rehydrated: string[] = []
  const up = await startUpstream(id, (req: http.IncomingMessage, res: http.ServerResponse) => {
    const user = String(req.headers['x-user'])
    const restored = req.headers['x-tether-rehydrate']
    if (typeof restored === 'string') {
      rehydrated.push(`${user} ${restored}`)
      counts.set(user, Number(restored))
    }
    const answer = (): void => {
      const n = (counts.get(user) ?? 0) + 1
      counts.set(user, n)
      // only the users under test checkpoint: the others must not take room in the memory store
      const state: Record<string, string> = user.startsWith('u') ? { 'x-tether-state': String(n), 'x-tether-state-version': String(n) } : {}
      res.writeHead(200, { 'content-type': 'text/plain', ...state }).end(`${id} ${n}`)
    }
    if (req.url === '/slow') held.set(user, answer)
    else answer()
  })
  return Object.assign(up, { held, rehydrated })
}

const redis = await startRedis()
t.teardown(() => redis.stop())

async function setup(t: Test, store: 'memory' | 'redis'): Promise<{ tether: Tether; ups: Map<string, Awaited<ReturnType<typeof app>>>; get: (user: string, path?: string) => Promise<{ status: number; id: string; n: number }> }> {
  const ups = new Map([await app('app-0'), await app('app-1')].map((u) => [u.id, u]))
  const tether = await startTether(testConfig([...ups.values()], {
    // one entry: another user's pin evicts the one under test (as a full table does)
    affinity: { key: 'header', header: { name: 'x-user' }, max_entries: 1 },
    state: { store, timeout: 5_000, ...(store === 'redis' ? { redis: { url: redis.url, key_prefix: `replaced-${Math.random().toString(36).slice(2)}:` } } : {}) },
  }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await Promise.all([...ups.values()].map((u) => u.close())) })
  const get = async (user: string, path = '/'): Promise<{ status: number; id: string; n: number }> => {
    const r = await request(`${tether.url}${path}`, { headers: { 'x-user': user } })
    const [id, n] = r.body.split(' ')
    return { status: r.status, id: id!, n: Number(n) }
  }
  return { tether, ups, get }
}

const other = (id: string): string => (id === 'app-0' ? 'app-1' : 'app-0')

async function drain(t: Test, tether: Tether, id: string): Promise<void> {
  t.equal((await request(`${tether.adminUrl}/upstreams/${id}/drain`, { method: 'POST' })).status, 200, `${id} drained`)
}

for (const store of ['memory', 'redis'] as const) {
  t.test(`${store} store: the old pin's late answer does not overwrite the new upstream's checkpoint; the next move delivers the new upstream's state`, async (t) => {
    const { tether, ups, get } = await setup(t, store)
    const first = (await get('u1')).id
    const second = other(first)
    t.equal((await get('u1')).n, 2, `u1 on ${first} at 2`)
    // a request routed by u1's pin is still out when the pin is evicted and the key placed again elsewhere
    const late = get('u1', '/slow')
    await waitFor('the slow request to reach the old upstream', () => ups.get(first)!.held.has('u1'))
    await get('x-evicts-u1')
    t.equal(tether.sessions.peek('u1', Date.now()), null, "u1's pin was evicted")
    await drain(t, tether, first) // takes no new users: u1 is placed on the other one
    const placed = await get('u1')
    t.same([placed.id, placed.n], [second, 1], `u1 placed again at epoch 0 on ${second}, whose state starts at 1`)
    ups.get(first)!.held.get('u1')!()
    const old = await late
    t.same([old.status, old.id, old.n], [200, first, 3], 'the late answer (version 3) reaches the client')
    t.equal(await metric(tether, 'tether_checkpoints_total{result="superseded"}'), 1, "its checkpoint is refused: superseded by the later placement's")
    t.equal(await metric(tether, 'tether_checkpoints_total{result="stale"}'), 0, 'not counted stale')
    t.equal(tether.sessions.peek('u1', Date.now())?.upstream, second, `u1 stays on ${second}`)
    // u1's upstream goes away before its next checkpoint: the move delivers what u1 did there, not the old upstream's version 3
    await ups.get(second)!.close()
    await request(`${tether.adminUrl}/upstreams/${first}/undrain`, { method: 'POST' })
    const moved = await get('u1')
    t.same([moved.id, moved.n], [first, 2], `moved to ${first} with the state of ${second}`)
    t.same(ups.get(first)!.rehydrated, ['u1 1'], "the checkpoint delivered is the new upstream's (1), not the old pin's late one (3)")
  })

  t.test(`${store} store: the late answer of the request that placed the key does not pin the user back to the upstream they were placed away from`, async (t) => {
    const { tether, ups, get } = await setup(t, store)
    // u2's first request places it (the pin is made when its answer comes): still out
    const late = get('u2', '/slow')
    let first = ''
    await waitFor('the placing request to reach an upstream', () => {
      first = [...ups.values()].find((u) => u.held.has('u2'))?.id ?? ''
      return first !== ''
    })
    const second = other(first)
    await drain(t, tether, first)
    const placed = await get('u2')
    t.same([placed.id, placed.n], [second, 1], `u2 placed again at epoch 0 on ${second}`)
    ups.get(first)!.held.get('u2')!()
    t.same((await late).id, first, 'the late answer reaches the client')
    t.equal(tether.sessions.peek('u2', Date.now())?.upstream, second, `the pin stays on ${second}`)
    t.equal(await metric(tether, 'tether_checkpoints_total{result="superseded"}'), 1, "the late answer's checkpoint is refused")
    const next = await get('u2')
    t.same([next.id, next.n], [second, 2], `u2's next request goes on on ${second}, with its state`)
  })
}
