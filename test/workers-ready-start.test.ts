// A fresh group started before its app: the lead's failed probes mark the app unhealthy on
// every worker (as in one process), not ejected for the passive ejection time, so the group's
// /readyz turns 200 and requests are routed within about one probe interval of the app
// answering, as a single process's do. The passive ejection here is a minute: a worker that took
// the lead's relayed failure for a connection failure would stay 503 all that time.
// Real CLI processes (a primary with two workers, and one process), a real upstream started late.
import t from 'tap'
import http from 'node:http'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startPrimary, startSingle, workersYaml } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

for (const workers of [2, 1]) {
  t.test(`workers: ${workers}: started before its app, ready and routing within about one probe interval of the app answering, not after the passive ejection time`, async (t) => {
    const [listen, adminPort, appPort] = await freePorts(3)
    const file = tempFile('proxy.yaml', workersYaml({
      listen: listen!, adminPort: adminPort!, workers, upstreams: [{ id: 'app-0', url: `http://127.0.0.1:${appPort}` }],
      extra: [
        'health:',
        '  active: { interval: 300ms, timeout: 1s, unhealthy_threshold: 1, healthy_threshold: 2 }',
        '  passive: { base_ejection: 60s, max_ejection: 5m }',
      ],
    }))
    // resolves once it (every worker) listens
    const { out } = await (workers > 1 ? startPrimary : startSingle)(t, file)
    const admin = `http://127.0.0.1:${adminPort}`
    // the first probe failed (nothing listens yet): the app is unhealthy on every worker
    await waitFor(() => out().includes('"to":"unhealthy"'), 60_000, 'the first failed probe')
    t.equal((await request(`${admin}/readyz`, null)).status, 503, 'not ready before the app answers')

    const app = http.createServer((req, res) => res.end('app-0\n'))
    await new Promise<void>((resolve) => app.listen(appPort, '127.0.0.1', resolve))
    t.teardown(() => new Promise<void>((resolve) => { app.closeAllConnections(); app.close(() => resolve()) }))
    const up = Date.now()
    // generous for a loaded machine (two probes take ~0.6 s), far below the 60 s ejection
    await waitFor(async () => (await request(`${admin}/readyz`, null)).status === 200, 60_000, '/readyz to turn 200', 50)
    t.comment(`workers: ${workers}: /readyz 200 ${Date.now() - up} ms after the app listened`)
    // each request on a new connection: the cluster hands them to either worker
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push((await request(`http://127.0.0.1:${listen}/`, null)).status)
    t.same(statuses, Array(8).fill(200), 'every request is routed to the app, whichever worker takes it')
    t.notMatch(out(), /"to":"ejected"/, 'no worker ejected the app: a failed probe is no connection failure')
  })
}
