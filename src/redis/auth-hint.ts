// The hint added to a refusal of Tether's credentials or of an ACL permission, naming the
// settings to fix and the grant to give. Pure: no I/O; the errors' texts are reply-errors.ts's.
import { NOPERM, NO_ACL_USERS, REFUSED } from './reply-errors.js'

/** The commands Tether's scripts call (checkpoint put, binding write, keyspace marker). */
const SCRIPT_COMMANDS = '+get +set +del +pttl +hmget +hset +pexpire'
/** What a NOPERM hint grants: the key and channel patterns Tether uses (e.g. `"tether:*"`, `"+switch-master"`). */
export interface AclGrants {
  readonly keys?: string
  readonly channels?: string
}

/** What is known of the server and of what Tether sent, for {@link authHint}. */
export interface AuthFacts {
  /** Whether a password is sent (AUTH): a NOAUTH with a username and a password sent means AUTH was refused, not missing. */
  readonly passwordSent?: boolean
  /**
   * Whether the server has ACL users: false when its version is known to be older (Redis < 6,
   * from a ready check's INFO), so no hint suggests a username; undefined: not known.
   */
  readonly aclUsers?: boolean
  /** The first version with ACL users, as told in the hint (default `"6"`; Sentinels `"6.2"`). */
  readonly aclSince?: string
}

/**
 * `error` with a hint naming the settings to fix when `who` refused Tether's credentials or an
 * ACL permission; a user name Redis puts in a NOPERM reply (7.2+: "User tether has no
 * permissions ...") is left out, and the grant is told with `<user>` (`default` when no
 * `username` is set). NOPERM reply shapes covered (Redis 6.0-7.0, 7.2+): `"this user has no
 * permissions to run the 'evalsha' command"` (a subcommand as `'client|setname'`), `"... to access
 * one of the keys used as arguments"` / `"No permissions to access a key"`, and the same for
 * channels; a script's refused command (6.0-7.0: `"ERR The user executing the script can't run
 * this command or subcommand ..."`, told with the commands Tether's scripts call). Examples:
 * `authHint("NOPERM this user has no permissions to run the 'evalsha' command", 'Redis', 'u', 'state.redis.username', ...)` ->
 * `"NOPERM ... (Redis's ACL user may not run EVALSHA: grant it (ACL SETUSER <user> +evalsha), or check state.redis.username)"`;
 * a key with `grants.keys` `"tether:*"`: `"... may not access the keys: grant them (ACL SETUSER <user> ~tether:*) ..."`;
 * `NOAUTH` (no password sent), `username` null: `"... (Redis requires a password: set
 * state.redis.password, and state.redis.username for an ACL user)"`; `WRONGPASS`, `username` null
 * (AUTH ran as `default`): `"... (Redis refused Tether's password for the default user: check
 * state.redis.password, or set state.redis.username for an ACL user)"`; Redis < 6's `"ERR invalid
 * password"` (no ACL users), `username` null: `"... (Redis refused Tether's password: check state.redis.password)"`;
 * Redis < 6's `"ERR wrong number of arguments for 'auth' command"` (AUTH with a username), or a
 * NOAUTH while a username and a password are sent (the client went on after that refusal):
 * `"... (Redis has no ACL users (Redis < 6) and refused AUTH with a username: remove
 * state.redis.username, or upgrade)"` (that NOAUTH from a server known to be 6+, `facts.aclUsers`
 * true: `"... (Redis refused Tether's AUTH: check state.redis.username and state.redis.password)"`).
 * With `facts.aclUsers` false (a Redis < 6 seen), no hint suggests a username.
 */
export function authHint(error: string, who: string, username: string | null, usernameSetting: string, passwordSetting: string, grants: AclGrants = {}, facts: AuthFacts = {}): string {
  if (NOPERM.test(error)) {
    const told = error.replace(/\bUser \S+ has/, `User <${usernameSetting}> has`)
    const command = /'([^']+)' command/.exec(told)?.[1]
    const user = username === null ? 'default' : '<user>'
    const [what, grant] = command !== undefined ? [`run ${command.toUpperCase()}`, `+${command.toLowerCase()}`]
      : /script can't run/.test(told) ? ["run a command Tether's script calls", SCRIPT_COMMANDS]
      : /channel/i.test(told) ? ['use the channel', grants.channels === undefined ? undefined : `&${grants.channels}`]
      : /key/i.test(told) ? ['access the keys', grants.keys === undefined ? undefined : `~${grants.keys}`]
      : ['do this', undefined]
    const how = grant === undefined ? 'grant it' : `grant ${command !== undefined ? 'it' : 'them'} (ACL SETUSER ${user} ${grant})`
    return `${told} (${who}'s ACL user may not ${what}: ${how}, or check ${usernameSetting})`
  }
  if (!REFUSED.test(error)) return error
  // Redis < 6 refused AUTH with a username (its arity check); the client goes on without AUTH,
  // so a server with a password answers each later command NOAUTH although one is sent
  // (not a server known to be 6+: there a NOAUTH although AUTH was sent follows a refused AUTH,
  // e.g. the SELECT sent with it, and the AUTH's own WRONGPASS tells why)
  const noAuthSent = /NOAUTH/.test(error) && username !== null && facts.passwordSent === true
  if (NO_ACL_USERS.test(error) || (noAuthSent && facts.aclUsers !== true)) return `${error} (${who} has no ACL users (Redis < ${facts.aclSince ?? '6'}) and refused AUTH with a username: remove ${usernameSetting}, or upgrade)`
  if (noAuthSent) return `${error} (${who} refused Tether's AUTH: check ${usernameSetting} and ${passwordSetting})`
  // NOAUTH: no AUTH was sent at all (no password set), so none was refused
  if (/NOAUTH/.test(error)) {
    const user = username === null && facts.aclUsers !== false ? `, and ${usernameSetting} for an ACL user` : ''
    return `${error} (${who} requires a password: set ${passwordSetting}${user})`
  }
  if (username === null) {
    // Redis < 6 (no ACL users, no `default` user) answers "ERR invalid password": only the password to check
    if (/\bERR invalid password\b/.test(error) || facts.aclUsers === false) return `${error} (${who} refused Tether's password: check ${passwordSetting})`
    // AUTH with a password only runs as the `default` user: a Redis 6+ ACL user's password is refused
    return `${error} (${who} refused Tether's password for the default user: check ${passwordSetting}, or set ${usernameSetting} for an ACL user)`
  }
  const settings = usernameSetting === passwordSetting ? usernameSetting : `${usernameSetting} and ${passwordSetting}`
  return `${error} (${who} refused Tether's username or password: check ${settings})`
}
