// .ci/run's closing line: two test passes (`npm test`, then scripts/test-node-image.sh on the
// Docker image's Node), one "N passed, N failed" summing both, non-zero on any failure of
// either. scripts/ci-tally.mjs on fake outputs, then the real .ci/run in a scratch copy of the
// repository whose `npm` and test-node-image.sh are stand-ins printing fake passes (no network,
// no test run).
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { delimiter, join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { ROOT } from './fixtures/cli.js'

interface Pass { output: string; code: number }
interface Tally { passTally(output: string, code: number): { passed: number; failed: number }; sumPasses(passes: Pass[]): { line: string; ok: boolean } }
const { passTally, sumPasses } = (await import(pathToFileURL(join(ROOT, 'scripts', 'ci-tally.mjs')).href)) as Tally

/** A pass's stdout as the reporter ends it: file lines, totals, then the closing line. */
const out = (passed: number, failed: number): string =>
  `ok   [1/1] test/x.test.ts  ${passed} passed\n\nfiles: 1 (1 ok, 0 failed)  asserts: ${passed} passed, ${failed} failed\n${passed} passed, ${failed} failed\n`

t.test("one pass's tally is its closing line; a pass that failed without counting it, or ended without the line, counts one failure", async (t) => {
  const cases: [string, string, number, { passed: number; failed: number }][] = [
    ['passed', out(12, 0), 0, { passed: 12, failed: 0 }],
    ['failed', out(12, 3), 1, { passed: 12, failed: 3 }],
    ['trailing blank lines', `${out(4, 0)}\n\n`, 0, { passed: 4, failed: 0 }],
    ['exit code 1 with 0 failed (a build or type check failure after a count)', out(7, 0), 1, { passed: 7, failed: 1 }],
    ['killed before its closing line', 'ok   [1/9] test/x.test.ts  3 passed\nKilled\n', 137, { passed: 0, failed: 1 }],
    ['no output at all', '', 1, { passed: 0, failed: 1 }],
    ["a closing line that is not the last line does not count", `${out(5, 0)}something after it\n`, 0, { passed: 0, failed: 1 }],
    ['a download failure of test-node-image.sh', 'test-node-image: download of https://... failed\n0 passed, 1 failed\n', 1, { passed: 0, failed: 1 }],
  ]
  for (const [name, output, code, want] of cases) t.same(passTally(output, code), want, name)
})

t.test('the closing line sums both passes; the run fails if either does', async (t) => {
  t.same(sumPasses([{ output: out(1000, 0), code: 0 }, { output: out(900, 0), code: 0 }]), { line: '1900 passed, 0 failed', ok: true })
  t.same(sumPasses([{ output: out(1000, 2), code: 1 }, { output: out(900, 0), code: 0 }]), { line: '1900 passed, 2 failed', ok: false }, 'the first fails')
  t.same(sumPasses([{ output: out(1000, 0), code: 0 }, { output: out(900, 1), code: 1 }]), { line: '1900 passed, 1 failed', ok: false }, 'the second fails')
  t.same(sumPasses([{ output: out(1000, 0), code: 0 }, { output: '', code: 1 }]), { line: '1000 passed, 1 failed', ok: false }, 'the second stopped without output')
  t.same(sumPasses([]), { line: '0 passed, 1 failed', ok: false }, 'no pass at all is no success')
})

/** Run the real .ci/run in a scratch repository whose two passes print `node` and `image` and exit with their codes. */
async function ciRun(t: Test, node: Pass, image: Pass): Promise<{ stdout: string; code: number | null }> {
  const dir = mkdtempSync(join(tmpdir(), 'tether-ci-run-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (const sub of ['.ci', 'scripts', 'bin']) mkdirSync(join(dir, sub))
  copyFileSync(join(ROOT, '.ci', 'run'), join(dir, '.ci', 'run'))
  copyFileSync(join(ROOT, 'scripts', 'ci-tally.mjs'), join(dir, 'scripts', 'ci-tally.mjs'))
  writeFileSync(join(dir, 'node.out'), node.output)
  writeFileSync(join(dir, 'image.out'), image.output)
  // `npm ci` succeeds, `npm test` is the first pass; test-node-image.sh the second
  writeFileSync(join(dir, 'bin', 'npm'), `#!/usr/bin/env bash\ncase "$1" in ci) exit 0 ;; test) cat '${join(dir, 'node.out')}'; exit ${node.code} ;; esac\nexit 2\n`)
  chmodSync(join(dir, 'bin', 'npm'), 0o755)
  writeFileSync(join(dir, 'scripts', 'test-node-image.sh'), `cat '${join(dir, 'image.out')}'\nexit ${image.code}\n`)
  return new Promise((resolve, reject) => {
    const p = spawn('bash', [join(dir, '.ci', 'run')], {
      cwd: dir,
      env: { ...process.env, PATH: `${join(dir, 'bin')}${delimiter}${process.env['PATH'] ?? ''}` },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    p.stderr.resume()
    p.on('error', reject)
    p.on('close', (code) => resolve({ stdout, code }))
  })
}

const lastLine = (s: string): string => s.trimEnd().split('\n').at(-1) ?? ''

t.test('.ci/run prints both passes, then one closing line with their sum, and exits non-zero on a failure of either', async (t) => {
  const cases: [string, Pass, Pass, string, boolean][] = [
    ['both pass', { output: out(1500, 0), code: 0 }, { output: out(900, 0), code: 0 }, '2400 passed, 0 failed', true],
    ['npm test fails', { output: out(1498, 2), code: 1 }, { output: out(900, 0), code: 0 }, '2398 passed, 2 failed', false],
    ['the image pass fails', { output: out(1500, 0), code: 0 }, { output: out(899, 1), code: 1 }, '2399 passed, 1 failed', false],
    ["the image's Node could not be downloaded", { output: out(1500, 0), code: 0 }, { output: 'test-node-image: download of x failed\n0 passed, 1 failed\n', code: 1 }, '1500 passed, 1 failed', false],
    ['npm test killed before its closing line', { output: 'ok   [1/9] test/x.test.ts  3 passed\n', code: 137 }, { output: out(900, 0), code: 0 }, '900 passed, 1 failed', false],
  ]
  for (const [name, node, image, line, ok] of cases) {
    const { stdout, code } = await ciRun(t, node, image)
    t.equal(lastLine(stdout), line, `${name}: the closing line`)
    t.equal(code === 0, ok, `${name}: exit code ${code}`)
    t.ok(stdout.includes(node.output) && stdout.includes(image.output), `${name}: both passes' output is shown`)
  }
})
