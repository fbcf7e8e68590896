// The one table of header names Tether reserves, and the rule that recognises them in every
// spelling a backend might fold together. Layer 0 vocabulary plus one pure predicate: no I/O.
// The same predicate guards both directions (client -> upstream, upstream -> client) on every
// transport; nothing else in src/ spells these names.

/** Headers Tether itself sends upstream or to clients (lower case). */
export const TETHER_HEADER = {
  /** The user's session epoch, on every request sent upstream. */
  epoch: 'x-tether-epoch',
  /** `from=<id>; reason=<dead|drain|rebalance|spill|admin|restart>; epoch=<n>` on the first request after a move. */
  moved: 'x-tether-moved',
  /** The moved user's newest checkpoint (`state.rehydrate: header`). */
  rehydrate: 'x-tether-rehydrate',
  /** `delivered`, `none` (no state stored) or `unavailable` (the store could not be read in time). */
  rehydrateStatus: 'x-tether-rehydrate-status',
  /** The upstream the moved user came from, next to the rehydrated state. */
  previousUpstream: 'x-tether-previous-upstream',
  /** The upstream that served the answer (`forwarding.upstream_header`, debugging). */
  upstream: 'x-tether-upstream',
} as const

/** Every name starting with this (after folding) is Tether's. */
export const RESERVED_PREFIX = 'x-tether-'

/**
 * The fold backends apply to header names, at its widest: case-insensitive, and every byte other
 * than a letter, a digit or `-` read as `-`. CGI, PHP, Rack and WSGI read `_` and `-` alike
 * (`X_Tether_State` and `x-tether-state` both become `HTTP_X_TETHER_STATE`); PHP turns every `.`
 * of a variable name into `_` as it registers `$_SERVER` (`php_register_variable_ex`); and
 * lighttpd (1.4.69, Debian 12) builds a CGI/FastCGI/SCGI variable name by turning EVERY byte that
 * is not a letter or digit into `_` (`http_cgi_encode_varname`), so behind it `X!Tether!State`,
 * `X~Tether~State` or `X|Tether|State` (any RFC 9110 tchar) is `HTTP_X_TETHER_STATE` to PHP-FPM.
 * A name is judged by what it folds to, so no spelling a backend merges escapes a rule. Takes
 * a lower-case name (an upper-case letter would fold to `-` too).
 * Example: foldHeaderName('x_tether-state') -> 'x-tether-state'; ('x.tether!state') -> 'x-tether-state'.
 */
export function foldHeaderName(lower: string): string {
  return hasFoldedByte(lower) ? lower.replace(FOLDED_BYTES, '-') : lower
}

/** The bytes of a lower-case header name a backend may read as `-` (see foldHeaderName). */
const FOLDED_BYTES = /[^a-z0-9-]/g
/** One of them (no `g` flag: `test` keeps no `lastIndex` between calls). */
const FOLDED_BYTE = /[^a-z0-9-]/

/**
 * Does this lower-case header name hold a byte a backend may read as `-` (anything but a
 * letter, a digit or `-`: what nginx's `ignore_invalid_headers` drops)? Every request header
 * name is asked: one precompiled test, no allocation.
 * Example: hasFoldedByte('x.real.ip') -> true; ('x~real~ip') -> true; ('x-real-ip') -> false.
 */
export function hasFoldedByte(lower: string): boolean {
  return FOLDED_BYTE.test(lower)
}

/**
 * Which header names are reserved: the `x-tether-` prefix, plus the configured checkpoint
 * header and its `-Version` (which may have any name, e.g. `X-App-State`). Built once from
 * config. A reserved name is removed from what clients send upstream and from what upstreams
 * send to clients, in every spelling (case, and any byte other than a letter or digit for `-`:
 * `_`, `.`, `!`, `~`, ...).
 *
 * Example: `new ReservedHeaders('X-App-State').has('x_app_state-version')` -> true;
 * `.has('x-tether_moved')` -> true; `.has('x-request-id')` -> false.
 */
export class ReservedHeaders {
  readonly #exact: ReadonlySet<string>

  constructor(stateHeader: string) {
    const state = foldHeaderName(stateHeader.toLowerCase())
    this.#exact = new Set([state, `${state}-version`])
  }

  /** Is this lower-case header name reserved (in any spelling that folds to it: `x!tether~state`)? */
  has(lower: string): boolean {
    const folded = foldHeaderName(lower)
    return folded.startsWith(RESERVED_PREFIX) || this.#exact.has(folded)
  }
}
