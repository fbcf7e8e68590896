// Review s60 r1: a module of Tether that does not load (a syntax error, a throw while it is
// evaluated: a broken install or build) used to be reported by Node with its file and line; the
// entry's one line ("tether: cannot load its modules: <message>") keeps the message only, which
// for a SyntaxError or an evaluation error names no file at all.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { appendFileSync, cpSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs'
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
    t.match(r.stderr, /secret-text\.js:\d+/, `stderr names the module and line: ${JSON.stringify(r.stderr)}`)
    t.equal(r.stderr.match(/^tether: cannot load its modules/gm)?.length, 1, 'led by one line of ours')
    rmSync(dir, { recursive: true, force: true })
  })
}

t.test('a module missing from dist/: one line naming it, exit 1 (no stack)', async (t) => {
  const dir = brokenInstall('secret-text.js', '')
  rmSync(join(dir, 'dist', 'secret-text.js'))
  const r = spawnSync(process.execPath, [join(dir, 'dist', 'cli.js'), '--version'], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } })
  t.equal(r.status, 1, 'exit 1')
  t.match(r.stderr, /^tether: cannot load its modules: Cannot find module '.*secret-text\.js' imported from .*\n$/, 'one line')
  t.equal(r.stderr.split('\n').length, 2, 'and nothing else')
  rmSync(dir, { recursive: true, force: true })
})
