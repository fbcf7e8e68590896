// What config a worker runs (`workers` > 1): the primary reads the file, and every worker runs the
// text the primary accepted (the sections that need new workers as its slot was started, the live
// ones as accepted last), never the file as it is on disk when the worker starts. Here: a slot a
// failed roll did not reach restarts as it was after a crash, and the same reload retries the roll.
// Split from workers-config-flow.test.ts (shared setup in test/fixtures/workers-config-flow.ts),
// with workers-config-flow-crash.test.ts and workers-config-flow-roll.test.ts.
import t from 'tap'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { count, statusOf } from './fixtures/workers-config-flow.js'

t.test('a slot a failed roll did not reach restarts as it was after a crash; the same reload again retries the roll', async (t) => {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const taken = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => taken.once('listening', r))
  const takenPort = (taken.address() as net.AddressInfo).port
  const [port, adminPort] = await freePorts(2)
  const yaml = (listen: number): string => workersYaml({ listen, adminPort, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] })
  const file = tempFile('workers-config-flow-roll.yaml', yaml(port))
  const { proc, out } = await startPrimary(t, file)
  writeFileSync(file, yaml(takenPort))
  await waitFor(() => out().includes('replacing the workers failed'), 60_000, 'the roll to fail (the port is taken)')
  // the port is freed (say the other process went away); then a worker crashes
  await new Promise((r) => taken.close(r))
  const listening = count(out(), '"tether listening"')
  process.kill(workerPids(proc)[0]!, 'SIGKILL')
  await waitFor(() => count(out(), '"tether listening"') > listening, 60_000, 'the restarted worker to listen')
  let old = 0
  for (let i = 0; i < 20; i++) if (await statusOf(`http://127.0.0.1:${port}/`) === 200) old++
  t.equal(old, 20, 'both workers still on the old port: the restarted one too')
  t.equal(await statusOf(`http://127.0.0.1:${takenPort}/`), null, 'none on the new one')

  const pids = workerPids(proc)
  proc.kill('SIGHUP') // the same file: the roll is retried
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to be retried and end')
  await waitFor(() => workerPids(proc).length === 2 && workerPids(proc).every((p) => !pids.includes(p)), 60_000, 'both workers replaced')
  t.equal(await statusOf(`http://127.0.0.1:${takenPort}/`), 200, 'the workers listen on the new port')
  t.equal(await statusOf(`http://127.0.0.1:${port}/`), null, 'not on the old one')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
})
