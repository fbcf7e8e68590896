// Signals that arrive while Tether starts (before its handlers are in place): Node's default
// for SIGHUP and SIGTERM is to end the process at once, so a config reloader's SIGHUP or a
// pod's SIGTERM during a start killed it. They are held and applied once its handlers are in
// place (one process: once it has started; the workers' primary: once its admin listener is up,
// so a stop during the workers' first start begins at once, and it holds a SIGHUP itself).
// Layer 3: process signal listeners only.

export type SignalName = 'SIGTERM' | 'SIGINT' | 'SIGHUP'
const NAMES: readonly SignalName[] = ['SIGTERM', 'SIGINT', 'SIGHUP']

/**
 * Example: `const early = new EarlySignals()` first thing; once started,
 * `early.release({ SIGTERM: stop, SIGINT: stop, SIGHUP: reload })` installs the handlers and
 * applies what arrived meanwhile: a stop (the first SIGTERM or SIGINT) if any, else one reload.
 * A second SIGTERM or SIGINT before then ends the process at once (exit 1).
 */
export class EarlySignals {
  readonly #seen: SignalName[] = []
  readonly #hold = new Map<SignalName, () => void>()

  /** `exit`: how the process ends at a second stop signal (tests give their own). */
  constructor(exit: (code: number) => void = (code) => process.exit(code)) {
    for (const name of NAMES) {
      const hold = (): void => {
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
}
