// A head Node's parser refused gets an access line with what can be told of its request line
// (method and target, or the line as sent, escaped and cut at 1 KiB), as nginx logs `$request`
// with its 400; never a header of it.
import t from 'tap'
import { escapeRequestBytes, inRequestLine, refusedLine } from '../src/proxy/client-error.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { rawConnect } from './fixtures/raw-client.js'
import { startUpstream, request, testConfig } from './fixtures/upstream.js'

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

t.test('escapeRequestBytes writes control bytes, bytes over 0x7e, quotes and backslashes as \\xHH (nginx escape=default)', async (t) => {
  t.equal(escapeRequestBytes('GET /a b'), 'GET /a b')
  t.equal(escapeRequestBytes('/a\x01"b\\c\x7f\xff'), '/a\\x01\\x22b\\x5Cc\\x7F\\xFF')
  t.equal(escapeRequestBytes('\x16\x03\x01'), '\\x16\\x03\\x01')
})

t.test('refusedLine: the request line of a refused head, or null when it cannot be told', async (t) => {
  const cases: [string, Buffer, number, boolean, string, ReturnType<typeof refusedLine>][] = [
    ['a header error in a head read whole: its request line', b('GET /x?q=1 HTTP/1.1\r\nHost: a\r\nBad Header: secret\r\n\r\n'), 29, true, 'HPE_INVALID_HEADER_TOKEN', { method: 'GET', path: '/x?q=1' }],
    ['empty lines before the request line are skipped (RFC 9112 section 2.2)', b('\r\n\r\nget /x HTTP/1.1\r\n\r\n'), 4, true, 'HPE_INVALID_METHOD', { method: 'get', path: '/x' }],
    ['a control byte in the target: escaped', b('GET /a\x01"b HTTP/1.1\r\nHost: a\r\n\r\n'), 6, true, 'HPE_INVALID_URL', { method: 'GET', path: '/a\\x01\\x22b' }],
    ['not a request line (a TLS handshake): the line as sent, escaped', b('\x16\x03\x01\x02\x00\x01\x00'), 0, true, 'HPE_INVALID_METHOD', { method: null, path: '\\x16\\x03\\x01\\x02\\x00\\x01\\x00' }],
    ['the line ends at a lone CR: what follows it is a header', b('GET /x HTTP/1.1\rAuthorization: secret\r\n\r\n'), 16, true, 'HPE_STRICT', { method: 'GET', path: '/x' }],
    ['a header error in a later read: null (the read may begin inside a header)', b('Host: a\r\nAuthorization: Bearer s\x01\r\n\r\n'), 30, false, 'HPE_INVALID_HEADER_TOKEN', null],
    ['a header value that looks like a request line, in a later read: null', b('GET /secret HTTP/1.1\r\nBad Header: s\r\n\r\n'), 25, false, 'HPE_INVALID_HEADER_TOKEN', null],
    ['a request-line error at the start of a later read: null (the line may have begun in an earlier read)', b('GET /y HTTP/9.1\r\nHost: a\r\n\r\n'), 15, false, 'HPE_INVALID_VERSION', null],
    ['a request line split over two reads: null, not made up', b('xyz HTTP/1.x\r\nHost: a\r\n\r\n'), 11, false, 'HPE_INVALID_VERSION', null],
    ['a request-line error behind another request in one read: the line it stopped in', b('GET /a HTTP/1.1\r\n\r\nGET /y HTTP/9.1\r\nHost: a\r\n\r\n'), 34, false, 'HPE_INVALID_VERSION', { method: 'GET', path: '/y' }],
    ['a lone LF ends the request line (refused past it): that line, not the header after it', b('GET /a HTTP/1.1\r\n\r\nGET /y HTTP/1.1\nAuthorization: Bearer s\r\n\r\n'), 35, false, 'HPE_INVALID_VERSION', { method: 'GET', path: '/y' }],
    ['PRI * HTTP/2.0 without the preface (refused past its line) behind another request', b('GET /a HTTP/1.1\r\n\r\nPRI * HTTP/2.0\r\nAuthorization: Bearer s\r\n\r\n'), 35, false, 'HPE_INVALID_VERSION', { method: 'PRI', path: '*' }],
    ['a line not of a request line\'s shape in a later read: null', b('GET /a HTTP/1.1\r\n\r\nGET /y HTTP/1.1 \r\n\r\n'), 34, false, 'HPE_INVALID_VERSION', null],
    ['a first line of a header\'s shape: null, even when it is all the connection sent', b('Authorization: Bearer s\r\n\r\n'), 0, true, 'HPE_INVALID_METHOD', null],
    ['a request-line error behind other requests in one read', b('GET /a HTTP/1.1\r\nHost: a\r\n\r\nget /b HTTP/1.1\r\n\r\n'), 28, false, 'HPE_INVALID_METHOD', { method: 'get', path: '/b' }],
    ['a timeout: no bytes told', Buffer.alloc(0), 0, true, 'ERR_HTTP_REQUEST_TIMEOUT', null],
  ]
  for (const [name, raw, at, whole, code, want] of cases) t.same(refusedLine(raw, at, whole, code), want, name)
  t.equal(refusedLine(undefined, 0, true, 'HPE_INVALID_METHOD'), null, 'no rawPacket')
  const long = refusedLine(b(`GET /${'a'.repeat(5000)} HTTP/1.1\r\n\r\n`), 10, true, 'HPE_HEADER_OVERFLOW')
  t.same(long, { method: 'GET', path: `/${'a'.repeat(1019)}` }, 'a long line is cut at 1024 bytes')
  const longGarbage = refusedLine(b('\x00'.repeat(4000)), 0, true, 'HPE_INVALID_METHOD')
  t.equal(longGarbage?.path, '\\x00'.repeat(1024), 'garbage is cut at 1024 bytes too, then escaped')
})

t.test('refusedLine: llhttp\'s other request-line errors (a protocol, a lone CR, a space after the line) tell the line; the same code from a header does not', async (t) => {
  const behind = (s: string): Buffer => b(`GET /a HTTP/1.1\r\n\r\n${s}`) // behind another request in one read: at is 19 on
  // (raw, bytesParsed, code, reason) as Node 20.20 / llhttp 9.3.1 hands them to clientError
  const cases: [string, Buffer, number, string, string, ReturnType<typeof refusedLine>][] = [
    ['an RTSP method with HTTP/1.1', behind('ANNOUNCE /z HTTP/1.1\r\nAuthorization: Bearer s\r\n\r\n'), 19 + 16, 'HPE_INVALID_CONSTANT', 'Invalid method for HTTP/x.x request', { method: 'ANNOUNCE', path: '/z' }],
    ['a CR not followed by LF after the version', behind('GET /x HTTP/1.1\rAuthorization: Bearer s\r\n\r\n'), 19 + 16, 'HPE_STRICT', 'Expected CRLF after version', { method: 'GET', path: '/x' }],
    ['a space opening the line after the request line (refused past that space)', behind('GET /y HTTP/1.1\r\n Authorization: Bearer s\r\n\r\n'), 19 + 18, 'HPE_UNEXPECTED_SPACE', 'Unexpected space after start line', { method: 'GET', path: '/y' }],
    ['a misspelt protocol: the request line, but not of its shape behind another request', behind('GET /h HTPP/1.1\r\n\r\n'), 19 + 9, 'HPE_INVALID_CONSTANT', 'Expected HTTP/, RTSP/ or ICE/', null],
    ['HPE_STRICT of the header section\'s end: null', behind('GET /t HTTP/1.1\r\nX: a\r\n\rZ'), 19 + 24, 'HPE_STRICT', 'Expected LF after headers', null],
    ['HPE_STRICT of a chunk extension, just after a line of a request line\'s shape: null', behind('GET /c HTTP/1.1\r\n'), 19 + 16, 'HPE_STRICT', 'Invalid character in chunk extensions', null],
    ['HPE_STRICT without a reason: null', behind('GET /x HTTP/1.1\rAuthorization: Bearer s\r\n\r\n'), 19 + 16, 'HPE_STRICT', '', null],
    ['a request-line error at the start of a later read: null as before (it may have begun in an earlier read)', b('GET /x HTTP/1.1\rA: b\r\n\r\n'), 16, 'HPE_STRICT', 'Expected CRLF after version', null],
    ['a space after a request line at the start of a later read: null', b('GET /y HTTP/1.1\r\n A: b\r\n\r\n'), 18, 'HPE_UNEXPECTED_SPACE', 'Unexpected space after start line', null],
    // a previous request's body not ending in LF, glued to the line: the parser took no such method
    ['a method llhttp does not parse, refused past it: null', b('POST /l HTTP/1.1\r\nContent-Length: 9\r\n\r\npassword9GET /v HTTP/9.1\r\n\r\n'), 60, 'HPE_INVALID_VERSION', '', null],
    ['an RTSP method refused past it is one llhttp parses', behind('SET_PARAMETER /v HTTP/9.1\r\n\r\n'), 19 + 24, 'HPE_INVALID_VERSION', '', { method: 'SET_PARAMETER', path: '/v' }],
  ]
  for (const [name, raw, at, code, reason, want] of cases) t.same(refusedLine(raw, at, false, code, reason || undefined), want, name)
  t.equal(inRequestLine('HPE_INVALID_URL', undefined), true, 'a code that is always the request line needs no reason')
  t.equal(inRequestLine('HPE_INVALID_HEADER_TOKEN', 'Invalid header token'), false)
  t.equal(inRequestLine(undefined, 'Expected CRLF after version'), false)
})

t.test('a real Tether: each request-line error llhttp raises logs the line, alone or pipelined, and a header-section error with the same code does not', async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up]), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const NULL = { method: null, path: null }
  // the head, what its access line says when it is all the connection sent, and pipelined behind GET /a in one write
  const cases: [string, Record<string, unknown>, Record<string, unknown>][] = [
    ['ANNOUNCE /z HTTP/1.1\r\nAuthorization: Bearer SECRET\r\n\r\n', { method: 'ANNOUNCE', path: '/z', status: 501 }, { method: 'ANNOUNCE', path: '/z', status: 501 }], // HPE_INVALID_CONSTANT: a method Node's http does not know
    ['GET /h HTPP/1.1\r\nAuthorization: Bearer SECRET\r\n\r\n', { method: null, path: 'GET /h HTPP/1.1' }, NULL], // HPE_INVALID_CONSTANT, not a request line's shape
    ['GET /x HTTP/1.1\rAuthorization: Bearer SECRET\r\n\r\n', { method: 'GET', path: '/x' }, { method: 'GET', path: '/x' }], // HPE_STRICT
    ['GET /y HTTP/1.1\r\n Authorization: Bearer SECRET\r\n\r\n', { method: 'GET', path: '/y' }, { method: 'GET', path: '/y' }], // HPE_UNEXPECTED_SPACE
    ['GET /t HTTP/1.1\r\nAuthorization: Bearer SECRET\r\n\rZ', { method: 'GET', path: '/t' }, NULL], // HPE_STRICT of the head's end
  ]
  const refused = async (bytes: string, lines: number): Promise<Record<string, unknown>[]> => {
    const before = logs.access().length
    const c = await rawConnect(tether.port)
    c.write(bytes)
    t.ok(await c.waitEnd(5000), 'refused and closed')
    c.destroy()
    t.ok(await new Promise<boolean>((done) => {
      const check = (): void => { if (logs.access().length >= before + lines) done(true) }
      check()
      logs.on('record', check)
    }), 'its access lines')
    return logs.access().slice(before)
  }
  for (const [head, alone, pipelined] of cases) {
    const [line] = await refused(head, 1)
    t.match(line, { status: 400, ...alone, upstream: null }, `alone: ${JSON.stringify(head)}`)
    const [first, second] = await refused(`GET /a HTTP/1.1\r\nHost: a\r\n\r\n${head}`, 2)
    t.match(first, { method: 'GET', path: '/a', status: 200 })
    t.match(second, { status: 400, ...pipelined, upstream: null }, `pipelined: ${JSON.stringify(head)}`)
  }
  t.notOk(logs.lines.some((l) => JSON.stringify(l.rec).includes('SECRET')), 'no header value is logged')
})

t.test("a refused head's access line names its request line, escaped, and never a header value", async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up], { limits: { max_header_bytes: 2048 } }), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const send = async (pieces: (string | Buffer)[]): Promise<Record<string, unknown>> => {
    const before = logs.access().length
    const c = await rawConnect(tether.port)
    // every piece after the first goes once the one before was answered: its own read
    for (const [i, p] of pieces.entries()) {
      c.write(p)
      if (i < pieces.length - 1) t.ok(await c.until(() => c.finals().length > i, 5000), 'answered')
    }
    t.ok(await c.waitEnd(5000), 'the refused head closes the connection')
    c.destroy()
    t.ok(await new Promise<boolean>((done) => {
      const check = (): void => { if (logs.access().length > before + pieces.length - 1) done(true) }
      check()
      logs.on('record', check)
    }), 'its access line')
    return logs.access().at(-1)!
  }
  t.match(await send(['GET /x?q=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer s3cr\x01t\r\n\r\n']), { method: 'GET', path: '/x?q=1', status: 400, outcome: 'TETHER_BAD_REQUEST', upstream: null })
  t.match(await send([`GET /big HTTP/1.1\r\nHost: a\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`]), { method: 'GET', path: '/big', status: 431 })
  t.match(await send([b('\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"x\r\n\r\n')]), { method: null, path: '\\x16\\x03\\x01\\x02\\x00\\x01\\x00\\x01\\xFC\\x03\\x03\\x22x', status: 400 })
  t.match(await send(['GET /a HTTP/1.1\r\nHost: a\r\n\r\n', 'GET /b HTTP/9.1\r\nHost: a\r\n\r\n']), { method: null, path: null, status: 400 }, 'a request-line error in a later read: not guessed (it may have begun in an earlier one)')
  t.match(await send(['GET /a HTTP/1.1\r\nHost: a\r\n\r\n', 'GET /b HTTP/1.1\r\nHost: a\r\nBad Header: s3cret\r\n\r\n']), { method: null, path: null, status: 400 }, 'a header error in a later read: not guessed')
  t.notOk(logs.lines.some((l) => JSON.stringify(l.rec).includes('s3cr')), 'no header value of a refused head is logged')
  t.equal((await request(tether.url)).body, 'a\n', 'still serving')
})

t.test('a request line refused behind a pipelined request whose body does not end in LF: no byte of that body is logged', async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up]), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  // (the last LF before the refused line is in the body: its last line was logged glued to the method)
  const post = (body: string): string => `POST /login HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}`
  const chunked = (body: string): string => `POST /login HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`
  const cases: [string, string][] = [
    [post('user=bob\npassword9'), 'ANNOUNCE /z HTTP/1.1\r\nHost: a\r\n\r\n'], // HPE_INVALID_CONSTANT
    [post('user=bob\npassword9'), 'GET /x HTTP/1.1\rHost: a\r\n\r\n'], // HPE_STRICT
    [post('user=bob\npassword9'), 'GET /y HTTP/1.1\r\n Host: a\r\n\r\n'], // HPE_UNEXPECTED_SPACE
    [post('user=bob\npassword9'), 'GET /v HTTP/9.1\r\nHost: a\r\n\r\n'], // HPE_INVALID_VERSION
    [post('user=bob\npassword9'), 'FOO /w HTTP/1.1\r\nHost: a\r\n\r\n'], // HPE_INVALID_METHOD: `password9FOO /w HTTP/1.1` has a request line's shape
    [post('password9\nUN'), 'LOCK /u HTTP/9.1\r\nHost: a\r\n\r\n'], // glued to a method llhttp parses: UNLOCK
    [chunked('user=bob\npassword9'), 'GET /v HTTP/9.1\r\nHost: a\r\n\r\n'],
  ]
  for (const [first, next] of cases) {
    const before = logs.access().length
    const c = await rawConnect(tether.port)
    c.write(first + next) // one write: both in one read
    t.ok(await c.waitEnd(5000), 'refused and closed')
    c.destroy()
    await new Promise<void>((done) => { const check = (): void => { if (logs.access().length >= before + 2) done() }; check(); logs.on('record', check) })
    const refused = logs.access().at(-1)!
    t.match(refused, { method: null, path: null, status: 400, upstream: null }, `the refused line is not guessed: ${JSON.stringify(next)}`)
    t.notOk(JSON.stringify(refused).includes('password9'), `no body byte logged: ${JSON.stringify(next)}`)
  }
})
