// Rolling replacements (`workers: 2`) meeting a worker crash: a worker that crashes as a roll
// begins is replaced once, and a roll that retires a worker still starting after a crash
// restart stops it gracefully once it has started. Split from workers-roll-failure.test.ts.
import t from 'tap'
import { freePort } from './fixtures/ports.js'
import { primaryOverChild, request, slotOf, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

t.test('with two workers, a worker that crashes as a roll begins is replaced once: the roll retires the one restarted meanwhile, leaving two workers', async (t) => {
  const { proc, out, write, stop } = await primaryOverChild(t, 'workers-roll-crash.yaml')
  const second = workerPids(proc).find((pid) => slotOf(pid) === 1)
  t.ok(second !== undefined, 'the worker of slot 1')
  // it crashes; the primary restarts it 100 ms later, while the roll (a new listen port) replaces slot 0
  process.kill(second!, 'SIGKILL')
  const next = await freePort()
  write({ listen: next })
  proc.kill('SIGHUP') // the file watcher sees the change too: a second reload, with nothing new, is no second roll
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  t.equal((out().match(/"config change needs new workers/g) ?? []).length, 1, 'one roll')
  t.equal((await request(`http://127.0.0.1:${next}/`, null)).status, 200, 'served on the new port')
  t.equal(workerPids(proc).length, 2, 'two worker processes: none left over from the crash restart')
  await stop()
})

t.test('with two workers, a roll that retires a worker still starting (restarted after a crash) stops it gracefully once it has started', async (t) => {
  const { proc, out, write, stop } = await primaryOverChild(t, 'workers-roll-starting.yaml')
  const before = workerPids(proc)
  process.kill(before.find((pid) => slotOf(pid) === 1)!, 'SIGKILL')
  let restarted: number | undefined
  await waitFor(() => (restarted = workerPids(proc).find((pid) => !before.includes(pid))) !== undefined, 10_000, 'the crashed worker to be restarted', 1)
  process.kill(restarted!, 'SIGSTOP') // held while it starts
  t.teardown(() => { try { process.kill(restarted!, 'SIGKILL') } catch { /* gone */ } })
  const stopping = (): number => (out().match(/"stopping a worker"/g) ?? []).length
  write({ listen: await freePort() })
  proc.kill('SIGHUP')
  // slot 0 replaced, then slot 1's new worker started and the restarted one asked to stop
  await waitFor(() => out().includes(`"stopping a worker"`) && out().split('\n').some((l) => l.includes('"stopping a worker"') && l.includes(`"pid":${restarted}`)), 60_000, 'the roll to retire the restarted worker')
  t.ok(stopping() >= 2)
  process.kill(restarted!, 'SIGCONT')
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  const own = out().split('\n').filter((l) => l.includes('"worker":1') && l.includes('"worker stopping"') && l.includes('asked by the primary'))
  t.ok(own.length >= 1, 'the restarted worker stopped gracefully (its stop, sent while it started, was not lost)')
  t.equal(workerPids(proc).length, 2)
  await stop()
})
