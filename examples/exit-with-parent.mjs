// Preloaded into each process the demo starts (`node --import ./exit-with-parent.mjs ...`):
// when stdin is a pipe and that pipe ends, the process that started this one is gone (even a
// SIGKILL closes its end), so this one ends itself. Without it, Tether and the replicas
// outlived a demo killed with SIGKILL and held their ports (the next `npm start` failed with
// EADDRINUSE). Only in a cluster's primary: Tether's workers inherit the preload and stdin,
// and stop with their primary.
//
// It ends with SIGKILL, not a graceful SIGTERM: stdout and stderr are pipes to the dead demo
// as well, and Tether's logger retries a write that fails with EPIPE forever while flushing at
// shutdown, so a graceful stop hung, printing to no one.
import cluster from 'node:cluster'
import { fstatSync } from 'node:fs'

const stdin = fstatSync(0, { throwIfNoEntry: false })
if (cluster.isPrimary && (stdin?.isFIFO() || stdin?.isSocket())) {
  const end = () => process.kill(process.pid, 'SIGKILL')
  process.stdin.on('end', end)
  process.stdin.on('error', end)
  process.stdin.resume()
  // the pipe alone must not keep a process alive that would otherwise exit
  process.stdin.unref?.()
}
