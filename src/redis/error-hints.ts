// How Redis's and the Sentinels' errors are told to an operator: with the settings to fix when
// they refused Tether's credentials or an ACL permission (authHint), knowing which settings
// the user and password came from, the server's major version (read from ioredis's ready check)
// and a Sentinel's refusal within a failed round. Layer 3 helper of connection.ts: no I/O of
// its own, no ioredis import (the ready check is patched through its shape).
import { authHint } from './auth-hint.js'
import type { RedisConnectionOptions, RedisUrl } from './connection-options.js'

/** The error wording of one connection (see the file comment). */
export class ErrorHints {
  readonly #options: RedisConnectionOptions
  readonly #url: RedisUrl | null
  readonly keyPrefix: string

  constructor(options: RedisConnectionOptions, url: RedisUrl | null, keyPrefix: string) {
    this.#options = options
    this.#url = url
    this.keyPrefix = keyPrefix
  }

  /**
   * With Sentinel: the last refusal of Tether's credentials by a Sentinel (NOAUTH, WRONGPASS,
   * invalid password, NOPERM) in the round of questions under way, where ioredis's round error
   * tells only the last Sentinel's error (say an unreachable one asked after it).
   */
  #sentinelRefusal: { sentinel: string; error: string } | null = null

  /**
   * The major version of the standalone server or Sentinel master, from the `redis_version` of
   * the INFO ioredis's ready check asks at each connect (no question of its own); null until
   * one answered (a Cluster, a user without +info, a password refused from the start), and
   * again from the connection's loss until the next ready check reads it (the server behind
   * the address may have been replaced by an older one).
   */
  #serverMajor: number | null = null

  /**
   * {@link #serverMajor}, as known now: a test pins that ioredis's private ready check still
   * gives it (a rename or another callback would leave it null, and the Redis < 6 hints blind).
   */
  get serverMajor(): number | null {
    return this.#serverMajor
  }

  /**
   * Redis's own error (the master, the standalone server, a Cluster node) as told, with the
   * settings to fix when it refused Tether's credentials or an ACL permission. Example:
   * `"WRONGPASS ... (Redis refused Tether's username or password: check state.redis.username and state.redis.password)"`.
   */
  data(error: string, kind = ''): string {
    const o = this.#options
    const url = this.#url
    // a user or password not given as its own option is the URL's (if it has one): the URL is the setting to fix
    const fromUrl = o.urlSetting ?? 'url'
    const username = o.username === undefined ? url?.username ?? null : o.username
    const usernameSetting = o.username === undefined && url?.username !== undefined ? fromUrl : o.usernameSetting ?? 'username'
    const passwordSetting = o.password === undefined && url?.password !== undefined ? fromUrl : o.passwordSetting ?? 'password'
    const passwordSent = o.password === undefined ? url?.password !== undefined : o.password !== null
    // (ACL key and channel patterns are globs: the prefix's own glob characters escaped)
    const glob = (prefix: string): string => `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
    const major = this.#serverMajor
    return authHint(error, 'Redis', username, usernameSetting, passwordSetting, { keys: glob(this.keyPrefix + kind), channels: glob(this.keyPrefix) }, { passwordSent, ...(major === null ? {} : { aclUsers: major >= 6 }) })
  }

  /**
   * A Sentinel's error as told: a refusal of Tether's credentials (NOAUTH, WRONGPASS, invalid
   * password) or a NOPERM names the settings to fix. Example: `"WRONGPASS invalid username-password
   * pair ... (the Sentinel refused Tether's password for the default user: check
   * state.redis.sentinel_password, or set state.redis.sentinel_username for an ACL user)"`.
   */
  sentinel(error: string): string {
    const o = this.#options
    return authHint(error, 'the Sentinel', o.sentinelUsername ?? null, o.sentinelUsernameSetting ?? 'sentinelUsername', o.sentinelPasswordSetting ?? 'sentinelPassword', { channels: '+switch-master' }, { passwordSent: o.sentinelPassword != null, aclSince: '6.2' })
  }

  /**
   * A failed round of questions to the Sentinels as told: ioredis's error (with the last
   * Sentinel's error) and, when that one is no refusal but another Sentinel refused Tether's
   * credentials in the round, that refusal with its hint. Example: `"All sentinels are
   * unreachable. ... Last error: connect ECONNREFUSED 127.0.0.1:26380; Sentinel 127.0.0.1:26379:
   * WRONGPASS ... (the Sentinel refused Tether's password for the default user: check
   * state.redis.sentinel_password, or set state.redis.sentinel_username for an ACL user)"`.
   */
  sentinelRound(error: string): string {
    const refusal = this.#sentinelRefusal
    this.#sentinelRefusal = null
    const told = this.sentinel(error)
    if (told !== error || refusal === null) return told
    return `${error}; Sentinel ${refusal.sentinel}: ${this.sentinel(refusal.error)}`
  }

  /**
   * Notes `redis_version` from `client`'s ready check (ioredis's `_readyCheck`, which answers
   * INFO's fields parsed) into {@link #serverMajor}; a client without it is left alone.
   */
  noteVersion(client: object): void {
    type ReadyCheck = (callback: (err: unknown, info: unknown) => void) => unknown
    const own = client as unknown as { _readyCheck?: ReadyCheck }
    const check = own._readyCheck
    if (typeof check !== 'function') return
    own._readyCheck = (callback) => check.call(client, (err, info) => {
      const version = (info as { redis_version?: unknown } | undefined)?.redis_version
      const major = typeof version === 'string' ? Number.parseInt(version, 10) : NaN
      // (a check that failed or whose INFO could not be read: unknown, never the last server's)
      this.#serverMajor = Number.isInteger(major) ? major : null
      callback(err, info)
    })
  }

  /** A round of questions to the Sentinels ended (the client is ready): no refusal of it is kept. */
  roundStarted(): void {
    this.#sentinelRefusal = null
  }

  /** Sentinel `sentinel` refused Tether's credentials (or a permission) with `error` in the round under way. */
  sentinelRefused(sentinel: string, error: string): void {
    this.#sentinelRefusal = { sentinel, error }
  }

  /** The connection was lost: the server behind the address may be another one when it comes back. */
  forgetVersion(): void {
    this.#serverMajor = null
  }
}
