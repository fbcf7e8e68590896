// An HTTP/2 stream as the request path reads a request: Node's compatibility request and
// response, given the HTTP/1.1 shape of the message (RFC 9113 section 8.3.1: an intermediary
// that forwards an h2 request as HTTP/1.1 makes Host from :authority and joins the cookie
// crumbs) and a response that drops what h2 cannot carry (a reason phrase, connection-specific
// headers). Layer 3 adapter of node:http2, used as the server's request and response classes
// (the documented extension point), with the client's address as its connection began; it
// holds no routing or header policy.
import http2 from 'node:http2'

const { NGHTTP2_NO_ERROR, NGHTTP2_INTERNAL_ERROR, NGHTTP2_PROTOCOL_ERROR } = http2.constants

type Headers = http2.IncomingHttpHeaders

/**
 * Fields of which Node's HTTP/1.1 parser keeps the first line of a request and discards the
 * others (`message.headers` in Node's docs; `matchKnownFields` in `_http_incoming.js`): fields
 * defined as one value, where a second line makes no list.
 */
const FIRST_LINE_ONLY = new Set(['age', 'authorization', 'content-length', 'content-type', 'etag', 'expires', 'from', 'host',
  'if-modified-since', 'if-unmodified-since', 'last-modified', 'location', 'max-forwards', 'proxy-authorization', 'referer',
  'retry-after', 'server', 'user-agent'])

/**
 * The HTTP/1.1 view of an h2 request head: pseudo-headers removed, `host` from `:authority`
 * (both kept when they differ, so the Host rule refuses the request), the cookie crumbs joined
 * with "; " into one field, and `transfer-encoding: chunked` when a body follows without a
 * declared length (the framing an HTTP/1.1 upstream gets for it). `headers` holds what Node's
 * HTTP/1.1 parser makes of the same lines, so a request reads the same over either protocol
 * (an affinity key from `User-Agent` sent twice, among them; `Authorization` twice is refused
 * before any key is made): the first line
 * of a field it knows as one value ({@link FIRST_LINE_ONLY}), set-cookie as a list, any other
 * field's lines joined with ", "; `raw` keeps every line (the upstream gets them all).
 * Example: [':method','GET',':authority','a.example',':path','/','cookie','a=1','cookie','b=2']
 * -> ['host','a.example','cookie','a=1; b=2'].
 */
export function http1Head(raw: readonly string[], bodyFollows: boolean): { raw: string[]; headers: Headers } {
  const out: string[] = []
  const headers: Headers = Object.create(null) as Headers
  let authority: string | undefined
  let host: string | undefined
  let cookieAt = -1
  let length = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    if (name.charCodeAt(0) === 0x3a /* : */) {
      if (name === ':authority') authority = value
      continue
    }
    if (name === 'cookie') {
      if (cookieAt === -1) {
        cookieAt = out.length + 1
        out.push(name, value)
      } else out[cookieAt] = `${out[cookieAt]}; ${value}`
      continue
    }
    if (name === 'host') host ??= value
    else if (name === 'content-length') length = true
    out.push(name, value)
  }
  if (authority !== undefined && (host === undefined || host.toLowerCase() !== authority.toLowerCase())) out.unshift('host', authority)
  if (bodyFollows && !length) out.push('transfer-encoding', 'chunked')
  for (let i = 0; i < out.length; i += 2) {
    const name = out[i]!
    const prev = headers[name]
    if (prev === undefined) headers[name] = name === 'set-cookie' ? [out[i + 1]!] : out[i + 1]!
    else if (Array.isArray(prev)) prev.push(out[i + 1]!)
    else if (!FIRST_LINE_ONLY.has(name)) headers[name] = `${prev}, ${out[i + 1]!}`
  }
  return { raw: out, headers }
}

/**
 * What a stream's request knows of its connection, taken once when the connection began: Node
 * tells of a stream a turn after nghttp2 began it, and by then nghttp2 may have reset it (a body
 * past its content-length in the same read), leaving it no session to ask for the client's
 * address. `session`: the connection (one per client connection, as an HTTP/1.1 socket).
 * Example: { session, remoteAddress: '127.0.0.1', localPort: 8443, encrypted: true }.
 */
export interface H2Connection {
  readonly session: object
  readonly remoteAddress: string | undefined
  readonly localPort: number | undefined
  readonly encrypted: boolean
}

/** Each stream's connection, noted as the stream is announced (see {@link noteConnection}). */
const connections = new WeakMap<http2.ServerHttp2Stream, H2Connection>()

/**
 * Note `stream`'s connection for its request ({@link H2Request.h2Connection}): called from a
 * session 'stream' listener that runs before the server's own (which makes the request).
 */
export function noteConnection(stream: http2.ServerHttp2Stream, connection: H2Connection): void {
  connections.set(stream, connection)
}

/**
 * The request of an h2 stream, with `headers` and `rawHeaders` in their HTTP/1.1 shape
 * ({@link http1Head}); `method`, `url` (:path), `authority` and the body are Node's, except a
 * CONNECT's `url`: it has no :path (RFC 9113 section 8.5), so its target is its :authority, as
 * an HTTP/1.1 CONNECT's authority-form target is (Node's would be undefined, an access line
 * without `path`). Example: CONNECT example.com:443 -> url 'example.com:443'.
 */
export class H2Request extends http2.Http2ServerRequest {
  /** Its connection as it began (undefined: not noted, the request path asks the socket). */
  readonly h2Connection: H2Connection | undefined

  constructor(stream: http2.ServerHttp2Stream, headers: Headers, options: object, rawHeaders: readonly string[]) {
    super(stream, headers, options, rawHeaders)
    this.h2Connection = connections.get(stream)
    const head = http1Head(rawHeaders, !stream.endAfterHeaders)
    Object.defineProperties(this, {
      headers: { value: head.headers, enumerable: true },
      rawHeaders: { value: head.raw, enumerable: true },
    })
    if (headers[':method'] === 'CONNECT' && headers[':path'] === undefined) Object.defineProperty(this, 'url', { value: headers[':authority'], writable: true, enumerable: true })
  }
}

/**
 * Whether `req` is an h2 stream's request whose body nghttp2 refused as malformed (RFC 9113
 * section 8.1.1: DATA past its `content-length`, or END_STREAM short of it; malformed
 * trailers): a request with a body (its HEADERS did not end the stream) whose stream closed
 * with PROTOCOL_ERROR (the bytes nghttp2 refused never reach Node, which sees a body cut
 * short). Not a client that left: the access line says TETHER_BAD_REQUEST, as for an HTTP/1.1
 * body Node's parser refuses (nginx answers such a stream 400, `client intended to send body
 * data larger than declared`). A stream the client reset itself (CANCEL, as browsers do) is
 * not, nor one that sent its whole declared body and then reset the stream with PROTOCOL_ERROR
 * itself (`taken`: the body's bytes sent upstream). Read only for a request whose client was
 * found gone. Example: POST with content-length 3 and 10 bytes of DATA -> true; the same with
 * RST_STREAM CANCEL after 1 byte -> false; 3 of 3 bytes then RST_STREAM PROTOCOL_ERROR -> false.
 */
export function malformedBody(req: object, taken: number): boolean {
  if (!(req instanceof H2Request) || req.stream.endAfterHeaders || req.stream.rstCode !== NGHTTP2_PROTOCOL_ERROR) return false
  // a body that reached its declared length (taken upstream, or still buffered) was not cut by
  // nghttp2: the client reset the stream itself (for its own reason), so it left. Without a
  // declared length only malformed trailers (or the client itself) reset it: taken as malformed
  const declared = req.headers['content-length']
  return declared === undefined || taken + req.stream.readableLength < Number(declared)
}

/** Headers no h2 answer may carry (RFC 9113 section 8.2.2); `te` only as "trailers". */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings'])

/**
 * Streams Tether reset itself to cut an answer off (see {@link H2Response.destroy}): Node emits
 * 'aborted' for them as for a client's reset, and the connection's rapid-reset guard must not
 * count them as the client's.
 */
const cutByTether = new WeakSet<http2.ServerHttp2Stream>()

/**
 * Whether Tether reset `stream` itself to cut its answer off (an upstream that died mid-body,
 * say), so that the client did not waste it. Example: a stream after `res.destroy()` with 5 of
 * 100 bytes sent -> true; a stream the client reset -> false.
 */
export function resetByTether(stream: http2.ServerHttp2Stream): boolean {
  return cutByTether.has(stream)
}

/**
 * The response of an h2 stream as the HTTP transport writes it: `writeHead(status, reason,
 * headers)` drops the reason (h2 has none) and connection-specific headers (an HTTP/1.1
 * `Connection: close` means nothing on a stream); `destroyed` says whether the stream is gone;
 * `statusMessage` and `shouldKeepAlive` are accepted and ignored. When the answer is complete
 * while the client is still sending its body, the stream is reset with NO_ERROR (RFC 9113
 * section 8.1: the client stops sending, the stream's slot is freed); `destroy()` before the
 * answer is complete resets it with INTERNAL_ERROR (see {@link H2Response.destroy}).
 */
export class H2Response extends http2.Http2ServerResponse {
  constructor(stream: http2.ServerHttp2Stream) {
    super(stream)
    stream.once('finish', () => {
      // `req.complete` is false for a request body nobody read (a GET's empty one too): the
      // protocol state says whether the client is still sending; a reset while it is done
      // would discard answer frames not yet on the wire
      if (stream.closed || stream.destroyed || stream.endAfterHeaders || stream.state.remoteClose === 1) return
      if (!this.req.complete) stream.close(NGHTTP2_NO_ERROR)
    })
  }

  /**
   * Cut the answer off (an upstream that died mid-body, a body stalled past body_idle, a client
   * that takes none of an ended answer): a stream whose answer is not wholly sent is reset with
   * INTERNAL_ERROR, as nginx does. Node's own destroy without an error resets it with NO_ERROR,
   * which RFC 9113 section 8.1 keeps for a complete answer: curl and Node's client then take the
   * truncated body for the whole one. A sent answer, or a destroy with an error, is Node's.
   * Example: headers and 5 of 100 bytes sent, `res.destroy()` -> RST_STREAM INTERNAL_ERROR
   * (curl exits 92).
   */
  override destroy(err?: Error): this {
    const stream = this.stream
    if (err === undefined && !stream.writableFinished && !stream.closed && !stream.destroyed) {
      cutByTether.add(stream) // before the close, which emits 'aborted' at once
      stream.close(NGHTTP2_INTERNAL_ERROR)
    } else super.destroy(err)
    return this
  }

  /**
   * Bytes of the answer written but not yet handed on to the connection (held back by the
   * client's flow-control window: RFC 9113 section 5.2), counted per write (a write leaves the
   * count once all of it went out, and the writes Node held back while one was out go out as
   * one); -1 once all of it, the end included, went out. Node's
   * stream timer cannot tell a stalled stream: it counts any frame the connection sends (a
   * PING's answer, another stream's data) as progress. Example: 10 KiB written, the client's
   * window at 0 -> 10240, and again at every look until the client opens its window.
   */
  unsent(): number {
    const stream = this.stream
    return stream.writableFinished ? -1 : stream.writableLength
  }

  override writeHead(statusCode: number, headers?: http2.OutgoingHttpHeaders): this
  override writeHead(statusCode: number, statusMessage: string, headers?: http2.OutgoingHttpHeaders): this
  override writeHead(statusCode: number, reasonOrHeaders?: string | http2.OutgoingHttpHeaders, maybeHeaders?: http2.OutgoingHttpHeaders): this {
    const headers = typeof reasonOrHeaders === 'object' ? reasonOrHeaders : maybeHeaders
    if (headers === undefined) return super.writeHead(statusCode)
    const fields = sendable(headers, false)
    // Node refuses to send a field section over 64 KiB: the stream is reset later, where no
    // caller sees it (logged as a whole answer), and the client's other streams go with the
    // connection. Thrown here, the forwarding path answers 502 instead, as nginx does
    if (fieldSectionSize(fields) > MAX_SEND_FIELD_SECTION) throw new RangeError(`the answer's head is over ${MAX_SEND_FIELD_SECTION} bytes, more than HTTP/2 can send`)
    return super.writeHead(statusCode, fields)
  }

  /**
   * An informational (1xx) head before the answer's (RFC 9113 section 8.1: a HEADERS frame with
   * a 1xx `:status`), without connection-specific fields as {@link writeHead} drops them. False,
   * nothing sent, when it cannot go: the answer's head went already, the stream is closed, or a
   * field Node refuses (a repeated singleton, a section over what h2 sends).
   * Example: writeInterim(103, { link: '</a.css>; rel=preload' }) -> true.
   */
  writeInterim(statusCode: number, headers: http2.OutgoingHttpHeaders): boolean {
    const stream = this.stream
    if (stream.headersSent || stream.destroyed || stream.closed) return false
    try {
      const fields = sendable(headers, false)
      if (fieldSectionSize(fields) > MAX_SEND_FIELD_SECTION) return false
      fields[':status'] = statusCode
      stream.additionalHeaders(fields)
      return true
    } catch {
      return false
    }
  }

  /**
   * Trailers without connection-specific fields either: Node would throw on one while sending
   * them, inside an event nothing can catch (the process would die). Trailers over what Node's
   * HTTP/2 sends in one field section throw here (the caller leaves them out: the body is
   * complete, the answer stands): sent, Node dropped them and closed the whole connection with
   * GOAWAY, refusing the client's next streams, while the stream itself ended as whole.
   */
  override addTrailers(trailers: http2.OutgoingHttpHeaders): void {
    const fields = sendable(trailers, true)
    if (fieldSectionSize(fields) > MAX_SEND_FIELD_SECTION) throw new RangeError(`the answer's trailers are over ${MAX_SEND_FIELD_SECTION} bytes, more than HTTP/2 can send`)
    super.addTrailers(fields)
  }
}

/**
 * The largest response field section Node's HTTP/2 sends (its `maxSendHeaderBlockLength`
 * default, 64 KiB), less room for the fields Node adds itself (`:status`, `date`).
 */
const MAX_SEND_FIELD_SECTION = 65_536 - 128

/**
 * A field section's size as HTTP/2 counts it (RFC 9113 section 6.5.2 / RFC 7541 section 4.1:
 * name, value and 32 bytes a field). Example: { 'x-a': ['1', '2'] } -> 2 * (3 + 1 + 32) = 72.
 */
export function fieldSectionSize(headers: http2.OutgoingHttpHeaders): number {
  let size = 0
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined) continue
    if (!Array.isArray(value)) size += name.length + String(value).length + 32
    else for (const v of value) size += name.length + String(v).length + 32
  }
  return size
}

/**
 * The response fields Node's HTTP/2 sends at most once (its `kSingleValueHeaders`, as listed by
 * Node 20 to 26): given several, it throws while the answer goes out, where the stream is
 * reset with INTERNAL_ERROR, though an HTTP/1.1 client gets the answer.
 */
const SINGLE_VALUE = new Set([
  'access-control-allow-credentials', 'access-control-max-age', 'access-control-request-method', 'age',
  'authorization', 'content-encoding', 'content-language', 'content-length', 'content-location', 'content-md5',
  'content-range', 'content-type', 'date', 'dnt', 'etag', 'expires', 'from', 'host', 'if-match',
  'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since', 'last-modified', 'location',
  'max-forwards', 'proxy-authorization', 'range', 'referer', 'retry-after', 'tk', 'upgrade-insecure-requests',
  'user-agent', 'x-content-type-options',
])

/** Of those, the list-based ones (RFC 9110 sections 8.4, 8.5 and 13.1): their lines join into one. */
const LIST_BASED = new Set(['content-encoding', 'content-language', 'if-match', 'if-none-match'])

/**
 * One value for a field Node's HTTP/2 sends once ({@link SINGLE_VALUE}) that the upstream sent
 * on several lines: a list-based one joined (RFC 9110 section 5.3), identical lines as one (an
 * application and its framework both setting `X-Content-Type-Options: nosniff`); different
 * values of a singleton throw (the forwarding path answers 502: the upstream's answer is invalid,
 * RFC 9110 section 5.5, and h2 cannot carry it as it is). Example: ['nosniff', 'nosniff'] ->
 * 'nosniff'; content-language ['en', 'de'] -> 'en, de'; etag ['"a"', '"b"'] -> RangeError.
 */
function oneValue(name: string, values: readonly string[]): string {
  if (LIST_BASED.has(name)) return values.join(', ')
  const first = values[0]!
  if (values.every((v) => v === first)) return first
  throw new RangeError(`the answer has ${values.length} different ${name} fields; HTTP/2 sends one`)
}

/**
 * `headers` without what no h2 field section may carry: connection-specific fields, and in
 * trailers `te` and pseudo-fields too; a field Node sends once, repeated, as one
 * ({@link oneValue}).
 */
function sendable(headers: http2.OutgoingHttpHeaders, trailers: boolean): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {}
  for (const name in headers) {
    const lower = name.toLowerCase()
    if (CONNECTION_SPECIFIC.has(lower)) continue
    if (lower === 'te' && (trailers || headers[name] !== 'trailers')) continue
    if (trailers && lower.startsWith(':')) continue
    const value = headers[name]
    out[name] = Array.isArray(value) && value.length > 1 && SINGLE_VALUE.has(lower) ? oneValue(lower, value) : value
  }
  return out
}

// Defined here because the base class declares these as plain properties, which a subclass
// cannot override with accessors. `destroyed` (which Node's class lacks): the stream is closed
// or reset, nothing more can be written. h2 has no reason phrase and no connection to keep
// alive: writes of those are ignored (Node's own accessors would warn).
Object.defineProperties(H2Response.prototype, {
  destroyed: {
    get(this: H2Response) { return this.stream.destroyed || this.stream.closed },
    configurable: true,
  },
  statusMessage: { get: () => '', set: () => undefined, configurable: true },
  shouldKeepAlive: { get: () => true, set: () => undefined, configurable: true },
})
