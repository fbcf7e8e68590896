// `affinity.shared: redis` with `absolute_timeout`, at the store: a binding's key in Redis ends
// at its placement time + absolute_timeout however often it is renewed (its TTL is cut there,
// not only the idle timeout), so it ends in Redis with the replicas' local bindings. Real
// redis-server; each replica's bindings on a connection of their own; time is a FakeClock
// (Redis's TTLs run in real time and are read, never waited for).
import t, { type Test } from 'tap'
import { RedisBindings } from '../src/redis/binding-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import { FakeClock } from './fixtures/clock.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'

const IDLE = 600_000
const ABSOLUTE = 120_000

const redis = await startRedis()
t.teardown(() => redis.stop())

/** A replica's bindings (idle 10 min, absolute 120 s) under `prefix`, on its own connection, with `clock`. */
async function replica(t: Test, prefix: string, clock: FakeClock): Promise<RedisBindings> {
  const conn = new RedisConnection({ url: redis.url, keyPrefix: prefix, timeout: 5_000 })
  // (its scripts defined before start)
  const bindings = new RedisBindings(conn, IDLE, { now: () => clock.now(), absoluteTimeoutMs: ABSOLUTE })
  await conn.start()
  t.teardown(() => conn.stop())
  return bindings
}

const pttl = async (key: string): Promise<number> => Number(await redisCli(redis.port, 'PTTL', key))

t.test("a binding's TTL in Redis is cut at its placement time + absolute_timeout, on every write and renewal", async (t) => {
  const clock = new FakeClock()
  const b = await replica(t, 'exp-ttl:', clock)
  const placed = clock.now() - 100_000 // placed 100 s ago: 20 s left of 120 s
  t.equal(await b.write('u1', 'app-1', 1, IDLE, placed), 'written')
  for (const k of ['exp-ttl:af:{u1}', 'exp-ttl:ap:{u1}']) {
    const ttl = await pttl(k)
    t.ok(ttl > 0 && ttl <= ABSOLUTE - 100_000, `${k}: PTTL ${ttl} ms <= absolute - age (20,000 ms), not the idle 600,000 ms`)
  }

  // the user busy: the same binding renewed 10 s later (the script's PEXPIRE path) keeps the cut
  clock.advance(10_000)
  t.equal(await b.write('u1', 'app-1', 1, IDLE, placed), 'written')
  for (const k of ['exp-ttl:af:{u1}', 'exp-ttl:ap:{u1}']) {
    const ttl = await pttl(k)
    t.ok(ttl > 0 && ttl <= ABSOLUTE - 110_000, `${k} renewed: PTTL ${ttl} ms <= 10,000 ms`)
  }

  // a rival of the same epoch kept (a smaller upstream id) takes the later placement time, for
  // the TTL it has left: one an older Tether renewed with the idle TTL alone is cut too
  await redisCli(redis.port, 'PEXPIRE', 'exp-ttl:af:{u1}', String(IDLE))
  await redisCli(redis.port, 'PEXPIRE', 'exp-ttl:ap:{u1}', String(IDLE))
  t.equal(await b.write('u1', 'app-2', 1, IDLE, placed + 5_000), 'kept')
  for (const k of ['exp-ttl:af:{u1}', 'exp-ttl:ap:{u1}']) {
    const ttl = await pttl(k)
    t.ok(ttl > 0 && ttl <= ABSOLUTE - 105_000, `${k} kept with the later time: PTTL ${ttl} ms <= 15,000 ms`)
  }

  // a binding already over ends at once; one of unknown placement time keeps the idle TTL
  t.equal(await b.write('u2', 'app-1', 1, IDLE, clock.now() - 130_000), 'written')
  const gone = await pttl('exp-ttl:af:{u2}')
  t.ok(gone <= 1, `placed 130 s ago: PTTL ${gone} (ends at once, -2 once gone)`)
  t.equal(await b.write('u3', 'app-1', 1), 'written')
  t.ok(await pttl('exp-ttl:af:{u3}') > ABSOLUTE, 'placement time unknown: the idle TTL, not cut')

  // no absolute timeout: the idle TTL, as before
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'exp-ttl:', timeout: 5_000 })
  const none = new RedisBindings(conn, IDLE, { now: () => clock.now() })
  await conn.start()
  t.teardown(() => conn.stop())
  t.equal(await none.write('u4', 'app-1', 1, IDLE, clock.now() - 100_000), 'written')
  t.ok(await pttl('exp-ttl:af:{u4}') > ABSOLUTE, 'absolute_timeout null: the idle TTL')
  t.throws(() => new RedisBindings(conn, IDLE, { absoluteTimeoutMs: 0 }), /absoluteTimeoutMs must be a positive number/)
})
