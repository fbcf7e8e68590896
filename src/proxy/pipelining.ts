// HTTP/1.1 pipelining: Node parses every request a client pipelines on one connection at
// once, but answers them in order. Forwarding them all at once would let one connection open
// any number of upstream requests; like nginx, Tether forwards one request per client
// connection at a time. Owns no I/O of its own: it only orders calls to the handler.
import type { IncomingMessage, ServerResponse } from 'node:http'

type Handler = (req: IncomingMessage, res: ServerResponse) => void

const QUEUE: unique symbol = Symbol('tether.pipeline')
type Queued = { [QUEUE]?: (() => void)[] }

/**
 * Wrap `handler` so that a connection's next request starts only once the previous answer is
 * done (finished or aborted). A connection without pipelining pays one property check and one
 * 'close' listener per request.
 *
 * Example: a client pipelines GET /a, GET /b on one socket -> /b is forwarded after /a's answer.
 */
export function onePerConnection(handler: Handler): Handler {
  const run = (req: IncomingMessage, res: ServerResponse): void => {
    const socket = req.socket as typeof req.socket & Queued
    res.once('close', () => {
      const next = socket[QUEUE]?.shift()
      if (next !== undefined) next()
      else delete socket[QUEUE]
    })
    handler(req, res)
  }
  return (req, res) => {
    const socket = req.socket as typeof req.socket & Queued
    const queue = socket[QUEUE]
    if (queue === undefined) {
      socket[QUEUE] = []
      run(req, res)
    } else {
      queue.push(() => run(req, res))
    }
  }
}
