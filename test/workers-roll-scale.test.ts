// Scaling the worker count by a reload while a worker dies: a scale-up whose first new worker
// dies while it starts goes on to the last, and a scale-down as the third worker crashes
// retires its restart with it. Split from workers-roll-failure.test.ts.
import t from 'tap'
import { primaryOverChild, request, slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

t.test('with two workers, a scale-up to four whose first new worker dies while it starts: that slot is restarted as after a crash, and the roll goes on to the last', async (t) => {
  const { port, proc, out, write, stop } = await primaryOverChild(t, 'workers-scale-up.yaml')
  write({ workers: 4 })
  proc.kill('SIGHUP') // with the file watcher: two reloads of one change
  let third: number | undefined
  await waitFor(() => (third = workerPids(proc).find((pid) => slotOf(pid) === 2)) !== undefined, 60_000, 'the third worker to be forked', 1)
  process.kill(third!, 'SIGKILL') // killed while it starts (out of memory, the watchdog)
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  t.match(out(), /"worker died; restarting it"/, 'the slot is restarted, as after a crash')
  t.notOk(out().includes('replacing the workers failed'), 'the roll did not stop there')
  t.equal((out().match(/"config change needs new workers/g) ?? []).length, 1, 'one roll for the two reloads of one change')
  await waitFor(() => workerPids(proc).map(slotOf).sort().join() === '0,1,2,3', 60_000, 'a worker in every slot, without a reload')
  t.ok(!workerPids(proc).includes(third!), 'the killed one replaced')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'serving')
  await stop()
})

t.test('with three workers, a scale-down to two just as the third crashes: its restart, due during the roll, is retired with it; two workers stay', async (t) => {
  const { port, proc, out, write, stop } = await primaryOverChild(t, 'workers-scale-down.yaml', 3)
  const third = workerPids(proc).find((pid) => slotOf(pid) === 2)
  t.ok(third !== undefined, 'the worker of slot 2')
  // it crashes (restart due in 100 ms) as the operator scales down: the roll replaces slots 0
  // and 1 first, so the restart comes while slot 2 is still in the roll's range
  process.kill(third!, 'SIGKILL')
  write({ workers: 2 })
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  t.match(out(), /"child":2[^\n]*"worker died; restarting it"/, 'the crash restarted slot 2')
  await waitFor(() => workerPids(proc).map(slotOf).sort().join() === '0,1', 60_000, 'slots 0 and 1 only')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'serving')
  t.equal(await stop(), 0)
})
