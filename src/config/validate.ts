// Validation of a parsed config tree into a deeply frozen `Config`, with every issue located.
// Pure: no I/O and no YAML library; load.ts turns the YAML document into the `SourceNode` tree
// below. Small combinators (leaf, struct, list, nullable) carry each section's rules.

import { isIP, isIPv4 } from 'node:net'
import { dirname, isAbsolute, join as joinPath } from 'node:path'
import { DEFAULTS, type AffinityConfig, type AffinityKeyKind, type CertificateFiles, type Config, type DnsDiscoveryConfig, type HstsConfig, type KubernetesDiscoveryConfig, type LogLevel, type SameSite, type TlsVersion, type UpstreamConfig, type UpstreamTlsConfig } from './schema.js'
import { parseTrustedProxies } from '../affinity/client-ip.js'
import { MIN_SECRET_BYTES, setCookieSerializer } from '../affinity/cookie-codec.js'
import { describeValue, formatDuration, parseDuration } from './duration.js'
import { substituteEnv, type Env } from './env.js'
import { editDistance, maskUrlCredentials } from '../secret-text.js'

/** 1-based line and column in the config file. */
export interface Pos {
  readonly line: number
  readonly col: number
}

export type ScalarValue = string | number | boolean | null

/** The config file as a located tree: what the validator reads instead of YAML nodes. */
export type SourceNode =
  | { readonly kind: 'map'; readonly pos: Pos; readonly entries: readonly SourceEntry[] }
  | { readonly kind: 'seq'; readonly pos: Pos; readonly items: readonly SourceNode[] }
  | { readonly kind: 'scalar'; readonly pos: Pos; readonly value: ScalarValue }

export interface SourceEntry {
  readonly key: string
  readonly keyPos: Pos
  readonly value: SourceNode
}

/**
 * Thrown for an unreadable, unparsable or invalid config; lists every issue, one per line.
 * `detail` adds lines for a person after the issues (a YAML syntax error's source line, a caret
 * under its column and a hint); `message` is issues then detail, one per line. Example message:
 *   config/proxy.yaml:3:10: YAML syntax error: Missing closing "quote
 *      3 |     url: "http://127.0.0.1:9001
 *        |          ^
 *   hint: a quoted value is not closed: end it with " on the same line
 */
export class ConfigError extends Error {
  readonly code = 'TETHER_CONFIG_INVALID'
  /** One line each: `file:line:col path: message`. */
  readonly issues: readonly string[]
  /** Lines that explain the issues to a person (may be empty); not for logs or parsing. */
  readonly detail: readonly string[]

  constructor(issues: readonly string[], options?: { cause?: unknown; detail?: readonly string[] }) {
    super([...issues, ...(options?.detail ?? [])].join('\n'), options)
    this.name = 'ConfigError'
    this.issues = Object.freeze([...issues])
    this.detail = Object.freeze([...(options?.detail ?? [])])
  }
}

/** What a PEM file named in the config must hold. */
export type PemKind = 'certificate' | 'private key' | 'CA bundle'

/**
 * What validation may ask of the filesystem about the PEM files the config names (TLS
 * certificates, keys, CA bundles). config/load.ts passes the real one; without it (parseConfig
 * of a text, as the docs and deploy tests do) only the shape of the paths is checked.
 */
export interface ConfigFiles {
  /** Why the file at `path` cannot serve as `kind` (unreadable, no such PEM block, unparsable), or null. */
  pem(path: string, kind: PemKind): string | null
  /** Why the readable `cert` and `key` files do not make a pair, or null. */
  pair(cert: string, key: string): string | null
  /** Why the kubeconfig at `path` cannot give Kubernetes discovery its access, or null (unchecked without it). */
  kubeconfig?(path: string): string | null
}

/**
 * Formats one issue line: `file:line:col path: message` (no path: `file:line:col: message`),
 * any control character in it escaped (see {@link escapeControls}): a line that names a key or
 * value from the file never carries a NUL, an escape sequence for the terminal or a line break.
 */
export function formatIssue(file: string, pos: Pos, path: string, message: string): string {
  return escapeControls(`${file}:${pos.line}:${pos.col}${path ? ` ${path}` : ''}: ${message}`)
}

/**
 * Characters an error line must not carry as they are: C0 and C1 controls and DEL (a NUL, a
 * terminal's escape sequences, line breaks), U+2028/U+2029 (line breaks to some readers) and
 * the bidirectional controls (which reorder what a terminal shows: "Trojan Source").
 */
export const CONTROL_CHARACTERS = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/g

/**
 * `text` with each {@link CONTROL_CHARACTERS} character escaped as JSON.stringify writes it (`\n`, `\t`,
 * `\u0000`), and as `\u007f` where JSON.stringify would leave it as it is (DEL, C1, bidi).
 * Example: `escapeControls("fo\0o")` -> `fo\u0000o`.
 */
export function escapeControls(text: string): string {
  return text.replace(CONTROL_CHARACTERS, (c) => {
    const json = JSON.stringify(c)
    return json.length > 3 ? json.slice(1, -1) : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
  })
}

/**
 * A key from the file as an issue's path names it: as it is, or in JSON quotes (its control
 * characters escaped) when it holds one, so `"fo\u0000o"` is not read as a key of those
 * characters. Example: `showKey("port")` -> `port`; `showKey("po\x85rt")` -> `"po\u0085rt"`.
 */
function showKey(key: string): string {
  return escapeControls(key) === key ? key : `"${escapeControls(JSON.stringify(key).slice(1, -1))}"`
}

// ---------------------------------------------------------------------------------------------
// Combinators. A Check reads one node and returns its value, or INVALID after reporting.

const INVALID: unique symbol = Symbol('invalid')
type Invalid = typeof INVALID
type Check<T> = (node: SourceNode, path: string, ctx: Ctx) => T | Invalid

class Ctx {
  readonly #found: { pos: Pos; text: string }[] = []
  readonly #warned: { pos: Pos; text: string }[] = []
  constructor(
    readonly file: string,
    readonly env: Env,
    readonly files: ConfigFiles | null = null,
  ) {}

  report(pos: Pos, path: string, message: string): Invalid {
    this.#found.push({ pos, text: formatIssue(this.file, pos, path, message) })
    return INVALID
  }

  /** A key that is accepted but has no effect as set (see {@link configWarnings}): not an issue. */
  warn(pos: Pos, path: string, message: string): void {
    this.#warned.push({ pos, text: formatIssue(this.file, pos, path, message) })
  }

  /** Issues in file order (stable for issues at the same position). */
  issues(): string[] {
    return inFileOrder(this.#found)
  }

  /** Warnings in file order. */
  warnings(): string[] {
    return inFileOrder(this.#warned)
  }
}

function inFileOrder(lines: readonly { pos: Pos; text: string }[]): string[] {
  return lines
    .map((line, i) => ({ ...line, i }))
    .sort((a, b) => a.pos.line - b.pos.line || a.pos.col - b.pos.col || a.i - b.i)
    .map((line) => line.text)
}

/** The log message of each of {@link configWarnings}' lines (its `warning` field the line). */
export const CONFIG_WARNING = 'config warning: a key has no effect as set'

/** The warnings of each config validateConfig returned (see {@link configWarnings}). */
const WARNINGS = new WeakMap<Config, readonly string[]>()

/**
 * The warnings about `config` found when it was validated: keys that are accepted, so an
 * existing file keeps working, but have no effect as set, one line each as an issue's
 * (`file:line:col key: message`). The callers that read a config file log them (`tether run`,
 * a reload) or print them (`tether check`). Example: `state.redis.name` without `sentinels` ->
 * `["proxy.yaml:8:11 state.redis.name: ignored without sentinels (it names the Sentinel master)"]`.
 */
export function configWarnings(config: Config): readonly string[] {
  return WARNINGS.get(config) ?? []
}

/** A rejected leaf value with the message to report. */
class Fail {
  constructor(readonly message: string) {}
}
const expected = (what: string, got: unknown): Fail => new Fail(`expected ${what}, got ${describeValue(got)}`)

const describeNode = (node: SourceNode): string =>
  node.kind === 'scalar' ? describeValue(node.value) : node.kind === 'map' ? 'a map' : 'a list'

const join = (path: string, key: string): string => (path ? `${path}.${key}` : key)

/**
 * A scalar check: substitutes `${ENV}` in string values, then converts. `fromEnv` tells the
 * converter that a string came from the environment, so "8080" may be read as a number there.
 * `secret`: an unset variable is told to be exported, not defaulted (see substituteEnv).
 */
function leaf<T>(what: string, convert: (value: ScalarValue, fromEnv: boolean) => T | Fail, secret = false): Check<T> {
  return (node, path, ctx) => {
    if (node.kind !== 'scalar') return ctx.report(node.pos, path, `expected ${what}, got ${describeNode(node)}`)
    let value = node.value
    let fromEnv = false
    if (typeof value === 'string') {
      const sub = substituteEnv(value, ctx.env, secret)
      if (sub.errors.length > 0) {
        for (const error of sub.errors) ctx.report(node.pos, path, error)
        return INVALID
      }
      value = sub.value
      fromEnv = sub.substituted
    }
    const result = convert(value, fromEnv)
    return result instanceof Fail ? ctx.report(node.pos, path, result.message) : result
  }
}

const INTEGER_TEXT = /^[-+]?\d+$/

function integer(min: number, max: number = Number.MAX_SAFE_INTEGER): Check<number> {
  const range = max === Number.MAX_SAFE_INTEGER ? `an integer >= ${min}` : `an integer between ${min} and ${max}`
  return leaf('an integer', (value, fromEnv) => {
    const n = fromEnv && typeof value === 'string' && INTEGER_TEXT.test(value) ? Number(value) : value
    if (typeof n !== 'number' || !Number.isInteger(n)) return expected('an integer', value)
    return n < min || n > max ? expected(range, n) : n
  })
}

const boolean: Check<boolean> = leaf('a boolean', (value, fromEnv) => {
  if (typeof value === 'boolean') return value
  if (fromEnv && (value === 'true' || value === 'false')) return value === 'true'
  return expected('a boolean', value)
})

function string(pattern?: { test: RegExp; what: string }): Check<string> {
  return leaf('a string', (value) => {
    if (typeof value !== 'string') return expected('a string', value)
    if (value === '') return expected('a non-empty string', value)
    return pattern && !pattern.test.test(value) ? expected(pattern.what, value) : value
  })
}

/** A password, token or secret's scalar check, without {@link secretString}'s reference rule. */
const secretLeaf: Check<string> = leaf('a string', (value) => {
  if (typeof value === 'string') return value === '' ? expected('a non-empty string', value) : value
  return new Fail(`expected a string (quote it), got ${typeof value === 'number' ? 'a number' : typeof value === 'boolean' ? 'a boolean' : 'another type'}`)
}, true)

/**
 * How environment variables are named: upper case, with an underscore (`TETHER_SECRET`,
 * `REDIS_PASSWORD`) or a word without digits (`PASSWORD`, `TOKEN`). A generated password after
 * a `$` (`$X7Q9K2M4`) mixes letters and digits without an underscore.
 */
const VARIABLE_NAME = /^(?:[A-Z][A-Z0-9]*_[A-Z0-9_]*|[A-Z]+)$/

/** A whole value `$NAME` (shell, Docker Compose) or `$(NAME)` (a Kubernetes container's env and args). */
const FOREIGN_REFERENCE = /^\$(?:([A-Za-z_][A-Za-z0-9_]*)|\(([A-Za-z_][A-Za-z0-9_]*)\))$/

/**
 * A password, token or secret: as {@link string}, but a value of another type (a password
 * written unquoted as a number) is told by its type, never shown (a reload logs the issues).
 * A whole value written as another tool's variable reference (`secret: "$TETHER_SECRET"`), whose
 * name is written as environment variables are (upper case, with an underscore or without
 * digits) or is set in the environment, is an error: Tether reads only `${NAME}`, so it
 * would be the secret itself, the same public text on every replica.
 */
const secretString: Check<string> = (node, path, ctx) => {
  const ref = node.kind === 'scalar' && typeof node.value === 'string' ? FOREIGN_REFERENCE.exec(node.value) : null
  const name = ref?.[1] ?? ref?.[2]
  if (name !== undefined && (VARIABLE_NAME.test(name) || ctx.env[name] !== undefined)) {
    return ctx.report(node.pos, path, `is a variable reference of another syntax ($NAME or $(NAME)), which Tether would take as the secret's text: write \${NAME} to read the variable (a secret that really is this text: put it in a variable and write \${NAME}; the value is not shown)`)
  }
  return secretLeaf(node, path, ctx)
}

/**
 * `admin.token`: a {@link secretString} an `Authorization` header can carry, as the admin API
 * compares it (the header's value without its surrounding spaces): no whitespace at either
 * end (a Kubernetes Secret made from a file ends with a newline), no control character (a tab
 * inside is allowed). Such a token was accepted and then matched no request. Never shown.
 */
const headerToken: Check<string> = andThen(secretString, (value) => {
  if (/^[ \t\r\n]|[ \t\r\n]$/.test(value)) return new Fail('starts or ends with whitespace (a newline at its end: a Secret made from a file, or a | block, where |- keeps none), which an Authorization header cannot carry: remove it')
  if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) return new Fail('holds a control character (U+0000-U+001F or U+007F), which an Authorization header cannot carry')
  return null
})

function oneOf<const T extends string>(values: readonly T[]): Check<T> {
  const what = `one of: ${values.map((v) => JSON.stringify(v)).join(', ')}`
  return leaf(what, (value) => {
    if (values.includes(value as T)) return value as T
    const near = typeof value === 'string' ? didYouMean(nearest(value, values)) : undefined
    const fail = expected(what, value)
    return near === undefined ? fail : new Fail(`${fail.message}; ${near}`)
  })
}

/** `workers`: a count of processes, or "auto". */
const workers: Check<number | 'auto'> = leaf('an integer or "auto"', (value, fromEnv) => {
  if (value === 'auto') return value
  const n = fromEnv && typeof value === 'string' && INTEGER_TEXT.test(value) ? Number(value) : value
  if (typeof n !== 'number' || !Number.isInteger(n)) return expected('an integer between 1 and 256 or "auto"', value)
  return n < 1 || n > 256 ? expected('an integer between 1 and 256 or "auto"', n) : n
})

/** A number (integer or fraction) in [min, max]. */
function decimal(min: number, max: number): Check<number> {
  const range = `a number between ${min} and ${max}`
  return leaf('a number', (value, fromEnv) => {
    const n = fromEnv && typeof value === 'string' && value.trim() !== '' ? Number(value) : value
    if (typeof n !== 'number' || !Number.isFinite(n)) return expected('a number', value)
    return n < min || n > max ? expected(range, n) : n
  })
}

/** One value or a list of them, always returned as a list. */
function oneOrMany<T>(check: Check<T>): Check<T[]> {
  const many = list(check, { nonEmpty: true })
  return (node, path, ctx) => {
    if (node.kind === 'seq') return many(node, path, ctx)
    const one = check(node, path, ctx)
    return one === INVALID ? INVALID : [one]
  }
}

/** `check`, then a conversion that may fail with a message (reported at the node). */
function andThen<T>(check: Check<T>, rule: (value: T) => Fail | null): Check<T> {
  return (node, path, ctx) => {
    const value = check(node, path, ctx)
    if (value === INVALID) return INVALID
    const fail = rule(value)
    return fail === null ? value : ctx.report(node.pos, path, fail.message)
  }
}

/**
 * 596h (~24.8 days): just under the Node.js timer limit of 2^31-1 ms, above which timers fire at
 * once. affinity.absolute_timeout has no timer but is held to it too: the affinity table counts
 * an entry's age exactly only within 2^31 ms (affinity/table.ts). cookie.max_age is not timed.
 */
export const MAX_DURATION_MS = 596 * 3_600_000

/**
 * Said after "<= 596h" (a bound written in hours, for a value likely written in days: `25d`):
 * Node.js does not refuse a longer timer, it warns and fires it after 1 ms, so a `30d` timeout
 * would end every connection at once.
 */
const TIMER_LIMIT = ' (24.8 days, the Node.js timer limit)'

/**
 * timeouts.client_connection_max's bound, 87600h (ten years): no timer times it, so not Node's
 * timer limit (MAX_DURATION_MS); a longer value is no bound in practice: `0` says so.
 */
const CONNECTION_MAX_MS = 87_600 * 3_600_000

function duration(opts: { zero: boolean; max?: number }): Check<number> {
  const max = opts.max ?? MAX_DURATION_MS
  return leaf('a duration', (value) => {
    let ms: number
    try {
      ms = parseDuration(value)
    } catch (err) {
      return new Fail((err as Error).message)
    }
    if (!opts.zero && ms === 0) return expected('a duration > 0', value)
    if (ms > max) return expected(`a duration <= ${formatDuration(max)}${max === MAX_DURATION_MS ? TIMER_LIMIT : ''}`, value)
    return ms
  })
}

/** `null` (or, from the environment, an empty string or "null") or what `check` accepts. */
function nullable<T>(check: Check<T>): Check<T | null> {
  return (node, path, ctx) => {
    if (node.kind === 'scalar') {
      if (node.value === null) return null
      if (typeof node.value === 'string') {
        const sub = substituteEnv(node.value, ctx.env)
        if (sub.substituted && sub.errors.length === 0 && (sub.value === '' || sub.value === 'null')) return null
      }
    }
    return check(node, path, ctx)
  }
}

/** A whole value that is one reference with an empty default, `${NAME:-}`: the file says the key may be left unset. */
const EMPTY_DEFAULT = /^\$\{[A-Za-z_][A-Za-z0-9_]*:-\}$/

/**
 * Why a secret's value is empty (blank after `${ENV}` substitution), or null when it is not. A
 * secret left empty by mistake (a Kubernetes Secret without the key's value) must not turn into
 * "no secret": `unset` says how to mean that. Example: `is empty (from ${TETHER_ADMIN_TOKEN}):
 * set it, or remove the key for no token`.
 */
function emptySecret(node: SourceNode, ctx: Ctx, unset: string): string | null {
  if (node.kind !== 'scalar' || typeof node.value !== 'string') return null
  const sub = substituteEnv(node.value, ctx.env)
  if (sub.errors.length > 0 || sub.value.trim() !== '') return null
  return `is empty${sub.substituted ? ` (from ${node.value})` : ''}: set it, or ${unset}`
}

/**
 * A secret key (admin.token, affinity.cookie.secret, log.session_secret): null when absent or
 * an explicit null (written, `${VAR:-null}`, or a whole `${VAR:-}` whose default is empty);
 * an empty value, written or from the environment, is an error, never "no secret".
 */
function secretOrNull<T>(check: Check<T>, unset: string): Check<T | null> {
  return (node, path, ctx) => {
    if (node.kind === 'scalar') {
      if (node.value === null) return null
      if (typeof node.value === 'string') {
        const sub = substituteEnv(node.value, ctx.env)
        if (sub.substituted && sub.errors.length === 0 && (sub.value === 'null' || (sub.value === '' && EMPTY_DEFAULT.test(node.value)))) return null
        const empty = emptySecret(node, ctx, unset)
        if (empty !== null) return ctx.report(node.pos, path, empty)
      }
    }
    return check(node, path, ctx)
  }
}

function list<T>(item: Check<T>, opts: { nonEmpty: boolean }): Check<T[]> {
  return (node, path, ctx) => {
    if (node.kind !== 'seq') return ctx.report(node.pos, path, `expected a list, got ${describeNode(node)}`)
    if (opts.nonEmpty && node.items.length === 0) return ctx.report(node.pos, path, 'expected a non-empty list')
    const out = node.items.map((child, i) => item(child, `${path}[${i}]`, ctx))
    return out.includes(INVALID) ? INVALID : (out as T[])
  }
}

type Shape<T> = { readonly [K in keyof T]-?: Check<T[K]> }

/**
 * A map with exactly the keys of `shape`. A missing key takes its value from `defaults`
 * (cloned) or, when it has none, is reported at the map's position. Unknown keys are
 * reported with a "did you mean" suggestion.
 */
function struct<T extends object>(shape: Shape<T>, defaults: { readonly [K in keyof T]?: T[K] }): Check<T> {
  const keys = Object.keys(shape) as (keyof T & string)[]
  return (node, path, ctx) => {
    // a section left empty (`health:` with every key under it commented out) is YAML null: its defaults
    if (node.kind === 'scalar' && node.value === null) node = { kind: 'map', pos: node.pos, entries: [] }
    if (node.kind !== 'map') return ctx.report(node.pos, path, `expected a map, got ${describeNode(node)}${missingSpace(node)}`)
    let ok = true
    for (const entry of node.entries) {
      if (Object.hasOwn(shape, entry.key)) continue
      ctx.report(entry.keyPos, join(path, showKey(entry.key)), entry.key === '<<' ? MERGE_KEY : unknownKey(entry.key, keys))
      ok = false
    }
    const out: Partial<Record<keyof T, unknown>> = {}
    for (const key of keys) {
      const entry = node.entries.find((e) => e.key === key)
      if (entry) {
        const value = shape[key](entry.value, join(path, key), ctx)
        if (value === INVALID) ok = false
        else out[key] = value
      } else if (Object.hasOwn(defaults, key)) {
        out[key] = structuredClone(defaults[key])
      } else {
        ctx.report(node.pos, join(path, key), 'missing required key')
        ok = false
      }
    }
    return ok ? (out as T) : INVALID
  }
}

/** `check`, then a rule over the whole value; `rule` reports through `ctx` and returns false. */
function refine<T>(check: Check<T>, rule: (value: T, node: SourceNode, path: string, ctx: Ctx) => boolean): Check<T> {
  return (node, path, ctx) => {
    const value = check(node, path, ctx)
    return value === INVALID || rule(value, node, path, ctx) ? value : INVALID
  }
}

/** `check` and a rule over the source node that runs even when `check` fails (to report all issues). */
function alsoCheck<T>(check: Check<T>, rule: (node: SourceNode, path: string, ctx: Ctx) => boolean): Check<T> {
  return (node, path, ctx) => {
    const value = check(node, path, ctx)
    return rule(node, path, ctx) ? value : INVALID
  }
}

/** `<<: *defaults`: a YAML 1.1 merge key, which YAML 1.2 (this file's) reads as a plain key named "<<". */
const MERGE_KEY = 'merge keys (<<: *anchor) are not supported (YAML 1.2): write the keys out, or use an anchor for a whole value'

/** For `port:8080` (read by YAML as the string "port:8080"): say the space after ":" is missing. */
function missingSpace(node: SourceNode): string {
  return node.kind === 'scalar' && typeof node.value === 'string' && /^[A-Za-z_][\w.-]*:[^\s/]/.test(node.value)
    ? ' (a key needs a space after its colon: "key: value")'
    : ''
}

function unknownKey(key: string, known: readonly string[]): string {
  // `affinity.key: cookie`, written as the docs name the key: YAML has no dotted keys
  const parts = key.split('.')
  if (parts.length > 1 && known.includes(parts[0]!) && parts.every((p) => p !== '')) {
    const nested = parts.reduceRight((inner, part) => `{ ${part}: ${inner} }`, '...').slice(2, -2)
    return `unknown key: YAML does not nest keys by dots; write \`${nested}\`, or each key on its own line indented under the one before`
  }
  const near = didYouMean(nearest(key, known), (k) => `\`${k}\``)
  return near !== undefined ? `unknown key, ${near}` : `unknown key (expected one of: ${known.join(', ')})`
}

/** The most equally close candidates {@link nearest} returns (a discovered set can tie by dozens). */
const NEAREST_LISTED = 5

/**
 * The candidates closest to a mistyped `word` (case aside), if within 2 edits (1 for short
 * words): every one at the least distance, in the order given (git's "did you mean" lists each
 * command equally similar, none picked by chance), at most 5 with `more` counting the rest.
 * `nearest("cookies", ["none", "cookie"])` -> { near: ["cookie"], more: 0 };
 * `nearest("TLSv1.1", ["TLSv1.2", "TLSv1.3"])` -> both; `nearest("sticky", ...)` -> { near: [] }.
 */
export function nearest(word: string, candidates: readonly string[]): { readonly near: readonly string[]; readonly more: number } {
  const scored = candidates
    .map((k) => ({ k, d: editDistance(word.toLowerCase(), k.toLowerCase()) }))
    .filter(({ d }) => d <= Math.min(2, Math.max(1, word.length - 1)))
  const best = Math.min(...scored.map(({ d }) => d))
  const all = [...new Set(scored.filter(({ d }) => d === best).map(({ k }) => k))]
  return { near: all.slice(0, NEAREST_LISTED), more: Math.max(0, all.length - NEAREST_LISTED) }
}

/**
 * "did you mean ...?" for {@link nearest}'s answer, each shown by `show` (default: JSON quotes),
 * or undefined when it has none. Examples: `did you mean "a"?`, `did you mean "a", "b" or "c"?`,
 * `did you mean one of "a", "b", "c", "d", "e" (or 3 more as close)?`.
 */
export function didYouMean(found: { readonly near: readonly string[]; readonly more: number }, show: (s: string) => string = (s) => JSON.stringify(s)): string | undefined {
  const shown = found.near.map(show)
  if (shown.length === 0) return undefined
  if (found.more > 0) return `did you mean one of ${shown.join(', ')} (or ${found.more} more as close)?`
  return `did you mean ${shown.length === 1 ? shown[0] : `${shown.slice(0, -1).join(', ')} or ${shown.at(-1)}`}?`
}

/** The node at `keys` under `node`, or the deepest one that exists (for locating cross-field issues). */
function nodeAt(node: SourceNode, keys: readonly string[]): SourceNode {
  for (const key of keys) {
    const entry = node.kind === 'map' ? node.entries.find((e) => e.key === key) : undefined
    if (!entry) return node
    node = entry.value
  }
  return node
}

// ---------------------------------------------------------------------------------------------
// The rules of proxy.yaml (the doc comments in schema.ts say what each key means).

const UPSTREAM_ID = {
  // "none" is the metrics' upstream label of a request no upstream answered: an upstream of
  // that id would merge its series with theirs
  test: /^(?!none$)[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/,
  what: 'an id of up to 63 letters, digits, ".", "_" or "-", starting with a letter or digit (not "none", the metrics\' label for no upstream)',
}

const URL_KIND = 'an http:// or https:// URL'

/** The port written in a URL's authority (`http://host:70000/` -> "70000"), or null for none. */
const URL_PORT = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/(?:[^@/?#]*@)?(?:\[[^\]]*\]|[^:/?#]*):(\d+)(?:[/?#]|$)/

/** "expected a port between 1 and 65535, got 0", or null for a port in that range. */
function portProblem(port: string): Fail | null {
  const n = Number(port)
  return n >= 1 && n <= 65535 ? null : new Fail(`expected a port between 1 and 65535, got ${port}`)
}

/** `http(s)://host[:port]` with no path, query, fragment or credentials; normalised to its origin. */
const upstreamUrl: Check<string> = leaf(URL_KIND, (value) => {
  if (typeof value !== 'string') return expected(URL_KIND, value)
  const port = URL_PORT.exec(value)?.[1]
  const badPort = port === undefined ? null : portProblem(port)
  if (badPort !== null) return new Fail(`${badPort.message} (in ${describeValue(value)})`)
  let url: URL
  try {
    url = new URL(value)
  } catch {
    return expected(URL_KIND, value)
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return expected(URL_KIND, value)
  if (url.username || url.password) return new Fail(`expected ${URL_KIND} without credentials`)
  if (url.pathname !== '/') return expected(`${URL_KIND} without a path`, value)
  if (url.search || url.hash || /[?#]/.test(value)) return expected(`${URL_KIND} without a query or fragment`, value)
  return url.origin
})

/**
 * A PEM file: a path (relative ones are relative to the config file's directory), stored
 * resolved; with the filesystem at hand (loadConfigFile), the file must hold a `kind`.
 */
function pemFile(kind: PemKind): Check<string> {
  const text = string()
  return (node, path, ctx) => {
    const value = text(node, path, ctx)
    if (value === INVALID) return INVALID
    const resolved = isAbsolute(value) ? value : joinPath(dirname(ctx.file), value)
    const problem = ctx.files?.pem(resolved, kind) ?? null
    return problem === null ? resolved : ctx.report(node.pos, path, `${resolved}: ${problem}`)
  }
}

/** A certificate and key that belong together (checked when the filesystem is at hand). */
function pairRule(v: { readonly cert: string | null; readonly key: string | null }, node: SourceNode, path: string, ctx: Ctx): boolean {
  if ((v.cert === null) !== (v.key === null)) {
    const missing = v.cert === null ? 'cert' : 'key'
    ctx.report(node.pos, join(path, missing), `required with ${missing === 'cert' ? 'key' : 'cert'}`)
    return false
  }
  const problem = v.cert === null || v.key === null ? null : ctx.files?.pair(v.cert, v.key) ?? null
  if (problem === null) return true
  ctx.report(nodeAt(node, ['key']).pos, join(path, 'key'), problem)
  return false
}

const certificateFiles = refine(
  struct<CertificateFiles>({ cert: pemFile('certificate'), key: pemFile('private key') }, {}),
  pairRule,
)

const YEAR_MS = 365 * 24 * 3_600_000

const hsts = refine(
  struct<HstsConfig>(
    { max_age: duration({ zero: true, max: 2 * YEAR_MS }), include_subdomains: boolean, preload: boolean },
    DEFAULTS.hsts,
  ),
  (v, node, path, ctx) => {
    if (!v.preload || (v.include_subdomains && v.max_age >= YEAR_MS)) return true
    ctx.report(nodeAt(node, ['preload']).pos, `${path}.preload`, 'needs include_subdomains: true and a max_age of at least 365 days (hstspreload.org)')
    return false
  },
)

const listenTls = refine(
  struct<NonNullable<Config['listen']['tls']>>(
    {
      cert: pemFile('certificate'),
      key: pemFile('private key'),
      certificates: list(certificateFiles, { nonEmpty: false }),
      min_version: oneOf<TlsVersion>(['TLSv1.2', 'TLSv1.3']),
      hsts: nullable(hsts),
    },
    DEFAULTS.listenTls,
  ),
  pairRule,
)

/** The TLS keys of an upstream (its own, merged over forwarding.tls, which also has the pair rule). */
const upstreamTlsKeys = struct<UpstreamTlsConfig>(
    {
      ca: nullable(pemFile('CA bundle')),
      servername: nullable(string({ test: /^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$/, what: 'a DNS name' })),
      cert: nullable(pemFile('certificate')),
      key: nullable(pemFile('private key')),
      verify: boolean,
    },
    DEFAULTS.upstreamTls,
)
const upstreamTls = refine(upstreamTlsKeys, pairRule)

/** A host to bind: a name or an address; IPv6 without brackets (`::1`, not `[::1]`). */
const bindHost = andThen(string(), (v) =>
  v.startsWith('[') ? new Fail(`write IPv6 addresses without brackets (${v.replace(/^\[|\]$/g, '')})`) : null)

const listen = (defaults: Config['admin']['listen']) =>
  struct<Config['admin']['listen']>({ host: bindHost, port: integer(0, 65535) }, defaults)

const proxyListen = refine(
  struct<Config['listen']>(
    {
      host: bindHost,
      port: integer(0, 65535),
      tls: nullable(listenTls),
      http2: struct<Config['listen']['http2']>(
        { enabled: boolean, cleartext: boolean, max_concurrent_streams: integer(1, 10_000) },
        DEFAULTS.listen.http2,
      ),
      redirect: nullable(struct<NonNullable<Config['listen']['redirect']>>(
        { host: bindHost, port: integer(0, 65535), https_port: nullable(integer(1, 65535)) },
        DEFAULTS.redirect,
      )),
      proxy_protocol: boolean,
    },
    DEFAULTS.listen,
  ),
  (l, node, path, ctx) => {
    if (l.redirect !== null && l.tls === null) {
      ctx.report(nodeAt(node, ['redirect']).pos, `${path}.redirect`, 'redirects to https://, so it needs listen.tls')
      return false
    }
    if (l.http2.cleartext && l.tls !== null) {
      ctx.report(nodeAt(node, ['http2', 'cleartext']).pos, `${path}.http2.cleartext`, 'is for a listener without tls (h2 over TLS is negotiated by ALPN)')
      return false
    }
    return true
  },
)

const upstreamFields = struct<UpstreamConfig>(
  { id: string(UPSTREAM_ID), url: upstreamUrl, weight: integer(1, 1000), tls: nullable(upstreamTlsKeys), max_connections: nullable(integer(1, 1_000_000)) },
  DEFAULTS.upstream,
)

/**
 * One item of `upstreams`. An item written as an address alone (`- http://10.0.0.5:8000`, as
 * nginx's `server 10.0.0.5:8000;` and HAProxy's `server` lines need no name) is told the map it
 * needs, with that address as its url: Tether refers to an upstream by its id, never by address.
 * Example: `upstreams[0]: expected a map with an id and a url, like { id: app-0, url: "http://10.0.0.5:8000" }, got "http://10.0.0.5:8000"`.
 */
const upstream: Check<UpstreamConfig> = (node, path, ctx) => {
  if (node.kind !== 'scalar' || typeof node.value !== 'string') return upstreamFields(node, path, ctx)
  const i = /\[(\d+)\]$/.exec(path)?.[1] ?? '0'
  // the address as written (with http:// when it has no scheme); one with credentials is not repeated
  const url = node.value.includes('@') ? 'http://10.0.0.5:8000' : /^([a-z][a-z0-9+.-]*:\/\/|\$\{)/i.test(node.value) ? node.value : `http://${node.value}`
  const like = `{ id: app-${i}, url: ${JSON.stringify(url)} }`
  return ctx.report(node.pos, path, `expected a map with an id and a url, like ${like}, got ${maskUrlCredentials(describeNode(node))}`)
}

/** Every id once; a repeat names both indexes. Reads the id nodes, so it runs even if an item is invalid. */
function uniqueIds(node: SourceNode, path: string, ctx: Ctx): boolean {
  if (node.kind !== 'seq') return true
  const first = new Map<string, number>()
  let ok = true
  node.items.forEach((item, i) => {
    const idNode = nodeAt(item, ['id'])
    if (idNode === item || idNode.kind !== 'scalar' || typeof idNode.value !== 'string') return
    const id = substituteEnv(idNode.value, ctx.env).value
    const seen = first.get(id)
    if (seen === undefined) return void first.set(id, i)
    ctx.report(idNode.pos, `${path}[${i}].id`, `duplicate id ${JSON.stringify(id)} (also used by ${path}[${seen}])`)
    ok = false
  })
  return ok
}

const secret: Check<string> = andThen(secretString, (v) =>
  Buffer.byteLength(v) < MIN_SECRET_BYTES ? new Fail(`expected a secret of at least ${MIN_SECRET_BYTES} bytes, got ${Buffer.byteLength(v)}`) : null)

/** One of several cookie secrets (rotation): an empty one is an error, as for a single secret. */
const listedSecret: Check<string> = (node, path, ctx) => {
  const empty = emptySecret(node, ctx, 'remove it from the list')
  return empty === null ? secret(node, path, ctx) : ctx.report(node.pos, path, empty)
}

const cidr: Check<string> = andThen(string(), (v) => {
  try {
    parseTrustedProxies([v])
    return null
  } catch (err) {
    return new Fail((err as Error).message)
  }
})

/**
 * 400 days: the longest cookie lifetime browsers keep (RFC 6265bis caps Max-Age there). A
 * Max-Age is sent, never timed, so it is not held to MAX_DURATION_MS (the timer limit).
 */
export const MAX_COOKIE_AGE_MS = 400 * 24 * 3_600_000

const COOKIE_NAME = { test: /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, what: 'a cookie name (letters, digits and !#$%&\'*+-.^_`|~)' }
const HEADER_NAME = { test: /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/, what: 'a header name' }

/** Rules across the affinity section: the chosen key's settings must be there and coherent. */
function affinityRules(a: AffinityConfig, node: SourceNode, path: string, ctx: Ctx): boolean {
  let ok = true
  const at = (keys: string[]): Pos => nodeAt(node, keys).pos
  if (a.key === 'app_cookie' && a.app_cookie.name === null) {
    ctx.report(at(['app_cookie']), `${path}.app_cookie.name`, 'required when key is app_cookie')
    ok = false
  }
  if (a.key === 'header' && a.header.name === null) {
    ctx.report(at(['header']), `${path}.header.name`, 'required when key is header')
    ok = false
  }
  if (a.absolute_timeout !== null && a.absolute_timeout < a.idle_timeout) {
    ctx.report(at(['absolute_timeout']), `${path}.absolute_timeout`, `must be at least idle_timeout (${formatDuration(a.idle_timeout)})`)
    ok = false
  }
  if (a.spill !== null && a.key === 'none') {
    ctx.report(at(['spill']), `${path}.spill`, 'moves pinned users, so it needs a key (affinity.key is none: round robin pins nobody)')
    ok = false
  }
  const c = a.cookie
  try {
    setCookieSerializer(c.name, { path: c.path, domain: c.domain, maxAge: c.max_age, secure: c.secure, httpOnly: c.http_only, sameSite: c.same_site })
  } catch (err) {
    ctx.report(at(['cookie']), `${path}.cookie`, (err as Error).message)
    ok = false
  }
  return ok
}

const affinity: Check<AffinityConfig> = refine(
  struct<AffinityConfig>(
    {
      key: oneOf<AffinityKeyKind>(['none', 'cookie', 'app_cookie', 'client_ip', 'header']),
      cookie: struct<AffinityConfig['cookie']>(
        {
          name: string(COOKIE_NAME),
          secret: secretOrNull(oneOrMany(listedSecret), 'remove the key for a random per-process secret'),
          path: string({ test: /^\/[\x20-\x3A\x3C-\x7E]*$/, what: 'a path starting with "/"' }),
          domain: nullable(string()),
          max_age: nullable(duration({ zero: false, max: MAX_COOKIE_AGE_MS })),
          secure: boolean,
          http_only: boolean,
          same_site: oneOf<SameSite>(['Strict', 'Lax', 'None']),
        },
        DEFAULTS.affinity.cookie,
      ),
      app_cookie: struct<AffinityConfig['app_cookie']>(
        { name: nullable(string(COOKIE_NAME)), fallback: oneOf(['client_ip', 'random'] as const) },
        DEFAULTS.affinity.app_cookie,
      ),
      client_ip: struct<AffinityConfig['client_ip']>({ trusted_proxies: list(cidr, { nonEmpty: false }) }, DEFAULTS.affinity.client_ip),
      header: struct<AffinityConfig['header']>({ name: nullable(string(HEADER_NAME)) }, DEFAULTS.affinity.header),
      idle_timeout: duration({ zero: false, max: 24 * 3_600_000 }),
      absolute_timeout: nullable(duration({ zero: false })),
      on_scale_up: oneOf(['persistent', 'rebalance', 'gradual'] as const),
      rebalance: struct<AffinityConfig['rebalance']>(
        { min_idle: duration({ zero: true }), max_moves_per_second: integer(1, 1_000_000) },
        DEFAULTS.affinity.rebalance,
      ),
      balance_factor: nullable(decimal(1, 100)),
      spill: nullable(struct<NonNullable<AffinityConfig['spill']>>(
        { factor: decimal(1, 100), min_idle: duration({ zero: true }), max_moves_per_second: integer(1, 1_000_000) },
        DEFAULTS.spill,
      )),
      max_entries: integer(1, 100_000_000),
      strict: boolean,
      drain_timeout: duration({ zero: true }),
      drain: struct<AffinityConfig['drain']>({ migrate: boolean, min_idle: duration({ zero: true }) }, DEFAULTS.affinity.drain),
      shared: oneOf(['none', 'redis'] as const),
    },
    DEFAULTS.affinity,
  ),
  affinityRules,
)

/** "200-399" or a single status "200": an inclusive range of HTTP statuses. */
const statusRange: Check<{ min: number; max: number }> = leaf('a status range like "200-399"', (value) => {
  const m = /^\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?$/.exec(String(value))
  if (m === null || value === null || typeof value === 'boolean') return expected('a status range like "200-399"', value)
  const min = Number(m[1])
  const max = Number(m[2] ?? m[1])
  if (min < 100 || max > 599 || min > max) return expected('a status range within 100-599, low to high', value)
  return { min, max }
})

const health = struct<Config['health']>(
  {
    active: struct<Config['health']['active']>(
      {
        enabled: boolean,
        path: nullable(string({ test: /^\/[\x21-\x7e]*$/, what: 'a path starting with "/"' })),
        interval: duration({ zero: false }),
        timeout: duration({ zero: false }),
        healthy_threshold: integer(1, 100),
        unhealthy_threshold: integer(1, 100),
        expected_status: statusRange,
      },
      DEFAULTS.health.active,
    ),
    passive: struct<Config['health']['passive']>(
      {
        enabled: boolean,
        consecutive_failures: integer(1, 1000),
        count_5xx: boolean,
        base_ejection: duration({ zero: false }),
        max_ejection: duration({ zero: false }),
        max_ejection_percent: integer(0, 100),
      },
      DEFAULTS.health.passive,
    ),
    slow_start: duration({ zero: true }),
    shared: oneOf(['none', 'redis'] as const),
  },
  DEFAULTS.health,
)

/**
 * A hedge is one of `attempts` and starts within `try_duration` (see RequestPath#budgetLeft):
 * `hedge_after` with no attempt to spend, or not before `try_duration`, never fires. Accepted
 * (a file written when hedges did not count against the budget keeps loading), but told.
 */
function hedgeRules(r: Config['retries'], node: SourceNode, path: string, ctx: Ctx): boolean {
  if (r.hedge_after === null) return true
  const at = nodeAt(node, ['hedge_after']).pos
  if (r.attempts === 0) ctx.warn(at, `${path}.hedge_after`, 'never fires with retries.attempts: 0 (a hedge is one of the attempts; set attempts to 1 or more)')
  else if (r.hedge_after >= r.try_duration) ctx.warn(at, `${path}.hedge_after`, 'never fires: it is not shorter than retries.try_duration (a hedge starts only within try_duration)')
  return true
}

const retries = refine(struct<Config['retries']>(
  { attempts: integer(0, 10), try_duration: duration({ zero: false }), replay_buffer_bytes: integer(0, 16 * 1024 * 1024), hedge_after: nullable(duration({ zero: false })) },
  DEFAULTS.retries,
), hedgeRules)

const DNS_SERVER = 'an IP address, ip:port or [ipv6]:port (a DNS server is an address, not a name)'

/** A DNS server as the resolver takes it: `ip`, `ip:port`, `ipv6`, `[ipv6]` or `[ipv6]:port`; port 1..65535. */
const dnsServer: Check<string> = andThen(string(), (v) => {
  if (isIP(v) !== 0) return null
  const m = /^\[([^\]]+)\](?::(\d+))?$/.exec(v) ?? /^([^:[\]]+):(\d+)$/.exec(v)
  const host = m?.[1]
  if (host === undefined || (v.startsWith('[') ? isIP(host) === 0 : !isIPv4(host))) return expected(DNS_SERVER, v)
  return m?.[2] === undefined ? null : portProblem(m[2])
})

/** A DNS lookup needs a port unless SRV records give it. */
function dnsRules(d: DnsDiscoveryConfig, node: SourceNode, path: string, ctx: Ctx): boolean {
  if (d.port !== null || d.srv) return true
  ctx.report(nodeAt(node, ['port']).pos, `${path}.port`, 'required unless srv is true (SRV records carry the port)')
  return false
}

const dnsDiscovery = refine(struct<DnsDiscoveryConfig>(
  {
    name: string({ test: /^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9_.])?$/, what: 'a DNS name' }),
    port: nullable(integer(1, 65535)),
    srv: boolean,
    interval: duration({ zero: false }),
    family: oneOf(['any', 'ipv4', 'ipv6'] as const),
    servers: list(dnsServer, { nonEmpty: false }),
  },
  DEFAULTS.dnsDiscovery,
), dnsRules)

/** A Service port name (IANA_SVC_NAME: <= 15 lower-case letters, digits and "-", a letter among them) or a port number. */
const servicePort: Check<string | number> = leaf('a port name or number', (value, fromEnv) => {
  const n = fromEnv && typeof value === 'string' && INTEGER_TEXT.test(value) ? Number(value) : value
  if (typeof n === 'number') return Number.isInteger(n) && n >= 1 && n <= 65535 ? n : expected('a port number between 1 and 65535', n)
  if (typeof n === 'string' && /^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$/.test(n) && /[a-z]/.test(n) && !n.includes('--')) return n
  return expected('a Service port name (up to 15 lower-case letters, digits and "-") or a port number', value)
})

/** A kubeconfig path; with the filesystem at hand (`tether check`, start-up), it must give discovery its access. */
const kubeconfigFile: Check<string> = (node, path, ctx) => {
  const value = string()(node, path, ctx)
  if (value === INVALID) return INVALID
  const problem = ctx.files?.kubeconfig?.(value) ?? null
  return problem === null ? value : ctx.report(node.pos, path, problem)
}

const kubernetesDiscovery = struct<KubernetesDiscoveryConfig>(
  {
    service: string({ test: /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/, what: 'a Service name (lower-case letters, digits and "-", starting with a letter)' }),
    namespace: nullable(string({ test: /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/, what: 'a namespace name (lower-case letters, digits and "-")' })),
    port: servicePort,
    kubeconfig: nullable(kubeconfigFile),
    weight_annotation: nullable(string({ test: /^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/, what: 'an annotation key like tether.io/weights' })),
  },
  DEFAULTS.kubernetesDiscovery,
)

/** A DNS name as a Host header carries it (labels of letters, digits, `-` and `_`; no port, no scheme). */
const DNS_NAME = { test: /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?$/, what: 'a host name without port or scheme (e.g. tether-admin.internal)' }
/**
 * `value` as an issue may quote it: whatever comes before its last `@` (a user and password,
 * itself with a / or a #, a base64 password) is `***`, and so is a query after it (`?password=`).
 * Example: `'redis://u:pw@h:1'` -> `'redis://***@h:1'`.
 */
const withoutUserinfo = (value: string): string =>
  value.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^]*@/i, (_, scheme: string | undefined) => `${scheme ?? ''}***@`).replace(/\?[^]*$/, '?***')

/** `host:port` (a name, an IPv4 address or a bracketed IPv6 one), port 1..65535; a user and password written before it are not shown. */
const hostPort: Check<string> = andThen(string(), (v) => {
  const port = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d+)$/.exec(v)?.[1]
  return port === undefined ? shownAddress('host:port', v, HOST_PORT_SHAPE) : portProblem(port)
})

/**
 * An invalid state.redis.sentinels[] or nodes[] entry as {@link withoutUserinfo} leaves it,
 * shown when it reads as an address: maybe a scheme (a URL given for a host:port, the usual
 * mistake), a masked user and password, a host, `:` and digits (`redis://***@redis-0:6379`,
 * `sentinel-0:99999`). Not `hunter2` (a password in a host's place, or from a ${VAR} set to the
 * wrong variable: a name without a port is not told from one), `sentinel-0:hunter2`, `redis://:hunter2`.
 */
const HOST_PORT_SHAPE = /^(?:[a-z][a-z0-9+.-]*:\/\/)?(?:\*\*\*@)?(?:\[[0-9a-f:.]+\]|[a-z0-9._-]+):\d*$/i

/**
 * The issue of an invalid address-valued key (state.redis.url, sentinels[], nodes[]): `value`
 * with its user, password and query masked, quoted when that reads as an address (`shape`);
 * else named by its length only, as what is no address may be a password in the wrong place.
 */
function shownAddress(what: string, value: string, shape: RegExp): Fail {
  const shown = withoutUserinfo(value)
  return shape.test(shown) ? expected(what, shown) : new Fail(`expected ${what}, got a value of ${value.length} characters that is no address (not shown: it may hold a password)`)
}

const redisUrl: Check<string> = leaf('a redis:// or rediss:// URL', (value) => {
  if (typeof value !== 'string') return expected('a redis:// or rediss:// URL', value)
  try {
    const u = new URL(value)
    if (u.protocol === 'redis:' || u.protocol === 'rediss:') {
      // the path is the db number; one that is not (say the end of a password with a / and an
      // @, read as a path) would fail at start-up: refused here, and never shown
      // a query's parameters are read by none of Tether's code (a password there would be
      // ignored, and AUTH refused): refused, and never shown
      if (u.search !== '') return new Fail('expected a redis:// or rediss:// URL without a query (?...): Tether reads none of its parameters; write the db as the path (redis://host:6379/1) and the password in state.redis.password or as redis://user:password@host')
      if (/^\/?\d*$/.test(u.pathname)) return value
      return new Fail('expected a redis:// or rediss:// URL whose path is a db number (e.g. redis://redis:6379/0); a / in a password is written %2F')
    }
  } catch { /* reported below */ }
  // quoted only when it is an address (`http://x`, `redis-master:6379`, `redis://***@h:99999`):
  // a value that is not (`hunter2`, a password from ${REDIS_URL} set to the wrong variable;
  // `redis://:hunter2`, its `@host` forgotten) may be a password, not shown
  return shownAddress('a redis:// or rediss:// URL', value, REDIS_ADDRESS)
})

/**
 * An invalid state.redis.url as {@link withoutUserinfo} leaves it, shown whole when it reads as
 * an address: `scheme://` (or a `host:port`), a masked user and password, a host, a port of
 * digits, a db number, a masked query. Example: `redis://***@redis:99999?***`.
 */
const REDIS_ADDRESS = /^(?:[a-z][a-z0-9+.-]*:\/\/(?:\*\*\*@)?(?:\[[0-9a-f:.]+\]|[a-z0-9._-]*)(?::\d*)?|(?:\*\*\*@)?(?:\[[0-9a-f:.]+\]|[a-z0-9._-]+):\d+)(?:\/\d*)?(?:\?\*\*\*)?$/i

/** Exactly one way to reach Redis when the store is redis. */
function redisRules(st: Config['state'], node: SourceNode, path: string, ctx: Ctx): boolean {
  const r = st.redis
  if (st.store !== 'redis') {
    // a Redis set up but not used: `store: redis` forgotten (or left at memory after a copy)
    // would run every replica on its own store without a word; accepted, as it always was
    const way = r.url !== null ? 'url' : r.sentinels.length > 0 ? 'sentinels' : r.nodes.length > 0 ? 'nodes' : null
    if (way !== null) ctx.warn(nodeAt(node, ['redis', way]).pos, `${path}.redis.${way}`, `ignored with ${path}.store: ${st.store} (Tether uses Redis only with store: redis)`)
    return true
  }
  const ways = [r.url !== null, r.sentinels.length > 0, r.nodes.length > 0].filter(Boolean).length
  const at = nodeAt(node, ['redis']).pos
  if (ways !== 1) {
    ctx.report(at, `${path}.redis`, 'set exactly one of url, sentinels (with name) or nodes when store is redis')
    return false
  }
  if (r.sentinels.length > 0 && r.name === null) {
    ctx.report(at, `${path}.redis.name`, 'required with sentinels (the master name)')
    return false
  }
  if (r.sentinels.length === 0 && r.name !== null) {
    // accepted as before (a file that has it keeps loading), but told: it does nothing here
    ctx.warn(nodeAt(node, ['redis', 'name']).pos, `${path}.redis.name`, 'ignored without sentinels (it names the Sentinel master)')
  }
  if (r.sentinels.length === 0 && r.sentinel_password !== null) {
    // (it would be ignored: the password of a standalone server or Cluster is `password`)
    ctx.report(nodeAt(node, ['redis', 'sentinel_password']).pos, `${path}.redis.sentinel_password`, 'only with sentinels (the password of the server or of the Cluster nodes is state.redis.password)')
    return false
  }
  if (r.sentinels.length === 0 && r.sentinel_username !== null) {
    // (it would be ignored: the user of a standalone server or Cluster is `username`)
    ctx.report(nodeAt(node, ['redis', 'sentinel_username']).pos, `${path}.redis.sentinel_username`, 'only with sentinels (the user of the server or of the Cluster nodes is state.redis.username)')
    return false
  }
  return true
}

/** The memory store's byte bound leaves its probation segment (20%) room for the largest checkpoint. */
function memoryRules(st: Config['state'], node: SourceNode, path: string, ctx: Ctx): boolean {
  if (st.store !== 'memory' || st.memory.max_bytes >= 5 * st.max_bytes) return true
  ctx.report(nodeAt(node, ['memory', 'max_bytes']).pos, `${path}.memory.max_bytes`, `must be at least 5 x max_bytes (${5 * st.max_bytes}) when store is memory`)
  return false
}

const state = refine(refine(
  struct<Config['state']>(
    {
      store: oneOf(['memory', 'redis', 'none'] as const),
      header: string(HEADER_NAME),
      max_bytes: integer(1, 8 * 1024 * 1024),
      rehydrate: oneOf(['header', 'hook'] as const),
      hook_path: string({ test: /^\/[\x21-\x7e]*$/, what: 'a path starting with "/"' }),
      timeout: duration({ zero: false, max: 10_000 }),
      durability: oneOf(['best_effort', 'confirmed'] as const),
      confirm_timeout: duration({ zero: false, max: 60_000 }),
      memory: struct<Config['state']['memory']>({ max_bytes: integer(1024 * 1024) }, DEFAULTS.state.memory),
      redis: struct<Config['state']['redis']>(
        {
          url: nullable(redisUrl),
          password: nullable(secretString),
          username: nullable(string()),
          sentinels: list(hostPort, { nonEmpty: false }),
          name: nullable(string()),
          sentinel_password: nullable(secretString),
          sentinel_username: nullable(string()),
          nodes: list(hostPort, { nonEmpty: false }),
          key_prefix: leaf('a string', (v) => (typeof v === 'string' ? v : expected('a string', v))),
        },
        DEFAULTS.state.redis,
      ),
    },
    DEFAULTS.state,
  ),
  redisRules,
), memoryRules)

/** A shared affinity table lives in the Redis state store, so that store must be configured. */
function sharedNeedsRedis(c: Config, node: SourceNode, ctx: Ctx): boolean {
  let ok = true
  if (c.affinity.shared === 'redis' && c.state.store !== 'redis') {
    ctx.report(nodeAt(node, ['affinity', 'shared']).pos, 'affinity.shared', 'redis needs state.store: redis (the shared table lives in that Redis)')
    ok = false
  }
  if (c.health.shared === 'redis' && c.state.store !== 'redis') {
    ctx.report(nodeAt(node, ['health', 'shared']).pos, 'health.shared', 'redis needs state.store: redis (events go through that Redis)')
    ok = false
  }
  return ok
}

/**
 * An affinity header whose name holds a byte other than a letter, a digit or `-` (`X_Tenant`,
 * `X~Tenant`) is read for routing but, unless forwarding.allow_underscores, dropped from what
 * the upstream gets (see upstreamRequestHeaders): accepted, with a warning saying so, since an
 * application that reads it too would lose it without a word.
 */
function affinityHeaderForwarded(c: Config, node: SourceNode, ctx: Ctx): true {
  const name = c.affinity.key === 'header' ? c.affinity.header.name : null
  if (name !== null && !c.forwarding.allow_underscores && /[^A-Za-z0-9-]/.test(name)) {
    ctx.warn(nodeAt(node, ['affinity', 'header', 'name']).pos, 'affinity.header.name', `${name} routes, but is not forwarded to the upstream: a name with a byte other than a letter, a digit or "-" is dropped unless forwarding.allow_underscores: true`)
  }
  return true
}

/** Upstreams come from the static list, discovery (DNS, Kubernetes), or both; at least one source. */
function someUpstreams(c: Config, node: SourceNode, _path: string, ctx: Ctx): boolean {
  if (c.upstreams.length > 0 || c.discovery.dns !== null || c.discovery.kubernetes !== null) return true
  const at = nodeAt(node, ['upstreams'])
  if (at === node) ctx.report(node.pos, 'upstreams', 'missing required key (or set discovery.dns or discovery.kubernetes)')
  else ctx.report(at.pos, 'upstreams', 'expected a non-empty list (or set discovery.dns or discovery.kubernetes)')
  return false
}

const WILDCARD_HOSTS = new Set(['0.0.0.0', '::'])

/** The admin listener must not bind the proxy's own address (port 0 picks a free port). */
function distinctListeners(config: Config, node: SourceNode, _path: string, ctx: Ctx): boolean {
  const clash = (a: { host: string; port: number }, b: { host: string; port: number }): boolean =>
    a.port !== 0 && a.port === b.port && (a.host === b.host || WILDCARD_HOSTS.has(a.host) || WILDCARD_HOSTS.has(b.host))
  const { listen, admin } = config
  let ok = true
  if (clash(listen, admin.listen)) {
    const at = nodeAt(node, ['admin', 'listen'])
    ctx.report(at === node ? nodeAt(node, ['listen']).pos : at.pos, 'admin.listen', `must not be the same address as listen (${admin.listen.host}:${admin.listen.port})`)
    ok = false
  }
  const r = listen.redirect
  for (const [other, name] of [[listen, 'listen'], [admin.listen, 'admin.listen']] as const) {
    if (r === null || !clash(r, other)) continue
    ctx.report(nodeAt(node, ['listen', 'redirect']).pos, 'listen.redirect', `must not be the same address as ${name} (${r.host}:${r.port})`)
    ok = false
  }
  return ok
}

/**
 * Each https:// upstream's TLS settings: `forwarding.tls` with the keys its own `tls` sets
 * over them; an http:// upstream has none (a `tls` there is an error).
 */
function upstreamTlsOf(c: Config, node: SourceNode, ctx: Ctx): Config | Invalid {
  const items = nodeAt(node, ['upstreams'])
  let ok = true
  const upstreams = c.upstreams.map((u, i) => {
    const item = items.kind === 'seq' ? items.items[i] : undefined
    const own = item === undefined ? undefined : nodeAt(item, ['tls'])
    const given = own !== undefined && own !== item && own.kind === 'map' ? own.entries.map((e) => e.key) : []
    if (!u.url.startsWith('https:')) {
      if (u.tls !== null) {
        ctx.report(own!.pos, `upstreams[${i}].tls`, 'is for https:// upstreams only')
        ok = false
      }
      return u
    }
    const tls: Record<string, unknown> = { ...c.forwarding.tls }
    for (const key of given) tls[key] = (u.tls as unknown as Record<string, unknown>)[key]
    // a certificate or key of its own must make a pair with what it inherits
    if ((given.includes('cert') || given.includes('key')) && !pairRule(tls as unknown as UpstreamTlsConfig, own!, `upstreams[${i}].tls`, ctx)) ok = false
    return { ...u, tls: tls as unknown as UpstreamTlsConfig }
  })
  return ok ? { ...c, upstreams } : INVALID
}

const config: Check<Config> = refine(
  struct<Config>(
    {
      listen: proxyListen,
      admin: struct<Config['admin']>(
        { listen: listen(DEFAULTS.admin.listen), token: secretOrNull(headerToken, 'remove the key for no token'), allowed_hosts: list(string(DNS_NAME), { nonEmpty: false }),
          readiness: struct<Config['admin']['readiness']>({ require_upstream: oneOf(['startup', 'always'] as const) }, DEFAULTS.admin.readiness),
        },
        DEFAULTS.admin,
      ),
      upstreams: alsoCheck(list(upstream, { nonEmpty: false }), uniqueIds),
      affinity,
      timeouts: struct<Config['timeouts']>(
        {
          connect: duration({ zero: false }),
          response_headers: duration({ zero: false }),
          body_idle: duration({ zero: true }),
          client_keep_alive: duration({ zero: false }),
          client_headers: duration({ zero: false }),
          // no timer: compared with the monotonic clock as a request (h2: a stream) begins, so
          // Node's timer limit does not apply; bounded at ten years only so that a value past it
          // (a typo: `100000d`) is said rather than taken (0 is none)
          client_connection_max: duration({ zero: true, max: CONNECTION_MAX_MS }),
          queue: duration({ zero: false }),
        },
        DEFAULTS.timeouts,
      ),
      limits: struct<Config['limits']>(
        { max_header_bytes: integer(1024, 1_048_576), max_body_bytes: nullable(integer(0)), max_requests_per_connection: integer(0), max_upstream_connections: nullable(integer(1, 1_000_000)) },
        DEFAULTS.limits,
      ),
      forwarding: struct<Config['forwarding']>(
        { preserve_host: boolean, x_forwarded: boolean, upstream_header: boolean, allow_underscores: boolean, tls: upstreamTls },
        DEFAULTS.forwarding,
      ),
      log: struct<Config['log']>(
        {
          level: oneOf<LogLevel>(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']),
          access: boolean,
          session_secret: secretOrNull(secret, 'remove the key for a random secret per process'),
        },
        DEFAULTS.log,
      ),
      health,
      retries,
      discovery: struct<Config['discovery']>({ dns: nullable(dnsDiscovery), kubernetes: nullable(kubernetesDiscovery) }, DEFAULTS.discovery),
      shutdown: struct<Config['shutdown']>({ grace_period: duration({ zero: true }) }, DEFAULTS.shutdown),
      state,
      websocket: struct<Config['websocket']>(
        { max_connections: integer(1, 1_000_000), idle_timeout: duration({ zero: false }) },
        DEFAULTS.websocket,
      ),
      workers,
    },
    { ...DEFAULTS, upstreams: [] },
  ),
  (c, node, path, ctx) => someUpstreams(c, node, path, ctx) && distinctListeners(c, node, path, ctx) && sharedNeedsRedis(c, node, ctx) && affinityHeaderForwarded(c, node, ctx),
)

/** The config with every https:// upstream's TLS settings resolved. */
const resolved: Check<Config> = (node, path, ctx) => {
  const c = config(node, path, ctx)
  return c === INVALID ? INVALID : upstreamTlsOf(c, node, ctx)
}

/**
 * Validates a located config tree (`undefined` = empty file) into a deeply frozen `Config`
 * with defaults filled in, or throws one `ConfigError` listing every issue in file order.
 * `${ENV}` references in string values are substituted from `env` first. With `files`, every
 * PEM file the config names is checked (readable, the right kind, certificate and key a pair).
 */
export function validateConfig(root: SourceNode | undefined, file: string, env: Env, files: ConfigFiles | null = null): Config {
  const ctx = new Ctx(file, env, files)
  const start = { line: 1, col: 1 }
  if (root === undefined) ctx.report(start, '', 'config is empty; expected a map with at least `upstreams`')
  else if (root.kind !== 'map') ctx.report(root.pos, '', `expected a map at the top level, got ${describeNode(root)}`)
  else {
    const value = resolved(root, '', ctx)
    if (value !== INVALID) {
      const config = deepFreeze(value)
      const warnings = ctx.warnings()
      if (warnings.length > 0) WARNINGS.set(config, Object.freeze(warnings))
      return config
    }
  }
  throw new ConfigError(ctx.issues())
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    for (const child of Object.values(value)) deepFreeze(child)
    Object.freeze(value)
  }
  return value
}
