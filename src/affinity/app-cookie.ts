// Learning an application's session cookie from an answer (`key: app_cookie`): the value an
// upstream sets is pinned to that upstream, a rotated value re-pinned, a deleted one forgotten.
// Layer 2 (writes the session table it is given); reads only the answer's Set-Cookie lines.
import type { SessionTable } from './session-table.js'

/** The part of a routing decision learning needs. */
export interface LearningDecision {
  readonly upstream: string
  readonly epoch: number
  /** The application cookie value the request carried, or null. */
  readonly appKey: string | null
}

/**
 * Pin the application cookie `name` set by `setCookie` (an answer's Set-Cookie lines) to the
 * decision's upstream with the user's epoch. The value the request carried, if replaced or
 * deleted, is forgotten (apps that rotate the cookie on every answer, as Laravel does, leave
 * one entry per user), but still routes for a grace period. Returns the value now pinned (the
 * user's session key from here on), or null when the answer set none.
 * Example: answer `Set-Cookie: PHPSESSID=abc; path=/` from app-1 -> 'abc' pinned to app-1.
 */
export function learnAppCookie(
  sessions: SessionTable, name: string, d: LearningDecision, setCookie: string | string[] | undefined, now: number,
): string | null {
  if (setCookie === undefined) return null
  let learned: string | null = null
  for (const line of typeof setCookie === 'string' ? [setCookie] : setCookie) {
    const v = appCookieValue(line, name, now)
    if (v === null) continue
    if (d.appKey !== null && d.appKey !== v.value) sessions.retire(d.appKey, v.deleted ? null : d, now)
    if (v.deleted) sessions.unpin(v.value)
    else {
      sessions.pin(v.value, d.upstream, d.epoch, now)
      learned = v.value
    }
  }
  return learned
}

/**
 * The value a Set-Cookie line gives to cookie `name`, and whether the line deletes it
 * (empty value, Max-Age <= 0, or an Expires in the past). Null if the line is for another cookie.
 * Example: appCookieValue('PHPSESSID=abc; path=/', 'PHPSESSID', now) -> { value: 'abc', deleted: false }.
 */
export function appCookieValue(line: string, name: string, now: number): { value: string; deleted: boolean } | null {
  let i = 0
  while (i < line.length && line.charCodeAt(i) === 0x20) i++
  if (!line.startsWith(name, i) || line.charCodeAt(i + name.length) !== 0x3d /* = */) return null
  const start = i + name.length + 1
  let end = line.indexOf(';', start)
  if (end === -1) end = line.length
  let value = line.slice(start, end).trim()
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
  const attrs = line.slice(end).toLowerCase()
  const maxAge = /;\s*max-age\s*=\s*(-?\d+)/.exec(attrs)
  const expires = /;\s*expires\s*=\s*([^;]+)/.exec(attrs)
  const deleted = value === '' || (maxAge !== null && Number(maxAge[1]) <= 0) ||
    (maxAge === null && expires !== null && Date.parse(expires[1]!) < now)
  return { value, deleted }
}
