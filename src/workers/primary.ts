// The primary process of `workers` > 1: forks the workers (node:cluster shares the proxy
// listener between them), restarts a crashed one with back-off, names the one that runs the
// active health checks, relays what keeps one routing truth between them (the hub), owns the
// admin listener, forwards SIGHUP and turns SIGTERM into a graceful stop of all, on a
// config change that needs a restart replaces the workers one at a time, and replaces a worker
// that stopped answering (see SilenceWatch) or did not start within the deadline
// (START_TIMEOUT). Layer 5 wiring.
import cluster, { type Worker } from 'node:cluster'
import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import type { Config } from '../config/schema.js'
import { CONFIG_WARNING, ConfigError, configWarnings, parseConfig, readConfigText } from '../config/index.js'
import { configFiles } from '../config/config-files.js'
import { diffConfig } from '../config/reload.js'
import { ConfigWatcher } from '../config/watch.js'
import { systemClock } from '../clock.js'
import { shownNumber } from '../secret-text.js'
import { EarlySignals } from '../early-signals.js'
import { holdLinesForExit, logLinesDropped, type Logger } from '../observability/logger.js'
import { logRedisNotice } from '../redis/console-notices.js'
import { MemoryCheckpointStore } from '../state/memory-store.js'
import { startAdminFront } from './admin-front.js'
import { ListenError } from '../listen.js'
import { warnOpenAdmin } from '../admin/bearer-token.js'
import { Hub } from './hub.js'
import { QUIET_AFTER, SilenceWatch, WATCHDOG_INTERVAL, WATCHDOG_TIMEOUT } from './silence-watch.js'
import { MetricsLedger } from './metrics-ledger.js'
import { REMOVED_SERIES_GRACE_MS } from '../observability/metrics-wire.js'
import { guardHandoffs, handedOn } from './handoff-guard.js'
import { isTetherMessage, WORKER_ENV, type ToPrimary, type ToWorker } from './messages.js'
import { workerCount } from './worker-count.js'
import { workerEnv, workerExecArgv } from './worker-flags.js'

/** worker-preload.cts, built next to this module (absent when src/ runs through a TypeScript loader). */
const WORKER_PRELOAD = fileURLToPath(new URL('./worker-preload.cjs', import.meta.url))
const PRELOAD_ARGS = existsSync(WORKER_PRELOAD) ? ['--require', WORKER_PRELOAD] : []

/**
 * node:cluster's settings for Tether's workers: the node options of every worker (this
 * process's own, the V8 flags the operator did not set) and the preload that keeps a primary
 * dying during a worker's start-up from crashing that worker with a stack trace.
 */
export function clusterSettings(execArgv: readonly string[] = process.execArgv, nodeOptions = process.env['NODE_OPTIONS']): { execArgv: string[] } {
  return { execArgv: [...PRELOAD_ARGS, ...workerExecArgv(execArgv, nodeOptions)] }
}


/**
 * How long a worker may take from its fork to `ready` before it is killed (SIGKILL) as a failed
 * start (ms). A start took 0.3-1.1 s on a shared 2-core host at load 5 (fork to ready: node's
 * boot, the config, the listeners, the copy of a small table from a sibling), 2.6 s at most with
 * four more busy processes; a copy from a sibling waits 30 s at most for each sibling it asks, 45 s
 * in all (worker-link.ts), after which the worker starts with what it got. So a minute is well
 * past any start that will end, and bounds one that never will: a worker frozen (SIGSTOP, a
 * stalled host) before it said anything, which the watchdog cannot tell from a slow start.
 */
export const START_TIMEOUT = 60_000

/**
 * The start deadline: START_TIMEOUT, or `TETHER_TEST_START_TIMEOUT_MS` from the environment, a
 * test hook (test/workers-start-*.test.ts freeze a starting worker and cannot wait a minute for
 * each); any other value than whole ms is refused.
 */
export function startTimeout(env: Readonly<Record<string, string | undefined>> = process.env): number {
  const raw = env['TETHER_TEST_START_TIMEOUT_MS']
  if (raw === undefined) return START_TIMEOUT
  if (!/^[1-9]\d{0,6}$/.test(raw)) throw new Error(`TETHER_TEST_START_TIMEOUT_MS is a test hook (a worker's start deadline, whole ms from 1 to 9999999), got ${shownNumber(raw)}: unset it`)
  return Number(raw)
}

/** Back-off of a worker that keeps crashing: 100 ms doubling to 30 s; a minute up resets it. */
const BACKOFF_MIN = 100
/** How many Redis nodes' keyspace markers the primary keeps for its workers (a Cluster's masters, those replaced since included): the oldest beyond it is dropped. */
const MARKERS_KEPT = 1024
const BACKOFF_MAX = 30_000
const STABLE_AFTER = 60_000

/**
 * How many times a worker killed by a group's SIGHUP (SIGINT) before it was ready is forked
 * again at once. Its node is killed by Node's default while it starts, before any JavaScript of
 * ours holds the signal (early-signals.ts): a `pkill -HUP -g`, a terminal's hangup or ^C reaches
 * every process of the group, the worker just forked included, and that was a failed first
 * start (the primary exited 1) or a failed roll. The signal was meant for the primary (which
 * holds it, and reloads or stops), not a fault of the worker; bounded, as a group signalled in
 * a loop would fork in a loop.
 */
const SIGNAL_REFORKS = 3

/** A config file's text as the primary accepted it, and the config it validated to. */
export interface Accepted {
  readonly text: string
  readonly config: Config
}

interface Slot {
  /** The slot's worker (null: none, a slot a scale-down takes away). */
  worker: Worker | null
  /**
   * The config its worker was started with: a crash restart starts from it again (with the
   * live sections of the file accepted last), so a slot a failed roll did not reach keeps its
   * listeners, affinity and state settings as they were, and a later reload sees it still needs
   * the change.
   */
  start: Accepted
  crashes: number
  startedAt: number
  /** Its worker crashed and is restarted after the back-off. */
  restarting: boolean
}

interface Running {
  readonly worker: Worker
  readonly index: number
  /** The config it was started with (its grace period at a stop is this one's). */
  readonly start: Accepted
  admin: string | null
  stopping: boolean
  /**
   * Started by a rolling replacement next to a live old worker: failing before it is ready ends
   * the roll and the old worker serves on (no restart; restarted as a crash if that one died).
   */
  readonly rolled: boolean
}

/**
 * Run the primary until SIGTERM/SIGINT (resolves with the exit code). Example: `tether` with
 * `workers: 2` -> this process forks two workers running the same command line.
 */
export async function runPrimary(file: Accepted, configPath: string, logger: Logger, early: EarlySignals = new EarlySignals()): Promise<number> {
  const first = file.config
  const startDeadline = startTimeout()
  /** The file as accepted last (at the start or by a reload); the live sections every worker runs. */
  let accepted = file
  /** The ioredis notices (their lines) logged for the workers already: each once per primary. */
  const notices = new Set<string>()
  const secrets = { cookieSecret: randomBytes(32).toString('base64url'), sessionSecret: randomBytes(32).toString('base64url') }
  /** This primary's workers' group (see WorkerSetup.group). */
  const group = randomBytes(16).toString('base64url')
  const running = new Map<number, Running>() // by cluster worker id
  const slots: Slot[] = []
  let lead: number | null = null
  /** A worker saw a healthy upstream since this primary started (for /readyz of workers started later). */
  let upstreamSeen = false
  /** A lead's discovery had its first list since this primary started (for /readyz of the workers; see WorkerSetup.discoveryListed). */
  let discoveryListed = false
  /** The keyspace markers after which a lead last wrote its part, by Redis node (see WorkerSetup.keyspaceMarkers; at most MARKERS_KEPT). */
  const keyspaceMarkers = new Map<string, string>()
  let stopping = false
  /** Every worker of the first start is ready (a crash from then on is restarted). */
  let up = false
  let rolling: Promise<void> | null = null
  /** The worker count the queued rolls lead to (null: no roll queued or running). */
  let rollingTo: number | null = null
  /** The file the last roll queued leads to (null: no roll queued or running). */
  let rollTarget: Accepted | null = null
  /** The metrics asked of the workers, by call: whose, and what takes the answer (null: it exited first). */
  const asks = new Map<number, { readonly id: number; readonly answer: (value: unknown) => void }>()
  let ask = 0
  const readyWaits = new Map<number, { resolve: () => void; reject: (e: Error) => void }>()
  const watch = new SilenceWatch()
  const ledger = new MetricsLedger(REMOVED_SERIES_GRACE_MS, systemClock.now(), logLinesDropped)
  // the workers share the secret the primary makes: a worker cannot tell it was never set (at
  // the start, and at a reload that leaves it unset where it was set)
  const unsigned = (c: Config): boolean => c.affinity.key === 'cookie' && c.affinity.cookie.secret === null
  const warnUnsigned = (): void => logger.warn('affinity.cookie.secret is not set: the workers sign cookies with a random secret made at this primary\'s start, so other Tether replicas (and these workers once the primary restarts) will not recognise them; set it for production')
  if (unsigned(first)) warnUnsigned()

  /**
   * The checkpoint store of `state.store: memory`, held here for every worker: made when a
   * config first asks for it (at the start, or by a reload whose roll brings it), its bounds
   * following the config accepted last; kept when a reload leaves it (workers not replaced yet
   * may still use it).
   */
  let store: MemoryCheckpointStore | null = null
  const provideStore = (c: Config): void => {
    if (c.state.store !== 'memory') return
    const bounds = { maxEntries: c.affinity.max_entries, maxBytes: c.state.max_bytes, maxTotalBytes: c.state.memory.max_bytes }
    if (store === null) hub.setStore(store = new MemoryCheckpointStore({ ...bounds, clock: systemClock }))
    else store.resize(bounds)
  }
  const started = (): Running[] => [...running.values()].filter((r) => r.admin !== null && !r.stopping)
  /**
   * The workers the admin listener asks: the started ones, but those silent past QUIET_AFTER
   * while another answers (frozen or stuck, their admin listener still takes the connection and
   * the request waited there until the watchdog killed them); while the primary shuts down, the
   * stopping ones until they exit (their admin API answers as a single process's does then:
   * /healthz ok, /readyz "shutting down", /metrics while requests drain).
   */
  const answering = (): Running[] => stopping ? [...running.values()].filter((r) => r.admin !== null && r.worker.isConnected()) : heard(started())
  /** `list` without the workers silent past QUIET_AFTER, unless all are (this primary stalled: their answers unread). */
  const heard = (list: Running[]): Running[] => {
    const now = performance.now()
    const answer = list.filter((r) => !watch.quiet(r.worker.id, now, QUIET_AFTER))
    return answer.length > 0 ? answer : list
  }
  const hub = new Hub({
    ids: () => [...running.keys()],
    donor: (except) => {
      const d = started().find((r) => r.worker.id !== except)
      return d === undefined ? null : d.worker.id
    },
    send: (id, m) => send(running.get(id)?.worker, m),
    lead: () => lead,
  }, null, { now: () => systemClock.now(), drainTimeout: () => accepted.config.affinity.drain_timeout })
  provideStore(first)

  const chooseLead = (): void => {
    if (lead !== null && running.get(lead)?.stopping === false) return
    const next = started()[0]
    lead = next?.worker.id ?? null
    if (next !== undefined) {
      send(next.worker, { tether: 'lead' })
      logger.info({ child: next.index }, 'worker runs the active health checks')
    }
  }

  /**
   * Start a worker in slot `index` with the config `start` (for the sections that need new
   * workers; the live ones are the file's as accepted last). It asks for them with `hello`.
   * `reforks`: how many times this start was forked again already (SIGNAL_REFORKS).
   */
  const fork = (index: number, start: Accepted, rolled = false, reforks = 0): Promise<Running> => {
    const worker = cluster.fork({ ...workerEnv(process.env), [WORKER_ENV]: String(index) })
    const r: Running = { worker, index, start, admin: null, stopping: false, rolled }
    running.set(worker.id, r)
    logger.info({ child: index, pid: worker.process.pid }, 'starting a worker')
    // a connection handed to this worker as it dies goes to another one, not left unanswered
    guardHandoffs(worker, (key) => [...running.values()].some((o) => o !== r && o.admin !== null && !o.stopping && o.worker.isConnected() && handedOn(o.worker, key)))
    // the slot's worker from now on (a crash before it is ready is a crash too: restarted,
    // backing off), except in a rolling replacement, where the worker it replaces keeps the slot
    const slot = slots[index] ??= { worker: null, start, crashes: 0, startedAt: 0, restarting: false }
    const before = slot.worker
    const beforeStart = slot.start
    slot.worker = worker
    slot.start = start
    slot.restarting = false // a restart pending for the one before stands down (its timer checks the slot's worker)
    slot.startedAt = Date.now()
    let follow: (next: Promise<Running>) => void = () => undefined
    const ready = new Promise<Running>((resolve, reject) => {
      follow = resolve
      readyWaits.set(worker.id, { resolve: () => resolve(r), reject })
    })
    // a start that never ends (frozen before it said anything, or stuck) is a failed start: its
    // exit below is handled as any other failed start's (the first start ends, a roll stops, a
    // crash restart backs off)
    let late = false
    const deadline = setTimeout(() => {
      if (r.admin !== null || worker.isDead()) return
      late = true
      logger.error({ child: index, pid: worker.process.pid, start_timeout_ms: startDeadline }, 'worker did not become ready in time; killing it')
      worker.process.kill('SIGKILL')
    }, startDeadline)
    deadline.unref()
    // a send to a worker that is exiting fails: that worker's exit is handled below
    worker.on('error', (err) => logger.warn({ err, child: index }, 'message to a worker failed'))
    worker.on('message', (m: unknown) => {
      if (!isTetherMessage(m)) return watch.heard(worker.id, performance.now())
      const msg = m as ToPrimary
      // a worker is watched from its first message after this one (a slow start is not a silence)
      if (msg.tether === 'hello') {
        const live = accepted.text === start.text ? null : accepted.text
        return send(worker, { tether: 'setup', setup: { index, ...secrets, admin: first.admin, start: start.text, live, notices: true, upstreamSeen, discoveryListed, group, keyspaceMarkers: Object.fromEntries(keyspaceMarkers) } })
      }
      watch.heard(worker.id, performance.now())
      // a worker saw a healthy upstream: the workers started from now on are told
      // (WorkerSetup.upstreamSeen), and those running now too: one whose hello was answered
      // before this came may have missed the evidence (its health copy taken after the app died)
      if (msg.tether === 'upstream-seen') {
        if (upstreamSeen) return
        upstreamSeen = true
        for (const o of running.values()) if (o !== r) send(o.worker, { tether: 'upstream-seen' })
        return
      }
      // the lead's discovery had its first list: the workers stop waiting for it (/readyz)
      if (msg.tether === 'discovery-listed') {
        if (discoveryListed) return
        discoveryListed = true
        for (const o of running.values()) if (o !== r) send(o.worker, { tether: 'discovery-listed' })
        return
      }
      // a lead wrote its part after a loss of Redis's keys: the workers started from now on compare with it
      if (msg.tether === 'lead-part') {
        if (typeof msg.node !== 'string' || typeof msg.marker !== 'string') return
        keyspaceMarkers.delete(msg.node)
        keyspaceMarkers.set(msg.node, msg.marker)
        if (keyspaceMarkers.size > MARKERS_KEPT) keyspaceMarkers.delete(keyspaceMarkers.keys().next().value!)
        return
      }
      // an ioredis notice a worker saw: logged once for all workers (each worker sees it at its connect)
      if (msg.tether === 'notice') {
        if (notices.has(msg.said)) return
        notices.add(msg.said)
        return logRedisNotice(logger, msg, msg.said, { child: index })
      }
      if (msg.tether === 'ready') {
        clearTimeout(deadline)
        r.admin = msg.admin
        readyWaits.get(worker.id)?.resolve()
        readyWaits.delete(worker.id)
        // asked to stop while it started (a roll retiring a restarted worker): a starting worker
        // may not have read that yet, or handles no stop before it is ready
        if (r.stopping) return send(worker, { tether: 'stop' })
        chooseLead()
      } else if (msg.tether === 'answer') {
        asks.get(msg.call)?.answer(msg.value)
        asks.delete(msg.call)
      } else hub.receive(worker.id, msg)
    })
    worker.on('exit', (code, signal) => {
      clearTimeout(deadline)
      running.delete(worker.id)
      watch.forget(worker.id)
      hub.gone(worker.id)
      ledger.gone(worker.id, performance.now())
      // a scrape waiting for its metrics is answered now (its counts are the gone ones), not after 5 s
      for (const [call, a] of asks) {
        if (a.id !== worker.id) continue
        asks.delete(call)
        a.answer(null)
      }
      // killed by a signal to the whole group while its node started (a SIGINT while the primary
      // is not stopping: ^C's stop is the primary's to begin): forked again, the start (the first
      // one, a roll's, a restart's) ending with the new worker's
      if (r.admin === null && !late && !r.stopping && !stopping && reforks < SIGNAL_REFORKS && (signal === 'SIGHUP' || signal === 'SIGINT')) {
        readyWaits.delete(worker.id)
        if (lead === worker.id) lead = null
        if (slot.worker === worker) {
          slot.worker = before
          slot.start = beforeStart
        }
        logger.warn({ child: index, pid: worker.process.pid, signal, attempt: reforks + 1 }, 'worker killed by a signal before it was ready (one sent to the process group); starting it again')
        return follow(fork(index, start, rolled, reforks + 1))
      }
      // one stopped while it started (a roll retiring a restarted worker) did not fail
      if (!r.stopping) readyWaits.get(worker.id)?.reject(new Error(late ? `worker ${index} was not ready within ${startDeadline} ms (killed)` : `worker ${index} exited before it was ready (${signal ?? `code ${code}`})`))
      readyWaits.delete(worker.id)
      if (lead === worker.id) {
        lead = null
        chooseLead()
      }
      if (r.stopping || stopping) return
      if (!up && r.admin === null) return // one that fails the first start ends the primary (logged there)
      if (slot.worker !== worker) return // replaced already
      // a roll's new worker that failed to start: the roll stops here (its caller says so) and
      // the old worker serves on; with none left (it died meanwhile), the slot is restarted as
      // after a crash, backing off, rather than left empty
      if (r.rolled && r.admin === null && before !== null && !before.isDead()) {
        slot.worker = before
        slot.start = beforeStart
        return
      }
      // one that never started, on a config its slot did not run before (a roll's new worker
      // where the old one had died): the slot restarts as it was, not in a loop on what failed
      if (r.admin === null) slot.start = beforeStart
      slot.crashes = Date.now() - slot.startedAt > STABLE_AFTER ? 1 : slot.crashes + 1
      const delay = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (slot.crashes - 1))
      logger.error({ child: index, pid: worker.process.pid, code, signal, restart_in_ms: delay }, 'worker died; restarting it')
      slot.restarting = true
      setTimeout(() => {
        if (stopping || slots[index]?.worker !== worker) return
        fork(index, slot.start).catch((err: unknown) => logger.error({ err, child: index }, 'worker restart failed'))
      }, delay).unref()
    })
    return ready
  }

  /** Stop `r` gracefully (its requests and WebSockets finish as at shutdown), killed after the grace period. */
  const retire = (r: Running): Promise<void> => new Promise((resolve) => {
    r.stopping = true
    if (lead === r.worker.id) {
      lead = null
      chooseLead()
    }
    if (r.worker.isDead()) return resolve()
    r.worker.once('exit', () => resolve())
    logger.info({ child: r.index, pid: r.worker.process.pid }, 'stopping a worker')
    send(r.worker, { tether: 'stop' })
    // its own grace period: one lowered by a reload applies to the workers started since
    setTimeout(() => r.worker.process.kill('SIGKILL'), r.start.config.shutdown.grace_period + 5_000).unref()
  })

  /** Replace every worker, one at a time: the new one is started and ready before the old one stops. */
  const roll = async (count: number): Promise<void> => {
    // every slot, one whose worker is waiting to restart after a crash included
    const slotsBefore = [...running.values()].filter((r) => !r.stopping).reduce((n, r) => Math.max(n, r.index + 1), slots.length)
    for (let index = 0; index < Math.max(count, slotsBefore); index++) {
      if (stopping) return // shutting down: no new worker
      // the workers of this slot now (one restarted after a crash during the roll included)
      const previous = [...running.values()].filter((r) => r.index === index && !r.stopping)
      if (index < count && previous.length > 0) await fork(index, accepted, true)
      // no worker here to serve on (a scale-up's new slot, one whose worker died): one that
      // fails to start is restarted as after a crash (logged), and the roll goes on
      else if (index < count) await fork(index, accepted).catch(() => undefined)
      else if (slots[index] !== undefined) slots[index]!.worker = null // a slot going away: no restart
      if (stopping) return
      for (const r of previous) await retire(r)
    }
    slots.length = count
    chooseLead()
    logger.info({ workers: count }, 'workers replaced')
  }

  const count = workerCount(first.workers)
  cluster.setupPrimary(clusterSettings())
  warnOpenAdmin(first, logger)
  const admin = await startAdminFront(first.admin.listen.host, first.admin.listen.port, {
    stopping: () => stopping,
    admins: () => {
      const list = answering()
      const leading = list.find((r) => r.worker.id === lead)
      return (leading === undefined ? list : [leading, ...list.filter((r) => r !== leading)]).map((r) => r.admin!)
    },
    // every live process counted once: the stopping ones of a roll too, until they exit; one
    // that exits while the others answer counts as gone (its counts are in the ledger), one
    // slower than 5 s with its last answer, and so one silent past QUIET_AFTER (not asked)
    metrics: async () => {
      const asked = new Set(answering())
      const answers = await Promise.all([...running.values()].filter((r) => r.admin !== null && r.worker.isConnected()).map((r) => new Promise<readonly [number, unknown]>((resolve) => {
        const id = r.worker.id
        if (!stopping && !r.stopping && !asked.has(r)) return resolve([id, null])
        const call = ++ask
        const timer = setTimeout(() => { asks.delete(call); resolve([id, null]) }, 5_000)
        asks.set(call, { id, answer: (v) => {
          clearTimeout(timer)
          ledger.seen(id, v)
          resolve([id, v])
        } })
        send(r.worker, { tether: 'ask', call, op: 'metrics', form: 'compact' })
      })))
      return ledger.snapshots(answers, performance.now())
    },
  }, logger, first.admin.allowed_hosts).catch((err: unknown) => {
    // the key to change is in the config file: name it too
    throw err instanceof ListenError ? err.inFile(configPath) : err
  })
  /**
   * The file is read once, here: every worker applies the text accepted (its live sections, as
   * one process does), and the slots whose worker was started with other values of the
   * sections that need new workers (or a new worker count) are replaced one at a time.
   */
  /** The issues of the last refused reload: the watch's retry refused for the same is not told again. */
  let refused: string | null = null
  /** `retry`: the watch offers again a content refused before (a file it names may be there now). */
  const reload = (retry = false): boolean => {
    if (stopping) return false // shutting down: no worker is started, the stopping ones finish as they run
    let text: string | null = null
    let next: Accepted
    try {
      text = readConfigText(configPath)
      next = { text, config: parseConfig(text, configPath, process.env, configFiles) }
    } catch (err) {
      // the watch offers it again later (a Secret a file names, updated after the ConfigMap)
      if (text !== null) watcher?.accept(text, true)
      const issues = err instanceof ConfigError ? err.issues : [(err as Error).message]
      if (retry && issues.join('\n') === refused) return false
      refused = issues.join('\n')
      logger.error({ issues }, 'config reload rejected; the running config stays')
      ledger.reloaded(false, systemClock.now())
      return false
    }
    refused = null
    watcher?.accept(text) // read here (a SIGHUP): the watch does not reload it once more
    ledger.reloaded(true, systemClock.now())
    for (const w of configWarnings(next.config)) logger.warn({ warning: w }, CONFIG_WARNING)
    const before = accepted
    accepted = next
    // (the keyspace markers kept are not dropped when state.redis changes: an old worker that
    // leads during the roll would announce them again; each names its key and database, and a
    // worker compares only one of the same key and database (markerAt): another keyspace's is
    // no earlier value of its own, and its first read there is a baseline)
    for (const r of running.values()) send(r.worker, { tether: 'reload', text: next.text })
    if (unsigned(next.config) && !unsigned(before.config)) warnUnsigned()
    if (diffConfig(before.config, next.config).needsRestart.includes('admin')) logger.warn('admin: a change of the admin listener needs a restart of the primary')
    provideStore(next.config)
    const restartFrom = (c: Config): string[] => diffConfig(c, next.config).needsRestart.filter((s) => s !== 'admin' && s !== 'workers')
    // what the slots' workers were started with (a slot a failed roll did not reach still
    // needs the change: the same reload again retries it), or, while a roll runs, what it leads
    // to (a second reload of the same change, the file watcher's and SIGHUP's, is no second roll)
    const restart = rollTarget !== null ? restartFrom(rollTarget.config) : [...new Set(slots.filter((sl) => sl.worker !== null).flatMap((sl) => restartFrom(sl.start.config)))]
    const nextCount = workerCount(next.config.workers)
    // the slots, not the workers up now: a worker restarting after a crash is no reason for a
    // roll; a slot without a worker is
    const filled = (i: number): boolean => { const w = slots[i]?.worker ?? null; return w !== null && (!w.isDead() || slots[i]!.restarting) }
    if (restart.length === 0 && (rollingTo !== null ? nextCount === rollingTo : nextCount === slots.length && Array.from({ length: nextCount }, (_, i) => i).every(filled))) return true
    logger.info({ sections: restart, workers: nextCount }, 'config change needs new workers: replacing them one at a time')
    rollingTo = nextCount
    rollTarget = next
    const queued = (rolling ?? Promise.resolve()).then(() => roll(nextCount)).catch((err: unknown) => logger.error(
      { err: (err as Error).message, sections: restart },
      'replacing the workers failed: a new worker did not start (its error is logged above); the workers not yet replaced keep running with these sections as before; fix the config (or what it names) and reload',
    )).finally(() => {
      if (rolling === queued) {
        // the last roll queued has ended
        rollingTo = null
        rollTarget = null
      }
    })
    rolling = queued
    return true
  }
  // a worker that stopped answering (stuck, frozen) is killed; its exit restarts it as a crash
  // (or fails the start it was in). A starting worker is watched once it has been heard from (a
  // slow start is not a silence; one never heard from has the start deadline, see fork), from
  // the first start on; a stopping one has its own deadline (retire).
  const watchdog = setInterval(() => {
    const now = performance.now()
    const watched = [...running.values()].filter((r) => !r.stopping && (r.admin !== null || watch.known(r.worker.id)))
    for (const id of watch.tick(now, watched.map((r) => r.worker.id))) {
      const r = running.get(id)!
      logger.error({ child: r.index, pid: r.worker.process.pid, silent_ms: WATCHDOG_TIMEOUT }, 'worker stopped answering; killing it')
      watch.heard(id, now) // once: its exit follows
      r.worker.process.kill('SIGKILL')
    }
    for (const r of running.values()) if (!r.stopping) send(r.worker, { tether: 'ask', call: ++ask, op: 'alive' })
  }, WATCHDOG_INTERVAL)
  watchdog.unref()
  let watcher: ConfigWatcher | null = null

  /** Resolves with the exit code once the primary has stopped (after SIGTERM/SIGINT). */
  let exit: (code: number) => void = () => undefined
  const exited = new Promise<number>((resolve) => { exit = resolve })
  /** Resolves when a stop begins (a signal, during the first start too). */
  let stopBegan: () => void = () => undefined
  const stopBegins = new Promise<void>((resolve) => { stopBegan = resolve })
  const stop = (signal: string): void => {
    if (stopping) {
      holdLinesForExit() // its line is the last: written by the exit's synchronous flush, also into a full pipe
      logger.warn({ signal }, 'second signal: exiting now')
      for (const r of running.values()) r.worker.process.kill('SIGKILL')
      return exit(1)
    }
    stopping = true
    stopBegan()
    logger.info({ signal }, 'signal received: stopping the workers')
    watcher?.stop()
    clearInterval(watchdog)
    // all stopping first: the lead's checks are not handed to a worker about to stop; a worker
    // still starting is sent the stop again once it is ready (or killed at the end of its grace)
    for (const r of running.values()) r.stopping = true
    void Promise.all([...running.values()].map(retire)).then(() => admin.close()).then(() => exit(0))
  }
  /** A SIGHUP came during the first start: reloaded once it has ended. */
  let reloadDue = false
  // from here on a stop begins at once, also while the workers start (a start that never ends
  // held it for good); a reload waits for the end of the first start (see EarlySignals for the
  // signals that came before)
  early.release({
    SIGTERM: stop,
    SIGINT: stop,
    SIGHUP: () => {
      if (stopping) return logger.info({ signal: 'SIGHUP' }, 'SIGHUP during shutdown: not reloading')
      if (!up) {
        reloadDue = true
        return
      }
      logger.info('SIGHUP: reloading the config in every worker')
      reload()
    },
  })
  if (stopping) return exited // a stop held from before: no worker is started

  const failed = await Promise.race([
    Promise.all(Array.from({ length: count }, (_, i) => fork(i, file))).then(() => null, (err: unknown) => err),
    stopBegins.then(() => null),
  ])
  // a stop during the start: it ends the primary (the workers still starting stop once ready)
  if (stopping) return exited
  if (failed !== null) {
    logger.error({ err: failed }, 'a worker failed to start')
    stopping = true
    clearInterval(watchdog)
    for (const r of running.values()) r.worker.process.kill('SIGKILL')
    await admin.close()
    return 1
  }
  up = true
  logger.info({ workers: count, admin: admin.url }, 'tether primary: workers started')
  watcher = new ConfigWatcher(configPath, reload, undefined, { baseline: file.text })
  watcher.start()
  if (reloadDue) {
    logger.info('SIGHUP: reloading the config in every worker')
    reload()
  }
  return exited
}

function send(worker: Worker | undefined, m: ToWorker): void {
  if (worker !== undefined && worker.isConnected()) worker.send(m)
}
