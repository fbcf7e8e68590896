// Every Error a log call is given goes through the logger's one error serializer, whatever the
// call site wrote: as the first argument (`log.error(err)`) or as the value of a field other than
// `err`. An ioredis ReplyError for AUTH carries the password in `command.args`; a library's
// message may hold a URL with credentials.
import t from 'tap'
import { createLogger } from '../src/observability/logger.js'
import { LogCapture } from './fixtures/log-capture.js'

/** An error as ioredis's ReplyError for AUTH is, with a URL's password in its message; secrets put together at run time. */
function replyError(): Error {
  const pw = (what: string): string => `pw-in-${what}`
  const err = Object.assign(new Error(`cannot reach redis://tether:${pw('message')}@redis:6379`), { command: { name: 'auth', args: ['tether', pw('args')] } })
  err.name = 'ReplyError'
  return err
}

/** The one line `log` writes, as text and parsed. */
async function logged(log: (l: ReturnType<typeof createLogger>) => void): Promise<{ text: string; rec: Record<string, unknown> }> {
  const out = new LogCapture()
  const line = new Promise<Record<string, unknown>>((resolve) => out.once('record', resolve))
  log(createLogger('info', out).child({ worker: 1 }))
  const rec = await line
  return { text: JSON.stringify(rec), rec }
}

t.test('an Error as the first argument: its message as msg is masked, its fields go through the serializer', async (t) => {
  const { text, rec } = await logged((l) => l.error(replyError()))
  for (const secret of ['pw-in-message', 'pw-in-args']) t.notMatch(text, secret, `${secret} not logged`)
  t.equal(rec['msg'], 'cannot reach redis://tether:***@redis:6379', 'the message, masked, is the msg')
  t.match(rec['err'], { name: 'ReplyError', message: 'cannot reach redis://tether:***@redis:6379', command: { name: 'auth' } }, 'the error is the err field')
  t.equal(rec['worker'], 1, "a child logger's fields are kept")
})

t.test('an Error as the first argument with a message: that message is the msg', async (t) => {
  const { text, rec } = await logged((l) => l.warn(replyError(), 'redis %s', 'failed'))
  t.notMatch(text, 'pw-in-', 'no secret logged')
  t.equal(rec['msg'], 'redis failed', 'the message given, formatted')
  t.equal(rec['level'], 40)
})

t.test('an Error as the value of a field other than err goes through the serializer too', async (t) => {
  const { text, rec } = await logged((l) => l.warn({ reason: replyError(), upstream: 'a' }, 'other field'))
  t.notMatch(text, 'pw-in-', 'no secret logged')
  t.match(rec['reason'], { name: 'ReplyError', message: 'cannot reach redis://tether:***@redis:6379', command: { name: 'auth' } })
  t.equal(rec['upstream'], 'a', 'the other fields as they were')
})

t.test('a line without an Error is logged as it was', async (t) => {
  const { rec } = await logged((l) => l.info({ upstream: 'a', n: 1 }, 'plain'))
  t.match(rec, { upstream: 'a', n: 1, msg: 'plain', worker: 1 })
})

t.test('an Error nested in a field (an object, a list) or given as a format argument goes through the serializer too', async (t) => {
  const nested = await logged((l) => l.warn({ detail: { error: replyError() }, errors: [replyError()], n: 1 }, 'nested'))
  t.notMatch(nested.text, 'pw-in-', 'no secret logged')
  t.match(nested.rec, { detail: { error: { name: 'ReplyError', command: { name: 'auth' } } }, errors: [{ name: 'ReplyError', message: /tether:\*\*\*@redis/ }], n: 1 })
  const format = await logged((l) => l.warn('redis failed: %o', replyError()))
  t.notMatch(format.text, 'pw-in-', 'no secret logged')
  t.match(format.rec['msg'], /^redis failed: .*ReplyError/, 'the error, serialized, in the message')
})
