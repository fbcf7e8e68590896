// Every `tether` command line the docs show in a shell block is one the command line parser
// takes: a reader who copies `npx tether drain app-1 --migrate --wait` from the README gets the
// drain, not a usage error. The lines are read as a shell would split them (quotes, `\`
// continuations, a `#` comment, the end at `|`, `>`, `;` or `&&`); `tether`, `npx tether`,
// `node [flags] dist/cli.js` and the image in `docker run ... tether` start one. Placeholders
// (`<key>`, `$POD_IP`) stay words: the parser takes any key or id. A test of the docs against
// src/cli-args.ts; what each command does is tested in test/cli*.test.ts.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from '../src/cli-args.js'
import { ROOT } from './fixtures/cli.js'
import { section, splitFences, trackedFiles } from './fixtures/markdown.js'

/** Fences whose body is shell: commands to copy (a `text` block is output or a synopsis). */
const SHELL = new Set(['sh', 'bash', 'shell', 'console'])

/** The start of a Tether command line, after which its arguments follow. */
const STARTS = [
  /^(?:\$ )?(?:[A-Z_][A-Z0-9_]*=[^\s'"]* )*(?:npx )?tether(?=\s|$)/, // tether ..., npx tether ..., X=y tether ...
  /^(?:\$ )?(?:[A-Z_][A-Z0-9_]*=[^\s'"]* )*node(?: --[\w-]+(?:=\S+)?)* dist\/cli\.js(?=\s|$)/, // node [flags] dist/cli.js ...
  /^docker run .*? tether(?=\s|$)/, // docker run [options] tether ... (the image's entry point is Tether)
]

/**
 * Splits the rest of a command line into words as sh does for plain arguments: quotes
 * removed ('...' and "..." kept whole), an unquoted `#` after a space starting a comment,
 * and the words ending at an operator (a pipe, a redirection such as `>` or `2>&1`, `;`, `&&`,
 * a background `&`). A placeholder in angle brackets (`<key>`, `<pid of the replica>`) is one
 * word, as the reader replaces it, not a redirection.
 * Example: `drain "$POD_IP:8000" --wait; sleep 5` -> [`drain`, `$POD_IP:8000`, `--wait`].
 */
export function shellWords(text: string): string[] {
  const words: string[] = []
  const re = /(\s*)(?:(<[a-z][^<>]*>)|(\d*[<>]+&?\d*|[;|&]+)|'([^']*)'|"((?:[^"\\]|\\.)*)"|([^\s'";|&<>]+))/y
  let word: string | null = null
  let m: RegExpExecArray | null
  while ((m = re.exec(text)) !== null && m[0] !== '') {
    const spaced = m[1] !== '' || m.index === 0
    if (spaced && word !== null) {
      words.push(word)
      word = null
    }
    if (m[3] !== undefined || (spaced && m[6]?.startsWith('#'))) break
    word = (word ?? '') + (m[2] ?? m[4] ?? m[5]?.replace(/\\(.)/g, '$1') ?? m[6]!)
  }
  if (word !== null) words.push(word)
  return words
}

/** The Tether command lines of a shell block: each with its line number and its argv. */
export function commandLines(body: string, firstLine: number): { line: number; text: string; argv: string[] }[] {
  const out: { line: number; text: string; argv: string[] }[] = []
  const lines = body.split('\n')
  for (let i = 0; i < lines.length; i++) {
    const start = i
    let text = lines[i]!
    while (text.endsWith('\\') && i + 1 < lines.length) text = `${text.slice(0, -1).trimEnd()} ${lines[++i]!.trim()}`
    // each simple command of the line: at its start, after a pipe or a list operator, or in $(...)
    for (const part of text.trim().split(/\s*(?:\|\|?|&&|;|\$\()\s*/)) {
      for (const startRe of STARTS) {
        const m = startRe.exec(part)
        if (m) out.push({ line: firstLine + 1 + start, text: part, argv: shellWords(part.slice(m[0].length)) })
      }
    }
  }
  return out
}

t.test('the shell reading of a command line: quotes, comments, operators, continuations', async (t) => {
  t.same(shellWords(' drain "$POD_IP:8000" --migrate --wait --timeout 5s; status=$?'), ['drain', '$POD_IP:8000', '--migrate', '--wait', '--timeout', '5s'])
  t.same(shellWords(' check proxy.yaml            # validate: every problem'), ['check', 'proxy.yaml'])
  t.same(shellWords(" import --manifests --image=a/b:1 current.yaml > tether.yaml"), ['import', '--manifests', '--image=a/b:1', 'current.yaml'])
  t.same(shellWords(` session 'a b' --json`), ['session', 'a b', '--json'])
  t.same(shellWords(' session <key> --json 2>&1'), ['session', '<key>', '--json'])
  t.same(shellWords(` --config=/etc/tether/"proxy.yaml"`), ['--config=/etc/tether/proxy.yaml'])
  t.same(commandLines('kubectl get cm x -o yaml | tether check -', 0).map((c) => c.argv), [['check', '-']])
  t.same(commandLines('docker run --rm -e TETHER_SECRET \\\n  tether check /etc/tether/proxy.yaml', 10), [
    { line: 11, text: 'docker run --rm -e TETHER_SECRET tether check /etc/tether/proxy.yaml', argv: ['check', '/etc/tether/proxy.yaml'] },
  ])
  t.same(commandLines('TETHER_SECRET=x npx tether --config proxy.yaml', 0).map((c) => c.argv), [['--config', 'proxy.yaml']])
  t.same(commandLines('node --min-semi-space-size=4 dist/cli.js --config p.yaml', 0).map((c) => c.argv), [['--config', 'p.yaml']])
  t.same(commandLines('kubectl -n shop rollout status deployment/tether\ndocker build -t tether .', 0), [], 'tether as a name is no command')
})

t.test('every tether command line in a shell block of a tracked Markdown file parses', async (t) => {
  let found = 0
  for (const file of trackedFiles(ROOT).filter((f) => f.endsWith('.md'))) {
    for (const fence of splitFences(readFileSync(join(ROOT, file), 'utf8')).fences) {
      if (!SHELL.has(fence.info)) continue
      for (const c of commandLines(fence.body, fence.line)) {
        found++
        const command = parseArgs(c.argv, {})
        const why = command.kind === 'usage-error' ? `: ${command.message}` : ''
        t.not(command.kind, 'usage-error', `${file}:${c.line} \`${c.text}\` parses${why}`)
      }
    }
  }
  t.ok(found >= 10, `command lines found and parsed: ${found}`)
})

t.test("the README's config walk-through sets every variable its proxy.yaml names before it checks it", async (t) => {
  // `tether check proxy.yaml` on the file as shown fails with "environment variable ... is not
  // set" unless the commands beside it set it first
  const part = section(readFileSync(join(ROOT, 'README.md'), 'utf8'), 'Put it in front of your app') ?? ''
  const { fences } = splitFences(part)
  const config = fences.find((f) => /^ya?ml$/.test(f.info))?.body ?? ''
  const commands = fences.find((f) => SHELL.has(f.info))?.body ?? ''
  const variables = [...config.matchAll(/\$\{([A-Z_][A-Z0-9_]*)\}/g)].map((m) => m[1]!)
  t.ok(variables.length > 0, `the config names variables: ${variables.join(', ')}`)
  const check = commands.search(/tether check /)
  t.ok(check > 0, 'the commands check the file')
  for (const name of variables) {
    const set = commands.search(new RegExp(`^(?:export )?${name}=`, 'm'))
    t.ok(set >= 0 && set < check, `${name} is set before \`tether check\``)
  }
})
