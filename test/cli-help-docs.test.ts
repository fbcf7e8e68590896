// `tether --help` and the docs say the same: docs/configuration.md holds a copy of the help
// that must equal what the built CLI prints, and every option the command line parser accepts
// is in the help or in the lines under it that name what the help leaves out. A test of the docs
// against dist/cli.js (npm test builds it first); the parser itself is tested in test/cli*.test.ts.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { ROOT, runCli } from './fixtures/cli.js'
import { section, splitFences } from './fixtures/markdown.js'

const DOC = 'docs/configuration.md'
const TITLE = 'The `tether` command'
const doc = section(readFileSync(join(ROOT, DOC), 'utf8'), TITLE) ?? ''
// the parser (src/cli-args.ts); cli-commands.ts runs what it parsed
const source = readFileSync(join(ROOT, 'src', 'cli-args.ts'), 'utf8')

/** The options (`--config`, `-c`) named in a text, without a value after `=`. */
function options(text: string): Set<string> {
  return new Set([...text.matchAll(/(?<![\w-])(--?[a-z][a-z-]*)/g)].map((m) => m[1]!))
}

t.test(`${DOC} holds a copy of \`tether --help\`, equal to what the CLI prints`, async (t) => {
  const help = await runCli(['--help'])
  t.equal(help.code, 0, 'tether --help exits 0')
  const fence = splitFences(doc).fences.find((f) => f.info === 'text')
  t.ok(fence, `${DOC}'s section "${TITLE}" has a text block`)
  t.equal(`${fence?.body ?? ''}\n`, help.stdout, 'the block is the help, line for line')
})

t.test('every option the parser accepts is in the help or in the paragraph under it, and they name no other', async (t) => {
  const help = (await runCli(['--help'])).stdout
  // the parser compares arguments with string literals: '--config', '-c', '--image=' ...
  const accepted = new Set([...source.matchAll(/'(--?[a-z][a-z-]*)=?'/g)].map((m) => m[1]!))
  t.ok(accepted.size >= 12, `options found in src/cli-args.ts: ${[...accepted].join(' ')}`)
  // the paragraph under the help that names what it leaves out
  const extra = /^Also accepted[\s\S]*?(?=\n\n)/m.exec(doc)?.[0] ?? ''
  t.ok(extra, `${DOC}'s "${TITLE}" has the paragraph "Also accepted ..." under the help`)
  const documented = options(extra)
  for (const o of accepted) t.ok(options(help).has(o) || documented.has(o), `${o} is in the help or in ${DOC}'s "${TITLE}"`)
  for (const o of options(help)) t.ok(accepted.has(o), `the help's ${o} is accepted by src/cli-args.ts`)
  for (const o of documented) t.ok(accepted.has(o), `${DOC}'s ${o} is accepted by src/cli-args.ts`)
  // the subcommands too: each `tether <word>` the parser knows is documented
  const commands = new Set([...source.matchAll(/args\[0\] === '([a-z]+)'/g)].map((m) => m[1]!))
  t.ok(commands.size >= 4, `subcommands found in src/cli-args.ts: ${[...commands].join(' ')}`)
  for (const c of commands) t.match(doc, new RegExp(`\`tether ${c}\\b|^  tether ${c}\\b`, 'm'), `tether ${c} is in ${DOC}'s "${TITLE}"`)
})
