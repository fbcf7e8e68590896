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
// the counter from it first, so the count continues instead of restarting. The move
// itself (`X-Tether-Moved: from=app-1; reason=dead; epoch=1`, which Tether sends to the
// new replica only) is shown to the user in the answer and in `X-Demo-Moved`.
//
//   GET /          text: "replica app-0 served you; your visit count: 3", plus a note in
//                  parentheses when the user just moved here or was unknown here;
//                  JSON ({replica, pid, user, visits, rehydrated, moved}) with
//                  `Accept: application/json` or ?format=json
//   GET /pid       this process's pid, as text (through Tether: the pid of the user's
//                  replica, for `kill -9 $(curl -s -b jar http://127.0.0.1:8080/pid)`)
//   GET /healthz   200 ok
//
// Prints one line when listening (with the actual port), then one line per user who
// moved here ("user ... moved here from app-1 (dead, epoch 1): 3 visits restored"), and
// nothing per ordinary request. Exits 0 on SIGTERM/SIGINT.

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

/** What each X-Tether-Moved reason means, for the answer's note. */
const REASONS = new Map([
  ['dead', ', which is down'],
  ['drain', ', which is draining'],
  ['rebalance', ' by a rebalance'],
])

/**
 * `X-Tether-Moved: from=app-1; reason=dead; epoch=1` as { from, reason, epoch }, or null
 * when absent or not in that shape (only Tether sends it; a direct caller could send any
 * text, and none of it may reach a response header or the log unchecked).
 */
function parseMoved(header) {
  if (typeof header !== 'string') return null
  const m = /^from=([\w.:[\]-]{1,128}); reason=([a-z_]{1,32}); epoch=(\d{1,15})$/.exec(header.trim())
  return m ? { from: m[1], reason: m[2], epoch: Number(m[3]) } : null
}

/** The saved visit count for `user` in an X-Tether-Rehydrate value, or null. */
function savedVisits(header, user) {
  if (typeof header !== 'string') return null
  try {
    const saved = JSON.parse(Buffer.from(header, 'base64url').toString())
    return saved?.user === user && Number.isSafeInteger(saved.visits) && saved.visits > 0 ? saved.visits : null
  } catch {
    return null // a state this app cannot read: start afresh
  }
}

const { id, port, host } = parseOptions()
/** user id -> visits */
const visits = new Map()

const server = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost')

  if (url.pathname === '/healthz' || url.pathname === '/pid') {
    res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' })
    res.end(url.pathname === '/pid' ? `${process.pid}\n` : 'ok\n')
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
  const returning = user !== undefined && USER_ID.test(user)
  if (!returning) {
    user = randomBytes(9).toString('base64url')
    headers['set-cookie'] = `${COOKIE}=${user}; Path=/; HttpOnly; SameSite=Lax`
  }
  const known = visits.has(user)
  const moved = parseMoved(req.headers['x-tether-moved'])
  const rehydrate = req.headers['x-tether-rehydrate']
  const saved = savedVisits(rehydrate, user)
  const restored = saved !== null && saved > (visits.get(user) ?? 0)
  if (restored) visits.set(user, saved)
  const count = (visits.get(user) ?? 0) + 1
  visits.set(user, count)
  headers['x-tether-state'] = Buffer.from(JSON.stringify({ user, visits: count })).toString('base64url')
  headers['x-tether-state-version'] = String(count)
  if (restored) headers['x-demo-rehydrated'] = 'yes'

  // A note for the user when their count did not simply grow here.
  let note = ''
  if (moved !== null) {
    headers['x-demo-moved'] = `from=${moved.from}; reason=${moved.reason}; epoch=${moved.epoch}`
    const why = REASONS.get(moved.reason) ?? `, reason ${moved.reason}`
    note = ` (moved from ${moved.from}${why}; ${restored ? 'count restored' : 'no saved count'})`
    console.log(
      `user ${user} moved here from ${moved.from} (${moved.reason}, epoch ${moved.epoch}): ` +
        (restored ? `${saved} visits restored` : 'no saved count'),
    )
  } else if (returning && !known && !restored) {
    note = ' (this replica did not know you: count restarted)'
  }

  let body
  if (wantsJson(req, url)) {
    headers['content-type'] = 'application/json'
    body = JSON.stringify({ replica: id, pid: process.pid, user, visits: count, rehydrated: restored, moved }) + '\n'
  } else {
    headers['content-type'] = 'text/plain; charset=utf-8'
    body = `replica ${id} served you; your visit count: ${count}${note}\n`
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
