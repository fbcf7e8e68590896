// A node that is BUSY (a script that runs on: every read and every script of Tether's answered
// BUSY, down for everyone while it lasts, docs/redis.md) and MISCONF at once answers PING with
// MISCONF (Redis 7 checks the disk error before BUSY, server.c processCommand). Such a PING of
// the suspect-node probe must not count as an answer unless the node also answers a read: under
// light traffic it was shown up while every call of Tether's failed. Control: BUSY alone is down.
// Real redis-server; found by review R1. The traffic the case is about is lighter than the probes:
// a read after every second run of the connection's probe timer (counted through its timers).
import t, { type Test } from 'tap'
import { execFileSync, spawn, type ChildProcess } from 'node:child_process'
import { RedisCheckpointStore } from '../src/redis/checkpoint-store.js'
import { RedisConnection } from '../src/redis/connection.js'
import { systemTimers, type Timers } from '../src/clock.js'
import { redisCli, startRedis, startRedisCluster, waitFor, type RedisServer } from './fixtures/redis-server.js'
import { breakDisk, cp, HOUR } from './fixtures/redis-refusing.js'


async function run(t: Test, misconf: boolean): Promise<void> {
  const redis: RedisServer = await startRedis({ args: ['--enable-protected-configs', 'yes', '--busy-reply-threshold', '50'] })
  t.teardown(async () => {
    await redisCli(redis.port, 'SCRIPT', 'KILL').catch(() => undefined)
    await redisCli(redis.port, 'CONFIG', 'SET', 'save', '').catch(() => undefined)
    await redis.stop()
  })
  // the probe's timer runs are what the reads are paced by (no call here waits out a timeout:
  // BUSY is answered at once)
  let fired = 0
  const timers: Timers = { setTimeout: (fn, ms) => systemTimers.setTimeout(() => { fired++; fn() }, ms), clearTimeout: (h) => systemTimers.clearTimeout(h) }
  const conn = new RedisConnection({ url: redis.url, keyPrefix: 'busy:', timeout: 1_000, timers })
  t.teardown(() => conn.stop())
  const store = new RedisCheckpointStore({ connection: conn })
  await conn.start()
  t.equal(await store.put('u', cp, HOUR), 'stored')
  if (misconf) {
    await breakDisk(redis.port)
  }
  // another client's script that runs on (read-only, so SCRIPT KILL ends it)
  const busy = spawn('redis-cli', ['-p', String(redis.port), 'EVAL', 'while true do end', '0'], { stdio: 'ignore' })
  t.teardown(() => { busy.kill() })
  await waitFor('BUSY', async () => /^BUSY/.test(await redisCli(redis.port, 'GET', 'x')), 5_000)
  // light traffic: a read (a rehydration) after every second probe, until the node is down or
  // 8 reads went by (16 probes: the old code showed it up all along)
  const results = new Set<string>()
  const statuses = new Set<string>()
  for (let i = 0; i < 8 && conn.nodes()[0]!.status !== 'down'; i++) {
    results.add((await store.get('u')).status)
    statuses.add(conn.nodes()[0]!.status)
    const since = fired
    await waitFor('two more probe rounds, or the node down', () => fired >= since + 2 || conn.nodes()[0]!.status === 'down', 5_000)
  }
  const n = conn.nodes()[0]!
  t.comment(`misconf=${misconf}: reads ${[...results].join()}; statuses seen ${[...statuses].join()}; now ${n.status} ${n.summary}`)
  t.same([...results], ['unavailable'], 'every read fails (BUSY)')
  t.equal(n.status, 'down', 'a node that answers every call BUSY is down')
}

t.test('control: BUSY alone', (t) => run(t, false))
t.test('BUSY and MISCONF', (t) => run(t, true))

// The Cluster's start-up PING of each master (start() connects to every master before it
// resolves) took MISCONF as an answer of a live node too, without a read: a master both BUSY and
// MISCONF when Tether started was shown up, refusing writes, with no failure to probe it for,
// while every read of its slots got BUSY. Review R2. It must agree with the probe above: a PING
// refused with MISCONF is followed by a read, whose BUSY is the PING's outcome. The master turns
// BUSY once the Cluster client is ready (its ready check, CLUSTER INFO to a random node, would
// otherwise hit a BUSY node at random: see the comment below) and before the PINGs go out: from
// the connection's status listener, which start() calls synchronously just before it sends them.
t.test('Cluster: a master BUSY and MISCONF at the start is a failure of its start-up PING, and down without traffic', async (t) => {
  const cluster = await startRedisCluster(3, ['--enable-protected-configs', 'yes', '--busy-reply-threshold', '50'])
  const x = cluster.nodes[0]!
  let busy: ChildProcess | null = null
  t.teardown(async () => {
    busy?.kill()
    await redisCli(x.port, 'SCRIPT', 'KILL').catch(() => undefined)
    await redisCli(x.port, 'CONFIG', 'SET', 'save', '').catch(() => undefined)
    await cluster.stop()
  })
  // Tether's ACL user without INFO (a grant docs/redis.md allows): ioredis then skips the ready
  // check of each master's own connection (INFO, which a BUSY node refuses, failing the PING
  // queued behind it), so the PING reaches the master, as it does on a connection made before
  // the master turned BUSY
  for (const n of cluster.nodes) await redisCli(n.port, 'ACL', 'SETUSER', 'tether', 'on', '>pw', '~busy:*', '&*', '+@all', '-info')
  await breakDisk(x.port)
  t.match(await redisCli(x.port, 'PING'), /^MISCONF/, 'the master answers PING with MISCONF')
  const conn = new RedisConnection({ nodes: cluster.addresses, keyPrefix: 'busy:', timeout: 1_000, connectTimeout: 2_000, username: 'tether', password: 'pw' })
  t.teardown(() => conn.stop())
  conn.onStatus((status) => {
    if (status !== 'ready' || busy !== null) return
    // another client's script that runs on (read-only, so SCRIPT KILL ends it); this blocks the
    // event loop until the master answers BUSY, so no PING of start() goes out before
    busy = spawn('redis-cli', ['-p', String(x.port), 'EVAL', 'while true do end', '0'], { stdio: 'ignore' })
    const deadline = performance.now() + 5_000
    while (!/^BUSY/.test(execFileSync('redis-cli', ['-p', String(x.port), 'DBSIZE'], { encoding: 'utf8' })) && performance.now() < deadline);
  })
  await conn.start()
  t.ok(busy !== null, 'the master turned BUSY before the start-up PINGs')
  t.match(await redisCli(x.port, 'PING'), /^MISCONF/, 'it answers PING with MISCONF still (checked before BUSY)')
  t.match(await redisCli(x.port, 'DBSIZE'), /^BUSY/, 'and a read with BUSY')
  const address = `127.0.0.1:${x.port}`
  const node = (): ReturnType<RedisConnection['nodes']>[number] | undefined => conn.nodes().find((n) => n.address === address)
  t.comment(`after start: ${node()?.summary}`)
  t.match(node(), { failed: 1, writesRefused: null, lastError: /^BUSY/ }, 'its start-up PING failed with the read\'s BUSY (not an answer with MISCONF)')
  // no traffic: the probes alone take it down, as a BUSY master
  await waitFor('the BUSY and MISCONF master down', () => node()?.status === 'down', 8_000)
  t.match(node(), { status: 'down', writesRefused: null, lastError: /^BUSY/ })
  t.equal(conn.nodes().filter((n) => n.status === 'up').length, 2, 'the other masters are up')
})
