// Interim (1xx) answers from an upstream. Tether never sends `Expect` upstream (it answers
// 100-continue to clients itself), so a 100 the upstream sends anyway is informational noise
// that a recipient must tolerate (RFC 9110 section 15.2); undici treats it as a broken answer.
// Other 1xx (102, 103) are forwarded to the client, bounded (see forward.ts); this file makes
// their HTTP/1.1 bytes. Pure: finds and removes 100 heads at the start of a response, builds a
// 1xx head. No I/O.
import { STATUS_CODES } from 'node:http'
import { FIELD_NAME, REASON_PHRASE } from './headers.js'

const HTTP1 = Buffer.from('HTTP/1.')
const END_OF_HEAD = Buffer.from('\r\n\r\n')

/** Does `buf` at `at` start an interim (1xx, not 101) status line: `HTTP/1.x 1dd `? */
function interimAt(buf: Buffer, at: number): number | null {
  if (buf.length - at < 13 || buf.compare(HTTP1, 0, HTTP1.length, at, at + 7) !== 0) return null
  if (buf[at + 8] !== 0x20 || buf[at + 9] !== 0x31) return null // "HTTP/1.x 1"
  const d1 = buf[at + 10]! - 0x30
  const d2 = buf[at + 11]! - 0x30
  if (d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9 || (buf[at + 12] !== 0x20 && buf[at + 12] !== 0x0d)) return null
  const status = 100 + d1 * 10 + d2
  return status === 101 ? null : status
}

/** Could `chunk` begin with interim response heads (the cheap first test, on every read)? */
export function mayStartWithInterim(chunk: Buffer): boolean {
  return chunk.length >= 10 && chunk[0] === 0x48 /* H */ && chunk[9] === 0x31 /* 1 */ && interimAt(chunk, 0) !== null
}

/**
 * Remove every complete `100` head among the interim heads that open `chunk` (the start of a
 * response); other interim heads (102, 103) stay for the HTTP client to skip. Stops at the
 * first final or incomplete head. Returns `chunk` itself when there is nothing to remove.
 * Example: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n..." -> "HTTP/1.1 200 OK\r\n...".
 */
export function withoutUnsolicitedContinue(chunk: Buffer): Buffer {
  const keep: Buffer[] = []
  let at = 0
  let from = 0
  let removed = false
  for (;;) {
    const status = interimAt(chunk, at)
    if (status === null) break
    const end = chunk.indexOf(END_OF_HEAD, at)
    if (end === -1) break
    if (status === 100) {
      if (at > from) keep.push(chunk.subarray(from, at))
      from = end + 4
      removed = true
    }
    at = end + 4
  }
  if (!removed) return chunk
  keep.push(chunk.subarray(from))
  return keep.length === 1 ? keep[0]! : Buffer.concat(keep)
}

/**
 * How many 1xx answers (other than 100 and 101) of one request are forwarded to its client;
 * later ones are dropped (the head wait goes on, they do not restart it). Enough for a 103 or
 * two and a 102 every few seconds of a long wait.
 */
export const MAX_INTERIM_ANSWERS = 8

/**
 * The HTTP/1.1 bytes of a 1xx head with `fields` (already filtered: see
 * AnswerHeadPolicy.interim), each value of a repeated field on its own line as the upstream
 * sent it; the upstream's reason phrase if it is one a client can read, else the registered one.
 * A field Node would refuse in a final head (a name that is no token, a value with a control
 * character) is left out. Node's own `writeEarlyHints()` is not used: it throws on a `Link`
 * listing several links in one line (`</a.css>; rel=preload, </b.js>; rel=preload`) or a quoted
 * parameter with a space, drops a 103 without `Link`, and joins a repeated field with ","
 * (checked on Node 20.20). Written latin1, as Node writes a final head.
 * Example: interimHead(103, 'Early Hints', { link: '</a.css>; rel=preload' })
 * -> 'HTTP/1.1 103 Early Hints\r\nlink: </a.css>; rel=preload\r\n\r\n'.
 */
export function interimHead(statusCode: number, reason: string | undefined, fields: Readonly<Record<string, string | string[] | undefined>>): string {
  const phrase = reason !== undefined && reason !== '' && REASON_PHRASE.test(reason) ? reason : STATUS_CODES[statusCode] ?? ''
  let head = `HTTP/1.1 ${statusCode} ${phrase}\r\n`
  for (const name in fields) {
    const value = fields[name]
    if (value === undefined || !FIELD_NAME.test(name)) continue
    for (const v of typeof value === 'string' ? [value] : value) if (REASON_PHRASE.test(v)) head += `${name}: ${v}\r\n`
  }
  return `${head}\r\n`
}
