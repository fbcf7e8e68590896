// The primary's admin front (`workers` > 1) and the worker's private admin listener behind it:
// a request head the front accepts is accepted by the worker too (the front changes a few
// header lines on the way: Content-Length added, Connection as Node's client sets it), a head
// over the admin API's 16 KiB gets the front's own 431, and `Expect` stays at the front (which
// answers 100-continue itself) instead of reaching the worker.
import t from 'tap'
import http from 'node:http'
import net from 'node:net'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { exchange } from './fixtures/raw-client.js'
import { startPrimary, workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { startAdminFront } from '../src/workers/admin-front.js'
import { createLogger } from '../src/observability/logger.js'

/** The admin API's bound on a request head, as Node's parser counts it (the target, header names and values). */
const HEAD = 16_384

/** What the server at `port` sends on one raw connection after `data`, until it closes (or 30 s pass: then what came). */
async function rawAnswer(port: number, data: string): Promise<string> {
  return (await exchange(port, data, { ms: 30_000 })).bytes.toString('latin1')
}

/**
 * A GET of `path` whose head counts `counted` bytes as Node's parser counts them (target, header
 * names and values: `Host`, `Connection: close` and an `X-Pad` that fills the rest), plus `lines`.
 */
function headOf(path: string, counted: number, lines = ''): string {
  const named = [...lines.matchAll(/^([^:]+): (.*)\r$/gm)].reduce((n, m) => n + m[1]!.length + m[2]!.length, 0)
  const fixed = path.length + 'Host'.length + '127.0.0.1'.length + 'Connection'.length + 'close'.length + 'X-Pad'.length + named
  return `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${lines}X-Pad: ${'p'.repeat(counted - fixed)}\r\nConnection: close\r\n\r\n`
}

t.test('with two workers, a request head just under 16 KiB gets the worker\'s answer through the front; one over it the front\'s own 431', async (t) => {
  const app = await startUpstream('app-0', (_req, res) => res.end('app-0\n'))
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  await startPrimary(t, tempFile('workers-admin-front.yaml', workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] })))
  // a route the front passes to the leading worker (not one it answers or combines itself)
  for (const counted of [HEAD - 4, HEAD - 1]) {
    const answer = await rawAnswer(adminPort!, headOf('/healthz', counted))
    t.match(answer, /^HTTP\/1\.1 200 [^]*\r\n\r\nok\n$/, `a head of ${counted} bytes: the worker's 200 (it gave 431 to what the front passed on)`)
  }
  // with a few header lines the front drops (hop-by-hop) and an Authorization it passes on as sent
  const some = await rawAnswer(adminPort!, headOf('/upstreams/app-0', HEAD - 4, 'Keep-Alive: timeout=5\r\nAuthorization: Bearer x\r\n'))
  t.match(some, /^HTTP\/1\.1 404 /, 'a head of 16380 bytes with other lines: the worker\'s own answer (no such route)')
  for (const counted of [HEAD, HEAD + 100, 20_000]) {
    const answer = await rawAnswer(adminPort!, headOf('/healthz', counted))
    t.match(answer, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n[^]*connection: close\r\n\r\nRequest Header Fields Too Large: the admin API reads at most 16384 bytes of request head\n$/i,
      `a head of ${counted} bytes: the front's 431 with the admin API's bound, then closed`)
  }
})

t.test('the front answers Expect: 100-continue itself and does not pass Expect on to the worker', async (t) => {
  // a worker's admin listener stand-in: a real HTTP server that records what reaches it
  const seen: { headers: http.IncomingHttpHeaders; body: string; continued: boolean }[] = []
  const worker = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      seen.push({ headers: req.headers, body, continued: false })
      res.end('{"id":"app-0","draining":true}\n')
    })
  })
  worker.on('checkContinue', (req, res) => {
    res.writeContinue()
    let body = ''
    req.on('data', (c) => (body += c))
    req.on('end', () => {
      seen.push({ headers: req.headers, body, continued: true })
      res.end('{"id":"app-0","draining":true}\n')
    })
  })
  await new Promise<void>((resolve) => worker.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { worker.closeAllConnections(); worker.close(() => resolve()) }))
  const workerUrl = `http://127.0.0.1:${(worker.address() as net.AddressInfo).port}`
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => [workerUrl], metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => front.close())
  const frontPort = Number(new URL(front.url).port)

  // the client waits for the 100 before it sends its body, as curl does
  const answer = await new Promise<string>((resolve, reject) => {
    const s = net.connect(frontPort, '127.0.0.1', () => s.write('POST /upstreams/app-0/drain HTTP/1.1\r\nHost: 127.0.0.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\nConnection: close\r\n\r\n'))
    let out = ''
    let sent = false
    s.on('data', (c) => {
      out += c
      if (!sent && out.startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
        sent = true
        s.write('hello')
      }
    })
    s.on('close', () => resolve(out))
    s.on('error', reject)
  })
  t.match(answer, /^HTTP\/1\.1 100 Continue\r\n\r\nHTTP\/1\.1 200 [^]*\r\n\r\n\{"id":"app-0","draining":true\}\n$/, 'the client gets the front\'s 100, then the worker\'s answer')
  t.equal(answer.split('100 Continue').length - 1, 1, 'one 100 only')
  t.equal(seen.length, 1, 'the request reached the worker once')
  t.equal(seen[0]!.headers.expect, undefined, 'without Expect')
  t.equal(seen[0]!.continued, false, 'so the worker sent no 100 of its own')
  t.equal(seen[0]!.body, 'hello', 'with the whole body')
  t.equal(seen[0]!.headers['content-length'], '5')
})
