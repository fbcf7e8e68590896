// bench/profile-summary.mjs on a small hand-made V8 profile: the self-time summary, the text
// flame graph (--tree) and the folded stacks (--folded) add up to the samples given.
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

const script = path.resolve(import.meta.dirname, '../bench/profile-summary.mjs')
const frame = (functionName: string, url = '', lineNumber = 0) => ({ functionName, url, lineNumber, columnNumber: 0, scriptId: '0' })

// (root) -> handle (dist/proxy/listener.js) -> dispatch (undici) -> writev (native)
//                                          \-> decide (dist/routing/router.js)
//        -> (idle)
const profile = {
  nodes: [
    { id: 1, callFrame: frame('(root)'), children: [2, 6] },
    { id: 2, callFrame: frame('handle', 'file:///x/dist/proxy/listener.js', 9), children: [3, 5] },
    { id: 3, callFrame: frame('dispatch', 'file:///x/node_modules/undici/lib/dispatcher/client.js', 99), children: [4] },
    { id: 4, callFrame: frame('writev'), children: [] },
    { id: 5, callFrame: frame('decide', 'file:///x/dist/routing/router.js', 4), children: [] },
    { id: 6, callFrame: frame('(idle)'), children: [] },
  ],
  startTime: 0,
  endTime: 10_000,
  // 6 ms in writev, 2 ms in decide, 1 ms in handle itself, 1 ms idle
  samples: [4, 4, 4, 4, 4, 4, 5, 5, 2, 6],
  timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
}

t.test('the call tree and the folded stacks account for every busy sample', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tether-prof-'))
  const file = path.join(dir, 'p.cpuprofile')
  const folded = path.join(dir, 'p.folded')
  writeFileSync(file, JSON.stringify(profile))
  const out = execFileSync(process.execPath, [script, file, '--tree', '5', '--folded', folded], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  const tree = out.split('\n').filter((l) => /^\s*\d+\.\d\s+\d+\.\d\s{2}/.test(l)).map((l) => l.trimEnd())
  t.same(tree, [
    '100.0  11.1  handle dist/proxy/listener.js:10',
    ' 66.7   0.0    dispatch node_modules/undici/lib/dispatcher/client.js:100',
    ' 66.7  66.7      writev',
    ' 22.2  22.2    decide dist/routing/router.js:5',
  ], 'busy time only (idle left out), children by inclusive share, self shares')
  t.match(out, /tether\n|\s22\.2\s+decide/, 'the summary is printed too')
  const lines = readFileSync(folded, 'utf8').trim().split('\n').sort()
  t.same(lines, [
    'handle dist/proxy/listener.js:10 1000',
    'handle dist/proxy/listener.js:10;decide dist/routing/router.js:5 2000',
    'handle dist/proxy/listener.js:10;dispatch node_modules/undici/lib/dispatcher/client.js:100;writev 6000',
  ], 'one line per stack, microseconds')
})

t.test('a bad --tree value is refused with the usage line', async (t) => {
  t.throws(() => execFileSync(process.execPath, [script, 'x.cpuprofile', '--tree', 'zero'], { stdio: ['ignore', 'pipe', 'pipe'] }), /usage: node bench\/profile-summary.mjs/)
})

t.test('a gap far above the sampling interval is time the process did not run (frozen by the bench), not busy time', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'tether-prof-'))
  const file = path.join(dir, 'p.cpuprofile')
  // the same samples, with the process stopped for 5 s before the third writev sample
  const frozen = { ...profile, endTime: 15_000, timeDeltas: profile.timeDeltas.map((d, i) => (i === 2 ? d + 5_000_000 : d)) }
  writeFileSync(file, JSON.stringify(frozen))
  const out = JSON.parse(execFileSync(process.execPath, [script, file, '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })) as { busySeconds: number; stoppedSeconds: number; top: { name: string; us: number }[] }
  t.equal(out.stoppedSeconds, 5.001, 'the stretch is counted as stopped')
  t.equal(out.busySeconds, 0.008, 'busy time has the other samples only')
  t.equal(out.top.find((f) => f.name === 'writev')?.us, 5000, 'and the frame the stretch ended on is not charged with it')
  const text = execFileSync(process.execPath, [script, file], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  t.match(text, /5\.0 s stopped \(frozen by BENCH_ISOLATE\)/, 'the summary says so')
})
