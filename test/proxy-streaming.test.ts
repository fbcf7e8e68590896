// 128 MB go through Tether in each direction while Tether (a real child process, as in a
// pod) keeps its memory bounded: bodies are streamed, never buffered whole. The bound is
// below the body size, so no implementation that holds a whole body could pass. (Measured:
// peak RSS grows by about 70 MB whether 50, 100 or 200 MB pass: GC and allocator slack.)
import t from 'tap'
import http from 'node:http'
import { readFileSync } from 'node:fs'
import { startCli, tempFile } from './fixtures/cli.js'
import { startUpstream } from './fixtures/upstream.js'

const MB = 1024 * 1024
const TOTAL = 128 * MB
const CHUNK = Buffer.alloc(64 * 1024, 'z')

/** Peak resident set size of a process, in bytes (Linux /proc). */
function peakRss(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m![1]) * 1024
}

/** Write `total` bytes to `out` respecting backpressure, then end it. */
function pump(out: NodeJS.WritableStream, total: number): void {
  let sent = 0
  const more = (): void => {
    while (sent < total) {
      sent += CHUNK.length
      if (!out.write(CHUNK)) { out.once('drain', more); return }
    }
    out.end()
  }
  more()
}

t.test('a 128 MB upload and a 128 MB download stream through with bounded memory', async (t) => {
  let uploaded = 0
  const up = await startUpstream('big', (req, res) => {
    if (req.method === 'OPTIONS') return res.end() // Tether's health probe
    if (req.method === 'POST') {
      req.on('data', (c: Buffer) => (uploaded += c.length))
      req.on('end', () => res.end(String(uploaded)))
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(TOTAL) })
    pump(res, TOTAL)
  })
  t.teardown(() => up.close())
  const file = tempFile('stream.yaml', `listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nlog: { level: info, access: false }\nupstreams:\n  - { id: big, url: "${up.url}" }\n`)
  const tether = await startCli(file)
  t.teardown(() => tether.stop('SIGKILL'))
  const baseline = peakRss(tether.proc.pid!)

  const echoed = await new Promise<string>((resolve, reject) => {
    const req = http.request(tether.url, { method: 'POST', agent: false, headers: { 'transfer-encoding': 'chunked' } }, (res) => {
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => resolve(s))
    })
    req.on('error', reject)
    pump(req, TOTAL)
  })
  t.equal(Number(echoed), TOTAL, 'the upstream received all of it')

  const downloaded = await new Promise<number>((resolve, reject) => {
    http.get(tether.url, { agent: false }, (res) => {
      let n = 0
      res.on('data', (c: Buffer) => (n += c.length))
      res.on('end', () => resolve(n))
      res.on('error', reject)
    }).on('error', reject)
  })
  t.equal(downloaded, TOTAL, 'the client received all of it')

  const growth = peakRss(tether.proc.pid!) - baseline
  t.comment(`tether peak RSS grew by ${(growth / MB).toFixed(1)} MB over ${(baseline / MB).toFixed(1)} MB`)
  t.ok(growth < 100 * MB, `peak memory grew by less than 100 MB while moving 2 x 128 MB (grew ${(growth / MB).toFixed(1)} MB)`)
})
