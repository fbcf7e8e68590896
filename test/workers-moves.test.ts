// Moves with two workers (the real CLI: a primary and two worker processes), with Tether's
// cookie, which each worker reads on its own. A drain that migrates: each user keeps a
// keep-alive connection (served by one worker) and now and then opens a new one (which
// node:cluster may give to the other); a drain's `min_idle` must count the user's answers from
// either worker: nobody active moves, whichever worker gets their request. After an idle gap the
// user moves once; requests they sent with the cookie from before the move (after its answer,
// on new connections: either worker) follow it, with no second move. Moves an admin orders
// through the primary: every session is found, whichever worker served it; each move is done at
// the user's next request, whichever worker gets it; the old cookie follows it on both.
import t, { type Test } from 'tap'
import http from 'node:http'
import { setTimeout as sleep } from 'node:timers/promises'
import { tempFile } from './fixtures/cli.js'
import { request, startPrimary, workerPids } from './fixtures/primary-process.js'
import type { ChildProcess } from 'node:child_process'
import { freePorts } from './fixtures/ports.js'
import { startChildUpstream, type ChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { fileURLToPath } from 'node:url'
import { decodeTetherCookie } from './fixtures/users.js'
import { startAll } from './fixtures/children.js'

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

/** The CLI with two workers and Tether's cookie over `apps`; its proxy and admin URLs. */
async function twoWorkers(t: Test, apps: readonly ChildUpstream[], affinity: string): Promise<{ url: string; admin: string; stop: () => Promise<void>; proc: ChildProcess; out: () => string }> {
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-moves.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info, access: false }',
    `affinity: { key: cookie, cookie: { secure: false }${affinity} }`,
    'upstreams:',
    ...apps.map((a) => `  - { id: ${a.id}, url: "${a.url}" }`),
    '',
  ].join('\n'))
  const { proc, out } = await startPrimary(t, file)
  return {
    proc,
    out,
    url: `http://127.0.0.1:${port}/`,
    admin: `http://127.0.0.1:${adminPort}`,
    stop: async () => {
      proc.kill('SIGTERM')
      await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
    },
  }
}

/** The cookies of USERS new users placed on app-0 (a cookie naming it is what a user placed there holds). */
async function usersOnApp0(url: string): Promise<string[]> {
  const cookies: string[] = []
  for (let u = 0; u < USERS; u++) {
    let a: Answer
    do a = await get(url, null, '')
    while (a.id !== 'app-0')
    cookies.push(a.tether!)
  }
  return cookies
}

/** Drain app-0, its users migrating, and wait until the admin API shows it. */
async function drainApp0(t: Test, admin: string): Promise<void> {
  t.equal((await request(`${admin}/upstreams/app-0/drain?migrate=true`, null, { method: 'POST' })).status, 200, 'app-0 drains, its users migrate')
  await waitFor(async () => (JSON.parse((await request(`${admin}/upstreams`, null)).body) as { id: string; draining: boolean }[]).find((u) => u.id === 'app-0')?.draining === true, 5_000, 'the drain to show')
}

async function childApps(t: Test): Promise<ChildUpstream[]> {
  const apps: ChildUpstream[] = []
  apps.push(...await startAll(['app-0', 'app-1', 'app-2'].map((id) => startChildUpstream(id, { script: SCRIPT }))))
  t.teardown(() => Promise.all(apps.map((a) => a.kill())).then(() => undefined))
  return apps
}

t.test('with two workers, a migrating drain moves nobody active, whichever worker serves them; an idle user moves once, and requests with the old cookie follow on both workers', async (t) => {
  const apps = await childApps(t)
  const { url, admin, stop } = await twoWorkers(t, apps, `, drain: { migrate: false, min_idle: ${MIN_IDLE}ms }`)

  const agents = Array.from({ length: USERS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }))
  t.teardown(() => agents.forEach((a) => a.destroy()))
  const cookies = await usersOnApp0(url)
  for (let u = 0; u < USERS; u++) await get(url, agents[u]!, cookies[u]!) // each user's keep-alive connection
  await drainApp0(t, admin)

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

  await stop()
})

t.test("with two workers, a worker that replaces a crashed one knows its sibling's moves: requests with the cookie from before a move follow it there too", async (t) => {
  const apps = await childApps(t)
  const { url, admin, stop, proc, out } = await twoWorkers(t, apps, `, drain: { migrate: false, min_idle: ${MIN_IDLE}ms }`)
  const cookies = await usersOnApp0(url)
  await drainApp0(t, admin)
  await sleep(MIN_IDLE * 1.5) // the drain's first min_idle, in which nobody moves
  const movedTo: string[] = []
  for (let u = 0; u < USERS; u++) {
    const a = await get(url, null, cookies[u]!)
    t.match(a.moved, /reason=drain/, `user ${u} moves off the draining upstream`)
    movedTo.push(a.id)
  }

  // a worker crashes; its replacement copies the sibling's bindings and records (it learns of the
  // drain anew, and in its first min_idle would send an old cookie back to app-0 without them)
  const before = (out().match(/"tether listening"/g) ?? []).length
  process.kill(workerPids(proc)[0]!, 'SIGKILL')
  await waitFor(() => (out().match(/"tether listening"/g) ?? []).length > before, 60_000, 'the crashed worker to be replaced')
  const strayed: string[] = []
  for (let u = 0; u < USERS; u++) {
    const burst = await Promise.all([0, 1, 2, 3].map(() => get(url, null, cookies[u]!)))
    for (const b of burst) if (b.id !== movedTo[u] || b.moved !== null) strayed.push(`user ${u}: moved to ${movedTo[u]}, then ${b.id} (moved: ${b.moved})`)
  }
  t.same(strayed, [], `${USERS * 4} requests with the cookie from before the move, on new connections, after a worker was replaced: all followed it, with no second move`)
  await stop()
})

t.test('with two workers, an admin finds every session through the primary, whichever worker served it, and a move it orders is done at the next request on either worker; the old cookie follows it', async (t) => {
  const apps = await childApps(t)
  const { url, admin, stop } = await twoWorkers(t, apps, '')
  const agents = Array.from({ length: USERS }, () => new http.Agent({ keepAlive: true, maxSockets: 1 }))
  t.teardown(() => agents.forEach((a) => a.destroy()))
  // each user's first request on a new connection: about half are served by each worker
  const users: { cookie: string; sid: string; home: string }[] = []
  for (let u = 0; u < USERS; u++) {
    const a = await get(url, null, '')
    users.push({ cookie: a.tether!, sid: decodeTetherCookie(a.tether!.slice('tether='.length)).sessionId, home: a.id })
  }
  const found = await Promise.all(users.map((u) => request(`${admin}/sessions/${u.sid}`, null)))
  t.same(found.map((r) => r.status), users.map(() => 200), `all ${USERS} sessions found through the primary`)
  t.same(found.map((r) => (r.status === 200 ? (JSON.parse(r.body) as { upstream: string }).upstream : r.status)), users.map((u) => u.home), 'each where it is')

  const problems: string[] = []
  for (const [i, u] of users.entries()) {
    const to = apps.map((a) => a.id).find((id) => id !== u.home)!
    const ordered = await request(`${admin}/sessions/${u.sid}/move?to=${to}`, null, { method: 'POST' })
    if (ordered.status !== 202) problems.push(`user ${i}: the order got ${ordered.status} ${ordered.body}`)
    // the next request, on the user's keep-alive connection (either worker): moved there
    const next = await get(url, agents[i]!, u.cookie)
    if (next.id !== to || !new RegExp(`from=${u.home}; reason=admin`).test(next.moved ?? '')) problems.push(`user ${i}: next request on ${next.id} (moved: ${next.moved}), ordered to ${to}`)
    // requests sent with the old cookie after that answer, on new connections (both workers)
    const burst = await Promise.all([0, 1, 2, 3].map(() => get(url, null, u.cookie)))
    for (const b of burst) if (b.id !== to || b.moved !== null) problems.push(`user ${i}: old cookie on ${b.id} (moved: ${b.moved}), moved to ${to}`)
    const later = await get(url, agents[i]!, next.tether ?? u.cookie)
    if (later.id !== to || later.moved !== null) problems.push(`user ${i}: with the new cookie on ${later.id} (moved: ${later.moved})`)
  }
  t.same(problems, [], `${USERS} moves ordered through the primary: each done once at the next request, and followed by ${USERS * 4} requests with the old cookie`)
  await stop()
})
