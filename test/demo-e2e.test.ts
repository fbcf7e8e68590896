// `npm start`'s demo script end to end: three replicas plus Tether from dist/, on free
// ports, answering through the proxy, and a clean stop on Ctrl-C (SIGINT).
import t from 'tap'
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { ROOT, freePort } from './fixtures/cli.js'
import { request, waitFor } from './fixtures/upstream.js'

/** Three consecutive free ports for the replicas (retrying on a clash). */
async function freeRun(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 30000)
    const free = await Promise.all(Array.from({ length: n }, (_, i) => isFree(base + i)))
    if (free.every(Boolean)) return base
  }
  throw new Error('no run of free ports found')
}

async function isFree(port: number): Promise<boolean> {
  const net = await import('node:net')
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

t.test('the demo starts three replicas behind Tether and stops cleanly on Ctrl-C', async (t) => {
  const env = {
    ...process.env,
    DEMO_BASE_PORT: String(await freeRun(3)),
    DEMO_PORT: String(await freePort()),
    DEMO_ADMIN_PORT: String(await freePort()),
    NO_COLOR: '1',
  }
  const proc = spawn(process.execPath, [join(ROOT, 'examples', 'demo.mjs')], { cwd: ROOT, env })
  let out = ''
  proc.stdout.on('data', (c) => (out += c))
  proc.stderr.on('data', (c) => (out += c))
  const exited = new Promise<number | null>((r) => proc.on('close', (code) => r(code)))
  t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })

  await waitFor(() => out.includes('Tether is running on') || proc.exitCode !== null, 20000, 'the demo to start')
  t.match(out, new RegExp(`Tether is running on http://127\\.0\\.0\\.1:${env.DEMO_PORT} in front of app-0, app-1, app-2`))
  t.match(out, /curl -s -c \/tmp\/tether\.jar/, 'prints what to try')

  // new users (no cookies) are spread over the replicas
  const served = new Set<string>()
  for (let i = 0; i < 100 && served.size < 3; i++) {
    const r = await request(`http://127.0.0.1:${env.DEMO_PORT}/?format=json`)
    t.equal(r.status, 200)
    served.add((JSON.parse(r.body) as { replica: string }).replica)
  }
  t.same([...served].sort(), ['app-0', 'app-1', 'app-2'], 'all three replicas answer through Tether')

  // one user (a cookie jar) stays on one replica and its counter keeps growing
  let cookie = ''
  const visits: { replica: string; visits: number }[] = []
  for (let i = 0; i < 5; i++) {
    const r = await request(`http://127.0.0.1:${env.DEMO_PORT}/?format=json`, { headers: { cookie } })
    const set = (r.headers['set-cookie'] ?? []).map((c) => c.split(';')[0]!)
    const jar = new Map(cookie.split('; ').filter(Boolean).map((c) => [c.split('=')[0]!, c]))
    for (const c of set) jar.set(c.split('=')[0]!, c)
    cookie = [...jar.values()].join('; ')
    visits.push(JSON.parse(r.body) as { replica: string; visits: number })
  }
  t.equal(new Set(visits.map((v) => v.replica)).size, 1, 'the user is pinned to one replica')
  t.same(visits.map((v) => v.visits), [1, 2, 3, 4, 5], 'its counter keeps growing')

  proc.kill('SIGINT')
  t.equal(await exited, 0, 'Ctrl-C stops everything and exits 0')
  for (const port of [Number(env.DEMO_PORT), Number(env.DEMO_BASE_PORT), Number(env.DEMO_BASE_PORT) + 2]) {
    t.ok(await isFree(port), `port ${port} released`)
  }
})
