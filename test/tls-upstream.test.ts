// https:// upstreams: a real node:https upstream requiring a client certificate (mTLS), with
// certificates made at test time. Requests, health probes and WebSocket handshakes use the
// upstream's tls settings (ca, servername, cert/key, verify); a failed handshake is a 502.
import t, { type Test } from 'tap'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { WebSocketServer } from 'ws'
import { startTether, type Tether } from '../src/app.js'
import type { UpstreamTlsConfig } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificates, makeCertificateSet, type PemPair } from './fixtures/tls.js'
import { request, testConfig, type DeepPartial } from './fixtures/upstream.js'
import type { Config } from '../src/config/schema.js'
import { openWs, roundTrip } from './fixtures/ws-harness.js'
import { waitFor } from './fixtures/wait.js'

const certs = makeCertificateSet()
t.teardown(() => certs.remove())

interface HttpsUpstream {
  readonly url: string
  readonly port: number
  readonly seen: { path: string; clientCert: string | null; authorized: boolean }[]
  /** The SNI of each TLS connection made to it, in order (false: none sent). */
  readonly sni: (string | false)[]
}

/** An https upstream serving `pair`, requiring a client certificate signed by the test CA when `mtls`; `closeEach`: `Connection: close` on every answer. */
async function httpsUpstream(t: Test, pair: PemPair, mtls: boolean, closeEach = false): Promise<HttpsUpstream> {
  const seen: HttpsUpstream['seen'] = []
  const sni: HttpsUpstream['sni'] = []
  const server = https.createServer({ cert: pair.cert, key: pair.key, ca: certs.ca, requestCert: mtls, rejectUnauthorized: mtls }, (req, res) => {
    const socket = req.socket as TLSSocket
    const peer = socket.getPeerCertificate()
    seen.push({ path: req.url ?? '', clientCert: (peer.subject?.CN as string | undefined) ?? null, authorized: socket.authorized })
    res.setHeader('content-type', 'application/json')
    if (closeEach) res.setHeader('connection', 'close')
    res.end(JSON.stringify({ id: 'secure-0', proto: req.headers['x-forwarded-proto'] }))
  })
  server.on('secureConnection', (socket: TLSSocket) => sni.push((socket as TLSSocket & { servername?: string | false }).servername || false))
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    const socket = req.socket as TLSSocket
    seen.push({ path: `ws ${req.url ?? ''}`, clientCert: (socket.getPeerCertificate().subject?.CN as string | undefined) ?? null, authorized: socket.authorized })
    ws.on('message', (d: Buffer) => ws.send(`tls:${d.toString()}`))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => { wss.close(); server.closeAllConnections(); server.close(() => r()) }))
  const port = (server.address() as AddressInfo).port
  return { url: `https://127.0.0.1:${port}`, port, seen, sni }
}

const CLIENT: Partial<UpstreamTlsConfig> = { ca: certs.caFile, cert: certs.client.certFile, key: certs.client.keyFile }

async function tetherFor(t: Test, url: string, tls: Partial<UpstreamTlsConfig>, over: DeepPartial<Config> = {}, logs?: LogCapture): Promise<Tether> {
  const full: UpstreamTlsConfig = { ca: null, servername: null, cert: null, key: null, verify: true, ...tls }
  const tether = await startTether(testConfig([{ id: 'secure-0', url, weight: 1, tls: full }], { retries: { attempts: 0 }, ...over }), {
    logger: logs === undefined ? createLogger('silent') : createLogger('info', logs),
  })
  t.teardown(() => tether.close(0))
  return tether
}

t.test('a request reaches an https:// upstream that requires a client certificate, sent by Tether (mTLS)', async (t) => {
  const up = await httpsUpstream(t, certs.server, true)
  const tether = await tetherFor(t, up.url, CLIENT)
  const r = await request(`${tether.url}/account`)
  t.equal(r.status, 200, r.body)
  t.same(JSON.parse(r.body), { id: 'secure-0', proto: 'http' })
  t.match(r.headers['set-cookie'], [/^tether=/], 'sticky routing works as for http:// upstreams')
  t.same(up.seen, [{ path: '/account', clientCert: 'client', authorized: true }])
})

t.test('without the client certificate the upstream refuses the handshake: 502, not a hang', async (t) => {
  const up = await httpsUpstream(t, certs.server, true)
  const tether = await tetherFor(t, up.url, { ca: certs.caFile })
  const r = await request(`${tether.url}/`)
  t.equal(r.status, 502)
  t.same(up.seen, [])
})

// (a Node upstream refuses a TLS 1.3 client certificate from another CA with no alert, by closing
// the connection after its handshake: as a crash on the request would, so that is a reset)
for (const [version, sent] of [['TLSv1.3', 'none'], ['TLSv1.2', 'another CA\'s']] as const) {
  t.test(`an upstream (${version}) refusing Tether's client certificate (${sent}) is a connection failure: said so, and even a POST goes to the next upstream`, async (t) => {
    // TLS 1.3 refuses a client certificate only after the client's handshake ended: the
    // upstream's alert comes where an answer would, and undici reports the connection's end
    // after it ("other side closed"), not the alert
    let secureSeen = 0
    const secure = https.createServer({ cert: certs.server.cert, key: certs.server.key, ca: certs.ca, requestCert: true, rejectUnauthorized: true, minVersion: version, maxVersion: version }, (_q, res) => { secureSeen++; res.end('secure') })
    const plain = http.createServer((_q, res) => res.end('plain'))
    for (const s of [secure, plain]) {
      await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
      t.teardown(() => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()) }))
    }
    let tls: UpstreamTlsConfig = { ca: certs.caFile, servername: null, cert: null, key: null, verify: true }
    if (sent !== 'none') {
      const other = makeCertificates()
      const [cert, key] = [join(certs.dir, 'other-ca.crt'), join(certs.dir, 'other-ca.key')]
      writeFileSync(cert, other.cert)
      writeFileSync(key, other.key)
      tls = { ...tls, cert, key }
    }
    const logs = new LogCapture()
    const secureUp = { id: 'secure-0', url: `https://127.0.0.1:${(secure.address() as AddressInfo).port}`, weight: 1, tls }
    const tether = await startTether(testConfig([secureUp, { id: 'plain-1', url: `http://127.0.0.1:${(plain.address() as AddressInfo).port}`, weight: 1, tls: null }],
      { affinity: { key: 'none' }, retries: { attempts: 1 } }), { logger: createLogger('debug', logs) })
    t.teardown(() => tether.close(0))
    // round robin: one of the two goes to secure-0 first
    for (let i = 0; i < 2; i++) {
      const r = await request(`${tether.url}/`, { method: 'POST', body: 'x' })
      t.equal(r.status, 200, `POST ${i}: ${r.body}`)
      t.equal(r.body, 'plain')
    }
    t.same(logs.records.filter((r) => r['msg'] === 'retrying on the next upstream').map((r) => [r['upstream'], r['code']]), [['secure-0', 'TETHER_UPSTREAM_CONNECT']], 'retried as a connection that failed')
    // alone, the answer and the log say what happened
    const aloneLogs = new LogCapture()
    const alone = await startTether(testConfig([secureUp], { retries: { attempts: 0 } }), { logger: createLogger('info', aloneLogs) })
    t.teardown(() => alone.close(0))
    t.match((await request(`${alone.url}/`, { method: 'POST', body: 'x' })).body, /^Bad Gateway: upstream connection failed/)
    const failed = aloneLogs.records.filter((r) => r['msg'] === 'upstream exchange failed')
    t.equal(failed.length, 1)
    t.equal(failed[0]?.['code'], 'TETHER_UPSTREAM_CONNECT')
    if (version === 'TLSv1.3') t.match(JSON.stringify(failed[0]?.['err']), /ERR_SSL_(TLSV13_ALERT_CERTIFICATE_REQUIRED|TLSV1_ALERT_UNKNOWN_CA)/, 'the log names the upstream\'s TLS alert')
    t.equal(secureSeen, 0, 'the upstream\'s application never saw a request')
  })
}

t.test('an upstream certificate from an unknown CA, for another name, or expired is refused; servername names the right one', async (t) => {
  const up = await httpsUpstream(t, certs.server, false)
  const noCa = await tetherFor(t, up.url, {})
  t.equal((await request(`${noCa.url}/`)).status, 502, 'the test CA is not among Node\'s roots')

  const wrong = await httpsUpstream(t, certs.wrongHost, false)
  const byIp = await tetherFor(t, wrong.url, { ca: certs.caFile })
  t.equal((await request(`${byIp.url}/`)).status, 502, 'a certificate for wrong.example does not serve 127.0.0.1')
  const named = await tetherFor(t, wrong.url, { ca: certs.caFile, servername: 'wrong.example' })
  t.equal((await request(`${named.url}/`)).status, 200, 'servername: wrong.example checks the name the certificate has')

  const expired = await httpsUpstream(t, certs.expired, false)
  const strict = await tetherFor(t, expired.url, { ca: certs.caFile })
  t.equal((await request(`${strict.url}/`)).status, 502, 'an expired certificate is refused')
  // each said as what it is: a connection that failed before any byte of the request was sent
  // (retried elsewhere even for a POST), not "the upstream closed the connection"
  for (const [name, tt] of [['unknown CA', noCa], ['another name', byIp], ['expired', strict]] as const) {
    t.match((await request(`${tt.url}/`, { method: 'POST', body: 'x' })).body, /^Bad Gateway: upstream connection failed/, name)
  }
})

t.test('verify: false takes any certificate, and says so loudly at start-up', async (t) => {
  const up = await httpsUpstream(t, certs.expired, false)
  const logs = new LogCapture()
  const tether = await tetherFor(t, up.url, { verify: false }, {}, logs)
  t.equal((await request(`${tether.url}/`)).status, 200)
  const warning = logs.records.find((r) => String(r['msg']).startsWith('INSECURE'))
  t.ok(warning, 'a warning names the unverified upstreams')
  t.same(warning?.['upstreams'], ['secure-0'])
  t.equal(warning?.['level'], 40)
})

t.test('health probes of an https:// upstream use its TLS settings (the client certificate too)', async (t) => {
  const up = await httpsUpstream(t, certs.server, true)
  const tether = await tetherFor(t, up.url, CLIENT, { health: { active: { path: '/healthz', interval: 200, timeout: 1_000 } } })
  await waitFor(() => up.seen.some((s) => s.path === '/healthz'), 5_000, 'a probe to reach the upstream')
  t.same(up.seen.find((s) => s.path === '/healthz'), { path: '/healthz', clientCert: 'client', authorized: true })
  t.equal(tether.health.state('secure-0'), 'healthy')
})

t.test('a WebSocket reaches an https:// upstream with its TLS settings (wss to the upstream, mTLS)', async (t) => {
  const up = await httpsUpstream(t, certs.server, true)
  const tether = await tetherFor(t, up.url, CLIENT)
  const ws = await openWs(`${tether.url.replace('http://', 'ws://')}/socket`)
  t.equal((await roundTrip(ws, 'ping')).data.toString(), 'tls:ping')
  ws.close()
})

/**
 * A client pair laid out as Kubernetes mounts a Secret: `dir/tls.crt` -> `..data/tls.crt`,
 * `..data` -> `..<version>/`; `install` swaps `..data` in one rename, as the kubelet does when
 * cert-manager renews the Secret.
 */
function secretMount(t: Test, first: PemPair): { cert: string; key: string; install(pair: { cert: string; key: string }): void } {
  const dir = mkdtempSync(join(tmpdir(), 'tether-secret-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  let n = 0
  const install = (pair: { cert: string; key: string }): void => {
    const version = `..v${++n}`
    mkdirSync(join(dir, version))
    writeFileSync(join(dir, version, 'tls.crt'), pair.cert)
    writeFileSync(join(dir, version, 'tls.key'), pair.key)
    symlinkSync(version, join(dir, '..data_tmp'))
    renameSync(join(dir, '..data_tmp'), join(dir, '..data'))
  }
  install(first)
  symlinkSync('..data/tls.crt', join(dir, 'tls.crt'))
  symlinkSync('..data/tls.key', join(dir, 'tls.key'))
  return { cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key'), install }
}

t.test('a client certificate renewed in place is presented from the next connection on: requests, probes and WebSocket handshakes, no reload', async (t) => {
  const up = await httpsUpstream(t, certs.server, true, true)
  const mount = secretMount(t, certs.client)
  const logs = new LogCapture()
  const tether = await tetherFor(t, up.url, { ca: certs.caFile, cert: mount.cert, key: mount.key }, { health: { active: { path: '/healthz', interval: 100, timeout: 1_000 } } }, logs)
  t.equal((await request(`${tether.url}/before`)).status, 200)
  const ws = await openWs(`${tether.url.replace('http://', 'ws://')}/socket-before`)
  ws.close()
  await waitFor(() => up.seen.some((s) => s.path === '/healthz'), 5_000, 'a probe')
  t.same(new Set(up.seen.map((s) => s.clientCert)), new Set(['client']))

  const renewed = certs.issue('renewed', 'DNS:client.example')
  mount.install(renewed)
  // the upstream closes each connection after its answer: the next request makes a new one
  t.equal((await request(`${tether.url}/after`)).status, 200)
  // (a health probe may come between: find the request by its path)
  t.same(up.seen.findLast((s) => s.path === '/after'), { path: '/after', clientCert: 'renewed', authorized: true }, 'a request presents the renewed certificate')
  const ws2 = await openWs(`${tether.url.replace('http://', 'ws://')}/socket-after`)
  t.equal((await roundTrip(ws2, 'ping')).data.toString(), 'tls:ping')
  ws2.close()
  t.same(up.seen.findLast((s) => s.path === 'ws /socket-after'), { path: 'ws /socket-after', clientCert: 'renewed', authorized: true }, 'so does a WebSocket handshake')
  await waitFor(() => up.seen.some((s) => s.path === '/healthz' && s.clientCert === 'renewed'), 5_000, 'a probe presenting the renewed certificate')
  t.equal(logs.records.filter((r) => r['msg'] === 'upstream TLS files changed: new connections to it use them').length, 1, 'one line says so')
})

t.test('renewed files that do not make a pair keep the last good ones (logged) until they do', async (t) => {
  const up = await httpsUpstream(t, certs.server, true, true)
  const mount = secretMount(t, certs.client)
  const logs = new LogCapture()
  const tether = await tetherFor(t, up.url, { ca: certs.caFile, cert: mount.cert, key: mount.key }, {}, logs)
  const renewed = certs.issue('renewed2', 'DNS:client.example')
  mount.install({ cert: renewed.cert, key: certs.client.key }) // a certificate without its key
  t.equal((await request(`${tether.url}/mismatch`)).status, 200, 'requests go on with the previous pair')
  t.equal(up.seen.findLast((s) => s.path === '/mismatch')?.clientCert, 'client')
  const warning = logs.records.find((r) => r['msg'] === 'upstream TLS files changed but cannot be used: new connections to it keep the previous ones')
  t.match(warning, { level: 40, upstream: 'secure-0', err: /does not belong/ })
  mount.install(renewed)
  t.equal((await request(`${tether.url}/fixed`)).status, 200)
  t.same(up.seen.findLast((s) => s.path === '/fixed'), { path: '/fixed', clientCert: 'renewed2', authorized: true }, 'the good pair is used once it is there')
})

// The SNI and the name the upstream's certificate is checked against are the upstream's (its
// configured servername, else its URL's host name), never the Host the client sent: undici
// takes them from the request's Host header unless told otherwise.
t.test('the TLS name of an https:// upstream is its URL\'s host name, whatever Host the client sends', async (t) => {
  const up = await httpsUpstream(t, certs.server, false) // a certificate for localhost and 127.0.0.1
  const tether = await tetherFor(t, `https://localhost:${up.port}`, { ca: certs.caFile })
  const shop = await request(`${tether.url}/cart`, { headers: { host: 'shop.example' } })
  t.equal(shop.status, 200, 'a Host the certificate does not name is no 502')
  t.same(up.sni, ['localhost'], 'SNI is the URL\'s host name, not shop.example')
  const other = await request(`${tether.url}/cart`, { headers: { host: 'other.example' } })
  t.equal(other.status, 200)
  t.same(up.sni, ['localhost'], 'another Host reuses the kept-alive connection (no reconnect per Host)')
})

t.test('a configured servername is the TLS name whatever Host the client sends', async (t) => {
  const up = await httpsUpstream(t, certs.wrongHost, false) // a certificate for wrong.example only
  const tether = await tetherFor(t, up.url, { ca: certs.caFile, servername: 'wrong.example' })
  for (const host of ['shop.example', 'localhost', '127.0.0.1', `127.0.0.1:${up.port}`, 'wrong.example']) {
    const r = await request(`${tether.url}/`, { headers: { host } })
    t.equal(r.status, 200, `Host: ${host}`)
  }
  t.same(up.sni, ['wrong.example'], 'one connection, named wrong.example')

  const unverified = await httpsUpstream(t, certs.server, false)
  const insecure = await tetherFor(t, unverified.url, { verify: false, servername: 'internal.example' })
  t.equal((await request(`${insecure.url}/`, { headers: { host: 'attacker.example' } })).status, 200)
  t.same(unverified.sni, ['internal.example'], 'verify: false still sends the configured name')
})

t.test('an https:// upstream at an IP address without servername sends no SNI, whatever Host the client sends', async (t) => {
  const up = await httpsUpstream(t, certs.server, false) // names IP:127.0.0.1
  const tether = await tetherFor(t, up.url, { ca: certs.caFile })
  const r = await request(`${tether.url}/`, { headers: { host: 'shop.example' } })
  t.equal(r.status, 200, 'checked against the address, not shop.example')
  t.equal((await request(`${tether.url}/`, { headers: { host: 'localhost' } })).status, 200)
  t.same(up.sni, [false], 'no SNI (RFC 6066 section 3: names only), one connection')
})
