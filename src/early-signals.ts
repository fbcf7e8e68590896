// Signals that arrive while Tether starts (before its handlers are in place): Node's default
// for SIGHUP and SIGTERM is to end the process at once, so a config reloader's SIGHUP or a
// pod's SIGTERM during a start killed it. They are held from the first statement of the process
// entry (cli.ts, which loads everything else with import() after that: its static imports took
// 0.1-0.6 s to load, while a signal still killed the process), and applied once its handlers are
// in place (one process: once it has started; the workers' primary: once its admin listener is
// up, so a stop during the workers' first start begins at once, and it holds a SIGHUP itself; a
// worker: once it has started, a stop only, as the primary handles the others). The commands
// that are no server (check, import...) let them go: a signal ends them as any command-line tool.
// Only node's own start, before it runs the entry (about 0.1 s, more on a busy host; no
// JavaScript of ours can run then), is left to Node's default. Imports nothing, so that nothing
// loads before the holders are in place.
// Layer 3: process signal listeners only.

export type SignalName = 'SIGTERM' | 'SIGINT' | 'SIGHUP'
const NAMES: readonly SignalName[] = ['SIGTERM', 'SIGINT', 'SIGHUP']

/**
 * Example: `const early = new EarlySignals()` first thing; once started,
 * `early.release({ SIGTERM: stop, SIGINT: stop, SIGHUP: reload })` installs the handlers and
 * applies what arrived meanwhile: a stop (the first SIGTERM or SIGINT) if any, else one reload.
 * A second SIGTERM or SIGINT before then ends the process at once (exit 1). A command that is no
 * server awaits `early.letGo()` instead.
 */
export class EarlySignals {
  readonly #seen: SignalName[] = []
  readonly #hold = new Map<SignalName, () => void>()
  readonly #raise: (name: SignalName) => void
  #letGo = false

  /**
   * `exit`: how the process ends at a second stop signal; `raise`: how it sends itself a signal
   * once let go (tests give their own).
   */
  constructor(exit: (code: number) => void = (code) => process.exit(code), raise: (name: SignalName) => void = (name) => { process.kill(process.pid, name) }) {
    this.#raise = raise
    for (const name of NAMES) {
      const hold = (): void => {
        if (this.#letGo) return this.#end(name)
        // a second stop while the start has not ended (a start that hangs): exit now, as a
        // second signal does once started
        if (name !== 'SIGHUP' && this.#seen.some((s) => s !== 'SIGHUP')) return exit(1)
        this.#seen.push(name)
      }
      this.#hold.set(name, hold)
      process.on(name, hold)
    }
  }

  /**
   * Put the real handlers in place of the holding ones, then apply the signals held. Each real
   * handler is added before its holding one is removed: Node closes a signal's watcher when its
   * last listener goes, and a signal caught but not yet dispatched (it arrived while this start's
   * last steps ran, before the event loop turned) was dropped with it, so a SIGTERM then left
   * Tether running, neither held nor handled.
   */
  release(handlers: Readonly<Record<SignalName, (signal: SignalName) => void>>): void {
    for (const name of NAMES) {
      process.on(name, () => handlers[name](name))
      process.removeListener(name, this.#hold.get(name)!)
    }
    const stop = this.#seen.find((s) => s !== 'SIGHUP')
    if (stop !== undefined) handlers[stop](stop)
    else if (this.#seen.length > 0) handlers.SIGHUP('SIGHUP')
    this.#seen.length = 0
  }

  /**
   * For a command that is no server (`check`, `import`, `drain`...): from now on each of these
   * signals ends the process as Node's default does (killed by it), and one held ends it now (a
   * stop before a reload). Resolves once the holding listeners are gone, which the command awaits
   * before its work: `check -` and `import -` read stdin synchronously, the event loop blocked,
   * and a signal then was caught by the listeners' watcher and never dispatched (^C did nothing,
   * and the command printed its answer once stdin closed). They are removed after one turn of the
   * event loop, not at once: a signal caught but not yet dispatched (it arrived while the
   * commands loaded) is dispatched in that turn's poll phase, to a holding listener that sends it
   * again without them; removed at once, it was dropped with them (see release), and `tether
   * drain --wait` went on waiting. What is left: a signal caught in the few microseconds between
   * that poll and the removal is dropped (no JavaScript can see it pending).
   */
  async letGo(): Promise<void> {
    this.#letGo = true
    const held = this.#seen.find((s) => s !== 'SIGHUP') ?? this.#seen[0]
    if (held !== undefined) return this.#end(held)
    // two hops: called in the poll phase, one setImmediate runs in this turn's check phase,
    // before any further poll; the second one runs after the next turn's poll
    await new Promise<void>((resolve) => setImmediate(() => setImmediate(resolve)))
    this.#removeHolders()
  }

  /** End the process by `name` as Node's default would: without the holding listeners, sent again. */
  #end(name: SignalName): void {
    this.#removeHolders()
    this.#raise(name)
  }

  /** Node's default for these signals again (Node restores it when a signal's last listener goes). */
  #removeHolders(): void {
    for (const [n, hold] of this.#hold) process.removeListener(n, hold)
  }
}
