// Signals at the edges of the primary's life (`workers` > 1), the real CLI: SIGTERM while the
// first start is still going (a worker frozen at its start, so the start cannot end) begins the
// graceful stop at once, instead of being held until the start ends (it never did: the pod was
// SIGKILLed at the end of its grace period); SIGHUP while the primary stops starts no
// replacement and does not say it does.
import t from 'tap'
import http from 'node:http'
import { writeFileSync } from 'node:fs'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'
import { alive, spawnPrimary } from './fixtures/workers-start.js'

const count = (text: string, needle: string): number => text.split(needle).length - 1

t.test('SIGTERM during the first start (a worker frozen in it) starts the graceful stop at once; the primary exits 0', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-start-sigterm.yaml', workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }], extra: ['shutdown: { grace_period: 1s }'] }))
  // the default start deadline (tens of seconds): the start is still going when SIGTERM comes
  const p = spawnPrimary(t, file)
  p.freezeStart(2)
  await waitFor(() => p.frozen.length === 1 || p.proc.exitCode !== null, 60_000, 'the second worker to be frozen at its start')
  p.proc.kill('SIGTERM')
  const t0 = Date.now()
  await waitFor(() => p.out().includes('"signal received: stopping the workers"') || p.proc.exitCode !== null, 5_000, 'the stop to begin')
  const began = Date.now() - t0
  await waitFor(() => p.proc.exitCode !== null, 15_000, 'the primary to exit')
  process.stderr.write(`# SIGTERM during the first start: the stop began after ${began} ms, the primary exited after ${Date.now() - t0} ms\n`)
  t.match(p.out(), /"signal":"SIGTERM".*"signal received: stopping the workers"/, 'the stop begins')
  t.notOk(p.out().includes('"tether primary: workers started"'), 'before the start ended')
  t.equal(p.proc.exitCode, 0, 'a graceful stop: exit 0')
  t.notOk(alive(p.frozen[0]!), 'the frozen worker is gone (killed after its grace period)')
})

t.test('SIGHUP during shutdown starts no worker and does not say it replaces them', async (t) => {
  // one request held at the upstream keeps a worker in its grace period
  let release: () => void = () => undefined
  const held = new Promise<void>((r) => { release = r })
  // (the active checks' probes are answered at once)
  const app = await startUpstream('app-0', (req, res) => { if (req.url === '/held') void held.then(() => res.end('late\n')); else res.end('ok\n') })
  t.teardown(() => { release(); return app.close() })
  const [port, adminPort] = await freePorts(2)
  const yaml = (grace: string): string => workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }], extra: [`shutdown: { grace_period: ${grace} }`] })
  const file = tempFile('workers-start-sighup.yaml', yaml('20s'))
  const p = spawnPrimary(t, file)
  await waitFor(() => p.out().includes('"tether primary: workers started"') || p.proc.exitCode !== null, 60_000, 'the workers to start')
  t.equal(p.proc.exitCode, null, 'Tether runs')
  const answer = new Promise<number>((resolve) => {
    http.get({ host: '127.0.0.1', port, path: '/held', agent: false }, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode!)) }).on('error', () => resolve(0))
  })
  // polled: the upstream fixture emits nothing per request
  await waitFor(() => app.seen.some((r) => r.url === '/held'), 10_000, 'the request to reach the upstream')
  const starts = count(p.out(), '"starting a worker"')
  p.proc.kill('SIGTERM')
  await waitFor(() => p.out().includes('"signal received: stopping the workers"'), 10_000, 'the stop to begin')
  // a change that needs new workers, then SIGHUP, while the held request keeps the stop going
  writeFileSync(file, yaml('19s'))
  p.proc.kill('SIGHUP')
  await waitFor(() => /"SIGHUP[^"]*"/.test(p.out().split('"signal received: stopping the workers"')[1]!), 10_000, 'the SIGHUP to be logged')
  t.equal(p.proc.exitCode, null, 'still stopping when the SIGHUP came')
  release()
  const status = await answer
  t.equal(status, 200, 'the held request is answered')
  await waitFor(() => p.proc.exitCode !== null, 30_000, 'the primary to exit')
  t.equal(p.proc.exitCode, 0, 'exits 0')
  const after = p.out().split('"signal received: stopping the workers"')[1]!
  t.notOk(after.includes('replacing them one at a time'), 'no "replacing them one at a time"')
  t.equal(count(p.out(), '"starting a worker"'), starts, 'no worker started')
  t.match(after, /"SIGHUP during shutdown: not reloading"/, 'says the SIGHUP is not applied')
})
