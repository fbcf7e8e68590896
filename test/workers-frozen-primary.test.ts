// A primary that freezes (SIGSTOP: as a stuck event loop, or a process the kernel does not
// schedule) while its workers serve keep-alive connections. A worker's answer waits until the
// primary acknowledged what it wrote through about that answer's user (a new user's pin), for
// at most 2 s. Every other answer goes out at once: returning users, including those whose
// binding is renewed with the others in this sync period (a renewal is no news).
import t from 'tap'
import http from 'node:http'
import { tempFile } from './fixtures/cli.js'
import { freePort } from './fixtures/ports.js'
import { startPrimary } from './fixtures/primary-process.js'
import { startChildUpstream, type ChildAnswer } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

/** What a worker waits on the primary at most before answering anyway (WorkerLink's PRIMARY_TIMEOUT). */
const PRIMARY_TIMEOUT = 2_000

function get(port: number, agent: http.Agent, user: string): Promise<{ status: number; upstream: string; ms: number }> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent, headers: { 'x-user': user } }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode!, upstream: (JSON.parse(body) as ChildAnswer).id, ms: performance.now() - t0 }))
    })
    req.setTimeout(10_000, () => req.destroy(new Error('no answer in 10 s')))
    req.on('error', reject)
    req.end()
  })
}

t.test('a frozen primary holds back only the answers of users with news: returning users are answered at once', async (t) => {
  const apps = await startAll([startChildUpstream('app-0'), startChildUpstream('app-1')])
  t.teardown(() => Promise.all(apps.map((a) => a.kill())))
  const port = await freePort()
  const file = tempFile('workers-frozen-primary.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${await freePort()} } }`,
    'workers: 2',
    // a sync period of 1 s (idle_timeout / 10): every returning user's request below renews
    'affinity: { key: header, header: { name: X-User }, idle_timeout: 10s }',
    'log: { level: info, access: false }',
    'upstreams:',
    ...apps.map((a) => `  - { id: ${a.id}, url: "${a.url}" }`),
    '',
  ].join('\n'))
  const primary = await startPrimary(t, file)
  // keep-alive connections made before the freeze (the primary hands new ones to the workers,
  // round robin: these are spread over both); one pool for returning users, one for new ones
  const returning = new http.Agent({ keepAlive: true, maxSockets: 8 })
  const newcomers = new http.Agent({ keepAlive: true, maxSockets: 4 })
  t.teardown(() => { returning.destroy(); newcomers.destroy() })
  const users = Array.from({ length: 16 }, (_, i) => `user-${i}`)
  const first = await Promise.all(users.map((u) => get(port, returning, u)))
  await Promise.all(['w-0', 'w-1', 'w-2', 'w-3'].map((u) => get(port, newcomers, u)))
  t.same(first.map((r) => r.status), users.map(() => 200))
  t.equal(Object.keys(returning.freeSockets).length > 0 ? Object.values(returning.freeSockets).flat().length : 0, 8, 'eight connections for the returning users')
  const before = Math.floor(Date.now() / 1_000)
  await waitFor(() => Math.floor(Date.now() / 1_000) > before, 5_000, 'the next sync period')

  primary.proc.kill('SIGSTOP')
  let stopped = true
  const resume = (): void => {
    if (!stopped) return
    stopped = false
    primary.proc.kill('SIGCONT')
  }
  t.teardown(resume)
  // new users: each answer pins its user, written through, and waits for the primary
  let freshAnswered = 0
  const fresh = ['n-0', 'n-1', 'n-2', 'n-3'].map((u) => get(port, newcomers, u).then((r) => (freshAnswered++, r)))
  const again = await Promise.all(users.map((u) => get(port, returning, u)))
  // sent first, on their own connections, one round trip each, where the returning users'
  // took two on theirs: not held, they would have been answered by now
  t.equal(freshAnswered, 0, "the new users' answers wait for the primary (their pins are not acknowledged)")
  const slowest = Math.max(...again.map((r) => r.ms))
  t.same(again.map((r) => r.status), users.map(() => 200), 'returning users are answered while the primary is stopped')
  t.same(again.map((r) => r.upstream), first.map((r) => r.upstream), 'each where they were')
  // without the per-user wait each of these waited for the primary (2 s: its timeout)
  t.ok(slowest < PRIMARY_TIMEOUT / 2, `none waited for the primary (slowest ${slowest.toFixed(0)} ms)`)
  resume()
  const answered = await Promise.all(fresh)
  t.same(answered.map((r) => r.status), [200, 200, 200, 200], 'the new users are answered too')
  process.stderr.write(`# frozen primary: ${users.length} returning users answered in at most ${slowest.toFixed(0)} ms while it was stopped; 4 new users in ${Math.min(...answered.map((r) => r.ms)).toFixed(0)}-${Math.max(...answered.map((r) => r.ms)).toFixed(0)} ms\n`)
  primary.proc.kill('SIGTERM')
  await new Promise((r) => primary.proc.once('exit', r))
})
