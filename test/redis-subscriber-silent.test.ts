// A subscriber connection that goes silent without a FIN or a RST (a NAT's or conntrack's entry
// dropped between Tether and Redis, a host gone) is noticed and made again
// (src/redis/connection.ts, SUBSCRIBER_PING_MS): it sends nothing by itself, so the stall
// timeout never watched it, and every peer message (drains, moves) was missed until TCP
// keepalive noticed, minutes later. A real redis-server behind a real TCP relay that can stop
// carrying the connections it has (the bytes dropped, the sockets left open), as such a NAT.
import t from 'tap'
import net from 'node:net'
import { RedisConnection, SUBSCRIBER_PING_MS } from '../src/redis/connection.js'
import { RedisPeerChannel } from '../src/redis/peer-channel.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { waitFor } from './fixtures/wait.js'

/** A TCP relay to `port`; `blackhole()` drops every byte of the connections open now, both ways, and keeps them open. */
async function startRelay(port: number): Promise<{ port: number; blackhole(): void; close(): Promise<void> }> {
  const pairs = new Set<{ client: net.Socket; upstream: net.Socket; dead: boolean }>()
  const server = net.createServer((client) => {
    const upstream = net.connect(port, '127.0.0.1')
    const pair = { client, upstream, dead: false }
    pairs.add(pair)
    client.on('data', (c: Buffer) => { if (!pair.dead) upstream.write(c) })
    upstream.on('data', (c: Buffer) => { if (!pair.dead) client.write(c) })
    const end = (): void => { if (!pair.dead) { client.destroy(); upstream.destroy() } }
    client.on('close', end)
    upstream.on('close', end)
    client.on('error', () => undefined)
    upstream.on('error', () => undefined)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    blackhole: () => { for (const p of pairs) p.dead = true },
    close: () => {
      for (const p of pairs) { p.client.destroy(); p.upstream.destroy() }
      return new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}

t.test('a subscriber whose connection went silent is made again, and hears the messages published after', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const relay = await startRelay(redis.port)
  t.teardown(() => relay.close())
  const conn = new RedisConnection({ url: `redis://127.0.0.1:${relay.port}`, timeout: 1_000, connectTimeout: 1_000, stallTimeout: 500, maxReconnectDelay: 100 })
  await conn.start()
  t.teardown(() => conn.stop())
  const heard: string[] = []
  let subscribed = 0
  const channel = new RedisPeerChannel(conn)
  await channel.subscribe((m) => heard.push(m), () => subscribed++)
  await waitFor(() => subscribed === 1, 5_000, 'subscribed')
  await redisCli(redis.port, 'PUBLISH', 'tether:events', 'before')
  await waitFor(() => heard.includes('before'), 5_000, 'the first message')
  // the relay stops carrying Tether's connections: nothing closes them
  relay.blackhole()
  // the next PING goes unanswered: closed after the stall timeout, made again through the relay
  await waitFor(() => subscribed === 2, SUBSCRIBER_PING_MS + 10_000, 'subscribed again on a new connection')
  await redisCli(redis.port, 'PUBLISH', 'tether:events', 'after')
  await waitFor(() => heard.includes('after'), 5_000, 'a message published after the silence')
})
