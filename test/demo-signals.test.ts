// `npm start` as a user or a supervisor runs it: a real npm process, and one signal sent to
// that pid alone (not to its process group, as a terminal's Ctrl-C would). Whatever the
// signal, every process under npm (the demo, Tether, the three replicas) must be gone. The
// demo itself killed with SIGKILL cannot stop anything: its children stop by themselves.
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { ROOT } from './fixtures/cli.js'
import { waitFor } from './fixtures/wait.js'
import { demoPorts, descendants, gone, isFree, printedPids, spawnDemo } from './fixtures/demo-process.js'

/** Starts `npm start` on free ports; resolves once the demo printed its instructions. */
async function npmStart(t: Test) {
  const ports = await demoPorts()
  const npm = spawnDemo('npm', ['start'], ports)
  t.teardown(() => {
    npm.teardown()
    // the demo's children have their own process groups: kill what a failed test left
    for (const pid of tree.keys()) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
  })
  const tree = new Map<number, { ppid: number; cmdline: string }>()
  await npm.line(/^Tether's access log follows/, 'the demo to start', 60_000)
  for (const [pid, cmd] of descendants(npm.proc.pid!)) tree.set(pid, cmd)
  return { npm, ports, tree }
}

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  t.test(`${signal} to the npm start process stops the demo, Tether and every replica`, async (t) => {
    const { npm, ports, tree } = await npmStart(t)
    const pids = printedPids(npm.lines)
    t.same([...pids.keys()], ['tether', 'app-0', 'app-1', 'app-2'])
    for (const [name, pid] of pids) t.ok(tree.has(pid), `${name} (pid ${pid}) runs under npm`)
    // npm's child is the demo itself (`exec node ...`), not a shell that would swallow the signal
    const direct = [...tree.values()].filter((p) => p.ppid === npm.proc.pid)
    t.same(direct.map((p) => p.cmdline.replace(/^\S*node /, 'node ')), ['node examples/demo.mjs'], 'npm runs the demo with no shell in between')
    t.equal(tree.size, 5, 'the demo, Tether and three replicas')

    npm.proc.kill(signal)
    t.same(await gone([npm.proc.pid!, ...tree.keys()]), [], 'every process is gone')
    await npm.exited
    t.match(npm.lines.join('\n'), /\nstopped\.$/m, 'the demo stopped them in order')
    for (const p of [ports.DEMO_PORT, ports.DEMO_BASE_PORT]) t.ok(await isFree(Number(p)), `port ${p} released`)
  })
}

t.test('npm killed with SIGKILL: the orphaned demo notices and stops everything', async (t) => {
  const { npm, tree } = await npmStart(t)
  npm.proc.kill('SIGKILL')
  t.same(await gone(tree.keys()), [], 'every process is gone')
  await npm.line(/^demo: the process that started the demo is gone$/, 'the reason')
})

t.test('the demo itself killed with SIGKILL: Tether and the replicas stop by themselves and free their ports', async (t) => {
  const ports = await demoPorts()
  const demo = spawnDemo(process.execPath, [join(ROOT, 'examples', 'demo.mjs')], ports)
  const tree = new Map<number, { ppid: number; cmdline: string }>()
  t.teardown(() => {
    demo.teardown()
    for (const pid of tree.keys()) try { process.kill(pid, 'SIGKILL') } catch { /* gone */ }
  })
  await demo.line(/^Tether's access log follows/, 'the demo to start', 60_000)
  for (const [pid, cmd] of descendants(demo.proc.pid!)) tree.set(pid, cmd)
  t.equal(tree.size, 4, 'Tether and three replicas')
  demo.proc.kill('SIGKILL')
  t.same(await gone(tree.keys()), [], 'every child of the demo is gone')
  // a closed port is announced by no event: poll it, with a deadline
  const all = [ports.DEMO_PORT, ports.DEMO_ADMIN_PORT, ...[0, 1, 2].map((i) => String(Number(ports.DEMO_BASE_PORT) + i))]
  await waitFor(async () => (await Promise.all(all.map((p) => isFree(Number(p))))).every(Boolean), 10_000, 'every demo port to be free')
  t.pass('ports released: ' + all.join(', '))
})
