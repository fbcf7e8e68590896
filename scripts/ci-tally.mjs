// The closing line of .ci/run, which runs two test passes (`npm test` on the machine's Node,
// then scripts/test-node-image.sh on the Docker image's Node): "N passed, N failed" summing the
// closing lines both passes printed, and an exit code that fails if either pass did. A pass
// whose output does not end with its closing line (it crashed, was killed, stopped early), or
// that exited non-zero without counting a failure, counts one failure: the sum never hides one.
//   node scripts/ci-tally.mjs OUTPUT_FILE EXIT_CODE [OUTPUT_FILE EXIT_CODE ...]
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

const CLOSING = /^(\d+) passed, (\d+) failed$/

/**
 * One pass's tally from its stdout and exit code. Example: output ending "12 passed, 0 failed"
 * and code 0 -> { passed: 12, failed: 0 }; the same with code 1 -> { passed: 12, failed: 1 };
 * output ending "Killed" -> { passed: 0, failed: 1 }.
 * @param {string} output
 * @param {number} code
 * @returns {{ passed: number, failed: number }}
 */
export function passTally(output, code) {
  const last = output.split('\n').map((l) => l.trim()).filter((l) => l !== '').at(-1) ?? ''
  const m = CLOSING.exec(last)
  if (!m) return { passed: 0, failed: 1 }
  const passed = Number(m[1])
  const failed = Number(m[2])
  return { passed, failed: code !== 0 && failed === 0 ? 1 : failed }
}

/**
 * The sum over every pass, and whether the whole run passed (no failure counted: passTally
 * counts one for a pass that exited non-zero). Example: [{ "10 passed, 0 failed", 0 }, { "5 passed, 2 failed", 1 }] ->
 * { line: "15 passed, 2 failed", ok: false }.
 * @param {{ output: string, code: number }[]} passes
 * @returns {{ line: string, ok: boolean }}
 */
export function sumPasses(passes) {
  let passed = 0
  let failed = 0
  for (const p of passes) {
    const t = passTally(p.output, p.code)
    passed += t.passed
    failed += t.failed
  }
  if (passes.length === 0) failed = 1 // nothing ran: not a pass
  return { line: `${passed} passed, ${failed} failed`, ok: failed === 0 }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2)
  const passes = []
  for (let i = 0; i + 1 < args.length; i += 2) {
    let output = ''
    try { output = readFileSync(args[i], 'utf8') } catch { /* no output: counted as a failed pass */ }
    const code = /^\d+$/.test(args[i + 1]) ? Number(args[i + 1]) : 1
    passes.push({ output, code })
  }
  if (args.length === 0 || args.length % 2 !== 0) {
    console.error('usage: node scripts/ci-tally.mjs OUTPUT_FILE EXIT_CODE [OUTPUT_FILE EXIT_CODE ...]')
    passes.push({ output: '', code: 1 })
  }
  const { line, ok } = sumPasses(passes)
  console.log(line)
  process.exitCode = ok ? 0 : 1
}
