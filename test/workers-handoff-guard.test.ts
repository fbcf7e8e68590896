// The hand-off guard (src/workers/handoff-guard.ts) over fake cluster workers: what it keeps of
// node:cluster's hand-offs, and what it does with those a dead worker never acknowledged.
import t from 'tap'
import { EventEmitter } from 'node:events'
import type { Worker } from 'node:cluster'
import { guardHandoffs, handedOn } from '../src/workers/handoff-guard.js'

function fakeWorker() {
  const proc = Object.assign(new EventEmitter(), { sent: [] as unknown[], send(this: { sent: unknown[] }, m: unknown, _handle?: unknown) { this.sent.push(m); return true } })
  const worker = Object.assign(new EventEmitter(), { process: proc, connected: true, isConnected() { return this.connected } })
  const internal: unknown[] = []
  proc.on('internalMessage', (m: unknown) => internal.push(m))
  return { worker, proc, internal, asWorker: worker as unknown as Worker }
}

const handle = () => ({ closed: 0, close() { this.closed++ } })

t.test('a hand-off the dead worker never acknowledged is refused back to node:cluster when another worker listens there, else closed', async (t) => {
  const a = fakeWorker()
  const b = fakeWorker()
  let others = true
  const asked: string[] = []
  guardHandoffs(a.asWorker, (key) => (asked.push(key), others))
  guardHandoffs(b.asWorker, () => true)
  const h1 = handle()
  const h2 = handle()
  const h3 = handle()
  a.proc.send({ cmd: 'NODE_CLUSTER', act: 'newconn', key: 'k1', seq: 1 }, h1)
  a.proc.send({ cmd: 'NODE_CLUSTER', act: 'newconn', key: 'k1', seq: 2 }, h2)
  a.proc.send({ cmd: 'NODE_CLUSTER', act: 'newconn', key: 'k2', seq: 3 }, h3)
  a.proc.send({ tether: 'ack', seq: 4 }) // Tether's own messages pass through untouched
  t.equal(a.proc.sent.length, 4, 'every message is still sent')
  t.ok(handedOn(a.asWorker, 'k1') && handedOn(a.asWorker, 'k2'))
  t.notOk(handedOn(b.asWorker, 'k1'), 'a worker never handed a connection of a listener is not counted as listening there')
  a.proc.emit('internalMessage', { cmd: 'NODE_CLUSTER', ack: 1, accepted: true })
  a.worker.emit('exit') // still connected: node:cluster has not taken it off its listeners yet
  t.equal(a.internal.length, 1, 'nothing done while the channel is open')
  a.worker.connected = false
  others = true
  a.worker.emit('disconnect')
  t.same(asked, ['k1', 'k2'])
  t.same(a.internal.slice(1), [{ cmd: 'NODE_CLUSTER', ack: 2, accepted: false }, { cmd: 'NODE_CLUSTER', ack: 3, accepted: false }],
    'the two not acknowledged are refused (node:cluster hands them to another worker); the acknowledged one is not')
  t.same([h1.closed, h2.closed, h3.closed], [0, 0, 0])
  a.worker.emit('exit')
  t.equal(a.internal.length, 3, 'once only')

  const c = fakeWorker()
  guardHandoffs(c.asWorker, () => false)
  const h4 = handle()
  c.proc.send({ cmd: 'NODE_CLUSTER', act: 'newconn', key: 'k1', seq: 9 }, h4)
  c.worker.connected = false
  c.worker.emit('exit')
  t.equal(h4.closed, 1, 'no other worker listens there: closed, not left open')
  t.equal(c.internal.length, 0)
})

t.test("a worker listens where it asked node:cluster to (keyed as node:cluster keys it) until it closes that listener", async (t) => {
  const w = fakeWorker()
  guardHandoffs(w.asWorker, () => true)
  const key = '127.0.0.1:8080:4:undefined:0' // node 20's key: address, port, address type, fd, index
  w.proc.emit('internalMessage', { cmd: 'NODE_CLUSTER', act: 'queryServer', address: '127.0.0.1', port: 8080, addressType: 4, index: 0, seq: 0 })
  t.ok(handedOn(w.asWorker, key), 'listening from its request on, before any connection')
  w.proc.emit('internalMessage', { cmd: 'NODE_CLUSTER', act: 'close', key, seq: 1 })
  t.notOk(handedOn(w.asWorker, key), 'not after it closed the listener (a worker stopping)')
})
