// Discovery with worker processes (`workers: 2`): one worker (the lead, which also runs the
// active checks) resolves the DNS name and tells the others every list it applies, through the
// primary; a worker that starts gets the last lists before its siblings' bindings. So the test
// DNS server sees one resolver, not one per worker (also after the lead is SIGKILLed and
// another takes over), and every user's requests, each on a new connection (either worker),
// reach one upstream through an addition, two worker crashes and a removal: an answer from
// another upstream than the user's last is consistent only when Tether says it moved the user
// from that last upstream (X-Tether-Moved: from=...). An SRV target family kept while it answers
// empty goes on being kept by the next lead from the same first empty answer.
import t, { type Test } from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { TestDnsServer } from './fixtures/dns-server.js'
import { closeServer, sameportUpstreams, type Echo } from './fixtures/sameport-upstreams.js'
import { request, startPrimary, workerPids } from './fixtures/primary-process.js'
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

/**
 * The upstreams, a DNS server and a primary with two workers discovering the SRV name
 * `_http._tcp.web.tether.test` (one target, web-0; `publish` sets its A and AAAA records before
 * the primary starts and after), family `family`, config lines `extra` added.
 */
async function srvWorkers(t: Test, fileName: string, family: 'ipv4' | 'any', extra: string[]) {
  const { port: appPort, servers } = await sameportUpstreams()
  t.teardown(async () => { await Promise.all(servers.map(closeServer)) })
  const dns = new TestDnsServer()
  const { port: dnsPort } = await dns.start()
  t.teardown(() => dns.close())
  const SRV = '_http._tcp.web.tether.test'
  const publish = (a: string[], aaaa: string[]): void => {
    dns.set(SRV, { a: [], aaaa: [], srv: [{ priority: 0, weight: 1, port: appPort, target: 'web-0.web.tether.test' }] })
    dns.set('web-0.web.tether.test', { a, aaaa })
  }
  const [port, adminPort] = await freePorts(2)
  const file = tempFile(fileName, [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info, access: false }',
    ...extra,
    `discovery: { dns: { name: ${SRV}, port: null, srv: true, interval: ${INTERVAL}ms, family: ${family}, servers: ["127.0.0.1:${dnsPort}"] } }`,
    'upstreams: []',
    '',
  ].join('\n'))
  return { appPort, dns, adminPort: adminPort!, publish, start: () => startPrimary(t, file) }
}

t.test('with two workers, a pod keeps the url it has when the lead that resolves it dies: the next lead keeps it too (no replaced replica, no WebSocket closed)', async (t) => {
  const { appPort, dns, adminPort, publish: publishBoth, start } = await srvWorkers(t, 'workers-discovery-kept.yaml', 'ipv4', [])
  const publish = (a: string[]): void => publishBoth(a, [])
  publish(['127.0.0.2'])
  const { proc, out: output } = await start()
  const urlOf = async (): Promise<string | undefined> =>
    (JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string; url: string }[]).find((u) => u.id === 'web-0')?.url
  const kept = `http://127.0.0.2:${appPort}`
  await waitFor(async () => (await urlOf()) === kept, 10_000, 'web-0 at 127.0.0.2')
  const resolutions = async (n: number): Promise<void> => {
    const from = dns.queries
    await waitFor(() => dns.queries >= from + 2 * n, 60_000, `${n} resolutions (SRV and A)`)
  }
  publish(['127.0.0.1', '127.0.0.2']) // 127.0.0.1 sorts first
  await resolutions(3)
  t.equal(await urlOf(), kept, 'another address listed (sorting first): web-0 stays at 127.0.0.2')
  const row = (JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string; uid?: string; addresses?: string[] }[]).find((u) => u.id === 'web-0')
  t.same(row?.addresses, [`http://127.0.0.1:${appPort}`, kept], "the primary's /upstreams gives the lead's addresses of web-0")
  t.notOk(row !== undefined && 'uid' in row, 'no uid from DNS')

  for (const pid of workerPids(proc)) {
    const before = (output().match(/"tether listening"/g) ?? []).length
    process.kill(pid, 'SIGKILL')
    await waitFor(() => (output().match(/"tether listening"/g) ?? []).length > before, 60_000, 'the crashed worker to be replaced')
    await resolutions(3)
  }
  t.equal(await urlOf(), kept, 'after the lead was replaced: web-0 still at 127.0.0.2')
  t.notMatch(output(), /upstreams replaced \(a new address or a new pod\)/, 'no worker took web-0 for a replaced replica')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})

t.test('with two workers, an SRV target family kept while it answers empty is carried on by the next lead from the same first empty answer (the lead SIGKILLed meanwhile)', async (t) => {
  const GRACE_MS = 20_000 // drain_timeout: long enough for both workers to be killed and replaced within it (4 to 7 s measured on a loaded 2-core machine)
  const { appPort, dns, adminPort, publish: publishBoth, start } = await srvWorkers(t, 'workers-discovery-kept-empty.yaml', 'any', [`affinity: { drain_timeout: ${GRACE_MS}ms }`])
  const publish = (aaaa: string[]): void => publishBoth(['127.0.0.2'], aaaa)
  publish(['fd00::2'])
  const { proc, out: output } = await start()
  const row = async (): Promise<{ url: string; addresses?: string[] } | undefined> =>
    (JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string; url: string; addresses?: string[] }[]).find((u) => u.id === 'web-0')
  const both = [`http://127.0.0.2:${appPort}`, `http://[fd00::2]:${appPort}`]
  await waitFor(async () => (await row())?.addresses?.length === 2, 10_000, 'web-0 at both addresses')
  const notes = (re: RegExp): number => output().split('\n').filter((l) => l.includes('DNS discovery: an empty family of an SRV target') && re.test(l)).length
  const keeping = /AAAA of web-0\.web\.tether\.test answered empty while its A is unchanged: keeping its last addresses/

  publish([]) // a stale NODATA for AAAA from here on
  await waitFor(() => notes(keeping) === 1, 10_000, 'the lead to keep AAAA (noted)')
  const keptAt = Date.now()
  await killEachWorker({ proc, out: output }, async () => {
    const from = dns.queries
    await waitFor(() => dns.queries >= from + 9, 60_000, 'three resolutions by the lead after the crash')
  })
  t.ok(Date.now() - keptAt < GRACE_MS, `both workers replaced within the grace (${Date.now() - keptAt} ms)`)
  t.same((await row())?.addresses, both, 'the new lead keeps AAAA: web-0 still listed at both addresses')
  t.equal(notes(keeping), 1, 'the new lead noted no family newly kept: it took the time its predecessor kept AAAA since (without it: a second note, and the grace started again)')

  await waitFor(() => notes(/answered empty for \d+ ms: its addresses \(fd00::2\) go/) === 1, GRACE_MS + 10_000, 'AAAA to go after the grace')
  const wentAfter = Date.now() - keptAt
  t.ok(wentAfter < GRACE_MS + 3_000, `it went ${wentAfter} ms after the first lead kept it (grace ${GRACE_MS} ms, counted from there; a loose bound: the note count above is what tells a restarted grace)`)
  t.same((await row())?.addresses, undefined, 'web-0 at its A address only')
  t.equal((await row())?.url, `http://127.0.0.2:${appPort}`)
  t.notMatch(output(), /upstreams replaced \(a new address or a new pod\)/, 'no worker took web-0 for a replaced replica')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
