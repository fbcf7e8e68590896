// bench/raw-baseline.mjs, the ceiling contestants of the benchmark (raw `net` sockets on one or
// both sides), against real upstreams on loopback: a ceiling is only worth its figure if the
// contestant does the work it claims, so each mode must answer every request of a pipelined
// keep-alive connection from the upstream its cookie hashes to, strip hop-by-hop names both
// ways, and refuse what it does not implement (a request body, an answer framed otherwise than
// by Content-Length) instead of mangling it.
import t, { type Test } from 'tap'
import http from 'node:http'
import path from 'node:path'
import { spawn } from 'node:child_process'
import type { AddressInfo } from 'node:net'
import { accepts, freePort } from './fixtures/ports.js'
import { exchange } from './fixtures/raw-client.js'
import { header } from './fixtures/raw-http.js'
import { waitFor } from './fixtures/wait.js'

const script = path.resolve(import.meta.dirname, '../bench/raw-baseline.mjs')

interface Seen { id: string; headers: http.IncomingHttpHeaders }

async function upstream(t: Test, id: string, seen: Seen[]): Promise<string> {
  const server = http.createServer((req, res) => {
    seen.push({ id, headers: req.headers })
    const body = `from ${id}`
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': body.length, 'keep-alive': 'timeout=9', 'x-up': id }).end(body)
  })
  server.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

async function contestant(t: Test, mode: string, targets: string[]): Promise<number> {
  const port = await freePort()
  const child = spawn(process.execPath, [script, String(port), mode, ...targets], { stdio: ['ignore', 'ignore', 'inherit'] })
  t.teardown(() => { child.kill('SIGKILL') })
  await waitFor(() => accepts(port), 30_000, `${mode} listening on ${port}`)
  return port
}

const get = (cookie: string, extra = ''): string => `GET /p?q=${cookie} HTTP/1.1\r\nHost: a\r\nCookie: tether=${cookie}\r\n${extra}\r\n`

for (const mode of ['raw', 'raw-server', 'raw-upstream']) {
  t.test(`${mode}: pipelined keep-alive GETs, each from the upstream its cookie hashes to`, async (t) => {
    const seen: Seen[] = []
    const targets = [await upstream(t, 'a', seen), await upstream(t, 'b', seen)]
    const port = await contestant(t, mode, targets)
    const users = Array.from({ length: 12 }, (_, i) => `u${i}`)
    // Every user twice, all on one connection in one write: the second pass must match the first.
    const input = [...users, ...users].map((u) => get(u, 'Connection: keep-alive, x-drop\r\nKeep-Alive: timeout=5\r\n')).join('')
    const r = await exchange(port, input, { responses: 24, ms: 5000 })
    t.equal(r.finals.length, 24, 'every request answered')
    t.notOk(r.ended, 'the connection stays open')
    const answers = r.finals.map((f) => f.body.toString())
    t.ok(r.finals.every((f) => f.status === 200), 'all 200')
    t.same(answers.slice(12), answers.slice(0, 12), "each user's second answer comes from the same upstream as its first")
    t.ok(answers.includes('from a') && answers.includes('from b'), 'both upstreams used')
    t.ok(r.finals.every((f) => header(f, 'keep-alive') !== 'timeout=9'), "the upstream's Keep-Alive is not passed on")
    t.ok(r.finals.every((f) => header(f, 'x-up') === f.body.toString().slice(5)), 'end-to-end answer headers are passed on')
    t.equal(seen.length, 24)
    t.ok(seen.every((s) => s.headers['keep-alive'] === undefined && s.headers.cookie?.startsWith('tether=u')), 'Keep-Alive dropped, Cookie kept')
  })

  t.test(`${mode}: a request body is refused with 501, not forwarded half-read`, async (t) => {
    const seen: Seen[] = []
    const port = await contestant(t, mode, [await upstream(t, 'a', seen)])
    const r = await exchange(port, 'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc', { responses: 1, ms: 5000 })
    t.equal(r.first, '501')
    t.equal(seen.length, 0, 'nothing reached the upstream')
  })
}

t.test('raw: an answer without Content-Length (chunked) is refused with 502, not passed on misframed', async (t) => {
  const server = http.createServer((_req, res) => { res.write('part'); res.end() })
  server.listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const port = await contestant(t, 'raw', [`http://127.0.0.1:${(server.address() as AddressInfo).port}`])
  const r = await exchange(port, get('u1'), { ms: 5000 })
  t.equal(r.first, '502')
  t.ok(r.ended, 'and the connection is closed')
})

t.test('raw: Connection: close is answered, then the connection is closed', async (t) => {
  const seen: Seen[] = []
  const port = await contestant(t, 'raw', [await upstream(t, 'a', seen)])
  const r = await exchange(port, get('u1', 'Connection: close\r\n'), { ms: 5000 })
  t.equal(r.first, '200')
  t.equal(header(r.finals[0]!, 'connection'), 'close')
  t.ok(r.ended, 'closed after the answer')
})
