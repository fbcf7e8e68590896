// A refused head's access line must never carry a header. llhttp reports
// "Expected CRLF after version" (a lone LF ends the request line) and "Expected HTTP/2
// Connection Preface" as HPE_INVALID_VERSION with bytesParsed just past the request line's LF:
// refusedLine then takes the line *after* it (a header) as "the line it stopped in".
import t from 'tap'
import { refusedLine } from '../src/proxy/client-error.js'
import { startTether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'
import { rawConnect } from './fixtures/raw-client.js'
import { startUpstream, testConfig } from './fixtures/upstream.js'

const b = (s: string): Buffer => Buffer.from(s, 'latin1')

/** Resolves once `logs` holds `count` access lines (a refused head's is written after its answer). */
const accessLines = (logs: LogCapture, count: number): Promise<boolean> => new Promise<boolean>((done) => {
  const check = (): void => { if (logs.access().length >= count) done(true) }
  check()
  logs.on('record', check)
})

t.test('refusedLine: an error reported just past the request line\'s LF does not take the next line', async (t) => {
  // (raw, bytesParsed, code) as Node 20.20 / llhttp 9.3.1 hands them to clientError
  t.notMatch(JSON.stringify(refusedLine(b('GET /b HTTP/1.1\nAuthorization: Bearer SECRET\r\n\r\n'), 16, false, 'HPE_INVALID_VERSION')), /SECRET/, 'keep-alive, lone LF after the version')
  t.notMatch(JSON.stringify(refusedLine(b('\nAuthorization: Bearer SECRET\n\n'), 1, false, 'HPE_INVALID_VERSION')), /SECRET/, 'head split just before the LF')
  t.notMatch(JSON.stringify(refusedLine(b('PRI * HTTP/2.0\r\nAuthorization: Bearer SECRET\r\n\r\n'), 16, false, 'HPE_INVALID_VERSION')), /SECRET/, 'PRI without the preface, keep-alive')
})

t.test('a real Tether: the 2nd request on a connection with a lone LF after its version logs no header', async (t) => {
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up]), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const cases: [string, boolean][] = [
    ['GET /b HTTP/1.1\nAuthorization: Bearer SECRET\r\n\r\n', true],
    ['PRI * HTTP/2.0\r\nAuthorization: Bearer SECRET\r\n\r\n', true],
    ['GET /b HTTP/1.1\nAuthorization: Bearer SECRET\r\n\r\n', false], // pipelined: one write, no timing
  ]
  for (const [second, wait] of cases) {
    const before = logs.access().length
    const c = await rawConnect(tether.port)
    if (wait) {
      c.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n')
      t.ok(await c.until(() => c.finals().length > 0, 5000), 'first answered')
      c.write(second)
    } else c.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n' + second)
    t.ok(await c.waitEnd(5000), 'refused and closed')
    c.destroy()
    t.ok(await accessLines(logs, before + 2), 'both access lines')
    const line = logs.access().at(-1)!
    t.match(line, { status: 400, upstream: null })
    t.notMatch(JSON.stringify(line), /SECRET/, `no header value in ${JSON.stringify(line)}`)
  }
})

t.test('a real Tether: a head pipelined in one read behind another, refused for a header, is not logged as the first', async (t) => {
  // the read is all the connection sent, but the parser read a request in it already
  // (socket.parser.incoming): its first line is the first request's, not the refused one's
  const up = await startUpstream('a')
  const logs = new LogCapture()
  const tether = await startTether(testConfig([up]), { logger: createLogger('info', logs) })
  t.teardown(async () => { await tether.close(0); await up.close() })
  const pipelined: [string, Record<string, unknown>][] = [
    ['GET /b HTTP/1.1\r\nHost: a\r\nBad Header: SECRET\r\n\r\n', { method: null, path: null }],
    ['GET /b HTTP/1.1\nAuthorization: Bearer SECRET\r\n\r\n', { method: 'GET', path: '/b' }], // its line began in this read
  ]
  for (const [second, want] of pipelined) {
    const before = logs.access().length
    const c = await rawConnect(tether.port)
    c.write('GET /a HTTP/1.1\r\nHost: a\r\n\r\n' + second)
    t.ok(await c.waitEnd(5000), 'refused and closed')
    c.destroy()
    t.ok(await accessLines(logs, before + 2), 'both access lines')
    const [first, refused] = logs.access().slice(before)
    t.match(first, { method: 'GET', path: '/a', status: 200 })
    t.match(refused, { ...want, status: 400, upstream: null }, `the refused one: ${JSON.stringify(refused)}`)
    t.notMatch(JSON.stringify(refused), /SECRET/)
  }
})
