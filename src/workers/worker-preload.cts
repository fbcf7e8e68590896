// Loaded into every worker with `--require`, before node runs Tether's code. CommonJS on
// purpose: node runs `--require` modules synchronously during its start-up, right after the
// cluster bootstrap has sent the primary its first message ('online'), while Tether's ES module
// entry only runs later. When the primary dies in that window (SIGKILL, OOM kill), that send
// fails with EPIPE, node emits the error on `cluster.worker`, and without a listener the worker
// would crash with node's internal stack on stderr. A closed channel is not this worker's error:
// node's cluster code exits the worker as soon as it sees the disconnect that follows. The
// listener also covers Tether's own messages to a primary that has just gone (WorkerLink's
// process.send). Layer 5 wiring; no imports from Tether's modules.
const cluster = require('node:cluster') as typeof import('node:cluster').default

/** The error codes of a send on an IPC channel whose other end is gone. */
const CHANNEL_GONE = new Set(['EPIPE', 'ECONNRESET', 'ERR_IPC_CHANNEL_CLOSED', 'ERR_IPC_DISCONNECTED'])

cluster.worker?.on('error', (err: NodeJS.ErrnoException) => {
  if (CHANNEL_GONE.has(err.code ?? '') || !process.connected) return
  process.stderr.write(`tether worker: a message to the primary failed: ${err.message}\n`)
})
