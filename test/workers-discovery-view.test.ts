// A worker that starts (a crash restart) gets the routing view its siblings have of discovery:
// an upstream gone from the listing drains for `affinity.drain_timeout` on every worker, the
// new one included, so its users reach it through any worker until then. The primary keeps
// when each gone upstream left its source and sends a starting worker those draining entries
// with the last lists (`leaving`), so its drain ends at the same moment as on the others.
import t from 'tap'
import type { Echo } from './fixtures/sameport-upstreams.js'
import { request, workerPids } from './fixtures/primary-process.js'
import { killEachWorker, startDnsWorkers } from './fixtures/dns-workers.js'
import { waitFor } from './fixtures/wait.js'

const NAME = 'view.tether.test'
const USERS = 24

t.test('with two workers, an upstream gone from DNS keeps its users through every worker until drain_timeout, also on a worker SIGKILLed and restarted while it drains', async (t) => {
  const { appPort, dns, port, adminPort, proc, out: output } = await startDnsWorkers(t, { name: NAME, a: ['127.0.0.1', '127.0.0.2'], drainTimeout: '120s', interval: 100, file: 'workers-discovery-view.yaml' })
  const id = (address: string): string => `${address}:${appPort}`
  const url = `http://127.0.0.1:${port}/`
  const rows = async (): Promise<{ id: string; state?: string; draining?: boolean }[]> =>
    JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string }[]
  await waitFor(async () => (await rows()).length === 2, 10_000, 'the first resolution')

  const last = new Map<number, string>()
  const ask = async (u: number): Promise<Echo | null> => {
    const r = await request(url, null, { headers: { 'x-user': `user-${u}` } })
    return r.status === 200 ? JSON.parse(r.body) as Echo : null
  }
  for (let u = 0; u < USERS; u++) {
    const a = await ask(u)
    if (a !== null) last.set(u, a.id)
  }
  const onTwo = [...last].filter(([, a]) => a === '127.0.0.2').map(([u]) => u)
  t.ok(onTwo.length > 0, `some users on 127.0.0.2 (${onTwo.length} of ${USERS})`)

  // 127.0.0.2 leaves the listing: it drains (120 s), keeping its users, on every worker
  dns.set(NAME, { a: ['127.0.0.1'], aaaa: [] })
  const stateOf = async (): Promise<string> => JSON.stringify((await rows()).find((r) => r.id === id('127.0.0.2')) ?? null)
  await waitFor(async () => /drain/.test(await stateOf()), 10_000, '127.0.0.2 to drain')

  const strayed: string[] = []
  let failed = 0
  const round = async (phase: string): Promise<void> => {
    // each request on a new connection: the two workers share them
    for (let i = 0; i < 4; i++) {
      for (const u of onTwo) {
        const a = await ask(u)
        if (a === null) failed++
        else if (a.id !== '127.0.0.2') strayed.push(`${phase}: user ${u} reached ${a.id} (moved: ${a.moved})`)
      }
    }
  }
  await round('drain started')
  // each worker SIGKILLed in turn and restarted by the primary while 127.0.0.2 drains
  await killEachWorker({ proc, out: output }, (pid) => round(`worker ${pid} restarted`))
  t.equal(workerPids(proc).length, 2, 'two workers again')
  t.same(strayed, [], `the users of the draining upstream stay on it through every worker (${onTwo.length} users, 12 requests each)`)
  t.equal(failed, 0, '0 failed requests')
  t.match(await stateOf(), /drain/, '127.0.0.2 still draining')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
