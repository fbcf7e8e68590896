// Parses an admin request target (`/upstreams/app%2D0/drain?x`) into decoded path segments.
// Pure and total: any input gives segments or a 400/414 verdict, it never throws (a malformed
// percent-escape once ended the process). Knows no routes; the admin server matches them.
// Also how a target is written in a log line (session keys hidden).

/** Longest request target the admin listener reads, in characters. */
export const MAX_TARGET_LENGTH = 2048

/** The decoded path segments of a target, or why it is refused. */
export type AdminTarget =
  | { readonly ok: true; readonly segments: readonly string[] }
  | { readonly ok: false; readonly status: 400 | 414; readonly reason: string }

/**
 * Splits the path of an origin-form target at `/` first, then percent-decodes each segment,
 * so an encoded `%2F` stays inside its segment. The query is ignored. Refused: a target that
 * is not a path (`*`, absolute-form), longer than {@link MAX_TARGET_LENGTH} (414), with a
 * malformed escape or one that is not UTF-8, or with a `.` or `..` segment (raw or decoded:
 * the admin API has no paths to climb out of, so it never normalizes them).
 * Example: `parseAdminTarget('/upstreams/%5B%3A%3A1%5D%3A80/drain')` ->
 * `{ ok: true, segments: ['upstreams', '[::1]:80', 'drain'] }`;
 * `parseAdminTarget('/upstreams/%E0%A4%A/drain')` -> `{ ok: false, status: 400, ... }`.
 */
export function parseAdminTarget(target: string | undefined): AdminTarget {
  if (target === undefined || !target.startsWith('/')) return refuse(400, 'the request target must be a path')
  if (target.length > MAX_TARGET_LENGTH) return refuse(414, `the request target is longer than ${MAX_TARGET_LENGTH} characters`)
  const end = target.search(/[?#]/)
  const path = end < 0 ? target : target.slice(0, end)
  const segments: string[] = []
  for (const raw of path.slice(1).split('/')) {
    const segment = decodeSegment(raw)
    if (segment === null) return refuse(400, 'malformed percent-escape in the path')
    if (segment === '.' || segment === '..') return refuse(400, 'dot segments are not allowed in the path')
    segments.push(segment)
  }
  return { ok: true, segments }
}

/** decodeURIComponent, or null where it would throw (bad escape, not UTF-8). */
function decodeSegment(raw: string): string | null {
  if (!raw.includes('%')) return raw
  try {
    return decodeURIComponent(raw)
  } catch {
    return null
  }
}

function refuse(status: 400 | 414, reason: string): AdminTarget {
  return { ok: false, status, reason }
}

/**
 * The request target as logged: a session key replaced (it may be a client IP or an
 * application's cookie value), at most 256 characters.
 * Example: `loggedTarget('/sessions/10.0.0.7/move?to=app-1')` -> `'/sessions/<key>/move?to=app-1'`.
 */
export function loggedTarget(url: string | undefined): string {
  const u = (url ?? '').replace(/^\/sessions\/[^/?#]+/, '/sessions/<key>')
  return u.length > 256 ? `${u.slice(0, 256)}...` : u
}
