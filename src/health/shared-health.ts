// Health shared between Tether replicas (`health.shared`): an upstream this replica finds down
// (unhealthy or ejected) is ejected by the others at once (those that have it as the same pod:
// the same pod uid, or without uids at one of the addresses it was found down at),
// and a drain or undrain made through
// one replica's admin API applies to all. Layer 2: talks to the health table and to a
// PeerChannel port; events it applies because a peer sent them are not sent again.
import { randomUUID } from 'node:crypto'
import type { Logger } from '../observability/logger.js'
import { systemTimers, type Timers } from '../clock.js'
import type { PeerChannel } from '../peers/peer-channel.js'
import { TOLD_REASONS, type EjectionReason, type HealthTable, type ToldLength } from './health-table.js'
import { ReplayWindow } from './replay-window.js'

/** The named set of upstreams drained through an admin API, for replicas that start later: `migrate` or `stay`. */
const DRAINS = 'drains'
/** When each of those drains began (ms since the epoch); a set apart, so an older Tether reads the DRAINS values it knows. */
const DRAIN_STARTS = 'drain-starts'
/** When each upstream was last drained or undrained through an admin API (ms since the epoch): which of two replicas' changes is newer. */
const DRAIN_CHANGES = 'drain-changes'
/**
 * The ejections found on live traffic told to the others and still in force on their sender,
 * for replicas that start later and for one whose subscription missed the `down`: field
 * `<sender uuid>:<seq>` (the `down` message's id: each ejection its own field, so a sender
 * replaces or removes only its own, and a reader drops only an ended one, never one written
 * since), value a {@link RecordedEjection} in JSON. The sender removes its field when its
 * ejection ends sooner (passed probes ended a refusal, the upstream left its set or was
 * replaced) or a newer `down` of that upstream replaces it; a reader drops one that ended more
 * than SKEW_TOLERANCE_MS ago on its clock, or one that is impossible on it (see
 * SKEW_TOLERANCE_MS): cleaned lazily, a sender that died leaves its fields. After Redis lost its
 * keys the sender writes its own back, and with workers their lead its siblings' too (see
 * recordAgain: a worker that died leaves its ejections running on its siblings). The key's own
 * expiry ends nothing in practice: every write of any field sets it a week ahead again.
 */
const EJECTIONS = 'ejections'
/**
 * How long a recorded drain or change is kept after it was made (ms): older ones are dropped
 * when read. Each set's own expiry counts from its last write, so a cluster that drains
 * something every week kept every drain ever recorded.
 */
export const RECORDED_MS = 7 * 24 * 3_600_000

/** The wait before a failed read of the recorded drains is made again (ms): the first, doubled after each failure up to the last. */
export const READ_RETRY_MS = { first: 1_000, most: 30_000 } as const

/**
 * How long after a drain of an id not in the set was heard its sender has surely recorded it
 * (ms; it records right after it publishes): a heard drain applied when the id joins is confirmed
 * by a read of the record no sooner (see SharedHealth.#joined).
 */
export const HEARD_RECORDED_MS = 5_000

/**
 * How far apart replica clocks may be (ms) for the recorded ejections (see EJECTIONS): a reader
 * drops a record only once it ended more than this long ago on its clock (a reader whose clock is
 * ahead would otherwise drop one still running on the others'), and a record whose remaining
 * time on its clock exceeds the told length by more than this (its sender's clock was that far
 * ahead, or this one's behind: with sane clocks impossible) is not applied, and dropped (see
 * SKEWED_LOG; the two cannot be told apart here). NTP keeps
 * replica clocks within milliseconds; a minute is far past that, and short against the week
 * the other records are kept.
 */
export const SKEW_TOLERANCE_MS = 60_000

/** Said (a warn, once a record) when a recorded ejection's sender clock was more than SKEW_TOLERANCE_MS ahead of this replica's (or this one as far behind): the record is dropped. */
export const SKEWED_LOG = 'a recorded ejection ends later than its told length allows on this clock (its sender\'s clock is ahead of this one, or this one behind): not applied, and dropped'

/** Said (a warn) when a read of the recorded drains failed, once a spell of failed reads. */
export const UNREAD_LOG = 'the recorded drains were not read (the peer channel did not answer): serving without them'

/** Said (a warn) instead of UNREAD_LOG when the drains were read but the recorded ejections were not. */
export const EJECTIONS_UNREAD_LOG = 'the recorded ejections were not read (the peer channel did not answer): serving without them'

/**
 * An ejection as recorded in Redis (see EJECTIONS): the `down` message's fields about it
 * (`reason`, `refused`, `url`, `addresses`, `uid`) and its length: `ejectedFor` (ms, as told)
 * and `ejections` (the count there), and `until`, its end by the sender's wall clock (ms since
 * the epoch: its health table's clock, the system clock but in tests). A reader ejects for
 * `min(ejectedFor, until - its own now)` (the same clock of its table): replica clocks are
 * compared (as for the drains' starts), so it ends off by their skew (NTP: a few ms). A record
 * that would run longer than `ejectedFor` + SKEW_TOLERANCE_MS on the reader's clock (its
 * sender's clock far ahead: it would be applied at every start, its `until` reached late or
 * never) is not applied, and dropped. `group`: the sender's group of workers (see the
 * SharedHealth constructor; absent: a process alone, or a Tether from before it), by which a
 * sibling worker that reads the record knows it for its group's (see SharedHealth.#siblings).
 * Example: `{"id":"app-1","until":1764086430000,"ejectedFor":30000,"ejections":1,"reason":"5xx","url":"http://10.0.0.5:8080"}`.
 */
export interface RecordedEjection {
  readonly id: string
  readonly until: number
  readonly ejectedFor: number
  readonly ejections: number
  readonly reason?: EjectionReason
  readonly refused?: true
  readonly url?: string
  readonly addresses?: readonly string[]
  readonly uid?: string
  readonly group?: string
}

/**
 * Where an upstream id is in this replica's current set (undefined: not in it): its url, and
 * every address listed for it now (`url` among them; absent: `url` alone), and its pod's `uid`
 * when discovery gives one. A `down` message carries the url found down, the addresses the
 * sender lists for the id and its uid; a replica applies it when both have a uid and it is the
 * same, refuses it when both have one and they differ (another pod: the id's old one was found
 * down), and without a uid on either side applies it when the id has that url here, or when
 * each side lists the address the other kept (one pod, each replica kept another of its
 * addresses), and ignores it otherwise.
 */
export type AddressesOf = (id: string) => { readonly url: string; readonly addresses?: readonly string[]; readonly uid?: string } | undefined

/**
 * Example: `const shared = new SharedHealth(channel, health, logger, (id) => membership.current().get(id)); shared.start()`;
 * the admin API calls `shared.tell('drain', 'app-1')` after draining app-1 here.
 */
export class SharedHealth {
  readonly #self = randomUUID()
  /** The last message's number: with `from`, each message's id (a `seq` field, which a Tether from before it ignores). */
  #seq = 0
  /** The processes that apply one lead's probe results (this one and its sibling workers); see the constructor. */
  readonly #group: string
  readonly #channel: PeerChannel
  readonly #health: HealthTable
  readonly #logger: Logger
  readonly #addressesOf: AddressesOf
  #applyingPeer = false
  /** While the recorded drains are read: the ids of drains and undrains received or made meanwhile (newer than the read). */
  readonly #hearing = new Set<Set<string>>()
  /**
   * Drains and undrains made here that did not reach Redis (it was down): sent again when the
   * subscription is back, before the record is applied, so an older record never undoes them.
   * `at`: when (ms since the epoch), against a drain recorded since by another replica.
   */
  readonly #unsent = new Map<string, { readonly kind: 'drain' | 'undrain'; readonly at: number }>()
  /** The newest drain or undrain sent from here, by upstream id (an older send's failure is moot). */
  readonly #sending = new Map<string, number>()
  #sends = 0
  /** Upstreams whose `down` did not reach Redis (not connected yet, or down): told again when the subscription is (back) in place, if still down here. */
  readonly #unsentDowns = new Set<string>()
  /** A group's own ordered channel, and whether this process is its lead (see the constructor); null: none. */
  readonly #relay: GroupRelay | null
  /**
   * Another group's active `down`s with an id (`from` and `seq`) this process applied, from
   * Redis as its group's lead or from a lead's relay: the same message coming again (its Redis
   * copy after the relay, another lead's relay of it while the lead changes, a kept copy a new
   * lead replays) is not applied again, whatever came in between: per sender a low-water mark
   * and the seqs applied above it (see ReplayWindow: at most 100 each, 256 senders), so one
   * older than the sender's last 100 applied is refused, never applied again. Its id tells it
   * from a later `down` of that upstream, so an entry whose other copy never comes (lost while
   * the subscription was down) stands for nothing else.
   */
  readonly #applied = new ReplayWindow()
  /**
   * Another group's active `down`s without an id (from a Tether before message ids) this
   * process applied from Redis as its group's lead (and relayed), until another lead's relay of
   * the same message comes (while the lead changes, the old one relays too): that relay is not
   * applied again here (at most RELAYED_KEPT, oldest dropped). Without an id, two `down`s of one
   * upstream from one sender are the same text: each entry is matched once.
   */
  readonly #appliedAsLead: string[] = []
  /**
   * Another group's active `down`s this process heard from Redis while not its group's lead,
   * with their upstream id, that no lead has relayed yet: the lead that heard them may have
   * died, or there was none (the group starting, or the lead gone and the next not told yet).
   * This process applies and relays them if it becomes the lead (see becameLead); a relay of one
   * drops it, and so does a passed probe of its upstream here (which would have ended it).
   * At most RELAYED_KEPT each, oldest dropped.
   */
  readonly #unrelayed: Heard[] = []
  /**
   * Relays of a `down` without an id that came before this process heard their message from
   * Redis: that copy, when it comes, is not kept in #unrelayed, nor (this process the lead by
   * then) applied and relayed again; a passed probe meanwhile does not drop them. Dropped when
   * the subscription is back after a lost connection (a copy published meanwhile never comes, and
   * the entry would stand for the sender's next `down` of that upstream, the same text). At most
   * RELAYED_KEPT, oldest dropped.
   */
  readonly #relayedFirst: Heard[] = []
  /**
   * Recorded drains read for an id this replica's set did not have at the read (discovery's
   * first list for it not come yet: a worker that read before its lead's or the primary's list;
   * a pod out of the list at the start), and drains heard for such an id, by id: applied when
   * the id joins the set, unless an undrain of it is heard or a change made here meanwhile (a
   * drain heard replaces it). Replaced by each read (a record removed since is no longer
   * waited for); at most AWAITED_KEPT. `changed`: the record's change time (undefined: an
   * older Tether's, kept as the read keeps it), a week after which it is stale (see
   * RECORDED_MS) and not applied; `recorded`: read from the record (not heard).
   */
  readonly #awaiting = new Map<string, { readonly migrate: boolean; readonly since: number | undefined; readonly changed: number | undefined; readonly recorded: boolean }>()
  /**
   * Recorded ejections read for an id this replica's set did not have at the read (as the
   * drains in #awaiting: a worker that read before its lead's first list), by id: applied for
   * what is left of them when the id joins the set. Replaced by each read; at most AWAITED_KEPT ids.
   */
  readonly #awaitingEjections = new Map<string, { readonly field: string; readonly r: RecordedEjection }[]>()
  /**
   * The recorded ejections' fields (see EJECTIONS) this process applied, as a record read or as
   * the `down` heard (its `from:seq`), or refused at its max_ejection_percent (counted), or
   * dropped as impossible on its clock, and when (the table's clock): none is applied or counted
   * twice. Else each read (each time the subscription is back) counted again one refused at the
   * limit, lengthening this replica's next ejection of it (and every replica's it tells), and
   * applied again a refusal this replica's probes had ended (its sender dead: the record stays
   * until its end). A field is forgotten once its ejection has ended here by more than
   * SKEW_TOLERANCE_MS (a read then skips its record as ended: not when a read no longer lists
   * it, as a sender whose Redis lost its keys writes it back under the same field, review R6),
   * and when its upstream leaves the set (its state goes with it: back in the set, a read
   * applies the record again); at most APPLIED_KEPT, the oldest dropped. A `down` of an id not in the
   * set is not noted: its record waits for the id to join (see #awaitingEjections).
   */
  readonly #appliedFields = new Map<string, { readonly until: number; readonly id: string }>()
  /**
   * The ejections this process recorded (see EJECTIONS) and that may still be in force here, by
   * upstream id: the field and the value written, its end on this table's clock.
   */
  readonly #recorded = new Map<string, { readonly field: string; readonly value: string; readonly ends: number }>()
  /**
   * The ejections this process's sibling workers recorded (see EJECTIONS) and that may still be
   * in force here, by field: every one (two siblings that found one upstream failing before
   * they heard each other, say one a 5xx and the other a refusal, recorded two, and a replica
   * that reads only one of them after a loss holds the upstream as the other kind), but each
   * finder's newest of an upstream (its next `down` of it replaces its record). The upstream id,
   * the value as their finder wrote it, and its end (the finder's clock: the workers share one
   * machine's), known from the `down` heard (it carries `until` and `group`) or from the record
   * read (its `group`). The lead writes them back after Redis lost its keys (see recordAgain):
   * else an ejection whose finder exited since (crashed and restarted, or replaced in a rolling
   * restart) had nobody to write it back, its siblings and its replacement holding it without
   * its record. Dropped when its finder removed its record (it tells its siblings: see
   * #unrecord), when it ended here (as #recorded) or its end passed, or the upstream left the
   * set; at most APPLIED_KEPT, the oldest dropped. `capped`: this process refused it at its
   * max_ejection_percent (see #markCapped): nothing ends here what never began here, so it is
   * kept (and written back) until its finder removes it, its end passes or the upstream leaves
   * the set.
   */
  readonly #siblings = new Map<string, { readonly id: string; readonly value: string; readonly until: number; readonly capped: boolean }>()
  /**
   * The sibling records this process wrote back as its group's lead (see recordAgain), by
   * field, with their end (the finder's clock): one whose finder's `unrecorded` comes after
   * the write-back is removed from Redis again (see #receive). Its finder removed it from Redis
   * before the write-back reached it, and its message was still on the way through the
   * primary: written back, it stayed until its end. Dropped at that message, at its end, at
   * most APPLIED_KEPT.
   */
  readonly #writtenBack = new Map<string, number>()
  /** Those whose removal again failed (see #removeWrittenBack), with their end: removed again later. At most APPLIED_KEPT. */
  readonly #unremoved = new Map<string, { readonly until: number }>()
  /**
   * The losses of Redis's keys this process handled while not its group's lead and whose
   * lead's part (the drains, its siblings' ejections: see recordAgain) it has not seen written,
   * by node: the node's new keyspace marker (which every worker that noticed that loss read)
   * and when (the table's clock). The lead tells its siblings once it wrote its part for a
   * loss (see #wroteLeadPart); if this process becomes the lead with one still here, it writes
   * the lead's part then (see becameLead): the lead before it exited (SIGKILLed, crashed,
   * killed by its primary's watchdog once frozen) or handed the lead over (a rolling restart)
   * before its own check noticed the loss, and nobody wrote them back. No window: a lead
   * frozen for the primary's watchdog (10 s of silence) is replaced seconds after its
   * sibling noticed the loss, later than a check interval. At most LOSSES_KEPT, the oldest dropped.
   */
  readonly #leadPartOwed = new Map<string, { readonly marker: string; readonly at: number }>()
  /**
   * The losses whose lead's part the group's lead said it wrote, by node: its newest marker.
   * One told before this process's own check noticed that loss (the lead's check came
   * first) is not owed here when it does. At most LOSSES_KEPT, the oldest dropped.
   */
  readonly #leadPartWritten = new Map<string, string>()
  /** A write of the lead's part that failed is tried again (see #writeLeadPart): due, and the wait before the next one (ms). */
  #leadPartRetry = false
  #leadPartRetryMs: number = READ_RETRY_MS.first
  /**
   * The awaited drains applied when their id joined, until the record is read again: one gone
   * from Redis meanwhile (its upstream left another replica's set: a replica that did not have
   * it could not see that) is undone, unless a drain or undrain of it came since, or the id left
   * the set. By id, the apply's number.
   */
  readonly #confirming = new Map<string, number>()
  #joins = 0
  /** The timers of the confirming reads due (see #confirm): cancelled by stop(). */
  readonly #confirmTimers = new Set<unknown>()
  readonly #timers: Timers
  /** The health table's wall clock (see the constructor). */
  readonly #now: () => number
  /** The reads of the recorded drains in progress (one at a time), null when none is. */
  #reading: Promise<void> | null = null
  /** The subscription came back while a read was in progress: read once more after it. */
  #readAgain = false
  /** start() has begun its own read: a subscription in place from then on reads (before, start's read does). */
  #readsOnSubscribe = false
  /** The timer of the next read after a failed one (null: none due), and the wait after the next failure (ms). */
  #retry: unknown = null
  #retryMs: number = READ_RETRY_MS.first
  /** Reads failed since the last one that succeeded. */
  #failedReads = 0
  /** What those reads left unread, each said once in a warn (UNREAD_LOG, EJECTIONS_UNREAD_LOG). */
  readonly #unreadSaid = new Set<'drains' | 'ejections'>()
  #stopped = false

  /**
   * `group`: the id this process shares with the processes that apply the same probe results
   * (its sibling workers, which all apply the lead's); null: this process alone. An upstream
   * that failed its active checks here is unhealthy there already, until the probes pass again:
   * a `down` about it (marked `active`) is for the other replicas only, as an ejection there.
   * `relay`: with `group`, when the channel is not the group's own (Redis): another group's
   * active `down` ends at the next passed probe of this group's lead, whose results reach the
   * other workers in its ordered stream; so only the lead applies such a `down` heard here and
   * relays it in that stream, and the others apply the relayed one, in the lead's order (each
   * hearing it from Redis at its own moment, a worker could take the lead's passed probe
   * before the `down`, and stay out one probe interval longer).
   * `now`: the wall clock (ms since the epoch) the health table runs on, on which the recorded
   * ejections' ends are written and read (see EJECTIONS).
   */
  constructor(channel: PeerChannel, health: HealthTable, logger: Logger, addressesOf: AddressesOf = () => undefined, group: string | null = null, relay: GroupRelay | null = null, timers: Timers = systemTimers, now: () => number = Date.now) {
    this.#channel = channel
    this.#now = now
    this.#timers = timers
    this.#relay = relay
    this.#group = group ?? this.#self
    this.#health = health
    this.#logger = logger
    this.#addressesOf = addressesOf
    for (const [node, marker] of relay?.markers ?? []) keepLoss(this.#leadPartWritten, node, marker)
    health.onTransition((e) => {
      if (!this.#applyingPeer && (e.to === 'unhealthy' || e.to === 'ejected')) this.tell('down', e.id, false, undefined, e.to === 'unhealthy')
      // an upstream that left the set (its pod deleted after a preStop drain) left its drain
      // with it, here as in every replica that saw it go: its record goes too, else a replica
      // started later drained the id when it came back (a StatefulSet pod's name), alone
      if (e.to === null) {
        this.#awaiting.delete(e.id)
        this.#confirming.delete(e.id)
        this.#forget(e.id)
        for (const [field, applied] of this.#appliedFields) if (applied.id === e.id) this.#appliedFields.delete(field)
        this.#dropSiblings(e.id, false)
      }
      // an id that joined the set: its recorded drain, read before it was here, applies now. In a
      // microtask: after the set change that added it (not inside the table's transition), and
      // before any request is placed (those come from I/O callbacks)
      if (e.from === null && e.to !== null && (this.#awaiting.has(e.id) || this.#awaitingEjections.has(e.id))) queueMicrotask(() => this.#joined(e.id))
      // an ejection recorded here that ended (its time, passed probes, the upstream left the set
      // or was replaced): its record goes. In a microtask: the table is read, not inside its transition
      if (this.#recorded.has(e.id)) queueMicrotask(() => this.#unrecordEnded(e.id))
      // a sibling's ejection that ended here (its time, passed probes, the upstream left the
      // set): the lead no longer writes it back (its finder, alive, removed its record); but
      // for one refused here at max_ejection_percent, which never ran here (see #markCapped)
      if (this.#siblings.size > 0) queueMicrotask(() => { if (this.#health.ejection(e.id) === null) this.#dropSiblings(e.id, true) })
    })
  }

  /**
   * Start receiving (after the channel's connection started), and apply the drains other
   * replicas made before this one started (bounded by the channel's timeout); again each time
   * the subscription is back after a lost connection (or comes late: the channel was down at
   * the start), since drains made meanwhile were not heard. `connected`: the channel's
   * connection starting (the composition root's `redis.start()`, called before this one): the
   * subscriptions are made meanwhile (each waits up to its own deadline, at the same time as the
   * connection's), the read once it settled, so a Redis that answers has its drains applied
   * before this resolves (the composition root listens only then). Each read is bounded by the
   * channel's connect timeout; one that fails applies nothing, is logged (a warn, once a spell
   * of failed reads) and is made again after READ_RETRY_MS (1 s, doubling up to 30 s; at once
   * when the subscription is back), until one succeeds or {@link stop}: the drains and undrains
   * made here that did not reach the channel are sent after the first read that succeeds.
   */
  async start(connected: Promise<unknown> = Promise.resolve()): Promise<void> {
    // subscribed first: a change made after the read below is then received, not missed
    await Promise.all([
      this.#relay?.channel.subscribe((m) => this.#relayed(m)),
      this.#channel.subscribe((m) => this.#receive(m), () => {
        this.#relayedFirst.length = 0
        this.#tellUnsentDowns()
        for (const [field, retry] of [...this.#unremoved]) this.#removeWrittenBack(field, retry.until, READ_RETRY_MS.first)
        // (the first subscription, in place before start's own read, is read by that read)
        if (!this.#readsOnSubscribe) return
        this.#retryMs = READ_RETRY_MS.first
        void this.#read()
      }),
      connected,
    ])
    this.#readsOnSubscribe = true
    await this.#read()
  }

  /** No more reads of the recorded drains (a retry due is cancelled): the process stops. */
  stop(): void {
    this.#stopped = true
    this.#cancelRetry()
    for (const h of this.#confirmTimers) this.#timers.clearTimeout(h)
    this.#confirmTimers.clear()
  }

  /**
   * Read the recorded drains (see #readRecorded), one read at a time: asked while one is in
   * progress, another follows it (the subscription came back meanwhile: changes made while it
   * was down may be missing from the read in progress). A failed read is made again later.
   */
  #read(): Promise<void> {
    if (this.#reading !== null) {
      this.#readAgain = true
      return this.#reading
    }
    if (this.#stopped) return Promise.resolve()
    this.#cancelRetry()
    this.#reading = (async () => {
      let unread: Unread
      do {
        this.#readAgain = false
        unread = await this.#readRecorded()
      } while (this.#readAgain && !this.#stopped)
      this.#reading = null
      if (unread === null) {
        if (this.#failedReads > 0) {
          // said for what was not read in the spell, now read
          const drains = this.#unreadSaid.has('drains')
          const what = drains && this.#unreadSaid.has('ejections') ? 'drains and ejections' : drains ? 'drains' : 'ejections'
          this.#logger.info({ failed_reads: this.#failedReads }, `the recorded ${what} were read again: applied${drains ? ', and the drains and undrains made here meanwhile sent' : ''}`)
        }
        this.#failedReads = 0
        this.#unreadSaid.clear()
        this.#retryMs = READ_RETRY_MS.first
        return
      }
      this.#failedReads++
      // each kind's warn once a spell: one that began with the ejections alone still says the
      // drains' when they fail too (new users may then be placed on a drained upstream)
      for (const kind of [...unread].filter((k) => !this.#unreadSaid.has(k))) {
        this.#unreadSaid.add(kind)
        const hint = `the read is retried (after ${READ_RETRY_MS.first / 1_000} s, doubling up to ${READ_RETRY_MS.most / 1_000} s; at once when the subscription to the peer channel (Redis) is back): an info says when it succeeded`
        if (kind === 'drains') {
          this.#logger.warn({
            effect: 'new users may be placed on an upstream another replica drained (and its users stay there), and drains and undrains made here while the peer channel was down are not sent yet, until they are read',
            hint,
          }, UNREAD_LOG)
        } else {
          this.#logger.warn({
            effect: 'new users may be placed on an upstream another replica ejected, until that ejection ends there or this replica finds the upstream down itself, until they are read',
            hint: `${hint}; grant the key ${'`'}peers:ejections${'`'} under the key prefix if the ACL user lacks it`,
          }, EJECTIONS_UNREAD_LOG)
        }
      }
      if (this.#stopped) return
      const wait = this.#retryMs
      this.#retryMs = Math.min(wait * 2, READ_RETRY_MS.most)
      this.#retry = this.#timers.setTimeout(() => {
        this.#retry = null
        void this.#read()
      }, wait)
    })()
    return this.#reading
  }

  #cancelRetry(): void {
    if (this.#retry === null) return
    this.#timers.clearTimeout(this.#retry)
    this.#retry = null
  }

  /**
   * Apply the recorded drains this replica does not have yet, after sending again what this
   * replica could not send: its undrain wins over a drain recorded before it, a drain recorded
   * since (another replica's, newer) wins over it; and the recorded ejections (see
   * #applyRecordedEjections), read at the same time. Returns what could not be read (null: all
   * was): drains not read apply nothing and send nothing (which change is newer is not known);
   * ejections not read leave the drains to apply, and the read is made again all the same.
   */
  async #readRecorded(): Promise<Unread> {
    const heard = new Set<string>()
    this.#hearing.add(heard)
    const [drains, starts, changes, ejections] = await Promise.all([DRAINS, DRAIN_STARTS, DRAIN_CHANGES, EJECTIONS].map((set) => this.#channel.members(set)))
    this.#hearing.delete(heard)
    // the ejections apart from the drains: either read applies without the other
    if (ejections !== null) this.#applyRecordedEjections(ejections)
    // nothing of a partial read applies (a drain without its start would begin now here)
    if (drains === null || starts === null || changes === null) return ejections === null ? ['drains', 'ejections'] : ['drains']
    // records older than RECORDED_MS are forgotten (an older Tether's, without times, are
    // kept); one heard meanwhile is newer than the read; a drain this replica still holds is
    // recorded again instead (it stands: replicas started later must still apply it)
    const now = Date.now()
    for (const id of new Set([...drains.keys(), ...changes.keys()])) {
      const changed = startTime(changes.get(id)) ?? startTime(starts.get(id))
      if (changed === undefined || now - changed < RECORDED_MS || heard.has(id)) continue
      if (drains.has(id) && this.#health.adminDrain(id) !== null) {
        void this.#channel.remember(DRAIN_CHANGES, id, String(now))
        continue
      }
      drains.delete(id)
      starts.delete(id)
      changes.delete(id)
      this.#forget(id)
    }
    for (const [id, unsent] of this.#unsent) {
      // another replica's drain or undrain made since this one (an older Tether records no
      // change time: its drain's start tells)
      const changed = startTime(changes.get(id)) ?? (drains.has(id) ? startTime(starts.get(id)) : undefined) ?? 0
      if (heard.has(id) || changed > unsent.at) {
        this.#unsent.delete(id)
        // a drain made here, undrained since elsewhere: the record (no drain) applies
        if (!heard.has(id) && unsent.kind === 'drain' && !drains.has(id) && this.#health.adminDrain(id) !== null) this.#apply({ kind: 'undrain', id, migrate: false, active: false })
        continue
      }
      drains.delete(id)
      const held = this.#health.adminDrain(id)
      // sent with the time the operator made it, against changes other replicas made since
      if (unsent.kind === 'undrain' && held === null) this.tell('undrain', id, false, unsent.at)
      else if (unsent.kind === 'drain' && held !== null) this.tell('drain', id, held.migrate, unsent.at)
      else this.#unsent.delete(id)
    }
    // a drain without a start (recorded by an older Tether, or not a whole number) began now;
    // one drained or undrained since the read began is as that message said (it may be newer);
    // an admin's drain in place already, as migrating as recorded, is left alone; one of an id
    // not in the set yet waits for it to join (this read replaces what the last one left
    // waiting, but for a drain heard meanwhile: newer)
    for (const id of [...this.#awaiting.keys()]) if (!heard.has(id)) this.#awaiting.delete(id)
    for (const [id, how] of drains) {
      const migrate = how === 'migrate'
      const held = this.#health.adminDrain(id)
      if (heard.has(id) || (held !== null && (held.migrate || !migrate))) continue
      const since = startTime(starts.get(id))
      if (this.#health.state(id) === undefined) {
        this.#await(id, { migrate, since, changed: startTime(changes.get(id)) ?? since, recorded: true })
        continue
      }
      this.#apply({ kind: 'drain', id, migrate, active: false, since })
    }
    return ejections === null ? ['ejections'] : null
  }

  /**
   * Apply the recorded ejections (see EJECTIONS) still in force, as a `down` heard from their
   * sender would be, for what is left of them: at the start (before the proxy port listens) and
   * after the subscription is back (a `down` lost meanwhile). Each field once (see
   * #appliedFields): one applied here already (read, or heard as its `down`) is skipped, so
   * neither a refusal ended here by passed probes nor one refused at max_ejection_percent (and
   * counted) comes back at the next read. The timed ones before the refusals: at
   * max_ejection_percent the slots go to ejections that surely run on their sender (a timed
   * one runs its time there, whatever the probes), not to a refusal whose sender may be dead and
   * which every live replica's passed probes ended (its record stays until its end). One that
   * ended more than SKEW_TOLERANCE_MS ago on this clock is dropped from the record (one that
   * ended less long ago is only skipped: this clock may be ahead of the others', where it
   * runs); an impossible one (see SKEW_TOLERANCE_MS) is dropped too, and said. One of this
   * process's own that is no longer in force here is dropped. One of an id not in the set waits
   * for it to join (#awaitingEjections, replaced by each read). A value that is not a recorded
   * ejection (another version's) is left alone, for the version that wrote it (the key's expiry
   * ends nothing: every write sets it a week ahead again).
   */
  #applyRecordedEjections(recorded: Map<string, string>): void {
    const now = this.#now()
    this.#awaitingEjections.clear()
    // forget the fields whose ejection ended here (see #appliedFields)
    for (const [field, applied] of this.#appliedFields) if (applied.until + SKEW_TOLERANCE_MS <= now) this.#appliedFields.delete(field)
    const records: { readonly field: string; readonly r: RecordedEjection }[] = []
    for (const [field, value] of recorded) {
      const r = recordedEjection(value)
      if (r !== null) records.push({ field, r })
    }
    // timed first (a stable sort: each kind in the hash's order)
    records.sort((x, y) => Number(x.r.refused === true) - Number(y.r.refused === true))
    for (const { field, r } of records) {
      if (field.startsWith(`${this.#self}:`)) {
        // this process's own: it holds it (or it ended here sooner, and its removal was lost)
        if (this.#recorded.get(r.id)?.field !== field || this.#health.toldLength(r.id) === null) {
          if (this.#recorded.get(r.id)?.field === field) this.#recorded.delete(r.id)
          void this.#channel.remember(EJECTIONS, field, null)
        }
        continue
      }
      if (r.until <= now - SKEW_TOLERANCE_MS) {
        this.#appliedFields.delete(field)
        void this.#channel.remember(EJECTIONS, field, null)
        continue
      }
      if (r.until <= now || this.#appliedFields.has(field)) continue
      if (r.until - now > r.ejectedFor + SKEW_TOLERANCE_MS) {
        this.#noteApplied(field, r.id, now)
        this.#logger.warn({ field, upstream: r.id, ahead_ms: r.until - r.ejectedFor - now, told_ms: r.ejectedFor, hint: 'check the clocks (NTP) of this replica and of the one whose uuid begins the field: a replica whose clock is behind by more than the tolerance drops the records of ejections still running' }, SKEWED_LOG)
        void this.#channel.remember(EJECTIONS, field, null)
        continue
      }
      // a sibling worker's (alive, or gone since: a worker that starts reads it here)
      if (r.group === this.#group) this.#holdSibling(r.id, field, recorded.get(field)!, r.until, now)
      if (this.#health.state(r.id) === undefined) {
        const waiting = this.#awaitingEjections.get(r.id) ?? []
        waiting.push({ field, r })
        this.#awaitingEjections.delete(r.id)
        this.#awaitingEjections.set(r.id, waiting)
        if (this.#awaitingEjections.size > AWAITED_KEPT) this.#awaitingEjections.delete(this.#awaitingEjections.keys().next().value!)
        continue
      }
      this.#applyRecordedEjection(field, r, now)
    }
  }

  /** Apply the recorded ejection `r` (at `field`) for what is left of it at `now` (the table's clock), if it is about this replica's pod of its id and not applied here already. */
  #applyRecordedEjection(field: string, r: RecordedEjection, now: number): void {
    if (this.#appliedFields.has(field)) return
    // the sender's end by this replica's clock, never longer than the length it told
    const left = Math.floor(Math.min(r.ejectedFor, r.until - now))
    if (left < 1) return
    if (!this.#samePod(r.id, r.url, r.addresses, r.uid)) return
    this.#noteApplied(field, r.id, now + left)
    this.#apply({ kind: 'down', id: r.id, migrate: false, active: false, refused: r.refused === true, told: r.reason, length: { ms: left, count: r.ejections }, recorded: true })
    this.#markCapped(field, r.id)
  }

  /** Remember that the recorded ejection at `field`, of `id`, was applied here, to end at `until` (this table's clock; see #appliedFields). */
  #noteApplied(field: string, id: string, until: number): void {
    this.#appliedFields.delete(field)
    this.#appliedFields.set(field, { until, id })
    if (this.#appliedFields.size > APPLIED_KEPT) this.#appliedFields.delete(this.#appliedFields.keys().next().value!)
  }

  /**
   * Hold a sibling worker's record at `field` of `id`'s ejection (see #siblings), in place of its
   * finder's earlier record of `id` (unless the one held is the later: a read in progress can
   * list a record replaced meanwhile); those whose end passed by `now` (this clock) are dropped.
   */
  #holdSibling(id: string, field: string, value: string, until: number, now: number): void {
    const [sender, seq] = fieldParts(field)
    for (const [f, held] of this.#siblings) {
      if (held.until <= now) this.#siblings.delete(f)
      else if (f !== field && held.id === id && fieldParts(f)[0] === sender) {
        if (fieldParts(f)[1] > seq) return
        this.#siblings.delete(f)
      }
    }
    // (held again, its `down` heard after its record was read: refused here then, still refused)
    const capped = this.#siblings.get(field)?.capped === true
    this.#siblings.delete(field)
    this.#siblings.set(field, { id, value, until, capped })
    if (this.#siblings.size > APPLIED_KEPT) this.#siblings.delete(this.#siblings.keys().next().value!)
  }

  /**
   * The sibling record at `field` of `id`, if held, was just applied here: refused at this
   * table's max_ejection_percent (`id` in the set and not ejected after a peer's ejection with
   * a length, which nothing else refuses), it is marked so, and written back all the same (see
   * recordAgain). The record is its finder's evidence, not this process's: every reader applies
   * it within its own max_ejection_percent (refused there too, but counted, when at it), so the
   * records after a loss are the ones before it, whatever this process had room for. Two
   * workers at their limit that found two upstreams failing before they heard each other refuse
   * each other's; the finder of one exits, and its record was gone after the loss although
   * another sibling (with three workers or more) still ejected it.
   */
  #markCapped(field: string, id: string): void {
    const held = this.#siblings.get(field)
    if (held === undefined || held.capped || this.#health.state(id) === undefined || this.#health.ejection(id) !== null) return
    this.#siblings.set(field, { ...held, capped: true })
  }

  /**
   * Drop the sibling workers' records of `id` held here (see #siblings): it left the set, or
   * (`ended`) its ejection ended here, which keeps those refused here (see #markCapped).
   */
  #dropSiblings(id: string, ended: boolean): void {
    for (const [field, held] of this.#siblings) if (held.id === id && !(ended && held.capped)) this.#siblings.delete(field)
  }

  /**
   * Remove this process's record at `field` (see EJECTIONS), and tell its sibling workers, which
   * hold it (see #siblings), to drop it: their lead would else write it back after a loss. They
   * do not all end an ejection at the same moment: a refusal ends at healthy_threshold passed
   * probes counted by each worker, and the lead applies its probe result before it sends it, so
   * a probe that passed on the lead just before it heard the `down` counts on the finder only,
   * which ends it a probe interval before the lead; a record written back then stayed in Redis
   * (nobody removes it again) until its end, and a replica started meanwhile ejected a healthy
   * upstream. On the group's own channel (the workers' IPC, in order, not Redis: it is about
   * this machine only); an older worker ignores it.
   */
  #unrecord(field: string): void {
    void this.#channel.remember(EJECTIONS, field, null)
    this.#toGroup({ from: this.#self, kind: 'unrecorded', field, group: this.#group })
  }

  /**
   * `m` to this process's sibling workers (none: alone), on the group's own channel when it
   * has one (the workers' IPC, in order), else on the channel with the group named (the
   * other replicas ignore it); an older worker ignores a kind it does not know.
   */
  #toGroup(m: { readonly from: string; readonly kind: string; readonly group: string; readonly [field: string]: string }): void {
    if (this.#group === this.#self) return
    const message = JSON.stringify(m)
    void (this.#relay !== null ? this.#relay.channel.publish(JSON.stringify({ relay: this.#self, message })) : this.#channel.publish(message))
  }

  /**
   * The ejection this process recorded for `id` ended here (or another began: a peer's, which
   * its sender records): its record is removed. A removal that fails leaves it to the readers
   * (they skip it by its end) and to this process's next read.
   */
  #unrecordEnded(id: string): void {
    const mine = this.#recorded.get(id)
    if (mine === undefined) return
    const ejection = this.#health.ejection(id)
    if (ejection !== null && ejection.until >= mine.ends) return
    this.#recorded.delete(id)
    this.#unrecord(mine.field)
  }

  /**
   * Tell the other replicas (`migrate`: a drain that migrates its users); a drain is also
   * recorded for replicas that start later. Both carry when the drain began here, so its
   * `drain_timeout` and `min_idle` count from then everywhere. `at`: when the change was made
   * (ms since the epoch; earlier than now for one sent again after Redis was down). A `down`
   * carries the url found down, and `addresses`, every address listed here for the id when
   * there are several (one pod's: its IPv4 and IPv6), and `uid`, its pod's uid when known, so a
   * replica where the id names another pod (re-created, seen there first) ignores it, and one
   * that kept another address of the same pod applies it. `active`: the `down` is an active
   * check's verdict (the upstream is unhealthy here), which this process's group has already
   * (see the constructor): it carries the group, whose processes ignore it.
   */
  tell(kind: 'down' | 'drain' | 'undrain', id: string, migrate = false, at = Date.now(), active = false): void {
    const since = kind === 'drain' ? this.#health.drainingSince(id) ?? undefined : undefined
    const found = kind === 'down' ? this.#addressesOf(id) : undefined
    const url = found?.url
    const addresses = found?.addresses !== undefined && found.addresses.length > 1 ? found.addresses : undefined
    const uid = found?.uid
    // `refused`: ejected here for a refused connection (nothing listened), which passed active
    // checks end: so do the receivers', at their own (an older Tether ignores it: timed there)
    const refused = kind === 'down' && !active && this.#health.ejectedRefusing(id)
    // `reason`: why it is ejected here (refused, error, timeout, 5xx), so the receivers show it
    // as well; an older Tether ignores it (and sends none: unknown there), and one from before
    // `timeout` takes that as a reason it does not know: ejected for its time, shown unknown
    const why = kind === 'down' && !active ? this.#health.ejection(id)?.reason : undefined
    const reason = why !== undefined && TOLD_REASONS.includes(why) ? why : undefined
    // `ejectedFor` and `ejections`: how long it stays ejected here from now (ms) and which
    // ejection of it this is here, so every receiver ends it when this replica does, whatever
    // it counted itself (an older Tether ignores them: timed by its own count, as before)
    const length = kind === 'down' && !active ? this.#health.toldLength(id) : null
    // `until` (its end by this wall clock) and `group` (this process's workers, if any): what a
    // sibling worker needs to write its record back as written here, as the lead does after
    // Redis lost its keys (see #siblings; ignored by other replicas, and by an older Tether)
    const until = length === null ? undefined : this.#now() + length.ms
    const group = length !== null && this.#group !== this.#self ? this.#group : undefined
    // `recorded`: the sender keeps the drain starts itself (a Tether since they exist)
    const seq = ++this.#seq
    const sent = [this.#channel.publish(JSON.stringify({ from: this.#self, seq, kind, id, ...(active ? { active, group: this.#group } : {}), ...(refused ? { refused } : {}), ...(reason !== undefined ? { reason } : {}), ...(length !== null ? { ejectedFor: length.ms, ejections: length.count, until } : {}), ...(group !== undefined ? { group } : {}), ...(url !== undefined ? { url } : {}), ...(addresses !== undefined ? { addresses } : {}), ...(uid !== undefined ? { uid } : {}), ...(migrate ? { migrate } : {}), ...(since !== undefined ? { since } : {}), ...(kind === 'undrain' ? { recorded: true } : {}) }))]
    if (kind === 'down') {
      void sent[0]!.then((ok) => { if (ok) this.#unsentDowns.delete(id); else this.#unsentDowns.add(id) })
      // an ejection with a length is recorded too, for a replica that starts during it or whose
      // subscription missed this message (an active verdict is not: no time of its own, and each
      // replica's probes find it); it replaces this process's record of an earlier one
      if (length !== null) {
        const value = recordValue({ id, until: until!, ejectedFor: length.ms, ejections: length.count, reason, refused, url, addresses, uid, group })
        const before = this.#recorded.get(id)
        const field = `${this.#self}:${seq}`
        this.#recorded.set(id, { field, value, ends: this.#health.ejection(id)?.until ?? 0 })
        if (before !== undefined) this.#unrecord(before.field)
        void this.#channel.remember(EJECTIONS, field, value)
      }
      return
    }
    for (const heard of this.#hearing) heard.add(id)
    this.#awaiting.delete(id)
    this.#confirming.delete(id)
    if (kind === 'drain') {
      sent.push(this.#channel.remember(DRAINS, id, migrate ? 'migrate' : 'stay'))
      if (since !== undefined) sent.push(this.#channel.remember(DRAIN_STARTS, id, String(since)))
    } else {
      sent.push(this.#channel.remember(DRAINS, id, null), this.#channel.remember(DRAIN_STARTS, id, null))
    }
    sent.push(this.#channel.remember(DRAIN_CHANGES, id, String(at)))
    const n = ++this.#sends
    this.#sending.set(id, n)
    void Promise.all(sent).then((oks) => {
      if (this.#sending.get(id) !== n) return
      this.#sending.delete(id)
      if (oks.every(Boolean)) this.#unsent.delete(id)
      else this.#unsent.set(id, { kind, at })
    })
  }

  /**
   * Record again, after Redis lost its keys, so that a replica that starts later finds them
   * there: every drain made through an admin API that this replica holds, as when it was made
   * (its start as the change time), unless `drains` is false; and the ejections this process
   * recorded (see EJECTIONS) still in force here, under their own fields and values (a reader
   * skips one that ended meanwhile). Returns how many of each; nothing is published (the other
   * replicas hold them). A drain held longer than {@link RECORDED_MS} is recorded as changed now
   * (as a read of the records does for one it holds), else a replica reading it would drop it as
   * too old. With workers each process records its own ejections again, and one of them (`lead`)
   * the drains, which every worker holds, and its siblings' ejections it holds (see #siblings):
   * a sibling that found one may have exited since (crashed and restarted, or replaced in a
   * rolling restart), and no other process would write it back. One a live sibling found is
   * written twice (by it and by the lead: the same field and value, one HSET more per such
   * ejection and loss), the price of not tracking which siblings live; each one only while in
   * force here, or refused here at max_ejection_percent (see #markCapped: the record is its
   * finder's, each reader applies it within its own limit), and not past its end. A record its
   * finder removed is not brought back: the finder tells its siblings as it removes it (see
   * #unrecord), for they do not always end it at the same moment (a refusal can end on its
   * finder a probe interval before the lead); one removed while the loss is handled here, its
   * message on the way (the finder's HDEL reached Redis before this HSET), is removed again
   * when the message comes (see #writtenBack). A process that is not the lead notes the loss
   * (`loss`: the node and its new keyspace marker) until its lead says it wrote its part for it:
   * if it becomes the lead before, it records the lead's part then (see becameLead); the lead
   * says so to its siblings.
   */
  recordAgain(lead = true, loss: KeyspaceLoss = { node: '', marker: '' }): { readonly drains: number; readonly ejections: number } {
    let ejections = 0
    for (const [id, mine] of this.#recorded) {
      if (this.#health.toldLength(id) === null) continue
      ejections++
      void this.#channel.remember(EJECTIONS, mine.field, mine.value)
    }
    if (!lead) {
      if (this.#leadPartWritten.get(loss.node) !== loss.marker) keepLoss(this.#leadPartOwed, loss.node, { marker: loss.marker, at: this.#now() })
      return { drains: 0, ejections }
    }
    keepLoss(this.#leadPartOwed, loss.node, { marker: loss.marker, at: this.#now() })
    const group = this.#writeLeadPart()
    return { drains: group.drains, ejections: ejections + group.ejections }
  }

  /**
   * Record the lead's part (see #recordGroupPart) for the losses owed here (see #leadPartOwed),
   * as the lead. Once every write of it succeeded, those losses are no longer owed and the
   * siblings are told (see #wroteLeadPart); a write that failed (a Redis timeout, a connection
   * lost) leaves them owed and tells nobody: a sibling told so would never write it, and it
   * was not written. Then the whole part is written again after READ_RETRY_MS (1 s, doubling
   * up to 30 s) until one attempt succeeds or stop(); a sibling that leads before (this process
   * gone) owes them still, and writes it. Returns what it wrote (asked to).
   */
  #writeLeadPart(): { readonly drains: number; readonly ejections: number } {
    const losses = this.#ownedLosses()
    const part = this.#recordGroupPart()
    void Promise.all(part.sent).then((oks) => {
      if (oks.every(Boolean)) return this.#wroteLeadPart(losses)
      this.#logger.warn({ nodes: losses.map((l) => l.node), failed: oks.filter((ok) => !ok).length, retry_ms: this.#leadPartRetryMs, effect: 'a replica started meanwhile may place new users on a drained upstream, or on one a sibling worker ejected' }, LEAD_PART_FAILED_LOG)
      this.#retryLeadPart()
    })
    return part
  }

  /** The lead's part is written again after #leadPartRetryMs (doubled up to READ_RETRY_MS.most), unless due already or stopped. */
  #retryLeadPart(): void {
    if (this.#leadPartRetry || this.#stopped) return
    this.#leadPartRetry = true
    const wait = this.#leadPartRetryMs
    this.#leadPartRetryMs = Math.min(wait * 2, READ_RETRY_MS.most)
    this.#later(() => {
      this.#leadPartRetry = false
      if (this.#leadPartOwed.size > 0) this.#writeLeadPart()
    }, wait)
  }

  /** The losses owed here (see #leadPartOwed), as told to the siblings. */
  #ownedLosses(): KeyspaceLoss[] {
    return [...this.#leadPartOwed].map(([node, owed]) => ({ node, marker: owed.marker }))
  }

  /**
   * This process wrote the lead's part after `losses` (as the lead): none of them is owed here
   * any more (a later loss of a node, noted meanwhile, still is), and its siblings are told (on
   * the group's own channel, as #unrecord), so that none of them writes it again when it leads
   * later (a rolling restart long after the loss). A sibling that does not hear it (this
   * process gone before its message went out) writes it again if it leads: the same fields
   * and values.
   */
  #wroteLeadPart(losses: readonly KeyspaceLoss[]): void {
    this.#leadPartRetryMs = READ_RETRY_MS.first
    for (const loss of losses) {
      if (this.#leadPartOwed.get(loss.node)?.marker === loss.marker) this.#leadPartOwed.delete(loss.node)
      keepLoss(this.#leadPartWritten, loss.node, loss.marker)
      this.#toGroup({ from: this.#self, kind: 'lead-part', node: loss.node, marker: loss.marker, group: this.#group })
      this.#relay?.marked?.(loss.node, loss.marker)
    }
  }

  /**
   * The keyspace marker of `node` after which this process's group last had the lead's part in
   * Redis, as known here (see #leadPartWritten; undefined: none known), for the first keyspace
   * check of a worker (see KeyspaceWatchOptions.known).
   */
  leadPartMarker(node: string): string | undefined {
    return this.#leadPartWritten.get(node)
  }

  /**
   * This process's first keyspace check read `marker` on `node` and saw no loss (nothing known
   * to compare with, or the marker known: see leadPartMarker): as the lead (`lead`), its part
   * is in Redis as of that marker, which its siblings and its primary (for the workers started
   * later) are told; as a sibling, the marker is kept as known here, told if it leads later (see
   * becameLead). So a worker started after a loss compares its first read with the group's
   * marker from before the loss, not with its own read after it.
   */
  baseline(node: string, marker: string, lead: boolean): void {
    if (this.#leadPartWritten.get(node) === marker) return
    if (lead) this.#wroteLeadPart([{ node, marker }])
    else keepLoss(this.#leadPartWritten, node, marker)
  }

  /** The group's lead wrote its part after the loss of `node` that left `marker` there (see #wroteLeadPart). */
  #leadPartDone(node: string, marker: string): void {
    if (this.#leadPartOwed.get(node)?.marker === marker) this.#leadPartOwed.delete(node)
    keepLoss(this.#leadPartWritten, node, marker)
  }

  /**
   * The lead's part of recording again after a loss (see recordAgain): the drains this
   * replica holds, and its siblings' ejections held here still in force or refused here (see
   * #siblings), each noted as written back (see #writtenBack).
   */
  #recordGroupPart(): { readonly drains: number; readonly ejections: number; readonly sent: readonly Promise<boolean>[] } {
    let drains = 0
    const sent: Promise<boolean>[] = []
    const now = Date.now()
    for (const id of this.#health.ids()) {
      const held = this.#health.adminDrain(id)
      const since = this.#health.drainingSince(id)
      if (held === null || since === null) continue
      drains++
      sent.push(this.#channel.remember(DRAINS, id, held.migrate ? 'migrate' : 'stay'),
        this.#channel.remember(DRAIN_STARTS, id, String(since)),
        this.#channel.remember(DRAIN_CHANGES, id, String(now - since < RECORDED_MS ? since : now)))
    }
    let ejections = 0
    const at = this.#now()
    for (const [field, until] of this.#writtenBack) if (until <= at) this.#writtenBack.delete(field)
    for (const [field, theirs] of this.#siblings) {
      if (theirs.until <= at) this.#siblings.delete(field)
      if (theirs.until <= at || (!theirs.capped && this.#health.toldLength(theirs.id) === null)) continue
      ejections++
      sent.push(this.#channel.remember(EJECTIONS, field, theirs.value))
      this.#writtenBack.delete(field)
      this.#writtenBack.set(field, theirs.until)
      if (this.#writtenBack.size > APPLIED_KEPT) this.#writtenBack.delete(this.#writtenBack.keys().next().value!)
    }
    return { drains, ejections, sent }
  }

  /**
   * Tell again each `down` that did not reach Redis (published before the connection was ready,
   * or while it was down), for the upstreams still down here: unhealthy (an active verdict) or
   * ejected. Else an upstream found down at the first probe after start was never shared.
   */
  #tellUnsentDowns(): void {
    for (const id of [...this.#unsentDowns]) {
      this.#unsentDowns.delete(id)
      const state = this.#health.state(id)
      if (state === 'unhealthy' || state === 'ejected') this.tell('down', id, false, undefined, state === 'unhealthy')
    }
  }

  /** Keep the drain `awaited` of `id` until `id` joins the set (at most AWAITED_KEPT, the oldest dropped). */
  #await(id: string, awaited: { readonly migrate: boolean; readonly since: number | undefined; readonly changed: number | undefined; readonly recorded: boolean }): void {
    this.#awaiting.delete(id)
    this.#awaiting.set(id, awaited)
    if (this.#awaiting.size > AWAITED_KEPT) this.#awaiting.delete(this.#awaiting.keys().next().value!)
  }

  /**
   * `id` joined the set: the recorded drain read while it was not here, or the drain heard for it
   * meanwhile, applies (with its start), unless it is stale by now; then the record is read
   * again, and the drain undone if the record is gone (see #confirming): for a heard one no
   * sooner than HEARD_RECORDED_MS after it was heard (its sender records it after it publishes:
   * a read at once could come first), else a heard drain whose sender's upstream left that set
   * (its record dropped, nothing told) drained here, alone, a pod that reuses the id later.
   */
  #joined(id: string): void {
    const ejections = this.#awaitingEjections.get(id)
    if (ejections !== undefined && this.#health.state(id) !== undefined) {
      this.#awaitingEjections.delete(id)
      const now = this.#now()
      for (const { field, r } of ejections) this.#applyRecordedEjection(field, r, now)
    }
    const awaited = this.#awaiting.get(id)
    if (awaited === undefined || this.#health.state(id) === undefined) return
    this.#awaiting.delete(id)
    if (awaited.changed !== undefined && Date.now() - awaited.changed >= RECORDED_MS) return
    const held = this.#health.adminDrain(id)
    if (held !== null && (held.migrate || !awaited.migrate)) return
    this.#apply({ kind: 'drain', id, migrate: awaited.migrate, active: false, since: awaited.since })
    const n = ++this.#joins
    this.#confirming.set(id, n)
    // (a heard drain's `changed` is when it was heard here)
    const settle = awaited.recorded ? 0 : Math.max(0, (awaited.changed ?? 0) + HEARD_RECORDED_MS - Date.now())
    if (settle > 0) this.#later(() => this.#confirm(id, n, READ_RETRY_MS.first), settle)
    else this.#confirm(id, n, READ_RETRY_MS.first)
  }

  /**
   * Read the record of the drain of `id` applied when it joined (the apply's number `n`): undone
   * if the record is gone, the drain discovery holds on it then (a terminating pod) kept. A read not answered is made again after
   * `wait` (doubling up to READ_RETRY_MS.most), the drain standing meanwhile, until one is
   * answered, a drain or undrain of it comes, the id leaves the set, or stop().
   */
  #confirm(id: string, n: number, wait: number): void {
    if (this.#confirming.get(id) !== n || this.#stopped) return
    void this.#channel.members(DRAINS).then((drains) => {
      if (this.#confirming.get(id) !== n) return
      if (drains === null) {
        if (!this.#stopped) this.#later(() => this.#confirm(id, n, Math.min(wait * 2, READ_RETRY_MS.most)), wait)
        return
      }
      this.#confirming.delete(id)
      if (drains.has(id) || this.#health.adminDrain(id) === null) return
      this.#applyingPeer = true
      try {
        this.#health.undrainAdmin(id)
      } finally {
        this.#applyingPeer = false
      }
      this.#logger.info({ upstream: id }, 'a drain applied when its upstream joined the set was undone: its record is gone from Redis (the upstream left another replica\'s set)')
    })
  }

  /** Run `fn` after `ms` on this object's timers (cancelled by stop()). */
  #later(fn: () => void, ms: number): void {
    const h = this.#timers.setTimeout(() => {
      this.#confirmTimers.delete(h)
      fn()
    }, ms)
    this.#confirmTimers.add(h)
  }

  /** Drop the records of `id`'s drain and changes (nothing waits for it: a failure leaves them to the next read). */
  #forget(id: string): void {
    for (const set of [DRAINS, DRAIN_STARTS, DRAIN_CHANGES]) void this.#channel.remember(set, id, null)
  }

  /**
   * Run `change`, a change that is news to nobody (a sibling worker's view, copied by a worker
   * that starts): the upstreams it takes down are not told to the others.
   */
  quietly(change: () => void): void {
    const was = this.#applyingPeer
    this.#applyingPeer = true
    try {
      change()
    } finally {
      this.#applyingPeer = was
    }
  }

  /**
   * A message on the group's channel: a lead's relay (`relay`: the process that relayed it). Its
   * own is not applied again; one it applied from Redis as the lead neither (another lead's
   * relay while the lead changes), a kept one it replayed when it became the lead included (see
   * becameLead). A worker that became the lead after the old lead's relay of a `down` came
   * applied that relay then, as a sibling (its Redis copy was not kept, or no longer).
   */
  #relayed(raw: string): void {
    let w: { relay?: unknown; message?: unknown }
    try {
      w = JSON.parse(raw) as typeof w
    } catch {
      return
    }
    if (w === null || typeof w !== 'object') return // (valid JSON, not a message: `null`, a number)
    if (typeof w.message !== 'string' || w.relay === this.#self) return
    const mine = this.#appliedAsLead.indexOf(w.message)
    if (mine !== -1) return void this.#appliedAsLead.splice(mine, 1)
    this.#receive(w.message, true)
  }

  /** `relayed`: from the group's channel (a lead relayed it; nothing else comes that way with a relay). */
  #receive(message: string, relayed = false): void {
    let m: { from?: unknown; seq?: unknown; kind?: unknown; id?: unknown; field?: unknown; node?: unknown; marker?: unknown; active?: unknown; refused?: unknown; reason?: unknown; ejectedFor?: unknown; ejections?: unknown; until?: unknown; group?: unknown; url?: unknown; addresses?: unknown; uid?: unknown; migrate?: unknown; since?: unknown; recorded?: unknown }
    try {
      m = JSON.parse(message) as typeof m
    } catch {
      return
    }
    if (m === null || typeof m !== 'object') return
    if (m.from === this.#self) return
    // a sibling worker removed its record (see #unrecord): its siblings no longer hold it, and
    // one written back here meanwhile goes again (see #writtenBack)
    if (m.kind === 'unrecorded') return void (m.group === this.#group && typeof m.field === 'string' && this.#unrecorded(m.field))
    // the group's lead wrote its part after a loss of Redis's keys (see #wroteLeadPart)
    if (m.kind === 'lead-part') return void (m.group === this.#group && typeof m.node === 'string' && typeof m.marker === 'string' && this.#leadPartDone(m.node, m.marker))
    if (typeof m.id !== 'string') return
    // an active check's verdict of this group (the lead's probe): every worker of it applied that
    // probe result as it is (unhealthy until the probes pass again), not as an ejection
    if (m.kind === 'down' && m.active === true && m.group === this.#group) return
    // another group's active verdict: applied by this group's workers in its lead's order (see the constructor)
    if (this.#relay !== null && m.kind === 'down' && m.active === true) {
      if (typeof m.from === 'string' && isSeq(m.seq)) {
        if (!this.#firstArrival(this.#relay, { message, id: m.id }, m.from, m.seq, relayed)) return
      } else if (!relayed) {
        // a worker's Redis copy: its lead relays it; kept until then, in case no lead does
        if (!this.#relay.lead()) return heardOnce({ message, id: m.id }, this.#relayedFirst, this.#unrelayed)
        // another lead's relay of it came first (while the lead changes): every worker applied
        // that one already, in the group's order (applied again after this lead's passed probe,
        // it would take the upstream out again on all)
        const first = this.#relayedFirst.findIndex((h) => h.message === message)
        if (first !== -1) return void this.#relayedFirst.splice(first, 1)
        void this.#relay.channel.publish(JSON.stringify({ relay: this.#self, message }))
        keep(this.#appliedAsLead, message)
      } else heardOnce({ message, id: m.id }, this.#unrelayed, this.#relayedFirst)
    } else if (relayed) return
    // about the id's old pod, found down where the id still named it: not this replica's upstream.
    // Replicas may keep different addresses of one pod (which they saw first): the same pod when
    // each side lists the address the other kept, or when both know the pod's uid, the same uid
    // (see samePod). An older Tether sends no url (applied as before), no addresses (its url
    // alone) or no uid (the addresses decide)
    if (m.kind === 'down' && !this.#samePod(m.id, m.url, m.addresses, m.uid)) return
    const since = typeof m.since === 'number' ? startTime(String(m.since)) : undefined
    if (m.kind === 'drain' || m.kind === 'undrain') {
      for (const heard of this.#hearing) heard.add(m.id)
      // newer than any record read: what it says stands, also for an id not in the set yet
      // (a drain then waits for it to join, as a recorded one)
      this.#awaiting.delete(m.id)
      this.#confirming.delete(m.id)
      if (m.kind === 'drain' && this.#health.state(m.id) === undefined) this.#await(m.id, { migrate: m.migrate === true, since, changed: Date.now(), recorded: false })
      // an older Tether's undrain or drain (it records no start): a start recorded before is not
      // this drain's. A newer sender clears it itself (a clear from here could come after the
      // start of its next drain, and wipe that)
      if (m.kind === 'undrain' ? m.recorded !== true : since === undefined) void this.#channel.remember(DRAIN_STARTS, m.id, null)
    }
    const told = m.active !== true && TOLD_REASONS.includes(m.reason as EjectionReason) ? m.reason as EjectionReason : undefined
    // (a length that is not a whole number of ms >= 1 with a count >= 1 is read as none: timed here by this replica's count)
    const length = m.active !== true && isCount(m.ejectedFor) && isCount(m.ejections) ? { ms: m.ejectedFor, count: m.ejections } : null
    // a `down` with a length is recorded by its sender at `from:seq` (see EJECTIONS): applied
    // once, whether the record is read first or the message heard first (see #appliedFields)
    let recorded: string | null = null
    if (m.kind === 'down' && length !== null && typeof m.from === 'string' && isSeq(m.seq) && this.#health.state(m.id) !== undefined) {
      const field = `${m.from}:${m.seq}`
      // a sibling worker's: its record, as its finder wrote it (see #siblings)
      if (m.group === this.#group && typeof m.until === 'number' && Number.isFinite(m.until)) {
        const addresses = Array.isArray(m.addresses) ? m.addresses.filter((a): a is string => typeof a === 'string') : undefined
        this.#holdSibling(m.id, field, recordValue({ id: m.id, until: m.until, ejectedFor: length.ms, ejections: length.count, reason: told, refused: m.refused === true, url: typeof m.url === 'string' ? m.url : undefined, addresses, uid: typeof m.uid === 'string' ? m.uid : undefined, group: this.#group }), m.until, this.#now())
      }
      if (this.#appliedFields.has(field)) return
      this.#noteApplied(field, m.id, this.#now() + length.ms)
      recorded = field
    }
    this.#apply({ kind: m.kind, id: m.id, migrate: m.migrate === true, active: m.active === true, refused: m.refused === true && m.active !== true, told, length, since })
    if (recorded !== null) this.#markCapped(recorded, m.id)
  }

  /**
   * A sibling worker removed its record at `field` (see #unrecord): not held here any more; and
   * removed from Redis again when this process wrote it back since it held it (its message, on
   * its way through the primary, came after this lead's write-back, whose HSET may have reached
   * Redis after the finder's HDEL), else it stayed there until its end. On the same connection
   * as the write-back, so this removal reaches Redis after it; one HDEL more per such record.
   */
  #unrecorded(field: string): void {
    this.#siblings.delete(field)
    const until = this.#writtenBack.get(field)
    if (this.#writtenBack.delete(field)) this.#removeWrittenBack(field, until!, READ_RETRY_MS.first)
  }

  /**
   * Remove the record at `field` this process wrote back (see #unrecorded), ending at `until`
   * (the finder's clock). A removal that failed (a Redis timeout, the connection lost) is made
   * again after `wait` (doubling up to READ_RETRY_MS.most), and at once when the subscription
   * is back, until one succeeds, its end passed (readers skip it then) or stop(): nobody else
   * removes it (its finder's own removal came first), and a replica started meanwhile ejected
   * an upstream whose ejection had ended, for the rest of its told length.
   */
  #removeWrittenBack(field: string, until: number, wait: number): void {
    this.#unremoved.delete(field)
    void this.#channel.remember(EJECTIONS, field, null).then((ok) => {
      if (ok || this.#stopped || until <= this.#now()) return
      // (one retry chain a record: a removal made again meanwhile, at the subscription, replaces it)
      const retry = { until }
      this.#unremoved.set(field, retry)
      if (this.#unremoved.size > APPLIED_KEPT) this.#unremoved.delete(this.#unremoved.keys().next().value!)
      this.#later(() => { if (this.#unremoved.get(field) === retry) this.#removeWrittenBack(field, until, Math.min(wait * 2, READ_RETRY_MS.most)) }, wait)
    })
  }

  /**
   * Whether to apply another group's active `down` with an id, come here from Redis or (`relayed`)
   * in a lead's relay: once, at its first arrival either way; one from Redis while this process
   * does not lead is kept for its lead's relay (or for a lead it becomes), and one from Redis
   * while it leads is relayed to the group.
   */
  #firstArrival(relay: GroupRelay, heard: Heard, from: string, seq: number, relayed: boolean): boolean {
    if (this.#applied.has(from, seq)) return false
    if (!relayed && !relay.lead()) {
      keep(this.#unrelayed, heard)
      return false
    }
    if (relayed) {
      const at = this.#unrelayed.findIndex((h) => h.message === heard.message)
      if (at !== -1) this.#unrelayed.splice(at, 1)
    } else void relay.channel.publish(JSON.stringify({ relay: this.#self, message: heard.message }))
    this.#applied.add(from, seq)
    return true
  }

  /**
   * This process became its group's lead. It applies and relays, in the order heard, the other
   * groups' active `down`s it heard from Redis that no lead relayed (see #unrelayed), before its
   * own first probe result, so every worker of the group applies them in its order as any relay.
   * Else a `down` heard while the group had no lead (starting, or its lead dead and the next not
   * told yet) was applied by none of its workers. And when it handled a loss of Redis's keys as
   * a sibling whose lead's part it has not seen written (see #leadPartOwed), however long ago,
   * it records the lead's part (the drains, its siblings' ejections: see recordAgain) and tells
   * its siblings: the lead before it may have exited (SIGKILLed, crashed, killed by the
   * primary's watchdog) or handed the lead over (a rolling restart) before its own check
   * noticed the loss, and then nobody wrote them back. Written twice when it did but its word
   * did not come (the same fields and values); a roll long after a loss the lead handled writes nothing.
   */
  becameLead(): void {
    // #relayedFirst stays: a Redis copy still to come of a relay applied here already is not applied and relayed again
    const missed = this.#unrelayed.splice(0)
    for (const m of missed) this.#receive(m.message)
    // the markers known here and not owed: the primary keeps them for the workers started later
    // (one this process took as its baseline, its group's lead gone before it told its own)
    for (const [node, marker] of this.#leadPartWritten) if (!this.#leadPartOwed.has(node)) this.#relay?.marked?.(node, marker)
    if (this.#leadPartOwed.size === 0) return
    const first = Math.min(...[...this.#leadPartOwed.values()].map((o) => o.at))
    const nodes = [...this.#leadPartOwed.keys()]
    const again = this.#writeLeadPart()
    this.#logger.info({ drains: again.drains, ejections: again.ejections, nodes, lost_ms_ago: this.#now() - first }, LEAD_PART_LOG)
  }

  /**
   * A probe of `id` passed here (this group's lead's): the `down`s about it kept unrelayed are
   * moot (it would have ended them). Not the relays kept in #relayedFirst: their Redis copy,
   * still to come, must still find them (else, kept as unrelayed, a lead named before the next
   * passed probe would replay a `down` the group applied and ended already).
   */
  passed(id: string): void {
    for (let i = this.#unrelayed.length - 1; i >= 0; i--) if (this.#unrelayed[i]!.id === id) this.#unrelayed.splice(i, 1)
  }

  /**
   * Is a `down` of `id` found at `url` (a message's or record's fields: anything) about this
   * replica's pod of that id (see samePod)? Logged when not. One without a url (an older
   * Tether's) or about an id not in the set is.
   */
  #samePod(id: string, url: unknown, addresses: unknown, uid: unknown): boolean {
    if (typeof url !== 'string') return true
    const ours = this.#addressesOf(id)
    if (ours === undefined || samePod(ours, url, addresses, uid)) return true
    this.#logger.info({ upstream: id, url, ours: ours.url }, 'health event from another Tether replica ignored: it is about another pod or address of that upstream')
    return false
  }

  /** `recorded`: a `down` read from the record of ejections (see EJECTIONS), not heard. */
  #apply(m: { kind: unknown; id: string; migrate: boolean; active: boolean; refused?: boolean; told?: EjectionReason | undefined; length?: ToldLength | null; since?: number | undefined; recorded?: boolean }): void {
    this.#applyingPeer = true
    try {
      // another replica's active checks found it down: out here until this replica's own probe
      // passes; its traffic found it refusing: until this replica's probes pass healthy_threshold
      // times in a row (as there); other failures there: for the ejection time (and one of those
      // heard while out here for a refusal makes that timed too, see HealthTable.reportPassive)
      // (for as long as it lasts there, when the sender says: see HealthTable.reportPassive's `length`)
      if (m.kind === 'down') this.#health.reportPassive(m.id, 'connect_refused', m.active, true, m.refused === true, m.told ?? null, m.length ?? null)
      else if (m.kind === 'drain') { if (!this.#health.drain(m.id, m.migrate, m.since)) return }
      else if (m.kind === 'undrain') this.#health.undrain(m.id)
      else return
      this.#logger.info({ upstream: m.id, event: m.kind, ...(m.recorded === true ? { recorded: true, for_ms: m.length?.ms } : {}) }, 'health event from another Tether replica')
    } finally {
      this.#applyingPeer = false
    }
  }
}

/** Said (an info) when a worker that became the lead recorded the lead's part after a loss of Redis's keys its lead had not said it wrote (see SharedHealth.becameLead). */
export const LEAD_PART_LOG = "this worker became the lead after Redis lost its keys and before its lead said it wrote the drains and its siblings' ejections back: it recorded them again (the lead before it may have gone before it noticed the loss)"

/** Said (a warn) when a write of the lead's part after a loss of Redis's keys failed (see SharedHealth.#writeLeadPart): the siblings are not told it is written, and it is tried again. */
export const LEAD_PART_FAILED_LOG = "the drains and the sibling workers' ejections were not all recorded again after Redis lost its keys (a write failed): tried again, and the sibling workers still owe them if this worker goes first"

/** A loss of Redis's keys as a worker noticed it: the node, and the keyspace marker it read there after it (the same for every worker that noticed that loss). */
export interface KeyspaceLoss {
  readonly node: string
  readonly marker: string
}

/** How many nodes SharedHealth keeps a loss owed or written of (#leadPartOwed, #leadPartWritten; a Cluster's masters, those replaced since included): the oldest beyond it is dropped. */
const LOSSES_KEPT = 1024

/** Keep `value` for `node` in `losses` as its newest (at most LOSSES_KEPT nodes, the oldest dropped). */
function keepLoss<V>(losses: Map<string, V>, node: string, value: V): void {
  losses.delete(node)
  losses.set(node, value)
  if (losses.size > LOSSES_KEPT) losses.delete(losses.keys().next().value!)
}

/** How many drains of upstreams not in the set SharedHealth keeps until they join (#awaiting): the oldest beyond it is dropped. */
const AWAITED_KEPT = 1024

/** How many recorded ejections' fields SharedHealth remembers as applied (#appliedFields): the oldest beyond it is forgotten. */
const APPLIED_KEPT = 4096

/** How many `down`s each list of SharedHealth keeps to match their other copies against (#appliedAsLead, #unrelayed, #relayedFirst): the oldest beyond it is dropped. */
const RELAYED_KEPT = 100

/**
 * `heard` (another group's active `down`) came one of its two ways (from Redis, or its lead's
 * relay): dropped from `other` if it came the other way already, else kept in `mine` to be
 * matched (see SharedHealth.#unrelayed).
 */
function heardOnce(heard: Heard, other: Heard[], mine: Heard[]): void {
  const at = other.findIndex((o) => o.message === heard.message)
  if (at !== -1) return void other.splice(at, 1)
  keep(mine, heard)
}

/** Add `entry` to `list`, dropping the oldest beyond RELAYED_KEPT. */
function keep<T>(list: T[], entry: T): void {
  if (list.push(entry) > RELAYED_KEPT) list.shift()
}

/** A told length's field (`ejectedFor` ms, `ejections`): a whole number >= 1 (anything else is read as none). */
function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n > 0
}

/** A recorded ejection's field (see EJECTIONS: `<sender uuid>:<seq>`): its sender and seq (NaN: not a number). */
function fieldParts(field: string): readonly [string, number] {
  const at = field.lastIndexOf(':')
  return [field.slice(0, at), Number(field.slice(at + 1))]
}

/** A message's `seq` as a sender numbers them (1, 2, 3, ...); anything else is read as no seq (an older Tether's). */
function isSeq(seq: unknown): seq is number {
  return typeof seq === 'number' && Number.isSafeInteger(seq) && seq > 0
}

/** A `down` message as heard, and the upstream it is about. */
interface Heard { readonly message: string; readonly id: string }

/** A group of workers' own ordered channel (through their primary), whether this process is its lead now, and the keyspace markers the primary keeps for them. */
export interface GroupRelay {
  readonly channel: PeerChannel
  readonly lead: () => boolean
  /**
   * The keyspace markers after which the group's lead last wrote its part (see
   * SharedHealth.leadPartMarker), by Redis node, as the primary kept them when this process
   * started; absent: none (an older primary).
   */
  readonly markers?: ReadonlyMap<string, string>
  /** This process, leading, had its part in Redis after `marker` on `node`: the primary keeps it (see `markers`). */
  readonly marked?: (node: string, marker: string) => void
}

/**
 * Whether a `down` found at `url`, whose sender listed `theirs` (a message's field: anything;
 * absent: `url` alone) for the id and gave the pod uid `uid` (anything; absent: none), is about
 * the pod this replica has at `ours`. With a uid on both sides: the same uid, whatever the
 * addresses (a pod re-created at the same address has another uid; two replicas may keep
 * different addresses of one pod). Else the same url, or each side lists the address the other
 * kept. Not merely an address in common: while a dual-stack pod is re-created its families'
 * slices are updated one after the other, so one id's list can hold the new pod's IPv4 address
 * with the old pod's IPv6 one (or the reverse), and a `down` about the old pod would eject the
 * new one; two replicas can even hold the same mixed list, each having kept another of its
 * addresses (each side lists the other's): only the uids tell those pods apart.
 * Example: `samePod({ url: 'http://10.0.0.5:80', addresses: ['http://10.0.0.5:80', 'http://[fd00::5]:80'] }, 'http://[fd00::5]:80', ['http://10.0.0.5:80', 'http://[fd00::5]:80'])` -> true;
 * `samePod({ url: 'http://10.0.0.9:80', addresses: ['http://10.0.0.9:80', 'http://[fd00::9]:80'] }, 'http://[fd00::5]:80', ['http://10.0.0.9:80', 'http://[fd00::5]:80'])` -> false;
 * `samePod({ url: 'http://10.0.0.5:80', uid: 'b' }, 'http://10.0.0.5:80', undefined, 'a')` -> false (re-created at the same address).
 */
function samePod(ours: { readonly url: string; readonly addresses?: readonly string[]; readonly uid?: string }, url: string, theirs: unknown, uid: unknown): boolean {
  if (typeof uid === 'string' && ours.uid !== undefined) return uid === ours.uid
  if (url === ours.url) return true
  const listedHere = ours.addresses ?? [ours.url]
  const listedThere = Array.isArray(theirs) ? theirs : [url]
  return listedHere.includes(url) && listedThere.includes(ours.url)
}

/** A drain's recorded start: a positive whole number of ms, else undefined (it began now). */
function startTime(value: string | undefined): number | undefined {
  return value !== undefined && /^[1-9]\d{0,15}$/.test(value) ? Number(value) : undefined
}

/** What a read of the records left unread (null: nothing). */
type Unread = readonly ('drains' | 'ejections')[] | null

/** A recorded ejection's value (see EJECTIONS), or null when it is not one (not JSON, a field of the wrong type). */
function recordedEjection(value: string): RecordedEjection | null {
  let v: Record<string, unknown>
  try {
    v = JSON.parse(value) as Record<string, unknown>
  } catch {
    return null
  }
  if (v === null || typeof v !== 'object' || typeof v.id !== 'string' || typeof v.until !== 'number' || !Number.isFinite(v.until) || !isCount(v.ejectedFor) || !isCount(v.ejections)) return null
  return {
    id: v.id, until: v.until, ejectedFor: v.ejectedFor, ejections: v.ejections,
    ...(TOLD_REASONS.includes(v.reason as EjectionReason) ? { reason: v.reason as EjectionReason } : {}),
    ...(v.refused === true ? { refused: true } : {}),
    ...(typeof v.url === 'string' ? { url: v.url } : {}),
    ...(Array.isArray(v.addresses) ? { addresses: v.addresses.filter((a): a is string => typeof a === 'string') } : {}),
    ...(typeof v.uid === 'string' ? { uid: v.uid } : {}),
    ...(typeof v.group === 'string' ? { group: v.group } : {}),
  }
}

/**
 * A recorded ejection's value (see EJECTIONS), its optional fields left out when absent (or
 * `refused` false): the one writer of it, so the finder's record and its sibling's copy of it
 * (see SharedHealth.#siblings) are the same text, and a write-back by either is the same HSET.
 */
function recordValue(r: { readonly id: string; readonly until: number; readonly ejectedFor: number; readonly ejections: number; readonly reason: EjectionReason | undefined; readonly refused: boolean; readonly url: string | undefined; readonly addresses: readonly string[] | undefined; readonly uid: string | undefined; readonly group: string | undefined }): string {
  return JSON.stringify({
    id: r.id, until: r.until, ejectedFor: r.ejectedFor, ejections: r.ejections,
    ...(r.reason !== undefined ? { reason: r.reason } : {}), ...(r.refused ? { refused: true } : {}), ...(r.url !== undefined ? { url: r.url } : {}),
    ...(r.addresses !== undefined ? { addresses: r.addresses } : {}), ...(r.uid !== undefined ? { uid: r.uid } : {}), ...(r.group !== undefined ? { group: r.group } : {}),
  } satisfies RecordedEjection)
}
