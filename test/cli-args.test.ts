// The command line parser (src/cli-args.ts), in process: what each argv is parsed into, and each
// usage error's words. That the CLI prints a usage error with the help and exits 2 is tested once
// per kind through a real process in cli-errors.test.ts and cli-usage-errors.test.ts.
import t from 'tap'
import { parseArgs } from '../src/cli-args.js'

/** The usage error `argv` is answered with (fails the test when it parses). */
function usageError(argv: string[], env: Record<string, string> = {}): string {
  const cmd = parseArgs(argv, env)
  return cmd.kind === 'usage-error' ? cmd.message : `parsed as ${JSON.stringify(cmd)}`
}

t.test('an option that takes a value, given twice with two values, is refused naming both, or only the option when it may carry a secret (never the last taken silently)', async (t) => {
  const cases: [string[], string][] = [
    [['--config', 'a.yaml', '--config', 'b.yaml'], '--config is given twice ("a.yaml" and "b.yaml"): name one config file'],
    [['run', '-c', 'a.yaml', '--config=b.yaml'], '--config is given twice ("a.yaml" and "b.yaml"): name one config file'],
    [['check', 'a.yaml', '--config', 'b.yaml'], '--config is given twice ("a.yaml" and "b.yaml"): name one config file'],
    [['import', '--manifests', '--image', 'r/a:1', '--image=r/b:2', 'x.yaml'], '--image is given twice ("r/a:1" and "r/b:2"): name one image'],
    // an admin URL may carry a token (a query parameter, a user, a path) or a password: never shown either
    [['drain', 'app-1', '--admin', 'http://10.0.0.1:9901', '--admin=http://10.0.0.2:9901'], '--admin is given twice (with two values, not shown): name one admin API'],
    [['session', 'k', '--admin', 'http://tok3n@10.0.0.1:9901', '--admin', 'http://10.0.0.1:9901/?access_key=k3y'], '--admin is given twice (with two values, not shown): name one admin API'],
    [['drain', 'app-1', '--wait', '--timeout', '5s', '--timeout', '1m'], '--timeout is given twice ("5s" and "1m"): name one deadline'],
    // a token is never shown, not even in this error
    [['session', 'k', '--token', 'secret-1', '--token', 'secret-2'], '--token is given twice (with two values, not shown): name one token'],
  ]
  for (const [argv, message] of cases) t.equal(usageError(argv), message, argv.join(' '))
  // the same value twice overrides nothing (a wrapper script that adds it again): taken
  t.same(parseArgs(['--config', 'a.yaml', '-c', 'a.yaml'], {}), { kind: 'run', config: 'a.yaml', configFrom: 'argument' })
  // an option given once overrides the environment, as before
  t.same(parseArgs(['--config', 'a.yaml'], { TETHER_CONFIG: 'b.yaml' }), { kind: 'run', config: 'a.yaml', configFrom: 'argument' })
  const drain = parseArgs(['drain', 'app-1', '--admin', 'http://10.0.0.1:9901', '--token', 't'], { TETHER_ADMIN: 'http://127.0.0.1:1', TETHER_ADMIN_TOKEN: 'e' })
  t.same(drain, { kind: 'drain', admin: { url: 'http://10.0.0.1:9901', token: 't' }, id: 'app-1', migrate: false, wait: false, timeout: 300_000 })
})

t.test('an option accepted and then ignored is refused: --timeout of session, --image without --manifests; drain --timeout without --wait drains, with a warning', async (t) => {
  const cases: [string[], string][] = [
    [['session', 'k', '--timeout', '5s'], '--timeout is an option of tether drain (how long --wait waits), not of tether session'],
    [['session', 'k', '--timeout=5s'], '--timeout is an option of tether drain (how long --wait waits), not of tether session'],
    [['import', '--image', 'r/a:1', 'x.yaml'], '--image is the image of the Deployment --manifests prints: add --manifests (a proxy.yaml names no image)'],
  ]
  for (const [argv, message] of cases) t.equal(usageError(argv), message, argv.join(' '))
  t.same(parseArgs(['drain', 'app-1', '--timeout', '5s', '--wait'], {}), { kind: 'drain', admin: { url: 'http://127.0.0.1:9901', token: null }, id: 'app-1', migrate: false, wait: true, timeout: 5_000 })
  // a preStop hook's `drain <id> --timeout 30s` (--wait left out) must still drain: it does, and is told the timeout does nothing
  t.strictSame(parseArgs(['drain', 'app-1', '--timeout', '5s'], {}), {
    kind: 'drain', admin: { url: 'http://127.0.0.1:9901', token: null }, id: 'app-1', migrate: false, wait: false, timeout: 5_000,
    warning: '--timeout has no effect without --wait: the drain is ordered and not waited on (add --wait to wait for it)',
  })
  t.equal(usageError(['drain', 'app-1', '--timeout', 'soon']), usageError(['drain', 'app-1', '--wait', '--timeout', 'soon']), 'a bad duration is still refused')
  t.match(usageError(['drain', 'app-1', '--timeout', 'soon']), /^--timeout: /)
  t.same(parseArgs(['import', 'x.yaml', '--image', 'r/a:1', '--manifests'], {}), { kind: 'import', files: ['x.yaml'], manifests: true, image: 'r/a:1' })
})

t.test('"--" ends the options: a session key, upstream id or file that starts with "-" can be named', async (t) => {
  const admin = { url: 'http://127.0.0.1:9901', token: null }
  t.same(parseArgs(['session', '--json', '--', '-abc'], {}), { kind: 'session', admin, key: '-abc', json: true })
  t.same(parseArgs(['drain', '--wait', '--', '--odd'], {}), { kind: 'drain', admin, id: '--odd', migrate: false, wait: true, timeout: 300_000 })
  t.same(parseArgs(['check', '--', '-proxy.yaml'], {}), { kind: 'check', config: '-proxy.yaml', syntaxOnly: false })
  t.same(parseArgs(['check', '--syntax-only', '--', '--syntax-only'], {}), { kind: 'check', config: '--syntax-only', syntaxOnly: true })
  t.same(parseArgs(['check', '-', '--syntax-only'], {}), { kind: 'check', config: '-', syntaxOnly: true })
  t.same(parseArgs(['import', '--', '-', '-x.yaml'], {}), { kind: 'import', files: ['-', '-x.yaml'], manifests: false, image: undefined })
  // after "--" in run (which takes no argument), an option word is said to be an argument, never suggested as itself
  const after = (w: string): string => `"${w}" after "--" is an argument, not an option: put options before "--"`
  t.equal(usageError(['--', '--config', 'x.yaml']), after('--config'))
  t.equal(usageError(['run', '--', '--config=x.yaml']), after('--config=...'), 'a value written onto it is never shown (it may be a token)')
  t.equal(usageError(['run', '--', '--help']), after('--help'))
  t.equal(usageError(['--', '-c']), after('-c'))
  t.equal(usageError(['--', '--conifg']), after('--conifg'))
  // after "--" an option is a word: a second key, not --json
  t.equal(usageError(['session', 'k', '--', '--json']), 'session takes one session key: a second session key (word 4, 6 characters) was given')
})

t.test('usage errors name the bad input escaped (a control character in it as JSON writes it); a command after options is told to come first', async (t) => {
  t.equal(usageError(['fo\u0000o']), 'unknown argument (word 1, 4 characters) (commands: run, check, import, session, drain)')
  t.equal(usageError(['drain', 'a', 'b\u001b[31m']), 'drain takes one upstream id: a second upstream id (word 3, 6 characters) was given (drain each on its own)')
  t.equal(usageError(['--config', 'a.yaml', 'check']), 'unknown argument "check": a command comes first (tether check ...)')
  t.equal(usageError(['run', 'check', 'a.yaml']), 'unknown argument "check": a command comes first, and there is one: run')
})

t.test('-h, -v, --help or --version where an option takes its value is no request for help or the version: a usage error naming the option, as util.parseArgs (strict) refuses a value starting with "-"', async (t) => {
  const cases: [string[], string][] = [
    [['--config', '-h'], '--config needs a file path, and the word after it is the option -h'],
    // (a word of "-", a letter and more is named by its letter: a short option with a value attached, `-pS3CRET`, is not shown)
    [['--config', '-weird.yaml'], '--config needs a file path, and "-w..." after it is taken for an option (for a value that starts with "-", write --config=<file>)'],
    [['--config', '-x'], '--config needs a file path, and "-x" after it is taken for an option (for a value that starts with "-", write --config=-x)'],
    [['--config', '--', 'x.yaml'], '--config needs a file path, and the word after it is the option --'],
    [['run', '-c', '--version'], '-c needs a file path, and the word after it is the option --version'],
    [['check', '--config', '-v'], '--config needs a file path, and the word after it is the option -v'],
    [['import', '--manifests', '--image', '--help', 'x.yaml'], '--image needs an image reference, and the word after it is the option --help'],
    [['drain', 'app-1', '--admin', '-v'], '--admin needs a URL, and the word after it is the option -v'],
    // a token after a forgotten value is never shown, nor a misspelt --token's value
    [['drain', 'app-1', '--admin', '--token=S3CRET'], '--admin needs a URL, and the word after it is the option --token'],
    [['drain', 'app-1', '--wait', '--timeout', '--token=S3CRET'], '--timeout needs a duration, and the word after it is the option --token'],
    [['session', 'k', '--tokn=S3CRET'], 'unknown argument "--tokn=...", did you mean "--token"?'],
    [['drain', 'app-1', '--wait', '--timeout', '-5m'], '--timeout needs a duration, and "-5m" after it is taken for an option (a duration does not start with "-")'],
    [['drain', 'app-1', '--wait', '--timeout', '-h'], '--timeout needs a duration, and the word after it is the option -h'],
    [['session', 'k', '--admin', '--json'], '--admin needs a URL, and the word after it is the option --json'],
    // a token is never shown: not even a word that may be one
    [['session', 'k', '--token', '-h'], '--token needs a token, and the word after it is the option -h'],
    [['drain', 'app-1', '--token', '-secret'], '--token needs a token, and the word after it starts with "-" (for a token that starts with "-", write --token=<token>)'],
  ]
  for (const [argv, message] of cases) t.equal(usageError(argv), message, argv.join(' '))
  // written with "=", the value is taken whatever it starts with; "-" alone is a value (a file so named)
  t.same(parseArgs(['--config=-h'], {}), { kind: 'run', config: '-h', configFrom: 'argument' })
  t.same(parseArgs(['check', '--config', '-'], {}), { kind: 'check', config: '-', syntaxOnly: false })
  t.same(parseArgs(['session', 'k', '--token=-h'], {}), { kind: 'session', admin: { url: 'http://127.0.0.1:9901', token: '-h' }, key: 'k', json: false })
  // -h elsewhere still asks for help, a value before it or not
  t.same(parseArgs(['--config', 'a.yaml', '-h'], {}), { kind: 'help' })
  t.same(parseArgs(['drain', 'app-1', '--admin', 'http://127.0.0.1:1', '--version'], {}), { kind: 'version' })
  t.same(parseArgs(['import', '--image', 'r/a:1', '--help'], {}), { kind: 'help' })
})

t.test('an option given an empty value is the same usage error written either way, naming the option', async (t) => {
  const cases: [string[], string, string][] = [
    [['--config', ''], '--config needs a file path', '--config needs a file path (--config=<file>)'],
    [['import', '--manifests', 'x.yaml', '--image', ''], '--image needs an image reference', '--image needs an image reference (--image=<ref>)'],
    [['drain', 'app-1', '--admin', ''], '--admin needs a URL', '--admin needs a URL (--admin=<url>)'],
    [['session', 'k', '--token', ''], '--token needs a token', '--token needs a token (--token=<token>)'],
    [['drain', 'app-1', '--wait', '--timeout', ''], '--timeout needs a duration', '--timeout needs a duration (--timeout=<duration>)'],
  ]
  for (const [argv, separate, inline] of cases) {
    t.equal(usageError(argv), separate, argv.join(' '))
    const written = [...argv.slice(0, -2), `${argv.at(-2)!}=`]
    t.equal(usageError(written), inline, written.join(' '))
  }
  t.equal(usageError(['-c', '']), '-c needs a file path')
  // the empty --image= is said before --image is found to need --manifests
  t.equal(usageError(['import', 'x.yaml', '--image=']), '--image needs an image reference (--image=<ref>)')
  // an empty key or id is not taken for "none yet": a later word is not called a second
  t.equal(usageError(['session', '', 'k']), 'session needs a session key (an empty argument was given)')
  t.equal(usageError(['drain', '', 'app-1']), 'drain needs an upstream id (an empty argument was given)')
})

t.test('one config file spelt two ways is one value; a second file is still refused', async (t) => {
  const run = (config: string) => ({ kind: 'run', config, configFrom: 'argument' })
  t.same(parseArgs(['--config', 'a.yaml', '--config', './a.yaml'], {}), run('a.yaml'))
  t.same(parseArgs(['-c', 'conf/a.yaml', '--config=conf/.//a.yaml'], {}), run('conf/a.yaml'))
  // ".." is taken by the system after following a link (conf -> other/sub: conf/../a.yaml is
  // other/a.yaml): two names with it are two files unless spelt alike
  t.match(parseArgs(['-c', 'a.yaml', '--config=conf/../a.yaml'], {}), { kind: 'usage-error', message: /--config is given twice/ })
  t.match(parseArgs(['import', 'a.yaml', 'conf/../a.yaml'], {}), { kind: 'import', files: ['a.yaml', 'conf/../a.yaml'] })
  t.same(parseArgs(['--config', 'a.yaml', '--config', `${process.cwd()}/a.yaml`], {}), run('a.yaml'))
  t.same(parseArgs(['check', './a.yaml', '--config', 'a.yaml'], {}), { kind: 'check', config: './a.yaml', syntaxOnly: false })
  t.equal(usageError(['--config', 'a.yaml', '--config', './b.yaml']), '--config is given twice ("a.yaml" and "./b.yaml"): name one config file')
  t.equal(usageError(['--config', 'a.yaml', '--config', 'sub/a.yaml']), '--config is given twice ("a.yaml" and "sub/a.yaml"): name one config file')
  // import: one manifest file spelt two ways is named twice (its objects would be read twice)
  t.equal(usageError(['import', 'a.yaml', 'b.yaml', './a.yaml']), 'import: "./a.yaml" is named twice (also as "a.yaml")')
  t.equal(usageError(['import', 'a.yaml', 'b.yaml', 'a.yaml']), 'import: "a.yaml" is named twice')
})

t.test('one deadline or admin API written two ways is one value (5m and 300s, a URL with and without its trailing "/"); two values are still refused', async (t) => {
  const drain = (url: string, timeout: number) => ({ kind: 'drain', admin: { url, token: null }, id: 'app-1', migrate: false, wait: true, timeout })
  t.same(parseArgs(['drain', 'app-1', '--wait', '--timeout', '5m', '--timeout=300s'], {}), drain('http://127.0.0.1:9901', 300_000))
  t.same(parseArgs(['drain', 'app-1', '--wait', '--admin', 'http://10.0.0.1:9901', '--admin', 'http://10.0.0.1:9901/'], {}), drain('http://10.0.0.1:9901', 300_000))
  t.equal(usageError(['drain', 'app-1', '--wait', '--timeout', '5m', '--timeout', '301s']), '--timeout is given twice ("5m" and "301s"): name one deadline')
  // (a value that is no number is not shown: it may be a token given after the wrong option)
  t.equal(usageError(['drain', 'app-1', '--wait', '--timeout', '5m', '--timeout', 'soon']), '--timeout is given twice ("5m" and a value not shown): name one deadline')
  t.equal(usageError(['drain', 'app-1', '--wait', '--timeout', '5m', '--timeout', '10mins']), '--timeout is given twice ("5m" and "10mins"): name one deadline')
  t.equal(usageError(['session', 'k', '--admin', 'http://10.0.0.1:9901', '--admin', 'http://10.0.0.1:9902/']), '--admin is given twice (with two values, not shown): name one admin API')
})

// an option written before the command it belongs to is not blamed on `run`,
// which the user did not write (`tether --syntax-only check a.yaml` was told --syntax-only is
// an option of tether check, not of tether run)
t.test('an option written before its own command is not blamed on "run", which was never written', async (t) => {
  for (const argv of [['--syntax-only', 'check', 'a.yaml'], ['--json', 'session', 'k'], ['--migrate', 'drain', 'app-1']]) {
    const cmd = parseArgs(argv, {})
    t.equal(cmd.kind, 'usage-error', argv.join(' '))
    t.equal(cmd.kind === 'usage-error' ? cmd.message : '', `unknown argument "${argv[1]}": a command comes first (tether ${argv[1]} ...)`, argv.join(' '))
  }
})

t.test('a shortened option gets a "did you mean" naming the one it begins, a value given to an option that takes none says so; the existing messages stay', async (t) => {
  const cases: [string[], string][] = [
    // a prefix of an option (no option within an edit distance of 2): the option it begins
    [['check', '--syntax', 'a.yaml'], 'unknown argument "--syntax", did you mean "--syntax-only"?'],
    [['check', '--syn', 'a.yaml'], 'unknown argument "--syn", did you mean "--syntax-only"?'],
    [['check', '--syntax=x', 'a.yaml'], 'unknown argument "--syntax=...", did you mean "--syntax-only"?'],
    [['drain', 'app-1', '--mig'], 'unknown argument "--mig", did you mean "--migrate"?'],
    [['import', '--manif', 'a.yaml'], 'unknown argument "--manif", did you mean "--manifests"?'],
    // "--" and one letter is too short to mean one option
    [['--c', 'a.yaml'], 'unknown argument "--c"'],
    // an option that takes no value, given one
    [['check', '--syntax-only=yes', 'a.yaml'], '--syntax-only takes no value: write --syntax-only alone (a value was given after "=", not shown)'],
    [['session', 'k', '--json=1'], '--json takes no value: write --json alone (a value was given after "=", not shown)'],
    [['drain', 'app-1', '--wait=true'], '--wait takes no value: write --wait alone (a value was given after "=", not shown)'],
    // given with a value to another command: named as that command's option, as without one
    [['run', '--syntax-only=yes'], '--syntax-only is an option of tether check, not of tether run'],
    // unchanged (and the other messages in cli-usage-errors.test.ts and above)
    [['--conifg', 'a.yaml'], 'unknown argument "--conifg", did you mean "--config"?'],
    [['check', '--syntx-only', 'a.yaml'], 'unknown argument "--syntx-only", did you mean "--syntax-only"?'],
    [['--frobnicate'], 'unknown argument "--frobnicate"'],
  ]
  for (const [argv, message] of cases) t.equal(usageError(argv), message, argv.join(' '))
  t.same(parseArgs(['check', '--syntax-only', 'a.yaml'], {}), { kind: 'check', config: 'a.yaml', syntaxOnly: true })
})

t.test('harmless values stay shown: a compound duration, an address without a scheme (review s65 r1)', async (t) => {
  const expectedDuration = '--timeout: expected a duration like "500ms", "5s", "3h" or a number of seconds, got'
  t.equal(usageError(['drain', 'a', '--wait', '--timeout', '5m30s']), `${expectedDuration} "5m30s"`)
  t.equal(usageError(['drain', 'a', '--wait', '--timeout', '1h 30m']), `${expectedDuration} "1h 30m"`)
  // (not a hex token, whose letters are no units)
  t.equal(usageError(['drain', 'a', '--wait', '--timeout', '4f3a9b2c']), `${expectedDuration} a value of 8 characters that is none (not shown)`)
  for (const admin of ['127.0.0.1', 'localhost', ':9901', '[::1]']) {
    t.equal(usageError(['session', 'k', '--admin', admin]), `--admin: expected a URL like http://127.0.0.1:9901, got "${admin}"`, admin)
  }
  // (a name alone is not told from a token, a JWT with its dots)
  t.equal(usageError(['session', 'k', '--admin', 'eyJ.abc.def']), '--admin: expected a URL like http://127.0.0.1:9901, got a value of 11 characters that is no address (not shown: it may be a token)')
})
