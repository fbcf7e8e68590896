// Preloaded (node --import) into a Tether process by bench/metrics-scrape.mjs: in the cluster
// primary only, the longest event-loop block (ms) since the last ask, written to
// $LOOP_BLOCK_DIR/<pid> on SIGUSR2 (and reset), from perf_hooks' event-loop delay histogram.
import cluster from 'node:cluster'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { writeFileSync } from 'node:fs'

if (cluster.isPrimary && process.env.LOOP_BLOCK_DIR) {
  const h = monitorEventLoopDelay({ resolution: 5 })
  h.enable()
  process.on('SIGUSR2', () => {
    writeFileSync(`${process.env.LOOP_BLOCK_DIR}/${process.pid}`, String(h.max / 1e6))
    h.reset()
  })
}
