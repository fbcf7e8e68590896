// A worker process of `workers` > 1: asks its primary what to run (the config text the primary
// accepted, the shared secrets), then runs the whole proxy (the composition root) with its
// sharing ports connected to the primary, its log lines tagged with its index, and the
// primary's orders (reload, stop) and disappearance handled. Layer 5 wiring.
import type { Config } from '../config/schema.js'
import type { EarlySignals } from '../early-signals.js'
import { ConfigError, parseConfigFile } from '../config/index.js'
import { diffConfig } from '../config/reload.js'
import type { Logger } from '../observability/logger.js'
import type { Tether } from '../tether.js'
import { isTetherMessage, WORKER_ENV, type ToWorker, type WorkerSetup } from './messages.js'
import { processChannel, WorkerLink } from './worker-link.js'
import { shownNumber } from '../secret-text.js'

/** This process's slot among the workers (TETHER_WORKER), or null when it is not a Tether worker. */
export function workerIndex(env: Readonly<Record<string, string | undefined>>): number | null {
  const raw = env[WORKER_ENV]
  if (raw === undefined) return null
  // set by a primary only (a value left over in a shell would make this process wait for one)
  if (!/^\d{1,4}$/.test(raw)) throw new Error(`${WORKER_ENV} is set by Tether's primary for its workers (a worker index), got ${shownNumber(raw)}: unset it`)
  return Number(raw)
}

/**
 * The config every worker runs: a secret left unset is the one the primary made for all of
 * them (a cookie signed by one worker is read by the others; the logged session form is the
 * same), and the `admin` section is the primary's (see WorkerSetup.admin).
 */
export function withSharedSecrets(config: Config, w: WorkerSetup): Config {
  return {
    ...config,
    admin: w.admin,
    affinity: config.affinity.cookie.secret === null ? { ...config.affinity, cookie: { ...config.affinity.cookie, secret: [w.cookieSecret] } } : config.affinity,
    log: config.log.session_secret === null ? { ...config.log, session_secret: w.sessionSecret } : config.log,
  }
}

/**
 * The config a worker starts with: its slot's text, with the live sections of the text the
 * primary accepted last (as its predecessor had them after reloading). Throws ConfigError.
 */
export function setupConfig(setup: WorkerSetup, configPath: string, env: NodeJS.ProcessEnv): Config {
  const start = parseConfigFile(setup.start, configPath, env)
  return setup.live === null ? start : diffConfig(start, parseConfigFile(setup.live, configPath, env)).effective
}

/**
 * The primary's orders to this worker, from its first message on: one listener, registered
 * before the worker asks for its setup, so an order that comes in the same read as the setup
 * (a reload accepted meanwhile) is not lost. Until the proxy has started, the last reload is
 * kept for it; a stop is sent again by the primary once the worker is ready.
 */
class Orders {
  readonly setup: Promise<WorkerSetup | null>
  #reloadDue: string | null = null
  #handle: ((m: ToWorker) => void) | null = null
  #upstreamSeen = false
  #discoveryListed = false

  constructor() {
    let settle: (s: WorkerSetup | null) => void = () => undefined
    this.setup = new Promise((resolve) => { settle = resolve })
    process.on('message', (m: unknown) => {
      if (!isTetherMessage(m)) return
      const msg = m as ToWorker
      // a reload sent before the setup is in the setup already (its `live`)
      if (msg.tether === 'setup') {
        this.#reloadDue = null
        settle(msg.setup)
      }
      else if (msg.tether === 'upstream-seen') this.#upstreamSeen = true // the link takes it once made
      else if (msg.tether === 'discovery-listed') this.#discoveryListed = true // as upstream-seen
      else if (this.#handle !== null) this.#handle(msg)
      else if (msg.tether === 'reload') this.#reloadDue = msg.text
    })
    process.once('disconnect', () => settle(null))
    if (process.connected) process.send!({ tether: 'hello' })
    else settle(null)
  }

  /**
   * The primary's `upstream-seen` came (it may come with the setup, before this worker's link
   * listens): the group saw a healthy upstream although the setup says not.
   */
  get upstreamSeen(): boolean {
    return this.#upstreamSeen
  }

  /** The primary's `discovery-listed` came (as upstreamSeen: possibly before this worker's link listens). */
  get discoveryListed(): boolean {
    return this.#discoveryListed
  }

  /** From now on `handle` takes the orders; the reload that came before it, if any, is returned. */
  take(handle: (m: ToWorker) => void): string | null {
    this.#handle = handle
    const due = this.#reloadDue
    this.#reloadDue = null
    return due
  }
}

/**
 * The process entry of a worker: its setup from the primary, its config from the setup (an
 * error in it is written to stderr, exit 1), its logger, then {@link runWorker}. A primary
 * gone before it answered ends the worker quietly (0). `early`: the signals held since the
 * process started.
 */
export async function runWorkerProcess(configPath: string, index: number, makeLogger: (config: Config, setup: WorkerSetup) => Logger, early: EarlySignals): Promise<number> {
  if (process.send === undefined) {
    process.stderr.write(`tether: ${WORKER_ENV} is set, but this process was not started by a Tether primary: unset it\n`)
    return 1
  }
  const orders = new Orders()
  const setup = await orders.setup
  if (setup === null) return 0
  let config: Config
  try {
    config = setupConfig(setup, configPath, process.env)
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : `${configPath}: ${(err as Error).message}`}\n`)
    return 1
  }
  return runWorker(config, configPath, setup, makeLogger(config, setup).child({ worker: index }), orders, early)
}

/**
 * Where this worker's ioredis console notices go: to its primary, which logs each once for all
 * workers, when its setup says it does (an older primary's does not: null, logged here).
 */
export function noticeForwarder(setup: WorkerSetup): ((notice: { level: 'warn' | 'error'; msg: string; hint?: string }, said: string) => void) | null {
  if (setup.notices !== true) return null
  return (n, said) => {
    if (process.connected) process.send!({ tether: 'notice', level: n.level, msg: n.msg, said, ...(n.hint === undefined ? {} : { hint: n.hint }) })
  }
}

/**
 * Run this worker until the primary stops it or goes away; resolves with the exit code. `early`
 * holds the signals until it has started: a SIGTERM then is a stop, a SIGHUP or SIGINT nothing.
 */
export async function runWorker(config: Config, configPath: string, w: WorkerSetup, logger: Logger, orders: Orders, early: EarlySignals): Promise<number> {
  const link = new WorkerLink(processChannel, (c) => withSharedSecrets(c, w), undefined, undefined, typeof w.group === 'string' ? w.group : null)
  if (w.upstreamSeen === true || orders.upstreamSeen) link.sawUpstream(false)
  // (an older primary's setup does not say, and never tells: not waited for)
  if (w.discoveryListed !== false || orders.discoveryListed) link.listedDiscovery(false)
  for (const [node, marker] of Object.entries(w.keyspaceMarkers ?? {})) if (typeof marker === 'string') link.markers.set(node, marker)
  // the primary's orders: a reload sent while this worker starts is applied once it has
  // started (the last one: each carries the whole file)
  let tether: Tether | null = null
  let reloadDue: string | null = null
  let stop: ((why: string) => void) | null = null
  const reload = (t: Tether, text: string): void => {
    let next: Config
    try {
      next = parseConfigFile(text, configPath, process.env)
    } catch (err) {
      // the primary accepted this text: only a file it names (a PEM) changed since can fail here
      t.logger.error({ issues: err instanceof ConfigError ? err.issues : [(err as Error).message] }, 'config reload rejected; the running config stays')
      return
    }
    t.reload(link.adjust(next))
  }
  reloadDue = orders.take((msg) => {
    if (msg.tether === 'stop') stop?.('asked by the primary')
    else if (msg.tether === 'reload') {
      if (tether === null) reloadDue = msg.text
      else reload(tether, msg.text)
    }
  })
  const { startTether } = await import('../app.js')
  try {
    tether = await startTether(link.adjust(config), { configPath, logger, worker: link })
  } catch (err) {
    logger.error({ err }, 'worker failed to start')
    return 1
  }
  const started = tether
  if (reloadDue !== null) reload(started, reloadDue)
  link.ready(started.adminUrl)
  return new Promise<number>((resolve) => {
    stop = (why: string): void => {
      started.logger.info({ why }, 'worker stopping')
      // exit only once connections handed over during the close went back to the primary
      started.close().then(() => link.settled()).then(() => resolve(0), () => resolve(1))
    }
    // the primary is gone (killed): nobody supervises this worker any more
    process.on('disconnect', () => stop!('the primary went away'))
    // a terminal's ^C, a `pkill -HUP`, reach the whole process group: the primary stops the
    // workers and reloads them. Held until now: one killed by a SIGHUP during its first start
    // failed that start, and the primary exited 1.
    early.release({ SIGTERM: () => stop!('SIGTERM'), SIGINT: ignoreSignal, SIGHUP: ignoreSignal })
  })
}

/** A worker's SIGINT and SIGHUP: its primary's to act on (see runWorker). */
function ignoreSignal(): void {}
