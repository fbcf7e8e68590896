// The logger's exit flush (src/observability/logger.ts, stdoutDestination's flushSync and
// writesInFlight; holdLinesForExit) reads and writes sonic-boom internals that no public API
// gives: `fd`, `_writing`, `_writingBuf`, `_bufs`, `_len`, `retryEAGAIN`, the `release` callback read at each fs.write, and
// `minLength`. A sonic-boom upgrade that renames or drops one would silently bring back the loss
// of the last lines before an exit (test/log-stalled-reader.test.ts): this fails first, saying
// which one is gone. A real asynchronous destination (on /dev/null).
import t from 'tap'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { openSync, readFileSync } from 'node:fs'
import pino from 'pino'

// the sonic-boom pino itself loads (its own copy if it has one)
const pinoRequire = createRequire(createRequire(import.meta.url).resolve('pino'))
const sonicBoomDir = dirname(pinoRequire.resolve('sonic-boom'))
const version = (JSON.parse(readFileSync(join(sonicBoomDir, 'package.json'), 'utf8')) as { version: string }).version
const needs = (what: string): string =>
  `sonic-boom ${version} has ${what}, which src/observability/logger.ts's exit flush relies on ` +
  '(its stdoutDestination and writesInFlight). Failing after an upgrade: find its new name or a public API for it, and keep test/log-stalled-reader.test.ts green'

t.test("the sonic-boom internals the logger's exit flush uses are there", async (t) => {
  const fd = openSync('/dev/null', 'w') // closed by the destination's end
  const dest = pino.destination({ dest: fd, sync: false, minLength: 0 })
  const d = dest as unknown as Record<string, unknown>
  t.equal(typeof d['_writing'], 'boolean', needs('`_writing` (a boolean: a write started and not yet done)'))
  t.equal(typeof d['_writingBuf'], 'string', needs('`_writingBuf` (the data of the write started)'))
  t.ok(Array.isArray(d['_bufs']), needs('`_bufs` (an array: the data waiting for a write)'))
  t.equal(typeof d['_len'], 'number', needs('`_len` (the bytes waiting, counted down as the synchronous flush writes them)'))
  t.equal(d['fd'], fd, needs('`fd` (the descriptor written to)'))
  t.equal(typeof d['retryEAGAIN'], 'function', needs('`retryEAGAIN` (whether to write to a full pipe again)'))
  t.equal(typeof d['minLength'], 'number', needs('`minLength` (a write starts once this many bytes wait)'))
  t.equal(typeof d['flushSync'], 'function', needs('`flushSync`'))
  const release = Object.getOwnPropertyDescriptor(d, 'release')
  t.ok(release !== undefined && typeof release.value === 'function' && release.configurable === true, needs('`release` (an own, configurable property: the callback each fs.write is given)'))
  if (release === undefined || typeof release.value !== 'function') return
  // the in-flight detection: `release` is read from the destination at each asynchronous write
  let reads = 0
  Object.defineProperty(d, 'release', { configurable: true, get: () => { reads++; return release.value as unknown } })
  const written = new Promise<void>((resolve) => dest.once('write', () => resolve()))
  dest.write('{"msg":"a line"}\n')
  await written
  t.ok(reads >= 1, needs('the read of `release` at each fs.write (how the logger knows a write is in flight)'))
  dest.flushSync()
  await new Promise<void>((resolve) => { dest.once('close', () => resolve()); dest.end() })
})
