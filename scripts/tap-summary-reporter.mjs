// tap reporter for `npm test` (tap --reporter=./scripts/tap-summary-reporter.mjs). It owns
// what the test run prints: by default one line per test file, every failure with its context
// and a summary; with TETHER_TEST_OUTPUT=tap, tap's raw TAP unchanged. Either way the last
// line is "N passed, N failed". Being a reporter (not a pipe), it never touches tap's exit
// code. It only reads tap's stream (parsed with tap-parser, which tap itself uses).
import { StringDecoder } from 'node:string_decoder'
import { Transform } from 'node:stream'
import { inspect } from 'node:util'
import { Parser } from 'tap-parser'

/** Output lines kept per test file; the last OUTPUT_LINES are shown when the file fails. */
const OUTPUT_LINES = 30
/** Failures shown in full per file; the rest are listed by name. */
const DETAILED_FAILURES = 10
/** Diagnostic keys that describe how tap spawned a file, not why it failed. */
const HIDDEN_DIAG = new Set(['stdio', 'cwd', 'externalID', 'command', 'args', 'test'])
/** Diagnostic keys printed first (what differed), then the rest, then where. */
const FIRST_DIAG = ['found', 'wanted', 'compare', 'pattern', 'diff']
const LAST_DIAG = ['at', 'stack', 'source']

/**
 * @typedef {object} FileRecord one test file: its leaf results, how it ended, what it printed
 * @property {string} name the path tap ran
 * @property {number} pass
 * @property {number} fail
 * @property {number} skip
 * @property {number} todo
 * @property {number | null} timeMs tap's time for the file
 * @property {string} exit how its process ended, when that failed it ("exit code 1", ...)
 * @property {boolean} closed its line was printed
 * @property {boolean} verdict tap's ok for the file (true until its closing point says otherwise)
 * @property {{ path: string[], diag: object, fileLevel: boolean }[]} failures
 * @property {string[]} output its last OUTPUT_LINES stdout lines
 * @property {number} outputTotal how many stdout lines it printed
 */

/**
 * A tap stream reporter (tap instantiates it with no arguments and pipes its TAP stream in).
 * `output` is 'summary' (the default) or 'tap'; without it, TETHER_TEST_OUTPUT decides.
 *
 * Summary output, for example:
 *   ok   [1/2] test/hash.test.ts  27 passed  0.1s
 *   FAIL [2/2] test/load.test.ts  3 passed, 1 failed  0.4s
 *   ...the failure: file, test path, message, diagnostics, last lines of the file's output...
 *   files: 2 (1 ok, 1 failed)  asserts: 30 passed, 1 failed, 0 skipped, 0 todo  time: 4.1s
 *   30 passed, 1 failed
 */
export default class SummaryReporter extends Transform {
  #raw
  #parser = new Parser()
  #decoder = new StringDecoder('utf8')
  #lineBuf = ''
  /** tap's final tally ("# { total: N, pass: N, fail: N, ... }"), once seen. */
  #tally = null
  /** tap's total run time in ms ("# time=..." at the top level), once seen. */
  #timeMs = null
  #started = Date.now()
  #plan = 0
  #done = 0
  /** @type {Map<string, FileRecord>} in order of first appearance */
  #files = new Map()
  #counts = { pass: 0, fail: 0, skip: 0, todo: 0 }
  #skips = []
  #todos = []
  #bailout = null
  #broken = null

  constructor(options = {}) {
    super()
    const output = options.output ?? process.env.TETHER_TEST_OUTPUT ?? 'summary'
    this.#raw = output === 'tap'
    this.#watch(this.#parser, null, [])
    this.#parser.on('plan', (p) => { this.#plan = Math.max(0, p.end - p.start + 1) })
    this.#parser.on('bailout', (reason) => {
      this.#bailout = reason || true
      if (!this.#raw) this.#print(`Bail out!${reason ? ` ${reason}` : ''}`)
    })
  }

  _transform(chunk, _enc, cb) {
    const text = typeof chunk === 'string' ? chunk : this.#decoder.write(chunk)
    if (this.#raw) this.push(chunk)
    this.#scan(text)
    if (!this.#broken) {
      try { this.#parser.write(text) } catch (err) { this.#break(err) }
    }
    cb()
  }

  _flush(cb) {
    const rest = this.#decoder.end()
    if (rest) {
      this.#scan(rest)
      if (!this.#broken) this.#parser.write(rest)
    }
    if (this.#lineBuf) this.#scanLine(this.#lineBuf)
    if (!this.#broken) {
      try { this.#parser.end() } catch (err) { this.#break(err) }
    }
    for (const rec of this.#files.values()) if (!rec.closed) this.#closeFile(rec, null)
    if (!this.#raw) {
      try { this.#report() } catch (err) { this.#print(`(the test reporter failed: ${err?.message ?? err})`) }
    }
    const { pass, fail } = this.#closingCounts()
    cb(null, `${pass} passed, ${fail} failed\n`)
  }

  /** The closing line's numbers: tap's own tally, and never fewer failures than were seen. */
  #closingCounts() {
    const seenFail = this.#counts.fail
    if (!this.#tally) return { pass: this.#counts.pass, fail: Math.max(seenFail, 1) }
    const t = this.#tally
    const pass = t.pass ?? 0
    let fail = t.fail ?? 0
    // anything counted but neither passing, skipped nor todo is a failure
    const other = (t.total ?? 0) - pass - fail - (t.skip ?? 0) - (t.todo ?? 0)
    if (other > 0) fail += other
    return { pass, fail: Math.max(fail, seenFail, this.#bailout ? 1 : 0) }
  }

  #break(err) {
    this.#broken = err
    if (!this.#raw) this.#print(`(the test reporter could not parse tap's output: ${err?.message ?? err}; run with TETHER_TEST_OUTPUT=tap for the raw stream)`)
  }

  #print(line) {
    if (!this.#raw) this.push(`${line}\n`)
  }

  // Top-level lines are scanned apart from the parser: a bail-out stops the parser, but
  // tap still prints its tally afterwards.
  #scan(text) {
    this.#lineBuf += text
    let nl
    while ((nl = this.#lineBuf.indexOf('\n')) !== -1) {
      this.#scanLine(this.#lineBuf.slice(0, nl))
      this.#lineBuf = this.#lineBuf.slice(nl + 1)
    }
  }

  #scanLine(line) {
    const tally = /^# \{ (total: .*) \}\s*$/.exec(line)
    if (tally) {
      const parsed = {}
      for (const part of tally[1].split(',')) {
        const [k, v] = part.split(':').map((s) => s.trim())
        if (k && v !== undefined) parsed[k] = Number(v)
      }
      this.#tally = parsed
      return
    }
    const time = /^# time=([\d.]+)ms\s*$/.exec(line)
    if (time) this.#timeMs = Number(time[1])
  }

  /**
   * Follow one parser (and its subtests). `file` is the test file the parser belongs to
   * (null for tap's root, whose subtests are the files); `path` is the subtest names below it.
   */
  #watch(parser, file, path) {
    let lastChild = null
    parser.on('child', (child) => {
      lastChild = child
      if (file === null) {
        this.#fileRecord(child.name)
        this.#watch(child, child.name, [])
      } else {
        this.#watch(child, file, [...path, child.name])
      }
    })
    parser.on('assert', (res) => {
      const closes = lastChild
      lastChild = null
      // A subtest's closing point only repeats its children's verdict: not a result of its own.
      const procedural = closes !== null && closes.results !== null && res.name === closes.name
        && res.ok === closes.results.ok && closes.results.count > 0 && !res.todo && !res.skip
      if (file === null) this.#rootAssert(res, closes, procedural)
      else if (!procedural) this.#result(this.#fileRecord(file), path, res)
    })
    if (file !== null) {
      parser.on('extra', (line) => this.#output(file, line))
      parser.on('comment', (line) => {
        if (!/^\s*#\s*(time=|Subtest:)/.test(line)) this.#output(file, line)
      })
    } else {
      // tap-parser hands a file's non-TAP lines (its stdout) to the top level, still indented
      parser.on('extra', (line) => {
        if (lastChild !== null) this.#output(lastChild.name, line.replace(/^ {4}/, ''))
        else this.#print(line.replace(/\n$/, ''))
      })
    }
  }

  /** A test point at tap's top level: a file's verdict, or tap's own (a timeout). */
  #rootAssert(res, closes, procedural) {
    const expired = typeof res.diag?.expired === 'string' && res.diag.expired !== 'TAP' ? res.diag.expired : null
    const name = expired ?? closes?.name ?? res.name
    const rec = this.#fileRecord(name)
    if (!procedural) this.#result(rec, [], res)
    if (!rec.closed) this.#closeFile(rec, res)
  }

  #result(rec, path, res) {
    if (res.skip) {
      rec.skip++; this.#counts.skip++
      this.#skips.push({ file: rec.name, path: [...path, res.name], reason: res.skip })
    } else if (res.todo) {
      rec.todo++; this.#counts.todo++
      this.#todos.push({ file: rec.name, path: [...path, res.name], reason: res.todo })
    } else if (res.ok) {
      rec.pass++; this.#counts.pass++
    } else {
      rec.fail++; this.#counts.fail++
      rec.failures.push({ path: [...path, res.name], diag: res.diag ?? {}, fileLevel: path.length === 0 && res.name === rec.name })
    }
  }

  #fileRecord(name) {
    let rec = this.#files.get(name)
    if (!rec) {
      rec = { name, pass: 0, fail: 0, skip: 0, todo: 0, timeMs: null, exit: '', closed: false, failures: [], output: [], outputTotal: 0, verdict: true }
      this.#files.set(name, rec)
    }
    return rec
  }

  #output(file, line) {
    const rec = this.#fileRecord(file)
    for (const l of line.replace(/\n$/, '').split('\n')) {
      rec.output.push(l)
      rec.outputTotal++
      if (rec.output.length > OUTPUT_LINES) rec.output.shift()
    }
  }

  /** A file is done: print its one line. `res` is its closing test point (null if none came). */
  #closeFile(rec, res) {
    rec.closed = true
    this.#done++
    if (res) {
      rec.timeMs = res.time
      rec.verdict = res.ok
      rec.exit = exitText(res.diag)
    }
    if (this.#raw) return
    const ok = rec.verdict && rec.fail === 0
    const width = String(Math.max(this.#plan, this.#done)).length
    const progress = this.#plan ? `[${String(this.#done).padStart(width)}/${this.#plan}] ` : ''
    const time = rec.timeMs === null ? '' : `  ${seconds(rec.timeMs)}`
    const exit = !ok && rec.exit ? `  ${rec.exit}` : ''
    this.#print(`${ok ? 'ok  ' : 'FAIL'} ${progress}${rec.name}  ${countsText(rec)}${time}${exit}`)
  }

  #report() {
    const failed = [...this.#files.values()].filter((r) => r.failures.length > 0 || !r.verdict)
    if (failed.length > 0) {
      const total = failed.reduce((n, r) => n + Math.max(r.failures.length, 1), 0)
      this.#print('')
      this.#print(`── ${total} failure${total === 1 ? '' : 's'} ${'─'.repeat(60)}`)
      let n = 0
      for (const rec of failed) {
        const failures = rec.failures.length > 0 ? rec.failures
          : [{ path: [], diag: {}, fileLevel: true }]
        failures.forEach((f, i) => {
          n++
          this.#print('')
          this.#print(`${n}) ${rec.name}`)
          this.#print(`   ${describe(f, rec)}`)
          if (i >= DETAILED_FAILURES) return
          // a file-level failure's heading already says how the process ended
          const diag = f.fileLevel ? { ...f.diag, exitCode: undefined, signal: undefined } : f.diag
          for (const line of diagLines(diag)) this.#print(`   ${line}`)
        })
        if (failures.length > DETAILED_FAILURES) {
          this.#print(`   (details for the first ${DETAILED_FAILURES} failures of this file; npm test -- --tap ${rec.name} shows all)`)
        }
        if (rec.output.length > 0) {
          const of = rec.outputTotal > rec.output.length ? `last ${rec.output.length} of ${rec.outputTotal}` : `${rec.output.length}`
          this.#print('')
          this.#print(`   stdout of ${rec.name} (${of} line${rec.outputTotal === 1 ? '' : 's'}):`)
          for (const line of rec.output) this.#print(`   | ${line}`)
        }
      }
    }
    for (const [label, list] of [['skipped', this.#skips], ['todo', this.#todos]]) {
      if (list.length === 0) continue
      this.#print('')
      this.#print(`${label} (${list.length}):`)
      for (const s of list) {
        const reason = typeof s.reason === 'string' ? `: ${s.reason}` : ''
        this.#print(`  ${s.file} > ${s.path.join(' > ')}${reason}`)
      }
    }
    const files = [...this.#files.values()]
    const okFiles = files.filter((r) => r.verdict && r.fail === 0).length
    const c = this.#counts
    const time = seconds(this.#timeMs ?? Date.now() - this.#started)
    this.#print('')
    if (this.#bailout) this.#print(`bailed out${this.#bailout === true ? '' : `: ${this.#bailout}`}`)
    if (this.#tally === null) this.#print('tap did not print its final tally: the run stopped early')
    this.#print(`files: ${files.length} (${okFiles} ok, ${files.length - okFiles} failed)  `
      + `asserts: ${c.pass} passed, ${c.fail} failed, ${c.skip} skipped, ${c.todo} todo  time: ${time}`)
  }
}

/** "2 passed, 1 failed, 1 skipped" (zero counts left out, except passed). */
function countsText(rec) {
  const parts = [`${rec.pass} passed`]
  if (rec.fail) parts.push(`${rec.fail} failed`)
  if (rec.skip) parts.push(`${rec.skip} skipped`)
  if (rec.todo) parts.push(`${rec.todo} todo`)
  return parts.join(', ')
}

function seconds(ms) {
  return `${(ms / 1000).toFixed(1)}s`
}

/** How a test file's process ended, from tap's diagnostics of its closing test point. */
function exitText(diag) {
  if (!diag) return ''
  if (diag.signal === 'SIGALRM') return "timed out (killed by tap's timeout)"
  if (diag.signal) return `killed by ${diag.signal}`
  if (typeof diag.exitCode === 'number' && diag.exitCode !== 0) return `exit code ${diag.exitCode}`
  return ''
}

/** One failure's heading: the test name path, or what happened to the file's process. */
function describe(f, rec) {
  if (f.fileLevel) {
    const how = exitText(f.diag) || rec.exit || 'failed'
    const after = rec.fail - rec.failures.filter((x) => x.fileLevel).length === 0 && rec.pass > 0
      ? ` after ${rec.pass} passing assert${rec.pass === 1 ? '' : 's'}` : ''
    return `the test file's process: ${how}${after}`
  }
  // tap's own point for a timeout (its diagnostics are lost when the process is then killed)
  if (f.path.at(-1) === 'timeout!') {
    return `${f.path.join(' > ')} (still running when tap's timeout expired)`
  }
  return f.path.join(' > ')
}

/** A failure's diagnostics as indented "key: value" lines, what differed first. */
function diagLines(diag) {
  const keys = Object.keys(diag).filter((k) => !HIDDEN_DIAG.has(k) && diag[k] !== undefined)
  const ordered = [
    ...FIRST_DIAG.filter((k) => keys.includes(k)),
    ...keys.filter((k) => !FIRST_DIAG.includes(k) && !LAST_DIAG.includes(k)),
    ...LAST_DIAG.filter((k) => keys.includes(k)),
  ]
  const lines = []
  for (const key of ordered) {
    const value = key === 'at' ? atText(diag.at) : diag[key]
    if (typeof value === 'string' && value.includes('\n')) {
      lines.push(`${key}: |`)
      for (const l of value.replace(/\n$/, '').split('\n')) lines.push(`  ${l}`)
    } else if (typeof value === 'object' && value !== null) {
      const text = inspect(value, { depth: 6, breakLength: 100, maxArrayLength: 50, maxStringLength: 2000 })
      const [first, ...rest] = text.split('\n')
      lines.push(`${key}: ${first}`, ...rest.map((l) => `  ${l}`))
    } else {
      lines.push(`${key}: ${value}`)
    }
  }
  return lines
}

/** tap's `at` ({ fileName, lineNumber, columnNumber, functionName }) as "file:line:col (fn)". */
function atText(at) {
  if (!at || typeof at !== 'object') return at
  const where = [at.fileName, at.lineNumber, at.columnNumber].filter((x) => x !== undefined).join(':')
  return at.functionName ? `${where} (${at.functionName})` : where
}
