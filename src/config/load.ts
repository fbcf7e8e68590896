// Reading (and writing) YAML: the only file that imports `yaml`. proxy.yaml: read, parsed with
// node ranges, syntax errors located and explained (`file:line:col`, the line, a caret, a hint),
// turned into validate.ts's located `SourceNode` tree (the PEM files it names are checked through
// tls/pem.ts). Other YAML (manifests for `tether import`, a kubeconfig) is read by
// `parseYamlDocuments`; `tether import` writes through `toYaml`.

import { readFileSync, readSync } from 'node:fs'
import { basename } from 'node:path'
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseAllDocuments, parseDocument, stringify, type Document, type YAMLError } from 'yaml'
import type { Config } from './schema.js'
import type { Env } from './env.js'
import { pemFiles } from '../tls/pem.js'
import { maskSecretLines } from '../secret-text.js'
import { CONTROL_CHARACTERS, ConfigError, escapeControls, formatIssue, validateConfig, type ConfigFiles, type Pos, type ScalarValue, type SourceNode } from './validate.js'

/**
 * Nodes that alias expansion may add to one file, all its documents together (guards against
 * "billion laughs" documents); the nodes written out are bounded by the file's size.
 */
const MAX_NODES = 100_000

/**
 * Reads and validates a config file. `env` feeds `${VAR}` substitution; this is the one
 * place that defaults to `process.env`. The PEM files it names (TLS) are read and checked too,
 * each problem located at its key. Throws `ConfigError` (also when the file can't be read).
 */
export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  return readConfigFile(path, env).config
}

/**
 * As {@link loadConfigFile}, with the text read: what a primary of workers hands each worker,
 * so they run the file as it was accepted, not as it is on disk when they start. `files` checks
 * the files the config names (default: its PEM files; cli-commands.ts adds the kubeconfig). `path` "-"
 * is stdin (`tether check -`: run refuses it, as it reads its file again on reloads): its
 * problems name `<stdin>` (`<stdin>:3:7: ...`), and the files it names by relative paths are
 * read from the working directory.
 */
export function readConfigFile(path: string, env: NodeJS.ProcessEnv = process.env, files: ConfigFiles = pemFiles): { readonly text: string; readonly config: Config } {
  const text = readConfigText(path)
  return { text, config: parseConfig(text, inputName(path), env, files) }
}

/** How messages name the input at `path`: `<stdin>` for "-" (as gcc and Python name it), else `path`. */
export function inputName(path: string): string {
  return path === '-' ? '<stdin>' : path
}

/** The config file's text ("-": stdin's); throws `ConfigError` (`<path>: cannot read config: ...`) when it cannot be read. */
export function readConfigText(path: string): string {
  let bytes: Buffer
  try {
    bytes = readInput(path)
  } catch (err) {
    throw new ConfigError([escapeControls(`${inputName(path)}: cannot read config: ${inputErrorReason(path, err)}`)], { cause: err })
  }
  const decoded = decodeYamlBytes(bytes)
  const binary = notYamlText(bytes, decoded, path)
  if (binary !== null) throw new ConfigError([binary])
  return decoded.text
}

/** How long reading stdin waits before it reads again when the pipe has nothing yet (see readInput). */
const STDIN_RETRY_MS = 10

/** What readInput waits on (nothing ever wakes it: each wait lasts STDIN_RETRY_MS). */
const STDIN_PAUSE = new Int32Array(new SharedArrayBuffer(4))

/**
 * The bytes of the file at `path`, or for "-" stdin's to its end: what `tether check -` and
 * `tether import -` read. Stdin is read a chunk at a time, not with `readFileSync(0)`: a pipe
 * left non-blocking (O_NONBLOCK belongs to the pipe, so the process that shares it may have set
 * it: a Node parent's own stdin, a shell's coprocess) answers EAGAIN while its writer has written
 * nothing yet, which `readFileSync` throws (dropping what it read before). Here each EAGAIN waits
 * STDIN_RETRY_MS and reads again, synchronously, as the config loader's callers expect. Throws
 * the read's own error otherwise (EISDIR for `< /tmp`, EBADF for a closed stdin).
 */
export function readInput(path: string): Buffer {
  if (path !== '-') return readFileSync(path)
  const chunks: Buffer[] = []
  for (;;) {
    const chunk = Buffer.allocUnsafe(65_536)
    let n: number
    try {
      n = readSync(0, chunk, 0, chunk.length, null)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err
      Atomics.wait(STDIN_PAUSE, 0, 0, STDIN_RETRY_MS)
      continue
    }
    if (n === 0) return Buffer.concat(chunks)
    chunks.push(chunk.subarray(0, n))
  }
}

/**
 * Why readInput failed for `path`, as {@link readErrorReason} says it, but for stdin given a
 * directory (`tether check - < /tmp`): that is said as such, not as an operation on "-".
 */
export function inputErrorReason(path: string, err: unknown): string {
  return path === '-' && (err as NodeJS.ErrnoException | null)?.code === 'EISDIR' ? 'standard input is a directory' : readErrorReason(err)
}

/**
 * Why a YAML file's bytes are not text, as one line naming it (its control characters escaped),
 * or null: the check a config file (readConfigText) and a manifest (`tether import`, whose "-"
 * is stdin) both go through, so both are told alike. Bytes read as UTF-16 (`decoded`) are text
 * with a zero byte beside each ASCII character: not checked. What is checked: see `notText`.
 * Example: "proxy.yaml.gz: gzip-compressed data (it starts with 1f 8b), not YAML text: decompress
 * it first (gunzip -k proxy.yaml.gz)"; "<stdin>: gzip-compressed data (...), not YAML text:
 * decompress it first (pipe it through gzip -dc)".
 */
export function notYamlText(bytes: Buffer, decoded: DecodedText, path: string): string | null {
  const why = decoded.encoding === 'utf-8' ? notText(bytes, path) : null
  return why === null ? null : escapeControls(`${inputName(path)}: ${why}`)
}

/** Files given for a config by mistake, told by their first bytes: what each is and, where it helps, what to do. */
const MAGIC: readonly { readonly bytes: readonly number[]; readonly what: string; readonly fix?: (path: string) => string }[] = [
  { bytes: [0x1f, 0x8b], what: 'gzip-compressed data', fix: (path) => decompress(path, '.gz', 'gunzip -k', 'gzip') },
  { bytes: [0x50, 0x4b, 0x03, 0x04], what: 'a zip archive' },
  { bytes: [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], what: 'xz-compressed data', fix: (path) => decompress(path, '.xz', 'unxz -k', 'xz') },
  { bytes: [0x28, 0xb5, 0x2f, 0xfd], what: 'zstd-compressed data', fix: (path) => decompress(path, '.zst', 'unzstd', 'zstd') },
  { bytes: [0x7f, 0x45, 0x4c, 0x46], what: 'an ELF executable' },
  { bytes: [0x89, 0x50, 0x4e, 0x47], what: 'a PNG image' },
]

/**
 * The command that decompresses `path`, as a hint that works when run as given: `gunzip -k`,
 * `unxz -k` and `unzstd` only take a file with the format's suffix (gzip 1.12 says "unknown
 * suffix -- ignored" of `proxy.yaml`), so a file without it is written out with `-dc` beside it.
 * Stdin ("-") is piped through the tool.
 * Examples: `decompress("proxy.yaml.gz", ...)` -> `decompress it first (gunzip -k proxy.yaml.gz)`;
 * `decompress("proxy.yaml", ".gz", "gunzip -k", "gzip")` -> `decompress it first (gzip -dc proxy.yaml > proxy.decompressed.yaml)`.
 */
function decompress(path: string, suffix: string, unpack: string, tool: string): string {
  if (path === '-') return `decompress it first (pipe it through ${tool} -dc)`
  if (path.endsWith(suffix) && basename(path) !== suffix) return `decompress it first (${unpack} ${shellWord(path)})`
  const ext = /\.ya?ml$/.exec(basename(path))?.[0] ?? ''
  const out = `${path.slice(0, path.length - ext.length)}.decompressed${ext || '.yaml'}`
  return `decompress it first (${tool} -dc ${shellWord(path)} > ${shellWord(out)})`
}

/** `word` as a POSIX shell reads it back: as it is when safe, else in single quotes. Example: `a b` -> `'a b'`. */
function shellWord(word: string): string {
  const path = word.startsWith('-') ? `./${word}` : word // else the tool takes `-svc.yaml.gz` for its options
  return /^[\w./+,:@%=-]+$/.test(path) ? path : `'${path.replaceAll("'", `'\\''`)}'`
}

/**
 * More control bytes than this (NUL and the C0 controls but tab, line ends and ESC), and a file
 * is binary data. A few are read as before: a NUL in a comment (an export tool's). Bytes that
 * are not UTF-8 are no sign of binary data: a comment saved as Latin-1 or cp1252 is text, read
 * as it always was (each such byte replaced by U+FFFD).
 */
const NON_TEXT_ALLOWED = 8

/**
 * Why the bytes of a file read as UTF-8 are not YAML text, in words for one line after its
 * path, or null: a known binary format by its first bytes, or more than a few NUL or other
 * control bytes (YAML allows none, 1.2 5.1; any binary file has many). Such a file was parsed
 * as YAML and answered with an error that quoted its bytes.
 * Example:
 * "gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (gunzip -k proxy.yaml.gz)".
 */
function notText(bytes: Buffer, path: string): string | null {
  const magic = MAGIC.find((m) => m.bytes.every((b, i) => bytes[i] === b))
  if (magic !== undefined) {
    const hex = magic.bytes.map((b) => b.toString(16).padStart(2, '0')).join(' ')
    return `${magic.what} (it starts with ${hex}), not YAML text${magic.fix === undefined ? '' : `: ${magic.fix(path)}`}`
  }
  let controls = 0
  let first = -1
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!
    if (b >= 0x20 || b === 0x09 || b === 0x0a || b === 0x0d || b === 0x1b) continue
    if (first < 0) first = i
    controls++
  }
  if (controls > NON_TEXT_ALLOWED) return `binary data (${controls} NUL or other control bytes, the first at ${lineAndColumn(bytes, first)}), not YAML text`
  return null
}

/**
 * "line L, column C" of byte `offset`, the column in characters as an editor counts them: a
 * character outside the BMP (an emoji) is one, a byte order mark none.
 * Example: the byte after "\ufeff# 🚀 " -> `line 1, column 5`.
 */
function lineAndColumn(bytes: Buffer, offset: number): string {
  const before = bytes.subarray(0, offset).toString('utf8').replace(/^\ufeff/, '').split('\n')
  return `line ${before.length}, column ${[...before.at(-1)!].length + 1}`
}

/** A file's text and how its bytes were read: `bom` when a byte order mark said so. */
export interface DecodedText {
  readonly text: string
  readonly encoding: 'utf-8' | 'utf-16le' | 'utf-16be'
  readonly bom: boolean
}

/**
 * A YAML file's bytes as text: UTF-8, or UTF-16 as YAML 1.2 (5.2) requires a reader to accept,
 * told by its byte order mark or, without one, by the zero bytes beside its ASCII characters.
 * Windows PowerShell 5's `>` writes UTF-16LE with a BOM (`tether import x.yaml > proxy.yaml`,
 * `kubectl get -o yaml > x.yaml`), which read as UTF-8 was one garbled string. Example: bytes
 * FF FE 61 00 -> { text: "a", encoding: 'utf-16le', bom: true }. Without a BOM one zero byte
 * is not enough (a UTF-8 file whose second byte is NUL is not UTF-16): see `utf16Without`.
 */
export function decodeYamlBytes(bytes: Buffer): DecodedText {
  const [a, b] = [bytes[0], bytes[1]]
  if (a === 0xff && b === 0xfe) return { text: new TextDecoder('utf-16le').decode(bytes), encoding: 'utf-16le', bom: true }
  if (a === 0xfe && b === 0xff) return { text: new TextDecoder('utf-16be').decode(bytes), encoding: 'utf-16be', bom: true }
  if (utf16Without(bytes, 1)) return { text: new TextDecoder('utf-16le').decode(bytes), encoding: 'utf-16le', bom: false }
  if (utf16Without(bytes, 0)) return { text: new TextDecoder('utf-16be').decode(bytes), encoding: 'utf-16be', bom: false }
  return { text: bytes.toString('utf8'), encoding: 'utf-8', bom: false }
}

/** How many bytes at the start of a file without a BOM `utf16Without` looks at. */
const SNIFF_BYTES = 64

/**
 * Whether `bytes` (no BOM) are UTF-16 with each character's high byte at `high` (1: LE, 0: BE):
 * a whole number of 2-byte units, the first an ASCII character (YAML 1.2's rule: x 00 / 00 x),
 * and the high byte zero in at least half of the first 32 units, as in any YAML text with its
 * ASCII keys and indentation. UTF-8 has a zero byte only for U+0000: `a\0bc: d` is UTF-8.
 */
function utf16Without(bytes: Buffer, high: 0 | 1): boolean {
  if (bytes.length < 2 || bytes.length % 2 !== 0 || bytes[high] !== 0 || bytes[1 - high] === 0) return false
  const units = Math.min(bytes.length, SNIFF_BYTES) / 2
  let ascii = 0
  for (let i = 0; i < units; i++) if (bytes[2 * i + high] === 0 && bytes[2 * i + 1 - high] !== 0) ascii++
  return ascii * 2 >= units
}

/**
 * Why a file could not be read, in one line without the path (the caller names it once): an OS
 * error's words and its code, else the error's message. Example: for `readFileSync('x')` on a
 * directory -> "illegal operation on a directory (EISDIR)"; a missing file -> "no such file or
 * directory (ENOENT)"; `EACCES` -> "permission denied (EACCES)".
 */
export function readErrorReason(err: unknown): string {
  const e = err as Partial<NodeJS.ErrnoException> | null | undefined
  const message = typeof e?.message === 'string' ? e.message.replace(/\s*\n[\s\S]*$/, '') : ''
  const code = typeof e?.code === 'string' ? e.code : undefined
  // Node's form: "EISDIR: illegal operation on a directory, read" / "ENOENT: ..., open 'x'"
  const words = code === undefined ? null : new RegExp(`^${code}: (.+?)(?:, [a-z_]+(?: '.*')?)?$`).exec(message)?.[1]
  if (words !== undefined && words !== null) return `${words} (${code})`
  return message !== '' ? message : code ?? String(err)
}

/** Validates `text` as the config file at `path` would be (its PEM files read and checked). */
export function parseConfigFile(text: string, path: string, env: NodeJS.ProcessEnv = process.env): Config {
  return parseConfig(text, path, env, pemFiles)
}

/**
 * Parses and validates config text; `fileName` prefixes the issues, and relative PEM paths are
 * read from its directory. `env` defaults to an empty environment (pure), so every `${VAR}`
 * without a default is then an error. `files` checks the PEM files named (default: none, only
 * their paths' shape).
 */
export function parseConfig(text: string, fileName: string, env: Env = {}, files: ConfigFiles | null = null): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, version: '1.2', schema: 'core' })
  // Only the first syntax problem: the ones after it are mostly its echoes.
  const syntax = doc.errors[0] ?? doc.warnings[0]
  if (syntax) throw syntaxError(text, fileName, lineCounter, syntax)
  return validateConfig(sourceTree(doc, (offset) => lineCounter.linePos(offset ?? 0), fileName), fileName, env, files)
}

/**
 * Parses a YAML stream of one or more documents (`---` between them; YAML 1.2 core schema)
 * into located trees, one per document, skipping empty documents. Throws `ConfigError` with
 * the same located, explained message as for proxy.yaml on a syntax error. Pure.
 * Example: `parseYamlDocuments('kind: Service\n---\nkind: Ingress\n', 'app.yaml')` -> two map nodes.
 */
export function parseYamlDocuments(text: string, fileName: string): SourceNode[] {
  return parseYamlParts(text, fileName, [{ start: 0, end: text.length, line: 1 }])[0]!
}

/** A part of a YAML text that is a YAML stream of its own: `[start, end)`, from the first column of line `line`. */
export interface YamlPart {
  readonly start: number
  readonly end: number
  readonly line: number
}

/**
 * As {@link parseYamlDocuments} for each of `parts` of `text` (each parsed alone, its nodes and
 * syntax errors located in `text`), one alias budget for them all; one list of trees per part.
 * For `tether import`, which reads only the objects it converts out of a big export.
 * Example: `parseYamlParts('a: 1\nb: 2\n', 'f', [{ start: 5, end: 10, line: 2 }])` -> `[[map b at f:2]]`.
 */
export function parseYamlParts(text: string, fileName: string, parts: readonly YamlPart[]): SourceNode[][] {
  const budget = { left: MAX_NODES } // one for the file: 200 documents under it each are not
  return parts.map(({ start, end, line }) => {
    const part = start === 0 && end === text.length ? text : text.slice(start, end)
    const lineCounter = new LineCounter()
    const docs = parseAllDocuments(part, { lineCounter, prettyErrors: false, version: '1.2', schema: 'core' })
    if (!Array.isArray(docs)) return [] // an empty stream
    const at = (offset: number | undefined): Pos => {
      const pos = lineCounter.linePos(offset ?? 0)
      return line === 1 ? pos : { line: pos.line + line - 1, col: pos.col }
    }
    const out: SourceNode[] = []
    for (const doc of docs) {
      const syntax = doc.errors[0] ?? doc.warnings[0]
      if (syntax) throw syntaxError(part, fileName, lineCounter, syntax, line)
      const tree = sourceTree(doc, at, fileName, budget)
      if (tree !== undefined && !(tree.kind === 'scalar' && tree.value === null)) out.push(tree)
    }
    return out
  })
}

/**
 * The plain value of a located tree (maps as objects, lists as arrays), e.g. to read a
 * kubeconfig. Example: `plainValue(parseYamlDocuments('a: [1, x]', 'f')[0]!)` -> `{ a: [1, 'x'] }`.
 */
export function plainValue(node: SourceNode): unknown {
  switch (node.kind) {
    case 'scalar': return node.value
    case 'seq': return node.items.map(plainValue)
    case 'map': return Object.fromEntries(node.entries.map((e) => [e.key, plainValue(e.value)]))
  }
}

/**
 * YAML text of a plain JSON value: block style, multi-line strings as `|` blocks, no line
 * folding, and strings quoted wherever a YAML 1.1 reader (kubectl's) or a 1.2 one (Tether's)
 * would read a plain scalar as something else (`"yes"`, `"on"`, `"1.0"`).
 * Example: `toYaml({ a: [1, 'yes'], b: 'x\ny\n' })` -> `'a:\n  - 1\n  - "yes"\nb: |\n  x\n  y\n'`.
 */
export function toYaml(value: unknown): string {
  return stringify(value, { version: '1.1', lineWidth: 0, blockQuote: 'literal', aliasDuplicateObjects: false })
}

/**
 * The located tree of one parsed document (undefined when it is empty); aliases expanded within
 * `budget` (the nodes they add; a document's own nodes, as many as a big `kind: List` has, are not counted).
 */
function sourceTree(doc: Document.Parsed, at: (offset: number | undefined) => Pos, fileName: string, budget = { left: MAX_NODES }): SourceNode | undefined {
  const expanding = new Set<unknown>() // aliases being expanded: a repeat is a cycle
  const convert = (node: unknown): SourceNode => {
    if (expanding.size > 0 && --budget.left < 0) throw new ConfigError([formatIssue(fileName, at(0), '', 'too many nodes (alias expansion?)')])
    const pos = at(rangeStart(node))
    if (isAlias(node)) {
      const target = node.resolve(doc as Document)
      if (target === undefined) throw new ConfigError([formatIssue(fileName, pos, '', `unknown alias *${node.source}`)])
      if (expanding.has(target)) throw new ConfigError([formatIssue(fileName, pos, '', `alias *${node.source} refers to itself`)])
      expanding.add(target)
      try {
        return { ...convert(target), pos }
      } finally {
        expanding.delete(target)
      }
    }
    if (isMap(node)) {
      const entries = node.items.map((pair) => {
        const keyPos = at(rangeStart(pair.key))
        const value = convert(pair.value)
        // An empty value (`key:`) is located at its key, not after the colon.
        const empty = value.kind === 'scalar' && value.value === null && isScalar(pair.value) && !pair.value.source
        return { key: isScalar(pair.key) ? String(pair.key.value) : '?', keyPos, value: empty ? { ...value, pos: keyPos } : value }
      })
      return { kind: 'map', pos, entries }
    }
    if (isSeq(node)) return { kind: 'seq', pos, items: node.items.map(convert) }
    return { kind: 'scalar', pos, value: scalarValue(isScalar(node) ? node.value : null) }
  }
  return doc.contents === null ? undefined : convert(doc.contents)
}

function rangeStart(node: unknown): number | undefined {
  return (node as { range?: [number, number, number] } | null)?.range?.[0]
}

function scalarValue(value: unknown): ScalarValue {
  if (value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value
  return value === undefined ? null : String(value)
}

// ---------------------------------------------------------------------------------------------
// YAML syntax errors, explained: the parser's short message, located where the mistake most
// likely is (an unclosed quote or bracket where it opens, not where the parser gave up), the
// line with a caret under that column, and the common cause as a hint.

/**
 * A ConfigError for a YAML syntax error. Example for a missing closing quote on line 3:
 *   config/proxy.yaml:3:10: YAML syntax error: Missing closing "quote
 *      3 |     url: "http://127.0.0.1:9001
 *        |          ^
 *   hint: this quoted value is never closed: end it with " on the same line
 */
function syntaxError(text: string, fileName: string, lines: LineCounter, error: YAMLError, firstLine = 1): ConfigError {
  const { offset, hint } = explain(text, error)
  const pos = lines.linePos(Math.min(offset, text.length))
  const message = (error.message.split('\n')[0] ?? error.message).replace(/; please use YAML\.\w+\(\)$/, '')
  const shown = { line: pos.line + firstLine - 1, col: pos.col } // `text` a part of the file from line firstLine
  return new ConfigError([formatIssue(fileName, shown, '', `YAML syntax error: ${message}`)], {
    cause: error,
    detail: [...excerpt(text, pos, shown.line), escapeControls(`hint: ${hint}`)],
  })
}

/** Where the mistake behind `error` most likely is (an offset in `text`) and its common cause. */
function explain(text: string, error: YAMLError): { offset: number; hint: string } {
  const at = Math.min(error.pos[0], text.length)
  const line = lineAround(text, at)
  const tab = line.indent.indexOf('\t')
  if (tab !== -1 || error.code === 'TAB_AS_INDENT') {
    return {
      offset: tab === -1 ? at : line.start + tab,
      hint: 'YAML indents with spaces only, and this line has a tab (shown as →): replace it with spaces',
    }
  }
  const quote = /closing (["'])quote/.exec(error.message)?.[1]
  if (error.code === 'MISSING_CHAR' && quote !== undefined) {
    return {
      offset: openingQuote(text, at, quote) ?? at,
      hint: `this quoted value is never closed: end it with ${quote} on the same line`,
    }
  }
  const flow = /^Flow (sequence|map) in block collection/.exec(error.message)?.[1]
  if (flow !== undefined) {
    const [open, close] = flow === 'sequence' ? ['[', ']'] : ['{', '}']
    return {
      offset: openingBracket(text, at, open, close) ?? at,
      hint: `this ${open} is not closed: a one-line ${open}${close} ${flow === 'sequence' ? 'list' : 'map'} needs its ${close} before the next key`,
    }
  }
  switch (error.code) {
    case 'BLOCK_AS_IMPLICIT_KEY': {
      if (/:\s/.test(text.slice(at, line.end))) {
        return { offset: at, hint: 'a value that contains ": " must be quoted, e.g. key: "a: b"' }
      }
      const next = lineAround(text, nextContentLine(text, line.end))
      if (next.start < text.length && next.indent.length > line.indent.length) {
        return {
          offset: next.start + next.indent.length,
          hint: 'this line is indented more than the key above it, so YAML reads it as part of that value: line it up with the keys beside it',
        }
      }
      break
    }
    case 'BAD_INDENT':
      return {
        offset: line.start + line.indent.length,
        hint: 'the keys of one map must start at the same column: this line is indented differently from the key above it',
      }
    case 'MISSING_CHAR':
      if (/without - indicator/.test(error.message)) {
        return {
          offset: line.start + line.indent.length,
          hint: 'this line is indented like an item of the list above but is not lined up with its keys: indent it like them, or start a new item with "- "',
        }
      }
      break
    case 'MULTILINE_IMPLICIT_KEY': {
      const content = text.slice(line.start + line.indent.length, line.end).trimEnd()
      const lineNo = text.slice(0, line.start).split('\n').length
      if (content.startsWith('- ') || content === '-') {
        return { offset: at, hint: 'a list item ("- ...") where a key was expected: indent it under the key whose list it is' }
      }
      if (!content.includes(':')) {
        return { offset: at, hint: `a key needs a colon after it: write "${maskedLine(text, lineNo).slice(line.indent.length).trimEnd()}:"` }
      }
      return { offset: at, hint: 'a key must be on one line and end with ": "' }
    }
    case 'DUPLICATE_KEY':
      return { offset: at, hint: 'this key is already set above in the same map: keep one of them' }
    case 'BAD_SCALAR_START':
      return { offset: at, hint: `a value starting with ${error.message.slice(-1)} must be quoted, e.g. key: "${error.message.slice(-1)}..."` }
    case 'UNEXPECTED_TOKEN':
      // `{ url: ${APP_URL} }`: inside { } or [ ] a plain value ends at "{", so "${" breaks it
      if (text[at] === '{' && text[at - 1] === '$') {
        return { offset: at - 1, hint: 'a ${VAR} inside { } or [ ] must be quoted, since YAML reads its { as the start of a map: write "${VAR}" (quotes around the whole value)' }
      }
      return { offset: at, hint: 'there is text after the end of a value (after a closing quote or bracket): quote the whole value or remove the extra text' }
    case 'MULTIPLE_DOCS':
      return { offset: at, hint: 'the file holds more than one YAML document (a "---" line): keep one config per file' }
  }
  return { offset: at, hint: 'check the indentation (spaces, keys of one map at the same column) and the quotes and brackets on this line and the one above' }
}

/** The line holding `offset`: where it starts and ends, and its leading spaces and tabs. */
function lineAround(text: string, offset: number): { start: number; end: number; indent: string } {
  const start = text.lastIndexOf('\n', offset - 1) + 1
  const nl = text.indexOf('\n', offset)
  const end = nl === -1 ? text.length : nl
  return { start, end, indent: /^[ \t]*/.exec(text.slice(start, end))![0] }
}

/** The start of the first line after `from` (a line end) that is not blank or a comment. */
function nextContentLine(text: string, from: number): number {
  const re = /\n([ \t]*)(?=[^\s#])/g
  re.lastIndex = from
  const m = re.exec(text)
  return m === null ? text.length : m.index + 1
}

/** The unclosed `quote` a scalar ending at `at` opened with (escaped quotes skipped). */
function openingQuote(text: string, at: number, quote: string): number | undefined {
  for (let i = at - 1; i >= 0; i--) {
    if (text[i] !== quote) continue
    if (quote === '"' && text[i - 1] === '\\') continue
    if (quote === "'" && text[i - 1] === "'") { i--; continue }
    return i
  }
  return undefined
}

/** The `open` bracket before `at` that no `close` matches. */
function openingBracket(text: string, at: number, open: string, close: string): number | undefined {
  let depth = 0
  for (let i = at - 1; i >= 0; i--) {
    if (text[i] === close) depth++
    else if (text[i] === open && depth-- === 0) return i
  }
  return undefined
}

/** Line `n` (from 1) of `text` with its secrets masked, also a secret value's second and later lines. */
function maskedLine(text: string, n: number): string {
  return maskSecretLines(text.split('\n').map((l) => l.replace(/\r$/, '')))[n - 1] ?? ''
}

/**
 * `line` with each control character shown as one visible character, so that a caret under it
 * keeps its column and the terminal gets no escape sequence: C0 as its Control Pictures symbol
 * (U+2400 + code: NUL "␀", ESC "␛"), DEL as "␡", the others (C1, line separators, bidi controls)
 * as "�". Example: `visibleControls("a\x1b[31m")` -> "a␛[31m".
 */
function visibleControls(line: string): string {
  return line.replace(CONTROL_CHARACTERS, (c) => {
    const code = c.charCodeAt(0)
    return code < 0x20 ? String.fromCharCode(0x2400 + code) : code === 0x7f ? '\u2421' : '\ufffd'
  })
}

/**
 * Line `pos.line` of `text` and a caret under `pos.col`, tabs shown as "→" so the caret lines up,
 * and its secrets (a password/token/secret key's value, also on the lines it goes on over, a URL's
 * password) masked character for character, as this goes to stderr and to `tether check`'s output.
 */
function excerpt(text: string, pos: Pos, lineNumber = pos.line): string[] {
  const source = text.split('\n')[pos.line - 1]
  if (source === undefined) return []
  let shown = visibleControls(maskedLine(text, pos.line).replaceAll('\t', '→'))
  let col = pos.col
  const WIDTH = 100
  if (shown.length > WIDTH && col > WIDTH / 2) { // a long line (JSON on one line): the part around the column
    const from = col - WIDTH / 2
    shown = `…${shown.slice(from, from + WIDTH)}`
    col = col - from + 1
  }
  const n = String(lineNumber)
  return [`  ${n} | ${shown}`, `  ${' '.repeat(n.length)} | ${' '.repeat(col - 1)}^`]
}
