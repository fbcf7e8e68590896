// The primary itself dies (`workers: 2`, SIGKILL, as an OOM kill of the container's first
// process would): its workers must not live on as orphans holding the proxy port (a restarted
// container, or a new Tether on the same host, could not listen). Each worker exits as soon as
// its channel to the primary closes, and the port is free again for a new primary. A primary
// that dies while its workers are still starting must not make them crash with node's stack.
import t from 'tap'
import net from 'node:net'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { CLI, ROOT, tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { request, startPrimary, workerPids } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'

/** Whether a process with this pid still exists (a zombie counts as gone: it holds no socket). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
  } catch {
    return false
  }
}

/** Whether something accepts connections on the port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

t.test('a SIGKILLed primary takes its workers with it: no orphan keeps the port, a new primary starts on it', async (t) => {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('workers-primary-crash.yaml', [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info, access: false }',
    'upstreams:',
    `  - { id: app-0, url: "${app.url}" }`,
    '',
  ].join('\n'))
  const first = await startPrimary(t, file)
  const pids = workerPids(first.proc)
  t.equal(pids.length, 2, 'two workers')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'serving')
  t.teardown(() => { for (const pid of pids) if (alive(pid)) process.kill(pid, 'SIGKILL') })

  first.proc.kill('SIGKILL')
  await waitFor(() => pids.every((pid) => !alive(pid)), 10_000, 'the workers to exit after their primary died')
  t.pass('both workers exited')
  t.notOk(await listening(port), 'nothing listens on the proxy port any more')

  const second = await startPrimary(t, file)
  t.equal(workerPids(second.proc).length, 2, 'a new primary starts its two workers on the same ports')
  t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, 'and serves')
  second.proc.kill('SIGTERM')
  await new Promise((r) => second.proc.once('exit', r))
})

t.test('a primary killed while its worker starts: the worker exits quietly (no EPIPE crash, no stack trace)', async (t) => {
  const file = tempFile('workers-early-crash.yaml', [
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    'workers: 2',
    'log: { level: info, access: false }',
    'upstreams:',
    '  - { id: app-0, url: "http://127.0.0.1:9" }',
    '',
  ].join('\n'))
  // the worker inherits the dying primary's stdout and stderr: both close once it exits too
  const proc = spawn(process.execPath, [join(ROOT, 'test', 'fixtures', 'dying-primary.mjs'), join(ROOT, 'dist', 'workers', 'primary.js'), CLI, file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout.on('data', (c) => (out += c))
  proc.stderr.on('data', (c) => (out += c))
  let closed = false
  proc.once('close', () => (closed = true))
  await waitFor(() => /^worker \d+$/m.test(out), 10_000, 'the worker to be forked')
  const pid = Number(/^worker (\d+)$/m.exec(out)![1])
  t.teardown(() => { if (alive(pid)) process.kill(pid, 'SIGKILL') })
  await waitFor(() => closed && !alive(pid), 10_000, 'the orphaned worker to exit')
  t.pass('the worker exited')
  t.notMatch(out, /EPIPE|Unhandled 'error'|^\s+at /m, `no crash and no stack trace in its output:\n${out}`)
})
