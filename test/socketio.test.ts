// Socket.IO behind Tether: three replicas of examples/socketio/server.mjs (child processes),
// socket.io-client with default transports (polling, then the upgrade to WebSocket) and with
// polling only. Each client's requests must all reach the replica that holds its session
// (another would answer 400 "Session ID unknown", seen as connect_error or a disconnect).
import t from 'tap'
import { io, type ManagerOptions, type SocketOptions } from 'socket.io-client'
import { SOCKETIO_SERVER, startPod, startWsTether, type Pod } from './fixtures/ws-harness.js'
import { within } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

const CLIENTS = 30
const pods: Pod[] = await startAll(['io-0', 'io-1', 'io-2'].map((id) => startPod(id, SOCKETIO_SERVER, ['--id', id, '--port', '0'])))
t.teardown(() => Promise.all(pods.map((p) => p.kill())))
const upstreams = pods.map((p) => ({ id: p.id, url: p.url }))

interface Echo { replica: string; msg: number; count: number; transport: string }

/**
 * One client: connect, five acknowledged echoes, (default transports) wait for the upgrade to
 * WebSocket and five more. Rejects on connect_error or an unexpected disconnect.
 */
async function runClient(url: string, opts: Partial<ManagerOptions & SocketOptions>, expectUpgrade: boolean): Promise<Echo[] & { opened?: string }> {
  const socket = io(url, { forceNew: true, reconnection: false, timeout: 5000, ...opts })
  try {
    let failure: Error | null = null
    let opened = ''
    socket.io.once('open', () => { opened = socket.io.engine.transport.name })
    socket.on('disconnect', (reason) => { failure ??= new Error(`disconnected: ${reason}`) })
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve)
      socket.once('connect_error', (err) => reject(new Error(`connect_error: ${err.message}`)))
    })
    const echoes: Echo[] = []
    const five = async (): Promise<void> => {
      for (let i = 0; i < 5; i++) {
        echoes.push(await socket.timeout(5000).emitWithAck('echo', echoes.length + 1) as Echo)
        if (failure) throw failure
      }
    }
    await five()
    if (expectUpgrade) {
      const engine = socket.io.engine
      if (engine.transport.name !== 'websocket') {
        await within(new Promise<void>((resolve) => engine.once('upgrade', () => resolve())), 5000, 'upgrade to websocket')
      }
      await five()
    }
    if (failure) throw failure
    return Object.assign(echoes, { opened })
  } finally {
    socket.disconnect()
  }
}

/** Every client kept one replica and that replica's per-connection counter ran 1..n. */
function consistent(echoes: Echo[]): boolean {
  return echoes.every((e, i) => e.replica === echoes[0]!.replica && e.count === i + 1 && e.msg === i + 1)
}

t.test(`${CLIENTS} clients with default transports (polling, then WebSocket) through Tether, key: cookie`, async (t) => {
  const px = await startWsTether(upstreams)
  t.teardown(() => px.close())
  // Node's engine.io-client keeps cookies (its own jar) only with withCredentials: true
  const results = await Promise.all(Array.from({ length: CLIENTS }, () => runClient(px.tether.url, { withCredentials: true }, true)))
  t.equal(results.length, CLIENTS, 'every handshake succeeded (no connect_error)')
  t.ok(results.every(consistent), 'each client stayed on one replica; its per-connection state counted 1..10')
  t.ok(results.every((r) => r.opened === 'polling' && r.at(-1)!.transport === 'websocket'), 'each started on polling and upgraded to websocket on the same replica')
  t.ok(new Set(results.map((r) => r[0]!.replica)).size > 1, 'clients are spread over the replicas')
})

t.test(`${CLIENTS} clients with transports: ['polling'] only, key: cookie`, async (t) => {
  const px = await startWsTether(upstreams)
  t.teardown(() => px.close())
  const results = await Promise.all(Array.from({ length: CLIENTS }, () => runClient(px.tether.url, { withCredentials: true, transports: ['polling'] }, false)))
  t.equal(results.length, CLIENTS, 'every handshake succeeded')
  t.ok(results.every(consistent), 'every polling request of a client reached its replica')
  t.ok(results.every((r) => r.every((e) => e.transport === 'polling')))
  t.equal(px.upgrades.size, 0, 'no upgrade was attempted')
})

t.test('without a cookie jar, key: client_ip keeps a client\'s requests on one replica', async (t) => {
  const px = await startWsTether(upstreams, { affinity: { key: 'client_ip' } })
  t.teardown(() => px.close())
  const results = await Promise.all(Array.from({ length: 10 }, () => runClient(px.tether.url, {}, true)))
  t.ok(results.every(consistent))
})

t.test('for contrast: a plain round-robin proxy (affinity key: none) breaks Socket.IO sessions', async (t) => {
  const px = await startWsTether(upstreams, { affinity: { key: 'none' } })
  t.teardown(() => px.close())
  for (let i = 0; i < 3; i++) {
    // one client at a time: round robin sends its second request to another replica
    const err = await runClient(px.tether.url, { transports: ['polling'] }, false).then(() => null, (e: Error) => e)
    t.ok(err !== null, `client ${i} failed: ${err?.message}`)
  }
})
