// What a Redis failover does to Tether's connection: the connections killed the way Sentinel
// kills a demoted master's clients (no stray rejection, the subscription keeps delivering), a
// primary demoted behind one endpoint (writes come back once the endpoint names the new
// primary), an endpoint that stays read-only (remade with a back-off, reads go on), and a
// Sentinel switch (followed at once, not when the old master drops us; another master's not).
// Real redis-server processes; real time is only polled with a deadline.
import net from 'node:net'
import t from 'tap'
import { Redis } from 'ioredis'
import { FAILED, RedisConnection } from '../src/redis/connection.js'
import { redisCli, startRedis, startRedisSentinel, waitFor } from './fixtures/redis-server.js'

/**
 * A TCP forwarder on a free loopback port whose target applies to NEW connections only (those
 * open stay with the old target), as a managed Redis's one endpoint (a DNS name) does across a
 * failover. Example: `const ep = await forwarder(a.port); ep.target = b.port`.
 */
async function forwarder(target: number): Promise<{ port: number; target: number; close(): Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer((client) => {
    const upstream = net.connect(state.target, '127.0.0.1')
    for (const s of [client, upstream]) {
      sockets.add(s)
      s.on('error', () => undefined)
      s.on('close', () => { sockets.delete(s); client.destroy(); upstream.destroy() })
    }
    client.pipe(upstream)
    upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const state = {
    port: (server.address() as net.AddressInfo).port,
    target,
    close: async (): Promise<void> => {
      for (const s of sockets) s.destroy()
      await new Promise((resolve) => server.close(resolve))
    },
  }
  return state
}

t.test('connections killed again and again (CLIENT KILL TYPE normal, then pubsub, as Sentinel does to a demoted master): no unhandled rejection, and the subscription still delivers', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const stray: unknown[] = []
  const onStray = (err: unknown): void => { stray.push(err) }
  process.on('unhandledRejection', onStray)
  t.teardown(() => { process.off('unhandledRejection', onStray) })

  const conn = new RedisConnection({ url: redis.url, timeout: 200, maxReconnectDelay: 1 })
  t.teardown(() => conn.stop())
  await conn.start()
  const received: string[] = []
  let subscriptions = 0
  await conn.subscribe('tether:test-events', (m) => received.push(m), () => { subscriptions++ })
  await waitFor('the first subscription', () => subscriptions >= 1)

  // The killer's own connection is spared (SKIPME yes is the default). Each pair waits for its
  // replies, so the kills follow one another as fast as Redis answers, for a few seconds: the
  // subscriber reconnects every ~50 ms, and some kills land while its SUBSCRIBE is unanswered.
  const killer = new Redis({ port: redis.port, host: '127.0.0.1', lazyConnect: true })
  t.teardown(() => killer.disconnect())
  await killer.connect()
  const started = performance.now()
  let pairs = 0
  let killed = 0
  while (performance.now() - started < 3_000) {
    killed += Number(await killer.call('CLIENT', 'KILL', 'TYPE', 'normal'))
    killed += Number(await killer.call('CLIENT', 'KILL', 'TYPE', 'pubsub'))
    pairs++
  }
  t.comment(`${pairs} kill pairs killed ${killed} connections`)
  t.ok(killed > 40, 'Tether\'s connections were killed and came back many times')

  await waitFor('the subscription to be in place again', async () => (await redisCli(redis.port, 'PUBSUB', 'NUMSUB', 'tether:test-events')).split('\n')[1]?.trim() === '1')
  await waitFor('the main connection to be ready again', () => conn.status === 'ready')
  await waitFor('a message published after the kills to arrive', async () => {
    await redisCli(redis.port, 'PUBLISH', 'tether:test-events', 'after')
    return received.includes('after')
  })
  t.not(await conn.run('tether:k', (c) => c.get('tether:k')), FAILED, 'the main connection answers')
  // a rejection is reported after the microtask queue drains: give it one macrotask
  await new Promise((r) => setImmediate(r))
  t.same(stray.map((e) => String(e)).slice(0, 3), [], `no promise rejection was left unhandled (${stray.length} were)`)
})

t.test('a primary demoted behind one endpoint (a managed Redis failover): its READONLY replies remake the connection, and writes reach the new primary within seconds', async (t) => {
  const b = await startRedis()
  t.teardown(() => b.stop())
  // stopped before B (teardowns run last first): a primary with a replica waits for it at shutdown
  const a = await startRedis()
  t.teardown(() => a.stop())
  const endpoint = await forwarder(a.port)
  t.teardown(() => endpoint.close())
  const conn = new RedisConnection({ url: `redis://127.0.0.1:${endpoint.port}`, timeout: 200 })
  t.teardown(() => conn.stop())
  await conn.start()
  const write = (value: string): Promise<unknown> => conn.run('tether:k', (c) => c.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, 'tether:k', value))
  t.equal(await write('before'), 'OK', 'writes succeed on A')

  // the failover: B promoted, A demoted to B's read-only replica (its clients stay connected),
  // and the endpoint names B from now on
  await redisCli(b.port, 'REPLICAOF', 'NO', 'ONE')
  await redisCli(a.port, 'REPLICAOF', '127.0.0.1', String(b.port))
  endpoint.target = b.port
  await waitFor('A to be a replica', async () => (await redisCli(a.port, 'ROLE')).startsWith('slave'))
  const failed = await conn.run('tether:k', (c) => c.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, 'tether:k', 'on A'))
  t.equal(failed, FAILED, 'a write on the demoted A fails')
  t.match(conn.nodes()[0]?.lastError, /^READONLY/, 'with READONLY')

  const started = performance.now()
  let attempts = 0
  await waitFor('a write to succeed again', async () => {
    attempts++
    return (await write('after')) === 'OK'
  }, 5_000)
  t.comment(`writes came back after ${Math.round(performance.now() - started)} ms, ${attempts} attempts`)
  t.equal((await redisCli(b.port, 'GET', 'tether:k')).trim(), 'after', 'the write landed on B, the new primary')
  await waitFor('the connection to be ready', () => conn.status === 'ready')
})

t.test('an endpoint that stays read-only (a reader endpoint by mistake, a DNS answer still cached): the connection is remade with a back-off, not after every write, and reads go on', async (t) => {
  const a = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] }) // else the first sync waits 5 s
  const b = await startRedis()
  // stopped before A (teardowns run last first): a replica first
  t.teardown(() => a.stop())
  t.teardown(() => b.stop())
  await redisCli(b.port, 'REPLICAOF', '127.0.0.1', String(a.port))
  await waitFor('B to be a replica', async () => /master_link_status:up/.test(await redisCli(b.port, 'INFO', 'replication')), 10_000)
  const connections = async (): Promise<number> => Number(/total_connections_received:(\d+)/.exec(await redisCli(b.port, 'INFO', 'stats'))![1])
  const conn = new RedisConnection({ url: `redis://127.0.0.1:${b.port}`, timeout: 200 })
  t.teardown(() => conn.stop())
  await conn.start()
  const before = await connections()
  let reads = 0
  let readsOk = 0
  const until = performance.now() + 3_000
  await Promise.all([
    (async () => {
      while (performance.now() < until) {
        await conn.run('tether:k', (c) => c.eval("return redis.call('SET', KEYS[1], 'x')", 1, 'tether:k'))
        await new Promise((resolve) => setTimeout(resolve, 5)) // a request's pace (a failed call may settle without I/O)
      }
    })(),
    (async () => {
      while (performance.now() < until) {
        reads++
        if (await conn.run('tether:k', (c) => c.get('tether:k')) !== FAILED) readsOk++
        await new Promise((resolve) => setTimeout(resolve, 5)) // a request's pace, not a wait for Tether
      }
    })(),
  ])
  const made = (await connections()) - before
  t.comment(`${made} connections in 3 s, ${readsOk} of ${reads} reads answered`)
  t.ok(made <= 12, `the connection was remade with a back-off (${made} times in 3 s; every write: about 60)`)
  t.ok(readsOk >= reads * 0.5, `reads go on (${readsOk} of ${reads})`)
})

t.test('a Sentinel failover (SENTINEL FAILOVER) with three Sentinels: the connection follows the new master within seconds of its leader naming it, not when the old master drops it ~10 s later', async (t) => {
  const master = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] })
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(master.port), '--repl-diskless-sync-delay', '0'] })
  // stopped first (teardowns run last first): a primary with a replica waits for it at shutdown
  t.teardown(() => master.stop())
  t.teardown(() => replica.stop())
  await waitFor('the replica to be in sync', async () => (await redisCli(replica.port, 'INFO', 'replication')).includes('master_link_status:up'))
  // three Sentinels; the failover is asked of the first, which leads it: the others learn of it
  // about 2 s later and name the old master meanwhile (ioredis asks the next one in its list at
  // each reconnect)
  const sentinels = [await startRedisSentinel(master), await startRedisSentinel(master), await startRedisSentinel(master)]
  for (const s of sentinels) t.teardown(() => s.stop())
  const sentinel = sentinels[0]!
  await waitFor('the Sentinels to know each other', async () => (await redisCli(sentinel.port, 'SENTINEL', 'MASTER', sentinel.name)).includes('num-other-sentinels\n2'), 15_000)

  const conn = new RedisConnection({ sentinels: sentinels.map((s) => ({ host: '127.0.0.1', port: s.port })), name: sentinel.name, timeout: 200 })
  t.teardown(() => conn.stop())
  await conn.start()
  t.equal(conn.status, 'ready', 'connected through Sentinel')
  const tetherClients = async (port: number): Promise<number> => (await redisCli(port, 'CLIENT', 'LIST')).split('\n').filter((l) => / name=tether /.test(l)).length
  t.ok(await tetherClients(master.port) > 0, 'connected to the master')
  // the switch watch is subscribed once Sentinel lists its connection as a subscriber
  await waitFor('the switch watch to subscribe', async () => / name=tether-switch-watch .*sub=1/.test(await redisCli(sentinel.port, 'CLIENT', 'LIST')), 5_000)

  // another master watched by the same Sentinel fails over: its +switch-master leaves this
  // connection alone (ioredis's failoverDetector dropped it on any master's switch)
  const other = await startRedis({ args: ['--repl-diskless-sync-delay', '0'] })
  const otherReplica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(other.port), '--repl-diskless-sync-delay', '0'] })
  t.teardown(() => other.stop())
  t.teardown(() => otherReplica.stop())
  await waitFor('the other replica to be in sync', async () => (await redisCli(otherReplica.port, 'INFO', 'replication')).includes('master_link_status:up'))
  await redisCli(sentinel.port, 'SENTINEL', 'MONITOR', 'other', '127.0.0.1', String(other.port), '1')
  // every status change, and when this Sentinel announced each switch (the watch gets its
  // announcements in the same order, on one connection): a reaction to the other master's
  // switch would show as 'degraded' before this master's switch was announced
  const statuses: { status: string; at: number }[] = []
  conn.onStatus((status) => statuses.push({ status, at: performance.now() }))
  const announced = new Map<string, number>()
  const listener = new Redis({ port: sentinel.port, protocol: 2 })
  t.teardown(() => listener.disconnect())
  listener.on('message', (_channel: string, message: string) => { announced.set(message.split(' ')[0]!, performance.now()) })
  await listener.subscribe('+switch-master')
  await waitFor('Sentinel to start the other failover', async () => (await redisCli(sentinel.port, 'SENTINEL', 'FAILOVER', 'other')).trim() === 'OK', 15_000)
  await waitFor("the other master's switch to be announced", () => announced.has('other'), 10_000)

  // NOGOODSLAVE until Sentinel has looked at the replica: asked again until it starts
  await waitFor('Sentinel to start the failover', async () => (await redisCli(sentinel.port, 'SENTINEL', 'FAILOVER', sentinel.name)).trim() === 'OK', 15_000)
  const masterPort = async (): Promise<string> => (await redisCli(sentinel.port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', sentinel.name)).split('\n')[1]?.trim() ?? ''
  await waitFor('Sentinel to name the replica master', async () => await masterPort() === String(replica.port), 10_000)
  const named = performance.now()
  // without following +switch-master, ioredis asks Sentinel again only once the old master
  // closes the connection (when Sentinel reconfigures it, about 10 s later)
  await waitFor('a Tether connection on the new master, none on the old', async () => await tetherClients(replica.port) > 0 && await tetherClients(master.port) === 0, 5_000)
  t.comment(`on the new master ${Math.round(performance.now() - named)} ms after its leader named it`)
  await waitFor('a write to land on the new master', async () => {
    await conn.run('tether:k', (c) => c.eval("return redis.call('SET', KEYS[1], ARGV[1])", 1, 'tether:k', 'after'))
    return (await redisCli(replica.port, 'GET', 'tether:k')).trim() === 'after'
  }, 2_000)
  t.pass('writes reach the new master')
  t.ok(announced.has(sentinel.name), "this master's switch was announced")
  t.same(statuses.filter((s) => s.at < announced.get(sentinel.name)!), [], "another master's switch left the connection alone (no status change before this master's switch)")
  await conn.stop()
  await waitFor('the switch watch to be closed', async () => !/tether-switch-watch/.test(await redisCli(sentinel.port, 'CLIENT', 'LIST')), 3_000)
  t.pass('stop() closes the switch watch')
})
