// Open WebSockets when their upstream dies, is taken out by health, or Tether shuts down: the
// client is told with a close frame (1012 service restart, 1001 going away) promptly, and its
// reconnect (same cookie) lands on another replica. Upstreams are child processes (SIGKILL).
import t, { type Test } from 'tap'
import type { IncomingMessage } from 'node:http'
import { WebSocket } from 'ws'
import { closed, obtainCookie, openWs, roundTrip, startEchoPod, startWsTether, type Pod } from './fixtures/ws-harness.js'
import { FakeTimers } from './fixtures/timers.js'
import { waitFor, within } from './fixtures/wait.js'

const N = 40

async function setup(t: Test): Promise<{ pods: Pod[]; px: Awaited<ReturnType<typeof startWsTether>> }> {
  const pods = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startEchoPod(id)))
  const px = await startWsTether(pods.map((p) => ({ id: p.id, url: p.url })))
  t.teardown(async () => {
    await px.close()
    await Promise.all(pods.map((p) => p.kill()))
  })
  return { pods, px }
}

/** N cookies whose sessions live on `id` (new sessions are spread by hash: draw until N). */
async function cookiesOn(url: string, id: string, n: number): Promise<string[]> {
  const out: string[] = []
  for (let i = 0; out.length < n && i < n * 30; i++) {
    const c = await obtainCookie(url)
    if (c.id === id) out.push(c.cookie)
  }
  if (out.length < n) throw new Error(`only ${out.length} sessions landed on ${id}`)
  return out
}

t.test('SIGKILL of an upstream with open sockets: every client gets 1012 within 1 s, then reconnects with its cookie to another replica', async (t) => {
  const { pods, px } = await setup(t)
  const victim = pods[1]!
  const cookies = await cookiesOn(px.tether.url, victim.id, N)
  const sockets = await Promise.all(cookies.map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const first = await Promise.all(sockets.map((ws) => roundTrip(ws, 'hi')))
  t.ok(first.every((r) => r.data.toString() === `${victim.id}:hi`), `all ${N} sockets are on ${victim.id}`)
  t.equal(px.upgrades.countByUpstream(victim.id), N)

  const closes = sockets.map((ws) => closed(ws))
  const killedAt = performance.now()
  await victim.kill('SIGKILL')
  const codes = await within(Promise.all(closes), 1000, `all ${N} clients closed within 1 s of the kill`)
  const elapsed = performance.now() - killedAt
  t.same(new Set(codes.map((c) => c.code)), new Set([1012]), 'every client saw close code 1012 (service restart)')
  t.ok(elapsed < 1000, `closed within 1 s (${elapsed.toFixed(0)} ms)`)
  t.equal(px.upgrades.countByUpstream(victim.id), 0, 'no tunnel left on the dead upstream')

  // reconnect with the same cookies: the first handshake finds the port refused (health ejects
  // it at once and the upgrade is retried on the key's next upstream); later ones skip it
  const again = await Promise.all(cookies.map(async (cookie) => {
    const ws = new WebSocket(px.wsUrl, { headers: { cookie } })
    const upgraded = new Promise<IncomingMessage>((resolve) => ws.once('upgrade', resolve))
    await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
    const res = await upgraded
    const info = JSON.parse((await roundTrip(ws, 'info')).data.toString()) as { id: string; headers: Record<string, string> }
    ws.close()
    await closed(ws)
    return { info, setCookie: String(res.headers['set-cookie'] ?? '') }
  }))
  t.ok(again.every((a) => a.info.id !== victim.id), 'every reconnect landed on another replica')
  t.same(new Set(again.map((a) => a.info.headers['x-tether-moved']?.replace(/; epoch=\d+/, ''))), new Set([`from=${victim.id}; reason=dead`]),
    'the upstream was told the user moved (X-Tether-Moved)')
  t.ok(again.every((a) => a.setCookie.startsWith('tether=')), 'the 101 re-issues the cookie naming the new upstream')
  t.equal(px.tether.health.state(victim.id), 'ejected')
})

t.test('health taking an upstream out (disable) closes its sockets with 1012; the others stay open', async (t) => {
  const { pods, px } = await setup(t)
  const [a, b] = [pods[0]!, pods[2]!]
  const onA = await Promise.all((await cookiesOn(px.tether.url, a.id, 5)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const onB = await Promise.all((await cookiesOn(px.tether.url, b.id, 5)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const closes = onA.map((ws) => closed(ws))
  px.tether.health.disable(a.id)
  const codes = await within(Promise.all(closes), 1000, 'clients of the disabled upstream closed')
  t.ok(codes.every((c) => c.code === 1012), 'all got 1012')
  const echoes = await Promise.all(onB.map((ws) => roundTrip(ws, 'still')))
  t.ok(echoes.every((e) => e.data.toString() === `${b.id}:still`), 'sockets on other upstreams are untouched')
  await waitFor(() => px.upgrades.size === onB.length, 2000, 'closed tunnels released') // polled: no release event
  t.equal(px.upgrades.countByUpstream(a.id), 0)
  for (const ws of onB) ws.close()
  await Promise.all(onB.map((ws) => closed(ws)))
})

t.test('a tunnel Tether closes (1012) frees its place at the client\'s answer (close frame, FIN), not at the end of the linger', async (t) => {
  // Tether's timers are fake and never advanced: the 2 s linger that destroys an ended socket
  // never comes, so only reading the client's FIN can release the tunnels. The pipe to the
  // gone upstream had left the client socket unread: each tunnel closed this way held its
  // descriptor and its websocket.max_connections place for the whole linger.
  const timers = new FakeTimers()
  const pods = await Promise.all(['app-0', 'app-1'].map((id) => startEchoPod(id)))
  const px = await startWsTether(pods.map((p) => ({ id: p.id, url: p.url })), {}, { timers })
  t.teardown(async () => {
    const closing = px.close()
    timers.advance(60_000)
    await closing
    await Promise.all(pods.map((p) => p.kill()))
  })
  const victim = pods[0]!
  const sockets = await Promise.all((await cookiesOn(px.tether.url, victim.id, 5)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const closes = sockets.map((ws) => closed(ws))
  px.tether.health.disable(victim.id)
  const codes = await within(Promise.all(closes), 5000, 'clients of the disabled upstream closed')
  t.ok(codes.every((c) => c.code === 1012), 'all got 1012')
  await waitFor(() => px.upgrades.size === 0, 5000, 'the tunnels released with no timer run') // polled: no release event
  t.pass('every place freed')
})

t.test('a drained upstream keeps its WebSockets until drain_timeout, then closes them with 1012 (its users move then, as its HTTP users do)', async (t) => {
  const pods = await Promise.all(['app-0', 'app-1', 'app-2'].map((id) => startEchoPod(id)))
  const px = await startWsTether(pods.map((p) => ({ id: p.id, url: p.url })), { affinity: { drain_timeout: 1_500 } })
  t.teardown(async () => {
    await px.close()
    await Promise.all(pods.map((p) => p.kill()))
  })
  const [a, b] = [pods[0]!, pods[2]!]
  const onA = await Promise.all((await cookiesOn(px.tether.url, a.id, 3)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const onB = await Promise.all((await cookiesOn(px.tether.url, b.id, 2)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const closes = onA.map((ws) => closed(ws))
  const drained = Date.now()
  px.tether.health.drain(a.id)
  const echoes = await Promise.all(onA.map((ws) => roundTrip(ws, 'during')))
  t.ok(echoes.every((e) => e.data.toString() === `${a.id}:during`), 'during the drain they stay open and served')
  const codes = await within(Promise.all(closes), 5_000, 'the drained upstream\'s sockets closed after drain_timeout')
  t.ok(Date.now() - drained >= 1_500, `not before drain_timeout (${Date.now() - drained} ms)`)
  t.ok(codes.every((c) => c.code === 1012), 'all got 1012')
  t.ok((await Promise.all(onB.map((ws) => roundTrip(ws, 'still')))).every((e) => e.data.toString() === `${b.id}:still`), 'sockets on other upstreams are untouched')
  for (const ws of onB) ws.close()
  await Promise.all(onB.map((ws) => closed(ws)))
})

t.test('with every upstream draining, drain_timeout closes no WebSocket (nobody has anywhere to move; a closed one would come straight back)', async (t) => {
  const pod = await startEchoPod('app-0')
  const px = await startWsTether([{ id: pod.id, url: pod.url }], { affinity: { drain_timeout: 300 } })
  t.teardown(async () => {
    await px.close()
    await pod.kill()
  })
  const ws = await openWs(px.wsUrl)
  let closedEarly = false
  void closed(ws).then(() => { closedEarly = true })
  const drained = Date.now()
  px.tether.health.drain(pod.id)
  // the upkeep runs every second: past drain_timeout and two of its rounds, still open and served
  await waitFor(() => Date.now() - drained > 2_500, 5_000, 'two upkeep rounds past drain_timeout')
  t.notOk(closedEarly, 'still open')
  t.equal((await roundTrip(ws, 'on')).data.toString(), `${pod.id}:on`)
  ws.close()
  await closed(ws)
})

t.test('shutdown: open sockets keep working through the grace period, then every one gets 1001 (going away)', async (t) => {
  const { pods, px } = await setup(t)
  const sockets = await Promise.all(Array.from({ length: 12 }, () => openWs(px.wsUrl)))
  t.equal(px.upgrades.size, 12)
  const closes = sockets.map((ws) => closed(ws))
  const stopped = px.tether.close(1000)
  t.ok((await roundTrip(sockets[0]!, 'x')).data.toString().endsWith(':x'), 'open sockets keep working during the grace period')
  const codes = await within(Promise.all(closes), 3000, 'all closed after the grace period')
  t.ok(codes.every((c) => c.code === 1001), 'all got 1001')
  await stopped
  t.ok(pods.length === 3)
})

t.test("a reload that gives an upstream id another address closes that id's WebSockets with 1012 (they reconnect to the new replica, where HTTP goes); the others stay open", async (t) => {
  const { pods, px } = await setup(t)
  const [a, b] = [pods[0]!, pods[2]!]
  const onA = await Promise.all((await cookiesOn(px.tether.url, a.id, 3)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const onB = await Promise.all((await cookiesOn(px.tether.url, b.id, 3)).map((cookie) => openWs(px.wsUrl, [], { headers: { cookie } })))
  const closes = onA.map((ws) => closed(ws))
  // the replica behind a.id is replaced by one at a new address (the old one still runs)
  const replacement = await startEchoPod(a.id)
  t.teardown(() => replacement.kill())
  px.tether.reload({ ...px.config, upstreams: px.config.upstreams.map((u) => u.id === a.id ? { ...u, url: replacement.url } : u) })
  const codes = await within(Promise.all(closes), 2_000, "the WebSockets of the replaced id to close")
  t.ok(codes.every((c) => c.code === 1012), 'all got 1012')
  const echoes = await Promise.all(onB.map((ws) => roundTrip(ws, 'still')))
  t.ok(echoes.every((e) => e.data.toString() === `${b.id}:still`), 'sockets on other upstreams are untouched')
  for (const ws of onB) ws.close()
  await Promise.all(onB.map((ws) => closed(ws)))
})
