// A drain or undrain made through this replica while Redis was down is sent (told and recorded)
// once Redis is back, even when the read of the recorded drains made then fails: that read is
// retried (1 s, doubling up to 30 s) and the unsent changes go after the first read that
// succeeds (which tells whether another replica changed the upstream since). A failed read is
// said once a spell (a warn), its end once (an info). Here the ACL user may not run HGETALL
// until it is granted, after Tether's read failed once Redis was back (a read slower than 2 s,
// or refused by the in-flight cap after a reconnect, is the same to it). A real redis-server
// behind a TCP relay cut and opened again (Redis down and back, its keys kept), Tether in
// process, real upstreams. First reported by the R3 review (r3-unsent-drain-after-failed-read).
import t from 'tap'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startUpstream, testConfig, request } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import net from 'node:net'

const UNREAD = 'the recorded drains were not read'

/** A TCP relay to Redis that can be cut (every connection closed, new ones refused) and opened again: Redis down and back, its data kept. */
async function cuttableRelay(targetPort: number) {
  const sockets = new Set<net.Socket>()
  let open = true
  const server = net.createServer((client) => {
    if (!open) return void client.destroy()
    const upstream = net.connect(targetPort, '127.0.0.1')
    sockets.add(client); sockets.add(upstream)
    const end = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
    client.pipe(upstream); upstream.pipe(client)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `redis://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    cut: () => { open = false; for (const s of sockets) s.destroy() },
    resume: () => { open = true },
    close: () => new Promise<void>((resolve) => { for (const s of sockets) s.destroy(); server.close(() => resolve()) }),
  }
}

/** How many HGETALLs Redis refused the ACL user so far (its ACL LOG's counts). */
async function refusedReads(port: number): Promise<number> {
  const lines = (await redisCli(port, 'ACL', 'LOG')).split('\n')
  let n = 0
  for (let i = 0; i < lines.length - 1; i++) if (lines[i] === 'count') n += Number(lines[i + 1])
  return n
}

for (const change of ['drain', 'undrain'] as const) {
  t.test(`${change === 'drain' ? 'a' : 'an'} ${change} made while Redis was down reaches Redis once it is back, when the read of the records then fails and a retry succeeds`, async (t) => {
    const redis = await startRedis({ args: ['--user', 'tether', 'on', '>pw', '~*', '&*', '+@all', '-hgetall'] })
    t.teardown(() => redis.stop())
    const apps = await Promise.all(['a', 'b'].map((id) => startUpstream(id)))
    t.teardown(() => Promise.all(apps.map((a) => a.close())))
    const relay = await cuttableRelay(redis.port)
    t.teardown(() => relay.close())
    const logs = new LogCapture()
    const tether = await startTether(testConfig(apps, {
      affinity: { key: 'header', header: { name: 'X-Tenant' } },
      health: { shared: 'redis' },
      state: { store: 'redis', redis: { url: relay.url, username: 'tether', password: 'pw' } },
    }), { logger: createLogger('info', logs) })
    t.teardown(() => tether.close(0))
    const said = (msg: string): number => logs.lines.filter((l) => String(l.rec['msg']).startsWith(msg)).length
    if (change === 'undrain') {
      t.equal((await request(`${tether.adminUrl}/upstreams/b/drain`, { method: 'POST' })).status, 200, 'drained with Redis up')
      await waitFor(async () => (await redisCli(redis.port, 'HGET', 'tether:peers:drains', 'b')).trim() === 'stay', 5_000, 'the drain recorded')
    }
    relay.cut()
    const changed = await request(`${tether.adminUrl}/upstreams/b/${change}`, { method: 'POST' })
    t.equal(changed.status, 200, `${change}ed through the admin API while Redis is down`)
    const before = await refusedReads(redis.port)
    relay.resume()
    // Tether reconnects, subscribes again and reads the records: refused; then HGETALL is granted
    await waitFor(async () => (await refusedReads(redis.port)) > before, 12_000, 'a read refused after Redis is back')
    await redisCli(redis.port, 'ACL', 'SETUSER', 'tether', '+hgetall')
    const want = change === 'drain' ? 'stay' : ''
    let recorded = ''
    try {
      await waitFor(async () => (recorded = (await redisCli(redis.port, 'HGET', 'tether:peers:drains', 'b')).trim()) === want, 10_000, `the ${change} of b in Redis`)
    } catch (err) {
      t.comment(`HGET tether:peers:drains b = ${JSON.stringify(recorded)}`)
      throw err
    }
    t.pass(`the ${change} made while Redis was down reached Redis`)
    await waitFor(() => said('the recorded drains and ejections were read again') > 0, 5_000, 'the info that the records were read')
    t.equal(said(UNREAD), 1, 'the failed reads said once (one warn from the start on, not one per read)')
    const warn = logs.lines.find((l) => String(l.rec['msg']).startsWith(UNREAD))
    t.match(String(warn?.rec['hint']), /retried/, 'its hint says the read is retried')
  })
}
