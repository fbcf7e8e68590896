// Baseline contestant: the least a sticky proxy on Node's http server and undici can do, with
// the same undici API as Tether (Pool.dispatch, onResponseStart): hash the `tether` cookie to
// an upstream, forward the raw request headers minus hop-by-hop ones, stream the answer back.
// No checks, no metrics, no logs: the gap between it and Tether is what Tether's own logic costs.
// Usage: node bench/undici-baseline.mjs <port> <upstreamUrl>...
// BENCH_UNDICI_WORKERS=N (the harness passes BENCH_WORKERS): N processes through node:cluster,
// as Tether's workers share a port, so the unpinned mode can set the stack's floor beside
// Tether's and nginx's same worker count.
import cluster from 'node:cluster'
import http from 'node:http'
import { Pool } from 'undici'

const port = Number(process.argv[2])
const targets = process.argv.slice(3)
if (!port || targets.length === 0) throw new Error('usage: undici-baseline.mjs <port> <upstreamUrl>...')
const pools = targets.map((t) => new Pool(t, { pipelining: 1, keepAliveTimeout: 4_000 }))
const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-connection'])

function pick(cookie) {
  const at = cookie === undefined ? -1 : cookie.indexOf('tether=')
  if (at < 0) return pools[0]
  let h = 0
  for (let i = at + 7; i < cookie.length && cookie.charCodeAt(i) !== 59; i++) h = (h * 31 + cookie.charCodeAt(i)) | 0
  return pools[(h >>> 0) % pools.length]
}

class Handler {
  constructor(res) {
    this.res = res
  }
  onRequestStart() {}
  onResponseStart(_controller, status, headers) {
    for (const name in headers) if (HOP.has(name)) delete headers[name]
    this.res.writeHead(status, headers)
  }
  onResponseData(_controller, chunk) {
    this.res.write(chunk)
  }
  onResponseEnd() {
    this.res.end()
  }
  onResponseError(_controller, _err) {
    if (!this.res.headersSent) this.res.writeHead(502).end()
    else this.res.destroy()
  }
}

const workers = Number(process.env.BENCH_UNDICI_WORKERS ?? 1)
if (workers > 1 && cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork()
  cluster.on('exit', () => process.exit(1))
} else http
  .createServer((req, res) => {
    const raw = req.rawHeaders
    const headers = []
    for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) headers.push(raw[i], raw[i + 1])
    pick(req.headers.cookie).dispatch({ path: req.url, method: req.method, headers, body: req.method === 'GET' || req.method === 'HEAD' ? null : req }, new Handler(res))
  })
  .listen(port, '127.0.0.1')
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0))
