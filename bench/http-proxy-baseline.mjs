// Baseline contestant: the classic node-http-proxy, round-robin over the upstreams.
// Usage: node bench/http-proxy-baseline.mjs <port> <upstreamUrl>...   (or env PORT, UPSTREAMS=url,url)
import http from 'node:http'
import httpProxy from 'http-proxy'

const port = Number(process.argv[2] ?? process.env.PORT ?? 8080)
const targets = process.argv.length > 3 ? process.argv.slice(3) : (process.env.UPSTREAMS ?? '').split(',').filter(Boolean)
if (targets.length === 0) throw new Error('no upstreams: pass URLs as arguments or UPSTREAMS=url,url')
const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity })
const proxy = httpProxy.createProxyServer({ agent, xfwd: true })
proxy.on('error', (_err, _req, res) => {
  if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
  res.end('bad gateway\n')
})
let next = 0
http.createServer((req, res) => proxy.web(req, res, { target: targets[next++ % targets.length] }))
  .listen(port, '127.0.0.1')
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0))
