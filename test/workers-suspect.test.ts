// A client that gives up waiting on an upstream makes Tether probe that upstream at once (the
// frozen-replica defence, docs/health.md). With `workers: 2` only one worker (the lead) runs
// the probes: a client giving up on the other worker must reach it too, through the primary.
// The upstream here never answers /slow but answers its probes, and probes are 10 s apart, so
// a probe arriving within a second or two of a give-up is the answer to that suspicion. (The
// long wait itself already got one probe, by the waiting worker's watch, before the client
// gave up: probes are counted from the give-up on.)
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startPrimary } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

t.test('with two workers, a client giving up on either worker gets the upstream probed at once by the worker running the checks', async (t) => {
  let probes = 0
  const hanging: http.ServerResponse[] = []
  const app = http.createServer((req, res) => {
    if (req.headers['user-agent'] === 'tether-health') {
      probes++
      return void res.end('ok')
    }
    if (req.url?.startsWith('/slow') === true) return void hanging.push(res) // never answers
    res.end('fast')
  })
  await new Promise<void>((r) => app.listen(0, '127.0.0.1', r))
  t.teardown(() => { app.closeAllConnections(); app.close() })
  const url = `http://127.0.0.1:${(app.address() as AddressInfo).port}`
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-suspect.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info }',
    'health: { active: { enabled: true, path: /healthz, interval: 10s, timeout: 200ms }, passive: { enabled: false } }',
    'upstreams:',
    `  - { id: app-0, url: "${url}" }`,
    '',
  ].join('\n'))
  const { proc, out } = await startPrimary(t, file)
  const lead = Number(/"child":(\d+),[^\n]*"msg":"worker runs the active health checks"/.exec(out())?.[1])
  t.ok(lead === 0 || lead === 1, `the primary named the lead worker (${lead})`)
  await waitFor(() => probes > 0, 60_000, 'the first probe')

  const served = new Set<number>()
  for (let i = 0; i < 6 && served.size < 2; i++) {
    let before = probes
    const seen = out().length
    // a browser that gives up after 500 ms (more than the probe timeout), on a new connection
    await new Promise<void>((resolve) => {
      const req = http.get(`http://127.0.0.1:${port}/slow?try=${i}`, { agent: false }, () => resolve())
      req.setTimeout(500, () => { before = probes; req.destroy(); resolve() })
      req.on('error', () => undefined)
    })
    await waitFor(() => new RegExp(`"worker":(\\d+)[^\\n]*/slow\\?try=${i}`).test(out().slice(seen)), 5_000, 'the access log line of the abandoned request')
    const worker = Number(new RegExp(`"worker":(\\d+)[^\\n]*/slow\\?try=${i}`).exec(out().slice(seen))![1])
    served.add(worker)
    await waitFor(() => probes > before, 3_000, `a probe after the client of worker ${worker} gave up`)
    t.pass(`a client of worker ${worker}${worker === lead ? ' (the lead)' : ''} gave up: the upstream was probed at once`)
  }
  t.equal(served.size, 2, 'clients of both workers gave up (the connections went to each in turn)')

  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  t.equal(proc.exitCode, 0, 'SIGTERM stops the primary and its workers gracefully')
})
