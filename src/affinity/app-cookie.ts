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

/** What an answer taught: the value now pinned, and the one it replaced (a rotation), if any. */
export interface Learned {
  /** The user's session key from here on. */
  readonly key: string
  /** The value the request carried that this answer replaced (its checkpoint follows), else null. */
  readonly rekeyedFrom: string | null
}

/**
 * Pin the application cookie `name` set by `setCookie` (an answer's Set-Cookie lines) to the
 * decision's upstream with the user's epoch. The value the request carried, if replaced or
 * deleted, is forgotten (apps that rotate the cookie on every answer, as Laravel does, leave
 * one entry per user), but a replaced one still routes for a grace period. Returns what was
 * learned, or null when the answer set no value.
 * Example: answer `Set-Cookie: PHPSESSID=abc; path=/` from app-1 to a request that carried
 * PHPSESSID=old -> 'abc' pinned to app-1, `{ key: 'abc', rekeyedFrom: 'old' }`.
 */
export function learnAppCookie(
  sessions: SessionTable, name: string, d: LearningDecision, setCookie: string | string[] | undefined, now: number,
): Learned | null {
  if (setCookie === undefined) return null
  let learned: Learned | null = null
  for (const line of typeof setCookie === 'string' ? [setCookie] : setCookie) {
    const v = appCookieValue(line, name, now)
    if (v === null) continue
    const rotated = d.appKey !== null && d.appKey !== v.value
    if (rotated) sessions.retire(d.appKey!, v.deleted ? null : d, now)
    if (v.deleted) sessions.unpin(v.value)
    else {
      sessions.pin(v.value, d.upstream, d.epoch, now)
      learned = { key: v.value, rekeyedFrom: rotated ? d.appKey : null }
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
