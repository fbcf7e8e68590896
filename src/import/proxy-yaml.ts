// Writes proxy.yaml text from imported settings: every key under its section, a comment above
// it saying where it came from and, when Tether behaves differently, how. Pure: text out;
// scalars are written by the config module's YAML writer, so quoting follows the one adapter.
import { escapeControls, toYaml } from '../config/index.js'
import type { Setting } from './manifests.js'

/** Sections in the order proxy.yaml documents them; keys of other sections follow. */
const ORDER = ['listen', 'admin', 'upstreams', 'discovery', 'affinity', 'timeouts', 'limits', 'retries', 'health', 'state', 'shutdown', 'log']
const WIDTH = 100

interface Node {
  setting: Setting | null
  readonly children: Map<string, Node>
}

/**
 * proxy.yaml text: `header` lines as comments, then the settings as nested maps (a later
 * setting of the same path replaces an earlier one), each preceded by `# from ...`, its note
 * and `# differs: ...` comments (control characters escaped), wrapped at 100 columns; a blank line between sections.
 * Example: `[{ path: 'affinity.key', value: 'cookie', from: 'ingress.yaml:7 ...' }]` ->
 * "affinity:\n  # from ingress.yaml:7 ...\n  key: cookie\n".
 */
export function renderProxyYaml(header: readonly string[], settings: readonly Setting[]): string {
  const root: Node = { setting: null, children: new Map() }
  for (const s of settings) {
    let node = root
    for (const part of s.path.split('.')) {
      let next = node.children.get(part)
      if (next === undefined) {
        next = { setting: null, children: new Map() }
        node.children.set(part, next)
      }
      node = next
    }
    node.setting = s
  }
  const out: string[] = header.flatMap((line) => (line === '' ? ['#'] : wrap(line, '# ', '#   ')))
  if (out.length > 0) out.push('')
  const sections = [...root.children.keys()].sort((a, b) => rank(a) - rank(b))
  sections.forEach((key, i) => {
    if (i > 0) out.push('')
    write(out, key, root.children.get(key)!, '')
  })
  return `${out.join('\n')}\n`
}

function rank(section: string): number {
  const i = ORDER.indexOf(section)
  return i === -1 ? ORDER.length : i
}

function write(out: string[], key: string, node: Node, indent: string): void {
  const s = node.setting
  if (s !== null) {
    if (s.from !== undefined) out.push(...wrap(escapeControls(`from ${s.from}`), `${indent}# `, `${indent}#   `))
    if (s.note !== undefined) out.push(...wrap(escapeControls(s.note), `${indent}# `, `${indent}#   `))
    if (s.differs !== undefined) out.push(...wrap(escapeControls(`differs: ${s.differs}`), `${indent}# `, `${indent}#   `))
  }
  if (node.children.size === 0) {
    out.push(`${indent}${key}: ${s === null ? 'null' : scalar(s)}`)
    return
  }
  out.push(`${indent}${key}:`)
  for (const [k, child] of node.children) write(out, k, child, `${indent}  `)
}

/** One scalar as YAML: raw text as given, else through the YAML writer (quoted only if needed). */
function scalar(s: Setting): string {
  if (s.raw === true) return String(s.value)
  return toYaml(s.value).trimEnd()
}

/** `text` in lines of at most WIDTH columns, the first prefixed with `first`, the rest with `rest`. */
function wrap(text: string, first: string, rest: string): string[] {
  const lines: string[] = []
  let line = first
  for (const word of text.split(/\s+/).filter((w) => w !== '')) {
    const prefix = lines.length === 0 ? first : rest
    if (line.length > prefix.length && line.length + 1 + word.length > WIDTH) {
      lines.push(line)
      line = rest + word
    } else {
      line = line.length > prefix.length ? `${line} ${word}` : line + word
    }
  }
  lines.push(line)
  return lines
}
