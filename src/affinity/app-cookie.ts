// Learning an application's session cookie from an answer (`key: app_cookie`): the value an
// upstream sets is pinned to that upstream, a rotated value re-pinned, a deleted one forgotten.
// Layer 2 (writes the session table it is given); reads only the answer's Set-Cookie lines.
import { DEFAULT_MAX_KEY_LENGTH } from './key.js'
import type { SessionTable } from './session-table.js'

/** The part of a routing decision learning needs. */
export interface LearningDecision {
  readonly upstream: string
  readonly epoch: number
  /** The application cookie value the request carried, or null. */
  readonly appKey: string | null
  /**
   * When the binding the request was routed by was created (ms; now for a placement made for
   * it); null or absent: unknown (routed by a rotated value's grace), then the table is asked.
   */
  readonly placedAt?: number | null
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
 * one entry per user), but a replaced one still routes for a grace period. A line whose `Path`
 * does not cover the request's path (`requestPath`, RFC 6265 section 5.1.4) sets another
 * cookie of that name than the one the request carried (a browser keeps both): its value is
 * pinned, and the user's session is left as it is. A value that replaces the user's continues
 * their binding: it keeps the creation time of the one it replaces (`d.placedAt`, else that
 * value's in the table), so `absolute_timeout` ends the affinity of an application that rotates
 * its cookie on every answer too; one set past that timeout is not pinned (the user is placed
 * afresh, as with the expired value). A value longer than the longest key a
 * request may carry is not learned (it could never route). Returns what was learned, or null
 * when the answer set no value of the user's cookie.
 * Example: answer `Set-Cookie: PHPSESSID=abc; path=/` from app-1 to a request that carried
 * PHPSESSID=old -> 'abc' pinned to app-1, `{ key: 'abc', rekeyedFrom: 'old' }`.
 */
export function learnAppCookie(
  sessions: SessionTable, name: string, d: LearningDecision, setCookie: string | string[] | undefined, now: number, requestPath = '/',
): Learned | null {
  if (setCookie === undefined) return null
  let learned: Learned | null = null
  // the creation time of the user's binding, read before a rotation retires it (undefined: not read yet)
  let createdAt: number | null | undefined
  for (const line of typeof setCookie === 'string' ? [setCookie] : setCookie) {
    const v = appCookieValue(line, name, now)
    if (v === null || (!v.deleted && v.value.length > DEFAULT_MAX_KEY_LENGTH)) continue
    const theUsers = v.path === null || pathMatches(requestPath, v.path)
    const rotated = theUsers && d.appKey !== null && d.appKey !== v.value
    if (rotated) {
      if (createdAt === undefined) createdAt = d.placedAt ?? sessions.createdAt(d.appKey!, now)
      sessions.retire(d.appKey!, v.deleted ? null : d, now)
    }
    if (v.deleted) sessions.unpin(v.value)
    else {
      if (rotated && createdAt != null) sessions.continuePin(v.value, d.upstream, d.epoch, now, createdAt)
      else sessions.pin(v.value, d.upstream, d.epoch, now)
      if (theUsers) learned = { key: v.value, rekeyedFrom: rotated ? d.appKey : null }
    }
  }
  return learned
}

/**
 * Does `requestPath` (a request target; its query is ignored) path-match `cookiePath` (RFC
 * 6265 section 5.1.4)? Example: pathMatches('/shop/cart?x', '/shop') -> true; ('/shopping', '/shop') -> false.
 */
export function pathMatches(requestPath: string, cookiePath: string): boolean {
  const q = requestPath.indexOf('?')
  const path = q < 0 ? requestPath : requestPath.slice(0, q)
  if (!path.startsWith(cookiePath)) return false
  return path.length === cookiePath.length || cookiePath.endsWith('/') || path.charCodeAt(cookiePath.length) === 0x2f /* / */
}

/**
 * The value a Set-Cookie line gives to cookie `name`, whether the line deletes it (empty
 * value, Max-Age <= 0, or an Expires in the past), and its `Path` (null: none, or one not
 * starting with `/`, which the browser replaces by the request's own directory, RFC 6265
 * section 5.2.4). Null if the line is for another cookie.
 * Example: appCookieValue('PHPSESSID=abc; path=/', 'PHPSESSID', now) -> { value: 'abc', deleted: false, path: '/' }.
 */
export function appCookieValue(line: string, name: string, now: number): { value: string; deleted: boolean; path: string | null } | null {
  // the name is what comes before the first "=", without the blanks around it (RFC 6265
  // section 5.2: `tether =x` and `\ttether=x` set the cookie `tether` in a browser)
  let eq = name.length
  if (!line.startsWith(name) || line.charCodeAt(eq) !== 0x3d /* = */) {
    eq = line.indexOf('=')
    const semi = line.indexOf(';')
    if (eq < 0 || (semi >= 0 && semi < eq) || line.slice(0, eq).replace(/^[ \t]+|[ \t]+$/g, '') !== name) return null
  }
  const start = eq + 1
  let end = line.indexOf(';', start)
  if (end === -1) end = line.length
  let value = line.slice(start, end).trim()
  if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
  // the last Max-Age, else the last Expires, decides (RFC 6265 section 5.3 step 3), each as a
  // browser reads it (5.2.1, 5.2.2): an Expires that is not a date, or a Max-Age that is not
  // digits after an optional "-", is ignored; so is the last Path (step 7), which keeps its case
  let maxAge: number | null = null
  let expires: number | null = null
  let path: string | null = null
  for (const m of line.slice(end).matchAll(/;\s*(max-age|expires|path)\s*=\s*([^;]*)/gi)) {
    const attr = m[1]!.toLowerCase()
    const v = m[2]!.trim()
    if (attr === 'path') path = v
    else if (attr === 'max-age') {
      if (/^-?\d+$/.test(v)) maxAge = Number(v)
    } else {
      const at = parseCookieDate(v)
      if (at !== null) expires = at
    }
  }
  const deleted = value === '' || (maxAge !== null ? maxAge <= 0 : expires !== null && expires < now)
  return { value, deleted, path: path !== null && path.startsWith('/') ? path : null }
}

/** RFC 6265 section 5.1.1's delimiter: %x09 / %x20-2F / %x3B-40 / %x5B-60 / %x7B-7E. */
const DATE_DELIMITERS = /[\x09\x20-\x2f\x3b-\x40\x5b-\x60\x7b-\x7e]+/
const DATE_TIME = /^(\d{1,2}):(\d{1,2}):(\d{1,2})(?:\D|$)/
const DATE_DAY = /^(\d{1,2})(?:\D|$)/
const DATE_YEAR = /^(\d{2,4})(?:\D|$)/
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec']

/**
 * A Set-Cookie `Expires` value as a browser reads it (ms since the epoch), or null when it is
 * not a cookie date (the attribute is then ignored, RFC 6265 section 5.2.1). The algorithm of
 * RFC 6265 section 5.1.1: the first token of each kind (time, day of month, month, year) wins,
 * whatever their order or the delimiters between them; a year of 70-99 is 19xx and one of 0-69
 * 20xx (Date.parse reads 50-69 as 19xx: a cookie expiring in 2050 would look deleted); a year
 * before 1601, an hour over 23, a minute or second over 59, or a day the month does not have
 * makes it no date. Times are UTC, whatever zone the text names.
 * Example: parseCookieDate('Fri, 21-Oct-50 07:28:00 GMT') -> Date.UTC(2050, 9, 21, 7, 28, 0).
 */
export function parseCookieDate(text: string): number | null {
  let time: RegExpExecArray | null = null
  let day = -1
  let month = -1
  let year = -1
  for (const token of text.split(DATE_DELIMITERS)) {
    if (token === '') continue
    let m: RegExpExecArray | null
    if (time === null && (m = DATE_TIME.exec(token)) !== null) time = m
    else if (day < 0 && (m = DATE_DAY.exec(token)) !== null) day = Number(m[1])
    else if (month < 0 && token.length >= 3 && MONTHS.includes(token.slice(0, 3).toLowerCase())) month = MONTHS.indexOf(token.slice(0, 3).toLowerCase())
    else if (year < 0 && (m = DATE_YEAR.exec(token)) !== null) year = Number(m[1])
  }
  if (time === null || day < 0 || month < 0 || year < 0) return null
  if (year >= 70 && year <= 99) year += 1900
  else if (year <= 69) year += 2000
  const [h, mi, sec] = [Number(time[1]), Number(time[2]), Number(time[3])]
  if (day < 1 || day > 31 || year < 1601 || h > 23 || mi > 59 || sec > 59) return null
  const at = Date.UTC(year, month, day, h, mi, sec)
  return new Date(at).getUTCDate() === day ? at : null // 31 Apr: no such date
}
