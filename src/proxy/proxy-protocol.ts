// The PROXY protocol (HAProxy's, versions 1 and 2) in front of a listener (`listen.proxy_protocol`):
// a pure parser of the header a load balancer sends before the client's first byte, and the
// reading of it off each new connection, whose declared source then becomes the socket's
// address for every reader (X-Forwarded-For, the client_ip key, logs). Layer 4 with the
// listeners: no HTTP, no routing; the parser itself does no I/O.
// Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
import net, { type Socket } from 'node:net'
import type { Timers } from '../clock.js'
import type { RefusalCause } from '../observability/events.js'

/** The v2 signature (section 2.2): `\r\n\r\n\0\r\nQUIT\n`. */
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
/** The v1 header's first bytes (section 2.1). */
const V1_PREFIX = Buffer.from('PROXY ', 'latin1')
/** The longest v1 header, CRLF included (section 2.1: "PROXY UNKNOWN" with the longest addresses). */
export const V1_MAX_BYTES = 107
/** The v2 fixed part: signature, version and command, family, length. */
const V2_FIXED = 16
/** Address block lengths of v2's AF_INET and AF_INET6 over STREAM (section 2.2). */
const V2_INET_BYTES = 12
const V2_INET6_BYTES = 36
/**
 * The longest v2 header taken, TLVs included: nginx's NGX_PROXY_PROTOCOL_MAX_HEADER. Balancers
 * send a few dozen bytes of TLVs (AWS's VPC endpoint id, Azure's link id); the length field
 * alone would let a client make Tether wait for, and hold, 64 KiB a connection.
 */
export const V2_MAX_BYTES = 4096
/** Reads of a header still incomplete that are kept apart before they are joined (see ProxyHeaderReader.read). */
const JOIN_EVERY = 16

/** The client a header declares (its source), as Node names a socket's peer. */
export interface DeclaredPeer {
  readonly address: string
  readonly port: number
  readonly family: 'IPv4' | 'IPv6'
}

/**
 * What {@link parseProxyHeader} made of the bytes so far:
 * - `more`: a header may still be complete with more bytes, at least `bytes` in all (a v2
 *   header's declared length: the reader need not look again before);
 * - `bad`: no valid header (`cause` for the metric, `reason` says why for the log);
 * - `ok`: a header of `length` bytes, declaring `peer`, or null: keep the socket's own address
 *   (v1 `UNKNOWN`, v2 `LOCAL`, v2 AF_UNSPEC or AF_UNIX: a balancer's own health check).
 */
export type ProxyHeader =
  | { readonly kind: 'more'; readonly bytes: number }
  | { readonly kind: 'bad'; readonly cause: Exclude<RefusalCause, 'timeout'>; readonly reason: string }
  | { readonly kind: 'ok'; readonly length: number; readonly peer: DeclaredPeer | null }

const MORE: ProxyHeader = { kind: 'more', bytes: 0 }
const bad = (cause: Exclude<RefusalCause, 'timeout'>, reason: string): ProxyHeader => ({ kind: 'bad', cause, reason })

/**
 * The PROXY header at the start of `buf` (v1 or v2, told apart by their first bytes), as the
 * spec's receiver rules: a connection must begin with one, a v1 line is at most 107 bytes and
 * ends in CRLF, a v2 one has version 2 and command LOCAL or PROXY. Addresses are given as Node
 * gives a socket's (dotted IPv4, compressed lower-case IPv6, `::ffff:a.b.c.d` kept as such):
 * the readers normalise them as they do a socket's. Pure.
 * Examples: `PROXY TCP4 203.0.113.7 10.0.0.1 51000 443\r\nGET ...` -> ok, length 43, peer
 * 203.0.113.7:51000; `PROXY TCP4 203.0.113.7` -> more; `GET / HTTP/1.1\r\n` -> bad.
 */
export function parseProxyHeader(buf: Buffer): ProxyHeader {
  if (buf.length === 0) return MORE
  if (buf[0] === V1_PREFIX[0]) {
    const n = Math.min(buf.length, V1_PREFIX.length)
    return buf.subarray(0, n).equals(V1_PREFIX.subarray(0, n)) ? parseV1(buf) : bad('missing', 'no PROXY header')
  }
  const n = Math.min(buf.length, V2_SIGNATURE.length)
  if (!buf.subarray(0, n).equals(V2_SIGNATURE.subarray(0, n))) return bad('missing', 'no PROXY header')
  return parseV2(buf)
}

/** A decimal port, 0..65535, without leading zeros or sign. */
const PORT = /^(?:0|[1-9][0-9]{0,4})$/

function parseV1(buf: Buffer): ProxyHeader {
  const end = buf.indexOf('\r\n', 0, 'latin1')
  if (end < 0 || end + 2 > V1_MAX_BYTES) {
    // no CRLF within the 107 bytes: nothing more can make it a header
    if (buf.length >= V1_MAX_BYTES || (end >= 0 && end + 2 > V1_MAX_BYTES)) return bad('too_long', 'v1 header longer than 107 bytes')
    // a bare LF or CR (or any control byte) cannot be in a header: refused without waiting for more
    for (let i = 0; i < buf.length; i++) {
      if (notV1Byte(buf[i]!) || (buf[i] === 0x0d && i < buf.length - 1)) return bad('malformed', 'malformed v1 header')
    }
    return MORE
  }
  const line = buf.toString('latin1', 0, end)
  const length = end + 2
  const parts = line.split(' ')
  // "PROXY UNKNOWN" may be followed by anything (up to the CRLF): the receiver ignores it
  if (parts[1] === 'UNKNOWN') return [...line].some((c) => notV1Byte(c.charCodeAt(0))) ? bad('malformed', 'malformed v1 header') : { kind: 'ok', length, peer: null }
  if (parts.length !== 6) return bad('malformed', 'malformed v1 header')
  const [, proto, src, dst, sport, dport] = parts as [string, string, string, string, string, string]
  const family = proto === 'TCP4' ? 'IPv4' : proto === 'TCP6' ? 'IPv6' : null
  if (family === null) return bad('malformed', 'malformed v1 header (protocol not TCP4, TCP6 or UNKNOWN)')
  const version = family === 'IPv4' ? 4 : 6
  // (no zone id: isIP accepts `fe80::1%eth0`, which no balancer declares)
  if (net.isIP(src) !== version || net.isIP(dst) !== version || src.includes('%') || dst.includes('%')) return bad('malformed', 'malformed v1 header (address)')
  if (!PORT.test(sport) || !PORT.test(dport) || Number(sport) > 65535 || Number(dport) > 65535) return bad('malformed', 'malformed v1 header (port)')
  return { kind: 'ok', length, peer: { address: canonical(src, family), port: Number(sport), family } }
}

/** A byte that has no place in a v1 header line (control bytes, CR and LF outside its end, non-ASCII). */
function notV1Byte(b: number): boolean {
  return b < 0x20 ? b !== 0x0d : b > 0x7e
}

function parseV2(buf: Buffer): ProxyHeader {
  if (buf.length < V2_FIXED) return MORE
  const verCmd = buf[12]!
  if (verCmd >> 4 !== 2) return bad('malformed', 'v2 header with a version other than 2')
  const command = verCmd & 0x0f
  if (command > 1) return bad('malformed', 'v2 header with a command other than LOCAL or PROXY')
  const famProto = buf[13]!
  const length = V2_FIXED + buf.readUInt16BE(14)
  if (length > V2_MAX_BYTES) return bad('too_long', `v2 header longer than ${V2_MAX_BYTES} bytes`)
  const needs = famProto === 0x11 ? V2_INET_BYTES : famProto === 0x21 ? V2_INET6_BYTES : 0
  if (command === 1 && length - V2_FIXED < needs) return bad('malformed', 'v2 header shorter than its addresses')
  if (buf.length < length) return { kind: 'more', bytes: length }
  // LOCAL (the balancer's own connection), or a family other than TCP over IPv4/IPv6 (UNSPEC,
  // UNIX, UDP): the socket's own address stays, as HAProxy does; TLVs are skipped
  if (command === 0 || needs === 0) return { kind: 'ok', length, peer: null }
  if (famProto === 0x11) {
    const address = `${buf[16]}.${buf[17]}.${buf[18]}.${buf[19]}`
    return { kind: 'ok', length, peer: { address, port: buf.readUInt16BE(24), family: 'IPv4' } }
  }
  const groups: string[] = []
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(16 + 2 * i).toString(16))
  return { kind: 'ok', length, peer: { address: canonical(groups.join(':'), 'IPv6'), port: buf.readUInt16BE(48), family: 'IPv6' } }
}

/** An address as Node names a socket's peer (inet_ntop: `2001:db8::1`, `::ffff:1.2.3.4`). */
function canonical(address: string, family: 'IPv4' | 'IPv6'): string {
  return new net.SocketAddress({ address, family: family === 'IPv4' ? 'ipv4' : 'ipv6' }).address
}

/** Raw sockets whose header was read: what it declared (null: the socket's own address stays). */
const declared = new WeakMap<Socket, DeclaredPeer | null>()

/**
 * `socket` names `peer` as its remote address, port and family from now on, for every reader
 * (own properties over net.Socket's getters, which ask the kernel).
 */
function declarePeer(socket: Socket, peer: DeclaredPeer): void {
  Object.defineProperty(socket, 'remoteAddress', { value: peer.address, configurable: true })
  Object.defineProperty(socket, 'remotePort', { value: peer.port, configurable: true })
  Object.defineProperty(socket, 'remoteFamily', { value: peer.family, configurable: true })
}

/**
 * A TLS connection's socket takes what its raw socket's header declared (Node's TLS socket asks
 * the kernel through the TCP handle, not the raw socket's properties): for the TLS server's
 * 'secureConnection', before its own listener. Node keeps the raw socket as `_parent`, which is
 * not public API: returns false when it is missing or was never read here (the caller closes
 * the connection rather than serve it under the balancer's address).
 */
export function carryDeclaredPeer(tlsSocket: Socket): boolean {
  const raw = (tlsSocket as Socket & { _parent?: unknown })._parent
  if (!(raw instanceof net.Socket) || !declared.has(raw)) return false
  const peer = declared.get(raw)!
  if (peer !== null) declarePeer(tlsSocket, peer)
  return true
}

/** A connection closed before its header was read whole: the cause, the reason told, the TCP peer. */
export type HeaderRefusal = { readonly cause: RefusalCause; readonly reason: string; readonly peer: string | undefined }

/**
 * Read the PROXY header off each new connection of a listener, then hand the socket on, paused,
 * with its bytes past the header put back (`ready`, which resumes it when its next reader reads
 * in JS: Node's HTTP/1.1 server, the h2c sniffing; not Node's TLS, which takes the bytes held in
 * JS, then reads the handle itself: a resumed socket would take the ClientHello from it). A
 * connection without a valid header within `timeoutMs` (timeouts.client_headers) is
 * destroyed without an answer, as nginx 1.22 and
 * HAProxy 2.6 do, and `refused` is told (once per connection; not for one that sent no byte:
 * a balancer's TCP health check, an idle preconnection). Cost: one listener and one timer per
 * connection until its header is read, nothing after.
 * Example: `net.createServer((s) => reader.read(s))` with `ready: (s) => server.emit('connection', s)`.
 */
export class ProxyHeaderReader {
  readonly #timeoutMs: number
  readonly #timers: Timers
  readonly #ready: (socket: Socket) => void
  readonly #refused: (refusal: HeaderRefusal) => void
  /** Connections still reading their header: idle for a graceful stop (see closePending). */
  readonly #pending = new Set<Socket>()

  constructor(timeoutMs: number, timers: Timers, ready: (socket: Socket) => void, refused: (refusal: HeaderRefusal) => void) {
    this.#timeoutMs = timeoutMs
    this.#timers = timers
    this.#ready = ready
    this.#refused = refused
  }

  /** Take a new connection (a net.Server's connection listener). */
  readonly read = (socket: Socket): void => {
    socket.on('error', () => undefined)
    this.#pending.add(socket)
    // the bytes read so far, joined when a header may be complete or every JOIN_EVERY reads: a
    // v2 header sent a byte at a time is neither joined once per byte (time) nor kept as a
    // Buffer a byte (~190 bytes of heap each: 12 MiB for a long one)
    const chunks: Buffer[] = []
    let read = 0
    let needs = 0
    // a connection that sent nothing at all is closed silently, as a silent HTTP/1.1 one (an
    // idle preconnection is no hostile client)
    const timer = this.#timers.setTimeout(() => read === 0 ? socket.destroy() : refuse('timeout', 'no complete PROXY header within timeouts.client_headers'), this.#timeoutMs)
    const refuse = (cause: RefusalCause, reason: string): void => {
      this.#refused({ cause, reason, peer: socket.remoteAddress })
      socket.destroy()
    }
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk)
      read += chunk.length
      if (read < needs) {
        if (chunks.length >= JOIN_EVERY) chunks.splice(0, chunks.length, Buffer.concat(chunks, read))
        return
      }
      const head = chunks.length === 1 ? chunk : Buffer.concat(chunks, read)
      chunks.length = 0
      chunks.push(head)
      const header = parseProxyHeader(head)
      if (header.kind === 'more') return void (needs = header.bytes)
      socket.off('data', onData)
      this.#timers.clearTimeout(timer)
      if (header.kind === 'bad') return refuse(header.cause, header.reason)
      this.#pending.delete(socket)
      socket.pause()
      declared.set(socket, header.peer)
      if (header.peer !== null) declarePeer(socket, header.peer)
      if (header.length < head.length) socket.unshift(head.subarray(header.length))
      this.#ready(socket)
    }
    socket.on('data', onData)
    socket.once('close', () => {
      this.#pending.delete(socket)
      this.#timers.clearTimeout(timer)
    })
  }

  /** Close the connections still reading their header (a graceful stop: they are idle). */
  closePending(): void {
    for (const socket of this.#pending) socket.destroy()
    this.#pending.clear()
  }
}
