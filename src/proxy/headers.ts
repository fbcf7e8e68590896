// HTTP header rules of a proxy (RFC 9110 section 7.6.1): hop-by-hop removal in both
// directions, X-Forwarded-* and Host. Pure: takes header lists, returns new ones, never
// mutates the inbound request.

/** A client's X-Request-Id is kept when it looks like an id (else Tether makes one). */
export const REQUEST_ID = /^[A-Za-z0-9._:+=\/-]{1,128}$/

/** Headers that describe one connection and are never forwarded. */
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
  'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
])

/** Lower-cased header names listed in Connection header values ("close, X-Foo"). */
export function connectionTokens(value: string | string[] | undefined): Set<string> | null {
  if (value === undefined) return null
  const out = new Set<string>()
  for (const v of Array.isArray(value) ? value : [value]) {
    for (const token of v.split(',')) {
      const t = token.trim().toLowerCase()
      if (t) out.add(t)
    }
  }
  return out
}

export interface RequestHeaderContext {
  /** Client's peer address (socket.remoteAddress). */
  readonly peer: string
  /** Scheme the client used to reach Tether. */
  readonly proto: 'http' | 'https'
  /** Keep the client's Host (true) or send `upstreamHost` (false). */
  readonly preserveHost: boolean
  /** Set X-Forwarded-For/-Proto/-Host. */
  readonly xForwarded: boolean
  /** host[:port] of the upstream URL. */
  readonly upstreamHost: string
  /** The request id sent upstream as X-Request-Id (replacing the client's); absent: the client's passes. */
  readonly requestId?: string
}

/**
 * Build the header list sent upstream from the client's raw headers ([name, value, ...]).
 * Removes hop-by-hop headers and those named by Connection, `Expect` (Tether answers
 * 100-continue itself) and every client-sent `X-Tether-*` (internal); sets X-Request-Id to
 * `ctx.requestId` (the caller keeps a well-formed client id there). With xForwarded,
 * appends the peer to X-Forwarded-For and sets X-Forwarded-Proto/-Host.
 * Example: ["Host","a","Connection","close, X-A","X-A","1","X-Forwarded-For","1.1.1.1"]
 * from 10.0.0.1 -> ["host","a","x-request-id",id,"x-forwarded-for","1.1.1.1, 10.0.0.1","x-forwarded-proto","http","x-forwarded-host","a"].
 */
export function upstreamRequestHeaders(raw: readonly string[], ctx: RequestHeaderContext): string[] {
  const out: string[] = []
  let listed: Set<string> | null = null
  let host: string | undefined
  let xff: string | undefined
  // first pass only if a Connection header exists (rare on HTTP/1.1 keep-alive clients)
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 10 && raw[i]!.toLowerCase() === 'connection') {
      const tokens = connectionTokens(raw[i + 1]!)!
      for (let j = i + 2; j < raw.length; j += 2) {
        if (raw[j]!.length === 10 && raw[j]!.toLowerCase() === 'connection') {
          for (const t of connectionTokens(raw[j + 1]!)!) tokens.add(t)
        }
      }
      listed = tokens
      break
    }
  }
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!
    const value = raw[i + 1]!
    const lower = name.toLowerCase()
    if (HOP_BY_HOP.has(lower) || (listed !== null && listed.has(lower))) continue
    if (lower === 'host') {
      if (host === undefined) host = value
      continue
    }
    if (lower === 'expect' || (lower === 'x-request-id' && ctx.requestId !== undefined)) continue
    if (lower.startsWith('x-tether-')) continue
    if (ctx.xForwarded && lower.startsWith('x-forwarded-')) {
      if (lower === 'x-forwarded-for') xff = xff === undefined ? value : `${xff}, ${value}`
      if (lower === 'x-forwarded-for' || lower === 'x-forwarded-proto' || lower === 'x-forwarded-host') continue
    }
    out.push(name, value)
  }
  const sentHost = ctx.preserveHost && host !== undefined ? host : ctx.upstreamHost
  out.push('host', sentHost)
  if (ctx.requestId !== undefined) out.push('x-request-id', ctx.requestId)
  if (ctx.xForwarded) {
    out.push('x-forwarded-for', xff === undefined ? ctx.peer : `${xff}, ${ctx.peer}`)
    out.push('x-forwarded-proto', ctx.proto)
    if (host !== undefined) out.push('x-forwarded-host', host)
  }
  return out
}

/**
 * Remove hop-by-hop headers, those named by Connection, and every `x-tether-*` header from an
 * upstream response's parsed headers (lower-cased names; repeated headers such as Set-Cookie
 * are arrays and stay separate). Mutates and returns `headers`, which the caller owns.
 */
export function clientResponseHeaders(
  headers: Record<string, string | string[] | undefined>,
): Record<string, string | string[] | undefined> {
  const connection = headers['connection']
  // "keep-alive" and "close" name no other header: skip parsing in the common case
  const listed = connection === 'keep-alive' || connection === 'close' ? null : connectionTokens(connection)
  for (const name in headers) {
    if (HOP_BY_HOP.has(name) || (listed !== null && listed.has(name)) || name.startsWith('x-tether-')) delete headers[name]
  }
  return headers
}
