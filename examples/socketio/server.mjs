#!/usr/bin/env node
// A Socket.IO replica for trying Tether with long-lived connections (see README.md here).
//
//   node examples/socketio/server.mjs --id io-0 --port 9101 [--host 127.0.0.1]
//   (or env REPLICA_ID / PORT / HOST; --port 0 picks a free port)
//
// Socket.IO keeps each connection's session in the memory of the replica that made it: a
// polling request (or the WebSocket upgrade) that reaches another replica is answered
// 400 "Session ID unknown". Behind Tether with sticky sessions every request of a client
// reaches the replica that holds its session.
//
//   event 'echo' (msg, ack)  -> ack({ replica, msg, count, transport }), where count is this
//                               connection's own counter (per-connection state)
//   GET /                    -> text: which replica answered
//   GET /healthz             -> 200 ok
//
// Prints one line when listening (with the actual port). Exits 0 on SIGTERM/SIGINT.
import { createServer } from 'node:http'
import { fstatSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { Server } from 'socket.io'

const USAGE = 'usage: node server.mjs --id <replica-id> --port <port> [--host <host>]'

let values
try {
  ;({ values } = parseArgs({
    options: { id: { type: 'string' }, port: { type: 'string' }, host: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    strict: true,
  }))
} catch (err) {
  console.error(`socketio-example: ${err.message}\n${USAGE}`)
  process.exit(2)
}
if (values.help) {
  console.log(USAGE)
  process.exit(0)
}
const id = values.id ?? process.env.REPLICA_ID ?? 'io-0'
const portText = values.port ?? process.env.PORT ?? '9101'
const host = values.host ?? process.env.HOST ?? '127.0.0.1'
if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
  console.error(`socketio-example: invalid port ${JSON.stringify(portText)}\n${USAGE}`)
  process.exit(2)
}

const http = createServer((req, res) => {
  if (req.url === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.end('ok\n')
    return
  }
  res.writeHead(200, { 'content-type': 'text/plain' })
  res.end(`socket.io replica ${id}\n`)
})

const io = new Server(http, { serveClient: false })
io.on('connection', (socket) => {
  socket.data.count = 0
  socket.on('echo', (msg, ack) => {
    socket.data.count++
    if (typeof ack === 'function') {
      ack({ replica: id, msg, count: socket.data.count, transport: socket.conn.transport.name })
    }
  })
})

http.listen(Number(portText), host, () => {
  const addr = http.address()
  const shown = host.includes(':') ? `[${host}]` : host
  console.log(`socket.io replica ${id} listening on http://${shown}:${addr.port}`)
})
http.on('error', (err) => {
  console.error(`socketio-example ${id}: ${err.message}`)
  process.exit(1)
})
const stop = () => {
  io.close()
  http.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 1000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
// started by a test or a script with stdin on a pipe: exit when the parent goes away
const stdin = fstatSync(0, { throwIfNoEntry: false })
if (stdin?.isFIFO() || stdin?.isSocket()) {
  process.stdin.on('end', () => process.exit(0))
  process.stdin.on('error', () => process.exit(0))
  process.stdin.resume()
}
