// health.shared: redis with `workers: 3`: another replica's active `down` heard while the group
// has no lead (its lead SIGKILLed, the primary not yet told) is applied by the next lead once
// it is named, and relayed to the other worker, which applies it once; not dropped by all.
// The window is made certain: the primary is stopped (SIGSTOP) before the lead is killed, so it
// names no other lead until it is continued; the `down` is published meanwhile, and a passive
// `down` published after it (applied by each worker as heard) shows the siblings heard it.
// Run with the messages as a Tether sends them (with `seq`) and as an older one does (without).
// Real processes: a real redis-server, real upstreams, the CLI from dist/ as a primary.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { slotOf, startPrimary, workerAdmins, workerPids, workersYaml } from './fixtures/primary-process.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

interface Line { msg: string; worker?: number; child?: number; upstream?: string; to?: string; reason?: string; event?: string; detail?: string }

/** The JSON log lines in `out` with message `msg`. */
function lines(out: string, msg: string): Line[] {
  return out.split('\n').slice(0, -1).filter((l) => l.includes(`"${msg}"`)).map((l) => JSON.parse(l) as Line)
}

/** Whether process `pid` has exited (gone, or a zombie its stopped parent has not reaped). */
function exited(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'latin1').replace(/^.*\) /, '').startsWith('Z')
  } catch {
    return true
  }
}

for (const ids of [true, false]) t.test(`a down heard while the lead is dead and not replaced yet is applied by the next lead, on every worker${ids ? '' : ' (from a Tether without message ids)'}`, async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const apps = await Promise.all(['a', 'b', 'c', 'd'].map((id) => startUpstream(id)))
  t.teardown(() => Promise.all(apps.map((a) => a.close())))
  const url = (id: string): string => apps.find((a) => a.id === id)!.url
  const [listen, adminPort] = await freePorts(2)
  const file = tempFile('proxy.yaml', workersYaml({
    listen: listen!, adminPort: adminPort!, workers: 3, upstreams: apps.map((a) => ({ id: a.id, url: a.url })),
    extra: [
      `state: { store: redis, redis: { url: "${redis.url}", key_prefix: "gap:" } }`,
      'health:',
      '  shared: redis',
      // every app passes this group's probes: an ejection here is another replica's
      '  active: { interval: 1s, timeout: 2s, unhealthy_threshold: 100, healthy_threshold: 1 }',
      '  passive: { base_ejection: 5m, max_ejection: 10m, max_ejection_percent: 100 }',
    ],
  }))
  const two = await startPrimary(t, file)
  await waitFor(() => workerAdmins(two.out()).size === 3, 60_000, 'the three workers to listen')
  await waitFor(() => lines(two.out(), 'worker runs the active health checks').length === 1, 60_000, 'the primary to name a lead')
  const leadSlot = lines(two.out(), 'worker runs the active health checks')[0]!.child!
  const siblings = [0, 1, 2].filter((w) => w !== leadSlot)
  // another replica's messages, as it publishes them (docs/state-protocol.md#messages-between-replicas)
  // (an older Tether's carry no `seq`: a worker matches their copies by text)
  let seq = 0
  const publish = (m: Record<string, unknown>): Promise<string> => redisCli(redis.port, 'PUBLISH', 'gap:events', JSON.stringify({ from: 'another-replica', ...(ids ? { seq: ++seq } : {}), ...m }))
  const heard = (worker: number, id: string): Line[] => lines(two.out(), 'health event from another Tether replica').filter((l) => l.worker === worker && l.upstream === id)
  const applied = (worker: number, id: string): boolean => heard(worker, id).length > 0
  const ejected = (worker: number, id: string): Line[] => lines(two.out(), 'upstream health changed').filter((l) => l.worker === worker && l.upstream === id && l.to === 'ejected')

  // every worker subscribed: a passive `down` (each worker applies it as it hears it) reached all
  await waitFor(async () => {
    await publish({ kind: 'down', id: 'c', url: url('c') })
    return [0, 1, 2].every((w) => applied(w, 'c'))
  }, 30_000, 'every worker to hear the other replica', 200)

  // the window: the lead is dead and the stopped primary names no other
  two.proc.kill('SIGSTOP')
  t.teardown(() => { if (two.proc.exitCode === null) two.proc.kill('SIGCONT') })
  const leadPid = workerPids(two.proc).find((pid) => slotOf(pid) === leadSlot)!
  process.kill(leadPid, 'SIGKILL')
  await waitFor(() => exited(leadPid), 10_000, 'the lead worker to die')
  await publish({ kind: 'down', id: 'b', url: url('b'), active: true, group: 'another-group' })
  await publish({ kind: 'down', id: 'd', url: url('d') })
  // Redis delivers one subscriber's messages in order: each sibling heard b's `down` before d's
  await waitFor(() => siblings.every((w) => applied(w, 'd')), 60_000, 'the siblings to hear the other replica\'s messages')
  for (const w of siblings) t.same(ejected(w, 'b'), [], `worker ${w}, not the lead, leaves an active \`down\` to its lead`)

  two.proc.kill('SIGCONT')
  await waitFor(() => lines(two.out(), 'worker runs the active health checks').length === 2, 60_000, 'the primary to name the next lead')
  const next = lines(two.out(), 'worker runs the active health checks')[1]!.child!
  t.not(next, leadSlot, 'a sibling leads')
  // a worker logs the ejection (the table's transition) before the event it applied, and the
  // two lines may reach this process apart: both are waited for
  await waitFor(() => siblings.every((w) => ejected(w, 'b').length > 0 && applied(w, 'b')), 60_000, 'both siblings to apply the `down` heard while there was no lead')
  for (const w of siblings) {
    t.match(ejected(w, 'b')[0]?.detail, /or until an active check passes here/, `worker ${w}: as another replica's active verdict, until this group's own probe passes`)
  }
  // the new lead's next probe of b passes: both siblings route to it again, together
  await waitFor(() => siblings.every((w) => lines(two.out(), 'upstream health changed').some((l) => l.worker === w && l.upstream === 'b' && l.to === 'healthy' && l.reason !== 'added')), 60_000, 'the new lead\'s probe to end the ejection on both')
  // counted after each sibling's line that the ejection ended: every line it wrote before is in by then
  for (const w of siblings) {
    t.equal(heard(w, 'b').length, 1, `worker ${w} applied the \`down\` once (the new lead as it replayed it, the other its relay, not its own copy too)`)
  }
})
