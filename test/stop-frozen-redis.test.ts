// A graceful stop whose Redis is frozen (SIGSTOP) while a checkpoint write waits for it: the
// stop ends a bounded time after its grace end (STOP_WAIT_MS, not `state.timeout`) and says in
// one warn line how many commands Redis left unanswered. A Redis that is only slow (it answers
// during that wait) loses nothing: the write is stored and no warning is logged.
import t from 'tap'
import type { Test } from 'tap'
import net from 'node:net'
import { STOP_WAIT_MS } from '../src/redis/connection.js'
import { heldHeadTether } from './fixtures/held-head.js'
import type { LogCapture } from './fixtures/log-capture.js'
import { redisCli } from './fixtures/redis-server.js'
import { onEvent, when, within } from './fixtures/wait.js'

const WARNING = 'redis did not answer before the stop: writes among these commands may not be stored'
/** Longer than any bound of the stop: a stop that waits for it fails the timing checks below. */
const STATE_TIMEOUT = 10_000

async function stopWithWriteWaiting(t: Test, slow: boolean): Promise<{ logs: LogCapture; stopMs: number; keys: () => Promise<string> }> {
  const { tether, logs, up, redis, freeze, thaw } = await heldHeadTether(t, STATE_TIMEOUT)
  freeze()
  const client = net.connect(tether.port, '127.0.0.1')
  client.on('error', () => undefined)
  t.teardown(() => client.destroy())
  client.write('GET /x HTTP/1.1\r\nHost: a\r\nX-Tenant: u1\r\n\r\n')
  // the upstream answered: the answer's head now waits for its checkpoint write (Redis frozen)
  await within(new Promise<void>((resolve) => up.server.once('request', (_req, res) => res.once('finish', () => resolve()))), 5000, 'the upstream answer')
  const started = performance.now()
  const stopped = tether.close(100)
  // the grace end cuts the request; its checkpoint write still waits for Redis
  await when(onEvent(logs, 'record'), () => logs.access().length === 1, 3000, 'the access line at the grace end')
  // a slow Redis: it answers 300 ms later, well within the stop's wait (a property of this
  // Redis, not a wait for something: the stop has sent its QUIT by then)
  if (slow) setTimeout(thaw, 300)
  await within(stopped, STATE_TIMEOUT, 'the stop')
  const stopMs = performance.now() - started
  if (!slow) thaw()
  return { logs, stopMs, keys: () => redisCli(redis.port, 'KEYS', '*') }
}

t.test('with Redis frozen, a stop ends about STOP_WAIT_MS after its grace end, not state.timeout, and warns once with the count of unanswered commands', async (t) => {
  const { logs, stopMs } = await stopWithWriteWaiting(t, false)
  t.ok(stopMs < 100 + STOP_WAIT_MS + 1500, `the stop ended ${Math.round(stopMs)} ms after it began (grace 100 ms, Redis wait ${STOP_WAIT_MS} ms; state.timeout ${STATE_TIMEOUT} ms)`)
  const warned = logs.records.filter((r) => r['msg'] === WARNING)
  t.equal(warned.length, 1, 'one warn line')
  t.match(warned[0], { level: 40, unanswered: 1 }, 'the checkpoint write, counted (no keys)')
  t.equal(logs.records.at(-1)?.['msg'], 'tether stopped', 'the stop logged its end')
})

t.test('with Redis only slow (answering during the stop\'s wait), the waiting checkpoint write is stored and nothing is warned', async (t) => {
  const { logs, keys } = await stopWithWriteWaiting(t, true)
  t.notOk(logs.records.some((r) => r['msg'] === WARNING), 'no warning: Redis answered everything')
  t.match(await keys(), /cp:/, 'the checkpoint is in Redis')
})
