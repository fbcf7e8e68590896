// node:cluster's round-robin primary accepts each connection, hands it to a worker and keeps its
// own copy of the socket open until that worker acknowledges it. A worker that dies (SIGKILL,
// out of memory) between the hand-off and its acknowledgement leaves that copy open for good:
// the client is never answered and never closed, and waits until its own timeout (measured: a
// request on a new connection right after a worker's SIGKILL, unanswered after 10 s). The
// acknowledgement is node:cluster's internal `NODE_CLUSTER` message; node:cluster itself hands a
// connection a worker refuses (`accepted: false`, a worker closing its server) to another one.
// This guard keeps the connections handed to a worker and not acknowledged; once that worker's
// channel is closed (every acknowledgement it sent has been read by then), each goes to another
// worker by that same refusal when another worker listens there (it asked node:cluster for that
// listener, or was handed a connection of it, and has not closed it), else closed: a listener whose
// last worker went is gone in node:cluster, and a refusal would queue it there forever. Only messages of
// that form are touched: with another form, it keeps nothing and changes nothing. Layer 3 adapter
// (of node:cluster).
import type { Worker } from 'node:cluster'
import type { ChildProcess } from 'node:child_process'

interface Closable {
  close(): void
}

/** A connection node:cluster hands to a worker: `{ cmd: 'NODE_CLUSTER', act: 'newconn', key, seq }` with its handle. */
function handoff(message: unknown): { readonly seq: number; readonly key: string } | null {
  const m = message as { cmd?: unknown; act?: unknown; seq?: unknown; key?: unknown } | null
  return typeof m === 'object' && m !== null && m.cmd === 'NODE_CLUSTER' && m.act === 'newconn' && typeof m.seq === 'number' && typeof m.key === 'string'
    ? { seq: m.seq, key: m.key }
    : null
}

/**
 * The listeners (node:cluster's keys) each guarded worker listens on: asked for (`queryServer`,
 * keyed as node:cluster keys it), or handed a connection of, and not closed since.
 */
const listening = new WeakMap<Worker, Set<string>>()

/** Does `worker` listen on node:cluster's listener `key` (see {@link listening})? */
export function handedOn(worker: Worker, key: string): boolean {
  return listening.get(worker)?.has(key) === true
}

/** node:cluster's internal messages from a worker: an acknowledgement, a listener opened or closed. */
interface FromWorker {
  readonly cmd?: unknown
  readonly ack?: unknown
  readonly act?: unknown
  readonly key?: unknown
  readonly address?: unknown
  readonly port?: unknown
  readonly addressType?: unknown
  readonly fd?: unknown
  readonly index?: unknown
}

/**
 * Guard `worker`'s hand-offs (call right after cluster.fork). `othersTake(key)`: does a worker
 * other than this one still take connections of listener `key` (see {@link handedOn})? Example:
 * `guardHandoffs(worker, (key) => ready.some((w) => w !== worker && handedOn(w, key)))`.
 */
export function guardHandoffs(worker: Worker, othersTake: (key: string) => boolean): void {
  const proc = worker.process as ChildProcess & { send: (...args: unknown[]) => boolean }
  const pending = new Map<number, { readonly handle: Closable; readonly key: string }>()
  const keys = new Set<string>()
  listening.set(worker, keys)
  const send = proc.send
  proc.send = function (this: ChildProcess, ...args: unknown[]): boolean {
    const h = handoff(args[0])
    const handle = args[1] as Closable | undefined
    if (h !== null && typeof handle?.close === 'function') {
      pending.set(h.seq, { handle, key: h.key })
      keys.add(h.key)
    }
    return send.apply(this, args)
  }
  proc.on('internalMessage', (message: unknown) => {
    const m = message as FromWorker | null
    if (typeof m !== 'object' || m === null || m.cmd !== 'NODE_CLUSTER') return
    if (typeof m.ack === 'number') pending.delete(m.ack)
    if (m.act === 'queryServer') keys.add(`${String(m.address)}:${String(m.port)}:${String(m.addressType)}:${String(m.fd)}:${String(m.index)}`)
    else if (m.act === 'close' && typeof m.key === 'string') keys.delete(m.key)
  })
  // node:cluster takes the worker off its listeners once its channel is closed, before it emits
  // 'exit' or 'disconnect', whichever comes then (a channel broken by a send to the dead
  // process emits no 'disconnect')
  const release = (): void => {
    if (worker.isConnected() || pending.size === 0) return
    const lost = [...pending]
    pending.clear()
    for (const [seq, { handle, key }] of lost) {
      if (othersTake(key)) proc.emit('internalMessage', { cmd: 'NODE_CLUSTER', ack: seq, accepted: false })
      else handle.close()
    }
  }
  worker.on('exit', release)
  worker.on('disconnect', release)
}
