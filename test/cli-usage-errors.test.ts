// Usage errors a new user meets: what is wrong and what to write instead (a command spelt as
// another tool's, a second file or id, an empty --config=, the other admin command's option, a
// manifest named twice, an admin address where nothing listens). The parser's answers are
// checked in process (src/cli-args.ts); two run as a real CLI process, for what the process
// adds: the "tether: " line, the help after it and exit 2, and the admin client's exit 1.
// Split from cli-errors.test.ts to keep each file quick on a loaded host.
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { parseArgs, USAGE } from '../src/cli-args.js'
import { freePort, runCli } from './fixtures/cli.js'

/** The line the CLI prints for `args` (its usage error), or what it parsed them as. */
function usageLine(args: string[], env: Record<string, string> = {}): string {
  const cmd = parseArgs(args, env)
  return cmd.kind === 'usage-error' ? `tether: ${cmd.message}` : `parsed as ${cmd.kind}`
}

t.test('usage errors a new user meets say what is wrong and what to write instead', async (t) => {
  const cases: [string[], string][] = [
    [['help'], 'unknown argument "help", did you mean "--help"?'],
    [['version'], 'unknown argument "version", did you mean "--version"?'],
    [['-V'], 'unknown argument "-V", did you mean "--version"?'],
    [['frobnicate'], 'unknown argument (word 1, 10 characters) (commands: run, check, import, session, drain)'],
    [['check', '--config='], '--config needs a file path (--config=<file>)'],
    [['--config', ''], '--config needs a file path'],
    [['check', ''], 'check needs a config file (an empty argument was given)'],
    [['check', 'a.yaml', 'b.yaml'], 'check takes one config file: a second config file (word 3, 6 characters) was given (check each on its own)'],
    [['drain', 'app-1', 'app-2'], 'drain takes one upstream id: a second upstream id (word 3, 5 characters) was given (drain each on its own)'],
    [['session', 'k', 'k2'], 'session takes one session key: a second session key (word 3, 2 characters) was given'],
    [['session', 'k', '--migrate'], '--migrate is an option of tether drain, not of tether session'],
    [['drain', 'app-1', '--json'], '--json is an option of tether session, not of tether drain'],
    // check's --syntax-only anywhere else, and an admin command's option given to run (until
    // 2026-12-05 `run --json` was an unknown argument)
    [['run', '--syntax-only'], '--syntax-only is an option of tether check, not of tether run'],
    [['--syntax-only', 'proxy.yaml'], '--syntax-only is an option of tether check, not of tether run'],
    [['import', '--syntax-only', 'a.yaml'], '--syntax-only is an option of tether check, not of tether import'],
    [['session', 'k', '--syntax-only'], '--syntax-only is an option of tether check, not of tether session'],
    [['drain', 'app-1', '--syntax-only'], '--syntax-only is an option of tether check, not of tether drain'],
    [['run', '--json'], '--json is an option of tether session, not of tether run'],
    [['check', '--config', '--syntax-only'], '--config needs a file path, and the word after it is the option --syntax-only'],
    [['import', 'a.yaml', 'b.yaml', 'a.yaml'], 'import: "a.yaml" is named twice'],
    [['import', '-', '-'], 'import: stdin (-) is named twice'],
    [['import', ''], 'import: a manifest file argument is empty'],
  ]
  for (const [args, message] of cases) t.equal(usageLine(args), `tether: ${message}`, args.join(' '))
  // the admin address from the environment: named as such
  t.equal(usageLine(['drain', 'app-1'], { TETHER_ADMIN: '127.0.0.1:9901' }), 'tether: TETHER_ADMIN: expected a URL like http://127.0.0.1:9901, got "127.0.0.1:9901" (--admin <url> overrides it)')
  t.equal(usageLine(['drain', 'app-1', '--admin', '127.0.0.1:9901'], { TETHER_ADMIN: 'http://127.0.0.1:9901' }), 'tether: --admin: expected a URL like http://127.0.0.1:9901, got "127.0.0.1:9901"')
  // a value that is no URL but may hold a credential (a user or password before an @, a query's
  // token) is not echoed: `http//u:pw@h` escapes the masking of scheme://user:password@
  t.equal(usageLine(['drain', 'app-1', '--admin', 'http//u:pw@10.0.0.1:9901']), 'tether: --admin: expected a URL like http://127.0.0.1:9901, got a value with an "@" (not shown: it may hold a credential)')
  t.equal(usageLine(['session', 'k'], { TETHER_ADMIN: '10.0.0.1:9901/?token=t0k' }), 'tether: TETHER_ADMIN: expected a URL like http://127.0.0.1:9901, got "10.0.0.1:9901" and more (not shown: it may hold a credential) (--admin <url> overrides it)')
  t.equal(usageLine(['session', 'k', '--admin', 'ftp://10.0.0.1:21/t0k#x']), 'tether: --admin: expected a URL like http://127.0.0.1:9901, got "ftp://10.0.0.1:21" and more (not shown: it may hold a credential)')
  // a user or password in the admin URL: node:http would send it as Basic credentials in clear
  // (fetch refused such a URL); refused without showing it (review r4, s59)
  const userinfo = 'a user or password in the URL is refused (not shown): the admin API takes a bearer token (--token <token> or TETHER_ADMIN_TOKEN), and they would be sent in clear as Basic credentials'
  t.equal(usageLine(['drain', 'app-1', '--admin', 'http://ops:S3CRET@127.0.0.1:9901']), `tether: --admin: ${userinfo}`)
  t.equal(usageLine(['session', 'k', '--admin=https://ops@admin.internal:9901/']), `tether: --admin: ${userinfo}`)
  t.equal(usageLine(['session', 'k'], { TETHER_ADMIN: 'http://:S3CRET@127.0.0.1:9901' }), `tether: TETHER_ADMIN: ${userinfo}`)
  t.equal(usageLine(['drain', 'app-1', '--admin', 'http://127.0.0.1:9901/a@b']), 'parsed as drain', 'an "@" in the path is no user')
})

// TETHER_CONFIG set and empty is refused as --config '' is: a usage error naming it, exit 2
// (until 2026-12-05 it was read as a file named "", exit 1: `: cannot read config: ... (ENOENT)`).
// "-" (stdin) is check's only: run reads its file again on SIGHUP and changes, so `--config -`
// and TETHER_CONFIG=- are usage errors (until 2026-12-05 they looked for a file named "-").
t.test('an empty TETHER_CONFIG and stdin ("-") for run are usage errors naming what was given; check takes "-" for stdin', async (t) => {
  const stdin = 'run reads its config file again on SIGHUP and on changes, and stdin cannot be read again: name a file (stdin is for tether check -; a file named "-" is ./-)'
  t.equal(usageLine([], { TETHER_CONFIG: '' }), 'tether: TETHER_CONFIG is empty: set it to a config file, or unset it for the default config/proxy.yaml (--config <file> overrides it)')
  t.equal(usageLine(['run'], { TETHER_CONFIG: '' }), usageLine([], { TETHER_CONFIG: '' }))
  t.equal(usageLine(['--config', ''], { TETHER_CONFIG: 'a.yaml' }), 'tether: --config needs a file path', '--config empty: said as before')
  t.same(parseArgs(['--config', 'a.yaml'], { TETHER_CONFIG: '' }), { kind: 'run', config: 'a.yaml', configFrom: 'argument' }, 'an argument overrides it, as any TETHER_CONFIG')
  t.equal(usageLine(['--config', '-']), `tether: --config -: ${stdin}`)
  t.equal(usageLine(['run', '-c', '-']), `tether: --config -: ${stdin}`)
  t.equal(usageLine(['--config=-']), `tether: --config -: ${stdin}`)
  t.equal(usageLine([], { TETHER_CONFIG: '-' }), `tether: TETHER_CONFIG=-: ${stdin}`)
  t.same(parseArgs(['--config', './-'], {}), { kind: 'run', config: './-', configFrom: 'argument' }, 'a file named "-"')
  t.same(parseArgs(['check', '-'], {}), { kind: 'check', config: '-', syntaxOnly: false })
  t.same(parseArgs(['check', '--config', '-'], { TETHER_CONFIG: '' }), { kind: 'check', config: '-', syntaxOnly: false })
  t.equal(usageLine(['check', '-', '-']), 'tether: check takes one config file: a second config file (word 3, 1 character) was given (check each on its own)')
  const empty = await runCli([], { TETHER_CONFIG: '' })
  t.same([empty.code, empty.stdout, empty.stderr], [2, '', `tether: TETHER_CONFIG is empty: set it to a config file, or unset it for the default config/proxy.yaml (--config <file> overrides it)\n\n${USAGE}`])
})

// Whitespace alone is an empty value too (`TETHER_CONFIG=' '`, a manifest's `value: " "`): until
// 2026-12-05 TETHER_CONFIG=' ' was read as a file named " " (exit 1, `  : cannot read config`),
// TETHER_ADMIN=' ' was quoted as a URL it is not, and a blank TETHER_ADMIN_TOKEN sent
// `Authorization: Bearer ` with nothing after it.
t.test('an environment variable the CLI reads that holds only whitespace is refused as an empty one', async (t) => {
  for (const blank of [' ', '\t', '  \n']) {
    t.equal(usageLine([], { TETHER_CONFIG: blank }), usageLine([], { TETHER_CONFIG: '' }), `TETHER_CONFIG=${JSON.stringify(blank)}`)
    t.equal(usageLine(['drain', 'a'], { TETHER_ADMIN: blank }), 'tether: TETHER_ADMIN is empty: set it to the admin API\'s URL, or unset it for the default http://127.0.0.1:9901 (--admin <url> overrides it)', `TETHER_ADMIN=${JSON.stringify(blank)}`)
    t.equal(usageLine(['session', 'k'], { TETHER_ADMIN_TOKEN: blank }), 'tether: TETHER_ADMIN_TOKEN is empty: set it to the admin API\'s token, or unset it (--token <token> overrides it)', `TETHER_ADMIN_TOKEN=${JSON.stringify(blank)}`)
  }
  t.equal(usageLine(['drain', 'a'], { TETHER_ADMIN: '' }), usageLine(['drain', 'a'], { TETHER_ADMIN: ' ' }), 'TETHER_ADMIN empty: the same line')
  t.equal(usageLine(['session', 'k'], { TETHER_ADMIN_TOKEN: '' }), usageLine(['session', 'k'], { TETHER_ADMIN_TOKEN: ' ' }), 'TETHER_ADMIN_TOKEN empty: the same line')
  // an option overrides a blank variable, as it overrides any
  t.same(parseArgs(['--config', 'a.yaml'], { TETHER_CONFIG: ' ' }), { kind: 'run', config: 'a.yaml', configFrom: 'argument' })
  t.match(parseArgs(['session', 'k', '--admin', 'http://10.0.0.1:9901', '--token', 't'], { TETHER_ADMIN: ' ', TETHER_ADMIN_TOKEN: ' ' }), { kind: 'session', admin: { url: 'http://10.0.0.1:9901', token: 't' } })
  // check names its file: TETHER_CONFIG is not read
  t.same(parseArgs(['check', 'a.yaml'], { TETHER_CONFIG: ' ' }), { kind: 'check', config: 'a.yaml', syntaxOnly: false })
  const blank = await runCli([], { TETHER_CONFIG: ' ' })
  t.same([blank.code, blank.stdout, blank.stderr.split('\n')[0]], [2, '', usageLine([], { TETHER_CONFIG: '' })], 'as a process: exit 2, the one line (then the help)')
})

t.test('an option value of only whitespace is refused as an empty one, as a blank variable is', async (t) => {
  const options: [string[], string][] = [
    [['--config'], '--config needs a file path'],
    [['check', '--config'], '--config needs a file path'],
    [['import', 'a.yaml', '--manifests', '--image'], '--image needs an image reference'],
    [['drain', 'a', '--admin'], '--admin needs a URL'],
    [['session', 'k', '--token'], '--token needs a token'],
  ]
  for (const [args, want] of options) {
    for (const blank of [' ', '\t', '  \n']) {
      t.equal(usageLine([...args, blank]), `tether: ${want}`, `${args.join(' ')} ${JSON.stringify(blank)}`)
      const name = args.at(-1)!
      t.equal(usageLine([...args.slice(0, -1), `${name}=${blank}`]), usageLine([...args.slice(0, -1), `${name}=`]), `${name}=${JSON.stringify(blank)}: as ${name}=`)
    }
  }
  const blank = await runCli(['session', 'k', '--token', ' '])
  t.same([blank.code, blank.stderr.split('\n')[0]], [2, 'tether: --token needs a token'], 'as a process: exit 2, the one line (then the help)')
})

t.test('as a process: a usage error is its line, then the help, exit 2; an admin address where nothing listens is asked about, exit 1', async (t) => {
  const closed = await freePort()
  const [usage, refused] = await Promise.all([runCli(['help']), runCli(['drain', 'app-1', '--admin', `http://127.0.0.1:${closed}`])])
  t.same([usage.code, usage.stdout, usage.stderr], [2, '', `tether: unknown argument "help", did you mean "--help"?\n\n${USAGE}`])
  t.equal(refused.code, 1)
  t.equal(refused.stderr, `tether drain: cannot reach the admin API at http://127.0.0.1:${closed}: ECONNREFUSED (is Tether running with admin.listen at this address? --admin or TETHER_ADMIN names another)\n`)
})

t.test("as a process: drain <id> --timeout 30s without --wait (a preStop hook's) orders the drain, exit 0, with a one-line warning", async (t) => {
  const seen: string[] = []
  const server = http.createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ id: 'app-1', draining: true, migrate: false }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const r = await runCli(['drain', 'app-1', '--timeout', '30s', '--admin', `http://127.0.0.1:${(server.address() as AddressInfo).port}`])
  t.equal(r.code, 0, r.stderr)
  t.same(seen, ['POST /upstreams/app-1/drain'], 'the drain was ordered')
  t.equal(r.stderr, 'tether drain: warning: --timeout has no effect without --wait: the drain is ordered and not waited on (add --wait to wait for it)\n')
})

t.test('as a process: -h as --config\'s value and an empty --image= are usage errors (exit 2, no help on stdout, nothing converted)', async (t) => {
  const [help, image] = await Promise.all([runCli(['--config', '-h']), runCli(['import', '--manifests', '--image=', 'x.yaml'])])
  t.same([help.code, help.stdout, help.stderr], [2, '', `tether: --config needs a file path, and the word after it is the option -h\n\n${USAGE}`])
  t.same([image.code, image.stdout, image.stderr], [2, '', `tether: --image needs an image reference (--image=<ref>)\n\n${USAGE}`])
})
