// A frozen replica (SIGSTOP) with `workers: 2`, its stuck requests all on the worker that does
// NOT run the active checks: the lead must hear of them (the waiting worker's suspicion, through
// the primary), so one probe timeout takes the upstream out on every worker at once. Probes are
// 20 s apart and unhealthy_threshold is 3: without the suspicion the lead would not even probe
// the frozen replica within the test's deadline, and without a probe timeout counting at once
// it would need two more probes, 5 s apart (interval / 4 after a failure).
import t from 'tap'
import http from 'node:http'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startPrimary } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

const TIMEOUT = 300

interface Answer { status: number; id: string; moved: string | null }

/** One keep-alive client connection (one socket): every request on it goes to the same worker. */
function connection(port: number): { get(path: string, cookie?: string): Promise<Answer>; close(): void } {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  return {
    get: (path, cookie) => new Promise((resolve, reject) => {
      const req = http.get(`http://127.0.0.1:${port}${path}`, { agent, headers: cookie === undefined ? {} : { cookie } }, (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c) => (body += c))
        res.on('end', () => {
          const json = JSON.parse(body) as { id: string; moved: string | null }
          resolve({ status: res.statusCode!, id: json.id, moved: json.moved })
        })
      })
      req.setTimeout(15_000, () => req.destroy(new Error(`no answer to ${path} in 15 s`)))
      req.on('error', reject)
    }),
    close: () => agent.destroy(),
  }
}

t.test('with two workers, requests stuck on a frozen replica only on the worker not running the checks get it taken out on every worker after one probe timeout', async (t) => {
  const [app0, app1] = await startAll([startChildUpstream('app-0'), startChildUpstream('app-1')])
  t.teardown(async () => {
    app0.proc.kill('SIGCONT')
    await Promise.all([app0.kill(), app1.kill()])
  })
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-frozen-replica.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info }',
    `health: { active: { enabled: true, path: /healthz, interval: 20s, timeout: ${TIMEOUT}ms, unhealthy_threshold: 3 }, passive: { enabled: false } }`,
    'upstreams:',
    `  - { id: app-0, url: "${app0.url}" }`,
    `  - { id: app-1, url: "${app1.url}" }`,
    '',
  ].join('\n'))
  const { proc, out } = await startPrimary(t, file)
  const lead = Number(/"child":(\d+),[^\n]*"msg":"worker runs the active health checks"/.exec(out())?.[1])
  t.ok(lead === 0 || lead === 1, `the primary named the lead worker (${lead})`)
  const rows = async (): Promise<{ id: string; state: string; active_successes: number }[]> =>
    JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string; state: string; active_successes: number }[]
  await waitFor(async () => (await rows()).every((r) => r.active_successes > 0), 10_000, 'the first probes of both upstreams to pass', 100)

  // keep-alive connections, each served by one worker (the primary hands them out in turn):
  // two on the other worker, one on the lead
  const onLead: ReturnType<typeof connection>[] = []
  const onOther: ReturnType<typeof connection>[] = []
  for (let i = 0; i < 12 && (onLead.length < 1 || onOther.length < 2); i++) {
    const c = connection(port)
    t.teardown(() => c.close())
    const seen = out().length
    await c.get(`/who?conn=${i}`)
    const worker = new RegExp(`"worker":(\\d+)[^\\n]*/who\\?conn=${i}\\b`)
    await waitFor(() => worker.test(out().slice(seen)), 5_000, `the access log line of connection ${i}`, 20)
    ;(Number(worker.exec(out().slice(seen))![1]) === lead ? onLead : onOther).push(c)
  }
  t.ok(onLead.length >= 1 && onOther.length >= 2, 'connections on both workers')

  // two users pinned to app-0 (every worker knows a pin before its answer): one whose requests
  // get stuck, one who comes back after on the lead's connection
  const cookies: string[] = []
  for (let i = 0; i < 60 && cookies.length < 2; i++) {
    const r = await request(`http://127.0.0.1:${port}/login?try=${i}`, null)
    if ((JSON.parse(r.body) as { id: string }).id === 'app-0') cookies.push(r.setCookie[0]!.split(';')[0]!)
  }
  t.equal(cookies.length, 2, 'two users pinned to app-0')
  const [cookie, later] = cookies as [string, string]

  const mark = out().length
  app0.proc.kill('SIGSTOP')
  const frozenAt = performance.now()
  // the user's requests hang on app-0, on the worker that does not run the checks only
  const stuck = onOther.slice(0, 2).map((c, i) => c.get(`/stuck?n=${i}`, cookie))
  for (const s of stuck) s.catch(() => undefined) // awaited below; a failed test closes them at teardown
  const takenOut = (worker: number): RegExp => new RegExp(`"worker":${worker},[^\\n]*"upstream":"app-0"[^\\n]*"to":"unhealthy"[^\\n]*"upstream health changed"`)
  await waitFor(() => takenOut(lead).test(out().slice(mark)), 4_000, 'the lead to take app-0 out', 20)
  const detected = performance.now() - frozenAt
  t.ok(detected < 4_000, `the lead took the frozen app-0 out ${Math.round(detected)} ms after the freeze (probe interval 20 s, timeout ${TIMEOUT} ms)`)
  await waitFor(() => takenOut(1 - lead).test(out().slice(mark)), 2_000, 'the other worker to take app-0 out', 20)
  t.pass('the other worker applied the same verdict')
  t.match((await rows()).find((r) => r.id === 'app-0'), { state: 'unhealthy' }, "the lead's table (GET /upstreams) has app-0 unhealthy")

  for (const [i, r] of (await Promise.all(stuck)).entries()) {
    t.match(r, { status: 200, id: 'app-1', moved: /^from=app-0; reason=dead/ }, `stuck request ${i} was moved to app-1 when app-0 was taken out`)
  }
  const next = await onLead[0]!.get('/after', later)
  t.match(next, { status: 200, id: 'app-1', moved: /^from=app-0; reason=dead/ }, "on the lead's connection, another user of app-0 goes to app-1, not into the frozen replica")

  for (const c of [...onLead, ...onOther]) c.close()
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'SIGTERM stops the primary and its workers gracefully')
})
