// How a discovered address becomes an upstream id and URL (shared by DNS and Kubernetes discovery).
import { isIPv6 } from 'node:net'

/**
 * The upstream id of an address: `address:port`, IPv6 in brackets.
 * Example: `upstreamId('10.0.0.1', 8080)` -> `'10.0.0.1:8080'`; `upstreamId('fd00::1', 80)` -> `'[fd00::1]:80'`.
 */
export function upstreamId(address: string, port: number): string {
  return isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`
}

/**
 * The upstream id of a discovered name (a pod's, or an SRV target's first label): the name,
 * but `_none` for `none`, the metrics' `upstream` label of requests no upstream answered (an
 * upstream of that id would merge its series with theirs; a static id `none` is refused).
 * `_none` is no pod name, host name label or static id (none starts with `_`), and it depends on
 * the name alone, so every replica, and DNS and Kubernetes discovery alike, name it the same.
 * Example: `nameId('web-0')` -> `'web-0'`; `nameId('none')` -> `'_none'`.
 */
export function nameId(name: string): string {
  return name === 'none' ? '_none' : name
}

/**
 * The upstream URL of an address.
 * Example: `upstreamUrl('10.0.0.1', 8080)` -> `'http://10.0.0.1:8080'`; `upstreamUrl('fd00::1', 80)` -> `'http://[fd00::1]:80'`.
 */
export function upstreamUrl(address: string, port: number): string {
  return `http://${upstreamId(address, port)}`
}

/**
 * The url of an upstream listed at `urls` (best first) that had `current`: `current` while it
 * is still listed, so a listing that reorders or adds addresses (dual-stack: IPv4 and IPv6)
 * does not move the upstream, else the first. Example: `keptUrl('http://10.0.0.6:80',
 * ['http://10.0.0.5:80', 'http://10.0.0.6:80'])` -> `'http://10.0.0.6:80'`.
 */
export function keptUrl(current: string | undefined, urls: readonly string[]): string {
  return current !== undefined && urls.includes(current) ? current : urls[0]!
}

/**
 * The `addresses` of an upstream listed at `urls` (see DiscoveredUpstream): sorted and
 * deduplicated when there are several, else undefined (its url alone).
 * Example: `listedAddresses(['http://10.0.0.6:80', 'http://[fd00::6]:80', 'http://10.0.0.6:80'])`
 * -> `['http://10.0.0.6:80', 'http://[fd00::6]:80']`; `listedAddresses(['http://10.0.0.6:80'])` -> undefined.
 */
export function listedAddresses(urls: readonly string[]): readonly string[] | undefined {
  const unique = [...new Set(urls)].sort()
  return unique.length > 1 ? Object.freeze(unique) : undefined
}

/** True when two upstreams' `addresses` are the same (absent on both, or the same sorted list). */
export function sameAddresses(a: readonly string[] | undefined, b: readonly string[] | undefined): boolean {
  return a === b || (a !== undefined && b !== undefined && a.length === b.length && a.every((x, i) => x === b[i]))
}
