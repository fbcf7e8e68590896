// Watches the config file for changes, including Kubernetes ConfigMap updates (which swap a
// `..data` symlink in the mounted directory, so the directory is watched, not the file), and
// polls it too (a single-file bind mount, as `docker run -v proxy.yaml:...` makes, or a path
// through a symlinked directory, gets no event the directory watch sees). Layer 3 adapter:
// reports "the content changed" once the new content has stood still, and offers a content its
// reader refused again later; it never parses.
import { watch, readFileSync, statSync, type FSWatcher } from 'node:fs'
import { createHash } from 'node:crypto'
import { basename, dirname } from 'node:path'
import { systemTimers, type Timers } from '../clock.js'

export interface WatchOptions {
  /**
   * The text the running config was made from (read at start-up): an edit made between that
   * read and the watch's start is then seen. Default: the file as it is when the watcher is made.
   */
  readonly baseline?: string
  /** Quiet time after the last event before the file is read, ms. */
  readonly debounceMs?: number
  /**
   * How long new content must stay the same (no event, the same bytes) before it is reported,
   * ms: a file written in several writes (a script appending a line at a time, `>` then
   * writes) is never reported at one of its valid beginnings.
   */
  readonly settleMs?: number
  /** How often the file is read without an event, ms (0: never). */
  readonly pollMs?: number
}

/**
 * Example: `new ConfigWatcher('/etc/tether/proxy.yaml', () => reload()).start()`; a ConfigMap
 * update (or `vi proxy.yaml`) calls `reload` once, about `debounceMs + settleMs` (1.1 s) after
 * the last event; an edit no event tells of, within `pollMs + settleMs` (3 s).
 */
export class ConfigWatcher {
  readonly #path: string
  readonly #name: string
  readonly #onChange: (retry: boolean) => unknown
  readonly #timers: Timers
  readonly #debounceMs: number
  readonly #settleMs: number
  readonly #pollMs: number
  #watcher: FSWatcher | null = null
  #timer: unknown = null
  /** The content last reported (or the baseline). */
  #digest: string | null
  /** New content seen, waiting to stand still for settleMs. */
  #pending: string | null = null
  /** The file's identity and times at the last read: a poll that finds them the same reads nothing. */
  #stamp = ''
  /** The content reported was refused: it is offered again by this timer, every #retryMs. */
  #retryTimer: unknown = null
  #retryMs = 0

  /**
   * `onChange` returns false when it refused the content (a reload rejected): the same content
   * is then offered again (`retry` true) after `pollMs`, then at doubling intervals up to a
   * minute, until it is accepted or the file changes: a file the config names that appears
   * after it (a Secret mounted apart from the ConfigMap, updated later) is then taken.
   */
  constructor(path: string, onChange: (retry: boolean) => unknown, timers: Timers = systemTimers, options: WatchOptions = {}) {
    this.#path = path
    this.#name = basename(path)
    this.#onChange = onChange
    this.#timers = timers
    this.#debounceMs = options.debounceMs ?? 100
    this.#settleMs = options.settleMs ?? 1_000
    this.#pollMs = options.pollMs ?? 2_000
    this.#digest = options.baseline === undefined ? this.#read() : digestOf(options.baseline)
  }

  start(): void {
    if (this.#watcher !== null) return
    // the file's own name, and the ConfigMap's `..data` swap (any name the kubelet's atomic
    // writer uses starts with two dots); other files in the directory (a log written next to
    // the config) would else keep the debounce from ever ending
    this.#watcher = watch(dirname(this.#path), { persistent: false }, (_event, name) => {
      if (name === null || name === this.#name || name.startsWith('..')) this.#arm(this.#debounceMs, false)
    })
    this.#watcher.on('error', () => undefined) // a vanished directory: keep the running config (the poll goes on)
    // an edit made before the watch started (see WatchOptions.baseline)
    this.#arm(0, false)
  }

  stop(): void {
    this.#watcher?.close()
    this.#watcher = null
    if (this.#timer !== null) this.#timers.clearTimeout(this.#timer)
    this.#timer = null
    this.#noRetry()
  }

  /**
   * `text` was read and handled elsewhere (a SIGHUP's reload), `refused` or not: that content
   * is not reported again (a refused one is offered again later, as when onChange returns
   * false); a change after it still is. Example: a SIGHUP sent with a ConfigMap update (by a
   * reloader sidecar) reloads it once, not once more when the watch's settle ends.
   */
  accept(text: string, refused = false): void {
    const digest = digestOf(text)
    if (digest !== this.#digest) this.#retryMs = 0
    this.#digest = digest
    if (this.#pending === digest) this.#pending = null
    if (!refused) {
      this.#noRetry()
      this.#retryMs = 0
    } else if (this.#retryTimer === null) this.#retryLater()
  }

  #noRetry(): void {
    if (this.#retryTimer !== null) this.#timers.clearTimeout(this.#retryTimer)
    this.#retryTimer = null
  }

  /** The content just reported was refused: offer it again later (from pollMs, doubling, up to a minute). */
  #retryLater(): void {
    if (this.#pollMs <= 0) return
    this.#retryMs = this.#retryMs === 0 ? this.#pollMs : Math.min(this.#retryMs * 2, MAX_RETRY_MS)
    this.#retryTimer = this.#timers.setTimeout(() => {
      this.#retryTimer = null
      if (this.#watcher === null) return
      const now = this.#pending === null ? this.#read() : undefined
      if (now === null) return this.#retryLater() // unreadable for a moment: later
      // a new content (settling, or not seen yet) is the one to report, not the refused one
      if (now !== this.#digest) return void (this.#retryMs = 0)
      if (this.#onChange(true) !== false) this.#retryMs = 0
      else if (this.#retryTimer === null) this.#retryLater()
    }, this.#retryMs)
  }

  /** The one timer: a check `ms` from now (`settled`: the end of a settle wait; `poll`: no event asked for it). */
  #arm(ms: number, settled: boolean, poll = false): void {
    if (this.#timer !== null) this.#timers.clearTimeout(this.#timer)
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = null
      this.#check(settled, poll)
    }, ms)
  }

  /**
   * Read the file: new content is reported once a settle wait ended on the same content (an
   * event during the wait starts it again); else the next check is a poll.
   */
  #check(settled: boolean, poll = false): void {
    if (this.#watcher === null) return
    // a poll of a file whose inode, size and times are unchanged reads nothing (every watched
    // file, TLS ones too, in every worker, every 2 s: on a slow filesystem a read stalls)
    if (poll && this.#pending === null && this.#stamp !== '' && this.#stat() === this.#stamp) return this.#arm(this.#pollMs, false, true)
    const digest = this.#read()
    if (digest !== null && digest !== this.#digest) {
      if (settled && digest === this.#pending) {
        this.#digest = digest
        this.#pending = null
        this.#noRetry()
        this.#retryMs = 0
        if (this.#pollMs > 0) this.#arm(this.#pollMs, false, true) // first: onChange may throw
        if (this.#onChange(false) === false && this.#retryTimer === null) this.#retryLater()
        return
      } else {
        this.#pending = digest
        return this.#arm(this.#settleMs, true)
      }
    } else this.#pending = null // unreadable mid-swap, or back to what runs
    if (this.#pollMs > 0) this.#arm(this.#pollMs, false, true)
  }

  /** Digest of the file's content, or null when it cannot be read right now (its stamp taken first). */
  #read(): string | null {
    this.#stamp = this.#stat()
    try {
      return digestOf(readFileSync(this.#path, 'utf8'))
    } catch {
      return null
    }
  }

  /**
   * The file's device, inode, size and change times (through symlinks), or '' when it cannot
   * be read or changed in the last 2 s: a same-size rewrite within one timestamp tick (a
   * second on some filesystems) leaves the times as they were, so a recent stamp is not
   * trusted and the next poll reads the file again (as git does with racy index entries).
   */
  #stat(): string {
    try {
      const s = statSync(this.#path, { bigint: true })
      const changedMs = Number((s.mtimeNs > s.ctimeNs ? s.mtimeNs : s.ctimeNs) / 1_000_000n)
      if (Date.now() - changedMs < 2_000) return ''
      return `${s.dev}:${s.ino}:${s.size}:${s.mtimeNs}:${s.ctimeNs}`
    } catch {
      return ''
    }
  }
}

/** The longest wait before a refused content is offered again, ms. */
const MAX_RETRY_MS = 60_000

function digestOf(text: string): string {
  return createHash('sha256').update(text).digest('hex')
}
