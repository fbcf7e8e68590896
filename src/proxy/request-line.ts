// Request lines Node's parser takes that are not HTTP/1.x: llhttp also parses HTTP/0.9 (`GET /t`,
// no version, or `HTTP/0.9`) and RTSP (`DESCRIBE /d RTSP/1.0`) and hands them over as requests.
// Tells the ones the request itself shows apart, in the server's 'request' or 'upgrade' event;
// layer 3: reads the request, answers nothing.
import { METHODS, type IncomingMessage } from 'node:http'

/** The methods llhttp takes in an HTTP/ request line (Node's `http.METHODS`). */
const HTTP_METHODS: ReadonlySet<string> = new Set(METHODS)

/**
 * Is `req`'s request line not HTTP/1.x, as far as the request shows? HTTP/0.9 (major version 0:
 * no version, or `HTTP/0.9`: no headers, no Host, an answer without a head), or a method only
 * RTSP has (`DESCRIBE`, `SETUP`: llhttp takes them only with `RTSP/`; with `HTTP/` it refuses
 * them, see client-error.ts). RFC 9112 section 2.3: the version is `HTTP/` DIGIT.DIGIT.
 * Two checks, no bytes read: a method HTTP shares with RTSP or Icecast's ICE (`GET /w RTSP/1.0`,
 * `SOURCE /u ICE/1.0`) arrives as an HTTP/1.x request with nothing on it saying otherwise (only
 * the parser's copy of the read would tell, at ~1.6 us a request) and is served as the HTTP
 * request Node made of it: its framing is HTTP's, and the client gets no more than by sending
 * HTTP (SECURITY.md).
 * Example: `GET /t` (0.9) -> true; `DESCRIBE /d RTSP/1.0` -> true; `GET /w HTTP/1.0` -> false.
 */
export function foreignRequestLine(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 0 || !HTTP_METHODS.has(req.method ?? '')
}
