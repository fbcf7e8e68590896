#!/usr/bin/env node
// Tether demo app: one "stateful" replica per process, no dependencies.
//
//   node examples/demo-app/server.mjs --id app-0 --port 9001 [--host 127.0.0.1]
//   (or env REPLICA_ID / PORT / HOST; --port 0 picks a free port)
//
// Each replica keeps a per-user visit counter in its own memory, so a user who is
// bounced between replicas sees the count restart: exactly what sticky sessions fix.
// The user is identified by the `demo_user` cookie, set on the first visit.
//
// It also speaks Tether's state protocol: every answer checkpoints the user's counter in
// `X-Tether-State` (with `X-Tether-State-Version` = the count), and a request that arrives
// with `X-Tether-Rehydrate` (the user moved here from a dead or drained replica) restores
// the counter from it first, so the count continues instead of restarting.
//
//   GET /          text: "replica app-0 served you; your visit count on this replica: 3"
//                  JSON ({replica, user, visits}) with `Accept: application/json` or ?format=json
//   GET /healthz   200 ok
//
// Prints one line when listening (with the actual port) and nothing per request.
// Exits 0 on SIGTERM/SIGINT.

import { createServer } from 'node:http'
import { randomBytes } from 'node:crypto'
import { parseArgs } from 'node:util'

const USAGE = 'usage: node server.mjs --id <replica-id> --port <port> [--host <host>]'

function parseOptions() {
  let values
  try {
    ;({ values } = parseArgs({
      options: {
        id: { type: 'string' },
        port: { type: 'string' },
        host: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }))
  } catch (err) {
    console.error(`demo-app: ${err.message}\n${USAGE}`)
    process.exit(2)
  }
  if (values.help) {
    console.log(USAGE)
    process.exit(0)
  }
  const id = values.id ?? process.env.REPLICA_ID ?? 'app-0'
  const portText = values.port ?? process.env.PORT ?? '9001'
  const port = Number(portText)
  if (!/^\d+$/.test(portText) || port > 65535) {
    console.error(`demo-app: invalid port ${JSON.stringify(portText)}\n${USAGE}`)
    process.exit(2)
  }
  const host = values.host ?? process.env.HOST ?? '127.0.0.1'
  return { id, port, host }
}

const COOKIE = 'demo_user'

/** Value of one cookie from a Cookie header, or undefined. */
function readCookie(header, name) {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq === -1) continue
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

const USER_ID = /^[A-Za-z0-9_-]{1,64}$/

function wantsJson(req, url) {
  if (url.searchParams.get('format') === 'json') return true
  const accept = req.headers.accept ?? ''
  return /\bapplication\/json\b/i.test(accept)
}

const { id, port, host } = parseOptions()
/** user id -> visits on this replica */
const visits = new Map()

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost')

  if (url.pathname === '/healthz') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
    res.end('ok\n')
    return
  }

  if (url.pathname !== '/') {
    res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
    res.end('not found\n')
    return
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain; charset=utf-8' })
    res.end('method not allowed\n')
    return
  }

  const headers = { 'cache-control': 'no-store', 'x-demo-replica': id }
  let user = readCookie(req.headers.cookie, COOKIE)
  if (!user || !USER_ID.test(user)) {
    user = randomBytes(9).toString('base64url')
    headers['set-cookie'] = `${COOKIE}=${user}; Path=/; HttpOnly; SameSite=Lax`
  }
  const rehydrate = req.headers['x-tether-rehydrate']
  if (typeof rehydrate === 'string') {
    try {
      const saved = JSON.parse(Buffer.from(rehydrate, 'base64url').toString())
      if (saved.user === user && Number.isInteger(saved.visits) && saved.visits > (visits.get(user) ?? 0)) {
        visits.set(user, saved.visits)
      }
    } catch {
      // a state this app cannot read: start afresh
    }
  }
  const count = (visits.get(user) ?? 0) + 1
  visits.set(user, count)
  headers['x-tether-state'] = Buffer.from(JSON.stringify({ user, visits: count })).toString('base64url')
  headers['x-tether-state-version'] = String(count)
  if (typeof rehydrate === 'string') headers['x-demo-rehydrated'] = 'yes'

  let body
  if (wantsJson(req, url)) {
    headers['content-type'] = 'application/json'
    body = JSON.stringify({ replica: id, user, visits: count, rehydrated: typeof rehydrate === 'string' }) + '\n'
  } else {
    headers['content-type'] = 'text/plain; charset=utf-8'
    body = `replica ${id} served you; your visit count on this replica: ${count}\n`
  }
  headers['content-length'] = Buffer.byteLength(body)
  res.writeHead(200, headers)
  res.end(req.method === 'HEAD' ? undefined : body)
})

server.keepAliveTimeout = 10_000

server.on('error', (err) => {
  console.error(`demo-app ${id}: cannot listen on ${host}:${port}: ${err.message}`)
  process.exit(1)
})

server.listen(port, host, () => {
  const addr = server.address()
  const shownHost = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address
  console.log(`demo-app ${id} listening on http://${shownHost}:${addr.port}`)
})

let stopping = false
function stop() {
  if (stopping) return
  stopping = true
  server.close(() => process.exit(0))
  server.closeAllConnections()
  // Belt and braces: never hang on shutdown.
  setTimeout(() => process.exit(0), 2_000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
