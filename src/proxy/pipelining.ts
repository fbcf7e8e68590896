// HTTP/1.1 pipelining: Node parses every request a client pipelines on one connection at
// once, but answers them in order. Forwarding them all at once would let one connection open
// any number of upstream requests; like nginx, Tether forwards one request per client
// connection at a time. Node stops reading a connection only when its answers pile up unsent,
// so a client pipelining requests behind one the upstream is slow to answer would make it
// parse and hold them without end (memory grows with what the client sends): past
// MAX_WAITING requests waiting, the connection is not read any more until they are down to
// RESUME_AT, as nginx and HAProxy leave unread requests in the socket. Owns no I/O of its own:
// it orders calls to the handler and pauses and resumes reading.
import type { IncomingMessage, ServerResponse } from 'node:http'

import type { Duplex } from 'node:stream'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

/** Requests parsed and waiting on one connection at which Tether stops reading it. */
export const MAX_WAITING = 16
/** ... and reads it again once they are down to this many. */
const RESUME_AT = 4

/** Node's own flag and parser of a connection it reads HTTP/1 from (what it pauses itself with). */
type Reading = Duplex & { _paused?: boolean; parser?: { pause(): void; resume(): void } | null }

const STATE: unique symbol = Symbol('tether.pipeline')
/** Per connection: idle, busy, or busy with requests waiting; and its "answer done" callback. */
interface ConnectionState {
  busy: boolean
  waiting: (() => void)[] | null
  /** Reading stopped here for the requests waiting (not by Node for its answers). */
  paused: boolean
  readonly done: () => void
}
type Tracked = { [STATE]?: ConnectionState }

/**
 * Wrap `handler` so that a connection's next request starts only once the previous answer is
 * done (finished or aborted). Per request on a connection without pipelining: a flag check and
 * one 'close' listener; the per-connection state is made once.
 *
 * Example: a client pipelines GET /a, GET /b on one socket -> /b is forwarded after /a's answer.
 */
export function onePerConnection(handler: Handler): Handler {
  return (req, res) => {
    const socket = req.socket as typeof req.socket & Tracked
    let state = socket[STATE]
    if (state === undefined) {
      const s: ConnectionState = {
        busy: false,
        waiting: null,
        paused: false,
        done: () => {
          const next = s.waiting?.shift()
          if (s.paused && s.waiting!.length <= RESUME_AT) resume(socket, s)
          if (next !== undefined) next()
          else s.busy = false
        },
      }
      state = socket[STATE] = s
    }
    if (state.busy) {
      wait(socket, state, () => {
        res.on('close', state!.done)
        handler(req, res)
      })
      return
    }
    state.busy = true
    res.on('close', state.done) // a response closes once: no once-wrapper needed
    handler(req, res)
  }
}

/**
 * Run `fn` once every request this connection sent before is answered (at once when none is
 * pending). Node hands an Upgrade request over as soon as it is parsed, also when it was
 * pipelined behind a slow request: waiting here keeps answers in request order.
 * Example: GET /slow, then an upgrade on the same socket -> the 101 follows /slow's answer.
 */
export function whenIdle(socket: Duplex, fn: () => void): void {
  const state = (socket as Duplex & Tracked)[STATE]
  if (state === undefined || !state.busy) {
    fn()
    return
  }
  wait(socket, state, () => {
    // the connection stays "busy" until this upgrade's own request is done with the socket
    fn()
    state.done()
  })
}

/** Queue `next` behind the connection's current request; stop reading it past MAX_WAITING. */
function wait(socket: Duplex, state: ConnectionState, next: () => void): void {
  const waiting = (state.waiting ??= [])
  waiting.push(next)
  if (waiting.length < MAX_WAITING) return
  state.paused = true
  // as Node pauses for answers not read: the flag makes it pause its parser once the bytes
  // read so far are parsed, and the socket is not read further (again, if Node resumed it
  // when its answers drained)
  const s = socket as Reading
  if (s._paused === true) return
  s._paused = true
  s.pause()
}

function resume(socket: Duplex, state: ConnectionState): void {
  state.paused = false
  const s = socket as Reading
  if (s.destroyed) return
  s._paused = false
  s.parser?.resume()
  s.resume()
}
