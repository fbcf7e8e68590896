// A rolling replacement whose new worker cannot start (`workers: 2`): a reload moves the
// proxy listener to a port another process holds, so the new worker fails to listen. The roll
// stops there: the old workers keep serving on the old port (no request fails), the failed
// worker is not restarted in a loop, and one error line says what happened. A later reload
// back to a free port replaces the workers as usual. And SIGTERM while a roll starts its first
// new worker ends the roll there. Crashes during a roll: workers-roll-crash.test.ts; scaling
// with a crash: workers-roll-scale.test.ts.
import t from 'tap'
import net from 'node:net'
import { freePort } from './fixtures/ports.js'
import { primaryOverChild, request, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

t.test('with two workers, a replacement worker that cannot start ends the roll: the old workers serve on, nothing restarts in a loop, the error is logged', async (t) => {
  const taken = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => taken.once('listening', r))
  t.teardown(() => new Promise((r) => taken.close(r)))
  const takenPort = (taken.address() as net.AddressInfo).port
  const { port, proc, out, write, stop } = await primaryOverChild(t, 'workers-roll-failure.yaml')
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
  }, 60_000, 'the workers on the new port')
  await waitFor(() => workerPids(proc).every((p) => !pids.includes(p)) && workerPids(proc).length === 2, 60_000, 'both old workers replaced')
  t.pass('a later reload replaces both workers')
  t.equal(await stop(), 0, 'SIGTERM stops the primary and its workers gracefully')
})

t.test('with two workers, SIGTERM while a roll starts its first new worker ends the roll there: no other worker is started, all stop, the primary exits 0', async (t) => {
  const { proc, out, write, stop } = await primaryOverChild(t, 'workers-roll-sigterm.yaml')
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
