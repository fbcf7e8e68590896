// `workers: 2`, `key: app_cookie` with an application that rotates its cookie, and
// `affinity.absolute_timeout: 2s`: both workers are replaced (SIGKILL, restarted by the primary)
// after a rotation, so each holds the rotated value's grace only as a copy from its sibling.
// Past the absolute timeout the old value is routed by its hash, as a local grace's would be:
// the copy carried the binding's creation time. Real Tether (the CLI as primary and workers),
// real upstreams on loopback, a new connection per request (node:cluster spreads them).
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, slotOf, startPrimary, workerPids, workersYaml } from './fixtures/primary-process.js'
import { upstreams } from './fixtures/routing-sticky.js'
import { waitFor } from './fixtures/wait.js'
import { buildPlacement } from '../src/placement/rendezvous.js'
import { hashKey } from '../src/placement/hash.js'

t.test("a rotated cookie's grace copied by restarted workers ends at absolute_timeout: the old value is placed by its hash", async (t) => {
  const ids = ['app-0', 'app-1']
  const placement = buildPlacement(ids.map((id) => ({ id, weight: 1 })))
  const hashedTo = (v: string): string => placement.ids[placement.pick(hashKey(v))]!
  // each value an upstream sets hashes to the *other* upstream: a request routed by the hash
  // (its binding or grace over) visibly lands elsewhere than the binding said
  let n = 0
  const issue = (id: string): string => {
    for (;;) {
      const v = `v${++n}-${process.pid}`
      if (hashedTo(v) !== id) return v
    }
  }
  const ups = await upstreams(t, ids, (id) => (_req, res) => {
    res.setHeader('set-cookie', `sid=${issue(id)}; path=/`)
    res.end(`${id}\n`)
  })
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-rotation-absolute.yaml', workersYaml({
    listen: port!, adminPort: adminPort!, workers: 2, upstreams: ups,
    extra: ['affinity: { key: app_cookie, app_cookie: { name: sid, fallback: random }, idle_timeout: 2s, absolute_timeout: 2s }'],
  }))
  const { proc, out } = await startPrimary(t, file)
  const url = `http://127.0.0.1:${port}/`
  const get = async (cookie: string | null): Promise<{ id: string; set: string }> => {
    const r = await request(url, cookie)
    t.equal(r.status, 200)
    return { id: r.body.trim(), set: /^sid=([^;]*)/.exec(r.setCookie[0] ?? '')?.[1] ?? '' }
  }

  const first = await get(null)
  const pinnedAt = Date.now() // the binding was created before this
  const home = first.id
  const rotated = await get(`sid=${first.set}`)
  t.equal(rotated.id, home, 'the learned value routes to the upstream that set it')
  const v1 = first.set
  t.not(hashedTo(v1), home, `its hash points elsewhere (${hashedTo(v1)})`)

  // both workers replaced, one after the other: the second copies from the first's copy
  const listening = (slot: number): number => out().split('\n').filter((l) => l.includes(`"worker":${slot},`) && l.includes('"tether listening"')).length
  for (const slot of [0, 1]) {
    const pid = workerPids(proc).find((p) => slotOf(p) === slot)!
    const before = listening(slot)
    process.kill(pid, 'SIGKILL')
    await waitFor(() => listening(slot) > before, 30_000, `worker ${slot} to be back`)
  }

  // the grace (60 s) still runs; the affinity it belongs to (absolute_timeout 2 s) is over
  await waitFor(() => Date.now() > pinnedAt + 2_100, 10_000, 'absolute_timeout to pass')
  const after: string[] = []
  for (let i = 0; i < 6; i++) after.push((await get(`sid=${v1}`)).id)
  t.comment(`home ${home}; the rotated value after absolute_timeout, 6 requests on new connections: ${after.join(' ')}`)
  t.same(after, after.map(() => hashedTo(v1)), 'every request with the rotated value is placed by its hash, on either worker')
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
})
