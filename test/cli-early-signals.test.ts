// SIGTERM and SIGHUP at the earliest moment Tether's own code runs: the real CLI (dist/cli.js),
// each process sending itself the signal the moment its entry module has been evaluated
// (test/fixtures/entry-signal.mjs), before the rest of Tether has loaded. `tether run` holds it
// and applies it once started (a stop: graceful, exit 0; a reload: the process runs on), where
// it used to end by Node's default (killed by the signal, nothing logged), for the 0.1-0.6 s its
// entry's static imports took to load (as PID 1, in the container image, where a signal has no
// default action, it was lost instead: checked in a PID namespace of its own, where `unshare`
// can make one). `tether check` still ends at a SIGTERM as any command-line tool does. The
// entry's static imports are pinned: a module loaded before the holders are in place widens the
// window again.
import t, { type Test } from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { plainNode, ROOT, tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { workersYaml } from './fixtures/primary-process.js'
import { startUpstream } from './fixtures/upstream.js'
import { within } from './fixtures/wait.js'

const ENTRY_SIGNAL = join(ROOT, 'test', 'fixtures', 'entry-signal.mjs')

interface Child {
  readonly proc: ChildProcess
  /** stdout and stderr so far. */
  out(): string
  /** Resolves with how the process ended. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  /** Resolves once `text` is in the output (rejects when the process exits first, or after `ms`). */
  said(text: string, ms?: number): Promise<void>
}

/**
 * `tether <args>` through entry-signal.mjs, sending itself `signal` (in the primary, or in each
 * worker); `wrap`: the command it runs under (`unshare --pid --fork`).
 */
function spawnEntry(t: Test, args: readonly string[], signal: NodeJS.Signals, where: 'primary' | 'workers' = 'primary', wrap: readonly string[] = []): Child {
  const env: NodeJS.ProcessEnv = { ...process.env, TETHER_TEST_EARLY_SIGNAL: signal, TETHER_TEST_EARLY_SIGNAL_IN: where }
  const [command, words] = plainNode([ENTRY_SIGNAL, ...args], env['NODE_OPTIONS'])
  const proc = wrap.length === 0
    ? spawn(command, words, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    : spawn(wrap[0]!, [...wrap.slice(1), command, ...words], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const waits = new Set<() => void>()
  const grew = (c: Buffer): void => {
    out += c.toString()
    for (const w of [...waits]) w()
  }
  proc.stdout!.on('data', grew)
  proc.stderr!.on('data', grew)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.on('close', (code, sig) => resolve({ code, signal: sig })))
  t.teardown(() => { if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL') })
  const said = (text: string, ms = 60_000): Promise<void> => within(new Promise<void>((resolve, reject) => {
    const check = (): void => {
      if (!out.includes(text)) return
      waits.delete(check)
      resolve()
    }
    waits.add(check)
    check()
    void exited.then(({ code, signal: sig }) => {
      check()
      if (waits.delete(check)) reject(new Error(`exited (${sig ?? `code ${code}`}) before saying ${text}; its output:\n${out}`))
    })
  }), ms, `the output to say ${text}`)
  return { proc, out: () => out, exited, said }
}

/** The figures entry-signal.mjs wrote (when the holders came, when the signal was sent), as test comments. */
function figures(c: Child): void {
  for (const line of c.out().split('\n')) if (line.startsWith('entry-signal: ')) process.stderr.write(`# ${line}\n`)
}

const ATTEMPTS = 3

t.test('run: a SIGTERM as soon as the entry module has run is a graceful stop once started (exit 0), never a death by the signal', async (t) => {
  const file = tempFile('early-sigterm.yaml', 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n')
  for (let i = 1; i <= ATTEMPTS; i++) {
    const c = spawnEntry(t, ['run', '--config', file], 'SIGTERM')
    const exit = await within(c.exited, 60_000, 'Tether to exit')
    figures(c)
    t.same(exit, { code: 0, signal: null }, `attempt ${i}: a graceful stop (exit 0), not killed by SIGTERM`)
    t.match(c.out(), /"tether listening".*\n.*"signal":"SIGTERM".*"signal received"/, `attempt ${i}: started, then logged the stop`)
  }
})

t.test('run: a SIGHUP as soon as the entry module has run is a reload once started; Tether runs on', async (t) => {
  const file = tempFile('early-sighup.yaml', 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n')
  for (let i = 1; i <= ATTEMPTS; i++) {
    const c = spawnEntry(t, ['run', '--config', file], 'SIGHUP')
    await c.said('"SIGHUP: reloading the config"')
    figures(c)
    t.same([c.proc.exitCode, c.proc.signalCode], [null, null], `attempt ${i}: still running after the reload`)
    t.match(c.out(), /"tether listening".*\n.*"SIGHUP: reloading the config"/, `attempt ${i}: reloaded once started`)
    c.proc.kill('SIGTERM')
    t.same(await within(c.exited, 30_000, 'Tether to stop'), { code: 0, signal: null }, `attempt ${i}: then stops gracefully`)
  }
})

// In the container image node is PID 1 (the Dockerfile's ENTRYPOINT), to which the kernel
// applies no default action: a SIGTERM before the handlers were in place was not fatal there
// but ignored, and lost: the pod ran on until killed at the end of its grace period.
const pidNamespace = spawnSync('unshare', ['--pid', '--fork', 'true']).status === 0

t.test('run as PID 1 (a container without an init): a SIGTERM as soon as the entry module has run is a graceful stop, not lost', { skip: pidNamespace ? false : 'unshare --pid cannot run here (needs root or user namespaces)' }, async (t) => {
  const file = tempFile('early-pid1.yaml', 'listen: { host: 127.0.0.1, port: 0 }\nadmin: { listen: { host: 127.0.0.1, port: 0 } }\nupstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n')
  const c = spawnEntry(t, ['run', '--config', file], 'SIGTERM', 'primary', ['unshare', '--pid', '--fork', '--kill-child'])
  // (the deadline is what fails the old entry: its SIGTERM was ignored, Tether ran on)
  const exit = await within(c.exited, 30_000, 'Tether to exit after its SIGTERM')
  figures(c)
  t.same(exit, { code: 0, signal: null }, 'a graceful stop (exit 0)')
  t.match(c.out(), /"tether listening".*\n.*"signal":"SIGTERM".*"signal received"/, 'started, then logged the stop')
})

t.test('workers: a SIGTERM at the primary\'s entry stops it gracefully; a SIGHUP at each worker\'s entry does not end the start', async (t) => {
  const app = await startUpstream('app-0')
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('early-workers.yaml', workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] }))
  const primary = spawnEntry(t, ['run', '--config', file], 'SIGTERM')
  const stopped = await within(primary.exited, 60_000, 'the primary to exit')
  figures(primary)
  t.same(stopped, { code: 0, signal: null }, 'the primary: a graceful stop (exit 0), not killed by SIGTERM')
  t.match(primary.out(), /"signal":"SIGTERM".*"signal received: stopping the workers"/, 'the primary logged the stop')
  // a SIGHUP to the whole group (pkill -HUP, a terminal's hangup) reaches the workers too: one
  // killed by it during the first start failed that start, and the primary exited 1
  const workers = spawnEntry(t, ['run', '--config', file], 'SIGHUP', 'workers')
  await workers.said('"tether primary: workers started"')
  figures(workers)
  t.equal((workers.out().match(/entry-signal: worker \d+: entry evaluated/g) ?? []).length, 2, 'both workers sent themselves SIGHUP')
  t.notMatch(workers.out(), /"worker died|"a worker failed to start"/, 'no worker died of it')
  workers.proc.kill('SIGTERM')
  t.same(await within(workers.exited, 60_000, 'the primary to stop'), { code: 0, signal: null }, 'then the primary stops gracefully')
})

t.test('check: a SIGTERM as soon as the entry module has run ends it, as any command-line tool (killed by the signal)', async (t) => {
  const file = tempFile('early-check.yaml', 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n')
  const c = spawnEntry(t, ['check', file], 'SIGTERM')
  t.same(await within(c.exited, 30_000, 'check to end'), { code: null, signal: 'SIGTERM' }, 'killed by SIGTERM')
  t.notMatch(c.out(), /: ok/, 'not carried on to its answer')
})

t.test('the entry module statically imports early-signals.js only, which imports nothing', async (t) => {
  // ES module imports are all loaded and evaluated before the module's body: each one here would
  // be loaded while a signal still ends the process
  const imports = (file: string): string[] => [...readFileSync(join(ROOT, 'src', file), 'utf8').matchAll(/^\s*import\s[^(]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm)].map((m) => m[1] ?? m[2]!)
  t.same(imports('cli.ts'), ['./early-signals.js'], 'src/cli.ts')
  t.same(imports('early-signals.ts'), [], 'src/early-signals.ts')
})
