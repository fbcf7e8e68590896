// Review s60 r1: a SIGHUP to the whole process group the moment the primary has forked a worker
// (its log line "starting a worker": that worker's node is still starting, before dist/cli.js
// runs, so before any holder) still kills that worker, and the first start fails: the primary
// exits 1 with "worker N exited before it was ready (SIGHUP)". d49c1ef's test sends the SIGHUP
// only once the worker's entry has run; docs/workers.md says the worker-killed-by-SIGHUP failure
// is gone. Fixed: the primary forks such a worker again; the roll case was added with the fix.
import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { CLI, plainNode, ROOT, tempFile } from './fixtures/cli.js'
import { freePort, freePorts } from './fixtures/ports.js'
import { workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

t.test('a SIGHUP to the process group as a worker is forked fails neither the first start nor a roll', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('group-sighup.yaml', workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] }))
  // its own process group (as a shell job, or a container's processes)
  const p = spawn(...plainNode([CLI, '--config', file]), { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { try { process.kill(-p.pid!, 'SIGKILL') } catch { /* gone */ } })
  let out = ''
  let sent = false
  const exited = new Promise<number | null>((r) => p.on('close', (code) => r(code)))
  const outcome = new Promise<string>((resolve) => {
    const grew = (c: Buffer): void => {
      out += c.toString()
      if (!sent && out.includes('"starting a worker"')) {
        sent = true
        process.kill(-p.pid!, 'SIGHUP') // pkill -HUP -g, a terminal's hangup, a reloader's group signal
      }
      if (out.includes('"tether primary: workers started"')) resolve('started')
      else if (out.includes('"a worker failed to start"')) resolve('failed')
    }
    p.stdout!.on('data', grew)
    p.stderr!.on('data', grew)
  })
  const got = await within(outcome, 60_000, 'the first start to end')
  t.equal(got, 'started', `the start completes (got: ${got}; ${out.match(/exited before it was ready \([A-Z]+\)/)?.[0] ?? ''})`)
  // Whether the signal finds a worker still in node's own start (killed, then forked again) or
  // past its preload's holder (ignored) depends on how soon this test reads the log line: on a
  // loaded host (CI beside other jobs) it came after the holder and nothing was killed. Either
  // way the start completes; a worker killed is forked again, said once for each (two at most).
  const killed = out.match(/"worker killed by a signal before it was ready \(one sent to the process group\); starting it again"/g)?.length ?? 0
  t.ok(killed <= 2, `each worker killed is forked again, said once (said ${killed} times)`)
  if (killed === 0) t.comment('the SIGHUP reached the workers after their holders: nothing to fork again this run')
  // a roll (a new listen port): the same signal as its first new worker is forked
  const rollFrom = out.length
  let rollSent = false
  p.stdout!.on('data', () => {
    const since = out.slice(rollFrom)
    if (!rollSent && /"config change needs new workers[^]*"starting a worker"/.test(since)) {
      rollSent = true
      process.kill(-p.pid!, 'SIGHUP')
    }
  })
  const next = await freePort()
  writeFileSync(file, workersYaml({ listen: next, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] }))
  process.kill(p.pid!, 'SIGHUP')
  await waitFor(() => /"workers replaced"|"replacing the workers failed/.test(out.slice(rollFrom)), 60_000, 'the roll to end')
  t.ok(rollSent, 'the group SIGHUP was sent as the roll forked')
  t.notMatch(out.slice(rollFrom), /replacing the workers failed/, 'the roll does not fail')
  t.match(out.slice(rollFrom), /"workers replaced"/, 'the roll completes')
  process.kill(p.pid!, 'SIGTERM')
  t.equal(await within(exited, 30_000, 'the primary to stop'), 0, 'then the primary stops with 0')
})
