// Two Tether processes (dist/cli.js) sharing one redis-server (`affinity.shared: redis`,
// `health.shared: redis`, checkpoints in Redis) in front of four counter apps (child processes),
// users keyed by an X-Tenant header and spread over both Tethers, each request on a new
// connection. An app is SIGKILLed; afterwards both Tethers must send each of its users to one
// same upstream (never two), with the move announced once. With `balance_factor` the Tethers'
// load views differ on purpose (some users visit one Tether only), so a move whose target
// followed the local load (as a new user's placement does) would split users between the two:
// a forced move goes to the next upstream in the key's hash order, the same on every replica,
// and the move read back from Redis (`#movedBefore` in src/proxy/request-path.ts) stops the
// second replica from announcing it again. (`state.store: none` cannot share affinity at all:
// `affinity.shared: redis` needs `state.store: redis`, test/config-load.test.ts.)
import t, { type Test } from 'tap'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'
import { drillYaml, startCliTether, startReplicas, type CliTether } from './fixtures/drill.js'
import { startRedis } from './fixtures/redis-server.js'
import { request } from './fixtures/upstream.js'
import type { CounterAnswer } from './fixtures/counter-upstream.js'
import { tally } from './fixtures/users.js'

const IDS = ['app-0', 'app-1', 'app-2', 'app-3'] as const
const placement = buildPlacement(IDS.map((id) => ({ id, weight: 1 })))
/** The key's upstreams in hash order. */
const order = (key: string): string[] => {
  const left = new Set<string>(IDS)
  const out: string[] = []
  while (left.size > 0) {
    const id = placement.ids[placement.pick(hashKey(key), (i) => left.has(placement.ids[i]!))]!
    out.push(id)
    left.delete(id)
  }
  return out
}

interface Seen { readonly via: string; readonly upstream: string; readonly n: number; readonly moved: string | null }

async function scenario(t: Test, balanceFactor: number | null): Promise<void> {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps = await startReplicas(t, IDS)
  const yaml = drillYaml(apps.values(), [
    `affinity: { key: header, header: { name: X-Tenant }, shared: redis${balanceFactor === null ? '' : `, balance_factor: ${balanceFactor}`} }`,
    'health: { shared: redis }',
    `state: { store: redis, timeout: 1s, redis: { url: "${redis.url}", key_prefix: "mp:" } }`,
  ])
  const [a, b] = await Promise.all([startCliTether(t, 'tether-a', yaml), startCliTether(t, 'tether-b', yaml)]) as [CliTether, CliTether]
  const seen = new Map<string, Seen[]>()
  const ask = async (x: CliTether, tenant: string): Promise<Seen> => {
    const r = await request(x.url, { headers: { 'x-tenant': tenant } })
    if (r.status !== 200) throw new Error(`${tenant} via ${x.name}: status ${r.status}: ${r.body.trim()}`)
    const answer = JSON.parse(r.body) as CounterAnswer
    const s = { via: x.name, upstream: answer.id, n: answer.n, moved: answer.moved }
    const list = seen.get(tenant) ?? []
    list.push(s)
    seen.set(tenant, list)
    return s
  }
  // shared users: first placed by one Tether or the other, then asked through both
  const shared = Array.from({ length: 32 }, (_, i) => `user-${i}`)
  // users of Tether A only: A's load view holds them, B's does not
  const solo = Array.from({ length: 24 }, (_, i) => `solo-${i}`)
  for (const [i, tenant] of shared.entries()) {
    const [first, second] = i % 2 === 0 ? [a, b] : [b, a]
    await ask(first, tenant)
    if (i % 3 === 0) await ask(a, solo[i / 3 * 2]!), await ask(a, solo[i / 3 * 2 + 1]!)
    await ask(second, tenant)
  }
  for (const tenant of solo) if (!seen.has(tenant)) await ask(a, tenant)
  const home = new Map(shared.map((u) => [u, seen.get(u)![0]!.upstream]))
  const beforeSplit = shared.filter((u) => new Set(seen.get(u)!.map((s) => s.upstream)).size !== 1)
  t.same(beforeSplit, [], 'before the kill, both Tethers send each user to one upstream')
  const walked = [...shared, ...solo].filter((u) => seen.get(u)![0]!.upstream !== order(u)[0]).length
  if (balanceFactor !== null) t.ok(walked > 0, `bounded loads placed ${walked} users off their first upstream`)
  else t.equal(walked, 0, 'without bounded loads every user is on their first upstream')

  // the upstream with the most shared users is SIGKILLed
  const victimId = [...tally(home.values())].sort((x, y) => y[1] - x[1] || (x[0] < y[0] ? -1 : 1))[0]![0]
  const victims = shared.filter((u) => home.get(u) === victimId)
  const stayers = shared.filter((u) => home.get(u) !== victimId)
  const mark = new Map(shared.map((u) => [u, seen.get(u)!.length]))
  await apps.get(victimId)!.kill()

  // the first request after the kill of half of the victims goes through both Tethers at once
  // (each finds the upstream dead and decides the move before the other's is stored: only the
  // same target everywhere keeps them together); of the other half, through A for some and B
  // for the others, the second Tether asked finding the move already made; then by turns
  const together = victims.filter((_, i) => i % 2 === 0)
  const inTurn = victims.filter((_, i) => i % 2 === 1)
  await Promise.all(together.map((tenant) => Promise.all([ask(a, tenant), ask(b, tenant)])))
  for (let round = 0; round < 3; round++) {
    for (const [i, tenant] of victims.entries()) {
      const [first, second] = (i + round) % 4 < 2 ? [a, b] : [b, a]
      await ask(first, tenant)
      await ask(second, tenant)
    }
  }
  for (const tenant of stayers) { await ask(a, tenant); await ask(b, tenant) }

  const after = (u: string): Seen[] => seen.get(u)!.slice(mark.get(u))
  const split = victims.filter((u) => new Set(after(u).map((s) => s.upstream)).size !== 1 || after(u).some((s) => s.upstream === victimId))
    .map((u) => `${u}: ${after(u).map((s) => `${s.via}->${s.upstream}`).join(', ')}`)
  const notNext = victims.filter((u) => after(u)[0]!.upstream !== order(u).find((id) => id !== victimId))
    .map((u) => `${u} (order ${order(u).join(" ")}, home ${home.get(u)}): ${after(u).map((s) => `${s.via}->${s.upstream}`).join(", ")}`)
  const strays = stayers.filter((u) => after(u).some((s) => s.upstream !== home.get(u)))
  const announced = (u: string): number => after(u).filter((s) => s.moved !== null).length
  // (two answers at once may complete in either order: each count is answered once)
  const lost = shared.filter((u) => seen.get(u)!.map((s) => s.n).sort((x, y) => x - y).some((n, i) => n !== i + 1))
  t.comment(`balance_factor ${balanceFactor ?? 'null'}: ${victims.length} users of ${victimId} moved (${walked} of ${shared.length + solo.length} placed off their first upstream); ` +
    `split between the Tethers: ${split.length}; announced ${victims.reduce((n, u) => n + announced(u), 0)} times ` +
    `(${together.reduce((n, u) => n + announced(u), 0)} for the ${together.length} asked through both at once); stray moves ${strays.length}; lost counts ${lost.length}`)
  t.ok(together.length > 0 && inTurn.length > 0, 'the killed upstream had users')
  t.same(split, [], 'after the kill both Tethers send each moved user to one same upstream')
  t.same(notNext, [], "each moved user goes to the next upstream in their hash order, whatever the Tether's load view")
  t.same(strays, [], 'users of other upstreams stay where they are')
  t.same(inTurn.filter((u) => announced(u) !== 1), [], 'a move is announced once when the second Tether finds it made')
  t.same(together.filter((u) => announced(u) < 1 || announced(u) > 2), [], 'a move two Tethers decided at once is announced by each at most once')
  t.same(lost, [], "every user's count goes on (the moved ones rehydrated)")
}

t.test('two Tether processes, an upstream SIGKILLed: every moved user is routed the same by both', (t) => scenario(t, null))
t.test('the same with balance_factor 1 and differing load views: no split either', (t) => scenario(t, 1))
