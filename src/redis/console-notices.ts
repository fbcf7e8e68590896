// What ioredis says with console.warn ("[WARN] Redis server does not require a password, but a
// password was supplied.", at every connect; "Skipping the ready check because INFO command
// fails" for an ACL user without +info): plain-text lines among Tether's JSON log lines.
// This routes them into the logger, once each, with what they mean for the operator and the
// setting to change; every other console.warn passes through unchanged. Installed once per
// process by cli-commands.ts's run path; imports no ioredis (the texts are matched, from its event_handler.js).
import type { RedisConfig } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'

/** What one ioredis console line means: the level and message it is logged with, and a hint. */
export interface RedisConsoleNotice {
  readonly level: 'warn' | 'error'
  readonly msg: string
  readonly hint?: string
}

/**
 * The settings through which Tether sends a password (to a Redis node or to a Sentinel), for the
 * hint. Example: `{ url: 'redis://:pw@h', sentinel_password: 's', ... }` ->
 * `['state.redis.url', 'state.redis.sentinel_password']`.
 */
export function redisPasswordSettings(redis: RedisConfig): string[] {
  const urlPassword = redis.url !== null && /^[a-z]+:\/\/[^/@]*:[^/@]*@/i.test(redis.url)
  return [
    ...(redis.password !== null ? ['state.redis.password'] : urlPassword ? ['state.redis.url'] : []),
    ...(redis.sentinel_password !== null ? ['state.redis.sentinel_password'] : []),
  ]
}

/** ioredis's own line (no `[WARN] ` prefix) when INFO is refused at connect (its Redis.js). */
const READY_CHECK = /^Skipping the ready check because INFO command fails: /
/** The lines of ioredis routed (checked before a stack is captured). */
const ROUTED = /^(\[(WARN|ERROR)\] |Skipping the ready check because INFO command fails: )/

/**
 * What an ioredis console line (`[WARN] ...`, `[ERROR] ...`, or `Skipping the ready check
 * because INFO command fails: ...`) means, or null for any other line.
 * `passwords`: see {@link redisPasswordSettings}. Example:
 * `redisConsoleNotice('[WARN] Redis server does not require a password, but a password was supplied.', ['state.redis.password'])`
 * -> `{ level: 'warn', msg: 'redis: the server does not require a password, but Tether sends one', hint: 'the password in state.redis.password is not needed by this server; remove it or set requirepass' }`.
 */
export function redisConsoleNotice(line: string, passwords: readonly string[]): RedisConsoleNotice | null {
  if (READY_CHECK.test(line)) {
    return {
      level: 'warn',
      msg: 'redis: the ACL user may not run INFO, so the client skips its ready check',
      hint: 'grant +info (ACL SETUSER <user> +info): without it a Redis still loading its data is used at once, and Tether cannot check its maxmemory-policy',
    }
  }
  if (!/^\[(WARN|ERROR)\] /.test(line)) return null
  const setting = passwords.length === 0 ? 'the password Tether sends' : `the password in ${passwords.join(' or ')}`
  if (/does not require a password, but a password was supplied/.test(line)) {
    return {
      level: 'warn',
      msg: 'redis: the server does not require a password, but Tether sends one',
      hint: `${setting} is not needed by this server; remove it or set requirepass`,
    }
  }
  if (/wrong number of arguments for 'auth'/.test(line)) {
    return {
      level: 'warn',
      msg: 'redis: the server has no ACL users (Redis < 6) and refused AUTH with a username',
      hint: 'remove state.redis.username (or state.redis.sentinel_username), or upgrade to Redis 6+ (Sentinels 6.2+)',
    }
  }
  return { level: line.startsWith('[ERROR]') ? 'error' : 'warn', msg: 'redis client warning' }
}

/**
 * Log `notice`, ioredis's line `said`, as one JSON line of `logger` (its `msg`, the line as
 * `redis_said` with an ACL user's name left out, the `hint`, and `fields`). Example: `logRedisNotice(logger, notice, '[WARN] ...', { child: 1 })`.
 */
export function logRedisNotice(logger: Logger, notice: RedisConsoleNotice, said: string, fields: Readonly<Record<string, unknown>> = {}): void {
  // (Redis 7.2+ names the ACL user in a refusal: "NOPERM User u has no permissions ...")
  const line = said.replace(/\bUser \S+ has\b/, 'User <user> has')
  logger[notice.level]({ ...fields, redis_said: line, ...(notice.hint === undefined ? {} : { hint: notice.hint }) }, notice.msg)
}

/**
 * Replace `console.warn` so that an ioredis `[WARN]`/`[ERROR]` line (told by the caller's stack:
 * a file under ioredis/) becomes one JSON line of `logger()` (see {@link logRedisNotice}), logged
 * once per process for each line (ioredis repeats it at every connect and the settings it names
 * change only with a restart), or handed to `forward()` when it is not null (a worker's: to its
 * primary, which logs it once for all workers); any other call goes to the console.warn
 * there was. Returns the undo. Example: `routeRedisConsole(() => logger, () => redisPasswordSettings(config.state.redis))`.
 */
export function routeRedisConsole(
  logger: () => Logger,
  passwords: () => readonly string[],
  forward: () => ((notice: RedisConsoleNotice, said: string) => void) | null = () => null,
): () => void {
  const previous = console.warn
  const told = new Set<string>()
  console.warn = (...args: unknown[]): void => {
    // The cheap checks first: the stack is captured only for a single string of ROUTED's shapes.
    const notice = args.length === 1 && typeof args[0] === 'string' && ROUTED.test(args[0]) &&
      /[/\\]ioredis[/\\]/.test(new Error().stack ?? '')
      ? redisConsoleNotice(args[0], passwords())
      : null
    if (notice === null) return previous.apply(console, args)
    if (told.has(args[0] as string)) return
    told.add(args[0] as string)
    const to = forward()
    if (to !== null) to(notice, args[0] as string)
    else logRedisNotice(logger(), notice, args[0] as string)
  }
  return () => { console.warn = previous }
}
