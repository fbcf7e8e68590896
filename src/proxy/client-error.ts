// Requests Node's HTTP parser refused (the server's 'clientError'): a malformed head gets its
// catalogue answer on the raw socket; a malformed body of a request already being forwarded
// is handed back to that request's path, which answers 400 (or 501) and closes. A connection
// that never sent a byte is closed silently. A request refused here is counted (no upstream; in
// tether_client_requests_total too, protocol `none` when its head was not read) and gets an
// access line, as nginx logs its 400s. Owns no timers; never lets an error end the process.
import { METHODS, type IncomingMessage, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { ERRORS, type ErrorCode } from '../errors.js'
import type { ProxyEvents, RefusalCause } from '../observability/events.js'
import type { Logger } from '../observability/logger.js'
import { waitsItsTurn, whenIdle } from './pipelining.js'
import { writeRawError } from './respond.js'

/** How a request path stops a request whose body the parser refused (it answers `code` and closes). */
export type AbortRequest = (code: ErrorCode) => void

/**
 * The catalogue code for a parser error (Node's `HPE_*` and request timeout codes). `raw` and
 * `at`: the bytes the parser held and where it stopped (the error's `rawPacket` and
 * `bytesParsed`), read only for an invalid method; `reason`: the error's (Node's `err.reason`).
 */
export function clientErrorCode(code: string | undefined, raw?: Buffer, at?: number, reason?: string): ErrorCode {
  switch (code) {
    case 'HPE_INVALID_METHOD':
      return raw !== undefined && unknownMethod(raw, at ?? 0) ? 'TETHER_UNKNOWN_METHOD' : 'TETHER_BAD_REQUEST'
    // an RTSP method with `HTTP/` (`ANNOUNCE /z HTTP/1.1`): llhttp knows the method only for
    // RTSP and refuses it at the version, but it is a valid token Node's http cannot carry, as
    // an unknown one (nginx and HAProxy forward it): 501 when the line has a request line's form
    case 'HPE_INVALID_CONSTANT':
      return reason === HTTP_WITH_RTSP_METHOD && raw !== undefined && unknownMethod(raw, at ?? 0) ? 'TETHER_UNKNOWN_METHOD' : 'TETHER_BAD_REQUEST'
    case 'HPE_HEADER_OVERFLOW':
      return 'TETHER_HEADERS_TOO_LARGE'
    case 'ERR_HTTP_REQUEST_TIMEOUT':
    case 'HPE_HEADERS_TIMEOUT':
      return 'TETHER_CLIENT_TIMEOUT'
    // llhttp's own Transfer-Encoding refusals (with Content-Length, chunked not last) are
    // faulty framing: 400 (RFC 9112 section 6.3); unknown codings are answered 501 by the request path
    default:
      return 'TETHER_BAD_REQUEST'
  }
}

/** The start of a request line up to its target's first byte (no header line has a space before its colon). */
const REQUEST_LINE_OPENING = /^[A-Z][A-Z0-9_-]* +[\x21-\x7e]/
/**
 * The same at the start of a read, where a request line may begin (a connection's first read, a
 * kept-alive connection's next request, what follows a PROXY header) or a head sent in pieces may
 * go on: only a method Node knows, then the first byte of a target's forms (`/`, `*`, a scheme,
 * CONNECT's host: a name, an address or `[` an IPv6 one). A head sent in pieces whose later read
 * opens so inside a header value that crosses the limit gets the 414 too (both refuse the head).
 */
const READ_OPENING_LINE = new RegExp(`^(?:${METHODS.join('|')}) +[/*A-Za-z0-9[]`)

/**
 * Did the head go over `limits.max_header_bytes` (HPE_HEADER_OVERFLOW, at `at` of the read
 * `raw`) inside its request line, i.e. in the request target? Node counts the target with the
 * header fields and stops at the byte that crosses the limit, so a target too long is refused
 * in its own line: no LF lies between the line's opening (`GET /`) and `at`. RFC 9112 section 3
 * wants `414 URI Too Long` for it (nginx 1.22 answers so; Node's 431 would send a client looking
 * for a header to cut). Told only where the line's start is in `raw`: after an LF, or at the start
 * of `raw` when a request line opens it (see READ_OPENING_LINE); a target the client sent over
 * several reads, whose line began in an earlier one (over TLS, one longer than a TLS record's
 * 16 KB), keeps the 431. Read only on that refusal.
 * Example: `('GET /aaaa...aaa', 16380)` -> true; `('GET / HTTP/1.1\r\nX-Big: aaa...', 16390)` -> false.
 */
export function overflowInRequestLine(raw: Buffer, at: number): boolean {
  const end = Math.min(at, raw.length)
  const lf = end <= 0 ? -1 : raw.lastIndexOf(0x0a, end - 1)
  if (lf < 0) return READ_OPENING_LINE.test(raw.toString('latin1', 0, Math.min(end, 41)))
  return REQUEST_LINE_OPENING.test(raw.toString('latin1', lf + 1, Math.min(end, lf + 41)))
}

/** llhttp 9's reason for an RTSP-only method in an HTTP/ request line (HPE_INVALID_CONSTANT). */
const HTTP_WITH_RTSP_METHOD = 'Invalid method for HTTP/x.x request'

/**
 * A whole request line whose method has the form of every registered method (RFC 9110 section
 * 16.1: upper-case token), a target of visible characters and an HTTP/1.x version (RFC 9112
 * section 3).
 */
const REQUEST_LINE = /^[A-Z][A-Z0-9_-]* [\x21-\x7e]+ HTTP\/1\.[01]$/
/** The start of one (`FOO /x HT`): a line the client sends in pieces, cut where the parser stopped reading. */
const REQUEST_LINE_START = /^[A-Z][A-Z0-9_-]* (?:[\x21-\x7e]+(?: (?:H(?:T(?:T(?:P(?:\/(?:1(?:\.[01]?)?)?)?)?)?)?)?)?)?$/

/**
 * Does the request line the parser stopped in (at `at` of `raw`) have a method of the
 * registered form that Node's parser does not know (llhttp accepts only the methods it lists),
 * and otherwise the form of a request line? Such a method is a valid token a proxy would
 * forward (RFC 9110 section 9.1; nginx and HAProxy do): Tether cannot, and says so with 501
 * (RFC 9110 section 15.6.2) rather than calling the request malformed. Other bytes (`get`, a
 * TLS handshake, another protocol's line such as SMTP's `EHLO example.com` or Redis's
 * `SET foo bar`, control bytes in the target, a line over 8 KiB) are not: 400, as nginx answers
 * them. A line not whole in `raw` (sent in pieces) is judged by what it has.
 */
export function unknownMethod(raw: Buffer, at: number): boolean {
  const end = Math.min(at, raw.length)
  const start = end <= 0 ? 0 : raw.lastIndexOf(0x0a, end - 1) + 1 // a negative offset would count from the end
  let stop = raw.indexOf(0x0a, start)
  // the line goes on past what the parser held (it refuses a method at its first bytes, so a
  // line sent in pieces is cut): what is there must begin a request line
  const whole = stop >= 0
  if (!whole) stop = raw.length
  if (stop - start > 8192) return false
  if (stop > start && raw[stop - 1] === 0x0d) stop--
  return (whole ? REQUEST_LINE : REQUEST_LINE_START).test(raw.toString('latin1', start, stop))
}

/**
 * What an access line tells of a head the parser refused: its request line's method and target
 * (`method` null: the line is not a request line, and `path` is the line as sent, as nginx's
 * `$request` holds what it got), escaped (see {@link escapeRequestBytes}).
 */
export interface RefusedLine {
  readonly method: string | null
  readonly path: string
}

/** The most bytes of a refused head's first line an access line quotes. */
export const REFUSED_LINE_MAX_BYTES = 1024

/**
 * llhttp's errors in the request line itself (or, HPE_UNEXPECTED_SPACE, at the first byte after
 * it), as llhttp 9.3 (Node 20) raises them: each code, with the reasons (Node's `err.reason`)
 * that place it there when the code alone does not (null: any reason). HPE_INVALID_CONSTANT is
 * a protocol other than `HTTP/` (`GET / HTPP/1.1`) or an RTSP method with it (`ANNOUNCE / HTTP/1.1`);
 * HPE_STRICT is also a header's (`Expected LF after headers`) or a chunk's, so only its
 * request-line reason counts; HPE_UNEXPECTED_SPACE is a space opening the line after the request
 * line (an obs-fold of no header: nginx logs that request's method and target too). A reason
 * another llhttp words differently gives null, never a header: it fails safe.
 */
const REQUEST_LINE_ERRORS: ReadonlyMap<string, ReadonlySet<string> | null> = new Map([
  ['HPE_INVALID_METHOD', null],
  ['HPE_INVALID_URL', null],
  ['HPE_INVALID_VERSION', null],
  ['HPE_INVALID_CONSTANT', new Set(['Expected HTTP/, RTSP/ or ICE/', HTTP_WITH_RTSP_METHOD, 'Invalid method for RTSP/x.x request', 'Expected SOURCE method for ICE/x.x request'])],
  ['HPE_STRICT', new Set(['Expected CRLF after version'])],
  ['HPE_UNEXPECTED_SPACE', new Set(['Unexpected space after start line'])],
])

/** Whether llhttp's error `code` with `reason` is in the request line (see {@link REQUEST_LINE_ERRORS}). */
export function inRequestLine(code: string | undefined, reason: string | undefined): boolean {
  if (code === undefined) return false
  const reasons = REQUEST_LINE_ERRORS.get(code)
  return reasons === null || (reasons !== undefined && reason !== undefined && reasons.has(reason))
}

/** A request line: a method token (RFC 9110 section 5.6.2), a target without a space, an optional version (RFC 9112 section 3). */
const REQUEST_LINE_PARTS = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^ ]+)(?: HTTP\/[0-9]\.[0-9])?$/
/** The same line cut at {@link REFUSED_LINE_MAX_BYTES}: its target runs to the cut. */
const CUT_REQUEST_LINE_PARTS = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) ([^ ]+)$/

/**
 * `text` (bytes as latin1) with each byte outside visible ASCII and space, and `"` and `\`,
 * written `\xHH`, as nginx's access log escapes its `$request` (`escape=default`): the value
 * holds no control byte, no byte that is not UTF-8, and a `\` always begins an escape.
 * Example: `escapeRequestBytes('GET /a\x01"b')` -> `GET /a\x01\x22b`.
 */
export function escapeRequestBytes(text: string): string {
  return text.replace(/[^\x20-\x7e]|["\\]/g, (c) => `\\x${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')}`)
}

/**
 * The methods llhttp 9 (Node 20) parses: Node's list, and the RTSP ones, and `PRI` (the HTTP/2
 * preface's). An error past the method (any code but HPE_INVALID_METHOD) means the parser took
 * one of these; a line whose method is another did not begin where {@link requestLineStart} says.
 */
const LLHTTP_METHODS: ReadonlySet<string> = new Set([...METHODS, 'PRI', 'DESCRIBE', 'ANNOUNCE', 'SETUP', 'PLAY', 'PAUSE', 'TEARDOWN', 'GET_PARAMETER', 'SET_PARAMETER', 'REDIRECT', 'RECORD', 'FLUSH'])

/** A line of header-field shape (`Name:`, RFC 9112 section 5): never logged as a request line. */
const HEADER_LINE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+:/

/**
 * The first line of a head the parser refused, for its access line, or null when it cannot be
 * told for certain. `raw` and `at`: the bytes the parser held and where it stopped (the error's
 * `rawPacket`, the read it failed in, and `bytesParsed`); `whole`: `raw` is all the connection
 * sent, so the head begins at its start (after empty lines, RFC 9112 section 2.2); `code` and
 * `reason`: the parser's error code and reason. Else only an error in the request line itself (a
 * bad method, target, protocol or version, a CR not followed by LF after it: see
 * {@link inRequestLine}) tells where that line is (see {@link requestLineStart}), and its line is logged only
 * when it began in this read (after an LF in `raw`: one that begins at the read's start may have
 * begun in an earlier one, and its method and target would be made up) and has the shape of a
 * request line, with a method llhttp parses unless the parser refused the method itself (see
 * {@link LLHTTP_METHODS}). A header's error in a head read in several pieces, or behind another request,
 * gives null: the bytes before it may be a header's (an Authorization's value), which is never
 * logged, and so does a first line of a header's shape. Only the line is read, to its first CR
 * or LF, at most {@link REFUSED_LINE_MAX_BYTES}.
 * Example: `("GET /x HTTP/1.1\r\nBad Header: s\r\n\r\n", 26, true, 'HPE_INVALID_HEADER_TOKEN')` -> `{ method: 'GET', path: '/x' }`.
 */
export function refusedLine(raw: Buffer | undefined, at: number, whole: boolean, code: string | undefined, reason?: string): RefusedLine | null {
  if (raw === undefined) return null
  let start: number
  if (whole) {
    start = 0
    while (start < raw.length && (raw[start] === 0x0d || raw[start] === 0x0a)) start++
  } else if (code !== undefined && inRequestLine(code, reason)) {
    start = requestLineStart(raw, at, code)
    if (start <= 0) return null
  } else return null
  let end = start
  const limit = Math.min(raw.length, start + REFUSED_LINE_MAX_BYTES)
  while (end < limit && raw[end] !== 0x0d && raw[end] !== 0x0a) end++
  if (end === start) return null
  const line = raw.toString('latin1', start, end)
  const parts = (end === limit && end < raw.length && raw[end] !== 0x0d && raw[end] !== 0x0a ? CUT_REQUEST_LINE_PARTS : REQUEST_LINE_PARTS).exec(line)
  // past its method the parser accepted that method: one it does not know was not read as one
  // (bytes before the line glued to it, a start taken too early), so the line is not logged
  if (parts !== null && (code === 'HPE_INVALID_METHOD' || LLHTTP_METHODS.has(parts[1]!))) return { method: parts[1]!, path: escapeRequestBytes(parts[2]!) }
  // no request line: the line as sent only where it is certainly the connection's first (a
  // TLS handshake), never a line of a header's shape
  return whole && !HEADER_LINE.test(line) ? { method: null, path: escapeRequestBytes(line) } : null
}

/**
 * Where the request line the parser refused (`code`, one of {@link REQUEST_LINE_ERRORS}, at
 * `at` of `raw`) begins in `raw`: after the last LF before the last byte the parser took. That
 * byte is `at`'s for a bad method (refused at its first byte, which may begin the line) and the
 * one before `at` for the others: llhttp 9 refuses a request line ended by a lone LF (or
 * `PRI * HTTP/2.0` without the HTTP/2 preface) at the byte after that LF, the next line's first
 * (a header's), so the line the parser was in is the one that LF ends; a CR not followed by LF
 * (HPE_STRICT) at the byte after the CR. A space opening the next line (HPE_UNEXPECTED_SPACE) is
 * refused past that space: the last byte of the request line's is the one before it, the LF.
 * 0: the line begins
 * at the read's start (or no LF precedes it), so it may have begun in an earlier read.
 * Example: `("GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\nAuthorization: x", 35, 'HPE_INVALID_VERSION')` -> 19.
 */
export function requestLineStart(raw: Buffer, at: number, code: string): number {
  const last = Math.min(code === 'HPE_INVALID_METHOD' ? at : code === 'HPE_UNEXPECTED_SPACE' ? at - 2 : at - 1, raw.length - 1)
  // lastIndexOf counts a negative offset from the end: none before the read's first byte
  return last <= 0 ? 0 : raw.lastIndexOf(0x0a, last - 1) + 1
}

type ServerSocket = Socket & { _httpMessage?: ServerResponse | null; parser?: { incoming?: IncomingMessage | null } | null }

/**
 * Example (composition root): `server.on('clientError', clientErrors.handle)`; the request
 * path calls `clientErrors.track(req, (code) => ...)` for a request with a body.
 */
export class ClientErrors {
  readonly #aborts = new WeakMap<IncomingMessage, AbortRequest>()
  /** Requests answered whose body's rest is read and dropped: an error in it closes the connection. */
  readonly #dropping = new WeakSet<IncomingMessage>()
  /** Connections whose malformed next request is answered once the answer going out is done. */
  readonly #answering = new WeakSet<Socket>()
  /**
   * Requests queued behind the one being answered (pipelined) whose body the parser refused
   * before their path began: the path stops them at once when it registers (see track).
   */
  readonly #failed = new WeakMap<IncomingMessage, ErrorCode>()
  readonly #logger: Logger
  readonly #events: Pick<ProxyEvents, 'observeRequest' | 'clientProtocol' | 'proxyHeaderRefused'>
  readonly #access: () => boolean

  /** `access`: whether access lines are written now (`log.access`, which a reload may change). */
  constructor(logger: Logger, events: Pick<ProxyEvents, 'observeRequest' | 'clientProtocol' | 'proxyHeaderRefused'>, access: () => boolean) {
    this.#logger = logger
    this.#events = events
    this.#access = access
  }

  /**
   * Answer `code` on the raw socket and close it, and count and log the refused request: it
   * reached no upstream; its method and path are `req`'s when given, else `line`'s (what the
   * parser's refused head showed of its request line), else unknown. Not counted when the socket
   * could take no answer.
   */
  refuse(socket: Duplex, code: ErrorCode, req?: IncomingMessage, line?: RefusedLine | null): void {
    const sent = socket.writable // else writeRawError only closes it: no answer to count
    writeRawError(socket, code, { close: true })
    if (sent) this.refused(code, req, 'http', socket, line)
  }

  /**
   * Count and log a request refused before any request path saw it, answered `code` (see
   * refuse; also the listener's own refusals). `req`: its head, when it was read whole;
   * `protocol`: 'websocket' for an upgrade refused before it reached an upstream; `socket`: the
   * client's connection (default `req`'s), whose address the access line names; `line`: without
   * `req`, the request line of the head the parser refused (see {@link refusedLine}).
   */
  refused(code: ErrorCode, req?: IncomingMessage, protocol: 'http' | 'websocket' = 'http', socket?: Duplex, line?: RefusedLine | null): void {
    const { status } = ERRORS[code]
    this.#events.observeRequest(null, req?.method, status, -1) // no duration: the head may not have arrived whole
    // counted as a finished request too (a flood of malformed heads shows in both counters)
    this.#events.clientProtocol(protocol === 'websocket' ? 'websocket' : req?.httpVersion === '1.1' ? 'http/1.1' : req?.httpVersion === '1.0' ? 'http/1.0' : 'none')
    if (this.#access() && this.#logger.isLevelEnabled('info')) {
      const peer = ((socket ?? req?.socket) as { remoteAddress?: string } | undefined)?.remoteAddress ?? null
      this.#logger.info({ request_id: null, peer, method: req?.method ?? line?.method ?? null, path: req?.url ?? line?.path ?? null, protocol, status, upstream: null, outcome: code }, 'access')
    }
  }

  /** A connection closed without a valid PROXY protocol header (the listeners' readers), counted. */
  proxyHeaderRefused(cause: RefusalCause): void {
    this.#events.proxyHeaderRefused(cause)
  }

  /**
   * Register how to stop `req` if the parser later refuses its body. Returns the code to answer
   * at once, not registering, when it refused it already (a request pipelined behind another);
   * else null.
   */
  track(req: IncomingMessage, abort: AbortRequest): ErrorCode | null {
    const failed = this.failed(req)
    if (failed === null) this.#aborts.set(req, abort)
    return failed
  }

  /**
   * The code to answer `req` with at once, when the parser refused its body already (a request
   * pipelined behind another), else null. For a handler that does not read bodies (the redirect
   * listener's); see {@link track}.
   */
  failed(req: IncomingMessage): ErrorCode | null {
    const failed = this.#failed.get(req)
    if (failed === undefined) return null
    this.#failed.delete(req)
    return failed
  }

  /**
   * `req` was answered before its body was all read, and the rest is being dropped: a parser
   * error in it closes the connection without an answer (the one sent answered it).
   */
  dropping(req: IncomingMessage): void {
    this.#dropping.add(req)
  }

  /**
   * A request after the ones being answered is malformed (the parser read it in the same
   * bytes): its answer follows every earlier one, those pipelined and still waiting included (a
   * 400 before them would be read as the answer to one of them, RFC 9112 section 9.3.2), then
   * the connection closes; an earlier answer cut short closes it at once. Scheduled once per connection.
   */
  #afterAnswer(socket: Socket, pending: ServerResponse, code: ErrorCode, line: RefusedLine | null): void {
    if (this.#answering.has(socket)) return
    this.#answering.add(socket)
    let cut = false
    pending.once('close', () => { cut = !pending.writableFinished })
    whenIdle(socket, () => {
      if (!cut && !socket.destroyed) this.refuse(socket, code, undefined, line)
      else socket.destroy()
    })
  }

  /**
   * An HTTP/1 server's 'connect' listener (the proxy and redirect listeners): a reverse proxy
   * tunnels nothing, so a CONNECT gets 405 (505 for "HTTP/2.0" in its request line) and the
   * connection closes. Node hands the raw socket over as soon as the CONNECT is parsed, also
   * behind a request still being answered: the refusal waits its turn (sent at once, the client
   * would read it as the earlier request's answer).
   */
  readonly refuseConnect = (req: IncomingMessage, socket: Duplex): void => {
    socket.on('error', () => undefined)
    const code: ErrorCode = req.httpVersionMajor === 2 ? 'TETHER_HTTP_VERSION' : 'TETHER_METHOD_NOT_ALLOWED'
    whenIdle(socket, () => {
      if (!socket.destroyed) this.refuse(socket, code, req)
    })
  }

  /** The server's 'clientError' listener. */
  readonly handle = (err: NodeJS.ErrnoException, duplex: Socket): void => {
    const socket = duplex as ServerSocket
    const { rawPacket, bytesParsed, reason: why } = err as { rawPacket?: unknown; bytesParsed?: unknown; reason?: unknown }
    const raw = Buffer.isBuffer(rawPacket) ? rawPacket : undefined
    const at = typeof bytesParsed === 'number' ? bytesParsed : 0
    const reason = typeof why === 'string' ? why : undefined
    let code = clientErrorCode(err.code, raw, at, reason)
    if (code === 'TETHER_HEADERS_TOO_LARGE' && raw !== undefined && overflowInRequestLine(raw, at)) code = 'TETHER_URI_TOO_LONG'
    if (err.code === 'ECONNRESET' || socket.destroyed) {
      socket.destroy()
      return
    }
    const incoming = socket.parser?.incoming
    // the error is in the dropped body only while that body is still being read (the next
    // request's head, in the same read, is the next request's: answered as such)
    if (incoming != null && !incoming.complete && this.#dropping.has(incoming)) {
      socket.destroy()
      return
    }
    const pending = socket._httpMessage ?? null
    if (pending !== null) {
      // the request being answered is the one whose body is malformed: its path answers
      // its body: only while it is still being read (a complete one's error is the next request's)
      const abort = !pending.headersSent && !pending.req.complete && socket.parser?.incoming === pending.req ? this.#aborts.get(pending.req) : undefined
      if (abort !== undefined) {
        this.#logger.debug({ code: err.code }, 'rejected malformed request body')
        this.#aborts.delete(pending.req)
        abort(code)
      } else if (incoming != null && !incoming.complete && (incoming !== pending.req || waitsItsTurn(incoming))) {
        // the body of a request pipelined behind the one being answered (or behind the one
        // just answered: its response has the socket, its handler not yet): its path, in its
        // turn, answers it (as above) and closes; nothing of it is forwarded
        this.#logger.debug({ code: err.code }, 'rejected malformed request body')
        const stop = this.#aborts.get(incoming)
        if (stop === undefined) this.#failed.set(incoming, code)
        else {
          this.#aborts.delete(incoming)
          stop(code)
        }
      } else this.#afterAnswer(socket, pending, code, this.#refusedLine(socket, err.code, reason, raw, at))
      return
    }
    // a connection that never sent a byte (a preconnect, a port scan) is closed without an answer
    if (socket.bytesRead === 0) {
      socket.destroy()
      return
    }
    this.#logger.debug({ code: err.code }, 'rejected malformed request')
    this.refuse(socket, code, undefined, this.#refusedLine(socket, err.code, reason, raw, at))
  }

  /**
   * The request line of the head the parser refused on `socket` (see {@link refusedLine}), read
   * only for an access line. The read that failed (`raw`) is all the connection sent when its
   * length is the connection's byte count and no earlier request was parsed on it (else it may
   * begin in the middle of the head, or hold earlier requests). Null behind a request with a
   * body: where its body ends is not known here, and the last LF before the refused line may be
   * inside it (see {@link framesBody}).
   */
  #refusedLine(socket: ServerSocket, code: string | undefined, reason: string | undefined, raw: Buffer | undefined, at: number): RefusedLine | null {
    if (raw === undefined || !this.#access()) return null
    const incoming = socket.parser?.incoming ?? null
    const whole = raw.length === socket.bytesRead && socket.parser != null && incoming === null
    // behind a request with a body the refused line's start is not known: the LF before it may
    // be inside that body (one not ending in LF: `password9GET ...`)
    if (incoming !== null && framesBody(incoming)) return null
    return refusedLine(raw, at, whole, code, reason)
  }
}

/**
 * Node's default `maxHeadersCount` (2000): a server that keeps it keeps about 1000 header pairs
 * (2046 rawHeaders entries on Node 20.20) and drops the rest silently. Both of Tether's HTTP/1
 * listeners set it to 0 (every line counts); a head with this many rawHeaders entries is taken as
 * one that may have been cut all the same.
 */
const NODE_MAX_HEADER_COUNT = 2000

/**
 * Whether `req`'s head frames a body (RFC 9112 section 6.3: a Transfer-Encoding, or a
 * Content-Length other than 0), or may (a head Node cut at its header count, which may have
 * dropped either). Without one a request has no body, and its head, ending in LF, is the last
 * thing before the next request's line.
 */
function framesBody(req: IncomingMessage): boolean {
  const h = req.rawHeaders
  if (h.length >= NODE_MAX_HEADER_COUNT) return true
  for (let i = 0; i + 1 < h.length; i += 2) {
    const name = h[i]!.toLowerCase()
    if (name === 'transfer-encoding' || (name === 'content-length' && h[i + 1]!.trim() !== '0')) return true
  }
  return false
}
