// The request path's own failures (a bug, injected here) never end the process nor leave a
// client unanswered: a throw while answering a throw is an unhandled rejection (which
// `tether run` logs and survives), not an uncaught exception (which ends it); an attempt whose
// `done` rejects (a transport breaking its contract) is answered TETHER_INTERNAL (500). Both
// held while the request path was one async function, and were lost when a plain request
// stopped entering one (review R4, 2026-12-05). Real Tether and upstream on loopback.
import t from 'tap'
import type { Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import pino from 'pino'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { testConfig, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

/** What reaches the process's handlers while `fn` runs (the test's own handlers only: tap's stay). */
async function caught(t: Test, fn: () => Promise<void>): Promise<string[]> {
  const seen: string[] = []
  const onException = (err: Error) => { seen.push(`uncaughtException: ${err.message}`) }
  const onRejection = (err: unknown) => { seen.push(`unhandledRejection: ${(err as Error).message}`) }
  process.prependListener('uncaughtException', onException)
  process.prependListener('unhandledRejection', onRejection)
  t.teardown(() => { process.off('uncaughtException', onException); process.off('unhandledRejection', onRejection) })
  await fn()
  // both are reported before the next macrotasks after the request's handler ran
  await new Promise((r) => setImmediate(r))
  await new Promise((r) => setImmediate(r))
  return seen
}

t.test('a throw while answering a throw (the access line fails on a request refused from its head) is an unhandled rejection, not an uncaught exception', async (t) => {
  const logger = pino({
    level: 'info',
    hooks: {
      logMethod(args, method) {
        if (args[1] === 'access') throw new Error('injected: the access line failed')
        method.apply(this, args as Parameters<typeof method>)
      },
    },
  }, pino.destination('/dev/null'))
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: 'app-0', url: up.url }]), { logger: logger as never })
  t.teardown(() => tether.close(0))
  let status = 0
  const seen = await caught(t, async () => {
    status = await new Promise<number>((resolve) => {
      const req = http.request(`${tether.url}/`, { method: 'TRACE', agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
      req.on('error', () => resolve(-1))
      req.end()
    })
  })
  t.equal(status, 405, 'the refusal was answered')
  t.ok(seen.length > 0 && seen.every((s) => s.startsWith('unhandledRejection: injected')), `an unhandled rejection, no uncaught exception: ${JSON.stringify(seen)}`)
})

t.test("an attempt whose transport fails (a bug: it reports a failure, not a result) is answered 500 TETHER_INTERNAL, not left unanswered", async (t) => {
  const up = await startUpstream('app-0')
  t.teardown(() => up.close())
  const tether = await startTether(testConfig([{ id: 'app-0', url: up.url }]), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const upgrades = tether.upgrades as unknown as { exchange: (s: unknown, h: unknown) => Record<string, unknown> | null }
  const exchange = upgrades.exchange.bind(upgrades)
  upgrades.exchange = (s, h) => {
    const x = exchange(s, h)
    // (told a microtask later, as Attempt.onEnd promises)
    if (x !== null) x['attempt'] = () => ({ answered: false, stop: () => undefined, onEnd: (watcher: { failed: (err: unknown) => void }) => void Promise.reject(new Error('injected: transport failed')).catch((err: unknown) => watcher.failed(err)) })
    return x
  }
  let got = ''
  const seen = await caught(t, async () => {
    const sock = net.connect(tether.port, '127.0.0.1')
    t.teardown(() => sock.destroy())
    sock.on('data', (c: Buffer) => { got += c.toString('latin1') })
    sock.on('error', () => undefined)
    sock.write('GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    await waitFor(() => got.includes('\r\n'), 3_000, 'the handshake answered')
  })
  t.equal(got.split('\r\n')[0], 'HTTP/1.1 500 Internal Server Error')
  t.same(seen, [], 'nothing unhandled')
})

t.test('a request tried on 11 upstreams (retries.attempts: 10) leaves no listener per attempt on its response: no MaxListenersExceededWarning', async (t) => {
  // closed ports: listen, note the port, close
  const ports: number[] = []
  for (let i = 0; i < 11; i++) {
    const s = net.createServer().listen(0, '127.0.0.1')
    await new Promise((r) => s.once('listening', r))
    ports.push((s.address() as net.AddressInfo).port)
    await new Promise((r) => s.close(r))
  }
  const warnings: string[] = []
  const onWarning = (w: Error) => { warnings.push(`${w.name}: ${w.message}`) }
  process.on('warning', onWarning)
  t.teardown(() => { process.off('warning', onWarning) })
  const tether = await startTether(testConfig(ports.map((p, i) => ({ id: `app-${i}`, url: `http://127.0.0.1:${p}` })), { retries: { attempts: 10 } } as never), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const status = await new Promise<number>((resolve) => {
    http.get(`${tether.url}/`, { agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) }).on('error', () => resolve(-1))
  })
  t.equal(status, 502, 'every upstream refused: 502')
  await new Promise((r) => setImmediate(r))
  t.same(warnings.filter((w) => w.includes('MaxListeners')), [], 'no listener leak warning')
})
