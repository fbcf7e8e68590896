// A worker frozen (SIGSTOP: a stalled host, a loop that never yields) is killed by the primary's
// watchdog only after 10 s of silence. Meanwhile the primary's admin listener must not hand it
// the probes: a frozen worker's private admin listener still accepts the connection (the
// kernel's backlog) and the request waits there, so `/readyz` and `/healthz` (passed to the
// leading worker) hung for 10 s and answered 502 while the other worker served on, and a
// Kubernetes readiness probe (2 s timeout, twice) took the whole pod out of its Service. Nor may
// `/metrics` wait 5 s on it at every scrape. The real CLI, two workers, the lead frozen. And a
// scrape that asked a worker which then dies is answered at its exit, not after the 5 s a worker
// that does not answer is given.
import t from 'tap'
import http from 'node:http'
import { readFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, slotOf, startPrimary, twoWorkersYaml, workerPids } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { WATCHDOG_TIMEOUT } from '../src/workers/silence-watch.js'

/** A GET on the admin listener, given up after `ms` (as a probe's timeout): null when not answered in time. */
function probe(port: number, path: string, ms: number): Promise<{ status: number; body: string } | null> {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent: false }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, body }))
    })
    req.setTimeout(ms, () => { req.destroy(); resolve(null) })
    req.on('error', () => resolve(null))
  })
}

/** The summed 2xx count of the upstream in an exposition text. */
function answered(text: string): number {
  return text.split('\n').filter((l) => l.startsWith('tether_http_requests_total{') && l.includes('upstream="app-0"') && l.includes('status_class="2xx"'))
    .reduce((n, l) => n + Number(l.slice(l.lastIndexOf(' ') + 1)), 0)
}

/** Whether process `pid` is stopped (SIGSTOP) and alive. */
function frozen(pid: number): boolean {
  try {
    return /^State:\s+T/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
  } catch {
    return false
  }
}

t.test('a frozen leading worker: the admin listener answers the probes and /metrics from the other worker before the watchdog kills it', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-frozen-admin.yaml', twoWorkersYaml(port!, adminPort!, app.url))
  const { proc, out } = await startPrimary(t, file)
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })
  const leadSlot = Number(/"child":(\d+),"msg":"worker runs the active health checks"/.exec(out())![1])
  const lead = workerPids(proc).find((pid) => slotOf(pid) === leadSlot)!
  t.ok(lead, `the leading worker (slot ${leadSlot}) is pid ${lead}`)
  t.teardown(() => { try { process.kill(lead, 'SIGKILL') } catch { /* gone */ } })
  for (let i = 0; i < 20; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200)
  const before = await probe(adminPort!, '/metrics', 5_000)
  t.equal(before?.status, 200, 'a scrape before the freeze')
  const counted = answered(before!.body)
  t.equal(counted, 20, 'the 20 answers counted')

  process.kill(lead, 'SIGSTOP')
  await waitFor(() => frozen(lead), 5_000, 'the leading worker to be stopped')
  const killed = (): boolean => out().includes('"worker stopped answering; killing it"')
  // a readiness probe every 500 ms, each given up after 2 s (the manifests' timeoutSeconds),
  // until one is answered while the lead is still frozen, or the watchdog killed it
  let ready = null as { status: number; body: string } | null
  await waitFor(async () => {
    if (killed() || !frozen(lead)) return true
    const p = await probe(adminPort!, '/readyz', 2_000)
    if (p !== null && frozen(lead) && !killed()) ready = p
    return ready !== null
  }, WATCHDOG_TIMEOUT + 20_000, 'a /readyz answer, or the frozen worker killed', 500)
  t.ok(ready !== null, 'a /readyz probe is answered while the leading worker is frozen (before, each waited 10 s on it, then 502)')
  t.equal(ready?.status, 200, 'ready: the other worker serves')
  if (ready !== null) {
    const live = await probe(adminPort!, '/healthz', 2_000)
    t.equal(live?.status, 200, '/healthz answered in time')
    const scrape = await probe(adminPort!, '/metrics', 2_000)
    t.equal(scrape?.status, 200, '/metrics answered in time (before, it waited 5 s on the frozen worker)')
    t.ok(scrape !== null && answered(scrape.body) >= counted, 'no counter falls: the frozen worker\'s counts as of its last answer')
    const ups = await probe(adminPort!, '/upstreams', 2_000)
    t.equal(ups?.status, 200, '/upstreams answered in time')
    t.ok(frozen(lead) && !killed(), 'all while the leading worker was still frozen')
  }
  // the watchdog kills it and a new worker takes its place (as workers-watchdog.test.ts checks)
  await waitFor(() => killed(), WATCHDOG_TIMEOUT + 20_000, 'the frozen worker killed')
  await waitFor(() => workerPids(proc).length === 2 && !workerPids(proc).includes(lead), 60_000, 'the frozen worker replaced')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'the proxy serves')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'the primary stops cleanly')
})

t.test('a worker that dies while a scrape waits for its metrics: the scrape is answered at its exit, not 5 s later', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-scrape-exit.yaml', twoWorkersYaml(port!, adminPort!, app.url))
  const { proc, out } = await startPrimary(t, file)
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })
  // not the leading worker: the admin listener passes /healthz to that one
  const leadSlot = Number(/"child":(\d+),"msg":"worker runs the active health checks"/.exec(out())![1])
  const victim = workerPids(proc).find((pid) => slotOf(pid) !== leadSlot)!
  t.teardown(() => { try { process.kill(victim, 'SIGKILL') } catch { /* gone */ } })
  for (let i = 0; i < 10; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200)
  const before = await probe(adminPort!, '/metrics', 5_000)
  t.equal(answered(before!.body), 10, 'the 10 answers counted')
  // frozen (so it cannot answer), asked for its metrics, then killed as a crash would end it
  process.kill(victim, 'SIGSTOP')
  await waitFor(() => frozen(victim), 5_000, 'the worker to be stopped')
  const scrape = probe(adminPort!, '/metrics', 10_000)
  // the primary read the scrape before it answers a request that came after it (here passed to a
  // worker and back): the ask to the frozen worker is on its way
  t.equal((await probe(adminPort!, '/healthz', 5_000))?.status, 200, 'a request after the scrape is answered')
  process.kill(victim, 'SIGKILL')
  const killedAt = performance.now()
  const answer = await scrape
  const ms = Math.round(performance.now() - killedAt)
  t.equal(answer?.status, 200, 'the scrape is answered')
  t.ok(ms < 3_000, `within 3 s of the exit (${ms} ms; before, 5 s after the ask)`)
  t.ok(answer !== null && answered(answer.body) >= 10, 'no counter falls: the dead worker\'s counts as of its last answer')
  await waitFor(() => out().includes('"worker died; restarting it"'), 10_000, 'the crash to be seen')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'the primary stops cleanly')
})
