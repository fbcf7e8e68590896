// bench/lib/procs.mjs freeze: the benchmark freezes the contestants that are not under load
// (SIGSTOP to each one's process group) and continues them after, so an idle proxy's own
// wake-ups do not land on the measured one's core. Checked on real child processes through
// the kernel's view of them (/proc/<pid>/stat state T = stopped).
import t from 'tap'
import { readFileSync } from 'node:fs'
// @ts-expect-error: plain ESM without types
import { freeze, startChild, stopAll } from '../bench/lib/procs.mjs'
import { waitFor } from './fixtures/wait.js'

interface Rec { pid: number; output: string; exited: { code: number | null; signal: string | null } | null }

const state = (pid: number): string => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[0]!

/** A child that counts on stdout every 10 ms and exits 0 on SIGTERM. */
function ticker(name: string): Rec {
  const script = "let n = 0; setInterval(() => process.stdout.write(`${n++}\\n`), 10); process.on('SIGTERM', () => process.exit(0))"
  return startChild(name, process.execPath, ['-e', script]) as Rec
}

const ticks = (rec: Rec): number => rec.output.split('\n').filter((l) => l !== '').length

t.test('frozen children stop running until thawed; the measured one runs on', async (t) => {
  const [a, b, measured] = [ticker('a'), ticker('b'), ticker('measured')]
  t.teardown(() => stopAll(2000))
  await waitFor(() => ticks(a) > 0 && ticks(b) > 0 && ticks(measured) > 0, 10_000, 'all three ticking')
  const thaw = freeze([a, b, null])
  await waitFor(() => state(a.pid) === 'T' && state(b.pid) === 'T', 5000, 'a and b stopped')
  // lines a and b wrote before they stopped may still wait in their pipes (a loaded host reads
  // them late): counted once the measured one's output shows this process reading again
  const settled = ticks(measured)
  await waitFor(() => ticks(measured) >= settled + 5, 5000, 'the measured one keeps ticking')
  const [na, nb, nm] = [ticks(a), ticks(b), ticks(measured)]
  await waitFor(() => ticks(measured) >= nm + 5, 5000, 'the measured one keeps ticking on')
  t.equal(state(a.pid), 'T', 'a still stopped')
  t.ok(ticks(a) <= na + 1 && ticks(b) <= nb + 1, 'the frozen ones printed nothing more (one line may have been in the pipe)')
  thaw()
  await waitFor(() => ticks(a) > na + 3 && ticks(b) > nb + 3, 5000, 'a and b tick again after thaw')
  t.not(state(a.pid), 'T')
})

t.test('stopAll ends a frozen child gracefully (SIGTERM acts once it is continued), not by SIGKILL', async (t) => {
  const a = ticker('frozen')
  await waitFor(() => ticks(a) > 0, 10_000, 'ticking')
  freeze([a])
  await waitFor(() => state(a.pid) === 'T', 5000, 'stopped')
  await stopAll(5000)
  t.same(a.exited, { code: 0, signal: null }, 'exit code 0 from its SIGTERM handler')
})
