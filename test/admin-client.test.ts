// The CLI's admin client (`tether drain`, `tether session`) against servers that are not the
// admin API (an operator giving the proxy port, or an app's): a clear error and exit 1, never
// "draining" and exit 0, never a crash; and a token that is not ASCII, sent as the admin API
// compares it (its UTF-8 bytes).
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { drainUpstream, showSession } from '../src/admin/admin-client.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'

const DRAIN = { migrate: false, wait: true, timeout: 2_000, poll: 50 }

t.test('a 2xx answer that is not the admin API: drain and session exit 1 and say so', async (t) => {
  for (const [name, body] of [['JSON', '{"ok":true}'], ['an app page', '<html>hello</html>']] as const) {
    const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end(body)).listen(0, '127.0.0.1')
    await new Promise((r) => server.once('listening', r))
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    const drain = await drainUpstream({ url, token: null }, 'app-0', DRAIN)
    t.equal(drain.code, 1, `${name}: drain exits 1`)
    t.match(drain.err, /is not the Tether admin API's/, `${name}: and says why`)
    t.equal(drain.out, '', `${name}: it never says "draining"`)
    const session = await showSession({ url, token: null }, 'u1', false)
    t.equal(session.code, 1, `${name}: session exits 1`)
    t.match(session.err, /is not the Tether admin API's/)
    await new Promise((r) => server.close(r))
  }
})

t.test('an admin token that is not ASCII authenticates from the CLI as from curl (its UTF-8 bytes)', async (t) => {
  const up = await startUpstream('app-0')
  for (const token of ['sécret-token', 'jeton-€-42']) {
    const tether = await startTether(testConfig([up], { admin: { token } }), { logger: createLogger('silent') })
    const drain = await drainUpstream({ url: tether.adminUrl, token }, 'app-0', { ...DRAIN, wait: false })
    t.same([drain.code, drain.out], [0, 'app-0: draining\n'], `${token}: accepted`)
    const wrong = await drainUpstream({ url: tether.adminUrl, token: `${token}x` }, 'app-0', { ...DRAIN, wait: false })
    t.equal(wrong.code, 1, `${token}: a wrong one is still refused`)
    await tether.close(0)
  }
  await up.close()
})

t.test('drain --wait keeps to --timeout when the admin API stops answering its looks', async (t) => {
  const held: http.ServerResponse[] = []
  const server = http.createServer((req, res) => {
    if (req.method === 'POST') res.writeHead(200, { 'content-type': 'application/json' }).end('{"id":"app-0","draining":true}')
    else held.push(res) // GET /upstreams: never answered (a frozen admin listener)
  }).listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => { for (const res of held) res.destroy(); server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const started = Date.now()
  const drain = await drainUpstream({ url, token: null }, 'app-0', { ...DRAIN, timeout: 300 })
  t.equal(drain.code, 0, 'a preStop hook never fails the shutdown')
  t.match(drain.out, /app-0: deadline passed, admin API: the admin API at .* did not answer within 1 s/)
  // bounded by the 300 ms budget, not by the 5 s a single admin call may take
  t.ok(Date.now() - started < 4_000, `returned after ${Date.now() - started} ms`)
})
