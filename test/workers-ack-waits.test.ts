// The answers that wait for the primary's acknowledgement of the same batch of writes (one
// event-loop turn's, sent as one message and acknowledged at once) share one wait: one promise
// and one timer, not one each, which under load outlived the IPC round trip, got promoted and
// were most of the garbage a worker's old space grew by at a million new users
// (docs/workers.md, Memory). Unit test of a real WorkerLink over a scripted IPC channel.
import t from 'tap'
import { WorkerLink } from '../src/workers/worker-link.js'

const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

function setup(timeout = 600_000) {
  const sent: { tether: string; seq?: number }[] = []
  let deliver: (m: unknown) => void = () => undefined
  const link = new WorkerLink({ send: (m) => void sent.push(m as never), onMessage: (fn) => { deliver = fn } }, undefined, timeout)
  const sink = link.bindings.sink()
  return { link, sink, sent, ack: (seq: number) => deliver({ tether: 'ack', seq }) }
}

/** Whether `p` has settled (after the pending callbacks ran). */
async function settled(p: Promise<void> | null): Promise<boolean> {
  if (p === null) return true
  let done = false
  void p.then(() => { done = true })
  await turn()
  return done
}

t.test('the answers waiting for one batch share one promise, released by its ack', async (t) => {
  const { link, sink, sent, ack } = setup()
  const mark = link.mark()
  const waits = ['u1', 'u2', 'u3'].map((k) => {
    sink.bound(k, 'app-1', 0, false, 1_000)
    return link.flushedFor([k], mark)
  })
  t.ok(waits.every((w) => w !== null), 'each answer waits')
  t.equal(waits[1], waits[0], 'the second answer shares the first one\'s wait')
  t.equal(waits[2], waits[0], 'and the third')
  await turn()
  const batch = sent.filter((m) => m.tether === 'writes')
  t.equal(batch.length, 1, 'one message for the turn')
  t.equal(batch[0]!.seq, 3)
  // the next turn's writes: a wait of its own, not released by the first batch's ack
  const mark2 = link.mark()
  sink.bound('u4', 'app-1', 0, false, 1_000)
  const next = link.flushedFor(['u4'], mark2)
  t.not(next, waits[0], 'a later batch has its own wait')
  // a parallel request of u2 (its write sent, not acknowledged yet) waits for it
  const again = link.flushedFor(['u2'], link.mark())
  t.notOk(await settled(waits[0]!), 'not released before the ack')
  ack(3)
  t.ok(await settled(waits[0]!), 'released by the ack of the batch')
  t.ok(await settled(again), 'and the parallel request of u2')
  t.notOk(await settled(next), 'the later batch still waits')
  await turn()
  ack(4)
  t.ok(await settled(next), 'released by its own ack')
  t.equal(link.flushedFor(['u1', 'u4'], mark), null, 'nothing pending: no wait')
  t.ok(link.idle())
})

t.test('a wait for a write sent already joins none sent after it', async (t) => {
  const { link, sink, ack } = setup()
  sink.bound('a', 'app-1', 0, false, 1_000)
  await turn() // seq 1 sent
  sink.bound('b', 'app-1', 0, false, 1_000)
  const b = link.flushedFor(['b'], link.mark() - 1)
  await turn() // seq 2 sent
  const a = link.flushedFor(['a'], link.mark())
  t.not(a, b)
  ack(1)
  t.ok(await settled(a), 'the write of a acknowledged: its answer goes')
  t.notOk(await settled(b), 'b still waits')
  ack(2)
  t.ok(await settled(b))
})

t.test('a primary that does not answer holds a shared wait back no longer than the timeout', async (t) => {
  const { link, sink } = setup(20)
  const mark = link.mark()
  sink.bound('u1', 'app-1', 0, false, 1_000)
  sink.bound('u2', 'app-1', 0, false, 1_000)
  const w = link.flushedFor(['u1'], mark)
  t.equal(link.flushedFor(['u2'], mark), w)
  await w // ends by the timeout (no ack ever comes); a hang would time the test out
  t.notOk(link.idle(), 'still unacknowledged')
  t.pass('released')
})
