// Checkpoints in Redis, shared by every Tether replica: a hash per session, versioned puts by
// one atomic script, a TTL per write. Layer 3 adapter over the shared RedisConnection (it
// imports no Redis client itself). It must never make the request path wait longer than the
// connection's timeout nor reject: every failure becomes 'unavailable'.
import type { Checkpoint, CheckpointStore, CheckpointStoreStatus, GetResult, PutResult } from '../state/checkpoint-store.js'
import { FAILED, RedisConnection, type RedisConnectionOptions } from './connection.js'


/**
 * The put, in one atomic step: compare, write every field, set the TTL.
 * KEYS[1] = the checkpoint hash; ARGV = value, version ('' = none), upstream, epoch, writtenAt,
 * ttlMs, replace ('1': versions are not compared with a checkpoint of another epoch), placedAt
 * ('' = none; two upstreams' checkpoints of one epoch with different placements: the later
 * placement's is kept, whatever versions and times; written with `placedWith` = writtenAt, and
 * a stored placedAt counts only when its placedWith is the stored writtenAt: a Tether from
 * before placedAt, during a rolling upgrade, rewrites the other fields and leaves these). Returns 1
 * when stored, 0 when stale, 2 when superseded (refused by a checkpoint of the same epoch from
 * another upstream; a script from before that value returned 0: each Tether runs its own
 * script, by its SHA, so a replica reads only its own script's replies). A refused put leaves
 * the stored fields as they are but extends the hash's TTL to ttlMs when that is longer (the
 * user is active: the checkpoint lives as long as their affinity, not idle_timeout after its
 * last change). The rule is CheckpointStore.put's (`isStale` in
 * src/state/checkpoint-store.ts): two versioned checkpoints (not replacing, and not of one epoch
 * from two upstreams) by version, refused when incoming <= stored; any other pair by
 * `writtenAt`, refused when incoming was written before stored (a put Redis applies late, after
 * a freeze, must not undo a later one; two versioned ones of one epoch from two upstreams: only
 * when its version is not above stored's either). Numbers
 * are compared as Lua numbers (doubles): exact for safe integers.
 */
export const PUT_CHECKPOINT_LUA = `
local incoming = ARGV[2]
local stored = redis.call('HMGET', KEYS[1], 'version', 'epoch', 'writtenAt', 'upstream', 'placedAt', 'placedWith')
if stored[3] then
  local replacing = ARGV[7] == '1' and stored[2] ~= ARGV[4]
  local rival = stored[2] == ARGV[4] and stored[4] ~= ARGV[3]
  local refused = 0
  if rival then
    refused = 2
  end
  -- refused: the stored checkpoint stays as it is, but lives on (an answer of the user's carried
  -- this one: they are active), never shortened; PEXPIRE, not a denyoom command: a full Redis
  -- (maxmemory, noeviction) allows it
  local function keep(r)
    local left = redis.call('PTTL', KEYS[1])
    if left >= 0 and left < tonumber(ARGV[6]) then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
    return r
  end
  -- placedAt counts only when written with this writtenAt: a Tether from before placedAt
  -- (a rolling upgrade) rewrites the other fields and leaves another checkpoint's placedAt
  local placed = stored[5]
  if stored[6] ~= stored[3] then placed = nil end
  if rival and ARGV[8] ~= '' and placed and placed ~= '' and tonumber(ARGV[8]) ~= tonumber(placed) then
    if tonumber(ARGV[8]) < tonumber(placed) then
      return keep(2)
    end
  elseif not replacing and not rival and incoming ~= '' and stored[1] and stored[1] ~= '' then
    if tonumber(incoming) <= tonumber(stored[1]) then
      return keep(refused)
    end
  elseif tonumber(ARGV[5]) < tonumber(stored[3]) then
    if replacing or not rival or incoming == '' or not stored[1] or stored[1] == '' or tonumber(incoming) <= tonumber(stored[1]) then
      return keep(refused)
    end
  end
end
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', incoming, 'upstream', ARGV[3], 'epoch', ARGV[4], 'writtenAt', ARGV[5], 'placedAt', ARGV[8], 'placedWith', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 1
`

/**
 * The Redis key of a session's checkpoint: `${keyPrefix}cp:{${sessionKey}}`. The braces are a
 * Cluster hash tag: every key of one session hashes to one slot (the slot of the session key).
 *
 * Example: `checkpointKey('tether:', '9f86d0')` -> `"tether:cp:{9f86d0}"`.
 */
export function checkpointKey(keyPrefix: string, sessionKey: string): string {
  return `${keyPrefix}cp:{${sessionKey}}`
}

/** A checkpoint from an HGETALL reply, or null when the hash is empty or not one of ours. */
function parseCheckpoint(hash: Record<string, string>): Checkpoint | null {
  const { value, version, upstream, epoch, writtenAt, placedAt, placedWith } = hash
  if (value === undefined || version === undefined || upstream === undefined || epoch === undefined || writtenAt === undefined) {
    return null
  }
  const v = version === '' ? null : Number(version)
  const e = Number(epoch)
  const w = Number(writtenAt)
  if ((v !== null && !Number.isFinite(v)) || !Number.isFinite(e) || !Number.isFinite(w)) return null
  // a record written by an older Tether has no placedAt, or another checkpoint's (placedWith
  // is the writtenAt it came with)
  const p = placedAt === undefined || placedAt === '' || placedWith !== writtenAt ? NaN : Number(placedAt)
  return Object.freeze(Number.isFinite(p) ? { value, version: v, upstream, epoch: e, writtenAt: w, placedAt: p } : { value, version: v, upstream, epoch: e, writtenAt: w })
}

/** The name under which the put script is defined on the connection. */
const PUT_SCRIPT = 'tetherPutCheckpoint'

/** A store that owns its connection (the options), or one on a shared connection. */
export type RedisCheckpointStoreOptions =
  | (RedisConnectionOptions & { readonly maxBytes?: number })
  | { readonly connection: RedisConnection; readonly maxBytes?: number }

/**
 * CheckpointStore in Redis. A checkpoint is a hash with the fields `value`, `version` (`''` for
 * none), `upstream`, `epoch`, `writtenAt`, `placedAt` (`''` for none) and `placedWith` (the `writtenAt` it was written with), under {@link checkpointKey}, expiring `ttlMs` after
 * the last stored put (PEXPIRE). Puts run {@link PUT_CHECKPOINT_LUA}. A put resolves `'stored'`
 * only after Redis replied to the script; a timed-out put is `'unavailable'` even if Redis
 * applied it later. Such a late put never replaces a newer one: versions order versioned
 * checkpoints, `writtenAt` the others (and replacing puts).
 *
 * Durability: 'stored' means the Redis primary accepted the write. Surviving a Redis restart or
 * failover is Redis's job (AOF/RDB, replicas); an empty Redis means checkpoints are 'missing'.
 *
 * With connection options it owns its connection (start/stop connect and close it); given a
 * shared `connection`, the composition root starts and stops that.
 *
 * Example:
 * ```ts
 * const store = new RedisCheckpointStore({ url: 'redis://redis:6379', keyPrefix: 'tether:' })
 * await store.start()   // resolves even while Redis is down
 * ```
 */
export class RedisCheckpointStore implements CheckpointStore {
  readonly #redis: RedisConnection
  readonly #owned: boolean
  readonly #maxBytes: number

  constructor(options: RedisCheckpointStoreOptions) {
    this.#owned = !('connection' in options)
    this.#redis = 'connection' in options ? options.connection : new RedisConnection(options)
    this.#maxBytes = options.maxBytes ?? 64 * 1024
    if (!Number.isSafeInteger(this.#maxBytes) || this.#maxBytes < 0) {
      throw new RangeError(`RedisCheckpointStore: maxBytes must be an integer >= 0, got ${this.#maxBytes}`)
    }
    this.#redis.defineScript(PUT_SCRIPT, PUT_CHECKPOINT_LUA, 1)
  }

  get status(): CheckpointStoreStatus {
    return this.#redis.status
  }

  onStatus(fn: (status: CheckpointStoreStatus, detail: string) => void): () => void {
    return this.#redis.onStatus(fn)
  }

  /** Whether the node of `sessionKey`'s checkpoint is up (see RedisConnection.upFor). */
  answers(sessionKey: string): boolean {
    return this.#redis.upFor(checkpointKey(this.#redis.keyPrefix, sessionKey))
  }

  async start(): Promise<void> {
    if (this.#owned) await this.#redis.start()
  }

  async stop(): Promise<void> {
    if (this.#owned) await this.#redis.stop()
  }

  /** The UTF-8 bytes of `value`: ioredis sends a string argument as UTF-8, so that is what Redis holds. */
  valueBytes(value: string): number {
    return Buffer.byteLength(value, 'utf8')
  }

  async put(sessionKey: string, cp: Checkpoint, ttlMs: number, timeoutMs?: number, replace = false): Promise<PutResult> {
    if (this.valueBytes(cp.value) > this.#maxBytes) return 'too_large'
    const ttl = String(Math.max(1, Math.ceil(ttlMs) || 1))
    const args = [
      checkpointKey(this.#redis.keyPrefix, sessionKey),
      cp.value,
      cp.version === null ? '' : String(cp.version),
      cp.upstream,
      String(cp.epoch),
      String(cp.writtenAt),
      ttl,
      replace ? '1' : '',
      cp.placedAt == null ? '' : String(cp.placedAt),
    ]
    const reply = await (timeoutMs === undefined ? this.#redis.runScript(PUT_SCRIPT, ...args) : this.#redis.runScriptWithin(timeoutMs, PUT_SCRIPT, ...args))
    if (reply === FAILED) return 'unavailable'
    const n = Number(reply)
    return n === 1 ? 'stored' : n === 2 ? 'superseded' : 'stale'
  }

  async get(sessionKey: string): Promise<GetResult> {
    const key = checkpointKey(this.#redis.keyPrefix, sessionKey)
    const reply = await this.#redis.run(key, (c) => c.hgetall(key))
    if (reply === FAILED) return { status: 'unavailable' }
    const checkpoint = parseCheckpoint(reply)
    return checkpoint ? { status: 'found', checkpoint } : { status: 'missing' }
  }

  async delete(sessionKey: string): Promise<void> {
    const key = checkpointKey(this.#redis.keyPrefix, sessionKey)
    await this.#redis.run(key, (c) => c.del(key))
  }
}
