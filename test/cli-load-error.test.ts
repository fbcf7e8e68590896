// Review s60 r1: a module of Tether that does not load (a syntax error, a throw while it is
// evaluated: a broken install or build) used to be reported by Node with its file and line; the
// entry's one line ("tether: cannot load its modules: <message>") keeps the message only, which
// for a SyntaxError or an evaluation error names no file at all.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { appendFileSync, cpSync, mkdtempSync, symlinkSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT } from './fixtures/cli.js'

/** A copy of dist/ (with package.json and node_modules) where `file` ends with `code`. */
function brokenInstall(file: string, code: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'tether-broken-'))
  cpSync(join(ROOT, 'dist'), join(dir, 'dist'), { recursive: true })
  cpSync(join(ROOT, 'package.json'), join(dir, 'package.json'))
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'))
  appendFileSync(join(dir, 'dist', file), `\n${code}\n`)
  return dir
}

for (const [what, code] of [['a syntax error', 'export const broken = = 1'], ['a throw at evaluation', 'throw new Error("boom at load")']] as const) {
  t.test(`${what} in a module the commands load: the error names the file`, async (t) => {
    const dir = brokenInstall('secret-text.js', code)
    const r = spawnSync(process.execPath, [join(dir, 'dist', 'cli.js'), '--version'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
    t.equal(r.status, 1, 'exit 1')
    t.match(r.stderr, /secret-text\.js/, `stderr names the module: ${JSON.stringify(r.stderr)}`)
  })
}
