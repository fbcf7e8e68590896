// Server-Sent Events through Tether stream without buffering: the client receives event N
// before the upstream sends N+1 (the upstream waits for the client's acknowledgement on a side
// channel, so any buffering deadlocks and the deadline fails). response_headers bounds only the
// wait for the head; body_idle bounds the silence between chunks. Silence is measured by
// witnesses, not sleeps: requests whose head never comes, answered 504 by the same timer.
import t from 'tap'
import http from 'node:http'
import { request, startUpstream, testConfig, type Upstream } from './fixtures/upstream.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { once, within } from './fixtures/wait.js'

/** A promise with its resolve function, for handshakes between the upstream and the client. */
function signal(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => { resolve = r })
  return { promise, resolve }
}

interface Stream {
  headers: http.IncomingHttpHeaders
  /** Resolves with each event's data in order; `next()` waits for the next one. */
  next(): Promise<string>
  ended: Promise<'end' | 'cut'>
}

/** GET an event stream; events are parsed as they arrive. */
function openStream(url: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { agent: false, headers: { accept: 'text/event-stream' } }, (res) => {
      const queue: string[] = []
      const waiting: ((s: string) => void)[] = []
      let buf = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        buf += chunk
        let end: number
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const event = buf.slice(0, end)
          buf = buf.slice(end + 2)
          const data = event.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n')
          const w = waiting.shift()
          if (w) w(data)
          else queue.push(data)
        }
      })
      const ended = new Promise<'end' | 'cut'>((r) => {
        res.on('end', () => r('end'))
        res.on('aborted', () => r('cut'))
        res.on('error', () => r('cut'))
      })
      resolve({
        headers: res.headers,
        ended,
        next: () => queue.length > 0 ? Promise.resolve(queue.shift()!) : new Promise((r) => waiting.push(r)),
      })
    })
    req.on('error', reject)
  })
}

t.test('events arrive one by one as sent, and a stream longer than response_headers is not cut', async (t) => {
  const headersSeen = signal()
  const acks = Array.from({ length: 7 }, () => signal())
  const quietLonger = signal()
  const up: Upstream = await startUpstream('sse', (req, res) => {
    if (req.url === '/late') return // a witness: its head never comes
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    res.flushHeaders()
    void (async () => {
      await headersSeen.promise // the head reached the client before any event was written
      for (let i = 1; i <= 5; i++) {
        res.write(`id: ${i}\ndata: event ${i}\n\n`)
        await acks[i]!.promise
      }
      await quietLonger.promise // silent for longer than response_headers
      res.write('data: event 6\ndata: two lines\n\n')
      await acks[6]!.promise
      res.end()
    })()
  })
  const responseHeaders = 250
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }], { timeouts: { response_headers: responseHeaders, body_idle: 5000 } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })

  const s = await within(openStream(`${tether.url}/events`), 2000, 'response head before any event')
  t.equal(s.headers['content-type'], 'text/event-stream')
  t.equal(s.headers['content-length'], undefined)
  t.equal(s.headers['transfer-encoding'], 'chunked')
  headersSeen.resolve()
  for (let i = 1; i <= 5; i++) {
    t.equal(await within(s.next(), 2000, `event ${i} before event ${i + 1} is sent`), `event ${i}`)
    acks[i]!.resolve()
  }
  // outlast response_headers on purpose, measured by a witness sent after the stream's last byte:
  // its 504 comes from the same response_headers timer (which undici runs coarsely, about 1 s
  // for 250 ms here), so a stream still subject to it would have been cut by then
  const started = performance.now()
  const witness = await within(request(`${tether.url}/late`), 5000, 'the witness')
  t.equal(witness.status, 504, 'a request without a head within response_headers gets 504')
  t.ok(performance.now() - started >= responseHeaders, 'so the stream has been silent for longer than response_headers')
  quietLonger.resolve()
  t.equal(await within(s.next(), 2000, 'event 6'), 'event 6\ntwo lines')
  acks[6]!.resolve()
  t.equal(await within(s.ended, 2000, 'end'), 'end', 'the stream ended normally')
})

t.test('a stream silent for longer than body_idle is cut off', async (t) => {
  let served!: (res: http.ServerResponse) => void
  const upstreamRes = new Promise<http.ServerResponse>((r) => { served = r })
  const up = await startUpstream('sse', (_req, res) => {
    served(res)
    res.writeHead(200, { 'content-type': 'text/event-stream' })
    res.write('data: only one\n\n') // then silence
  })
  const tether = await startTether(testConfig([{ id: up.id, url: up.url }], { timeouts: { body_idle: 300 } }), { logger: createLogger('silent') })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const s = await openStream(`${tether.url}/events`)
  t.equal(await within(s.next(), 2000, 'first event'), 'only one')
  t.equal(await within(s.ended, 5000, 'cut off'), 'cut', 'the client connection was cut (no clean end)')
  const res = await upstreamRes
  if (!res.destroyed && !res.writableEnded && res.socket !== null) await once(res, 'close', 5000, 'the upstream side to be released')
  t.pass('the upstream side was released')
})
