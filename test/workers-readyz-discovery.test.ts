// With workers, `/readyz` while the lead's discovery waits for its first list says what one
// process says then, `starting: waiting for discovery's first list`, on the primary's admin port
// (which asks the lead) and on every worker's own, not `no healthy upstream`; once that first
// list is in (or failed) the answer is one process's again. A Kubernetes API (the fake API server)
// that holds its list answers until the test releases them; a real primary with two workers.
import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { CLI } from './fixtures/cli.js'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { FakeKubeApi, endpointSlice, kubeconfigFor } from './fixtures/kube-api-server.js'
import { startUpstream } from './fixtures/upstream.js'
import { request, startPrimary, workerAdmins } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

const STARTING = "starting: waiting for discovery's first list"
/** What one process's `/readyz` says while its start waits for discovery's first list (its upstream set is empty then). */
const WAITING = [STARTING, 'no healthy upstream']

/**
 * A primary of two workers discovering the Service `web` (one pod, web-0) through `api`, whose
 * lists are held from the start; `single()` starts one Tether process (`workers: 1`) on the same
 * API, as the reference, and returns its admin port.
 */
async function heldDiscovery(t: Test, name: string): Promise<{ api: FakeKubeApi; adminPort: number; out: () => string; single: () => number; proc: ChildProcess; file: string; yaml: (failures: number) => string }> {
  const app = await startUpstream('web-0')
  t.teardown(() => app.close())
  const api = new FakeKubeApi()
  const { url } = await api.start()
  t.teardown(() => api.close())
  api.put('endpointslices', endpointSlice('web-abcde', 'web', [{ pod: 'web-0', ip: '127.0.0.1' }], { ports: [{ name: 'http', port: app.port }] }))
  api.holdLists(true)
  const [port, adminPort, singlePort, singleAdmin] = await freePorts(4)
  const yaml = (listen: number, admin: number, workers: number, failures = 5): string => [
    `listen: { host: 127.0.0.1, port: ${listen} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${admin} } }`,
    `workers: ${workers}`,
    'log: { level: info, access: false }',
    `health: { active: { enabled: false }, passive: { consecutive_failures: ${failures} } }`,
    `discovery: { kubernetes: { service: web, namespace: default, port: http, kubeconfig: "${kubeconfigFor(url)}", weight_annotation: null } }`,
    'upstreams: []',
    '',
  ].join('\n')
  const single = (): number => {
    const one = spawn(process.execPath, [CLI, '--config', tempFile(`single-${name}`, yaml(singlePort!, singleAdmin!, 1))], { stdio: ['ignore', 'ignore', 'ignore'] })
    const exited = new Promise((resolve) => one.once('exit', resolve))
    t.teardown(async () => { one.kill('SIGKILL'); await exited })
    return singleAdmin!
  }
  const file = tempFile(name, yaml(port!, adminPort!, 2))
  const { proc, out } = await startPrimary(t, file)
  t.teardown(async () => {
    if (proc.exitCode !== null) return
    proc.kill('SIGTERM')
    await waitFor(() => proc.exitCode !== null, 30_000, 'the primary to stop')
  })
  return { api, adminPort: adminPort!, out, single, proc, file, yaml: (failures) => yaml(port!, adminPort!, 2, failures) }
}

/** `/readyz` of the primary (`primary`) and of each worker's own admin listener (`worker <slot>`): status and reasons. */
async function readyz(adminPort: number, out: () => string): Promise<Record<string, { status: number; reasons: string[] }>> {
  const at = [[`primary`, `http://127.0.0.1:${adminPort}`], ...[...workerAdmins(out())].sort(([a], [b]) => a - b).map(([slot, url]) => [`worker ${slot}`, url])] as const
  const answers = await Promise.all(at.map(async ([who, url]) => {
    const r = await request(`${url}/readyz`, null)
    return [who, { status: r.status, reasons: (JSON.parse(r.body) as { reasons: string[] }).reasons }] as const
  }))
  return Object.fromEntries(answers)
}

const all = (status: number, reasons: string[]): Record<string, { status: number; reasons: string[] }> =>
  ({ primary: { status, reasons }, 'worker 0': { status, reasons }, 'worker 1': { status, reasons } })

t.test("with two workers, /readyz says `starting: waiting for discovery's first list` while the lead's first list is held, on the primary and on each worker; ready once it is in", async (t) => {
  const { api, adminPort, out, single } = await heldDiscovery(t, 'workers-readyz-discovery.yaml')
  await waitFor(() => api.heldLists > 0, 15_000, "the lead's first list request")
  t.same(await readyz(adminPort, out), all(503, WAITING), 'every /readyz of the workers, the primary\'s and each worker\'s own, names what the start waits for')
  // the reference: one process (its admin port listens before its start waits for the list)
  const singleAdmin = single()
  await waitFor(() => api.heldLists > 1, 15_000, "one process's first list request")
  const one = await request(`http://127.0.0.1:${singleAdmin}/readyz`, null)
  t.same({ status: one.status, reasons: (JSON.parse(one.body) as { reasons: string[] }).reasons }, { status: 503, reasons: WAITING }, 'as one process (workers: 1) says then')
  api.holdLists(false)
  let last = {}
  const ready = await waitFor(async () => { last = await readyz(adminPort, out); return JSON.stringify(last) === JSON.stringify(all(200, [])) }, 10_000, 'every /readyz to say ready').then(() => true, () => false)
  t.ok(ready, 'ready everywhere once the first list is in')
  t.same(last, all(200, []))
})

t.test('with two workers, a first list that fails ends the wait as in one process: `no healthy upstream`, on the primary and on each worker', async (t) => {
  const { api, adminPort, out } = await heldDiscovery(t, 'workers-readyz-discovery-failed.yaml')
  await waitFor(() => api.heldLists > 0, 15_000, "the lead's first list request")
  t.same(await readyz(adminPort, out), all(503, WAITING), 'starting while it is held')
  api.listMode = 500 // the held list, and the retries, fail
  api.holdLists(false)
  let last = {}
  const ended = await waitFor(async () => { last = await readyz(adminPort, out); return JSON.stringify(last) === JSON.stringify(all(503, ['no healthy upstream'])) }, 10_000, 'the wait to end').then(() => true, () => false)
  t.ok(ended, 'the failed first list ends the start everywhere: no healthy upstream')
  t.same(last, all(503, ['no healthy upstream']))
})

t.test('with two workers, a rolling replacement while the first list is held: the old lead, stopped, listed nothing, so every worker still waits for the new lead\'s first list', async (t) => {
  const { api, adminPort, out, proc, file, yaml } = await heldDiscovery(t, 'workers-readyz-discovery-roll.yaml')
  await waitFor(() => api.heldLists > 0, 15_000, "the lead's first list request")
  t.same(await readyz(adminPort, out), all(503, WAITING), 'starting while it is held')
  // a change that needs new workers (the passive checks), discovery unchanged
  writeFileSync(file, yaml(6))
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the rolling replacement to end')
  t.equal(api.requests.filter((r) => !r.watch).length, 0, 'no list was answered (every one is held)')
  t.same(await readyz(adminPort, out), all(503, WAITING), 'every /readyz still names the first list it waits for')
  api.holdLists(false)
  const ready = await waitFor(async () => JSON.stringify(await readyz(adminPort, out)) === JSON.stringify(all(200, [])), 20_000, 'every /readyz to say ready').then(() => true, () => false)
  t.ok(ready, 'ready everywhere once the new lead\'s first list is in')
})
