// Answers without a body (HEAD, 204, 304) and without Content-Length are complete at their head:
// never cut as a close-delimited answer whose connection did not close, with their head held for a
// checkpoint write (state.store) or not (review s65 r2).
import t from 'tap'
import { startHarness } from './fixtures/raw-tether.js'
import { exchange } from './fixtures/raw-client.js'

for (const [name, req, answer] of [
  ['204 without Content-Length', 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 204 No Content\r\n\r\n'],
  ['304 without Content-Length', 'GET /x HTTP/1.1\r\nHost: a\r\nIf-None-Match: "a"\r\n\r\n', 'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n'],
  ['HEAD answered without Content-Length', 'HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n'],
] as const) {
  t.test(`${name}, upstream keeps the connection open: a complete answer, client kept alive`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 } }, (_q, c) => c.write(answer))
    t.teardown(() => h.close())
    const r = await exchange(h.port, req, { responses: 1, ms: 3000, heads: [req.startsWith('HEAD')] })
    t.equal(r.first, answer.slice(9, 12), 'the status')
    t.notOk(r.ended, 'client connection kept open')
    await h.barrier()
    const line = h.logs.access().find((l) => l['path'] === '/x')
    t.equal(line?.['outcome'], 'ok', `access outcome ${JSON.stringify(line?.['outcome'])}`)
  })
}

for (const [name, req, answer] of [
  ['204 without Content-Length', 'GET /x HTTP/1.1\r\nHost: a\r\nX-User: u1\r\n\r\n', 'HTTP/1.1 204 No Content\r\nX-Tether-State: e30\r\n\r\n'],
  ['304 without Content-Length', 'GET /x HTTP/1.1\r\nHost: a\r\nX-User: u1\r\n\r\n', 'HTTP/1.1 304 Not Modified\r\nX-Tether-State: e30\r\n\r\n'],
  ['HEAD answered without Content-Length', 'HEAD /x HTTP/1.1\r\nHost: a\r\nX-User: u1\r\n\r\n', 'HTTP/1.1 200 OK\r\nX-Tether-State: e30\r\n\r\n'],
  ['200 with Content-Length (control)', 'GET /x HTTP/1.1\r\nHost: a\r\nX-User: u1\r\n\r\n', 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Tether-State: e30\r\n\r\nok'],
] as const) {
  t.test(`${name}, its head held for the checkpoint write: answered whole`, async (t) => {
    const h = await startHarness({ retries: { attempts: 0 }, affinity: { key: 'header', header: { name: 'x-user' } }, state: { store: 'memory', timeout: 5000 } } as never, (_q, c) => c.write(answer))
    t.teardown(() => h.close())
    const r = await exchange(h.port, req, { responses: 1, ms: 3000, heads: [req.startsWith('HEAD')] })
    t.equal(r.first, answer.slice(9, 12), `the status (got ${r.first}: ${r.bytes.toString('latin1').split('\r\n')[0]})`)
    await h.barrier()
    const line = h.logs.access().find((l) => l['path'] === '/x')
    t.equal(line?.['outcome'], 'ok', `access outcome ${JSON.stringify(line?.['outcome'])}`)
  })
}
