// The primary's start with `workers: 2`: a proxy port already taken ends it with the workers' error
// (exit 1, no restart), and a SIGHUP or SIGTERM while the workers start is applied once they have
// started. Split from workers-admin-edges.test.ts, with workers-admin-edges-listener.test.ts and
// workers-admin-edges-combined.test.ts.
import t from 'tap'
import { tempFile } from './fixtures/cli.js'
import { freePort, freePorts } from './fixtures/ports.js'
import { request, workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

t.test('with two workers, a proxy port already taken: the primary exits 1 with the workers\' error, and restarts nothing', async (t) => {
  const { runCli } = await import('./fixtures/cli.js')
  const net = await import('node:net')
  const taken = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => taken.once('listening', r))
  t.teardown(() => new Promise((r) => taken.close(r)))
  const file = tempFile('workers-port-taken.yaml', workersYaml({ listen: (taken.address() as { port: number }).port, adminPort: await freePort(), workers: 2, upstreams: [{ id: 'app-0', url: 'http://127.0.0.1:9' }] }))
  const exit = await runCli(['--config', file], {}, 30_000)
  const out = exit.stdout + exit.stderr
  t.equal(exit.code, 1, 'exit 1')
  t.match(out, /EADDRINUSE/, "the worker's own error")
  t.match(out, /"a worker failed to start"/)
  t.notOk(out.includes('"worker died; restarting it"'), 'no restart announced for a start that ends the primary')
})

t.test('a SIGHUP or SIGTERM while the workers start is applied once they have started, not the end of the primary', async (t) => {
  const { spawn } = await import('node:child_process')
  const { CLI } = await import('./fixtures/cli.js')
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  for (const signal of ['SIGHUP', 'SIGTERM'] as const) {
    const [port, adminPort] = await freePorts(2)
    const file = tempFile(`workers-early-${signal}.yaml`, workersYaml({ listen: port, adminPort, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] }))
    const proc = spawn(process.execPath, [CLI, '--config', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    t.teardown(() => { if (proc.exitCode === null) proc.kill('SIGKILL') })
    let out = ''
    proc.stdout.on('data', (c) => (out += c))
    proc.stderr.on('data', (c) => (out += c))
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)))
    await waitFor(() => out.includes('"starting a worker"') || proc.exitCode !== null, 60_000, 'the primary to start its workers')
    proc.kill(signal)
    if (signal === 'SIGHUP') {
      await waitFor(() => out.includes('SIGHUP: reloading the config in every worker') || proc.exitCode !== null, 60_000, 'the reload once started')
      t.equal(proc.exitCode, null, 'SIGHUP during the start: the primary runs on')
      t.ok(out.indexOf('"tether primary: workers started"') < out.indexOf('SIGHUP: reloading'), 'and reloads once its workers have started')
      t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'serving')
      proc.kill('SIGTERM')
    }
    t.equal(await exited, 0, `${signal}: a graceful stop in the end (exit 0, not the signal's default)`)
  }
})
