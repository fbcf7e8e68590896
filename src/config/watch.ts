// Watches the config file for changes, including Kubernetes ConfigMap updates (which swap a
// `..data` symlink in the mounted directory, so the directory is watched, not the file).
// Layer 3 adapter: reports "the content changed" after a short debounce; it never parses.
import { watch, readFileSync, type FSWatcher } from 'node:fs'
import { createHash } from 'node:crypto'
import { dirname } from 'node:path'
import { systemTimers, type Timers } from '../clock.js'

/**
 * Example: `new ConfigWatcher('/etc/tether/proxy.yaml', () => reload()).start()`; a ConfigMap
 * update (or `vi proxy.yaml`) calls `reload` once, about `debounceMs` after the last event.
 */
export class ConfigWatcher {
  readonly #path: string
  readonly #onChange: () => void
  readonly #timers: Timers
  readonly #debounceMs: number
  #watcher: FSWatcher | null = null
  #timer: unknown = null
  #digest: string | null

  constructor(path: string, onChange: () => void, timers: Timers = systemTimers, debounceMs = 100) {
    this.#path = path
    this.#onChange = onChange
    this.#timers = timers
    this.#debounceMs = debounceMs
    this.#digest = this.#read()
  }

  start(): void {
    if (this.#watcher !== null) return
    this.#watcher = watch(dirname(this.#path), { persistent: false }, () => this.#schedule())
    this.#watcher.on('error', () => undefined) // a vanished directory: keep the running config
  }

  stop(): void {
    this.#watcher?.close()
    this.#watcher = null
    if (this.#timer !== null) this.#timers.clearTimeout(this.#timer)
    this.#timer = null
  }

  #schedule(): void {
    if (this.#timer !== null) this.#timers.clearTimeout(this.#timer)
    this.#timer = this.#timers.setTimeout(() => {
      this.#timer = null
      const digest = this.#read()
      if (digest === null || digest === this.#digest) return // unreadable mid-swap, or unchanged
      this.#digest = digest
      this.#onChange()
    }, this.#debounceMs)
  }

  /** Digest of the file's content, or null when it cannot be read right now. */
  #read(): string | null {
    try {
      return createHash('sha256').update(readFileSync(this.#path)).digest('hex')
    } catch {
      return null
    }
  }
}
