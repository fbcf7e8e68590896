// Cheap upstream for the proxy benchmark. Runs as its own child process so its CPU is
// accounted separately. Usage: node bench/lib/upstream-server.mjs <id> [port]
// Prints one JSON line {"id","port","pid"} on stdout once listening.
import http from 'node:http'

const id = process.argv[2] ?? 'up'
const port = Number(process.argv[3] ?? 0)
const body = Buffer.from(`ok\n${id}\n`)
const headers = { 'content-type': 'text/plain', 'content-length': String(body.length) }

const server = http.createServer((req, res) => {
  // Drain any request body, then answer the same small response every time.
  req.resume()
  res.writeHead(200, headers)
  res.end(body)
})
// Keep-alive on, and idle timeout well above the proxies' pools so an upstream never
// closes a pooled socket that a proxy is about to reuse (spurious ECONNRESET).
server.keepAliveTimeout = 120_000
server.headersTimeout = 121_000
server.requestTimeout = 0
server.maxRequestsPerSocket = 0

server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ id, port: server.address().port, pid: process.pid }) + '\n')
})
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0))
