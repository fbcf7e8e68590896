// The only file that imports pino. JSON lines on stdout; the level comes from config
// `log.level`, overridden by the LOG_LEVEL environment variable (read by the caller). Every
// `err` field goes through one serializer that keeps secrets out (see serializeError).
import fs, { constants, fstatSync, fsyncSync, openSync } from 'node:fs'
import { pino, type Logger } from 'pino'
import type { LogLevel } from '../config/schema.js'
import { maskUrlCredentials } from '../secret-text.js'

export type { Logger }

const LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** Resolve the effective level: a valid LOG_LEVEL wins over the config value. */
export function effectiveLevel(configured: LogLevel, envLevel: string | undefined): LogLevel {
  const l = envLevel?.trim().toLowerCase()
  return l !== undefined && LEVELS.includes(l) ? (l as LogLevel) : configured
}

/**
 * The most log bytes kept while stdout does not take them (a stalled log collector, a full
 * pipe): beyond it, lines are dropped rather than held in memory without bound.
 */
export const MAX_PENDING_LOG_BYTES = 16 * 1024 * 1024

/** How long the exit flush waits for a full stdout pipe that takes nothing (ms). */
const EXIT_STALL_MS = 1_000

/** Set when the process exits: until then a full pipe is waited for without limit (asynchronously). */
let exiting = false
// registered before pino's own exit flush (made with the first destination below), so it runs first
process.once('exit', () => { exiting = true })

/**
 * sonic-boom's `retryEAGAIN`: whether to try a full pipe again. Always while running (the
 * writes wait asynchronously, bounded by {@link MAX_PENDING_LOG_BYTES}); at exit, while the
 * pipe took something in the last {@link EXIT_STALL_MS} (a slow reader still gets every line;
 * one that stalled costs at most that long).
 */
function retryFullPipe(): (err: Error, writing: number, remaining: number) => boolean {
  let left = Infinity
  let progressAt = 0
  return (_err, writing, remaining) => {
    if (!exiting) return true
    const now = performance.now()
    if (writing + remaining < left) [left, progressAt] = [writing + remaining, now]
    return now - progressAt < EXIT_STALL_MS
  }
}

/** Why stdout dropped a log line: the `reason` label of `tether_log_lines_dropped_total`. */
export const LOG_DROP_REASONS = ['backlog', 'write_error', 'reader_gone'] as const
/**
 * `backlog`: over {@link MAX_PENDING_LOG_BYTES} waiting for a stalled reader; `write_error`: a
 * write failed (ENOSPC: a log file's disk is full; EIO), the lines until a write works again;
 * `reader_gone`: every line after stdout's reader went away for good (EPIPE).
 */
export type LogDropReason = (typeof LOG_DROP_REASONS)[number]

/** Log lines dropped by this process's stdout since it started, by reason (monotonic). */
const droppedTotal: Record<LogDropReason, number> = { backlog: 0, write_error: 0, reader_gone: 0 }

/**
 * How many log lines this process's stdout dropped since the process started, by reason: the
 * metrics read it at each scrape (`tether_log_lines_dropped_total`). Monotonic; the same object
 * each call. Example: `logLinesDropped().write_error` -> 12 after a full disk cost 12 lines.
 */
export function logLinesDropped(): Readonly<Record<LogDropReason, number>> {
  return droppedTotal
}

/** Dropped lines not yet said in a log line (said once stdout takes lines again). */
const unsaid = { backlog: 0, write_error: 0 }
/** The error of the last failed write (said with the `write_error` count). */
let lastWriteError = ''

/** Errors after which stdout takes no more lines, ever: its reader is gone (a broken pipe or socket, a closed descriptor). */
const READER_GONE: ReadonlySet<string> = new Set(['EPIPE', 'EBADF', 'ECONNRESET'])

/**
 * After a failed write (ENOSPC, EIO: anything but a full pipe or a reader gone), lines are
 * dropped for this long before one is written again; doubled at each failure up to
 * {@link WRITE_RETRY_MAX_MS}, as nginx keeps trying its error_log: a full disk costs the lines
 * logged while it is full, never the process or the logging after it.
 */
const WRITE_RETRY_FIRST_MS = 100
const WRITE_RETRY_MAX_MS = 1_000
/** Set while writes fail: lines are dropped until `retryAt` (performance.now() ms), then one is tried. */
let failing: { retryAt: number; backoff: number } | null = null

/** The line that says how many log lines stdout did not take. */
const DROPPED_MSG = `log lines dropped: stdout did not take them (its reader stalled; at most ${MAX_PENDING_LOG_BYTES} bytes wait)`
/** The line that says how many log lines a failing stdout cost (its error in `error`). */
const WRITE_ERROR_MSG = 'log lines dropped: writing to stdout failed (its error in `error`: ENOSPC, a full disk; EIO); it works again'

type Destination = ReturnType<typeof pino.destination>
let stdout: Destination | null = null

/**
 * Where stdout's lines go: when stdout is a pipe, a descriptor of that pipe opened again
 * non-blocking (Linux's /proc), so that a reader that stalls makes writes wait in memory
 * (bounded) instead of blocking a libuv thread in write(2), which the process then waits for
 * at exit, for good; else stdout itself. A socket (systemd's journal, a parent's
 * `spawn(..., { stdio: 'pipe' })`) cannot be opened again, nor can a pipe without /proc: fd 1
 * itself is made non-blocking, as Node does when it makes `process.stdout` for one (libuv's
 * uv_pipe_open, uv_tcp_open). stdout starts blocking (libuv makes a child's so) and
 * `process.stdout` is made only when something uses it: without this, the exit blocked for good
 * (on every Node; tests did not show it under tap on Node 20 and 22, whose loader's hooks thread
 * pipes its output into `process.stdout`, making it first). A file or a terminal: as it is.
 */
function stdoutFd(): number {
  try {
    const stat = fstatSync(1)
    if (stat.isFIFO()) {
      try {
        return openSync('/proc/self/fd/1', constants.O_WRONLY | constants.O_NONBLOCK)
      } catch {
        // no /proc, another user's pipe: fd 1 itself, below
      }
    }
    if (stat.isFIFO() || stat.isSocket()) void process.stdout
    return 1
  } catch {
    return 1
  }
}

/**
 * The one stdout destination of this process, shared by its loggers (one per config). Writes
 * are asynchronous and bounded (see {@link MAX_PENDING_LOG_BYTES}); lines dropped over the
 * bound are counted, and said in one line once stdout takes lines again. pino flushes what is
 * left when the process exits, retrying a full pipe for ever: with a reader that stalled (a
 * hung log collector, `tether | less` left open) a stopped Tether never ended. At exit a pipe
 * that takes nothing for {@link EXIT_STALL_MS} is given up (those lines are lost with the reader).
 * One whose reader is gone (EPIPE) takes no more lines: they are dropped from then on, and
 * neither the exit nor a signal waits on it (see {@link flushHeld}). A write that fails
 * otherwise (ENOSPC: `tether > tether.log` on a full disk; EIO) drops the lines held and those
 * logged for a while (see {@link WRITE_RETRY_FIRST_MS}), then writes again; once a write works,
 * one line says how many were dropped and why. Every drop is counted ({@link logLinesDropped}).
 */
function stdoutDestination(): Destination {
  if (stdout !== null) return stdout
  const dest = pino.destination({ dest: stdoutFd(), sync: false, maxLength: MAX_PENDING_LOG_BYTES, retryEAGAIN: retryFullPipe() })
  // the summary lines, said once stdout takes lines again: after this 'write' event (sonic-boom
  // counts the bytes it just wrote out only after emitting it), and counted again when a summary
  // itself did not fit
  let summarizing = false
  let summaryDropped = 0
  let pending = false
  // 'drop' comes synchronously inside the write that did not fit
  dest.on('drop', () => {
    if (summarizing) return void summaryDropped++
    droppedTotal.backlog++
    unsaid.backlog++
  })
  dest.on('write', () => {
    failing = null
    if ((unsaid.backlog === 0 && unsaid.write_error === 0) || pending) return
    pending = true
    process.nextTick(() => {
      pending = false
      if ((dest as unknown as { destroyed?: boolean }).destroyed === true) return
      for (const reason of ['write_error', 'backlog'] as const) {
        const n = unsaid[reason]
        if (n === 0) continue
        unsaid[reason] = 0
        summarizing = true
        summaryDropped = 0
        dest.write(summaryLine(reason, n))
        summarizing = false
        if (summaryDropped > 0) unsaid[reason] += n
      }
    })
  })
  // a write that failed: for good (EPIPE: the reader went away, `tether | head`, a log shipper
  // that died; EBADF), stdout takes no more lines; else (ENOSPC, EIO) lines are dropped for a
  // while. pino's own listener (before this one) stops the writes at EPIPE only, and throws
  // anything else as an uncaught exception.
  let seen: unknown = null
  dest.on('error', (err: NodeJS.ErrnoException) => {
    // (pino's listener emits the first error other than EPIPE again: this one sees it twice)
    if (err === seen) return
    seen = err
    const code = err.code ?? 'unknown'
    if (code === 'EAGAIN' || code === 'EBUSY') return // a full pipe given up at exit
    if (READER_GONE.has(code)) return stopWriting(dest)
    // sonic-boom keeps the rest of the write that failed in `_writingBuf` (with `_writing` false)
    const d = dest as unknown as SonicInternals
    const { keep, dropped } = cutAfterFirstLine([d._writingBuf, ...d._bufs])
    d._writingBuf = keep
    d._bufs = []
    d._len = keep.length
    writeFailed(code, dropped)
  })
  // while writes fail, a line is dropped at once until the retry is due; that one is written
  // (and the line a failed write had begun, first)
  const write = dest.write.bind(dest)
  dest.write = (data: string): boolean => {
    if (failing !== null && performance.now() < failing.retryAt) {
      droppedTotal.write_error++
      unsaid.write_error++
      return true
    }
    return write(data)
  }
  const inFlight = writesInFlight(dest)
  stdoutInFlight = inFlight
  dest.flushSync = (): void => {
    // a write waiting for its retry (the pipe was full) is not in flight: the synchronous flush
    // writes it, first (else the exit lost it, a line cut in the middle when part of it was
    // written). One in flight cannot be taken back: the exit's thread-pool shutdown completes it.
    // (its rest is a Buffer once part of it was written)
    const d = dest as unknown as SonicInternals
    if (exiting && d._writing && !inFlight() && (typeof d._writingBuf === 'string' || Buffer.isBuffer(d._writingBuf)) && d._writingBuf.length > 0 && Array.isArray(d._bufs)) {
      d._bufs.unshift(d._writingBuf)
      d._writingBuf = ''
      d._writing = false
    }
    // the last word of an exit: how many lines were dropped and not yet said
    if (exiting && Array.isArray(d._bufs)) {
      for (const reason of ['write_error', 'backlog'] as const) {
        if (unsaid[reason] === 0) continue
        const line = summaryLine(reason, unsaid[reason])
        unsaid[reason] = 0
        d._bufs.push(line)
        d._len += Buffer.byteLength(line)
      }
    }
    flushHeld(dest)
  }
  stdout = dest
  return dest
}

/** The line that says `n` lines were dropped for `reason`. */
function summaryLine(reason: 'write_error' | 'backlog', n: number): string {
  const time = new Date().toISOString()
  return reason === 'write_error'
    ? `${JSON.stringify({ level: 40, time, name: 'tether', dropped: n, reason, error: lastWriteError, msg: WRITE_ERROR_MSG })}\n`
    : `${JSON.stringify({ level: 40, time, name: 'tether', dropped: n, reason, msg: DROPPED_MSG })}\n`
}

/**
 * A write to stdout failed with `code` (not a full pipe, not a reader gone), which cost `dropped`
 * lines: count them, and drop the lines logged from now on until the retry is due (backing off).
 */
function writeFailed(code: string, dropped: number): void {
  droppedTotal.write_error += dropped
  unsaid.write_error += dropped
  lastWriteError = code
  const backoff = failing === null ? WRITE_RETRY_FIRST_MS : Math.min(failing.backoff * 2, WRITE_RETRY_MAX_MS)
  failing = { retryAt: performance.now() + backoff, backoff }
}

/** Newline, as a byte. */
const NL = 0x0a

/**
 * The data held for stdout (oldest first) cut after its first line: that line is kept (a write
 * that failed part-way cut it: written whole, the log stays one JSON object a line), the lines
 * after it are dropped (counted). Example: `['{"a":1}\n{"b":2}\n', '{"c":3}\n']` ->
 * `{ keep: '{"a":1}\n', dropped: 2 }`.
 */
function cutAfterFirstLine(held: readonly (string | Buffer)[]): { keep: Buffer; dropped: number } {
  let keep: Buffer | null = null
  let dropped = 0
  for (const item of held) {
    if (item.length === 0) continue
    const buf = typeof item === 'string' ? Buffer.from(item) : item
    if (keep !== null) {
      dropped += countLines(buf)
      continue
    }
    const end = buf.indexOf(NL)
    keep = end < 0 ? buf : buf.subarray(0, end + 1)
    dropped += end < 0 ? 0 : countLines(buf.subarray(end + 1))
  }
  return { keep: keep ?? Buffer.alloc(0), dropped }
}

/** The lines in `buf` (its newlines). */
function countLines(buf: string | Buffer): number {
  const b = typeof buf === 'string' ? Buffer.from(buf) : buf
  let n = 0
  for (let i = b.indexOf(NL); i >= 0; i = b.indexOf(NL, i + 1)) n++
  return n
}

/** The sonic-boom fields the synchronous flush reads and writes (see test/log-sonic-boom-internals.test.ts). */
interface SonicInternals {
  fd: number
  _writing: boolean
  _writingBuf: string | Buffer
  _bufs: (string | Buffer)[]
  _len: number
  retryEAGAIN: (err: Error, writing: number, remaining: number) => boolean
}

/** How long the synchronous flush waits before it writes to a full pipe again (ms; sonic-boom's). */
const FULL_PIPE_PAUSE_MS = 100
const pause = new Int32Array(new SharedArrayBuffer(4))

/**
 * `dest`'s synchronous flush (pino's, at a `fatal` line and at exit): sonic-boom's own, but an
 * error other than a full pipe (EAGAIN) ends it: a reader gone (EPIPE) stops stdout (see
 * {@link stopWriting}); another error (ENOSPC, EIO) drops what is held, counted, but the line
 * it was writing (see {@link writeFailed}). sonic-boom's retried every error for ever, 100 ms at
 * a time in Atomics.wait on the main thread, so with stdout's reader gone (EPIPE) a stopped
 * Tether never ended and no signal could reach it any more (its handlers are JavaScript). A full
 * pipe is retried while `retryEAGAIN` says so (see {@link retryFullPipe}).
 */
function flushHeld(dest: Destination): void {
  const d = dest as unknown as SonicInternals & { destroyed?: boolean }
  if (d.destroyed === true) return // its descriptor is closed (sonic-boom's threw here)
  if (!d._writing && d._writingBuf.length > 0) {
    d._bufs.unshift(d._writingBuf)
    d._writingBuf = ''
  }
  while (d._bufs.length > 0) {
    const buf = d._bufs[0]!
    try {
      // (fs.writeSync looked up at each call, as sonic-boom does: a test's hook sees it)
      const n = typeof buf === 'string' ? fs.writeSync(d.fd, buf, null, 'utf8') : fs.writeSync(d.fd, buf)
      d._len = Math.max(d._len - n, 0)
      const rest = (typeof buf === 'string' ? Buffer.from(buf) : buf).subarray(n)
      if (rest.length === 0) d._bufs.shift()
      else d._bufs[0] = rest
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'unknown'
      if (READER_GONE.has(code)) return stopWriting(dest)
      if (code !== 'EAGAIN' && code !== 'EBUSY') {
        const { keep, dropped } = cutAfterFirstLine(d._bufs)
        d._bufs = keep.length > 0 ? [keep] : []
        d._len = (d._writing ? Buffer.byteLength(d._writingBuf) : 0) + keep.length
        return writeFailed(code, dropped)
      }
      // a full pipe given up (its reader stalled): those lines are lost with it
      if (!d.retryEAGAIN(err as Error, buf.length, d._len - buf.length)) return
      Atomics.wait(pause, 0, 0, FULL_PIPE_PAUSE_MS)
    }
  }
  try {
    fsyncSync(d.fd)
  } catch {
    // a pipe or a socket: nothing to sync
  }
}

/**
 * stdout failed for good (EPIPE: its reader is gone): from now on its lines are dropped at once
 * (nobody can read them; the process runs, stops and exits as usual; counted as `reader_gone`),
 * and what was waiting for it is let go.
 */
function stopWriting(dest: Destination): void {
  const d = dest as unknown as SonicInternals & { write: (data: string) => boolean; flushSync: () => void }
  droppedTotal.reader_gone += countLines(d._writingBuf) + d._bufs.reduce((n, b) => n + countLines(b), 0)
  d.write = () => {
    droppedTotal.reader_gone++
    return true
  }
  d.flushSync = () => undefined
  d._bufs = []
  d._writingBuf = ''
  d._len = 0
}

/**
 * The process is about to exit: from now on, hold its stdout lines for a synchronous flush
 * (pino's: at a `fatal` line and at exit) instead of handing each to an asynchronous write: a
 * write in flight when the process exits is not retried, so a line logged just before
 * `process.exit` into a full pipe (a slow reader) was lost, the fatal line of an uncaught
 * exception with it. A full pipe is waited for as at exit (see {@link retryFullPipe}: while its
 * reader reads on; one that stalled is given up after {@link EXIT_STALL_MS}). Only for the last
 * lines before an exit that follows at once: nothing is written until a flush.
 * Example: `holdLinesForExit(); log.fatal(...); process.exit(1)`.
 */
export function holdLinesForExit(): void {
  exiting = true
  // sonic-boom starts a write once it holds minLength bytes and none is in flight
  if (stdout !== null) (stdout as unknown as { minLength: number }).minLength = Infinity
}

/**
 * Whether `dest` (a sonic-boom) has an asynchronous write in flight: one starts each time it
 * reads its `release` callback (to pass it to fs.write, also when it retries a full pipe after a
 * pause) and ends when that callback is called. Unknown (a sonic-boom without `release`): true.
 */
function writesInFlight(dest: Destination): () => boolean {
  const d = dest as unknown as { release?: unknown }
  const release = d.release
  if (typeof release !== 'function') return () => true
  let inFlight = false
  const ended = (...args: unknown[]): unknown => {
    inFlight = false
    try {
      return (release as (...a: unknown[]) => unknown)(...args)
    } finally {
      // (the release may have started the next write)
      if (!inFlight) for (const settled of settledWaiters.splice(0)) settled()
    }
  }
  Object.defineProperty(d, 'release', { configurable: true, get: () => { inFlight = true; return ended } })
  return () => inFlight
}

/** Called once stdout has no write in flight (see {@link stdoutSettled}). */
const settledWaiters: (() => void)[] = []
/** Whether stdout has an asynchronous write in flight (set with the destination). */
let stdoutInFlight: () => boolean = () => false

/**
 * Resolves once stdout has no asynchronous write in flight, or after `ms`: call before
 * `process.exit`, whose synchronous flush then writes what is left, retrying a full pipe (see
 * {@link flushHeld}). A write in flight at the exit could not be retried: its callback never
 * ran, so a line it carried into a full pipe (EAGAIN), the last of a graceful stop, was lost.
 * At once when nothing is in flight (a write into a non-blocking pipe or socket ends within a
 * turn of the event loop; one into a file, once the disk took it).
 * Example: `await stdoutSettled(); process.exit(code)`.
 */
export function stdoutSettled(ms = EXIT_STALL_MS): Promise<void> {
  if (!stdoutInFlight()) return Promise.resolve()
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms)
    settledWaiters.push(() => {
      clearTimeout(timer)
      resolve()
    })
  })
}

/** How deep an `err` value is followed (a circular or huge object stops here). */
const MAX_ERR_DEPTH = 6

/**
 * The `err` field of every log line: pino's own error serializer (name as `type`, message and
 * stack with their causes, `code` and the other fields), with what may carry a secret taken
 * out: a Redis command's arguments (an ioredis ReplyError's `command: { name, args }`: the
 * args of AUTH, HELLO, MIGRATE ... AUTH or CONFIG SET requirepass are a password) are left out
 * and its name kept, and the password of every `scheme://user:password@` in any string
 * (message, stack, a library's field) is `***`. Also for a value that is not an Error (a
 * rejection with a plain object or a string). Example: a ReplyError for AUTH with message
 * "connect redis://u:pw@h failed" -> `{ type: 'ReplyError', message: 'connect redis://u:***@h failed',
 * stack: '...', command: { name: 'auth' } }`.
 */
export function serializeError(err: unknown): unknown {
  return scrub(err, 0)
}

function scrub(value: unknown, depth: number): unknown {
  if (typeof value === 'string') return maskUrlCredentials(value)
  if (typeof value !== 'object' || value === null) return value
  if (depth >= MAX_ERR_DEPTH) return '[too deep]'
  if (Array.isArray(value)) return value.map((v) => scrub(v, depth + 1))
  if (!(value instanceof Error) && typeof (value as { toJSON?: unknown }).toJSON === 'function') return scrub((value as { toJSON: () => unknown }).toJSON(), depth + 1)
  const fields = (value instanceof Error ? pino.stdSerializers.err(value) : value) as Record<string, unknown>
  const out: Record<string, unknown> = {}
  for (const key in fields) { // pino's serialized error has its type, message and stack on its prototype
    const v = fields[key]
    if (v === undefined || typeof v === 'function') continue
    const command = key === 'command' && typeof v === 'object' && v !== null && 'args' in v ? v as { name?: unknown } : null
    out[key] = command !== null ? { name: scrub(command.name, depth + 1) } : scrub(v, depth + 1)
  }
  return out
}

/** The most ids a log line lists (see {@link listedIds}). */
export const LOGGED_IDS = 50

/**
 * A list of ids as a log line shows it: the first {@link LOGGED_IDS}, then how many more (a
 * Service of 10,000 pods listed whole made every rollout's line ~140 KB, twice).
 * Example: `listedIds(['a', 'b'])` -> `['a', 'b']`; 60 ids -> the first 50 and `'... 10 more'`.
 */
export function listedIds(ids: readonly string[], max = LOGGED_IDS): readonly string[] {
  return ids.length <= max ? ids : [...ids.slice(0, max), `... ${ids.length - max} more`]
}

/**
 * A log call's arguments with every Error going through {@link serializeError}, whatever the
 * call site wrote: an Error as the first argument (`log.error(err)`, where pino takes the
 * error's raw message for `msg`) becomes `{ err }` with its message masked as `msg` (when no
 * message is given); an Error as the value of a field other than `err` (`{ reason: err }`,
 * which pino writes as the error's own fields, an ioredis `command.args` with them), nested in
 * a field's plain object or list (`{ detail: { error: err } }`, `{ errors: [err] }`), or given
 * as a format argument (`log.warn('failed: %o', err)`) is serialized too. Other arguments are
 * passed as they are (the same array: nothing allocated; a field whose value is not an object,
 * as all of an access line's are, costs one `typeof`).
 * Example: `[replyError]` -> `[{ err: replyError }, 'connect redis://u:***@h failed']`.
 */
export function safeLogArgs(args: unknown[]): unknown[] {
  const first = args[0]
  if (first instanceof Error) return [{ err: first }, ...(args.length > 1 ? args.slice(1) : [maskUrlCredentials(first.message)])]
  let out = args
  for (let i = 1; i < args.length; i++) {
    const v = args[i]
    if (typeof v === 'object' && v !== null && holdsError(v, 0)) (out === args ? (out = [...args]) : out)[i] = withErrorsSerialized(v, 0)
  }
  if (typeof first !== 'object' || first === null) return out
  let copy: Record<string, unknown> | null = null
  for (const key in first) {
    const v = (first as Record<string, unknown>)[key]
    if (key !== 'err' && typeof v === 'object' && v !== null && holdsError(v, 0)) (copy ??= { ...first })[key] = withErrorsSerialized(v, 0)
  }
  return copy === null ? out : [copy, ...out.slice(1)]
}

/** Whether `v` is an Error or a plain object or array holding one (within {@link MAX_ERR_DEPTH}). */
function holdsError(v: object, depth: number): boolean {
  if (v instanceof Error) return true
  if (depth >= MAX_ERR_DEPTH || !isPlain(v)) return false
  for (const key in v) {
    const x = (v as Record<string, unknown>)[key]
    if (typeof x === 'object' && x !== null && holdsError(x, depth + 1)) return true
  }
  return false
}

/** `v` with each Error in it (see {@link holdsError}) through {@link serializeError}; the rest as it was. */
function withErrorsSerialized(v: unknown, depth: number): unknown {
  if (v instanceof Error) return serializeError(v)
  if (typeof v !== 'object' || v === null || depth >= MAX_ERR_DEPTH || !isPlain(v) || !holdsError(v, depth)) return v
  if (Array.isArray(v)) return v.map((x) => withErrorsSerialized(x, depth + 1))
  const out: Record<string, unknown> = {}
  for (const key in v) out[key] = withErrorsSerialized((v as Record<string, unknown>)[key], depth + 1)
  return out
}

/** An array or an object literal (not a class instance: a Buffer, a socket). */
function isPlain(v: object): boolean {
  const proto = Object.getPrototypeOf(v) as unknown
  return Array.isArray(v) || proto === Object.prototype || proto === null
}

/** A logger writing JSON lines to `destination` (default stdout); every Error through {@link serializeError} (see {@link safeLogArgs}). */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const opts = {
    level,
    base: { name: 'tether' },
    timestamp: pino.stdTimeFunctions.isoTime,
    serializers: { err: serializeError },
    hooks: {
      logMethod(this: Logger, args: Parameters<Logger['info']>, method: (...a: unknown[]) => void): void {
        method.apply(this, safeLogArgs(args))
      },
    },
  }
  return pino(opts, destination ?? stdoutDestination())
}
