// Secrets in text Tether shows or logs: a line of a config file or manifest quoted in an error
// (a value after a password/token/secret key, on that line or the ones it goes on over, a
// Kubernetes Secret's data, a URL's password) and an error message or stack that may hold a URL
// with credentials; and a value given where a number is expected, shown only if it is one.
// Pure: strings in, strings out; no I/O, no logger.

/**
 * A password's characters: up to the last `@` before the host (a URL parser's split:
 * `redis://u:p@ss@h` has the password `p@ss`), a `#` or `:` in it too (`redis://u:p#w@h`, as
 * written in a config file before it is percent-encoded), with spaces in it when the word after
 * them has an `@` too (`redis://u:pa ss@h`, which a URL parser takes, as `pa%20ss`; in
 * `redis://u:pw@h failed for a@b` the password is `pw`: `failed` has no `@`). Each space run is
 * looked past once.
 */
const PASSWORD = String.raw`(?:[^\s/?]|[ \t]+(?=[^\s/?]*@))*`

/**
 * Not a password but a port and the text after it: a number of up to 5 digits then a space
 * (maybe after a `,`, `;`, `.` or `)`), as in `http://a:8080 then mail ops@corp.com`, where
 * `a:8080` is the host and port and the `@` belongs to a later word. (A password that is such a
 * number and then a space is not masked: a URL parser would take it, but no text can tell it
 * from a port.)
 */
const NOT_A_PORT = String.raw`(?!\d{1,5}[,;.)]?[ \t])`

/**
 * {@link NOT_A_PORT} for a bracketed IPv6 host (after `scheme://`): `http://[::1]:8080 then mail
 * ops@corp.com` is a host and port, not a user `[` and a password `:1]:8080 then mail ops`
 * (a user holds no `[` in any URL that a person writes).
 */
const NOT_AN_IPV6_PORT = String.raw`(?!\[[0-9a-z:.%]*\]:\d{1,5}[,;.)]?[ \t])`

/**
 * `scheme://user:password@`: group 1 up to the password, group 2 the password (see
 * {@link PASSWORD}). The scheme starts where no scheme character is before it, so a long run of
 * letters is scanned once, not once per letter.
 */
const URL_USERINFO = new RegExp(String.raw`(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/${NOT_AN_IPV6_PORT}[^\s:@/?#]*:)${NOT_A_PORT}(${PASSWORD})@`, 'gi')

/**
 * {@link URL_USERINFO} in a YAML line, where a value's bounds are known: its password may also
 * hold spaces up to the last `@` before a `/`, `?`, a comment (` #`), a quote or a flow indicator
 * (`url: "redis://u:p a s@h:6379"`, a plain value to its line's end), else as in a message.
 */
const LINE_URL_USERINFO = new RegExp(String.raw`(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/${NOT_AN_IPV6_PORT}[^\s:@/?#"']*:)${NOT_A_PORT}((?:[^/?"',\]}\s]|[ \t](?![ \t]*#))*(?=@)|${PASSWORD}(?=@))@`, 'gi')

/**
 * {@link URL_USERINFO} inside a quoted YAML value, by its quote: its password may hold spaces and
 * ` #` (no comment starts inside quotes), up to the last `@` before a `/`, `?` or the closing
 * quote (`url: "redis://u:a #b c@h:6379"`). Used only where the line's quote is open.
 */
const QUOTED_URL_USERINFO = new Map(['"', "'"].map((q) => [q, new RegExp(String.raw`(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/${NOT_AN_IPV6_PORT}[^\s:@/?#"']*:)${NOT_A_PORT}([^/?${q}]*)@`, 'gi')]))

/**
 * `scheme://[user]:REST` in a YAML line where REST is no port and no `@` follows (`url:
 * "redis://:hunter2`, the `@host` forgotten; `redis://u:hunter2`): group 1 up to the colon,
 * group 2 REST, to a `/`, `?`, a quote, a space or a flow indicator. A port (`redis://h:6379`,
 * `http://h:80/x`, one that ends a sentence or a parenthesis, `http://h:9901.`) is not matched, nor a
 * port from the environment (`http://h:${PORT}`), nor a bracketed IPv6 host (`http://[::1]:1`).
 */
const LINE_URL_NO_HOST = /(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*:\/\/[^\s:@/?#"'[\]{},]*:)(?!\d*[.)]?(?:[/?#"'\s,\]}]|$)|\$\{)([^\s/?"',\]}@]+)(?=[/?"'\s,\]}]|$)/gi

/**
 * A query parameter (`?name=value`, `&name=value`): group 1 up to the value, group 2 its name,
 * group 3 its value (up to a `&`, a space or a quote). The ones named like a secret
 * ({@link SECRET_NAME}) are masked: ioredis takes `redis://h?password=pw` (and
 * `sentinelPassword`) as options. Its name holds no `?`, so each character is scanned once.
 */
const QUERY_PARAM = /([?&]([^=&?\s#"']+)=)([^\s&"']*)/g

/** A name that is or ends with password, passphrase, token, secret or key-data (any case). */
const SECRET_NAME = /(?:password|passphrase|token|secret|key[-_]data)$/i

/** Whether a query parameter's name (percent-encoded as written: `pass%77ord`) is a secret's. */
function secretParam(name: string): boolean {
  let decoded = name
  try {
    decoded = decodeURIComponent(name.replace(/\+/g, ' '))
  } catch { /* as written */ }
  return SECRET_NAME.test(decoded)
}

/**
 * `user:password@host:port` without a scheme (as a Sentinel or node address may be written:
 * Tether refuses it, and its error shows `***@host:port`, but a syntax error's source line
 * shows it as written): group 1 the user and its colon, group 2 the password up to the last `@`
 * before a host and port (a `#` in it too: no comment starts inside a word). A time
 * (`10:30@host:22`, `10:30:15@host:22`) is no user and password. It starts after a space, a
 * quote, `[` or `{` only, and its password
 * holds none of them, so each character is scanned once.
 */
const ADDRESS_USERINFO = /(?<![^\s"'[{])(?!(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?:\.\d+)?@)([^\s:@/?#"'[\]{}]*:)([^\s/?"'[\]{}]*)@(?=(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d+(?:["'\s,\]}]|$))/g

/**
 * A key whose value is a secret: its name is or ends with password, passphrase, token or secret
 * (any case, `_` or `-` before it), or key-data (a kubeconfig's `client-key-data`, a private
 * key), unquoted or quoted, then `:` and not a second `:` (`"password":"x"`, JSON written
 * without spaces, and `password:x` are masked too), also in a comment, written `#password:` too
 * (a password commented out is still a password).
 * Group 1 what comes before the key, group 2 the key with its quotes and the colon.
 */
const SECRET_KEY = /(^|[\s{,[?#-])((["']?)[A-Za-z0-9_-]*(?:password|passphrase|token|secret|key[-_]data)\3[ \t]*:)(?!:)/gi

/** A secret key at the start of a line with its colon left out (`password hunter2`): the rest is its value. */
const SECRET_KEY_NO_COLON = /^([ \t]*(?:-[ \t]+)?)((["']?)[A-Za-z0-9_-]*(?:password|passphrase|token|secret|key[-_]data)\3)(?=[ \t]+[^\s#:][^:]*$)/gi

/**
 * A key of a YAML line where a key stands (at the line's start after its indentation and any
 * `- ` or `? `, after `{` or `,` of a flow mapping, or in a comment), its colon followed by a
 * space or the line's end, as {@link SECRET_KEY} finds a secret one: group 1 what comes before
 * it, group 2 the key with its quotes and the colon, group 4 its name. Not a word inside a value
 * (`http://app-tokyo:8080`: review s65 r3).
 */
const ANY_KEY = /(^[ \t]*(?:[-?][ \t]+)*|[{,#][ \t]*)((["']?)([A-Za-z0-9_-]+)\3[ \t]*:)(?=[ \t]|$)/g

/** The words a secret key's name is or ends with, for {@link misspeltSecretKeys}. */
const SECRET_WORDS = ['password', 'passphrase', 'token', 'secret']

/** Words within two edits of a secret word that are Tether's keys and hold no secret (affinity.cookie.secure). */
const NOT_SECRET_WORDS: ReadonlySet<string> = new Set(['secure'])

/**
 * The keys of `line` (as {@link ANY_KEY} matches them) whose name, or a part of it between `_`
 * and `-`, of 4 characters or more, is within two edits of a secret word but is none
 * (`pasword:`, `tokn:`, `sentinel_pasword:`): a misspelt secret key's value is still a secret,
 * masked as {@link SECRET_KEY}'s is (the line is quoted under a syntax error that the misspelling
 * does not cause, or in an unknown-key error's source line).
 */
function misspeltSecretKeys(line: string): RegExpExecArray[] {
  // (SECRET_KEY's own are left to it)
  return [...line.matchAll(ANY_KEY)].filter((m): m is RegExpExecArray => !SECRET_NAME.test(m[4]!) && misspeltSecretName(m[4]!))
}

/**
 * Whether `name`, or a part of it between `_` and `-` of 4 characters or more, is a misspelt secret
 * word (see {@link misspeltSecretKeys}): within two edits of password or passphrase, one of token
 * or secret, or any of them with two neighbouring letters swapped (`secert`, `toekn`). Two edits
 * of the short words took words that hold no secret (`tokyo`, `open`, `broken`: review s65 r3).
 */
function misspeltSecretName(name: string): boolean {
  const lower = name.toLowerCase()
  return [lower, ...lower.split(/[-_]/)].some((part) => part.length >= 4 && !NOT_SECRET_WORDS.has(part) &&
    SECRET_WORDS.some((w) => editDistance(part, w) <= (w.length >= 8 ? 2 : 1) || swapped(part, w)))
}

/** Whether `a` is `b` with two neighbouring letters swapped. Example: `swapped('secert', 'secret')` -> true. */
function swapped(a: string, b: string): boolean {
  if (a.length !== b.length) return false
  let i = 0
  while (i < a.length && a[i] === b[i]) i++
  return i < a.length - 1 && a[i] === b[i + 1] && a[i + 1] === b[i] && a.slice(i + 2) === b.slice(i + 2)
}

/**
 * Whether a name (a key, an annotation's, a query parameter's) is a secret's as a config line's
 * masking reads one: it is or ends with password, passphrase, token, secret or key-data, or is
 * within two edits of one of those words. Example: `secretName("auth-tokn")` -> true.
 */
export function secretName(name: string): boolean {
  return SECRET_NAME.test(name) || misspeltSecretName(name)
}

/** Edit distance (insert, delete, substitute), two-row dynamic programming. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = row
  }
  return prev[b.length]!
}

/**
 * `text` with the password of every `scheme://user:password@` replaced by `***`, and the value
 * of every query parameter named like a secret (`?password=`, `&sentinelPassword=`), for an error
 * message or stack that is logged. Example:
 * `maskUrlCredentials('connect redis://u:pw@h:6379 failed')` -> `'connect redis://u:***@h:6379 failed'`.
 * `keepMasked`: a password that is all `*` is left as it is, for a ConfigError's message, whose
 * config line is masked by {@link maskSecretLines} already: it keeps its columns, and the caret
 * under it its place. (Not for a log line: a real password may be all `*`.)
 */
export function maskUrlCredentials(text: string, keepMasked = false): string {
  // a password masked already, one `*` per character (a config line under a caret), stays as it is
  const keep = (secret: string): string => keepMasked && /^\*+$/.test(secret) ? secret : '***'
  return text
    .replace(URL_USERINFO, (_, before: string, password: string) => `${before}${keep(password)}@`)
    .replace(QUERY_PARAM, (all: string, before: string, name: string, value: string) => value !== '' && secretParam(name) ? `${before}${keep(value)}` : all)
}

/**
 * One line of a YAML file with its secrets masked, each character by one `*`, so a caret under a
 * column still lines up: the password of a URL with credentials, and the value after a key
 * named like a secret, also one whose colon is missing (block style: the rest of the line; flow
 * style: up to the next `,`, `}` or `]` outside quotes). A quote that opens or closes the value stays, so a caret at an unclosed
 * quote still points at it. Lines without secrets come back unchanged. Example:
 * `maskSecretLine('admin: { token: s3cret, x: [ }')` -> `'admin: { token: ******, x: [ }'`.
 * A value can go on over the lines below (a `|` or `>` block, a quoted or plain scalar on more
 * lines): {@link maskSecretLines} masks those too.
 */
export function maskSecretLine(line: string): string {
  return maskLine(line).masked
}

/**
 * The lines of a YAML file with their secrets masked as by {@link maskSecretLine}, and also the
 * lines a secret's value goes on over: after a secret key whose value runs to its line's end
 * (or is empty, `|`, `>`, an unclosed quote), each line indented more than that key (for a `|`
 * or `>` block: as much as the block's first line, at least) is masked after its indentation. Example:
 * `maskSecretLines(['password: |', '  hunter2', 'db: 1'])` -> `['password: *', '  *******', 'db: 1']`.
 * In a Kubernetes Secret (a manifest for `tether import`), the value of every key under its
 * `data:` or `stringData:` is masked too, whatever its name (in flow style or JSON: all of it,
 * keys too, up to its closing bracket); and so is a value anchored
 * (`pw: &pw hunter2`) where a secret key's alias (`password: *pw`) takes it from.
 */
export function maskSecretLines(lines: readonly string[]): string[] {
  const inSecret = kubernetesSecretLines(lines)
  const anchors = secretAnchors(lines)
  let open: Open | null = null // a secret key whose value may go on below
  let explicit: number | null = null // the indentation of a `? password` line just before
  let data: number | null = null // the indentation of a Kubernetes Secret's `data:` or `stringData:`
  let flow: number | null = null // the depth of a Secret's data in flow style (JSON) still open
  let collection: Collection | null = null // a `{` or `[` opened on an earlier line, still open
  return lines.map((line, i) => {
    const indent = /^[ \t]*/.exec(line)![0].length
    const inCollection = collection
    collection = nextCollection(line, indent, collection)
    if (open !== null && indent === line.length) return line
    // (a list under a key may start at the key's own column: `secret:` then `- s1`)
    const item = open !== null && open.empty && indent === open.key && /^-(?:[ \t]|$)/.test(line.slice(indent))
    if (open !== null && (indent > open.key || item) && indent >= (open.content ?? 0)) {
      if (open.block) open.content ??= indent // a `|` or `>` block ends at a line indented less than its first
      return line.slice(0, indent) + '*'.repeat(line.length - indent)
    }
    if (data !== null && indent < line.length && (indent <= data || !inSecret[i])) data = null
    // `? password` then `: hunter2`: an explicit key, its value on the next line after the `:`
    let value = explicit === indent && line[indent] === ':' ? { key: indent, start: indent + 1 } : null
    explicit = indent < line.length && EXPLICIT_SECRET_KEY.test(line) ? indent : null
    // a Secret's data: every key's value, whatever the key is named (`tls.key`, `DB_PASS`)
    const dataKey = data === null ? null : /^[ \t]*[^\s:#][^:]*?:(?=[ \t]|$)/.exec(line)
    if (value === null && dataKey !== null) value = { key: indent, start: dataKey[0].length }
    if (inSecret[i] && /^[ \t]*(?:data|stringData)[ \t]*:[ \t]*(?:#.*)?$/.test(line)) data = indent
    const masked = maskLine(line, value, anchors, inCollection?.indent ?? null)
    open = masked.open
    // a Secret's data in flow style or JSON (`"data": {` ... `}`, maybe over many lines): all of it
    const flowData = flow === null && inSecret[i] ? SECRET_FLOW_DATA.exec(line) : null
    if (flow === null && flowData === null) return masked.masked
    const out = masked.masked.split('')
    flow = maskFlow(line, out, flowData === null ? 0 : flowData.index + flowData[0].length, flow ?? 1)
    return out.join('')
  })
}

/**
 * A flow collection (`{` or `[`) open at a line's end: how deep, the quote open in it (a quoted
 * value going on below), and the indentation of the line that opened it (a value in it goes on
 * over the lines indented more than that line).
 */
interface Collection { readonly depth: number; readonly quote: string | null; readonly indent: number }

/** The flow collection still open after `line` (at `indent`), given the one open before it. */
function nextCollection(line: string, indent: number, before: Collection | null): Collection | null {
  let depth = before?.depth ?? 0
  let quote = before?.quote ?? null
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '#' && (i === 0 || line[i - 1] === ' ' || line[i - 1] === '\t')) break
    // outside a collection, a quote or a bracket starts one only where a value starts (after
    // `: `, `- `, `? ` or at the line's start): in `note: range [0, 10)` the `[` is text
    if (depth === 0 && !/(?:^|[:?-][ \t])[ \t]*$/.test(line.slice(0, i))) continue
    if (c === '"' || c === "'") quote = c
    else if (c === '{' || c === '[') depth++
    else if ((c === '}' || c === ']') && depth > 0) depth--
  }
  return depth > 0 ? { depth, quote, indent: before?.indent ?? indent } : null
}

/** A Kubernetes Secret's `data:` or `stringData:` (quoted or not) whose value opens a `{` or `[`. */
const SECRET_FLOW_DATA = /(?:^|[\s{,])(["']?)(?:data|stringData)\1[ \t]*:[ \t]*[{[]/

/**
 * Masks in `out` the characters of `line` from `from` that are inside a flow collection open
 * `depth` deep (brackets and quotes followed), up to the bracket that closes it; the depth
 * still open at the line's end, or null once closed.
 */
function maskFlow(line: string, out: string[], from: number, depth: number): number | null {
  let quote: string | null = null
  for (let i = from; i < line.length; i++) {
    const c = line[i]!
    if (quote !== null) { if (c === quote) quote = null }
    else if (c === '"' || c === "'") quote = c
    else if (c === '{' || c === '[') depth++
    else if ((c === '}' || c === ']') && --depth === 0) return null
    if (!/\s/.test(c)) out[i] = '*'
  }
  return depth
}

/** `kind: Secret`, in block or flow style or JSON (`"kind": "Secret",`). */
const KIND_SECRET = /(?:^|[\s{,])(["']?)kind\1[ \t]*:[ \t]*(["']?)Secret\2[ \t]*(?:[,}#]|$)/

/**
 * For each line, whether it is in a YAML document (between `---` lines) that is a Kubernetes
 * Secret (`kind: Secret` at any place in it, before or after its data), as a manifest read by
 * `tether import` may be.
 */
function kubernetesSecretLines(lines: readonly string[]): boolean[] {
  const out: boolean[] = []
  let from = 0
  const end = (to: number): void => {
    const secret = lines.slice(from, to).some((l) => KIND_SECRET.test(l))
    for (let i = from; i < to; i++) out[i] = secret
    from = to
  }
  lines.forEach((l, i) => { if (/^(?:---|\.\.\.)(?:[ \t]|$)/.test(l)) end(i) })
  end(lines.length)
  return out
}

/** `? password` (an explicit key, YAML's `?`, whose value is on a line of its own starting with `:`). */
const EXPLICIT_SECRET_KEY = /^[ \t]*\?[ \t]+(["']?)[A-Za-z0-9_-]*(?:password|passphrase|token|secret|key[-_]data)\1[ \t]*$/i

/**
 * A secret key whose value runs to its line's end: its column, whether the value is a `|` or `>`
 * block or empty (a list may follow at the key's column), and a block's indentation once seen.
 */
interface Open { readonly key: number; readonly block: boolean; readonly empty: boolean; content?: number }

/**
 * `line` masked, and the first secret key whose value runs to the line's end (null for none).
 * `value`: a secret value that starts on this line at `start` (after its key's `:`, the key at column `key`).
 * `anchors`: the names of anchors whose value is a secret (see {@link secretAnchors}).
 * `collection`: the indentation of the line that opened a flow collection still open at this
 * line's start (`x: { p: 1,` then `  password: "hun` then `  ter2" }`), else null.
 */
function maskLine(line: string, value: { key: number; start: number } | null = null, anchors: ReadonlySet<string> = NO_ANCHORS, collection: number | null = null): { masked: string; open: Open | null } {
  const out = line.split('') // UTF-16 units, as the match indexes and a caret's column count
  let open: Open | null = null
  const hide = (from: number, to: number): void => { for (let i = from; i < to; i++) out[i] = '*' }
  for (const m of [...line.matchAll(LINE_URL_USERINFO), ...line.matchAll(ADDRESS_USERINFO), ...line.matchAll(LINE_URL_NO_HOST)]) hide(m.index + m[1]!.length, m.index + m[1]!.length + m[2]!.length)
  let depths: number[] | null = null
  for (const m of line.includes('=') ? line.matchAll(QUERY_PARAM) : []) {
    if (!secretParam(m[2]!)) continue
    // in a flow collection, a plain value ends at a `,`, `]` or `}`
    depths ??= flowDepths(line)
    const value = depths[m.index]! > 0 ? /^[^,\]}]*/.exec(m[3]!)![0] : m[3]!
    hide(m.index + m[1]!.length, m.index + m[1]!.length + value.length)
  }
  if (line.includes('"') || line.includes("'")) {
    let quotes: (string | null)[] | null = null
    for (const [quote, re] of QUOTED_URL_USERINFO) {
      for (const m of line.matchAll(re)) {
        quotes ??= quotesOpen(line)
        if (quotes[m.index] === quote) hide(m.index + m[1]!.length, m.index + m[1]!.length + m[2]!.length)
      }
    }
  }
  const values = [...line.matchAll(SECRET_KEY), ...line.matchAll(SECRET_KEY_NO_COLON), ...misspeltSecretKeys(line)].map((m) => {
    const key = m.index + m[1]!.length
    return { key, start: key + m[2]!.length }
  })
  // a value anchored where a secret key's alias (`password: *pw`) takes it from: `pw: &pw hunter2`
  for (const m of anchors.size === 0 ? [] : line.matchAll(ANCHOR)) {
    const at = m.index + m[1]!.length // in block style the value's lines below go by the line's indentation
    if (anchors.has(m[2]!)) values.push({ key: inFlow(line, at) ? at : /^[ \t]*/.exec(line)![0].length, start: m.index + m[0].length })
  }
  for (let { key, start } of value === null ? values : [value, ...values]) {
    while (line[start] === ' ' || line[start] === '\t') start++
    const before = scan(line, key)
    const end = before.depth > 0 ? flowValueEnd(line, start) : line.length
    // a value going on below a flow collection's line (`x: { a: 1, password: "hun` then
    // `  ter2" }`) goes on over the lines indented more than that line, not more than its key;
    // in a collection opened on an earlier line, more than the line that opened it
    const own = before.depth > 0 ? /^[ \t]*/.exec(line)![0].length : key
    const column = collection !== null ? Math.min(collection, own) : own
    // a tag or an anchor (`!!str`, `&pw`) may come before the value's opening quote
    const at = start + PROPERTIES.exec(line.slice(start))![0].length
    const quote = line[at] === '"' || line[at] === "'" ? line[at]! : null
    // in a flow collection, a quoted value closed on its line goes on no further (JSON:
    // `"password": "x"` then `},` and the rest of the file)
    const closed = (collection !== null || before.depth > 0) && quote !== null && closingQuote(line, at) !== -1
    // a key in a comment (`#password:`, `# token: x`): its value ends with the line
    if (!closed && end === line.length && (open === null || column < open.key) && !before.comment) open = { key: column, block: /^[|>]/.test(line.slice(start)), empty: /^(?:#.*)?$/.test(line.slice(start)) }
    let last = end
    while (last > start && /\s/.test(line[last - 1]!)) last--
    const close = quote === null ? -1 : closingQuote(line, at)
    for (let i = start; i < last; i++) if (i !== close && !(quote !== null && i === at)) out[i] = '*'
  }
  return { masked: out.join(''), open }
}

const NO_ANCHORS: ReadonlySet<string> = new Set()

/** For each column of `line`, how many `{` or `[` are open there, as {@link scan} reads it (in one pass). */
function flowDepths(line: string): number[] {
  const out: number[] = []
  let depth = 0
  let quote: string | null = null
  let comment = false
  for (let i = 0; i < line.length; i++) {
    out.push(depth)
    const c = line[i]!
    if (comment) continue
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '"' || c === "'") quote = c
    else if (c === '#' && (i === 0 || line[i - 1] === ' ' || line[i - 1] === '\t')) comment = true
    else if (c === '{' || c === '[') depth++
    else if ((c === '}' || c === ']') && depth > 0) depth--
  }
  return out
}

/** For each column of `line`, the quote open there (outside comments, as {@link scan} reads it), else null. */
function quotesOpen(line: string): (string | null)[] {
  const out: (string | null)[] = []
  let quote: string | null = null
  let comment = false
  for (let i = 0; i < line.length; i++) {
    out.push(quote)
    const c = line[i]!
    if (comment) continue
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '"' || c === "'") quote = c
    else if (c === '#' && (i === 0 || line[i - 1] === ' ' || line[i - 1] === '\t')) comment = true
  }
  return out
}

/** Where the quoted scalar whose opening quote is at `at` closes on `line` (`''` and `\\"` are no close), else -1. */
function closingQuote(line: string, at: number): number {
  const quote = line[at]
  for (let i = at + 1; i < line.length; i++) {
    if (quote === '"' && line[i] === '\\') i++
    else if (line[i] === quote) { if (quote === "'" && line[i + 1] === "'") i++; else return i }
  }
  return -1
}

/** An anchor (`&name`) and the spaces after it: group 1 what comes before it, group 2 its name. */
const ANCHOR = /(^|[\s{,[:-])&([^\s,[\]{}]+)[ \t]*/g

/** An alias (`*name`) at a value's start: group 1 its name. */
const ALIAS = /^\*([^\s,[\]{}]+)/

/** The names of the anchors that a secret key's value is an alias of (`password: *pw`), anywhere in `lines`. */
function secretAnchors(lines: readonly string[]): Set<string> {
  const names = new Set<string>()
  for (const line of lines) {
    if (!line.includes('*')) continue
    for (const m of line.matchAll(SECRET_KEY)) {
      const name = ALIAS.exec(line.slice(m.index + m[0].length).trimStart())?.[1]
      if (name !== undefined) names.add(name)
    }
  }
  return names
}

/** A value's tag and anchor (`!!str &pw `), each followed by a space. */
const PROPERTIES = /^(?:[!&][^\s,[\]{}]*[ \t]+)*/

/** Whether `at` is inside a `{` or `[` opened earlier on the line (outside quotes and comments). */
function inFlow(line: string, at: number): boolean {
  return scan(line, at).depth > 0
}

/**
 * The line up to `at`, read as YAML: how many `{` or `[` are open there, and whether `at` is in a
 * comment (a `#` at the line's start or after a space, outside quotes: in
 * `x: { a: "b #c", password: "hun` the key is not in a comment), and the quote open there.
 * `depth` and `quote`: what is open at the line's start (a collection opened on an earlier line).
 */
function scan(line: string, at: number, depth = 0, quote: string | null = null): { depth: number; comment: boolean; quote: string | null } {
  for (let i = 0; i < at; i++) {
    const c = line[i]!
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '"' || c === "'") quote = c
    else if (c === '#' && (i === 0 || line[i - 1] === ' ' || line[i - 1] === '\t')) return { depth, comment: true, quote }
    else if (c === '{' || c === '[') depth++
    else if ((c === '}' || c === ']') && depth > 0) depth--
  }
  return { depth, comment: false, quote }
}

/**
 * Where a flow value starting at `start` ends: the next `,`, `}` or `]` outside quotes and
 * outside a `[...]` or `{...}` the value opens (a list of secrets, `secret: [s1, s2]`), else the line end.
 */
function flowValueEnd(line: string, start: number): number {
  let quote: string | null = null
  let depth = 0
  for (let i = start; i < line.length; i++) {
    const c = line[i]!
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '"' || c === "'") quote = c
    else if (c === '[' || c === '{') depth++
    else if ((c === ']' || c === '}') && depth > 0) { if (--depth === 0) return i + 1 }
    else if (depth === 0 && (c === ',' || c === '}' || c === ']')) return i
  }
  return line.length
}

/**
 * A value given where a number is expected (an environment variable such as TETHER_WORKER), as
 * an error shows it: quoted when it is a number (a number is no secret: `"-1"`, `"1.5"`), else
 * named by its length only, as any other text may be a password or token set to the wrong
 * variable. Example: `shownNumber("-1")` -> `'"-1"'`; `shownNumber("hunter2")` -> `'a value of 7 characters (not shown)'`.
 */
export function shownNumber(value: string): string {
  return /^[+-]?\d{0,20}(?:\.\d{0,20})?$/.test(value) ? JSON.stringify(value) : `a value of ${value.length} characters (not shown)`
}
