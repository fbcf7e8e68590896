// The TLS listener (listen.tls): real clients (curl --http1.1, node:tls, node:https, ws) against
// certificates made at test time; SNI, min_version, session resumption, X-Forwarded-Proto,
// WebSockets over TLS, and certificate rotation (new handshakes get the new certificate, open
// connections stay, a broken file is refused and the old certificate keeps serving).
import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { renameSync, symlinkSync, writeFileSync, mkdirSync, rmSync } from 'node:fs'
import https from 'node:https'
import { join } from 'node:path'
import tls from 'node:tls'
import net from 'node:net'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { makeCertificateSet, type CertificateSet, type PemPair } from './fixtures/tls.js'
import { startUpstream, testConfig, type DeepPartial } from './fixtures/upstream.js'
import type { Config } from '../src/config/schema.js'
import { startEchoPod, openWs, roundTrip } from './fixtures/ws-harness.js'
import { once, waitFor } from './fixtures/wait.js'

const certs: CertificateSet = makeCertificateSet()
t.teardown(() => certs.remove())

/** Tether with TLS from `pair`'s files (HTTP/2 off unless asked: these are HTTP/1.1 tests). */
async function tlsTether(t: Test, over: DeepPartial<Config> = {}, logs?: LogCapture): Promise<{ tether: Tether; up: Awaited<ReturnType<typeof startUpstream>> }> {
  const up = await startUpstream('app-0', (req, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ proto: req.headers['x-forwarded-proto'], host: req.headers.host }))
  })
  const config = testConfig([up], {
    ...over,
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, http2: { enabled: false }, ...over.listen },
  })
  const tether = await startTether(config, { logger: logs === undefined ? createLogger('silent') : createLogger('debug', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  return { tether, up }
}

function curl(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('curl', ['-sS', '--max-time', '10', ...args], (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : (err as { code?: number }).code ?? 1, stdout, stderr })
    })
  })
}

/** One TLS handshake; the certificate presented, the version, and whether the session was resumed. */
function handshake(port: number, opts: tls.ConnectionOptions = {}): Promise<{ cert: tls.PeerCertificate; version: string | null; reused: boolean; session: Buffer | undefined; socket: tls.TLSSocket }> {
  return new Promise((resolve, reject) => {
    let session: Buffer | undefined
    const socket = tls.connect({ host: '127.0.0.1', port, ca: certs.ca, servername: 'localhost', ...opts }, () => {
      // TLS 1.3 tickets arrive after the handshake: wait for one (or a short read) before handing the session on
      const done = (): void => resolve({ cert: socket.getPeerCertificate(), version: socket.getProtocol(), reused: socket.isSessionReused(), session: session ?? socket.getSession(), socket })
      socket.resume() // the ticket is read like data
      if (socket.getProtocol() === 'TLSv1.3' && session === undefined && opts.session === undefined) socket.once('session', (s: Buffer) => { session = s; done() })
      else done()
    })
    socket.on('session', (s: Buffer) => { session = s })
    socket.once('error', reject)
  })
}

const serialOf = (pem: string): string => new X509Certificate(pem).serialNumber

t.test('curl --http1.1 gets the answer over TLS, and the upstream sees X-Forwarded-Proto: https', async (t) => {
  const { tether } = await tlsTether(t)
  t.match(tether.url, /^https:\/\/127\.0\.0\.1:\d+$/)
  const r = await curl(['--http1.1', '--cacert', certs.caFile, '-D', '-', `${tether.url}/x`])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^HTTP\/1\.1 200/)
  t.match(r.stdout, /"proto":"https"/)
  t.match(r.stdout, /set-cookie: tether=/i, 'the sticky cookie is issued over TLS too')
})

t.test('a client that does not trust the CA, or asks for another name, refuses the certificate', async (t) => {
  const { tether } = await tlsTether(t)
  const untrusted = await curl(['--http1.1', `${tether.url}/`])
  t.equal(untrusted.code, 60, 'curl: peer certificate cannot be authenticated')
  const wrongName = await curl(['--http1.1', '--cacert', certs.caFile, '--resolve', `wrong.example:${tether.port}:127.0.0.1`, `https://wrong.example:${tether.port}/`])
  t.equal(wrongName.code, 60, 'the default certificate does not name wrong.example')
})

t.test('SNI picks the certificate naming the host the client asks for; anything else gets the default one', async (t) => {
  const { tether } = await tlsTether(t, { listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [{ cert: certs.api.certFile, key: certs.api.keyFile }], min_version: 'TLSv1.2', hsts: null } } })
  const api = await handshake(tether.port, { servername: 'api.example' })
  t.equal(api.cert.serialNumber, serialOf(certs.api.cert), 'api.example gets its own certificate')
  api.socket.destroy()
  const other = await handshake(tether.port, { servername: 'localhost' })
  t.equal(other.cert.serialNumber, serialOf(certs.server.cert))
  other.socket.destroy()
  const r = await curl(['--http1.1', '--cacert', certs.caFile, '--resolve', `api.example:${tether.port}:127.0.0.1`, `https://api.example:${tether.port}/`])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /"host":"api.example:\d+"/)
})

t.test('min_version refuses older clients; the default takes TLS 1.2', async (t) => {
  const { tether } = await tlsTether(t)
  const v12 = await handshake(tether.port, { maxVersion: 'TLSv1.2' })
  t.equal(v12.version, 'TLSv1.2', 'TLS 1.2 is accepted by default')
  v12.socket.destroy()
  const { tether: strict } = await tlsTether(t, { listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.3', hsts: null } } })
  await t.rejects(handshake(strict.port, { maxVersion: 'TLSv1.2' }), /protocol|version/i, 'a TLS 1.2 client is refused with min_version TLSv1.3')
  const v13 = await handshake(strict.port)
  t.equal(v13.version, 'TLSv1.3')
  v13.socket.destroy()
})

t.test('a TLS 1.2 client\'s renegotiation is refused (default and SNI certificates), as nginx refuses it: each would cost a full handshake on a connection Tether already holds', async (t) => {
  const { tether } = await tlsTether(t, { listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [{ cert: certs.api.certFile, key: certs.api.keyFile }], min_version: 'TLSv1.2', hsts: null } } })
  for (const servername of ['localhost', 'api.example']) {
    const first = await handshake(tether.port, { servername, maxVersion: 'TLSv1.2' })
    const outcome = await new Promise<string>((resolve) => {
      first.socket.once('error', (err) => resolve(err.message))
      first.socket.renegotiate({}, (err) => resolve(err === null ? 'renegotiated' : err.message))
    })
    t.match(outcome, /no renegotiation/i, `${servername}: refused`)
    first.socket.destroy()
  }
})

t.test('a second connection resumes the first one\'s TLS session (TLS 1.2 and 1.3)', async (t) => {
  const { tether } = await tlsTether(t)
  for (const maxVersion of ['TLSv1.2', 'TLSv1.3'] as const) {
    const first = await handshake(tether.port, { maxVersion })
    first.socket.destroy()
    t.ok(first.session, `${maxVersion}: a session ticket arrived`)
    const second = await handshake(tether.port, { maxVersion, session: first.session })
    t.ok(second.reused, `${maxVersion}: the session was resumed`)
    second.socket.destroy()
  }
})

t.test('WebSockets work over the TLS listener (an HTTP/1.1 upgrade on the port that also offers h2)', async (t) => {
  const pod = await startEchoPod('ws-0')
  t.teardown(() => pod.kill())
  const config = testConfig([pod], { listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null } } })
  const tether = await startTether(config, { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  t.equal(config.listen.http2.enabled, true, 'with HTTP/2 offered by ALPN too')
  const ws = await openWs(`${tether.url.replace('https://', 'wss://')}/chat`, [], { ca: certs.ca })
  const echo = await roundTrip(ws, 'hello over tls')
  t.equal(echo.data.toString(), 'ws-0:hello over tls')
  ws.close()
})

/** A directory laid out as Kubernetes mounts a Secret: tls.crt -> ..data/tls.crt, ..data -> ..<version>. */
function secretDir(root: string, pair: PemPair, version: number): void {
  const dir = join(root, `..v${version}`)
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, 'tls.crt'), pair.cert)
  writeFileSync(join(dir, 'tls.key'), pair.key)
  // the atomic swap the kubelet does: a new ..data symlink renamed over the old one
  symlinkSync(`..v${version}`, join(root, '..data_tmp'))
  renameSync(join(root, '..data_tmp'), join(root, '..data'))
}

/** Tether serving the certificate mounted at `root` as a Secret. */
async function secretTether(t: Test, root: string, logs: LogCapture): Promise<Tether> {
  secretDir(root, certs.server, 1)
  symlinkSync('..data/tls.crt', join(root, 'tls.crt'))
  symlinkSync('..data/tls.key', join(root, 'tls.key'))
  const { tether } = await tlsTether(t, { listen: { tls: { cert: join(root, 'tls.crt'), key: join(root, 'tls.key'), certificates: [], min_version: 'TLSv1.2', hsts: null } } }, logs)
  return tether
}

t.test('a renewed certificate (the Secret\'s symlink swapped) serves new handshakes; an open connection keeps working', async (t) => {
  const root = join(certs.dir, 'secret-renew')
  const logs = new LogCapture()
  const tether = await secretTether(t, root, logs)
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: certs.ca })
  t.teardown(() => agent.destroy())
  const get = (): Promise<{ status: number; serial: string }> => new Promise((resolve, reject) => {
    https.get(`${tether.url}/`, { agent }, (res) => {
      const serial = (res.socket as tls.TLSSocket).getPeerCertificate().serialNumber
      res.resume().on('end', () => resolve({ status: res.statusCode ?? 0, serial }))
    }).on('error', reject)
  })
  const before = await get()
  t.equal(before.serial, serialOf(certs.server.cert))

  const renewed = certs.issue('renewed')
  secretDir(root, renewed, 2)
  await waitForMessage(logs, 'TLS certificates reloaded')
  const fresh = await handshake(tether.port)
  t.equal(fresh.cert.serialNumber, serialOf(renewed.cert), 'a new handshake gets the renewed certificate')
  fresh.socket.destroy()
  const kept = await get()
  t.equal(kept.status, 200, 'the keep-alive connection opened before the renewal still answers')
  t.equal(kept.serial, serialOf(certs.server.cert), 'on its original handshake')
})

t.test('a broken new certificate is refused with the key and file named; the old certificate keeps serving', async (t) => {
  const root = join(certs.dir, 'secret-broken')
  const logs = new LogCapture()
  const tether = await secretTether(t, root, logs)
  // a certificate that is not the key's, then a file that is not PEM at all
  secretDir(root, { ...certs.server, cert: certs.api.cert }, 2)
  const mismatch = await waitForMessage(logs, 'TLS certificate reload rejected; the certificates in use keep serving')
  t.equal(mismatch['key'], 'listen.tls.key')
  t.match(mismatch['err'], /does not belong to the certificate/)
  t.match(mismatch['file'], /tls\.key$/)
  secretDir(root, { ...certs.server, cert: 'not a certificate\n' }, 3)
  const garbage = await waitForMessage(logs, 'TLS certificate reload rejected; the certificates in use keep serving', 2)
  t.equal(garbage['key'], 'listen.tls.cert')
  t.match(garbage['err'], /no PEM certificate/)
  const still = await handshake(tether.port)
  t.equal(still.cert.serialNumber, serialOf(certs.server.cert), 'the old certificate serves')
  still.socket.destroy()
  rmSync(root, { recursive: true, force: true })
})

t.test('certificate rotation under load: no request fails while the certificate is renewed five times', async (t) => {
  const root = join(certs.dir, 'secret-load')
  const logs = new LogCapture()
  const tether = await secretTether(t, root, logs)
  const pairs = [1, 2, 3, 4, 5].map((i) => certs.issue(`load-${i}`))
  let ok = 0
  let failed = 0
  const errors: string[] = []
  let stop = false
  const client = async (): Promise<void> => {
    // new connections each time (agent: false): every request is a fresh handshake during the swaps
    while (!stop && ok + failed < 5_000) {
      await new Promise<void>((resolve) => {
        https.get(`${tether.url}/`, { agent: false, ca: certs.ca }, (res) => {
          res.resume().on('end', () => { if (res.statusCode === 200) ok++; else { failed++; errors.push(`status ${res.statusCode}`) } resolve() })
        }).on('error', (err) => { failed++; errors.push(err.message); resolve() })
      })
    }
  }
  const clients = [client(), client(), client(), client()]
  for (const [i, pair] of pairs.entries()) {
    // some requests between renewals, so handshakes overlap each swap
    const from = ok + failed
    await waitFor(() => ok + failed >= from + 40, 20_000, 'requests between renewals')
    secretDir(root, pair, i + 2)
    await waitForMessage(logs, 'TLS certificates reloaded', i + 1)
  }
  t.equal(logs.records.filter((r) => r['msg'] === 'TLS certificates reloaded').length, 5, 'one reload per renewal')
  stop = true
  await Promise.all(clients)
  t.equal(failed, 0, `no failed request (${ok} ok): ${errors.slice(0, 3).join('; ')}`)
  t.ok(ok > 0)
  const last = await handshake(tether.port)
  t.equal(last.cert.serialNumber, serialOf(pairs[4]!.cert))
  last.socket.destroy()
  t.comment(`rotation under load: ${ok} requests over fresh TLS connections, ${failed} failed, 5 renewals`)
})

/** The `n`th log record with message `msg` (waits for it). */
async function waitForMessage(logs: LogCapture, msg: string, n = 1): Promise<Record<string, unknown>> {
  const found = (): Record<string, unknown> | undefined => logs.records.filter((r) => r['msg'] === msg)[n - 1]
  const deadline = Date.now() + 5_000
  while (found() === undefined) {
    if (Date.now() > deadline) throw new Error(`no log line "${msg}" #${n}`)
    await once(logs, 'record', Math.max(1, deadline - Date.now()), `log line "${msg}"`).catch(() => undefined)
  }
  return found()!
}

/** Raw bytes over a TLS connection to `port`; what came back once the server closed (or after 3 s). */
function tlsExchange(port: number, text: string, alpn = ['http/1.1']): Promise<string> {
  return new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: alpn }, () => s.write(text))
    let got = ''
    s.on('data', (c: Buffer) => (got += c.toString('latin1')))
    s.on('error', () => undefined)
    const timer = setTimeout(() => s.destroy(), 3_000)
    s.on('close', () => { clearTimeout(timer); resolve(got) })
  })
}

t.test('over TLS, an upgrade Tether does not perform (HTTP/1.0 + websocket, h2c) is answered 400, not closed silently, and logged', async (t) => {
  for (const h2 of [false, true]) {
    const logs = new LogCapture()
    const { tether, up } = await tlsTether(t, { listen: { http2: { enabled: h2 } } }, logs)
    const port = Number(new URL(tether.url).port)
    const ws10 = await tlsExchange(port, 'GET / HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
    t.match(ws10, /^HTTP\/1\.1 400 /, `http2 ${h2}: HTTP/1.0 with Upgrade: websocket`)
    const h2c = await tlsExchange(port, 'GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, close\r\nUpgrade: h2c\r\n\r\n')
    t.match(h2c, /^HTTP\/1\.1 400 /, `http2 ${h2}: Upgrade: h2c`)
    t.equal(up.seen.length, 0, 'nothing reached the upstream')
    t.match(logs.access().filter((r) => r['outcome'] === 'TETHER_BAD_REQUEST'), [{ status: 400, method: 'GET', path: '/' }, { status: 400, method: 'GET', path: '/' }], `http2 ${h2}: both logged`)
  }
})

t.test('over TLS, a WebSocket handshake answered with a status outside 100-599 gets the whole 502 (head and body)', async (t) => {
  const bad = net.createServer((s) => s.once('data', () => s.end('HTTP/1.1 099 Nope\r\nContent-Length: 0\r\n\r\n')))
  await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise((r) => bad.close(r)))
  const config = testConfig([{ id: 'bad', url: `http://127.0.0.1:${(bad.address() as net.AddressInfo).port}` }], {
    retries: { attempts: 0 },
    listen: { tls: { cert: certs.server.certFile, key: certs.server.keyFile, certificates: [], min_version: 'TLSv1.2', hsts: null }, http2: { enabled: false } },
  })
  const tether = await startTether(config, { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  const got = await tlsExchange(Number(new URL(tether.url).port), 'GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n')
  t.match(got, /^HTTP\/1\.1 502 [^]*\r\n\r\nBad Gateway: invalid response from upstream\n$/, 'the 502 with its body, nothing after it')
})

t.test("with HTTP/2 on (the default with TLS), HTTP/1.1 clients get Tether's limits and timeouts, as without", async (t) => {
  for (const h2 of [false, true]) {
    const { tether } = await tlsTether(t, {
      listen: { http2: { enabled: h2 } },
      limits: { max_header_bytes: 4_096 },
      timeouts: { client_headers: 600, client_keep_alive: 300 },
    })
    const port = Number(new URL(tether.url).port)
    t.match(await tlsExchange(port, 'GET / HTTP/1.1\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 400 /, `http2 ${h2}: no Host: 400 (RFC 9112 section 3.2)`)
    t.match(await tlsExchange(port, `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'b'.repeat(6_000)}\r\nConnection: close\r\n\r\n`), /^HTTP\/1\.1 431 [^]*\r\n\r\nRequest Header Fields Too Large\n$/, `http2 ${h2}: a 6 KB head over max_header_bytes (4 KB, under Node's 16 KB) gets Tether's 431`)
    // a head not complete within client_headers gets 408; an idle keep-alive connection is closed
    const t0 = Date.now()
    t.match(await tlsExchange(port, 'GET / HTTP/1.1\r\nHost: a\r\n'), /^HTTP\/1\.1 408 /, `http2 ${h2}: a slow head gets 408`)
    t.ok(Date.now() - t0 < 2_900, `http2 ${h2}: before the exchange's own 3 s deadline (${Date.now() - t0} ms)`)
    const t1 = Date.now()
    const kept = await tlsExchange(port, 'GET / HTTP/1.1\r\nHost: a\r\n\r\n')
    t.match(kept, /^HTTP\/1\.1 200 /, `http2 ${h2}: keep-alive answer`)
    t.ok(Date.now() - t1 < 2_900, `http2 ${h2}: the idle connection closed by the server after client_keep_alive (${Date.now() - t1} ms)`)
  }
})

t.test('a TCP connection that never starts its TLS handshake is closed after timeouts.client_headers', async (t) => {
  const { tether } = await tlsTether(t, { timeouts: { client_headers: 500 } })
  const sock = net.connect(Number(new URL(tether.url).port), '127.0.0.1')
  sock.on('error', () => undefined)
  t.teardown(() => sock.destroy())
  await once(sock, 'close', 3_000, 'Tether to close the silent connection')
  t.pass('closed')
})

t.test('plain HTTP sent to the TLS port gets a 400 that says so, in plain HTTP (as nginx answers), with HTTP/2 on or off; logged and counted', async (t) => {
  for (const enabled of [false, true]) {
    const logs = new LogCapture()
    const { tether, up } = await tlsTether(t, { listen: { http2: { enabled } } }, logs)
    const sock = net.connect(Number(new URL(tether.url).port), '127.0.0.1', () => sock.write('GET / HTTP/1.1\r\nHost: a\r\n\r\n'))
    sock.on('error', () => undefined)
    t.teardown(() => sock.destroy())
    let got = ''
    sock.on('data', (c: Buffer) => (got += c.toString('latin1')))
    await once(sock, 'close', 5_000, 'the answer and the close')
    t.match(got, /^HTTP\/1\.1 400 Bad Request\r\n[^]*\r\n\r\nBad Request: a plain HTTP request was sent to the HTTPS port\n$/, `http2.enabled: ${enabled}`)
    t.equal(up.seen.length, 0, 'nothing reached the upstream')
    t.match(logs.access(), [{ status: 400, outcome: 'TETHER_PLAIN_HTTP_TO_TLS', peer: '127.0.0.1' }], 'one access line, with its code (docs/errors.md) and the client\'s address')
    t.match(await tether.metrics.render(), /^tether_http_requests_total\{upstream="none",[^}]*status_class="4xx"\} 1$/m, 'counted')
  }
})
