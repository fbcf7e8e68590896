// Secrets in text Tether shows or logs: a line of a config file quoted in an error (a value
// after a password/token/secret key, a URL's password) and an error message or stack that may
// hold a URL with credentials. Pure: string in, string out; no I/O, no logger.

/** `scheme://user:password@`: group 1 up to the password, group 2 the password. */
const URL_USERINFO = /([a-z][a-z0-9+.-]*:\/\/[^\s:@/]*:)([^\s@]*)@/gi

/**
 * A key whose value is a secret: its name is or ends with password, passphrase, token or secret
 * (any case, `_` or `-` before it), or key-data (a kubeconfig's `client-key-data`, a private
 * key), unquoted or quoted, then `:` and a space or the line end.
 * Group 1 what comes before the key, group 2 the key with its quotes and the colon.
 */
const SECRET_KEY = /(^|[\s{,[?-])((["']?)[A-Za-z0-9_-]*(?:password|passphrase|token|secret|key[-_]data)\3[ \t]*:)(?=[ \t]|$)/gi

/** A secret key at the start of a line with its colon left out (`password hunter2`): the rest is its value. */
const SECRET_KEY_NO_COLON = /^([ \t]*(?:-[ \t]+)?)((["']?)[A-Za-z0-9_-]*(?:password|passphrase|token|secret|key[-_]data)\3)(?=[ \t]+[^\s#:][^:]*$)/gi

/**
 * `text` with the password of every `scheme://user:password@` replaced by `***`, for an error
 * message or stack that is logged. Example:
 * `maskUrlCredentials('connect redis://u:pw@h:6379 failed')` -> `'connect redis://u:***@h:6379 failed'`.
 */
export function maskUrlCredentials(text: string): string {
  return text.replace(URL_USERINFO, (_, before: string) => `${before}***@`)
}

/**
 * One line of a YAML file with its secrets masked, each character by one `*`, so a caret under a
 * column still lines up: the password of a URL with credentials, and the value after a key
 * named like a secret, also one whose colon is missing (block style: the rest of the line; flow
 * style: up to the next `,`, `}` or `]` outside quotes). A quote that opens or closes the value stays, so a caret at an unclosed
 * quote still points at it. Lines without secrets come back unchanged. Example:
 * `maskSecretLine('admin: { token: s3cret, x: [ }')` -> `'admin: { token: ******, x: [ }'`.
 */
export function maskSecretLine(line: string): string {
  const out = [...line]
  const hide = (from: number, to: number): void => { for (let i = from; i < to; i++) out[i] = '*' }
  for (const m of line.matchAll(URL_USERINFO)) hide(m.index + m[1]!.length, m.index + m[1]!.length + m[2]!.length)
  for (const m of [...line.matchAll(SECRET_KEY), ...line.matchAll(SECRET_KEY_NO_COLON)]) {
    let start = m.index + m[1]!.length + m[2]!.length
    while (line[start] === ' ' || line[start] === '\t') start++
    const end = inFlow(line, m.index) ? flowValueEnd(line, start) : line.length
    let last = end
    while (last > start && /\s/.test(line[last - 1]!)) last--
    const quote = line[start] === '"' || line[start] === "'" ? line[start]! : null
    const close = quote === null ? -1 : line.indexOf(quote, start + 1)
    for (let i = quote === null ? start : start + 1; i < last; i++) if (i !== close) out[i] = '*'
  }
  return out.join('')
}

/** Whether `at` is inside a `{` or `[` opened earlier on the line (outside quotes). */
function inFlow(line: string, at: number): boolean {
  let depth = 0
  let quote: string | null = null
  for (let i = 0; i < at; i++) {
    const c = line[i]!
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '"' || c === "'") quote = c
    else if (c === '{' || c === '[') depth++
    else if ((c === '}' || c === ']') && depth > 0) depth--
  }
  return depth > 0
}

/** Where a flow value starting at `start` ends: the next `,`, `}` or `]` outside quotes, else the line end. */
function flowValueEnd(line: string, start: number): number {
  let quote: string | null = null
  for (let i = start; i < line.length; i++) {
    const c = line[i]!
    if (quote !== null) { if (c === quote) quote = null; continue }
    if (c === '"' || c === "'") quote = c
    else if (c === ',' || c === '}' || c === ']') return i
  }
  return line.length
}
