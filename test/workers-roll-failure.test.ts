// A rolling replacement whose new worker cannot start (`workers: 2`): a reload moves the
// proxy listener to a port another process holds, so the new worker fails to listen. The roll
// stops there: the old workers keep serving on the old port (no request fails), the failed
// worker is not restarted in a loop, and one error line says what happened. A later reload
// back to a free port replaces the workers as usual.
import t, { type Test } from 'tap'
import net from 'node:net'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePort, freePorts } from './fixtures/ports.js'
import { request, slotOf, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'

/**
 * A primary of `workers` workers over one child upstream, its proxy.yaml in a temp file named
 * `name`: `write()` rewrites it (another worker count or listen port), `stop()` sends SIGTERM
 * and resolves with the exit code.
 */
async function primaryOf(t: Test, name: string, workers = 2) {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const [port, adminPort] = await freePorts(2)
  const yaml = (o: { workers?: number; listen?: number } = {}): string => workersYaml({ listen: o.listen ?? port, adminPort, workers: o.workers ?? workers, upstreams: [{ id: 'app-0', url: app.url }] })
  const file = tempFile(name, yaml())
  const { proc, out } = await startPrimary(t, file)
  const write = (o: { workers?: number; listen?: number }): void => writeFileSync(file, yaml(o))
  const stop = async (): Promise<number | null> => {
    proc.kill('SIGTERM')
    await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
    return proc.exitCode
  }
  return { port, proc, out, write, stop }
}

t.test('with two workers, a replacement worker that cannot start ends the roll: the old workers serve on, nothing restarts in a loop, the error is logged', async (t) => {
  const taken = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => taken.once('listening', r))
  t.teardown(() => new Promise((r) => taken.close(r)))
  const takenPort = (taken.address() as net.AddressInfo).port
  const { port, proc, out, write, stop } = await primaryOf(t, 'workers-roll-failure.yaml')
  const pids = workerPids(proc)
  t.equal(pids.length, 2, 'two workers')

  write({ listen: takenPort })
  await waitFor(() => out().includes('replacing the workers failed'), 60_000, 'the roll to fail')
  const failed = out().split('\n').find((l) => l.includes('replacing the workers failed'))!
  t.match(failed, /"level":50/, 'logged as an error')
  t.match(failed, /"sections":\["listen"\]/, 'naming the sections that were not applied')
  t.match(out(), /EADDRINUSE/, "the new worker's own error is logged too")

  // the old workers serve on: every request on a new connection succeeds
  let ok = 0
  for (let i = 0; i < 40; i++) if ((await request(`http://127.0.0.1:${port}/`, null)).status === 200) ok++
  t.equal(ok, 40, 'the old workers answer every request on the old port')
  t.same(workerPids(proc), pids, 'the same two worker processes, none added')
  const deaths = (out().match(/"worker died; restarting it"/g) ?? []).length
  t.equal(deaths, 0, 'the failed replacement is not restarted (no crash loop)')

  // back to a free port: the workers are replaced as usual
  const next = await freePort()
  write({ listen: next })
  await waitFor(async () => {
    try {
      return (await request(`http://127.0.0.1:${next}/`, null)).status === 200
    } catch {
      return false
    }
  }, 20_000, 'the workers on the new port')
  await waitFor(() => workerPids(proc).every((p) => !pids.includes(p)) && workerPids(proc).length === 2, 60_000, 'both old workers replaced')
  t.pass('a later reload replaces both workers')
  t.equal(await stop(), 0, 'SIGTERM stops the primary and its workers gracefully')
})

t.test('with two workers, a worker that crashes as a roll begins is replaced once: the roll retires the one restarted meanwhile, leaving two workers', async (t) => {
  const { proc, out, write, stop } = await primaryOf(t, 'workers-roll-crash.yaml')
  const second = workerPids(proc).find((pid) => slotOf(pid) === 1)
  t.ok(second !== undefined, 'the worker of slot 1')
  // it crashes; the primary restarts it 100 ms later, while the roll (a new listen port) replaces slot 0
  process.kill(second!, 'SIGKILL')
  const next = await freePort()
  write({ listen: next })
  proc.kill('SIGHUP') // the file watcher sees the change too: a second reload, with nothing new, is no second roll
  await waitFor(() => out().includes('"workers replaced"'), 30_000, 'the roll to end')
  t.equal((out().match(/"config change needs new workers/g) ?? []).length, 1, 'one roll')
  t.equal((await request(`http://127.0.0.1:${next}/`, null)).status, 200, 'served on the new port')
  t.equal(workerPids(proc).length, 2, 'two worker processes: none left over from the crash restart')
  await stop()
})

t.test('with two workers, a scale-up to four whose first new worker dies while it starts: that slot is restarted as after a crash, and the roll goes on to the last', async (t) => {
  const { port, proc, out, write, stop } = await primaryOf(t, 'workers-scale-up.yaml')
  write({ workers: 4 })
  proc.kill('SIGHUP') // with the file watcher: two reloads of one change
  let third: number | undefined
  await waitFor(() => (third = workerPids(proc).find((pid) => slotOf(pid) === 2)) !== undefined, 60_000, 'the third worker to be forked', 1)
  process.kill(third!, 'SIGKILL') // killed while it starts (out of memory, the watchdog)
  await waitFor(() => out().includes('"workers replaced"'), 30_000, 'the roll to end')
  t.match(out(), /"worker died; restarting it"/, 'the slot is restarted, as after a crash')
  t.notOk(out().includes('replacing the workers failed'), 'the roll did not stop there')
  t.equal((out().match(/"config change needs new workers/g) ?? []).length, 1, 'one roll for the two reloads of one change')
  await waitFor(() => workerPids(proc).map(slotOf).sort().join() === '0,1,2,3', 60_000, 'a worker in every slot, without a reload')
  t.ok(!workerPids(proc).includes(third!), 'the killed one replaced')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'serving')
  await stop()
})

t.test('with three workers, a scale-down to two just as the third crashes: its restart, due during the roll, is retired with it; two workers stay', async (t) => {
  const { port, proc, out, write, stop } = await primaryOf(t, 'workers-scale-down.yaml', 3)
  const third = workerPids(proc).find((pid) => slotOf(pid) === 2)
  t.ok(third !== undefined, 'the worker of slot 2')
  // it crashes (restart due in 100 ms) as the operator scales down: the roll replaces slots 0
  // and 1 first, so the restart comes while slot 2 is still in the roll's range
  process.kill(third!, 'SIGKILL')
  write({ workers: 2 })
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('"workers replaced"'), 40_000, 'the roll to end')
  t.match(out(), /"child":2[^\n]*"worker died; restarting it"/, 'the crash restarted slot 2')
  await waitFor(() => workerPids(proc).map(slotOf).sort().join() === '0,1', 60_000, 'slots 0 and 1 only')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'serving')
  t.equal(await stop(), 0)
})

t.test('with two workers, a roll that retires a worker still starting (restarted after a crash) stops it gracefully once it has started', async (t) => {
  const { proc, out, write, stop } = await primaryOf(t, 'workers-roll-starting.yaml')
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
  await waitFor(() => out().includes(`"stopping a worker"`) && out().split('\n').some((l) => l.includes('"stopping a worker"') && l.includes(`"pid":${restarted}`)), 30_000, 'the roll to retire the restarted worker')
  t.ok(stopping() >= 2)
  process.kill(restarted!, 'SIGCONT')
  await waitFor(() => out().includes('"workers replaced"'), 30_000, 'the roll to end')
  const own = out().split('\n').filter((l) => l.includes('"worker":1') && l.includes('"worker stopping"') && l.includes('asked by the primary'))
  t.ok(own.length >= 1, 'the restarted worker stopped gracefully (its stop, sent while it started, was not lost)')
  t.equal(workerPids(proc).length, 2)
  await stop()
})

t.test('with two workers, SIGTERM while a roll starts its first new worker ends the roll there: no other worker is started, all stop, the primary exits 0', async (t) => {
  const { proc, out, write, stop } = await primaryOf(t, 'workers-roll-sigterm.yaml')
  const started = (slot: number): number => out().split('\n').filter((l) => l.includes(`"child":${slot},`) && l.includes('"starting a worker"')).length
  t.same([started(0), started(1)], [1, 1], 'one worker a slot')
  write({ listen: await freePort() })
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('"config change needs new workers'), 60_000, 'the roll to begin', 1)
  t.equal(await stop(), 0, 'SIGTERM while its first new worker is starting: exits 0')
  t.equal(started(1), 1, 'slot 1: no new worker after the signal')
  t.notOk(out().includes('"workers replaced"'), 'the roll did not go on')
  // every worker ever started (the primary logs each pid) has exited
  const pids = [...out().matchAll(/"pid":(\d+),"msg":"starting a worker"/g)].map((m) => Number(m[1]))
  t.ok(pids.length >= 2 && pids.length <= 3, `the two workers and at most the one the roll was starting (${pids.length})`)
  const alive = (pid: number): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
  await waitFor(() => pids.every((pid) => !alive(pid)), 10_000, 'every worker to have exited')
  t.pass('every worker stopped')
})
