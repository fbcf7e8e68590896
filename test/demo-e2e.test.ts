// `npm start`'s demo script end to end: three replicas plus Tether from dist/, on free
// ports, answering through the proxy; a replica killed with SIGKILL is shown, not fatal
// (its user's counter continues on another replica), `r` restarts it, and Ctrl-C (SIGINT)
// stops every process the demo started.
import t from 'tap'
import { join } from 'node:path'
import { ROOT } from './fixtures/cli.js'
import { alive, demoPorts, gone, isFree, printedPids, spawnDemo } from './fixtures/demo-process.js'
import { request } from './fixtures/upstream.js'
import { CookieJar } from './fixtures/users.js'

interface Visit { replica: string; pid: number; visits: number; rehydrated: boolean; moved: { from: string; reason: string; epoch: number } | null }

t.test('the demo shows a failover: a killed replica\'s user continues on another, and everything stops on Ctrl-C', async (t) => {
  const ports = await demoPorts()
  const demo = spawnDemo(process.execPath, [join(ROOT, 'examples', 'demo.mjs')], ports)
  t.teardown(demo.teardown)
  const base = `http://127.0.0.1:${ports.DEMO_PORT}`

  await demo.line(/^Tether's access log follows/, 'the demo to start', 30_000)
  const out = demo.lines.join('\n')
  t.match(out, new RegExp(`Tether is running on http://127\\.0\\.0\\.1:${ports.DEMO_PORT} in front of app-0, app-1, app-2`))
  t.match(out, /for i in 1 2 3; do curl -s -c \/tmp\/tether\.jar -b \/tmp\/tether\.jar http:\/\/127\.0\.0\.1:\d+\/; done/, 'prints the loop of one user')
  t.match(out, new RegExp(`kill -9 \\$\\(curl -s -b /tmp/tether\\.jar ${base}/pid\\)`), 'prints a ready-to-paste kill line')
  t.match(out, new RegExp(`curl -s -X POST http://127\\.0\\.0\\.1:${ports.DEMO_ADMIN_PORT}/upstreams/app-2/drain`), 'prints how to drain')

  // every process is listed with its pid, and the pids are the real ones
  const pids = printedPids(demo.lines)
  t.same([...pids.keys()], ['tether', 'app-0', 'app-1', 'app-2'])
  for (const [name, pid] of pids) t.ok(alive(pid), `${name}'s printed pid ${pid} runs`)
  for (const [i, id] of ['app-0', 'app-1', 'app-2'].entries()) {
    const direct = await request(`http://127.0.0.1:${Number(ports.DEMO_BASE_PORT) + i}/pid`)
    t.equal(Number(direct.body), pids.get(id), `${id} answers /pid with the pid printed for it`)
  }

  // new users (no cookies) are spread over the replicas
  const served = new Set<string>()
  for (let i = 0; i < 100 && served.size < 3; i++) {
    const r = await request(`${base}/?format=json`)
    t.equal(r.status, 200)
    served.add((JSON.parse(r.body) as Visit).replica)
  }
  t.same([...served].sort(), ['app-0', 'app-1', 'app-2'], 'all three replicas answer through Tether')

  // one user (a cookie jar) stays on one replica and its counter keeps growing
  const jar = new CookieJar()
  const visit = async (): Promise<Visit> => {
    const r = await request(`${base}/?format=json`, { headers: { cookie: jar.header() ?? '' } })
    t.equal(r.status, 200, 'answered')
    jar.apply(r.headers['set-cookie'])
    return JSON.parse(r.body) as Visit
  }
  const before: Visit[] = []
  for (let i = 0; i < 3; i++) before.push(await visit())
  const home = before[0]!.replica
  t.ok(before.every((v) => v.replica === home), 'the user is pinned to one replica')
  t.same(before.map((v) => v.visits), [1, 2, 3], 'its counter keeps growing')

  // the kill line: /pid through Tether names the user's replica; SIGKILL it
  const pid = Number((await request(`${base}/pid`, { headers: { cookie: jar.header()! } })).body)
  t.equal(pid, pids.get(home), `/pid through Tether answers with ${home}'s pid`)
  const mark = demo.lines.length
  process.kill(pid, 'SIGKILL')
  await demo.line(new RegExp(`^\\* ${home} \\(pid ${pid}\\) was killed by SIGKILL\\.$`), 'the death reported', 10_000, mark)
  t.pass(`the demo reports ${home}'s death`)

  // the user goes on: another replica, the counter continues, the move is shown
  const after: Visit[] = []
  for (let i = 0; i < 3; i++) after.push(await visit())
  const now = after[0]!.replica
  t.not(now, home, 'the user moved to another replica')
  t.ok(after.every((v) => v.replica === now), 'and stays there')
  t.same(after.map((v) => v.visits), [4, 5, 6], 'the counter continues (rehydrated from the checkpoint)')
  t.same(after[0]!.moved, { from: home, reason: 'dead', epoch: 1 }, 'the new replica got X-Tether-Moved')
  t.equal(after[0]!.rehydrated, true)
  await demo.line(new RegExp(`^\\[${now}\\] user \\S+ moved here from ${home} \\(dead, epoch 1\\): 3 visits restored$`), 'the move in the output', 10_000, mark)
  await demo.line(new RegExp(`^\\[tether\\] GET /\\?format=json -> ${now} 200 \\S+ \\(user moved here; state rehydrated\\)$`), 'the rehydration in the access log', 10_000, mark)
  t.equal(demo.proc.exitCode, null, 'the demo, Tether and the other replicas keep running')
  for (const [name, p] of pids) if (name !== home) t.ok(alive(p), `${name} still runs`)

  // `r` restarts it; the user stays where they moved
  const restartMark = demo.lines.length
  demo.proc.stdin!.write('r\n')
  const back = await demo.line(new RegExp(`^\\* ${home} is back \\(pid (\\d+)\\) on http://127\\.0\\.0\\.1:\\d+\\.$`), 'the restart', 20_000, restartMark)
  const newPid = Number(/\(pid (\d+)\)/.exec(back)![1])
  t.not(newPid, pid)
  const port = Number(ports.DEMO_BASE_PORT) + Number(home.slice(-1))
  t.equal(Number((await request(`http://127.0.0.1:${port}/pid`)).body), newPid, 'the new process serves the port')
  const later = await visit()
  t.same([later.replica, later.visits], [now, 7], 'the user stays where they moved')

  demo.proc.kill('SIGINT')
  t.equal(await demo.exited, 0, 'Ctrl-C stops everything and exits 0')
  t.match(demo.lines.at(-1), /^stopped\.$/)
  t.same(await gone([...pids.values(), newPid]), [], 'no process the demo started is left')
  for (const p of [ports.DEMO_PORT, ports.DEMO_ADMIN_PORT, ports.DEMO_BASE_PORT]) t.ok(await isFree(Number(p)), `port ${p} released`)
})

t.test('a replica that cannot start stops the demo with the reason and exit code 1', async (t) => {
  const ports = await demoPorts()
  // occupy app-1's port
  const net = await import('node:net')
  const blocker = net.createServer()
  await new Promise<void>((r) => blocker.listen(Number(ports.DEMO_BASE_PORT) + 1, '127.0.0.1', r))
  t.teardown(() => blocker.close())
  const demo = spawnDemo(process.execPath, [join(ROOT, 'examples', 'demo.mjs')], ports)
  t.teardown(demo.teardown)
  t.equal(await demo.exited, 1)
  t.match(demo.lines.join('\n'), /demo: app-1 exited unexpectedly with code 1; last output: demo-app app-1: cannot listen on 127\.0\.0\.1:\d+: listen EADDRINUSE/)
  const port = Number(ports.DEMO_BASE_PORT) + 1
  t.match(demo.lines.join('\n'), new RegExp(`^  port ${port} is in use \\(by another demo still running\\?\\): stop that, or set DEMO_BASE_PORT to use another port`, 'm'), 'names the variable that moves the port')
})

for (const [variable, what] of [['DEMO_PORT', 'listen.port'], ['DEMO_ADMIN_PORT', 'admin.listen.port']] as const) {
  t.test(`Tether's ${what} taken: the demo stops and names ${variable}`, async (t) => {
    const ports = await demoPorts()
    const net = await import('node:net')
    const blocker = net.createServer()
    await new Promise<void>((r) => blocker.listen(Number(ports[variable]), '127.0.0.1', r))
    t.teardown(() => blocker.close())
    const demo = spawnDemo(process.execPath, [join(ROOT, 'examples', 'demo.mjs')], ports)
    t.teardown(demo.teardown)
    t.equal(await demo.exited, 1)
    const out = demo.lines.join('\n')
    t.match(out, /demo: tether exited unexpectedly with code 1; last output: .*EADDRINUSE/)
    t.match(out, new RegExp(`^  port ${ports[variable]} is in use .*: stop that, or set ${variable} to use another port`, 'm'))
  })
}
