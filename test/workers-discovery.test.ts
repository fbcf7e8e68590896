// Discovery with worker processes (`workers: 2`): one worker (the lead, which also runs the
// active checks) resolves the DNS name and tells the others every list it applies, through the
// primary; a worker that starts gets the last lists before its siblings' bindings. So the test
// DNS server sees one resolver, not one per worker (also after the lead is SIGKILLed and
// another takes over), and every user's requests, each on a new connection (either worker),
// reach one upstream through an addition, two worker crashes and a removal: an answer from
// another upstream than the user's last is consistent only when Tether says it moved the user
// from that last upstream (X-Tether-Moved: from=...). The SRV cases are in
// workers-discovery-srv-kept.test.ts and workers-discovery-srv-empty.test.ts.
import t from 'tap'
import type { Echo } from './fixtures/sameport-upstreams.js'
import { request, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { killEachWorker, startDnsWorkers } from './fixtures/dns-workers.js'

const NAME = 'app.tether.test'
const INTERVAL = 100
const USERS = 30

t.test('with two workers, one worker runs DNS discovery for all: one resolver, lists relayed in order, taken over when the lead dies, 0 users routed inconsistently', async (t) => {
  const { appPort, dns, port, adminPort, proc, out: output } = await startDnsWorkers(t, { name: NAME, a: ['127.0.0.1', '127.0.0.2'], drainTimeout: '1s', interval: INTERVAL, file: 'workers-discovery.yaml' })
  const id = (address: string): string => `${address}:${appPort}`
  const url = `http://127.0.0.1:${port}/`
  const listed = async (): Promise<string[]> =>
    (JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string }[]).map((u) => u.id).sort()
  await waitFor(async () => (await listed()).length === 2, 10_000, 'the first resolution')

  /** Queries the DNS server gets in `n` refresh intervals at least (timers only fire late): one resolver asks once an interval. */
  const resolvers = async (what: string): Promise<void> => {
    const n = 20
    const from = dns.queries
    const started = Date.now()
    await waitFor(() => dns.queries >= from + n, 60_000, `${n} DNS queries`)
    const elapsed = Date.now() - started
    t.ok(elapsed >= 0.75 * n * INTERVAL, `${what}: ${n} queries took ${elapsed} ms (one resolver: >= ${0.75 * n * INTERVAL} ms; one per worker would take half)`)
  }

  const last = new Map<number, string>()
  let requests = 0
  let failed = 0
  const inconsistent: string[] = []
  const moves: string[] = []
  const round = async (phase: string, users = USERS): Promise<void> => {
    for (let u = 0; u < users; u++) {
      const r = await request(url, null, { headers: { 'x-user': `user-${u}` } })
      requests++
      if (r.status !== 200) {
        failed++
        continue
      }
      const a = JSON.parse(r.body) as Echo
      const prev = last.get(u)
      if (prev !== undefined && a.id !== prev) {
        const from = /from=([^;]+)/.exec(a.moved ?? '')?.[1]
        if (from !== id(prev)) inconsistent.push(`${phase}: user ${u} went ${prev} -> ${a.id} (moved: ${a.moved})`)
        else moves.push(`${phase}: ${prev} -> ${a.id}`)
      }
      last.set(u, a.id)
    }
  }
  const countOf = (address: string): number => [...last.values()].filter((v) => v === address).length

  for (let i = 0; i < 3; i++) await round('first resolution')
  await resolvers('two workers')

  // an address added: new users reach it; existing users stay
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.2', '127.0.0.3'], aaaa: [] })
  await waitFor(async () => (await listed()).length === 3, 10_000, 'the added address to be listed')
  for (let i = 0; i < 3; i++) await round('addition', 2 * USERS)
  t.ok(countOf('127.0.0.3') > 0, `new users reach the added upstream (${countOf('127.0.0.3')} of ${2 * USERS})`)

  // both workers crash in turn (so the lead does): each is replaced and takes the last lists
  await killEachWorker({ proc, out: output }, async () => { for (let i = 0; i < 2; i++) await round('worker crash', 2 * USERS) })
  t.equal(workerPids(proc).length, 2, 'two workers again')
  await resolvers('after the lead was replaced')

  // an address removed: it drains, leaves after drain_timeout, its users move (announced)
  const onTwo = countOf('127.0.0.2')
  dns.set(NAME, { a: ['127.0.0.1', '127.0.0.3'], aaaa: [] })
  await waitFor(async () => !(await listed()).includes(id('127.0.0.2')), 10_000, 'the removed address to leave')
  for (let i = 0; i < 3; i++) await round('removal', 2 * USERS)
  t.equal(countOf('127.0.0.2'), 0, `the ${onTwo} users of the removed upstream moved`)
  // the primary's /metrics, scraped after the removal, has the moves it caused (each worker keeps a removed upstream's series for a grace)
  const movedOff = moves.filter((m) => m.startsWith('removal: 127.0.0.2 ->')).length
  const scraped = (await request(`http://127.0.0.1:${adminPort}/metrics`, null)).body.split('\n')
    .filter((l) => l.startsWith(`tether_failovers_total{from="${id('127.0.0.2')}",`)).reduce((n, l) => n + Number(l.split(' ').pop()), 0)
  t.ok(movedOff > 0 && scraped >= movedOff, `the scrape after the removal counts the ${movedOff} moves off the removed upstream (${scraped} failovers from it)`)

  process.stderr.write(`# workers discovery: ${requests} requests, ${moves.length} announced moves, ${inconsistent.length} inconsistent, ${failed} failed, ${dns.queries} DNS queries\n`)
  t.same(inconsistent, [], '0 users routed inconsistently')
  t.equal(failed, 0, '0 failed requests')
  t.ok(onTwo > 0 && moves.some((m) => m.startsWith('removal')), 'the removal moved users, announced')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'SIGTERM stops the primary and its workers gracefully')
})
