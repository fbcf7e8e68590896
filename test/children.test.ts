// Child upstreams left running when a start fails (test/fixtures/children.ts): a group started
// with startAll is all running or none, and a child no teardown knows of is killed when its test
// file ends. Checked with real processes, by id on their command line (pgrep -f) and by pid.
import t from 'tap'
import net from 'node:net'
import { execFileSync, spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { startAll } from './fixtures/children.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { waitFor } from './fixtures/wait.js'

const LEAKY = fileURLToPath(new URL('./fixtures/leaky-start.ts', import.meta.url))

/** Pids of processes whose command line has `marker` (pgrep -f; none: exit 1). */
function pids(marker: string): number[] {
  try {
    return execFileSync('pgrep', ['-f', marker]).toString().trim().split('\n').map(Number)
  } catch {
    return []
  }
}

t.test('startAll: when the second child cannot listen (its port taken), the first is killed before the error is thrown', async (t) => {
  const taken = net.createServer().listen(0, '127.0.0.1')
  await new Promise((r) => taken.once('listening', r))
  t.teardown(() => new Promise((r) => taken.close(r)))
  const port = (taken.address() as net.AddressInfo).port
  const marker = `children-test-${process.pid}`
  await t.rejects(startAll([startChildUpstream(`${marker}-first`), startChildUpstream(`${marker}-second`, { port })]), /exited/, 'the failed start is thrown')
  t.same(pids(marker), [], 'no child of the group is left running')
})

t.test('a child started in a test file whose next start threw (no teardown registered) is killed when the file ends: the file exits', async (t) => {
  const marker = `children-leak-${process.pid}`
  const env = { ...process.env, TAP_TYPE_STRIP_ONLY: '1' }
  const proc = spawn(process.execPath, [...process.execArgv, LEAKY, marker], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') })
  let err = ''
  proc.stderr!.on('data', (c: Buffer) => { err += c.toString() })
  await waitFor(() => proc.exitCode !== null, 60_000, 'the test process to exit (a child left running keeps it alive through its pipes)')
  const pid = Number(/^(\d+)$/m.exec(err)?.[1])
  t.ok(pid > 0, `the first child had started (pid ${pid})`)
  const alive = (): boolean => { try { process.kill(pid, 0); return true } catch { return false } }
  t.notOk(alive(), 'that child is gone')
  t.same(pids(marker), [], 'no child upstream of that file is left running')
})
