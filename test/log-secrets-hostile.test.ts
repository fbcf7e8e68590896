// Hostile: secrets that pass through Tether (a client's Authorization and Cookie, an upstream's
// Set-Cookie, the Redis password in its URL, the admin token, wrong ones sent to it) appear in no
// log line, at trace level, on the error paths too (upstream resets, retries, a Redis that
// refuses the password, refused admin calls).
import t from 'tap'
import http from 'node:http'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { startRedis } from './fixtures/redis-server.js'
import { startUpstream, testConfig, request } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

const SECRETS = ['AUTHSECRET1', 'COOKIESECRET2', 'SETCOOKIESECRET3', 'REDISSECRET4', 'ADMINSECRET5', 'WRONGTOKEN6', 'PROXYAUTH7']

t.test('no secret appears in any log line, at trace level, on error paths too', async (t) => {
  const redis = await startRedis({ args: ['--requirepass', 'the-real-password'] })
  t.teardown(() => redis.stop())
  let n = 0
  const app = await startUpstream('a', (req, res) => {
    n++
    if (req.url === '/reset') return void req.socket.destroy()
    if (req.url === '/cut') {
      res.writeHead(200, { 'set-cookie': 'sid=SETCOOKIESECRET3; Path=/' })
      res.write('part')
      return void setImmediate(() => req.socket.destroy())
    }
    res.setHeader('set-cookie', 'sid=SETCOOKIESECRET3; Path=/')
    res.end('ok')
  })
  const b = await startUpstream('b', (req) => void req.socket.destroy())
  const cap = new LogCapture()
  const config = testConfig([app, b], {
    admin: { token: 'ADMINSECRET5' },
    state: { store: 'redis', redis: { url: `redis://:REDISSECRET4@127.0.0.1:${redis.port}` } },
  })
  const tether = await startTether(config, { logger: createLogger('trace', cap) })
  t.teardown(async () => { await tether.close(0); await app.close(); await b.close() })
  const secretHeaders = { authorization: 'Bearer AUTHSECRET1', cookie: 'x=COOKIESECRET2', 'proxy-authorization': 'Basic PROXYAUTH7' }
  for (const path of ['/', '/reset', '/cut', '/reset?token=x']) {
    await new Promise<void>((resolve) => {
      const req = http.get(`${tether.url}${path}`, { headers: secretHeaders, agent: false }, (res) => { res.resume(); res.on('end', resolve); res.on('error', () => resolve()) })
      req.on('error', () => resolve())
    })
  }
  await request(`${tether.adminUrl}/upstreams`, { headers: { authorization: 'Bearer WRONGTOKEN6' } })
  await request(`${tether.adminUrl}/upstreams`, { headers: { authorization: 'Bearer ADMINSECRET5' } })
  await waitFor(() => cap.access().length >= 4 && cap.records.some((r) => /WRONGPASS/.test(String(r['error']))), 10_000, 'the access lines and the Redis refusal')
  t.ok(n >= 3, `the upstream saw the requests (${n})`)
  t.ok(cap.records.some((r) => r['msg'] === 'upstream exchange failed'), 'the failed exchanges were logged')
  t.ok(cap.records.some((r) => r['msg'] === 'admin request refused: missing or wrong token'), 'the wrong token was logged')
  const text = cap.lines.map((l) => JSON.stringify(l.rec)).join('\n')
  for (const s of SECRETS) t.notOk(text.includes(s), `${s} is in no log line${text.includes(s) ? `: ${text.split('\n').find((l) => l.includes(s))}` : ''}`)
})
