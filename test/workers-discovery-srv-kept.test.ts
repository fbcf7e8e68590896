// Discovery of an SRV name with worker processes (`workers: 2`): a pod keeps the url it has
// (its address) when another address that sorts first is listed, also after the lead that
// resolves it is SIGKILLed: the next lead keeps it too, so no worker takes it for a replaced
// replica (which would close its WebSockets). Split from workers-discovery.test.ts.
import t from 'tap'
import { request } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { killEachWorker, srvWorkers } from './fixtures/dns-workers.js'

const INTERVAL = 100

t.test('with two workers, a pod keeps the url it has when the lead that resolves it dies: the next lead keeps it too (no replaced replica, no WebSocket closed)', async (t) => {
  const { appPort, dns, adminPort, publish: publishBoth, start } = await srvWorkers(t, { file: 'workers-discovery-kept.yaml', family: 'ipv4', interval: INTERVAL, extra: [] })
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

  await killEachWorker({ proc, out: output }, () => resolutions(3))
  t.equal(await urlOf(), kept, 'after the lead was replaced: web-0 still at 127.0.0.2')
  t.notMatch(output(), /upstreams replaced \(a new address or a new pod\)/, 'no worker took web-0 for a replaced replica')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
