// Worker processes (`workers: 2`): the real CLI forks a primary and two workers; each user's
// requests arrive on new connections, so node:cluster hands them to both workers in turn, and
// every one must reach the user's upstream through learning of an application cookie, a
// replica SIGKILLed (failover), its recovery, a migrating drain, a scale-up by config reload,
// and a worker SIGKILLed (restarted by the primary, which takes the bindings from its sibling).
// An answer from another upstream than the user's last is consistent only when Tether says it
// moved the user from that last upstream (X-Tether-Moved: from=...).
import t from 'tap'
import http from 'node:http'
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { tempFile } from './fixtures/cli.js'
import { request, startPrimary, workerPids } from './fixtures/primary-process.js'
import { freePorts } from './fixtures/ports.js'
import { startChildUpstream, type ChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { CounterUsers, startCounter } from './fixtures/counter-upstream.js'
import { startAll } from './fixtures/children.js'

const SCRIPT = fileURLToPath(new URL('./fixtures/session-upstream-server.mjs', import.meta.url))
const USERS = 40

interface Answer { id: string; sid: string; moved: string | null }

function yaml(port: number, admin: number, apps: readonly ChildUpstream[]): string {
  return [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${admin} } }`,
    'workers: 2',
    'log: { level: info }',
    'affinity: { key: app_cookie, app_cookie: { name: sid, fallback: random }, drain: { migrate: true, min_idle: 0s } }',
    'health: { active: { enabled: true, path: /healthz, interval: 100ms, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 } }',
    'upstreams:',
    ...apps.map((a) => `  - { id: ${a.id}, url: "${a.url}" }`),
    '',
  ].join('\n')
}

t.test('with two workers, every user reaches the same upstream on every new connection through learning, failover, recovery, drain, scale-up and a worker crash', async (t) => {
  const apps: ChildUpstream[] = []
  apps.push(...await startAll(['app-0', 'app-1', 'app-2'].map((id) => startChildUpstream(id, { script: SCRIPT }))))
  t.teardown(() => Promise.all(apps.map((a) => a.kill())).then(() => undefined))
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers.yaml', yaml(port, adminPort, apps))
  const { proc, out: output } = await startPrimary(t, file)
  const url = `http://127.0.0.1:${port}/`
  const admin = `http://127.0.0.1:${adminPort}`

  const cookies = new Map<number, string>()
  const last = new Map<number, string>()
  let requests = 0
  let failed = 0
  const inconsistent: string[] = []
  const moves: string[] = []
  const round = async (phase: string): Promise<void> => {
    for (let u = 0; u < USERS; u++) {
      const r = await request(url, cookies.get(u) ?? null)
      requests++
      if (r.status !== 200) {
        failed++
        continue
      }
      const a = JSON.parse(r.body) as Answer
      const sid = r.setCookie.map((c) => /^sid=([^;]+)/.exec(c)?.[1]).find((v) => v !== undefined)
      if (sid !== undefined) cookies.set(u, `sid=${sid}`)
      const prev = last.get(u)
      if (prev !== undefined && a.id !== prev) {
        const from = /from=([^;]+)/.exec(a.moved ?? '')?.[1]
        if (from !== prev) inconsistent.push(`${phase}: user ${u} went ${prev} -> ${a.id} (moved: ${a.moved})`)
        else moves.push(`${phase}: ${prev} -> ${a.id}`)
      }
      last.set(u, a.id)
    }
  }
  const upstreams = async (): Promise<{ id: string; state: string; draining: boolean }[]> =>
    JSON.parse((await request(`${admin}/upstreams`, null)).body) as { id: string; state: string; draining: boolean }[]
  const countOf = (id: string): number => [...last.values()].filter((v) => v === id).length

  // learning: each user's first answer sets the cookie, learned by whichever worker served it
  for (let i = 0; i < 4; i++) await round('learning')
  t.equal(cookies.size, USERS, 'every user got a session cookie')

  // failover: a replica dies; its users move (with X-Tether-Moved) and stay moved
  const victim = apps[1]!
  const onVictim = countOf(victim.id)
  await victim.kill()
  await waitFor(async () => (await upstreams()).find((u) => u.id === victim.id)?.state !== 'healthy', 10_000, 'the dead replica to be seen down')
  for (let i = 0; i < 3; i++) await round('failover')
  t.equal(countOf(victim.id), 0, `the ${onVictim} users of the killed replica moved`)

  // recovery: the replica comes back at the same address; nobody flips back and forth
  apps[1] = await startChildUpstream(victim.id, { script: SCRIPT, port: victim.port })
  await waitFor(async () => (await upstreams()).find((u) => u.id === victim.id)?.state === 'healthy', 10_000, 'the replica to be healthy again')
  for (let i = 0; i < 3; i++) await round('recovery')

  // drain that migrates: app-2's users move at their next request (min_idle 0)
  const drained = await request(`${admin}/upstreams/app-2/drain?migrate=true`, null, { method: 'POST' })
  t.equal(drained.status, 200, 'the drain is accepted through the primary')
  await waitFor(async () => (await upstreams()).find((u) => u.id === 'app-2')?.draining === true, 5_000, 'the drain to show')
  for (let i = 0; i < 3; i++) await round('drain')
  t.equal(countOf('app-2'), 0, 'the drained upstream has no user left')

  // scale-up: a fourth replica joins by config reload; existing users stay put
  const fourth = await startChildUpstream('app-3', { script: SCRIPT })
  apps.push(fourth)
  writeFileSync(file, yaml(port, adminPort, apps))
  await waitFor(async () => (await upstreams()).some((u) => u.id === 'app-3'), 10_000, 'the new replica to be listed')
  for (let i = 0; i < 3; i++) await round('scale-up')

  // a worker crashes: the primary restarts it; the new worker takes its sibling's bindings
  const pids = workerPids(proc)
  t.equal(pids.length, 2, 'two worker processes')
  const before = (output().match(/"tether listening"/g) ?? []).length
  process.kill(pids[0]!, 'SIGKILL')
  await waitFor(() => (output().match(/"tether listening"/g) ?? []).length > before, 60_000, 'the crashed worker to be replaced')
  for (let i = 0; i < 4; i++) await round('worker crash')

  // both workers served: the spread is real
  const served = new Map<number, number>()
  for (const line of output().split('\n')) {
    const m = /^\{.*"worker":(\d+),.*"status":\d{3}/.exec(line)
    if (m !== null) served.set(Number(m[1]), (served.get(Number(m[1])) ?? 0) + 1)
  }
  process.stderr.write(`# workers consistency: ${requests} requests (${[...served].map(([w, n]) => `worker ${w}: ${n}`).join(', ')}), ${moves.length} announced moves, ${inconsistent.length} inconsistent, ${failed} failed\n`)
  t.ok((served.get(0) ?? 0) > requests / 5 && (served.get(1) ?? 0) > requests / 5, 'both workers served a real share of the requests')
  t.same(inconsistent, [], '0 users routed inconsistently')
  t.equal(failed, 0, '0 failed requests')
  t.ok(moves.some((m) => m.startsWith('failover')) && moves.some((m) => m.startsWith('drain')), 'the failover and the drain moved users, announced')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'SIGTERM stops the primary and its workers gracefully')
})

t.test('with two workers, state written through one worker rehydrates a user on another; a change that needs a restart replaces the workers one at a time under load with no failed request; /metrics adds up every worker', async (t) => {
  const apps = await startAll([startCounter('app-0'), startCounter('app-1'), startCounter('app-2')])
  t.teardown(() => Promise.all(apps.map((a) => a.kill())).then(() => undefined))
  const [port, adminPort] = await freePorts(2)
  const config = (connect: string): string => [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info }',
    `timeouts: { connect: ${connect} }`,
    'state: { store: memory }',
    'health: { active: { enabled: true, path: /healthz, interval: 100ms, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 1 } }',
    'upstreams:',
    ...apps.map((a) => `  - { id: ${a.id}, url: "${a.url}" }`),
    '',
  ].join('\n')
  const file = tempFile('workers-roll.yaml', config('1s'))
  const { proc, out } = await startPrimary(t, file)
  const url = `http://127.0.0.1:${port}/`
  const users = new CounterUsers(30)
  const agent = new http.Agent({ keepAlive: false }) // a new connection per request: both workers serve every user
  t.teardown(() => agent.destroy())
  let answered = 0
  const round = async (): Promise<Map<number, string>> => {
    const at = new Map<number, string>()
    for (let i = 0; i < users.jars.length; i++) {
      const a = await users.request(i, url, agent)
      if (a !== null) {
        answered++
        at.set(i, a.id)
      }
    }
    return at
  }
  for (let i = 0; i < 3; i++) await round()
  const home = await round()

  // a replica dies: its users are rehydrated from the checkpoints the primary holds, whichever worker wrote them
  await apps[1]!.kill()
  const moved = [...home].filter(([, id]) => id === 'app-1').length
  for (let i = 0; i < 2; i++) await round()
  t.ok(moved > 0, `${moved} users were on the killed replica`)

  // a change that needs a restart (timeouts): new workers, one at a time, while users keep coming
  const before = workerPids(proc)
  writeFileSync(file, config('2s'))
  const replaced = (): boolean => (out().match(/"tether listening"/g) ?? []).length >= 4
  let rounds = 0
  while (!replaced() && rounds < 200) {
    await round()
    rounds++
  }
  t.ok(replaced(), `both workers were replaced (${rounds} rounds of requests meanwhile)`)
  await waitFor(() => { const now = workerPids(proc); return now.length === 2 && now.every((p) => !before.includes(p)) }, 60_000, 'the old workers to exit', 50)
  await round()

  const metrics = (await request(`http://127.0.0.1:${adminPort}/metrics`, null)).body
  const counted = [...metrics.matchAll(/^tether_http_requests_total\{[^}]*status_class="2xx"[^}]*\} (\d+)/gm)].reduce((n, m) => n + Number(m[1]), 0)
  process.stderr.write(`# workers roll: ${answered} requests, ${users.failed} failed, ${users.lost} lost updates, ${moved} users rehydrated on another replica, workers replaced during ${rounds} rounds; /metrics counts ${counted} answered since the new workers started\n`)
  t.equal(users.failed, 0, '0 failed requests, during the replacement too')
  t.equal(users.lost, 0, '0 lost updates: every moved user was rehydrated through the shared store')
  t.ok(counted > 0 && counted <= answered, 'the primary\'s /metrics adds up the workers\' counts')
  const status = await request(`http://127.0.0.1:${adminPort}/status`, null)
  const view = JSON.parse(status.body) as { upstreams: { id: string; requests_per_second: number }[] }
  t.equal(status.status, 200, 'the status page data is served by the primary')
  t.same(view.upstreams.map((u) => u.id).sort(), ['app-0', 'app-1', 'app-2'], 'with every upstream')
  t.equal((await request(`http://127.0.0.1:${adminPort}/`, null)).status, 200, 'the status page itself too')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'stopped gracefully')
})
