// A pod listed terminating (EndpointSlice `terminating` + `serving`, still listed) drains on every
// worker from the list that first said so. A worker that starts while it drains (a crash restart)
// gets since when from the primary (`drainingSince`), so its drain_timeout ends at the same
// moment as its siblings': no user of that pod reaches it through one worker while the others
// have moved them, nor the reverse.
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { FakeKubeApi, endpointSlice, kubeconfigFor, type PodEndpoint } from './fixtures/kube-api-server.js'
import { closeServer, sameportUpstreams, type Echo } from './fixtures/sameport-upstreams.js'
import { request, slotOf, startPrimary, workerAdmins, workerPids } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

const DRAIN = 6_000
const USERS = 30
/**
 * How far apart the two workers' drain starts may be (the lead applies the list, the other one
 * when the primary relays it: a few ms, more on a loaded machine). Only that spread is bounded
 * by it: which requests must stay and which must move is told from each request's own send and
 * answer times, so a slow answer cannot make a request count on the wrong side of the deadline.
 */
const SKEW = 1_000

interface Row { id: string; draining_since: string | null }

t.test('with two workers, a pod listed terminating drains until the same deadline on every worker, also on one SIGKILLed and restarted while it drains', async (t) => {
  const { port: appPort, servers } = await sameportUpstreams()
  t.teardown(async () => { await Promise.all(servers.map(closeServer)) })
  const api = new FakeKubeApi()
  const { url: apiUrl } = await api.start()
  t.teardown(() => api.close())
  const slice = (web1: Partial<PodEndpoint>) => endpointSlice('web-abcde', 'web', [
    { pod: 'web-0', ip: '127.0.0.1' }, { pod: 'web-1', ip: '127.0.0.2', ...web1 }, { pod: 'web-2', ip: '127.0.0.3' },
  ], { ports: [{ name: 'http', port: appPort }] })
  api.put('endpointslices', slice({}))
  const kubeconfig = kubeconfigFor(apiUrl)
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-terminating-drain.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info, access: false }',
    `affinity: { key: header, header: { name: X-User }, drain_timeout: ${DRAIN}ms }`,
    `discovery: { kubernetes: { service: web, namespace: default, port: http, kubeconfig: "${kubeconfig}" } }`,
    'upstreams: []',
    '',
  ].join('\n'))
  const { proc, out } = await startPrimary(t, file)
  const admins = (): Map<number, string> => workerAdmins(out())
  const rowOf = async (admin: string): Promise<Row | undefined> => (JSON.parse((await request(`${admin}/upstreams`, null)).body) as Row[]).find((r) => r.id === 'web-1')
  await waitFor(async () => {
    const all = [...admins().values()]
    return all.length === 2 && (await Promise.all(all.map(async (a) => (JSON.parse((await request(`${a}/upstreams`, null)).body) as Row[]).length))).every((n) => n === 3)
  }, 10_000, 'both workers to list the three pods')

  const url = `http://127.0.0.1:${port}/`
  const ask = async (u: number): Promise<string | null> => {
    const r = await request(url, null, { headers: { 'x-user': `user-${u}` } })
    return r.status === 200 ? (JSON.parse(r.body) as Echo).id : null
  }
  const onOne: number[] = []
  for (let u = 0; u < USERS; u++) if (await ask(u) === '127.0.0.2') onOne.push(u)
  t.ok(onOne.length > 0, `some users on web-1 (${onOne.length} of ${USERS})`)

  // web-1 terminating, still serving: each worker drains it from the list that said so
  api.put('endpointslices', slice({ terminating: true, serving: true, ready: false }))
  let starts: number[] = []
  await waitFor(async () => {
    const rows = await Promise.all([...admins().values()].map(rowOf))
    starts = rows.map((r) => (r?.draining_since == null ? NaN : Date.parse(r.draining_since)))
    return starts.length === 2 && starts.every(Number.isFinite)
  }, 10_000, 'both workers to drain web-1')
  const first = Math.min(...starts)
  const last = Math.max(...starts)
  t.ok(last - first < SKEW, `the two workers drain web-1 since about the same moment (${last - first} ms apart)`)

  const strayed: string[] = []
  let failed = 0
  /** Every user of web-1, 4 requests each on new connections (the workers share them), until `until` (ms since the epoch). */
  const rounds = async (phase: string, until: number, after: Map<number, Set<string>>): Promise<void> => {
    do {
      for (let i = 0; i < 4; i++) {
        for (const u of onOne) {
          const at = Date.now()
          const a = await ask(u)
          const done = Date.now()
          // a worker routed it between `at` and `done`; every worker's drain began in [first, last]
          // (the restarted one's too, checked below): answered before the earliest deadline, web-1
          // keeps its users through every worker; sent after the latest, none reaches web-1
          if (a === null) failed++
          else if (done < first + DRAIN && a !== '127.0.0.2') strayed.push(`${phase}: user ${u} reached ${a} ${at - first}-${done - first} ms into the drain`)
          else if (at >= last + DRAIN) {
            if (a === '127.0.0.2') strayed.push(`${phase}: user ${u} reached web-1 ${at - first} ms into the drain (drain_timeout ${DRAIN} ms)`)
            after.set(u, (after.get(u) ?? new Set()).add(a))
          }
        }
      }
    } while (Date.now() < until)
  }
  const after = new Map<number, Set<string>>()
  // the drain's first third through both workers, then worker 1 SIGKILLed and restarted by the primary
  await rounds('drain started', first + DRAIN / 3, after)
  const before = admins().get(1)
  process.kill(workerPids(proc).find((pid) => slotOf(pid) === 1)!, 'SIGKILL')
  await waitFor(() => admins().get(1) !== undefined && admins().get(1) !== before, 60_000, 'worker 1 to be restarted')
  const restarted = await rowOf(admins().get(1)!)
  const restartedSince = restarted?.draining_since == null ? NaN : Date.parse(restarted.draining_since)
  // the primary stamps the drain when the lead's list reaches it: after the lead's own drain
  // began, before the other worker's (the list is relayed from there), all on one clock
  t.ok(restartedSince >= first && restartedSince <= last,
    `the restarted worker drains web-1 since the moment its siblings began (${restartedSince - first} ms after the first), not since its start (${Date.now() - first} ms into the drain)`)
  // through the drain's deadline and beyond: every worker moves web-1's users at the same moment
  await rounds('worker 1 restarted', last + DRAIN + 1_500, after)
  t.equal(workerPids(proc).length, 2, 'two workers again')
  t.same(strayed, [], `every user of the terminating pod is routed alike through every worker, before and after its drain_timeout (${onOne.length} users)`)
  t.same([...after].filter(([, seen]) => seen.size !== 1).map(([u, seen]) => `user ${u}: ${[...seen].join(', ')}`), [], 'after the drain, each user reaches one upstream through every worker')
  t.ok(after.size > 0, 'requests were made after the drain_timeout')
  t.equal(failed, 0, '0 failed requests')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
