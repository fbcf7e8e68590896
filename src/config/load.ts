// Reading proxy.yaml: the only file that touches the filesystem or imports `yaml` for config.
// Parses with node ranges, reports syntax errors as `file:line:col: message`, turns the YAML
// document into validate.ts's located `SourceNode` tree and hands it over with the env.

import { readFileSync } from 'node:fs'
import { isAlias, isMap, isScalar, isSeq, LineCounter, parseDocument, type Document } from 'yaml'
import type { Config } from './schema.js'
import type { Env } from './env.js'
import { ConfigError, formatIssue, validateConfig, type Pos, type ScalarValue, type SourceNode } from './validate.js'

/** Alias expansions allowed in one file (guards against "billion laughs" documents). */
const MAX_NODES = 100_000

/**
 * Reads and validates a config file. `env` feeds `${VAR}` substitution; this is the one
 * place that defaults to `process.env`. Throws `ConfigError` (also when the file can't be read).
 */
export function loadConfigFile(path: string, env: NodeJS.ProcessEnv = process.env): Config {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new ConfigError([`${path}: cannot read config: ${(err as Error).message}`], { cause: err })
  }
  return parseConfig(text, path, env)
}

/**
 * Parses and validates config text; `fileName` only prefixes the issues. `env` defaults to
 * an empty environment (pure), so every `${VAR}` without a default is then an error.
 */
export function parseConfig(text: string, fileName: string, env: Env = {}): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, version: '1.2', schema: 'core' })
  const at = (offset: number | undefined): Pos => lineCounter.linePos(offset ?? 0)
  // Only the first syntax problem: the ones after it are mostly its echoes.
  const syntax = doc.errors[0] ?? doc.warnings[0]
  if (syntax) {
    const message = syntax.message.split('\n')[0] ?? syntax.message
    throw new ConfigError([formatIssue(fileName, at(syntax.pos[0]), '', message)], { cause: syntax })
  }

  let budget = MAX_NODES
  const expanding = new Set<unknown>() // aliases being expanded: a repeat is a cycle
  const convert = (node: unknown): SourceNode => {
    if (--budget < 0) throw new ConfigError([formatIssue(fileName, at(0), '', 'too many nodes (alias expansion?)')])
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
  return validateConfig(doc.contents === null ? undefined : convert(doc.contents), fileName, env)
}

function rangeStart(node: unknown): number | undefined {
  return (node as { range?: [number, number, number] } | null)?.range?.[0]
}

function scalarValue(value: unknown): ScalarValue {
  if (value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value
  return value === undefined ? null : String(value)
}
