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
 * The fold CGI, PHP, Rack and WSGI apply to header names: case-insensitive, `_` and `-` the
 * same (`X_Tether_State` and `x-tether-state` both become `HTTP_X_TETHER_STATE`), and `.` too:
 * PHP turns every `.` of a variable name into `_` as it registers `$_SERVER`
 * (`php_register_variable_ex`), so `X.Tether.State` is `HTTP_X_TETHER_STATE` to `php -S`, and
 * to PHP-FPM behind a server that passes the name on. Takes a lower-case name.
 * Example: foldHeaderName('x_tether-state') -> 'x-tether-state'; ('x.tether.state') -> 'x-tether-state'.
 */
export function foldHeaderName(lower: string): string {
  return hasFoldedByte(lower) ? lower.replace(FOLDED_BYTES, '-') : lower
}

/** The bytes of a header name a backend reads as `-` (see foldHeaderName). */
const FOLDED_BYTES = /[_.]/g

/**
 * Does this header name hold a byte a backend reads as `-` (`_` or `.`)? Two scans, no regex:
 * every request header name is asked. Example: hasFoldedByte('x.real.ip') -> true.
 */
export function hasFoldedByte(name: string): boolean {
  return name.indexOf('_') !== -1 || name.indexOf('.') !== -1
}

/**
 * Which header names are reserved: the `x-tether-` prefix, plus the configured checkpoint
 * header and its `-Version` (which may have any name, e.g. `X-App-State`). Built once from
 * config. A reserved name is removed from what clients send upstream and from what upstreams
 * send to clients, in every spelling (case, `_` or `.` for `-`).
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

  /** Is this lower-case header name reserved (in any `_`/`.`/`-` spelling)? */
  has(lower: string): boolean {
    const folded = foldHeaderName(lower)
    return folded.startsWith(RESERVED_PREFIX) || this.#exact.has(folded)
  }
}
