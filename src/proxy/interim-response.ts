// Unsolicited `100 Continue` heads from an upstream. Tether never sends `Expect` upstream (it
// answers 100-continue to clients itself), so a 100 the upstream sends anyway is informational
// noise that a recipient must tolerate (RFC 9110 section 15.2); undici treats it as a broken
// answer. Pure: finds and removes such heads at the start of a response. No I/O.

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
