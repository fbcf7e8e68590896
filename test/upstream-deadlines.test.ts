// The upstream waits Tether times itself (src/proxy/deadlines.ts): the list and its sweep, and
// end to end the rules undici's own timers had: the body may be silent body_idle between
// chunks, the head wait does not count a request body still arriving from the client.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { Deadlines, sweepInterval, type Expiring } from '../src/proxy/deadlines.js'
import { startProxy, startUpstream } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

class Item implements Expiring {
  prevLive: Expiring | null = null
  nextLive: Expiring | null = null
  seen: number[] = []
  constructor(public onExpire: (now: number) => void = () => undefined) {}
  expire(now: number): void {
    this.seen.push(now)
    this.onExpire(now)
  }
}

t.test('sweepInterval: an eighth of the shortest wait, 10-250 ms', async (t) => {
  t.equal(sweepInterval(60_000), 250)
  t.equal(sweepInterval(800), 100)
  t.equal(sweepInterval(40), 10)
})

t.test('Deadlines: a sweep visits every linked item once, also when items unlink themselves meanwhile', async (t) => {
  const d = new Deadlines(10_000)
  t.teardown(() => d.stop())
  const a = new Item()
  const b: Item = new Item(() => d.unlink(b))
  const c = new Item()
  d.link(a); d.link(b); d.link(c)
  t.equal(d.size, 3)
  d.sweep(5)
  t.same([a.seen, b.seen, c.seen], [[5], [5], [5]])
  t.equal(d.size, 2, 'b unlinked itself')
  d.unlink(a)
  d.unlink(a) // twice: no effect
  d.unlink(b) // never linked now: no effect
  t.equal(d.size, 1)
  d.sweep(6)
  t.same([a.seen, c.seen], [[5], [5, 6]])
  d.unlink(c)
  t.equal(d.size, 0)
  d.link(a)
  d.sweep(7)
  t.same(a.seen, [5, 7], 'a linked again is swept again')
})

t.test('Deadlines: the interval sweeps with the clock while items are linked, and stops once none is left', async (t) => {
  let now = 100
  const d = new Deadlines(10, () => now)
  t.teardown(() => d.stop())
  const swept = new Promise<number>((resolve) => {
    const item: Item = new Item((at) => { d.unlink(item); resolve(at) })
    d.link(item)
  })
  t.equal(await within(swept, 5_000, 'the first sweep'), 100)
  now = 200
  const late = new Item()
  d.link(late) // the interval starts again
  await within(new Promise<void>((resolve) => { late.onExpire = () => { d.unlink(late); resolve() } }), 5_000, 'the second sweep')
  t.same(late.seen, [200])
})

/** POST to `url` with a body written in `chunks` pieces, one every `every` ms; resolves with how the answer ended. */
function trickle(url: string, chunks: number, every: number): Promise<{ status: number; body: string; how: string; ms: number }> {
  const t0 = performance.now()
  return new Promise((resolve) => {
    let status = 0
    let body = ''
    let sent = 0
    const done = (how: string): void => { clearInterval(timer); resolve({ status, body, how, ms: performance.now() - t0 }) }
    const req = http.request(url, { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      status = res.statusCode ?? 0
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => done('end'))
      res.on('aborted', () => done('aborted'))
      res.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message))
    })
    req.on('error', (e: NodeJS.ErrnoException) => done(e.code ?? e.message))
    const timer = setInterval(() => {
      if (req.destroyed) return clearInterval(timer)
      req.write(`chunk-${sent}\n`)
      if (++sent === chunks) { clearInterval(timer); req.end() }
    }, every)
  })
}

t.test('an upstream that stalls mid-body is cut after body_idle, although the client keeps its connection busy', async (t) => {
  // the client is still sending its body, so its own connection is never idle: only the
  // upstream's body wait can end this exchange
  let answered = 0
  const up = await startUpstream('stall', (req, res) => {
    req.resume()
    res.writeHead(200, { 'content-length': '100' })
    res.write('partial')
    answered = performance.now()
  })
  const tether = await startProxy([up], { timeouts: { body_idle: 400, response_headers: 10_000 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const upstreamClosed = new Promise<number>((resolve) => up.server.once('request', (req: http.IncomingMessage) => req.socket.once('close', () => resolve(performance.now()))))
  const r = await trickle(tether.url, 100, 50) // 5 s of body at most
  t.equal(r.status, 200, 'the head was passed on')
  t.equal(r.body, 'partial')
  t.not(r.how, 'end', `the client saw the cut (${r.how})`)
  t.ok(r.ms < 4_000, `cut before the client finished sending (${Math.round(r.ms)} ms)`)
  const closed = await within(upstreamClosed, 5_000, 'the upstream connection to close')
  t.ok(closed - answered >= 400, `not before body_idle (${Math.round(closed - answered)} ms after the last byte)`)
})

t.test('an upstream that sends its body slowly, a chunk every third of body_idle, is not cut', async (t) => {
  const up = await startUpstream('slow', (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' })
    let n = 0
    const timer = setInterval(() => {
      res.write(`${n}\n`)
      if (++n === 12) { clearInterval(timer); res.end('done\n') }
    }, 100)
    res.on('close', () => clearInterval(timer))
  })
  const tether = await startProxy([up], { timeouts: { body_idle: 300 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const body = await new Promise<string>((resolve, reject) => {
    http.get(tether.url, { agent: false }, (res) => {
      let b = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { b += c })
      res.on('end', () => resolve(b))
      res.on('aborted', () => reject(new Error(`cut after ${JSON.stringify(b)}`)))
    }).on('error', reject)
  })
  t.equal(body, `${[...Array(12).keys()].join('\n')}\ndone\n`, '1.2 s of body, four times body_idle, arrives whole')
})

t.test('a request body that arrives slower than response_headers does not count against the head wait', async (t) => {
  const up = await startUpstream('echo', (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => res.end(`got ${n}\n`))
  })
  const tether = await startProxy([up], { timeouts: { response_headers: 300 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const r = await trickle(tether.url, 10, 100) // ~1 s of upload
  t.equal(r.status, 200, 'not 504')
  t.equal(r.body, `got ${10 * 'chunk-0\n'.length}\n`)
  t.equal(r.how, 'end')
})

t.test('once the request body is in, the head wait runs: a silent upstream gives 504', async (t) => {
  const up = await startUpstream('silent', (req) => { req.resume() })
  const tether = await startProxy([up], { timeouts: { response_headers: 300 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const r = await trickle(tether.url, 4, 100)
  t.equal(r.status, 504)
  t.ok(r.ms >= 300 + 300, `the wait counted from the end of the body (${Math.round(r.ms)} ms)`)
})

t.test('a client waiting on a slow head or a silent upstream is not cut by its own idle bound first: the answer comes, or the 504 and a health signal', async (t) => {
  // response_headers longer than body_idle: an answer after 1 s arrives (the client connection
  // was cut at body_idle before); an upstream that never answers gets 504, counted by passive health
  const up = await startUpstream('slow', (req, res) => { if (req.url === '/slow') setTimeout(() => res.end('late\n'), 1_000) })
  const tether = await startProxy([up], { timeouts: { response_headers: 1_500, body_idle: 400 }, health: { passive: { consecutive_failures: 100 } } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const get = (path: string): Promise<{ status: number | string; body: string }> => new Promise((resolve) => {
    http.get(`${tether.url}${path}`, { agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, body }))
    }).on('error', (err: NodeJS.ErrnoException) => resolve({ status: err.code ?? 'error', body: '' }))
  })
  t.same(await get('/slow'), { status: 200, body: 'late\n' }, 'a head within response_headers arrives')
  t.same((await get('/never')).status, 504, 'a head that never comes: 504, not an empty reply')
  t.equal(tether.health.snapshot().find((e) => e.id === 'slow')?.passiveFailures, 1, 'and passive health heard of it')
})

t.test('an upstream that stops taking a request body (frozen) gets the client a 504 after body_idle, not a wait for ever', async (t) => {
  const up = await startUpstream('frozen', (req) => { req.pause(); req.socket.pause() }) // reads the head, never the body
  const tether = await startProxy([up], { timeouts: { body_idle: 400, response_headers: 60_000 } })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const answer = await new Promise<string>((resolve) => {
    const s = net.connect(tether.port, '127.0.0.1', () => {
      s.write(`POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: ${64 * 1024 * 1024}\r\n\r\n`)
      const chunk = Buffer.alloc(64 * 1024, 120)
      const pump = (): void => { while (s.writable && s.write(chunk)); }
      s.on('drain', pump)
      pump()
    })
    let got = ''
    s.on('data', (c) => (got += c))
    s.on('close', () => resolve(got))
    s.on('error', () => undefined)
  })
  t.match(answer, /^HTTP\/1\.1 504 /, "504: the upstream's silence, as nginx's proxy_send_timeout")
})
