// The ACL refusals of one Redis connection: each NOPERM (a command, a key, a channel, a command
// a script calls) told to listeners with its hint, kept open for /readyz until what it refused
// succeeds again (by node: a Cluster's nodes keep their own ACLs) or is not seen for
// REFUSAL_QUIET_MS. Layer 2 state owner: no I/O, time from the injected clock; connection.ts
// feeds it the calls' outcomes and keeps it off the hot path (one size check a call while none is open).
import { IN_SCRIPT, NOPERM, describe, loggedKey, refusedCommand, refusesKey, sameScript, withoutArguments } from './reply-errors.js'
import { tellAll } from './listener-set.js'

/**
 * An ACL refusal not seen again for this long (ms) ends without a success of what was refused
 * ({@link RedisConnection.refusals}, {@link RedisRefusal.unseenFor}): the ACL fixed for a command
 * Tether rarely sends, or the feature that sent it turned off. 5 minutes: 10 times the 30 s
 * between two warns of a refusal that goes on, so one that keeps happening (each request's, the
 * keyspace marker's every second, a refused SUBSCRIBE's every 2 s) stays listed.
 */
export const REFUSAL_QUIET_MS = 300_000

/**
 * At most this many ACL refusals are open at once (by what they refuse: a command, a channel, a
 * script, the keys): a Redis whose NOPERM replies name ever new commands must not grow them
 * (nor the log's throttling) without bound; beyond it, the one least recently seen ends as
 * unseen. Tether sends far fewer distinct commands.
 */
export const MAX_OPEN_REFUSALS = 64

/**
 * What an ACL refusal refused: a command (a NOPERM naming it), a key (the user's key patterns
 * leave it out), a channel (its channel patterns), or a command a Lua script calls (an ERR of
 * the script, see IN_SCRIPT).
 */
export type RefusalKind = 'command' | 'key' | 'channel' | 'script'

/**
 * A command Redis refused for want of an ACL permission (a `NOPERM` reply to one call, e.g. a
 * user without `EVALSHA`): the command in upper case and the error with its hint naming the
 * setting to check (user names left out, see {@link authHint}). The call failed; its node
 * answered, so it is not counted down for it ({@link failsNode}).
 * `error` null: the refused thing was accepted again (the ACL was fixed), told once per
 * refusal (a later refusal is told again): a command, once a call of it got its reply; a key,
 * once a call of the refused key's kind ({@link loggedKey}) sending the refused command
 * succeeded and no key kind is refused any more; a channel, once a call of the command it was refused to succeeded; a script's
 * command, once a call of that script succeeded.
 */
export interface RedisRefusal {
  readonly command: string
  readonly error: string | null
  readonly kind: RefusalKind
  /** A script's refusal (`kind` `script`): the script's name as defined ({@link RedisConnection.defineScript}), e.g. `tetherPutCheckpoint`. */
  readonly script?: string
  /**
   * Told with `error` null when the refusal ended without a success of what was refused: not
   * seen again for this long (ms; {@link REFUSAL_QUIET_MS}, or less when {@link MAX_OPEN_REFUSALS}
   * newer ones pushed it out); absent when it ended by that success.
   */
  readonly unseenFor?: number
  /**
   * A refusal of a key (a NOPERM that names no command: the user's key patterns leave it out):
   * the refused call's key as it may be logged ({@link loggedKey}: a session's part left out),
   * e.g. `tether:keyspace` (the keyspace marker), `tether:af:{…}` (a binding); absent for a
   * command refused, or a call without a key.
   */
  readonly key?: string
}

/**
 * The refusals of one connection and what would end each. `now` is the connection's clock,
 * `told` adds the hint to an error (the settings and grant to fix, see authHint), `serves`
 * tells whether a node (as the connection names it) still is one of the connection's (a
 * Cluster master that no longer serves a slot refuses nothing).
 */
export class AclRefusals {
  readonly #now: () => number
  readonly #told: (error: string) => string
  readonly #serves: (node: string) => boolean

  constructor(now: () => number, told: (error: string) => string, serves: (node: string) => boolean) {
    this.#now = now
    this.#told = told
    this.#serves = serves
  }

  readonly #refusalListeners = new Set<(refusal: RedisRefusal) => void>()

  /**
   * The ACL refusals told and not told ended (see {@link refusals}), by what they refuse (a key
   * kind is one, as the keys are one warn; a command, a channel and a script's command each
   * their own), with the last refusal told and when (#now), least recently seen first (at most
   * {@link MAX_OPEN_REFUSALS}).
   */
  readonly #openRefusals = new Map<string, { readonly refusal: RedisRefusal; readonly seen: number }>()

  /**
   * Commands refused (a NOPERM naming the command, upper case; or a channel refused to the
   * command, by that command's name: see #refusedKinds), each with the nodes (as
   * {@link #waitKey} names them) that refused it and have not answered it since: while any is,
   * calls note which commands they send. By node: a Cluster's nodes keep their own ACLs, so one
   * node's replies must not end a refusal another node still makes.
   */
  readonly #refused = new Map<string, Set<string>>()

  /** The kinds each entry of #refused was refused as (a command, a channel, or both: each told when accepted). */
  readonly #refusedKinds = new Map<string, Set<RefusalKind>>()

  /**
   * Keys (by {@link loggedKey} and the command refused: `key <kind> <COMMAND>`, EVALSHA as EVAL)
   * and scripts (`script <name>`) refused, each with the nodes that refused it and have not
   * accepted it since, and the refusal to tell once they did: while any is, each successful
   * call is checked against it (one size check otherwise), and while a key is, calls note the
   * commands they send (as for #refused). By command: a grant that refuses a key kind to some
   * commands only (Redis 7's `%R~` read-only keys) lets the others succeed, and the read of
   * each request must not end the refusal of its write (a warn and an info line per request).
   */
  readonly #refusedOther = new Map<string, { readonly nodes: Set<string>; readonly accepted: RedisRefusal }>()

  /** How many entries of #refusedOther are keys: while any is, calls note what they send. */
  #refusedKeys = 0

  /**
   * How SUBSCRIBE was refused (the command itself, a grant without `+subscribe`; its channel;
   * or both, each told accepted) with no SUBSCRIBE answered since. Kept apart from #refused: run() never sends SUBSCRIBE, so it
   * must not turn run()'s noting (its slow path) on while it lasts.
   */
  readonly #subscribeRefusal = new Set<RefusalKind>()

  /**
   * Be told of each call Redis refused with `NOPERM` (see {@link RedisRefusal}: every one, the
   * listener rate-limits), and of the first reply to such a command after its refusal (`error`
   * null); returns the unsubscribe function.
   */
  onRefused(fn: (refusal: RedisRefusal) => void): () => void {
    this.#refusalListeners.add(fn)
    return () => {
      this.#refusalListeners.delete(fn)
    }
  }

  /**
   * The ACL refusals (NOPERM, see {@link onRefused}) told and not ended since (no call of what
   * was refused has succeeded since, and it was seen again within {@link REFUSAL_QUIET_MS}: at
   * most {@link MAX_OPEN_REFUSALS}), one line each, for people: what is refused and the error
   * with its hint naming the grant and the setting to fix. The node that refuses stays up: this
   * is how a user that may not run what Tether needs is seen (in /readyz). Example:
   * `["redis refuses the command EVALSHA: NOPERM this user has no permissions to run the
   * 'evalsha' command (Redis's ACL user may not run EVALSHA: grant it (ACL SETUSER <user>
   * +evalsha), or check state.redis.username)"]`.
   */
  refusals(): string[] {
    if (this.#openRefusals.size !== 0) this.#endUnseen()
    return [...this.#openRefusals.values()].map(({ refusal: r }) => {
      const what = r.kind === 'key' ? `the key ${r.key ?? ''} to ${r.command}`
        : r.kind === 'channel' ? `the channel to ${r.command}`
        : r.kind === 'script' ? `a command the script ${r.script ?? r.command} calls${r.script === undefined || r.command === r.script ? '' : ` (${r.command})`}`
        : `the command ${r.command}`
      return `redis refuses ${what}: ${r.error ?? ''}`
    })
  }

  /** Tells the refusal listeners `r`, and keeps {@link refusals} in step. */
  #tellRefusal(r: RedisRefusal): void {
    const id = r.kind === 'key' ? 'key' : r.kind === 'script' ? `script ${r.script ?? r.command}` : `${r.kind} ${r.command}`
    // (deleted and set again: the map stays in order of the last refusal seen)
    this.#openRefusals.delete(id)
    if (r.error !== null) this.#openRefusals.set(id, { refusal: r, seen: this.#now() })
    tellAll(this.#refusalListeners, r)
    if (r.error !== null) this.#endUnseen()
  }

  /**
   * Ends the refusals not seen again for {@link REFUSAL_QUIET_MS}, and the least recently seen
   * beyond {@link MAX_OPEN_REFUSALS}: what was noted to end them on a success is forgotten (a
   * later refusal is a new one, warned at once), and each is told ended with `unseenFor`.
   * Least recently seen first, so a check is one comparison while none is due.
   */
  #endUnseen(): void {
    const now = this.#now()
    for (const [id, { refusal, seen }] of this.#openRefusals) {
      if (now - seen < REFUSAL_QUIET_MS && this.#openRefusals.size <= MAX_OPEN_REFUSALS) break
      this.#openRefusals.delete(id)
      this.#forgetRefusal(refusal)
      tellAll(this.#refusalListeners, { ...refusal, error: null, unseenFor: Math.max(0, now - seen) })
    }
  }

  /** What was noted to end refusal `r` on a success (#refused, #refusedKinds, #refusedOther, #subscribeRefusal), forgotten. */
  #forgetRefusal(r: RedisRefusal): void {
    if (r.kind === 'key') {
      for (const [id, p] of this.#refusedOther) if (p.accepted.kind === 'key') this.#refusedOther.delete(id)
      this.#refusedKeys = 0
      return
    }
    if (r.kind === 'script') {
      this.#refusedOther.delete(`script ${r.script ?? r.command}`)
      return
    }
    if (r.command === 'SUBSCRIBE') this.#subscribeRefusal.delete(r.kind)
    const kinds = this.#refusedKinds.get(r.command)
    kinds?.delete(r.kind)
    if (kinds === undefined || kinds.size === 0) {
      this.#refusedKinds.delete(r.command)
      this.#refused.delete(r.command)
    }
  }

  /** A subscription's SUBSCRIBE refused (NOPERM): told as a refused call. */
  subscribeRefused(err: unknown): void {
    const error = describe(err)
    const { command, watched } = refusedCommand(error, 'subscribe')
    const kind: RefusalKind = watched ? 'command' : /channel/i.test(error) ? 'channel' : 'command'
    if (command === 'SUBSCRIBE' && (watched || kind === 'channel')) this.#subscribeRefusal.add(kind)
    this.#tellRefusal({ command, error: this.#told(error), kind })
  }

  /** A SUBSCRIBE answered: a refusal of the SUBSCRIBE command, or of its channel, ends. */
  subscribeAccepted(): void {
    if (this.#subscribeRefusal.size === 0) return
    const kinds = [...this.#subscribeRefusal]
    this.#subscribeRefusal.clear()
    for (const kind of kinds) this.#tellRefusal({ command: 'SUBSCRIBE', error: null, kind })
  }

  /**
   * A call's error as told: a `NOPERM` refusal with its hint (as the connection's own refusals),
   * told to the {@link onRefused} listeners with the command it names (else the one ioredis
   * sent), and for a refusal that names no command (a key's), the call's `key`; each error of an
   * AggregateError (several commands of one call failed) told so, their texts joined by `; `. Example:
   * `"NOPERM this user has no permissions to run the 'evalsha' command (Redis's ACL user may not
   * run EVALSHA: grant it (ACL SETUSER <user> +evalsha), or check state.redis.username)"`.
   */
  callError(err: unknown, node: string, key: string | null, script?: string): string {
    // several commands of one call failed (the peer set's HSET and PEXPIRE): each is told
    if (err instanceof AggregateError) return [...new Set(err.errors.map((e: unknown) => this.callError(e, node, key, script)))].join('; ')
    const error = withoutArguments(describe(err))
    if (!NOPERM.test(error)) return error
    const told = this.#told(error)
    const { command, watched } = refusedCommand(error, (err as { command?: { name?: unknown } }).command?.name)
    const kind: RefusalKind = IN_SCRIPT.test(error) ? 'script'
      : watched ? 'command'
      : key !== null && refusesKey(error) ? 'key'
      : /channel/i.test(error) ? 'channel'
      : 'command'
    // a command, or a channel (refused to the command that names it: Tether has one, the peer
    // channel's), ends when a call of that command succeeds (see #noting)
    if (watched || kind === 'channel') {
      const nodes = this.#refused.get(command)
      if (nodes === undefined) this.#refused.set(command, new Set([node]))
      else nodes.add(node)
      // (both, when a command refused for its channel is then refused itself: each warn ends)
      const kinds = this.#refusedKinds.get(command)
      if (kinds === undefined) this.#refusedKinds.set(command, new Set([kind]))
      else kinds.add(kind)
    }
    const refusal: RedisRefusal = kind === 'key' ? { command, error: told, kind, key: loggedKey(key as string) }
      : kind === 'script' && script !== undefined ? { command, error: told, kind, script }
      : { command, error: told, kind }
    if (kind === 'key' || (kind === 'script' && script !== undefined)) {
      const id = kind === 'key' ? `key ${refusal.key} ${sameScript(command)}` : `script ${script}`
      const pending = this.#refusedOther.get(id)
      if (pending === undefined) {
        this.#refusedOther.set(id, { nodes: new Set([node]), accepted: { ...refusal, error: null } })
        if (kind === 'key') this.#refusedKeys++
      }
      else pending.nodes.add(node)
    }
    this.#tellRefusal(refusal)
    return told
  }

  /**
   * A call of `key` (or of script `script`) succeeded on `node`, sending `sent`: a refusal of
   * one of those commands on its key's kind (or of that script's command) ends there; once no
   * node still refuses it, it is told accepted again (a key only once no key kind is refused
   * any more: the keys are one warn).
   */
  acceptedOther(node: string, key: string | null, script: string | undefined, sent: ReadonlySet<string> | undefined): void {
    const ids = key === null || sent === undefined ? [] : [...sent].map((command) => `key ${loggedKey(key)} ${sameScript(command)}`)
    for (const id of [...ids, script === undefined ? null : `script ${script}`]) {
      const pending = id === null ? undefined : this.#refusedOther.get(id)
      if (pending === undefined) continue
      pending.nodes.delete(node)
      // (a Cluster master that serves no slot any more refuses nothing)
      for (const n of pending.nodes) if (n !== '' && !this.#serves(n)) pending.nodes.delete(n)
      if (pending.nodes.size > 0) continue
      this.#refusedOther.delete(id as string)
      const { accepted } = pending
      if (accepted.kind === 'key') this.#refusedKeys--
      if (accepted.kind === 'key' && [...this.#refusedOther.values()].some((p) => p.accepted.kind === 'key')) continue
      this.#tellRefusal(accepted)
    }
  }

  /**
   * `work(client)`, noting each command it sends (ioredis's sendCommand shadowed for that
   * synchronous call, so a command sent after an await in `work` is not seen; each command's
   * name read at its own reply: a script's EVALSHA goes out as EVAL on a socket that has not
   * loaded it yet): when `node` refused that command and now answers it, and no other node
   * still refuses it, the refusal listeners are told it is accepted again. Example: EVALSHA
   * refused, `ACL SETUSER u +evalsha`, the next checkpoint write's reply tells
   * `{ command: 'EVALSHA', error: null }`; a refused subcommand (`OBJECT|ENCODING`) is matched by
   * the command and its first argument.
   */
  noting<C, T>(client: C, work: (c: C) => Promise<T>, node: string, sent?: Set<string>): Promise<T> {
    type Sent = { name?: unknown; args?: unknown[]; promise?: Promise<unknown> }
    type Send = (command: Sent, ...rest: unknown[]) => unknown
    const own = client as unknown as { sendCommand: Send }
    const send = own.sendCommand
    const shadowed = Object.hasOwn(own, 'sendCommand')
    const accepted = (command: Sent): void => {
      if (typeof command.name !== 'string') return
      // a subcommand is refused by its full name (NOPERM "... run the 'object|encoding' command")
      const sub = command.args?.[0]
      const full = `${command.name}|${typeof sub === 'string' || Buffer.isBuffer(sub) ? String(sub) : ''}`.toUpperCase()
      const name = this.#refused.has(full) ? full : command.name.toUpperCase()
      const nodes = this.#refused.get(name)
      if (nodes === undefined) return
      nodes.delete(node)
      // (a Cluster master that serves no slot any more, its slots handed on, refuses nothing)
      for (const n of nodes) if (n !== '' && !this.#serves(n)) nodes.delete(n)
      if (nodes.size > 0) return
      this.#refused.delete(name)
      const kinds = this.#refusedKinds.get(name) ?? new Set<RefusalKind>(['command'])
      this.#refusedKinds.delete(name)
      for (const kind of kinds) this.#tellRefusal({ command: name, error: null, kind })
    }
    own.sendCommand = function (this: unknown, command, ...rest) {
      // (its failure is its caller's: only its reply is noted here)
      command.promise?.then(() => {
        if (sent !== undefined && typeof command.name === 'string') sent.add(command.name.toUpperCase())
        accepted(command)
      }, () => {})
      return send.call(this, command, ...rest)
    }
    try {
      return work(client)
    } finally {
      if (shadowed) own.sendCommand = send
      else delete (own as { sendCommand?: Send }).sendCommand
    }
  }

  /** Whether a refusal is open (then each call's end checks for those not seen again: {@link endUnseen}). */
  get anyOpen(): boolean {
    return this.#openRefusals.size !== 0
  }

  /** Whether a command (or a channel) is refused: calls then note the commands they send ({@link noting}). */
  get commandRefused(): boolean {
    return this.#refused.size !== 0
  }

  /** Whether a key is refused: calls then note the commands they send, for {@link acceptedOther}. */
  get keyRefused(): boolean {
    return this.#refusedKeys !== 0
  }

  /** Whether a key or a script is refused: each success is then checked by {@link acceptedOther}. */
  get otherRefused(): boolean {
    return this.#refusedOther.size !== 0
  }

  /** Ends the refusals not seen again for {@link REFUSAL_QUIET_MS} (see #endUnseen). */
  endUnseen(): void {
    this.#endUnseen()
  }
}
