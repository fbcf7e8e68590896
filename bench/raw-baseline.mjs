// Ceiling contestants: how cheap could a sticky proxy on Node be if it left node:http and undici
// for plain `net` sockets? The bytes still go through Node's streams and libuv; the HTTP/1 work is
// the least a keep-alive GET needs (find the head's end, split its lines, drop hop-by-hop names,
// hash the `tether` cookie, frame the answer by Content-Length). NOT a proxy anyone should run:
// no request bodies, no chunked answers, no limits beyond a 64 KB head, no timeouts, no checks.
// It answers what a raw-socket data path could buy before anyone builds one.
//
// Three modes, to tell which half costs what:
//   raw           raw client side   + raw upstream side
//   raw-server    raw client side   + undici Pool.dispatch (as Tether and the undici contestant)
//   raw-upstream  node:http server  + raw upstream side
// Usage: node bench/raw-baseline.mjs <port> <mode> <upstreamUrl>...
import http from 'node:http'
import net from 'node:net'
import { Pool } from 'undici'

const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-connection'])
const MAX_HEAD = 65536

/** Index of the upstream for a Cookie header value: the same hash as undici-baseline.mjs. */
function pick(cookie, n) {
  const at = cookie === undefined ? -1 : cookie.indexOf('tether=')
  if (at < 0) return 0
  let h = 0
  for (let i = at + 7; i < cookie.length && cookie.charCodeAt(i) !== 59; i++) h = (h * 31 + cookie.charCodeAt(i)) | 0
  return (h >>> 0) % n
}

// ---- raw upstream side: one list of idle keep-alive sockets per upstream ----

class RawUpstream {
  constructor(url) {
    const u = new URL(url)
    this.port = Number(u.port)
    this.host = u.hostname
    this.idle = []
  }
  /** Sends `head` (a whole request head, GET, no body); `done(err, status, headLines, body)`. */
  send(head, done) {
    const conn = this.idle.pop() ?? new RawConn(this)
    conn.start(head, done)
  }
}

class RawConn {
  constructor(up) {
    this.up = up
    this.done = null
    this.buf = null
    this.need = -1 // body bytes still to come; -1 while the head is being read
    this.head = null
    this.status = 0
    this.body = []
    this.socket = net.connect(up.port, up.host)
    this.socket.setNoDelay(true)
    this.socket.on('data', (chunk) => this.onData(chunk))
    this.socket.on('error', (err) => this.fail(err))
    this.socket.on('close', () => this.fail(new Error('upstream closed')))
  }
  start(head, done) {
    this.done = done
    this.socket.write(head, 'latin1')
  }
  fail(err) {
    const i = this.up.idle.indexOf(this)
    if (i >= 0) this.up.idle.splice(i, 1)
    const done = this.done
    this.done = null
    if (done) done(err)
  }
  onData(chunk) {
    if (this.need < 0) {
      const buf = this.buf ? Buffer.concat([this.buf, chunk]) : chunk
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) {
        this.buf = buf
        if (buf.length > MAX_HEAD) this.socket.destroy()
        return
      }
      this.buf = null
      const lines = buf.latin1Slice(0, end).split('\r\n')
      this.status = Number(lines[0].slice(9, 12))
      let length = -1
      const kept = []
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i]
        const colon = line.indexOf(':')
        const name = line.slice(0, colon).toLowerCase()
        if (name === 'content-length') length = Number(line.slice(colon + 1))
        if (HOP.has(name)) continue
        kept.push(line)
      }
      if (length < 0) return this.socket.destroy(new Error('ceiling contestant: Content-Length answers only'))
      this.head = kept
      this.need = length
      chunk = buf.subarray(end + 4)
    }
    if (chunk.length > 0) {
      this.body.push(chunk)
      this.need -= chunk.length
    }
    if (this.need > 0) return
    const done = this.done
    const body = this.body.length === 1 ? this.body[0] : Buffer.concat(this.body)
    const head = this.head
    this.done = null
    this.body = []
    this.head = null
    this.need = -1
    this.up.idle.push(this)
    done(null, this.status, head, body)
  }
}

// ---- undici upstream side: the same dispatch API as Tether ----

class UndiciUpstream {
  constructor(url) {
    this.pool = new Pool(url, { pipelining: 1, keepAliveTimeout: 4_000 })
  }
  /** `headers` is a flat name/value array; `done(err, status, headLines, body)`. */
  dispatch(method, path, headers, done) {
    this.pool.dispatch({ path, method, headers, body: null }, new CollectHandler(done))
  }
}

class CollectHandler {
  constructor(done) {
    this.done = done
    this.status = 0
    this.head = null
    this.body = []
  }
  onRequestStart() {}
  onResponseStart(_controller, status, headers) {
    this.status = status
    const lines = []
    for (const name in headers) if (!HOP.has(name)) lines.push(`${name}: ${headers[name]}`)
    this.head = lines
  }
  onResponseData(_controller, chunk) {
    this.body.push(chunk)
  }
  onResponseEnd() {
    this.done(null, this.status, this.head, this.body.length === 1 ? this.body[0] : Buffer.concat(this.body))
  }
  onResponseError(_controller, err) {
    this.done(err)
  }
}

// ---- raw client side ----

function serveRaw(upstreams, useUndici) {
  return (socket) => {
    socket.setNoDelay(true)
    socket.on('error', () => {})
    let buf = null
    let busy = false
    let close = false
    const answer = (err, status, head, body) => {
      if (err) {
        socket.end('HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
        return
      }
      socket.cork()
      socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n${head.join('\r\n')}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`, 'latin1')
      socket.write(body)
      socket.uncork()
      busy = false
      if (close) socket.end()
      else if (buf) next()
    }
    const next = () => {
      const end = buf.indexOf('\r\n\r\n')
      if (end < 0) {
        if (buf.length > MAX_HEAD) socket.destroy()
        return
      }
      const lines = buf.latin1Slice(0, end).split('\r\n')
      buf = end + 4 === buf.length ? null : buf.subarray(end + 4)
      busy = true
      const first = lines[0]
      const sp1 = first.indexOf(' ')
      const sp2 = first.lastIndexOf(' ')
      let cookie
      const kept = useUndici ? [] : [first]
      for (let i = 1; i < lines.length; i++) {
        const line = lines[i]
        const colon = line.indexOf(':')
        const name = line.slice(0, colon).toLowerCase()
        if (name === 'content-length' || name === 'transfer-encoding') {
          socket.end('HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n')
          return
        }
        if (HOP.has(name)) {
          if (name === 'connection' && /close/i.test(line)) close = true
          continue
        }
        if (name === 'cookie') cookie = line.slice(colon + 1).trim()
        if (useUndici) kept.push(line.slice(0, colon), line.slice(colon + 1).trim())
        else kept.push(line)
      }
      const up = upstreams[pick(cookie, upstreams.length)]
      if (useUndici) up.dispatch(first.slice(0, sp1), first.slice(sp1 + 1, sp2), kept, answer)
      else up.send(kept.join('\r\n') + '\r\n\r\n', answer)
    }
    socket.on('data', (chunk) => {
      buf = buf ? Buffer.concat([buf, chunk]) : chunk
      if (!busy) next()
    })
  }
}

// ---- node:http client side over the raw upstream side ----

function serveHttp(upstreams) {
  return (req, res) => {
    if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) {
      res.writeHead(501, { 'content-length': 0 }).end()
      return
    }
    const raw = req.rawHeaders
    let head = `${req.method} ${req.url} HTTP/1.1\r\n`
    for (let i = 0; i < raw.length; i += 2) if (!HOP.has(raw[i].toLowerCase())) head += `${raw[i]}: ${raw[i + 1]}\r\n`
    upstreams[pick(req.headers.cookie, upstreams.length)].send(head + '\r\n', (err, status, lines, body) => {
      if (err) {
        if (!res.headersSent) res.writeHead(502).end()
        return
      }
      const flat = []
      for (const line of lines) {
        const colon = line.indexOf(':')
        flat.push(line.slice(0, colon), line.slice(colon + 1).trim())
      }
      res.writeHead(status, flat)
      res.end(body)
    })
  }
}

const port = Number(process.argv[2])
const mode = process.argv[3]
const targets = process.argv.slice(4)
if (!port || targets.length === 0 || !['raw', 'raw-server', 'raw-upstream'].includes(mode)) {
  throw new Error('usage: raw-baseline.mjs <port> raw|raw-server|raw-upstream <upstreamUrl>...')
}
const server =
  mode === 'raw-upstream'
    ? http.createServer(serveHttp(targets.map((t) => new RawUpstream(t))))
    : net.createServer(serveRaw(mode === 'raw' ? targets.map((t) => new RawUpstream(t)) : targets.map((t) => new UndiciUpstream(t)), mode === 'raw-server'))
server.listen(port, '127.0.0.1')
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0))
