// The command line as words: argv (and the environment's defaults) parsed into one Command, or a
// usage error that says what is wrong and what to write instead; and the help text. Pure: no
// I/O, no process (cli.ts runs the command; only a file name is resolved against the working
// directory, to tell two spellings of one file), so every usage error is tested in process.
import { resolve } from 'node:path'
import { didYouMean, escapeControls, nearest } from './config/index.js'
import { parseDuration } from './config/duration.js'
import type { AdminTarget } from './admin/admin-client.js'

/** What `tether --help` prints (docs/configuration.md holds a copy, kept equal by a test). */
export const USAGE = `Usage:
  tether [run] [--config <file>]
                             run the proxy (default file: $TETHER_CONFIG or config/proxy.yaml);
                             -c <file> and --config=<file> are the same option
  tether check [--syntax-only] <file>
                             validate a config file; exit 0 when valid, 1 when not
                             (also: tether check --config <file>; "-" reads stdin);
                             --syntax-only: without reading the files it names (PEM
                             files, kubeconfig), for CI off the machine that runs Tether
  tether import [--manifests] [--image <ref>] <file.yaml>...
                             read Kubernetes manifests (ingress-nginx Ingress, Service with
                             ClientIP affinity, Gateway API HTTPRoute) and print a proxy.yaml
                             that reproduces their stickiness; --manifests prints the Tether
                             Deployment, Service, RBAC and ConfigMap instead. What was not
                             converted is listed in the output and on stderr.
  tether session <key> [--json] [--admin URL] [--token T]
                             where is this user: upstream, epoch, last move, checkpoint;
                             <key> as the access log's session field shows it, or raw
  tether drain <id> [--migrate] [--wait [--timeout 5m]] [--admin URL] [--token T]
                             drain an upstream (--migrate: its users move at their next
                             request after an idle gap); --wait returns once no session
                             remains or the timeout passed (exit 0: a preStop hook)
                             --admin defaults to $TETHER_ADMIN or http://127.0.0.1:9901,
                             --token to $TETHER_ADMIN_TOKEN
  tether --help, -h          show this help
  tether --version, -v       print the version

Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads the config (also done on file change).
Environment: LOG_LEVEL overrides log.level; \${VAR} in the config is read from the environment.
`

/** Parsed command line. */
export type Command =
  | { kind: 'run'; config: string; configFrom: 'argument' | 'TETHER_CONFIG' | 'default' }
  | { kind: 'check'; config: string; syntaxOnly: boolean }
  | { kind: 'import'; files: string[]; manifests: boolean; image: string | undefined }
  | { kind: 'session'; admin: AdminTarget; key: string; json: boolean }
  | { kind: 'drain'; admin: AdminTarget; id: string; migrate: boolean; wait: boolean; timeout: number; warning?: string }
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'usage-error'; message: string }

/** The words `tether` takes first, for a "did you mean" on a mistyped one. */
const COMMANDS = ['run', 'check', 'import', 'session', 'drain'] as const

/** What other tools spell these as: `tether help`, `tether version`, `tether -V`. */
const FLAG_WORDS: Readonly<Record<string, string>> = { help: '--help', version: '--version', '-V': '--version', '-?': '--help' }

/**
 * The options of one command that another is given by mistake (`tether session k --migrate`,
 * `tether run --syntax-only`): refused naming the command they belong to (see {@link otherCommandsOption}).
 */
const COMMAND_ONLY: Readonly<Record<string, 'session' | 'drain' | 'check'>> = { '--json': 'session', '--migrate': 'drain', '--wait': 'drain', '--timeout': 'drain', '--syntax-only': 'check' }

/** What a command-only option is, where its name alone does not say: `--timeout is an option of tether drain (how long --wait waits)`. */
const COMMAND_ONLY_WHAT: Readonly<Record<string, string>> = { '--timeout': ' (how long --wait waits)' }

/**
 * The usage error for `name`, an option of another command than `kind` (COMMAND_ONLY), or null.
 * Example: `otherCommandsOption("--syntax-only", "run")` -> `--syntax-only is an option of tether check, not of tether run`.
 */
function otherCommandsOption(name: string, kind: Command['kind']): Command | null {
  const owner = COMMAND_ONLY[name]
  return owner === undefined || owner === kind ? null : { kind: 'usage-error', message: `${name} is an option of tether ${owner}${COMMAND_ONLY_WHAT[name] ?? ''}, not of tether ${kind}` }
}

/**
 * The options that take a value, as written before it (`-c` is `--config`): what each needs,
 * and its value's placeholder, for their usage errors.
 */
const VALUE_OPTIONS: Readonly<Record<string, { readonly needs: string; readonly placeholder: string }>> = {
  '--config': { needs: 'a file path', placeholder: '<file>' },
  '-c': { needs: 'a file path', placeholder: '<file>' },
  '--image': { needs: 'an image reference', placeholder: '<ref>' },
  '--admin': { needs: 'a URL', placeholder: '<url>' },
  '--token': { needs: 'a token', placeholder: '<token>' },
  '--timeout': { needs: 'a duration', placeholder: '<duration>' },
}

/**
 * The value of the option `written` (a key of VALUE_OPTIONS): `inline`, given after "=", else
 * the next word, taken from `args`; or a usage error naming the option when it is missing or
 * empty or blank (either way the same error: `--image=` as `--image ' '`), or when the next word starts
 * with "-". That word is taken for an option, not a value, as Node's util.parseArgs (strict)
 * does ("argument is ambiguous"): `tether --config -h` is a forgotten file, not a request for
 * help (GNU getopt, nginx `-c` and haproxy `-f` take "-h" as the file). A value that starts
 * with "-" is written with "=" (`--config=-h`); "-" alone is a value. A token is never shown.
 * Example: `optionValue("--config", undefined, ["-h"])` ->
 * `--config needs a file path, and "-h" after it is taken for an option (for a value that starts with "-", write --config=-h)`.
 */
function optionValue(written: string, inline: string | undefined, args: string[]): string | Extract<Command, { kind: 'usage-error' }> {
  const { needs, placeholder } = VALUE_OPTIONS[written]!
  const long = written === '-c' ? '--config' : written
  const error = (message: string) => ({ kind: 'usage-error' as const, message })
  // a value of only whitespace (`--token ' '`) is no file, image, URL or token meant: refused
  // as an empty one is, as a blank environment variable is (see blank)
  if (inline !== undefined) return blank(inline) ? error(`${long} needs ${needs} (${long}=${placeholder})`) : inline
  const v = args.shift()
  if (v === undefined || blank(v)) return error(`${written} needs ${needs}`)
  if (v.length > 1 && v.startsWith('-')) {
    // an option of Tether's (or "--"): the value was forgotten, and "=" would not help; only
    // the option's name is shown (`--token=S3CRET` after `--admin` is a token: never shown)
    const name = v.startsWith('--') && v.includes('=') ? v.slice(0, v.indexOf('=')) : v
    if (v === '--' || OPTION_NAMES.has(name)) return error(`${written} needs ${needs}, and the word after it is the option ${name}`)
    // (`--admin --S3CRET`: the word may be the secret itself, a URL or token given without its
    // option's name: neither it nor a hint built of it is shown, the placeholder instead)
    if (SECRET_OPTIONS.has(long)) return error(`${long} needs ${needs}, and the word after it starts with "-" (for ${needs} that starts with "-", write ${long}=${placeholder})`)
    // (`--config --tok=S3CRET`: a misspelt option with its value, shown as `--tok=...`, see shownWord)
    const shown = shownWord(v)
    if (long === '--timeout') return error(`--timeout needs a duration, and "${shown}" after it is taken for an option (a duration does not start with "-")`)
    return error(`${written} needs ${needs}, and "${shown}" after it is taken for an option (for a value that starts with "-", write ${long}=${shown === v ? v : placeholder})`)
  }
  return v
}

/** Every option of every command, by name (for optionValue: a forgotten value's next word). */
const OPTION_NAMES: ReadonlySet<string> = new Set([
  '--config', '-c', '--help', '-h', '--version', '-v', '--manifests', '--image', '--admin', '--token', '--timeout', '--json', '--migrate', '--wait', '--syntax-only',
])

/**
 * A word of argv as a usage error shows it where it is not taken as a value: without a value
 * written onto it, which may be a secret (`--tok=S3CRET`, a misspelt `--token=`; `token=S3CRET`,
 * its dashes forgotten; `-pS3CRET`, a short option with its value attached, as mysql's `-p`
 * takes a password): the name and "...". A word that is a name (`--tokn`, `-x`, `chek`,
 * `b.yaml`) is shown as written.
 * Example: `shownWord("--tok=S3CRET")` -> `"--tok=..."`; `shownWord("-pS3CRET")` -> `"-p..."`.
 */
function shownWord(word: string): string {
  const eq = word.indexOf('=')
  if (eq !== -1 && eq < word.length - 1) return `${word.slice(0, eq)}=...`
  return /^-[A-Za-z]./.test(word) ? `${word.slice(0, 2)}...` : word
}

/**
 * A word of argv that is no option and that nothing takes (a second file, key or id; an
 * unknown command or argument), as a usage error names it: by its place among the words after
 * `tether` and its length, never its text, which may be a token split off its option
 * (`--token Bearer S3CRET`, unquoted) or pasted in the wrong place (`tether S3CRET`).
 * Example: `wordAt(6, "S3CRET")` -> `"word 6, 6 characters"`.
 */
function wordAt(position: number, word: string): string {
  return `word ${position}, ${word.length} character${word.length === 1 ? '' : 's'}`
}

/**
 * Whether `--help`/`-h` or `--version`/`-v` stands among `options` as an option: not where an
 * option that takes a value has its value (`tether --config -h` is a usage error, see optionValue).
 */
function asked(options: readonly string[], long: string, short: string): boolean {
  return options.some((a, i) => (a === long || a === short) && (i === 0 || VALUE_OPTIONS[options[i - 1]!] === undefined))
}

/**
 * Whether two spellings of a file name one file: the same path once resolved against the working
 * directory (`a.yaml`, `./a.yaml`, `conf//a.yaml`, its absolute path), as the file is then
 * opened; no file system look-up (a link to it is another name). A ".." segment is only itself:
 * the system takes it after following a link (`conf/../a.yaml` with `conf` a link to
 * `other/sub` is `other/a.yaml`), which a resolution by text cannot know. "-" (stdin) is only
 * itself, and so is every name when the working directory is gone (a relative name has none).
 */
function sameFile(a: string, b: string): boolean {
  if (a === b) return true
  if (a === '-' || b === '-' || /(^|\/)\.\.(\/|$)/.test(a) || /(^|\/)\.\.(\/|$)/.test(b)) return false
  try {
    return resolve(a) === resolve(b)
  } catch {
    return false // process.cwd(): its directory was removed
  }
}

/**
 * The options whose values a usage error never shows: `--token`, and `--admin`, whose URL may
 * carry a token (a query parameter such as `?access_key=`, a user name alone, a path segment)
 * that the masking of `scheme://user:password@` and of secret-named parameters
 * (`maskUrlCredentials`, applied to every usage error) cannot know. `--config` and `--image`
 * name a file and an image reference, never a secret.
 */
const SECRET_OPTIONS: ReadonlySet<string> = new Set(['--admin', '--token'])

/**
 * An admin URL that is not one, as its usage error shows it: quoted to its first `/`, `?` or
 * `#` after a scheme (scheme://host:port at most: a path or query may hold a token), or, holding
 * an `@` (a user or password, which the masking of `scheme://` URLs misses in a value that is
 * no URL, as `http//u:pw@h`), not shown. That part is shown only when it is an address
 * (`scheme://host[:port]`, or `host:port` without a scheme, the usual mistake): a word without
 * either (`--admin S3CRET`, a token given to the wrong option; `http:S3CRET`) is not, its
 * length said instead.
 */
function shownAdminValue(value: string): string {
  if (value.includes('@')) return 'a value with an "@" (not shown: it may hold a credential)'
  // as a URL's scheme://host:port only: what follows may be a token (a path or query)
  const head = /^(?:[A-Za-z][A-Za-z0-9+.-]*:\/\/)?[^/?#]*/.exec(value)![0]
  if (!ADDRESS.test(head)) return `a value of ${value.length} characters that is no address (not shown: it may be a token)`
  return head === value ? `"${value}"` : `"${head}" and more (not shown: it may hold a credential)`
}

/**
 * `scheme://host[:port]`, or `host:port` (a name, an IPv4 address or a bracketed IPv6 one), or
 * an address without a scheme whose host is no name (an IPv4 address, `localhost`, a bracketed
 * IPv6 one) or absent (`:9901`): the usual mistakes, shown. A name alone is not (a token, a JWT
 * with its dots, reads as one).
 */
const ADDRESS = /^(?:[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]*)(?::\d*)?|(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d+|(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9A-Fa-f:.]+\])(?::\d*)?|:\d+)$/i

/**
 * How a usage error may show the value of the option `name`: as written (`--config`, `--image`:
 * a file and an image reference, which the error must name), a duration (`--timeout`) only when
 * it is a number with at most a unit word (`5mins`, `-5s`: a number is no secret), and never the
 * value of an option that may carry a secret ({@link SECRET_OPTIONS}); else null.
 */
function shownValue(name: string, value: string): string | null {
  if (SECRET_OPTIONS.has(name)) return null
  if (name === '--timeout' && !DURATION_SHAPE.test(value)) return null
  return JSON.stringify(value)
}

/**
 * A number, maybe signed or with a unit word after it, or numbers each with a duration unit
 * (`5m30s`, `1h 30m`, as Go and systemd write them; Tether's parser takes one unit): what a
 * mistyped duration looks like. The units after the first are duration units only, so a hex
 * token (`4f3a9b2c`) is not one.
 */
const DURATION_SHAPE = /^[+-]?[\d.]+[ \t]*(?:[A-Za-z\u00b5]{0,8}|(?:ms|[u\u00b5n]s|s|m|h|d|w)(?:[ \t]*[\d.]+[ \t]*(?:ms|[u\u00b5n]s|s|m|h|d|w)){1,6})$/

/**
 * An option that takes a value, given a second time with another value: a usage error naming
 * both, or null (the first time, or the same value again, as a wrapper script adding it once
 * more; `same` says what is the same value: `sameFile` for a file). nginx (`-c`), curl and
 * git take the last value silently; a config file, admin API or deadline overridden without a
 * word is a footgun (a script's `--config` replaced by a user's), so Tether refuses. The value
 * of an option that may carry a secret ({@link SECRET_OPTIONS}) is never shown: the option is
 * named alone. `one` names what to give one of.
 * Example: `givenTwice("--config", "a.yaml", "b.yaml", "config file")` ->
 * `--config is given twice ("a.yaml" and "b.yaml"): name one config file`.
 */
function givenTwice(name: string, before: string | undefined, value: string, one: string, same = (a: string, b: string) => a === b): Command | null {
  if (before === undefined || same(before, value)) return null
  const [a, b] = [shownValue(name, before), shownValue(name, value)]
  const values = SECRET_OPTIONS.has(name) ? 'with two values, not shown' : `${a ?? 'a value not shown'} and ${b ?? 'a value not shown'}`
  return { kind: 'usage-error', message: `${name} is given twice (${values}): name one ${one}` }
}

/** The options that take no value: `--syntax-only=yes` is refused saying so, not as an unknown argument. */
const NO_VALUE_OPTIONS: ReadonlySet<string> = new Set(['--help', '--version', '--manifests', '--json', '--migrate', '--wait', '--syntax-only'])

/**
 * The candidates closest to `name` (an edit distance of 2 at most, see nearest), or, for an
 * option none is that close to, those it begins (a shortened option: `--syntax` for
 * `--syntax-only`), from two letters after "--" on.
 * Example: `nearestOption("--syntax", ["--config", "--syntax-only"])` -> `{ near: ["--syntax-only"], more: 0 }`.
 */
function nearestOption(name: string, candidates: readonly string[]): { readonly near: readonly string[]; readonly more: number } {
  const close = nearest(name, candidates)
  if (close.near.length > 0 || !name.startsWith('--') || name.length < 4) return close
  const lower = name.toLowerCase()
  return { near: candidates.filter((c) => c.startsWith(lower)), more: 0 }
}

/**
 * A usage error for an argument nothing takes (the word `position` of argv), with the option or
 * command it is closest to: `unknownArgument("--conifg", ["--config"], 2)` -> `unknown argument
 * "--conifg", did you mean "--config"?`. A word that is no option is not quoted (see wordAt):
 * `unknownArgument("chek", COMMANDS, 1)` -> `unknown argument (word 1, 4 characters), did you mean "check"?`.
 */
function unknownArgument(a: string, candidates: readonly string[], position: number): Command {
  const name = a.startsWith('--') ? a.split('=')[0]! : a // `--confg=x`: the option's name
  // `--syntax-only=yes`: the option is right, its value is what is wrong
  // (its value not shown: `--json=S3CRET`, a token after the wrong option)
  if (name !== a && NO_VALUE_OPTIONS.has(name) && candidates.includes(name)) return { kind: 'usage-error', message: `${name} takes no value: write ${name} alone (a value was given after "=", not shown)` }
  const flag = FLAG_WORDS[a]
  const close = /^-?-?[a-z][a-z-]*$/i.test(name) ? nearestOption(name, candidates) : undefined
  const near = flag !== undefined ? `did you mean "${flag}"?` : close === undefined ? undefined : didYouMean(close)
  // a value written onto the argument is never shown, whatever the option (`--tok=S3CRET` to a
  // command without --token too -> "--tok=..."), see shownWord; a word within two edits of an
  // option is that option's name mistyped (`-config`), shown as written
  // (`help`, `-V`: a word of FLAG_WORDS is no secret, shown)
  const shown = flag !== undefined || (a.startsWith('-') && name === a && close !== undefined && close.near.length > 0) ? `"${a}"`
    : a.startsWith('-') ? `"${shownWord(a)}"` : `(${wordAt(position, a)})`
  return { kind: 'usage-error', message: `unknown argument ${shown}${near === undefined ? '' : `, ${near}`}` }
}

/**
 * The command `argv` (the words after `tether`) asks for, with `env`'s defaults (TETHER_CONFIG,
 * TETHER_ADMIN, TETHER_ADMIN_TOKEN), or a usage error whose message names the bad input with
 * its control characters escaped (`"fo\u0000o"`). `--` ends the options (POSIX): the words
 * after it are keys, ids or files even when they start with "-".
 * Example: `parseArgs(["check", "proxy.yaml"], {})` -> `{ kind: "check", config: "proxy.yaml" }`.
 */
export function parseArgs(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Command {
  const cmd = parseWords(argv, env)
  return cmd.kind === 'usage-error' ? { kind: 'usage-error', message: escapeControls(cmd.message) } : cmd
}

function parseWords(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Command {
  const args = [...argv]
  const options = args.includes('--') ? args.slice(0, args.indexOf('--')) : args
  if (asked(options, '--help', '-h')) return { kind: 'help' }
  if (asked(options, '--version', '-v')) return { kind: 'version' }
  if (args[0] === 'import') return parseImport(args.slice(1))
  if (args[0] === 'session' || args[0] === 'drain') return parseAdminCommand(args[0], args.slice(1), env)
  let kind: 'run' | 'check' = 'run'
  if (args[0] === 'check' || args[0] === 'run') kind = args.shift() as 'run' | 'check'
  let config: string | undefined
  let syntaxOnly = false
  let ended = false // after "--"
  while (args.length > 0) {
    const a = args.shift()!
    if (a === '--' && !ended) {
      ended = true
      continue
    }
    const option = !ended && a.startsWith('-') && a !== '-' // "-" alone is stdin: check's file
    const elsewhere = option ? otherCommandsOption(a.startsWith('--') ? a.split('=')[0]! : a, kind) : null // (`--syntax-only=yes` to run: named as --syntax-only)
    // (`tether --syntax-only check a.yaml`: its command comes later, so not blamed on run, which
    // was never written, but said as `tether --config a.yaml check` is)
    const later = elsewhere !== null && argv[0] !== 'run' && argv[0] !== 'check' ? options.find((w) => (COMMANDS as readonly string[]).includes(w)) : undefined
    if (later !== undefined) return { kind: 'usage-error', message: `unknown argument "${later}": a command comes first (tether ${later} ...)` }
    if (elsewhere !== null) return elsewhere
    if (!ended && a === '--syntax-only') syntaxOnly = true // (kind is check: otherCommandsOption refused it for run)
    else if (!ended && (a === '--config' || a === '-c' || a.startsWith('--config='))) {
      const v = a.startsWith('--config=') ? optionValue('--config', a.slice('--config='.length), args) : optionValue(a, undefined, args)
      if (typeof v !== 'string') return v
      // (check's file named as an argument, then --config: the same option twice; the same
      // file spelt another way, `./a.yaml`, is the same value: the first spelling is kept)
      const twice = givenTwice('--config', config, v, 'config file', sameFile)
      if (twice !== null) return twice
      config ??= v
    } else if (kind === 'check' && config === undefined && !option) {
      if (a === '') return { kind: 'usage-error', message: 'check needs a config file (an empty argument was given)' }
      config = a
    } else if (kind === 'check' && !option) {
      return { kind: 'usage-error', message: `check takes one config file: a second config file (${wordAt(argv.length - args.length, a)}) was given (check each on its own)` }
    } else if (ended && a.startsWith('-')) {
      // `tether -- --config x.yaml`, `tether run -- --config=x.yaml`: no "did you mean" (it would name the word itself)
      return { kind: 'usage-error', message: `"${shownWord(a)}" after "--" is an argument, not an option: put options before "--"` }
    } else if (kind === 'run' && config === undefined && !option && /\.ya?ml$/i.test(a)) {
      // `tether proxy.yaml`: the file is an option's value when running
      return { kind: 'usage-error', message: `unknown argument "${a}": to run with this file, write --config ${a} (to validate it: tether check ${a})` }
    } else if (!ended && argv[0] !== a && (COMMANDS as readonly string[]).includes(a)) {
      // `tether --config x check`, `tether run check x`
      const first = argv[0] === 'run' || argv[0] === 'check' ? `, and there is one: ${argv[0]}` : ` (tether ${a} ...)`
      return { kind: 'usage-error', message: `unknown argument "${a}": a command comes first${first}` }
    } else {
      const unknown = unknownArgument(a, a.startsWith('-') ? ['--config', '--help', '--version', ...(kind === 'check' ? ['--syntax-only'] : [])] : argv[0] === a ? COMMANDS : [], argv.length - args.length)
      // a first word that is no command and near none: which there are
      return argv[0] === a && unknown.kind === 'usage-error' && !unknown.message.includes('did you mean') && !a.startsWith('-')
        ? { kind: 'usage-error', message: `${unknown.message} (commands: ${COMMANDS.join(', ')})` }
        : unknown
    }
  }
  if (kind === 'check' && config === undefined) return { kind: 'usage-error', message: 'check needs a config file' }
  if (kind === 'check') return { kind, config: config!, syntaxOnly }
  if (config === '-') return { kind: 'usage-error', message: STDIN_RUN('--config -') }
  if (config !== undefined) return { kind, config, configFrom: 'argument' }
  const fromEnv = env['TETHER_CONFIG']
  // set and empty: a mistake (an unset variable in a manifest, `TETHER_CONFIG=$CONF`), not the
  // default file; said as --config '' is (both exit 2), never read as a file named "" (or " ")
  if (blank(fromEnv)) return { kind: 'usage-error', message: 'TETHER_CONFIG is empty: set it to a config file, or unset it for the default config/proxy.yaml (--config <file> overrides it)' }
  if (fromEnv === '-') return { kind: 'usage-error', message: STDIN_RUN('TETHER_CONFIG=-') }
  return fromEnv !== undefined ? { kind, config: fromEnv, configFrom: 'TETHER_CONFIG' } : { kind, config: 'config/proxy.yaml', configFrom: 'default' }
}

/**
 * Whether an environment variable is set and empty, or holds only whitespace (`VAR=' '`, a
 * manifest's `value: " "`): never a file name, URL or token meant, always a mistake, refused
 * as an empty one is (a usage error, exit 2) rather than read as a file named " ".
 */
function blank(value: string | undefined): boolean {
  return value !== undefined && value.trim() === ''
}

/**
 * Why `run` takes no config from stdin ("-", which `check` reads): it reads its file again on
 * SIGHUP and when the file changes (a file named "-" is written `./-`).
 * Example: `STDIN_RUN("--config -")`.
 */
const STDIN_RUN = (given: string): string =>
  `${given}: run reads its config file again on SIGHUP and on changes, and stdin cannot be read again: name a file (stdin is for tether check -; a file named "-" is ./-)`

function parseImport(args: string[]): Command {
  const files: string[] = []
  let manifests = false
  let image: string | undefined
  let ended = false // after "--"
  while (args.length > 0) {
    const a = args.shift()!
    if (a === '--' && !ended) ended = true
    else if (!ended && a === '--manifests') manifests = true
    else if (!ended && (a === '--image' || a.startsWith('--image='))) {
      const v = optionValue('--image', a === '--image' ? undefined : a.slice('--image='.length), args)
      if (typeof v !== 'string') return v
      const twice = givenTwice('--image', image, v, 'image')
      if (twice !== null) return twice
      image = v
    } else if (!ended && a.startsWith('-') && a !== '-') return otherCommandsOption(a, 'import') ?? unknownArgument(a, ['--manifests', '--image'], 0)
    else if (a === '') return { kind: 'usage-error', message: 'import: a manifest file argument is empty' }
    // (its objects would each be read twice: the second reported as a second source of
    // stickiness), also when spelt another way (`./a.yaml`)
    else if (files.some((f) => sameFile(f, a))) {
      const before = files.find((f) => sameFile(f, a))!
      return { kind: 'usage-error', message: `import: ${a === '-' ? 'stdin (-)' : `"${a}"`} is named twice${before === a ? '' : ` (also as "${before}")`}` }
    } else files.push(a)
  }
  if (files.length === 0) return { kind: 'usage-error', message: 'import needs at least one manifest file' }
  if (image !== undefined && !manifests) return { kind: 'usage-error', message: '--image is the image of the Deployment --manifests prints: add --manifests (a proxy.yaml names no image)' }
  return { kind: 'import', files, manifests, image }
}

/**
 * When two values of an admin command's option are one: a deadline in other units (`5m`,
 * `300s`); an admin API with and without trailing "/" (the client drops it). A value that is
 * no duration is only itself (and is refused as such).
 */
const SAME_VALUE: Readonly<Record<string, (a: string, b: string) => boolean>> = {
  '--timeout': (a, b) => {
    try {
      return parseDuration(a) === parseDuration(b)
    } catch {
      return a === b
    }
  },
  '--admin': (a, b) => a.replace(/\/+$/, '') === b.replace(/\/+$/, ''),
}

/**
 * Whether an admin URL holds a user or password (`http://u:p@127.0.0.1:9901`), as the WHATWG
 * URL parser reads it (node:http's too: it sends them as `Authorization: Basic`, which fetch
 * refused to). A URL that does not parse is said at the call (`ERR_INVALID_URL`).
 */
function hasUserinfo(url: string): boolean {
  try {
    const u = new URL(url)
    return u.username !== '' || u.password !== ''
  } catch {
    return false
  }
}

/** `tether session <key> ...` and `tether drain <id> ...`: the admin API's client commands. */
function parseAdminCommand(kind: 'session' | 'drain', args: string[], env: Readonly<Record<string, string | undefined>>): Command {
  let url = env['TETHER_ADMIN'] ?? 'http://127.0.0.1:9901'
  let urlFrom = 'TETHER_ADMIN'
  let token = env['TETHER_ADMIN_TOKEN'] ?? null
  let tokenFrom = 'TETHER_ADMIN_TOKEN'
  let target: string | undefined
  let json = false
  let migrate = false
  let wait = false
  let timeout = 5 * 60_000
  // each option's value as given on the command line, for givenTwice
  const given: Record<string, string> = {}
  const one: Readonly<Record<string, string>> = { '--admin': 'admin API', '--token': 'token', '--timeout': 'deadline' }
  let ended = false // after "--"
  const words = args.length + 1 // argv's, the command's included (for wordAt)
  while (args.length > 0) {
    const a = args.shift()!
    if (a === '--' && !ended) {
      ended = true
      continue
    }
    const [name, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    if (!ended && (name === '--admin' || name === '--token' || (name === '--timeout' && kind === 'drain'))) {
      const v = optionValue(name, inline, args)
      if (typeof v !== 'string') return v
      const twice = givenTwice(name, given[name], v, one[name]!, SAME_VALUE[name])
      if (twice !== null) return twice
      if (given[name] !== undefined) continue // the same value again: the first kept
      given[name] = v
      if (name === '--admin') [url, urlFrom] = [v, '--admin']
      else if (name === '--token') [token, tokenFrom] = [v, '--token']
      else {
        try {
          timeout = parseDuration(v)
        } catch (err) {
          // (a value that is no number is not shown: `--timeout S3CRET`, a token after the wrong option)
          return { kind: 'usage-error', message: DURATION_SHAPE.test(v) ? `--timeout: ${(err as Error).message}` : `--timeout: expected a duration like "500ms", "5s", "3h" or a number of seconds, got a value of ${v.length} characters that is none (not shown)` }
        }
      }
    } else if (!ended && a === '--json' && kind === 'session') json = true
    else if (!ended && a === '--migrate' && kind === 'drain') migrate = true
    else if (!ended && a === '--wait' && kind === 'drain') wait = true
    else if (!ended && otherCommandsOption(name, kind) !== null) return otherCommandsOption(name, kind)!
    // (after "--", a key or id whatever it starts with)
    else if (!ended && a.startsWith('-')) return unknownArgument(a, ['--admin', '--token', ...(kind === 'session' ? ['--json'] : ['--timeout', '--migrate', '--wait'])], 0)
    else if (a === '') return { kind: 'usage-error', message: `${kind} needs ${kind === 'session' ? 'a session key' : 'an upstream id'} (an empty argument was given)` }
    else if (target !== undefined) {
      const what = kind === 'session' ? 'session key' : 'upstream id'
      // (word 1 is the command: the words after it counted from 2)
      return { kind: 'usage-error', message: `${kind} takes one ${what}: a second ${what} (${wordAt(words - args.length, a)}) was given${kind === 'drain' ? ' (drain each on its own)' : ''}` }
    } else target = a
  }
  if (target === undefined || target === '') return { kind: 'usage-error', message: `${kind} needs ${kind === 'session' ? 'a session key' : 'an upstream id'}` }
  // without --wait, drain returns once the admin API has ordered the drain: nothing to time. Still
  // drained (a preStop hook's `drain <id> --timeout 30s` refused would leave the upstream serving), and told
  const warning = given['--timeout'] !== undefined && !wait ? '--timeout has no effect without --wait: the drain is ordered and not waited on (add --wait to wait for it)' : undefined
  // (an option overrides the environment: a blank variable then does not matter)
  if (urlFrom === 'TETHER_ADMIN' && blank(env['TETHER_ADMIN'])) return { kind: 'usage-error', message: "TETHER_ADMIN is empty: set it to the admin API's URL, or unset it for the default http://127.0.0.1:9901 (--admin <url> overrides it)" }
  if (tokenFrom === 'TETHER_ADMIN_TOKEN' && blank(env['TETHER_ADMIN_TOKEN'])) return { kind: 'usage-error', message: "TETHER_ADMIN_TOKEN is empty: set it to the admin API's token, or unset it (--token <token> overrides it)" }
  if (!/^https?:\/\/[^/]/.test(url)) return { kind: 'usage-error', message: `${urlFrom}: expected a URL like http://127.0.0.1:9901, got ${shownAdminValue(url)}${urlFrom === '--admin' ? '' : ' (--admin <url> overrides it)'}` }
  if (hasUserinfo(url)) return { kind: 'usage-error', message: `${urlFrom}: a user or password in the URL is refused (not shown): the admin API takes a bearer token (--token <token> or TETHER_ADMIN_TOKEN), and they would be sent in clear as Basic credentials` }
  // fetch drops whitespace at a header value's ends and refuses a control character inside,
  // with an error that quotes the value: said here, the token never shown
  if (token !== null && /[\x00-\x08\x0a-\x1f\x7f]/.test(token.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, ''))) {
    return { kind: 'usage-error', message: `${tokenFrom}: holds a control character (a line break inside?), which an Authorization header cannot carry (not shown)` }
  }
  const admin = { url, token }
  return kind === 'session' ? { kind, admin, key: target, json } : { kind, admin, id: target, migrate, wait, timeout, ...(warning === undefined ? {} : { warning }) }
}
