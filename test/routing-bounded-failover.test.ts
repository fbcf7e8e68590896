// With `balance_factor`, a new user's placement follows the loads this Tether process counts,
// which differ between replicas (each counts its own affinity entries). A user whose upstream
// fails is moved, not placed: to the next upstream in their hash order that takes new users,
// whatever the loads, so two replicas with different load views move them to the same one (and
// two replicas deciding the move at the same instant, before either reads the other's from
// Redis, agree). Two routing worlds stand for two replicas; no network.
// The same against real processes: test/shared-moves-processes-bounded.test.ts.
import t from 'tap'
import { pickBounded } from '../src/placement/bounded-load.js'
import { hashKey } from '../src/placement/hash.js'
import type { UpstreamConfig } from '../src/config/schema.js'
import { world, type World } from './fixtures/routing-world.js'

const UPS: UpstreamConfig[] = ['a', 'b', 'c', 'd'].map((id, i) => ({ id, url: `http://127.0.0.1:${i + 1}`, weight: 1 }))

t.test('balance_factor: two replicas with different loads move each user of a dead upstream to the same upstream, the next in hash order', async (t) => {
  const replicas = [world('header', { balance_factor: 1 }, UPS), world('header', { balance_factor: 1 }, UPS)] as [World, World]
  const [one, two] = replicas
  // shared users, placed by replica one and adopted by replica two (as from Redis)
  const shared = Array.from({ length: 40 }, (_, i) => `user-${i}`)
  for (const u of shared) {
    const d = one.go(u)
    two.sessions.applyRemote(u, d.upstream, d.epoch, two.clock.now(), one.clock.now())
  }
  // users only replica one sees: its loads differ from two's, and most of them on one upstream
  const placement = one.router.placement
  const firstChoice = (key: string): string => placement.ids[placement.pick(hashKey(key))]!
  const homeOf = (u: string): string => one.sessions.peek(u, one.clock.now())!.upstream
  const usersOf = (id: string): number => shared.filter((u) => homeOf(u) === id).length
  const victim = [...'abcd'].sort((x, y) => usersOf(y) - usersOf(x))[0]!
  const victims = shared.filter((u) => homeOf(u) === victim)
  const next = (u: string): string => placement.ids[placement.pick(hashKey(u), (i) => placement.ids[i] !== victim)]!
  // crowd the upstream most victims go to next on replica one (pinned there, as users that
  // stayed after an earlier move would be)
  const crowded = [...'abcd'].filter((id) => id !== victim).sort((x, y) => victims.filter((u) => next(u) === y).length - victims.filter((u) => next(u) === x).length)[0]!
  for (let i = 0, n = 0; n < 30; i++) {
    if (firstChoice(`solo-${i}`) !== crowded) continue
    one.sessions.pin(`solo-${i}`, crowded, 0, one.clock.now())
    n++
  }
  const loadsOf = (w: World): number[] => placement.ids.map((id) => w.sessions.loadOf(id))
  t.not(loadsOf(one).join(), loadsOf(two).join(), `the replicas' loads differ (${loadsOf(one).join(' ')} against ${loadsOf(two).join(' ')})`)

  for (const w of replicas) w.health.reportActive(victim, false) // unhealthy_threshold 1
  const accept = (i: number): boolean => placement.ids[i] !== victim
  // where each replica would place these users as new ones, by its own loads
  const byLoad = (w: World, u: string): string => placement.ids[pickBounded(placement, hashKey(u), accept, (i) => w.sessions.loadOf(placement.ids[i]!), w.sessions.load, 1)]!
  const wouldSplit = victims.filter((u) => byLoad(one, u) !== byLoad(two, u))
  t.ok(wouldSplit.length > 0, `a move placed by load would split ${wouldSplit.length} of the ${victims.length} users of ${victim} between the two replicas`)

  // both decide every move before either answers (the same instant: nothing read back)
  const moves = victims.map((u) => [u, one.decide(u).d, two.decide(u).d] as const)
  const split = moves.filter(([, x, y]) => x.upstream !== y.upstream || x.epoch !== y.epoch).map(([u, x, y]) => `${u}: ${x.upstream}@${x.epoch} / ${y.upstream}@${y.epoch}`)
  t.same(split, [], 'both replicas move each user to the same upstream at the same epoch')
  t.same(moves.filter(([u, x]) => x.upstream !== next(u) || x.moved?.reason !== 'dead').map(([u, x]) => `${u}: ${x.upstream}`), [], 'to the next upstream in their hash order, for reason dead')
  t.comment(`${victims.length} users of ${victim} moved; ${wouldSplit.length} would have split by load; ${crowded} crowded on one replica`)
})
