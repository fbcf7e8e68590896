// What config a worker runs (`workers` > 1): the primary reads the file, and every worker runs the
// text the primary accepted (the sections that need new workers as its slot was started, the live
// ones as accepted last), never the file as it is on disk when the worker starts. Here: a reload
// that brings `state.store: memory` brings the primary's store with it; a roll retires each old
// worker with the grace period it was started with. Split from workers-config-flow.test.ts (shared
// setup in test/fixtures/workers-config-flow.ts), with workers-config-flow-crash.test.ts and
// workers-config-flow-failed-roll.test.ts.
import t from 'tap'
import { request } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { appAndPrimary } from './fixtures/workers-config-flow.js'

t.test('a reload that brings state.store: memory brings the store the workers share: checkpoints are stored after the roll', async (t) => {
  const { port, adminPort, proc, out, reloadWith } = await appAndPrimary(t, 'store', (req, res) => {
    res.writeHead(200, req.url === '/cp' ? { 'x-tether-state': 'cart=1' } : {})
    res.end('ok\n')
  }, 'state: { store: none }')
  reloadWith('state: { store: memory }')
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  for (let i = 0; i < 10; i++) t.equal((await request(`http://127.0.0.1:${port}/cp`, null)).status, 200)
  const metrics = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text()
  t.match(metrics, /tether_checkpoints_total\{result="stored"\} 10\b/, 'every checkpoint stored')
  t.notMatch(metrics, /tether_checkpoints_total\{result="unavailable"\}/, 'none unavailable')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})

t.test('a roll that lowers shutdown.grace_period retires the old workers with the grace they were started with', async (t) => {
  // answers /slow after 6.5 s: past the new grace (0 s) + the primary's 5 s margin
  let arrived: () => void = () => undefined
  const slowArrived = new Promise<void>((resolve) => { arrived = resolve })
  const { port, proc, out, reloadWith } = await appAndPrimary(t, 'grace', (req, res) => {
    if (req.url === '/slow') {
      arrived()
      setTimeout(() => res.end('slow\n'), 6_500)
    } else res.end('ok\n')
  }, 'shutdown: { grace_period: 30s }')
  const slow = request(`http://127.0.0.1:${port}/slow`, null).then((r) => r.status, (err: Error) => err.message)
  await slowArrived // in flight on an old worker when the roll starts
  reloadWith('shutdown: { grace_period: 0s }')
  t.equal(await slow, 200, 'the request on the old worker finishes (30 s grace), not cut at 0 s + 5 s')
  await waitFor(() => out().includes('"workers replaced"'), 30_000, 'the roll to end')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})
