// The tether command line, run as a real child process from dist/ (npm test builds first): --help,
// --version and usage errors; a URL's password masked wherever an error echoes it; a config that
// cannot be read; an exception nobody caught; TETHER_WORKER left set. Split from cli.test.ts, with
// cli-check.test.ts and cli-run.test.ts.
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import net from 'node:net'
import { spawn } from 'node:child_process'
import { CLI, ROOT, cliCommand, plainNode, runCli, tempFile } from './fixtures/cli.js'
import { spawnSync } from 'node:child_process'
import { parseArgs, USAGE } from '../src/cli-args.js'

const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version

// loaded before the CLI: once the command sends its request (node:http's diagnostics channel: the
// admin client is on node:http), a throw nobody catches, from an event handler, with a URL
// password in its message
const THROW_HOOK = `data:text/javascript,${encodeURIComponent(`import { subscribe } from 'node:diagnostics_channel'
subscribe('http.client.request.start', () => setImmediate(() => { throw new Error('stray throw from a test hook: redis://u:' + 'pw-in-hook' + '@h:6379\\n  on two lines') }))`)}`

t.test('--help and --version', async (t) => {
  const [help, v] = await Promise.all([runCli(['--help']), runCli(['--version'])])
  t.equal(help.code, 0)
  t.equal(help.stdout, USAGE)
  t.equal(v.code, 0)
  t.equal(v.stdout.trim(), `tether ${version}`)
})

t.test('an unknown argument exits 2 with usage', async (t) => {
  const r = await runCli(['--bogus'])
  t.equal(r.code, 2)
  t.equal(r.stderr, `tether: unknown argument "--bogus"\n\n${USAGE}`)
  t.equal(r.stdout, '')
})

// the parser's answers, in process (src/cli-args.ts): the process prints each as the one above
const usageLine = (args: string[]): string => {
  const cmd = parseArgs(args, {})
  return cmd.kind === 'usage-error' ? `tether: ${cmd.message}` : `parsed as ${cmd.kind}`
}

t.test('a mistyped command or option is answered with the one it is closest to', async (t) => {
  const cases: [string[], string][] = [
    [['chek', 'proxy.yaml'], 'unknown argument (word 1, 4 characters), did you mean "check"?'],
    [['--conifg', 'proxy.yaml'], 'unknown argument "--conifg", did you mean "--config"?'],
    [['run', '--confg=proxy.yaml'], 'unknown argument "--confg=...", did you mean "--config"?'], // (a value written onto an unknown option is never shown: it may be a token)
    [['import', '--manifest', 'a.yaml'], 'unknown argument "--manifest", did you mean "--manifests"?'],
    [['drain', 'app-1', '--migrat'], 'unknown argument "--migrat", did you mean "--migrate"?'],
    [['session', 'k', '--jsn'], 'unknown argument "--jsn", did you mean "--json"?'],
    [['--bogus'], 'unknown argument "--bogus"'],
  ]
  for (const [args, message] of cases) t.equal(usageLine(args), `tether: ${message}`, args.join(' '))
})

t.test('a config file given without --config is told how to run with it', async (t) => {
  for (const args of [['proxy.yaml'], ['run', 'k8s/proxy.yml']]) {
    const file = args.at(-1)
    t.equal(usageLine(args), `tether: unknown argument "${file}": to run with this file, write --config ${file} (to validate it: tether check ${file})`)
  }
})

t.test('run without --config in a directory without config/proxy.yaml: the line says the default was read, from where, and how to name a file', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-'))
  const run = (env: Record<string, string>): Promise<{ code: number | null; stderr: string }> => new Promise((resolve) => {
    const { TETHER_CONFIG: _, ...inherited } = process.env
    const p = spawn(...cliCommand([CLI]), { cwd: dir, env: { ...inherited, ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
    let stderr = ''
    p.stderr.on('data', (c) => (stderr += c))
    p.on('close', (code) => resolve({ code, stderr }))
  })
  const [byDefault, byEnv, named] = await Promise.all([run({}), run({ TETHER_CONFIG: 'nope.yaml' }), runCli(['--config', join(dir, 'nope.yaml')])])
  t.equal(byDefault.code, 1)
  t.equal(byDefault.stderr, `config/proxy.yaml: cannot read config: no such file or directory (ENOENT); the default file (no --config given, TETHER_CONFIG unset), read from ${dir}: pass --config <file>\n`)
  t.equal(byEnv.code, 1)
  t.equal(byEnv.stderr, 'nope.yaml: cannot read config: no such file or directory (ENOENT); the file TETHER_CONFIG names (--config <file> overrides it)\n')
  // named on the command line: the line as before, nothing to add
  t.equal(named.stderr, `${join(dir, 'nope.yaml')}: cannot read config: no such file or directory (ENOENT)\n`)
})

t.test('a URL with credentials echoed in an error reaches stderr with its password masked', async (t) => {
  // a Redis url pasted as an argument: the usage error names its place and length, not it
  // (and an admin URL with credentials: refused as a usage error that shows neither user nor password)
  const [usage, admin] = await Promise.all([runCli(['run', 'redis://u:pw@h:6379']), runCli(['session', 'k', '--admin', 'http://u:pw@127.0.0.1:1'])])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /unknown argument \(word 2, 19 characters\)/)
  t.notMatch(usage.stderr, /pw/)
  t.equal(admin.code, 2)
  t.match(admin.stderr, /--admin: a user or password in the URL is refused \(not shown\)/)
  t.notMatch(admin.stderr, /pw|u:|u@/)
})

t.test('check and run: a config file that cannot be read is told with a URL\'s password in its path or OS message masked', async (t) => {
  const cmds = ['check', '--config']
  const runs = await Promise.all(cmds.map((cmd) => runCli([cmd, '/nonexistent/redis://u:pw@h/proxy.yaml'])))
  for (const [i, cmd] of cmds.entries()) {
    const r = runs[i]!
    t.equal(r.code, 1, cmd)
    t.match(r.stderr, /\/nonexistent\/redis:\/\/u:\*\*\*@h\/proxy\.yaml/, `${cmd}: the path told, masked`)
    t.notMatch(r.stderr, /pw/, `${cmd}: no password`)
  }
})

t.test('check, run and import: a config or manifest that cannot be read (a directory) is one line naming the file, the reason and the files to name instead, no stack', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-'))
  const argvs = [['check', dir], ['--config', dir], ['run', '--config', dir]]
  const runs = await Promise.all(argvs.map((args) => runCli(args)))
  for (const [i, args] of argvs.entries()) {
    const r = runs[i]!
    t.equal(r.code, 1, args.join(' '))
    t.equal(r.stderr, `${dir}: cannot read config: illegal operation on a directory (EISDIR); a directory: name the YAML file in it (it holds none)\n`, args.join(' '))
  }
  // the config directory given for its file (a ConfigMap's mount point): the files in it, named
  writeFileSync(join(dir, 'proxy.yaml'), 'upstreams: []\n')
  writeFileSync(join(dir, 'README.txt'), '')
  writeFileSync(join(dir, 'canary.yml'), '')
  const [check, r] = await Promise.all([runCli(['check', dir]), runCli(['import', dir])])
  t.equal(check.stderr, `${dir}: cannot read config: illegal operation on a directory (EISDIR); a directory: name the YAML file in it (${join(dir, 'canary.yml')}, ${join(dir, 'proxy.yaml')})\n`)
  t.equal(r.code, 1, 'import')
  t.equal(r.stderr, `tether import: cannot read ${dir}: illegal operation on a directory (EISDIR); a directory: name the YAML files in it (${join(dir, 'canary.yml')}, ${join(dir, 'proxy.yaml')})\n`, 'import')
})

t.test('check and import: a file or directory name with control characters (ESC, U+202E) is escaped in what they print', async (t) => {
  const raw = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/
  const esc = (s: string): string => s.replaceAll('\u001b', '\\u001b').replaceAll('\u202e', '\\u202e')
  const ok = tempFile('p\u001b[31mred.yaml', 'upstreams:\n  - { id: a, url: "http://127.0.0.1:9001" }\n')
  const dir = mkdtempSync(join(tmpdir(), 'tether-test-'))
  writeFileSync(join(dir, 'x\u001b[2Jy.yaml'), '')
  const missing = join(dir, 'no\u202elmay.yaml')
  const [check, checkDir, importDir, importMissing] = await Promise.all([runCli(['check', ok]), runCli(['check', dir]), runCli(['import', dir]), runCli(['import', missing])])
  t.same([check.code, check.stdout], [0, `${esc(ok)}: ok (1 static upstream)\n`], 'check ok line')
  t.equal(checkDir.stderr, `${dir}: cannot read config: illegal operation on a directory (EISDIR); a directory: name the YAML file in it (${esc(join(dir, 'x\u001b[2Jy.yaml'))})\n`)
  t.equal(importDir.stderr, `tether import: cannot read ${dir}: illegal operation on a directory (EISDIR); a directory: name the YAML files in it (${esc(join(dir, 'x\u001b[2Jy.yaml'))})\n`)
  t.match(importMissing.stderr, `tether import: cannot read ${esc(missing)}: `)
  for (const r of [check, checkDir, importDir, importMissing]) t.notMatch((r.stdout + r.stderr).replaceAll('\n', ''), raw)
})

t.test('check and run: a gzip file given as the config is one line naming it and what it is, exit 1 (an invalid config), never its bytes', async (t) => {
  const { gzipSync } = await import('node:zlib')
  const file = tempFile('proxy.yaml.gz', '')
  writeFileSync(file, gzipSync('upstreams: []\n'))
  const line = `${file}: gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (gunzip -k ${file})\n`
  const [check, run] = await Promise.all([runCli(['check', file]), runCli(['--config', file])])
  t.same([check.code, check.stdout, check.stderr], [1, '', line], 'check')
  t.same([run.code, run.stdout, run.stderr], [1, '', line], 'run')
})

t.test('check: the decompression hint for a gzip file without the .gz suffix works when run as printed; a Latin-1 config is accepted', async (t) => {
  const { gzipSync } = await import('node:zlib')
  const text = 'upstreams:\n  - id: app-1\n    url: http://127.0.0.1:8081\n'
  const file = tempFile('proxy.yaml', '')
  writeFileSync(file, gzipSync(text))
  const refused = await runCli(['check', file])
  t.equal(refused.code, 1)
  const command = /decompress it first \((.*)\)\n$/.exec(refused.stderr)?.[1]
  t.match(command, /^gzip -dc /, refused.stderr)
  const run = spawnSync('/bin/sh', ['-c', command ?? 'false'], { encoding: 'utf8' })
  t.equal(run.status, 0, `${command} ran: ${run.stderr}`)
  const out = join(dirname(file), 'proxy.decompressed.yaml')
  t.equal(readFileSync(out, 'utf8'), text)
  // comments saved as Latin-1, 9 and more bytes that are not UTF-8: text, checked as before
  const latin1 = tempFile('latin1.yaml', '')
  writeFileSync(latin1, Buffer.from(`# Grüße an Müller, Jürgen und Sören: für Änderungen Bescheid geben\n${text}`, 'latin1'))
  const [decompressed, accepted] = await Promise.all([runCli(['check', out]), runCli(['check', latin1])])
  t.equal(decompressed.code, 0, decompressed.stderr)
  t.same([accepted.code, accepted.stderr], [0, ''], 'the Latin-1 file')
})

t.test('check: a syntax error on a line with a URL password keeps its caret under the column (the password masked one * per character)', async (t) => {
  const r = await runCli(['check', tempFile('proxy.yaml', 'upstreams: [ { id: a, url: "http://u:longpassword@h:1" }, x: [ }\n')])
  t.equal(r.code, 1)
  t.notMatch(r.stderr, /longpassword/)
  const lines = r.stderr.split('\n')
  const at = lines.findIndex((l) => l.startsWith('  1 | '))
  t.equal(lines[at], '  1 | upstreams: [ { id: a, url: "http://u:************@h:1" }, x: [ }')
  t.equal(lines[at]![lines[at + 1]!.indexOf('^')], '[', 'the caret under the [ that is not closed')
})

t.test('session and drain: an exception nobody caught is one masked line and exit 1, not a stack', async (t) => {
  // an admin API that never answers: the command waits, the hook's throw comes first
  const sockets = new Set<net.Socket>()
  const admin = net.createServer((s) => { sockets.add(s) })
  await new Promise<void>((resolve) => admin.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of sockets) s.destroy(); admin.close() })
  const url = `http://127.0.0.1:${(admin.address() as net.AddressInfo).port}`
  const argvs = [['session', 'k', '--admin', url], ['drain', 'a', '--admin', url]]
  const runs = await Promise.all(argvs.map((args) => runCli(args, {}, 15000, [`--import=${THROW_HOOK}`])))
  for (const [i, args] of argvs.entries()) {
    const r = runs[i]!
    t.equal(r.code, 1, args[0])
    t.equal(r.stderr, 'tether: uncaught exception (a bug in Tether or a library): stray throw from a test hook: redis://u:***@h:6379 on two lines\n', args[0])
  }
})

t.test('TETHER_WORKER set outside a primary (a value left in a shell): a one-line error and exit 1, never a wait for a primary', async (t) => {
  const [bad, orphan] = await Promise.all([runCli(['--config', 'config/proxy.yaml'], { TETHER_WORKER: '{"index":0}' }), runCli(['--config', 'config/proxy.yaml'], { TETHER_WORKER: '0' })])
  t.equal(bad.code, 1)
  t.match(bad.stderr, /TETHER_WORKER is set by Tether's primary for its workers .*: unset it/)
  t.equal(orphan.code, 1)
  t.match(orphan.stderr, /TETHER_WORKER is set, but this process was not started by a Tether primary: unset it/)
})

t.test("the test fixture's child processes: tap's loader is taken out of NODE_OPTIONS, a caller's NODE_OPTIONS is kept", async (t) => {
  // a preload that does not exist: the child fails only if the caller's option reached it
  const r = await runCli(['--version'], { NODE_OPTIONS: '--require=/nonexistent-h8-preload.cjs' })
  t.not(r.code, 0, 'the child fails to preload the missing module')
  t.match(r.stderr, /nonexistent-h8-preload/)
  const seen = (opts: string | undefined): string => {
    const [cmd, args] = plainNode(['-e', 'process.stdout.write(process.env.NODE_OPTIONS ?? "(unset)")'], opts)
    return spawnSync(cmd, args, { env: { ...process.env, NODE_OPTIONS: opts }, encoding: 'utf8' }).stdout
  }
  if (process.env['_TAPJS_PROCESSINFO_COVERAGE_'] !== '1') {
    t.equal(seen(`--max-old-space-size=200 ${process.env['NODE_OPTIONS'] ?? ''}`), '--max-old-space-size=200', "tap's loader dropped, the rest kept")
    t.equal(seen(`"--title=a b" ${process.env['NODE_OPTIONS'] ?? ''} --no-warnings`), '"--title=a b" --no-warnings', 'a quoted word kept whole')
    t.equal(seen(process.env['NODE_OPTIONS']), '(unset)', "only tap's loader: unset")
  }
})
