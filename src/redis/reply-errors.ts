// What Redis's error replies mean to Tether: the texts that say a node cannot serve, refuses
// writes (full, cannot persist, too few replicas), refused Tether's credentials or an ACL
// permission, and how an error is told without the
// call's arguments (a session's key). Pure: no I/O, and no ioredis (connection.ts checks
// that an error is a reply before it asks these).

/**
 * Why a live node refuses every write while it serves reads: `oom`, it is full (`maxmemory`
 * reached under `maxmemory-policy noeviction`); `misconf`, it cannot persist (`MISCONF`:
 * `stop-writes-on-bgsave-error yes` after a failed RDB save, or a failed write to its
 * append-only file); `noreplicas`, fewer good replicas than `min-replicas-to-write`
 * (`NOREPLICAS`). Redis checks them in this order (server.c, processCommand), so a reply names
 * the first that holds.
 */
export type WritesRefusedReason = 'oom' | 'misconf' | 'noreplicas'

/** Every {@link WritesRefusedReason}, in the order Redis checks them. */
export const WRITES_REFUSED_REASONS: readonly WritesRefusedReason[] = ['oom', 'misconf', 'noreplicas']

/**
 * Every {@link WritesRefusedReason}, the one that refuses more first: `misconf` and `noreplicas`
 * refuse every write command, `PEXPIRE` (a renewal) among them, and `misconf` `PING` too; `oom`
 * refuses only the commands that may grow memory (denyoom), so renewals go on. A node that
 * refuses writes for several reasons at once (full and MISCONF) answers some calls with one and
 * some with the other (Redis 7 checks a script's MISCONF before its OOM, a command's OOM
 * first), and is told by the first of them here. Example: `{oom, misconf}` -> `misconf`.
 */
export const WRITES_REFUSED_BY_RESTRICTION: readonly WritesRefusedReason[] = ['misconf', 'noreplicas', 'oom']

/**
 * A refusal of a write by a live node: its own reply (Redis 7 sends it for a script's call too,
 * with ` script: ...` appended) or, as Redis < 7 wraps what a script's call got, `ERR Error
 * running script (call to f_<sha>): @user_script:1: @user_script: 1: -MISCONF ...`.
 */
const WRITES_REFUSED = /^(?:ERR Error running script.*?: -)?(OOM|MISCONF|NOREPLICAS)\b/s

/**
 * The reason a reply refuses a write (see {@link WritesRefusedReason}), or null for any other
 * error. Redis under MISCONF also refuses PING (server.c, processCommand: "is_write_command ||
 * c->cmd->proc == pingCommand"), so that reply too is an answer of a live node. Examples:
 * `writesRefusedBy("MISCONF Redis is configured to save RDB snapshots, but it's currently unable
 * to persist to disk. ...")` -> `'misconf'`; `writesRefusedBy('NOREPLICAS Not enough good
 * replicas to write.')` -> `'noreplicas'`; `writesRefusedBy('READONLY ...')` -> null.
 */
export function writesRefusedBy(error: string): WritesRefusedReason | null {
  const code = WRITES_REFUSED.exec(error)?.[1]
  return code === 'OOM' ? 'oom' : code === 'MISCONF' ? 'misconf' : code === 'NOREPLICAS' ? 'noreplicas' : null
}

/**
 * What makes a node refuse writes for `reason`, and what the operator does about it, told from
 * its reply `error` (MISCONF after a failed RDB save, `MISCONF Redis is configured to save RDB
 * snapshots, but it's currently unable to persist to disk. ...`, or after a failed append-only
 * file write, `MISCONF Errors writing to the AOF file: ...`). Example: `writesRefusedCause('misconf',
 * 'MISCONF Redis is configured to save RDB snapshots, ...')` -> `'MISCONF: the last RDB save
 * failed; fix the disk (free space, the permissions of its dir: see its log) or set
 * stop-writes-on-bgsave-error no'`.
 */
export function writesRefusedCause(reason: WritesRefusedReason, error: string | null): string {
  switch (reason) {
    case 'oom': return 'OOM: maxmemory reached under maxmemory-policy noeviction'
    case 'misconf': return /\bAOF\b/.test(error ?? '')
      ? 'MISCONF: a write to its append-only file failed; fix the disk (free space, the permissions of its dir: see its log)'
      : 'MISCONF: the last RDB save failed; fix the disk (free space, the permissions of its dir: see its log) or set stop-writes-on-bgsave-error no'
    case 'noreplicas': return 'NOREPLICAS: fewer good replicas than min-replicas-to-write; bring its replicas back (in sync within min-replicas-max-lag) or lower min-replicas-to-write'
  }
}

/** Error replies after which a standalone or Sentinel connection is made again (see `reconnectOnError`). */
export const RECONNECT_ON = /^(READONLY|LOADING|MASTERDOWN)\b/

/**
 * Error replies that say the node cannot serve (every call to it would get one), so they count
 * as failed calls of the node (see {@link failsNode}): it is loading its data (`LOADING`), not the
 * primary (`READONLY`: ioredis reconnects on it, as on `MASTERDOWN`, a replica cut off from its
 * master), a Cluster that serves no slot or is failing over (`CLUSTERDOWN`, and `TRYAGAIN`,
 * `MOVED`, `ASK` when ioredis's own retries and redirections gave up; a standalone server that
 * answers `MOVED` is a Cluster node, not a server for all keys), a script that blocks it (`BUSY`:
 * every other command waits for `SCRIPT KILL`; `BUSYKEY`, a key's, is not), a connection not (or no
 * longer) authenticated (`NOAUTH`, `WRONGPASS`), no room for Tether's connection (`ERR max
 * number of clients reached`), and a command it does not know (`ERR unknown command`: scripting
 * renamed away, a server without it; every call of that command fails, whatever its key, and
 * such a node was shown up while no state could be stored). Writes refused as a whole (`OOM`,
 * `MISCONF`, `NOREPLICAS`: see {@link writesRefusedBy}) are not among them: such a node answers
 * reads.
 */
export const NODE_FAULT = /^(?:LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN|MOVED|ASK|BUSY|NOAUTH|WRONGPASS)\b|^ERR (?:max number of clients reached|unknown command)/

/**
 * A {@link NODE_FAULT} a script's call got, as Redis < 7 wraps it: `ERR Error running script
 * (call to f_<sha>): @user_script:1: @user_script: 1: -READONLY You can't write against a read
 * only replica.` (Redis 7 replies `READONLY ...` itself; a failover's old primary answers every
 * script's write so).
 */
export const SCRIPT_NODE_FAULT = /^ERR Error running script.*?: -(?:LOADING|READONLY|MASTERDOWN|CLUSTERDOWN|TRYAGAIN)\b/s

/**
 * A refusal of Tether's credentials (no password given, a wrong one, a wrong or disabled user),
 * or Redis < 6's answer to AUTH with a username ({@link NO_ACL_USERS}).
 */
export const REFUSED = /NOAUTH|WRONGPASS|invalid password|invalid username|wrong number of arguments for 'auth' command/i

/**
 * Redis < 6's answer to `AUTH <user> <password>`: AUTH takes only a password there, and the
 * arity check answers first (Redis 5.0.14's server.c, processCommand: `"wrong number of
 * arguments for '%s' command"`, sent by addReplyErrorFormat with the `ERR ` code), so:
 * `"ERR wrong number of arguments for 'auth' command"`. Checked against the source, not a server.
 */
export const NO_ACL_USERS = /wrong number of arguments for 'auth' command/i

/**
 * A refusal of a command a Lua script calls: Redis 6.0-7.0 "ERR The user executing the script
 * can't run this command or subcommand" ("... can't access at least one of the keys"), 7.2+
 * "ERR ACL failure in script: User <name> has no permissions to run the 'set' command" ("No
 * permissions to access a key"). Not a NOPERM reply: an ERR.
 */
export const IN_SCRIPT = /The user executing the script can't|ACL failure in script/

/** An ACL user without the permission a command (or a key, a channel) needs: a NOPERM reply, or a script's refused call ({@link IN_SCRIPT}). */
export const NOPERM = new RegExp(`NOPERM|${IN_SCRIPT.source}`)

/** How ioredis's error begins when no Sentinel it asked named the master (a round failed). */
export const SENTINEL_ROUND_FAILED = 'All sentinels are unreachable'
/**
 * An error reply that concerns one call only ({@link failsNode} false) and is no ACL refusal
 * (those are {@link RedisRefusal}s): a key of the wrong type (`WRONGTYPE`), a script's error
 * (`ERR ...`), `NOSCRIPT`, `EXECABORT`, `CROSSSLOT`. The call failed; its
 * node answered and is not counted down for it. Example: `{ node: '127.0.0.1:6379', command:
 * 'EVALSHA', script: 'tetherPutCheckpoint', error: 'WRONGTYPE Operation against a key holding
 * the wrong kind of value script: ...' }`.
 */
export interface RedisReplyError {
  /** The node that answered (as {@link RedisNodeHealth.address}). */
  readonly node: string
  /** The command sent (upper case), when ioredis tells it. */
  readonly command: string | null
  /** The script run (its name as defined, {@link RedisConnection.defineScript}), if the call ran one. */
  readonly script?: string
  readonly error: string
}

/**
 * Whether a NOPERM reply refuses a key (the user's key patterns leave it out), in each Redis
 * version's words: 6.2 and 7.0 `... access one of the keys used as arguments`, 7.2+ and Valkey
 * `No permissions to access a key`; not a channel's refusal nor a command's. Example:
 * `refusesKey('NOPERM No permissions to access a key')` -> true.
 */
export function refusesKey(error: string): boolean {
  return !/'[^']+' command/.test(error) && !/channel/i.test(error) && /\bkeys?\b/i.test(error)
}

/**
 * Whether a call's error is an ACL refusal of one of its keys (a NOPERM, or a script's refused
 * call, that names no command nor channel: see {@link refusesKey}). Example:
 * `isKeyRefusal('NOPERM this user has no permissions to access one of the keys used as arguments')` -> true.
 */
export function isKeyRefusal(error: string): boolean {
  return NOPERM.test(error) && refusesKey(error)
}

/**
 * A key of Tether's as it may be logged: what follows the first `{` (a session's key: an
 * application cookie, a header value, a client IP; the key prefix has no brace) left out, so
 * the key's kind is told (what to grant) but no user's secret. Example:
 * `loggedKey('tether:af:{PHPSESSID-value}')` -> `'tether:af:{…}'`;
 * `loggedKey('tether:keyspace')` -> `'tether:keyspace'`.
 */
export function loggedKey(key: string): string {
  const brace = key.indexOf('{')
  return brace < 0 ? key : `${key.slice(0, brace)}{…}`
}

/**
 * The command a refusal (see NOPERM) is told under, upper case: the one it names, else `sent`
 * (the command ioredis sent), and whether its next success, as a command's, is watched for (see
 * #noting). Only a refused command is watched so: a key refused to one call may be allowed to
 * the next (its end is told by the key's kind instead), and a command a script calls (7.2+ names
 * it) is never sent by itself, so its success would never be seen (its end is told by the
 * script's next success instead; a channel's by its command's, see #callError). Examples:
 * `("NOPERM this user has no permissions to run the 'evalsha' command", 'evalsha')` ->
 * `{ command: 'EVALSHA', watched: true }`; `("ERR ACL failure in script: User u has no
 * permissions to run the 'set' command script: ...", 'evalsha')` -> `{ command: 'SET', watched: false }`.
 */
export function refusedCommand(error: string, sent: unknown): { command: string; watched: boolean } {
  const named = /'([^']+)' command/.exec(error)?.[1]
  const command = (named ?? (typeof sent === 'string' ? sent : 'a command')).toUpperCase()
  return { command, watched: named !== undefined && !IN_SCRIPT.test(error) }
}
/** A command's name as a key refusal is matched by: a script goes out as EVAL or EVALSHA, one command here. */
export function sameScript(command: string): string {
  return command === 'EVALSHA' ? 'EVAL' : command
}

/** The command (upper case) a failed call sent, as ioredis tells it on its error (the first of several), or undefined. */
export function commandOf(err: unknown): string | undefined {
  const e = err instanceof AggregateError ? err.errors[0] as unknown : err
  const name = (e as { command?: { name?: unknown } } | null)?.command?.name
  return typeof name === 'string' ? name.toUpperCase() : undefined
}

export function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err)
}
/** The arguments Redis (>= 6.2) quotes in an unknown-command reply: keys, a session's among them. */
const QUOTED_ARGUMENTS = /(with args beginning with:).*$/s

/**
 * A reply error with the call's arguments Redis quoted in it left out, so no key (a user's
 * session key is in Tether's keys) reaches a log line, /readyz or a metric, and one error is one
 * text whatever the key. Example: `"ERR unknown command 'EVALSHA', with args beginning with:
 * 'ab12' '1' 'tether:af:{k}'"` -> `"ERR unknown command 'EVALSHA', with args beginning with: (not
 * shown)"`.
 */
export function withoutArguments(error: string): string {
  return error.replace(QUOTED_ARGUMENTS, '$1 (not shown)')
}
