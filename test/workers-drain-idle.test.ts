// A drain that migrates, with two workers (the real CLI: a primary and two worker processes).
// Each user keeps a keep-alive connection (served by one worker) and now and then opens a new
// one (which node:cluster may give to the other). A drain's `min_idle` must count the user's
// answers from either worker: nobody active moves, whichever worker gets their request. After
// an idle gap the user moves once; requests they sent with the cookie from before the move
// (after its answer, on new connections: either worker) follow it, with no second move.
import t from 'tap'
import http from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { tempFile } from './fixtures/cli.js'
import { request, startPrimary } from './fixtures/primary-process.js'
import { freePort } from './fixtures/ports.js'
import { startChildUpstream, type ChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { fileURLToPath } from 'node:url'

const SCRIPT = fileURLToPath(new URL('./fixtures/session-upstream-server.mjs', import.meta.url))
const USERS = 12
const MIN_IDLE = 1_000

interface Answer { id: string; moved: string | null; tether: string | null }

/** One GET with `cookie`, on `agent`'s keep-alive connection, or on a new one (null). */
function get(url: string, agent: http.Agent | null, cookie: string): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const headers = agent === null ? { cookie, connection: 'close' } : { cookie }
    const req = http.get(url, { agent: agent ?? false, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`status ${res.statusCode}: ${body}`))
        const a = JSON.parse(body) as { id: string; moved: string | null }
        const tether = (res.headers['set-cookie'] ?? []).map((c) => /^(tether=[^;]+)/.exec(c)?.[1]).find((v) => v !== undefined) ?? null
        resolve({ id: a.id, moved: a.moved, tether })
      })
    })
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')))
    req.on('error', reject)
  })
}

t.test('with two workers, a migrating drain moves nobody active, whichever worker serves them; an idle user moves once, and requests with the old cookie follow on both workers', async (t) => {
  const apps: ChildUpstream[] = []
  for (const id of ['app-0', 'app-1', 'app-2']) apps.push(await startChildUpstream(id, { script: SCRIPT }))
  t.teardown(() => Promise.all(apps.map((a) => a.kill())).then(() => undefined))
  const port = await freePort()
  const adminPort = await freePort()
  const file = tempFile('workers-drain.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info, access: false }',
    `affinity: { key: cookie, cookie: { secure: false }, drain: { migrate: false, min_idle: ${MIN_IDLE}ms } }`,
    'upstreams:',
    ...apps.map((a) => `  - { id: ${a.id}, url: "${a.url}" }`),
    '',
  ].join('\n'))
  const { proc } = await startPrimary(t, file)
  const url = `http://127.0.0.1:${port}/`
  const admin = `http://127.0.0.1:${adminPort}`

  // every user starts on app-0: a cookie naming it is what a user placed there holds
  const agents = Array.from({ length: USERS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }))
  t.teardown(() => agents.forEach((a) => a.destroy()))
  const cookies: string[] = []
  for (let u = 0; u < USERS; u++) {
    let a: Answer
    do a = await get(url, null, '')
    while (a.id !== 'app-0')
    cookies.push(a.tether!)
  }
  for (let u = 0; u < USERS; u++) await get(url, agents[u]!, cookies[u]!) // each user's keep-alive connection
  const drained = await request(`${admin}/upstreams/app-0/drain?migrate=true`, null, { method: 'POST' })
  t.equal(drained.status, 200, 'app-0 drains, its users migrate')
  await waitFor(async () => (JSON.parse((await request(`${admin}/upstreams`, null)).body) as { id: string; draining: boolean }[]).find((u) => u.id === 'app-0')?.draining === true, 5_000, 'the drain to show')

  // active: a request every 0.3 x min_idle on the keep-alive connection, every third on a new one
  // (the gap between two of those is longer than min_idle: the worker that gets it may not have
  // served the user since)
  const active: string[] = []
  let requests = 0
  for (let step = 0; step < 9; step++) {
    await sleep(MIN_IDLE * 0.3) // the users' think time: the pace of the visit, not a wait for the proxy
    await Promise.all(cookies.map(async (cookie, u) => {
      const a = await get(url, step % 3 === 2 ? null : agents[u]!, cookie)
      requests++
      if (a.id !== 'app-0' || a.moved !== null) active.push(`user ${u} step ${step}: ${a.id} (moved: ${a.moved})`)
    }))
  }
  t.same(active, [], `${USERS} users active through ${requests} requests (a third on new connections): none moved`)

  // idle for longer than min_idle (the users' pause); then each user's next request moves them,
  // and four requests sent with the old cookie after its answer, on new connections, follow
  await sleep(MIN_IDLE * 1.5)
  const moved: string[] = []
  const followed: string[] = []
  for (let u = 0; u < USERS; u++) {
    const first = await get(url, agents[u]!, cookies[u]!)
    if (first.id === 'app-0' || !/reason=drain/.test(first.moved ?? '')) moved.push(`user ${u}: ${first.id} (moved: ${first.moved})`)
    const burst = await Promise.all([0, 1, 2, 3].map(() => get(url, null, cookies[u]!)))
    for (const b of burst) if (b.id !== first.id || b.moved !== null) followed.push(`user ${u}: ${first.id}, then ${b.id} (moved: ${b.moved})`)
    cookies[u] = first.tether ?? cookies[u]!
  }
  t.same(moved, [], 'after an idle gap, every user moved at their next request, with X-Tether-Moved: reason=drain')
  t.same(followed, [], 'requests with the cookie from before the move (either worker) went where the user moved, with no second move')
  process.stderr.write(`# workers drain: ${USERS} users, ${requests} requests while active (moved: ${active.length}), ${USERS} moved after the idle gap, ${USERS * 4} requests with the old cookie (not following: ${followed.length})\n`)

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 15_000, 'the primary to stop')
})
