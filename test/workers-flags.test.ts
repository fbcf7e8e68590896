// The node options of serving processes. Workers: the primary's own plus V8 flags that keep a
// worker small (a capped young generation that keeps its size when idle), each only when the
// operator did not set that flag on node's command line or in NODE_OPTIONS, and MALLOC_ARENA_MAX=1
// unless the operator's environment sets it; checked on the real CLI's workers (/proc/<pid>). And that this node's V8 does what the flags say.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { tempFile } from './fixtures/cli.js'
import { startPrimary, workerPids } from './fixtures/primary-process.js'
import { freePort } from './fixtures/ports.js'
import { waitFor } from './fixtures/wait.js'
import { SERVING_ENV, SERVING_V8_FLAGS, WORKER_V8_FLAGS, workerEnv, workerExecArgv } from '../src/workers/worker-flags.js'

t.test("a worker gets the primary's node options plus each V8 flag the operator did not set", async (t) => {
  const flags = ['--max-semi-space-size=4']
  const cases: [string, readonly string[], string | undefined, readonly string[]][] = [
    ['nothing set: the flag is added', [], undefined, flags],
    ["the primary's options come first, kept as they are", ['--enable-source-maps', '--import=x'], '', ['--enable-source-maps', '--import=x', ...flags]],
    ['set on the command line: not added', ['--max-semi-space-size=16'], undefined, ['--max-semi-space-size=16']],
    ['set in NODE_OPTIONS: not added (the worker inherits it)', [], '--trace-warnings  --max-semi-space-size=8', []],
    ['spelt with underscores: the same flag', [], '--max_semi_space_size=8', []],
    ['double-quoted in NODE_OPTIONS (as node reads it): the same flag', [], '"--max-semi-space-size=8" "--import=file:///a b.mjs"', []],
    ['another flag with a similar name: still added', [], '--max-old-space-size=512 --semi-space-growth-factor=2', flags],
  ]
  for (const [name, execArgv, nodeOptions, want] of cases) t.same(workerExecArgv(execArgv, nodeOptions, flags), want, name)
  t.same(workerExecArgv([], undefined), [...WORKER_V8_FLAGS], 'the defaults')
  t.same(workerExecArgv([...SERVING_V8_FLAGS], undefined), [...SERVING_V8_FLAGS, '--max-semi-space-size=4'],
    "a primary started as the image starts it: its minimum stands, ours is not added twice")
})

t.test("a worker's environment gets each serving variable the operator did not set", async (t) => {
  t.same(SERVING_ENV, { MALLOC_ARENA_MAX: '1' }, "glibc's malloc in one arena")
  t.same(workerEnv({}), { MALLOC_ARENA_MAX: '1' }, 'nothing set: added')
  t.same(workerEnv({ PATH: '/bin', MALLOC_ARENA_MAX: '4' }), {}, "the operator's MALLOC_ARENA_MAX: not added (the worker inherits it)")
  t.same(workerEnv({ MALLOC_ARENA_MAX: '' }), {}, 'set empty: left to glibc as the operator set it')
  t.same(workerEnv({ GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2' }), {}, 'set as a glibc tunable: not added')
  t.same(workerEnv({ GLIBC_TUNABLES: 'glibc.malloc.tcache_count=0' }), { MALLOC_ARENA_MAX: '1' }, 'another tunable: added')
})

/** The size of V8's new space (MB) in a fresh node started with `flags`. */
function newSpaceMb(flags: readonly string[]): number {
  const script = "process.stdout.write(String(require('v8').getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size / 1048576))"
  const r = spawnSync(process.execPath, [...flags, '-e', script], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
  return Number(r.stdout)
}

t.test('this node honours the flags: the young generation starts at the minimum they set, a worker\'s also at most its cap', async (t) => {
  // without flags V8 usually starts at 1 MB (it may grow during start-up on a busy machine: seen 4)
  t.comment(`without flags: ${newSpaceMb([])} MB`)
  t.ok(newSpaceMb(SERVING_V8_FLAGS) >= 4, `a single process: ${SERVING_V8_FLAGS.join(' ')}: at least 4 MB`)
  t.equal(newSpaceMb(WORKER_V8_FLAGS), 4, `a worker: ${WORKER_V8_FLAGS.join(' ')}`)
  t.equal(newSpaceMb(workerExecArgv([...SERVING_V8_FLAGS], undefined)), 4, "a worker of a primary started with the image's flags")
  t.equal(newSpaceMb(workerExecArgv(['--min-semi-space-size=16'], undefined)), 4, 'a primary started with a larger minimum: V8 lowers it to the workers\' cap')
})

/** A worker's command line, as the kernel shows it. */
const cmdline = (pid: number): string[] => readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((a) => a !== '')
const environ = (pid: number): string[] => readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')

for (const [name, env, expect] of [
  ['the workers run with the V8 flags', {}, 'ours'],
  ["an operator's NODE_OPTIONS flag and MALLOC_ARENA_MAX reach the workers and are not overridden", { NODE_OPTIONS: '--max-semi-space-size=8', MALLOC_ARENA_MAX: '2' }, 'theirs'],
] as const) {
  t.test(name, async (t) => {
    const [port, admin] = [await freePort(), await freePort()]
    const file = tempFile('proxy.yaml', [
      `listen: { host: 127.0.0.1, port: ${port} }`, `admin: { listen: { host: 127.0.0.1, port: ${admin} } }`,
      'workers: 2', 'log: { level: info, access: false }', 'upstreams: [{ id: a, url: "http://127.0.0.1:9" }]', '',
    ].join('\n'))
    const { proc } = await startPrimary(t, file, env)
    await waitFor(() => workerPids(proc).length === 2, 10_000, 'two workers')
    for (const pid of workerPids(proc)) {
      const args = cmdline(pid)
      const arenas = environ(pid).filter((e) => e.startsWith('MALLOC_ARENA_MAX='))
      if (expect === 'ours') {
        t.ok(WORKER_V8_FLAGS.every((f) => args.includes(f)), `worker ${pid} runs with ${WORKER_V8_FLAGS.join(' ')}`)
        t.same(arenas, ['MALLOC_ARENA_MAX=1'], `worker ${pid} starts with MALLOC_ARENA_MAX=1`)
      } else {
        t.same(arenas, ['MALLOC_ARENA_MAX=2'], `worker ${pid} starts with the operator's MALLOC_ARENA_MAX`)
        t.notOk(args.some((a) => a.startsWith('--max-semi-space-size')), `worker ${pid}: no flag of ours on its command line`)
        // (a test runner may add its own options to NODE_OPTIONS, quoting each)
        t.match(environ(pid).find((e) => e.startsWith('NODE_OPTIONS=')), /--max-semi-space-size=8/, `worker ${pid} inherits NODE_OPTIONS`)
      }
    }
    proc.kill('SIGTERM')
    await new Promise((resolve) => proc.once('exit', resolve))
  })
}
