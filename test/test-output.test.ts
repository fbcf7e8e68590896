// What `npm test` prints: scripts/tap-summary-reporter.mjs run on recorded tap streams
// (test/fixtures/tap-streams/, one per case: pass, fail, crash, timeout, bail-out), and once
// for real: tap with the reporter on a tiny failing test file in a temp directory.
import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ROOT } from './fixtures/cli.js'

const REPORTER = join(ROOT, 'scripts', 'tap-summary-reporter.mjs')
const STREAMS = join(ROOT, 'test', 'fixtures', 'tap-streams')

interface ReporterStream extends NodeJS.ReadWriteStream { on(ev: string, fn: (...a: unknown[]) => void): this }
type ReporterClass = new (options?: { output?: 'summary' | 'tap' }) => ReporterStream
const Reporter = ((await import(pathToFileURL(REPORTER).href)) as { default: ReporterClass }).default

const stream = (name: string): string => readFileSync(join(STREAMS, `${name}.tap`), 'utf8')

/** Feed `tap` to a reporter in uneven chunks (as a pipe would) and collect what it prints. */
function report(tap: string, output: 'summary' | 'tap' = 'summary'): Promise<string> {
  return new Promise((resolve, reject) => {
    const r = new Reporter({ output })
    let out = ''
    r.on('data', (c) => (out += String(c)))
    r.on('end', () => resolve(out))
    r.on('error', reject)
    for (let i = 0; i < tap.length; i += 97) r.write(tap.slice(i, i + 97))
    r.end()
  })
}

const lastLine = (out: string): string => out.trimEnd().split('\n').at(-1) ?? ''
/** tap's own tally line "# { total: N, pass: N, fail: N, ... }" as numbers. */
function tally(tap: string): Record<string, number> {
  const m = /^# \{ (total: .*) \}$/m.exec(tap)
  if (!m) throw new Error('no tally in the stream')
  return Object.fromEntries(m[1]!.split(', ').map((kv) => { const [k, v] = kv.split(': '); return [k!, Number(v)] }))
}

const CASES = ['passing', 'failing', 'crash', 'timeout', 'bail'] as const

t.test('the last line is "N passed, N failed" from tap\'s tally, in both output modes', async (t) => {
  for (const name of CASES) {
    const tap = stream(name)
    const { pass = 0, fail = 0 } = tally(tap)
    for (const mode of ['summary', 'tap'] as const) {
      t.equal(lastLine(await report(tap, mode)), `${pass} passed, ${fail} failed`, `${name}, ${mode}`)
    }
  }
})

t.test('TETHER_TEST_OUTPUT=tap passes tap\'s stream through unchanged before the closing line', async (t) => {
  for (const name of CASES) {
    const tap = stream(name)
    const out = await report(tap, 'tap')
    t.equal(out.slice(0, tap.length), tap, name)
    t.equal(out.slice(tap.length).trim().split('\n').length, 1, `${name}: one line added`)
  }
})

t.test('a passing run prints one line per file, the skips and todos with reasons, and the totals', async (t) => {
  const out = await report(stream('passing'))
  t.match(out, /^ok {3}\[1\/2\] passing\/math\.test\.mjs {2}2 passed, 2 skipped, 2 todo {2}0\.0s$/m)
  t.match(out, /^ok {3}\[2\/2\] passing\/strings\.test\.mjs {2}2 passed {2}0\.0s$/m)
  t.match(out, /^skipped \(2\):\n {2}passing\/math\.test\.mjs > the slow path: needs a network\n/m)
  t.match(out, /a group with a todo assert and a skipped assert > big numbers: too slow here/)
  t.match(out, /^todo \(2\):\n {2}passing\/math\.test\.mjs > rounding half to even: not written yet\n/m)
  t.match(out, /a group with a todo assert and a skipped assert > negative zero is handled: issue 7/)
  t.match(out, /^files: 2 \(2 ok, 0 failed\) {2}asserts: 4 passed, 0 failed, 2 skipped, 2 todo {2}time: 11\.7s$/m)
  t.notMatch(out, /failure/, 'no failure section')
  t.notMatch(out, /^\s*(ok|not ok) \d+ - /m, 'no raw TAP')
  t.ok(out.split('\n').length < 20, 'short')
})

t.test('a failing assertion shows its file, test path, diff, location, source and the file\'s stdout', async (t) => {
  const out = await report(stream('failing'))
  t.match(out, /^ok {3}\[1\/2\] failing\/fine\.test\.mjs {2}1 passed/m)
  t.match(out, /^FAIL \[2\/2\] failing\/objects\.test\.mjs {2}1 passed, 3 failed {2}0\.3s {2}exit code 1$/m)
  t.match(out, /── 3 failures ─/)
  const first = out.slice(out.indexOf('1) '), out.indexOf('2) '))
  t.match(first, /^1\) failing\/objects\.test\.mjs\n {3}config merging > deep merge keeps both lists > merged object\n/)
  t.match(first, /^ {3}diff: \|\n {5}--- expected\n {5}\+\+\+ actual\n/m)
  t.match(first, /^ {5}- {4}3,\n {5}\+ {4}2,$/m)
  t.match(first, /^ {3}at: failing\/objects\.test\.mjs:6:7$/m)
  t.match(first, /^ {3}stack: \|\n {5}Test\.<anonymous> \(failing\/objects\.test\.mjs:6:7\)/m)
  t.match(first, /^ {3}source: \|\n[^]*t\.same\(\{ a: 1, b: \[1, 2\] \}/m)
  t.ok(first.indexOf('diff:') < first.indexOf('at:') && first.indexOf('at:') < first.indexOf('source:'), 'what differed first, where last')
  t.match(out, /^2\) failing\/objects\.test\.mjs\n {3}a thrown error fails the test > boom from the test body\n {3}tapCaught: returnedPromiseRejection\n/m)
  t.match(out, /^3\) failing\/objects\.test\.mjs\n {3}counts > two plus two\n {3}compare: ===\n {3}diff: \|/m)
  t.match(out, /stdout of failing\/objects\.test\.mjs \(2 lines\):\n {3}\| merging defaults\n {3}\| merged 2 keys\n/)
  t.notMatch(out, /stdio|externalID|--import=/, 'not how tap spawned the file')
  t.notMatch(out, /failing\/fine\.test\.mjs\n {3}/, 'nothing about the passing file')
  t.match(out, /^files: 2 \(1 ok, 1 failed\) {2}asserts: 2 passed, 3 failed, 0 skipped, 0 todo/m)
})

t.test('a test file whose process exits, is killed or throws while loading is reported as failed', async (t) => {
  const out = await report(stream('crash'))
  // all its tests passed, but the process set exit code 1
  t.match(out, /^FAIL \[1\/4\] crash\/exitcode\.test\.mjs {2}1 passed, 1 failed {2}0\.0s {2}exit code 1$/m)
  t.match(out, /^\d\) crash\/exitcode\.test\.mjs\n {3}the test file's process: exit code 1 after 1 passing assert\n/m)
  t.match(out, /stdout of crash\/exitcode\.test\.mjs \(1 line\):\n {3}\| teardown sets exit code 1\n/)
  // process.exit() in the middle of a test
  t.match(out, /^FAIL \[2\/4\] crash\/exits\.test\.mjs {2}1 passed, 1 failed/m)
  t.match(out, /^\d\) crash\/exits\.test\.mjs\n {3}the process exits in the middle > test unfinished\n/m)
  t.match(out, /\| about to exit with code 3/)
  // SIGKILL
  t.match(out, /^FAIL \[3\/4\] crash\/killed\.test\.mjs {2}1 passed, 1 failed {2}6\.7s {2}killed by SIGKILL$/m)
  t.match(out, /^\d\) crash\/killed\.test\.mjs\n {3}the test file's process: killed by SIGKILL after 1 passing assert\n/m)
  // a throw at the top level of the file
  t.match(out, /^\d\) crash\/load\.test\.mjs\n {3}crash while loading the file\n {3}tapCaught: unhandledRejection\n/m)
  t.match(out, /^files: 4 \(0 ok, 4 failed\) {2}asserts: 4 passed, 4 failed/m)
})

t.test('a timeout names the file, how it ended and the test that was still running', async (t) => {
  const out = await report(stream('timeout'))
  t.match(out, /^FAIL \[1\/2\] timeout\/hangs\.test\.mjs {2}1 passed, 1 failed {2}3\.0s {2}timed out \(killed by tap's timeout\)$/m)
  t.match(out, /^\d\) timeout\/hangs\.test\.mjs\n {3}waits for an event that never comes > timeout! \(still running when tap's timeout expired\)\n/m)
  t.match(out, /\| waiting for the upstream/)
  // tap's own top-level "timeout!" point belongs to the file that expired, not to the one before it
  t.match(out, /^ok {3}\[2\/2\] timeout\/quick\.test\.mjs {2}1 passed$/m)
  t.notMatch(out, /^\d\) timeout\/quick/m)
  t.match(out, /^files: 2 \(1 ok, 1 failed\) {2}asserts: 2 passed, 2 failed/m)
})

t.test('a timeout whose diagnostics were lost (the process was then killed) still says so', async (t) => {
  const tap = stream('timeout').replace(/(not ok 2 - timeout!\n) {10}---\n {10}signal: null\n {10}expired: TAP\n {10}\.\.\.\n/, '$1')
  t.not(tap, stream('timeout'), 'the fixture was edited')
  const out = await report(tap)
  t.match(out, /^\d\) timeout\/hangs\.test\.mjs\n {3}waits for an event that never comes > timeout! \(still running when tap's timeout expired\)\n/m)
})

t.test('a bail-out is said, with the failure that caused it', async (t) => {
  const out = await report(stream('bail'))
  t.match(out, /^Bail out! merged object$/m)
  t.match(out, /^1\) failing\/objects\.test\.mjs\n {3}config merging > deep merge keeps both lists > merged object\n/m)
  t.match(out, /^bailed out: merged object$/m)
})

t.test('a name with multi-byte characters split across chunks arrives whole', async (t) => {
  const tap = Buffer.from(stream('failing').replaceAll('merged object', 'merged ππ object'))
  const out = await new Promise<string>((resolve, reject) => {
    const r = new Reporter({ output: 'summary' })
    let text = ''
    r.on('data', (c) => (text += String(c)))
    r.on('end', () => resolve(text))
    r.on('error', reject)
    for (let i = 0; i < tap.length; i++) r.write(tap.subarray(i, i + 1)) // one byte at a time
    r.end()
  })
  t.match(out, /deep merge keeps both lists > merged ππ object\n/)
  t.equal(lastLine(out), '2 passed, 3 failed')
})

t.test('a stream cut short (tap itself died) says so and ends with at least one failure', async (t) => {
  const tap = stream('passing')
  const cut = tap.slice(0, tap.indexOf('# Subtest: passing/strings.test.mjs'))
  const out = await report(cut)
  t.match(out, /^tap did not print its final tally: the run stopped early$/m)
  t.equal(lastLine(out), '2 passed, 1 failed', 'the passes seen, and the missing tally as a failure')
  t.equal(lastLine(await report('')), '0 passed, 1 failed', 'no output at all')
})

t.test('tap with the reporter on a failing test file: the summary, the failure and tap\'s exit code', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-output-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  // its own project root for tap: no coverage (fast), tap and its plugins from our node_modules
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', tap: { 'disable-coverage': true } }))
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
  mkdirSync(join(dir, 'test'))
  writeFileSync(join(dir, 'test', 'widget.test.mjs'), [
    "import t from 'tap'",
    "t.test('widgets', async (t) => {",
    "  console.log('building 2 widgets')",
    "  t.equal(2, 2, 'two widgets')",
    "  t.equal('blue', 'red', 'the widget colour')",
    '})',
    '',
  ].join('\n'))
  // the run must not inherit this test's own tap child settings (TAP=1 forces raw TAP)
  const env: Record<string, string> = { TETHER_TEST_OUTPUT: 'summary' }
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(TAP|_TAPJS|NODE_OPTIONS$|NODE_V8_COVERAGE$|TS_NODE)/.test(k)) env[k] ??= v
  }
  const run = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
    const p = spawn(join(ROOT, 'node_modules', '.bin', 'tap'), [`--reporter=${REPORTER}`], { cwd: dir, env })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (c) => (stdout += c))
    p.stderr.on('data', (c) => (stderr += c))
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`tap did not finish in 90 s: ${stdout}${stderr}`)) }, 90_000)
    p.on('close', (code) => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
  t.equal(run.code, 1, 'tap\'s exit code for a failure')
  t.match(run.stdout, /^FAIL \[1\/1\] test\/widget\.test\.mjs {2}1 passed, 1 failed {2}[\d.]+s {2}exit code 1$/m)
  t.match(run.stdout, /^1\) test\/widget\.test\.mjs\n {3}widgets > the widget colour\n/m)
  t.match(run.stdout, /^ {3}diff: \|\n(?: {5}.*\n)* {5}-red\n {5}\+blue\n/m)
  t.match(run.stdout, /^ {3}at: test\/widget\.test\.mjs:5:5$/m)
  t.match(run.stdout, /stdout of test\/widget\.test\.mjs \(1 line\):\n {3}\| building 2 widgets\n/)
  t.notMatch(run.stdout, /^\s*not ok \d+/m, 'no raw TAP')
  t.equal(lastLine(run.stdout), '1 passed, 1 failed')
})
