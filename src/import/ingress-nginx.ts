// ingress-nginx Ingress objects to proxy.yaml settings: the `nginx.ingress.kubernetes.io/*`
// annotations for affinity, hashing, balancing, timeouts, body size and retries, and the
// backend Service. Pure: a table of annotation rules; every annotation is either converted,
// converted with a note of how Tether differs, or reported as not converted (never dropped).
import { formatDuration } from '../config/duration.js'
import { MAX_COOKIE_AGE_MS, MAX_DURATION_MS } from '../config/validate.js'
import { backendPort, COOKIE_SECRET, lineOf, type Backend, type Conversion, type Finding, type Manifest, type Setting } from './manifests.js'
import { maskUrlCredentials, secretName } from '../secret-text.js'

const PREFIX = 'nginx.ingress.kubernetes.io/'
/** Cookie names Tether accepts (RFC 6265 token). */
const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/** What an Ingress gave: settings, findings, and its backend Services in order of appearance. */
export interface IngressConversion extends Conversion {
  readonly backends: Backend[]
  /** True when the Ingress set a stickiness of its own (affinity or upstream-hash-by). */
  readonly sticky: boolean
}

/**
 * Converts one ingress-nginx Ingress. `manifests` (all inputs) resolve numeric backend ports
 * through their Services.
 * Example: annotations `affinity: cookie`, `session-cookie-name: route`, `session-cookie-max-age: "3600"`
 * -> settings affinity.key cookie, affinity.cookie.name "route", affinity.cookie.max_age 1h,
 * affinity.idle_timeout 1h, affinity.absolute_timeout 1h.
 */
export function convertIngress(ingress: Manifest, manifests: readonly Manifest[]): IngressConversion {
  const settings: Setting[] = []
  const findings: Finding[] = []
  const annotations: Record<string, unknown> = ingress.obj['metadata']?.annotations ?? {}
  const at = (key: string): string => lineOf(ingress, ['metadata', 'annotations', key])
  // ingress-nginx trims the spaces around each line of a string value (a `|` block's final
  // newline too), not those of a number or a boolean (strconv.Atoi, ParseBool: " 60" is invalid)
  const get = (name: string): string | undefined => {
    const v = annotations[PREFIX + name]
    if (v === undefined || v === null) return undefined
    return UNTRIMMED.has(name) ? String(v) : String(v).split('\n').map((line) => line.trim()).join('\n').trim()
  }
  const from = (name: string): string => `${at(PREFIX + name)} ${PREFIX}${name}: ${JSON.stringify(get(name))}`
  const set = (path: string, value: Setting['value'], name: string, differs?: string): void =>
    void settings.push({ path, value, from: from(name), ...(differs === undefined ? {} : { differs }) })
  // any annotation is quoted (an auth-url may hold a password: masked, for stderr and the output's comment)
  const skip = (name: string, why: string): void => void findings.push({ at: at(PREFIX + name), what: shownAnnotation(PREFIX + name, get(name) ?? ''), why })
  const handled = new Set<string>()
  const use = (name: string): string | undefined => {
    handled.add(name)
    return get(name)
  }

  // stickiness: affinity (cookie) wins over upstream-hash-by, as in ingress-nginx
  const affinity = use('affinity')
  let sticky = false
  if (affinity !== undefined) {
    if (affinity === 'cookie') {
      sticky = true
      set('affinity.key', 'cookie', 'affinity', "Tether's cookie is signed and names the pod (not a hash of its address): a user's ingress-nginx cookie is not read, so each user is placed once more on their first request through Tether")
      settings.push(COOKIE_SECRET)
      cookieSettings(use, set, skip)
      if (get('session-cookie-path') === undefined) cookiePath(ingress, annotations, settings, findings, backends(ingress, manifests)[0]?.service)
    } else {
      skip('affinity', `only "cookie" affinity exists in ingress-nginx and Tether; ${JSON.stringify(affinity)} was not converted`)
    }
  } else {
    for (const name of ['affinity-mode', 'session-cookie-name', 'session-cookie-path', 'session-cookie-domain', 'session-cookie-max-age', 'session-cookie-expires', 'session-cookie-samesite', 'session-cookie-secure', 'session-cookie-change-on-failure', 'session-cookie-conditional-samesite-none']) {
      if (use(name) !== undefined) skip(name, 'has no effect without nginx.ingress.kubernetes.io/affinity: cookie (ignored by ingress-nginx too)')
    }
  }
  const hashBy = use('upstream-hash-by')
  if (hashBy !== undefined) {
    if (sticky) skip('upstream-hash-by', 'cookie affinity takes precedence over upstream-hash-by (in ingress-nginx too): not converted')
    else sticky = hashKey(hashBy, set, skip)
  }
  for (const name of ['upstream-hash-by-subset', 'upstream-hash-by-subset-size']) {
    if (use(name) !== undefined) skip(name, 'Tether hashes a key to one pod (rendezvous hashing over all pods): there are no subsets')
  }
  const balance = use('load-balance')
  if (balance !== undefined) {
    if (balance === 'round_robin' && !sticky) set('affinity.key', 'none', 'load-balance', 'weighted round robin over the pods, as ingress-nginx round_robin')
    else if (sticky) skip('load-balance', 'a sticky key decides the pod; the balancing algorithm only places users without one')
    else skip('load-balance', `${balance}: Tether has no ${balance === 'ewma' ? 'latency-weighted (EWMA)' : balance} balancing: with affinity.key none it uses weighted round robin; affinity.balance_factor bounds the load of sticky placement`)
  }

  // timeouts, body size, retries
  const seconds = (name: string, paths: string[], differs?: string): void => {
    const v = use(name)
    if (v === undefined) return
    const n = Number(v)
    if (!/^\d+$/.test(v) || n === 0) return skip(name, 'expected a whole number of seconds > 0')
    const lowered = n * 1000 > MAX_DURATION_MS ? `lowered to ${formatDuration(MAX_DURATION_MS)}, the longest Tether allows` : undefined
    for (const path of paths) set(path, formatDuration(Math.min(n * 1000, MAX_DURATION_MS)), name, [differs, lowered].filter((d) => d !== undefined).join('; ') || undefined)
  }
  seconds('proxy-connect-timeout', ['timeouts.connect'])
  seconds('proxy-read-timeout', ['timeouts.response_headers', 'timeouts.body_idle'], "nginx's read timeout bounds each wait for the upstream; Tether names the two waits apart: until the response head, and between body chunks")
  if (use('proxy-send-timeout') !== undefined) {
    const idle = settings.findLast((s) => s.path === 'timeouts.body_idle')?.value
    skip('proxy-send-timeout', `Tether has one bound for both directions, timeouts.body_idle (${idle === undefined ? 'its default 60s, as nginx' : `${idle} here, from proxy-read-timeout`}): an upstream that stops taking the request body that long gets the client a 504`)
  }
  const bodySize = use('proxy-body-size')
  if (bodySize !== undefined) {
    const bytes = sizeBytes(bodySize)
    if (bytes === undefined) skip('proxy-body-size', 'expected a size like 8m, 512k or 0')
    else if (!Number.isSafeInteger(bytes)) skip('proxy-body-size', 'larger than any body (over 2^53 bytes): no limit (limits.max_body_bytes: null, the default)')
    else set('limits.max_body_bytes', bytes === 0 ? null : bytes, 'proxy-body-size', bytes === 0 ? 'no limit' : 'a larger body is answered 413, as nginx does')
  }
  const tries = use('proxy-next-upstream-tries')
  if (tries !== undefined) {
    const n = Number(tries)
    if (!/^\d+$/.test(tries)) skip('proxy-next-upstream-tries', 'expected a whole number')
    else if (n === 0) set('retries.attempts', 10, 'proxy-next-upstream-tries', 'nginx 0 means no limit; Tether allows at most 10 extra attempts')
    else set('retries.attempts', Math.min(10, n - 1), 'proxy-next-upstream-tries', `nginx counts every try (${n}); Tether counts the extra attempts after the first${n - 1 > 10 ? ', at most 10' : ''}`)
  }
  const tryTimeout = use('proxy-next-upstream-timeout')
  if (tryTimeout !== undefined) {
    const n = Number(tryTimeout)
    if (!/^\d+$/.test(tryTimeout)) skip('proxy-next-upstream-timeout', 'expected a whole number of seconds')
    else if (n === 0) skip('proxy-next-upstream-timeout', 'nginx 0 means no limit; Tether keeps its default retries.try_duration (10s)')
    else set('retries.try_duration', formatDuration(Math.min(n * 1000, MAX_DURATION_MS)), 'proxy-next-upstream-timeout', n * 1000 > MAX_DURATION_MS ? `lowered to ${formatDuration(MAX_DURATION_MS)}, the longest Tether allows` : undefined)
  }
  if (use('proxy-next-upstream') !== undefined) {
    skip('proxy-next-upstream', 'Tether retries a failed connection, and an idempotent request whose connection dropped before the answer; never a timeout or a 5xx (a slow or failing pod is not retried into another), and no list of conditions to set')
  }

  // everything else under the prefix is listed, by name
  for (const key of Object.keys(annotations).sort()) {
    if (!key.startsWith(PREFIX)) continue
    const name = key.slice(PREFIX.length)
    if (handled.has(name)) continue
    const lower = name.toLowerCase()
    const known = lower !== name && (handled.has(lower) || OTHER[lower] !== undefined)
    skip(name, known
      ? `ingress-nginx ignores it too: annotation names are case-sensitive (${PREFIX}${lower}?)`
      : OTHER[name] ?? 'not a Tether setting: keep it on the Ingress in front of Tether if you still need it, or drop it')
  }
  for (const key of Object.keys(annotations).sort()) {
    if (key.startsWith(PREFIX) || IGNORED.has(key)) continue
    const why = key === 'kubernetes.io/ingress.class' ? 'the Ingress class: keep this Ingress in front of Tether (pointing at the Tether Service) if you still need it' : 'not an ingress-nginx annotation: not converted'
    findings.push({ at: at(key), what: shownAnnotation(key, String(annotations[key])), why })
  }

  // the Ingress itself: TLS and hosts stay in front; the backends are where the pods are
  const spec = ingress.obj['spec'] ?? {}
  if (Array.isArray(spec['tls']) && spec['tls'].length > 0) {
    findings.push({ at: lineOf(ingress, ['spec', 'tls']), what: 'spec.tls', why: 'not converted: keep TLS on this Ingress (or the load balancer) in front of Tether and point it at the Tether Service, or terminate TLS in Tether with listen.tls from the same certificate Secret (docs/tls.md)' })
  }
  const hosts = Array.isArray(spec['rules']) ? spec['rules'].map((r: any) => r?.host).filter((h: unknown) => typeof h === 'string') : []
  if (hosts.length > 0) {
    findings.push({ at: lineOf(ingress, ['spec', 'rules']), what: `hosts ${hosts.join(', ')}`, why: 'Tether does not route by host or path: keep the rules on this Ingress and send them to the Tether Service' })
  }
  return { settings, findings, backends: backends(ingress, manifests), sticky }
}

/** The backend Services of an Ingress (default backend first, then rules in order), deduplicated. */
function backends(ingress: Manifest, manifests: readonly Manifest[]): Backend[] {
  const spec = ingress.obj['spec'] ?? {}
  const found: { svc: any; path: (string | number)[] }[] = []
  // networking.k8s.io/v1: `backend.service: { name, port: { name | number } }`; the v1beta1
  // shape (extensions/, networking.k8s.io/, removed in Kubernetes 1.22 but still in many
  // charts): `backend: { serviceName, servicePort }`, the default backend at `spec.backend`
  const defaultBackend = spec['defaultBackend'] === undefined ? 'backend' : 'defaultBackend'
  if (serviceOf(spec[defaultBackend])) found.push({ svc: serviceOf(spec[defaultBackend]), path: ['spec', defaultBackend] })
  ;(Array.isArray(spec['rules']) ? spec['rules'] : []).forEach((rule: any, i: number) => {
    ;(Array.isArray(rule?.http?.paths) ? rule.http.paths : []).forEach((p: any, j: number) => {
      if (serviceOf(p?.backend)) found.push({ svc: serviceOf(p.backend), path: ['spec', 'rules', i, 'http', 'paths', j, 'backend'] })
    })
  })
  const out: Backend[] = []
  for (const { svc, path } of found) {
    if (typeof svc.name !== 'string') continue
    const { port, note } = backendPort(manifests, svc.name, ingress.namespace, svc.port ?? {})
    if (out.some((b) => b.service === svc.name && b.port === port)) continue
    out.push({ service: svc.name, namespace: ingress.namespace, port, from: lineOf(ingress, path), ...(note === undefined ? {} : { portNote: note }) })
  }
  return out
}

/** The Service of an Ingress backend, of either shape (see `backends`), as `{ name, port }`; undefined for none. */
function serviceOf(b: any): any {
  if (b?.service) return b.service
  if (b?.serviceName === undefined) return undefined
  return { name: b.serviceName, port: typeof b.servicePort === 'string' && !/^\d+$/.test(b.servicePort) ? { name: b.servicePort } : { number: b.servicePort } }
}

type Use = (name: string) => string | undefined
type Set = (path: string, value: Setting['value'], name: string, differs?: string) => void
type Skip = (name: string, why: string) => void

/** The session-cookie-* annotations of `affinity: cookie`. */
function cookieSettings(use: Use, set: Set, skip: Skip): void {
  const mode = use('affinity-mode')
  const rebalance = 'when pods are added, the users whose hash moves to a new pod move there once (with X-Tether-Moved; their state follows through the checkpoint protocol), the others stay'
  if (mode === 'balanced') set('affinity.on_scale_up', 'rebalance', 'affinity-mode', rebalance)
  else if (mode === 'persistent') set('affinity.on_scale_up', 'persistent', 'affinity-mode')
  else if (mode !== undefined) {
    // ingress-nginx balances with any mode but "persistent" (the value is case-sensitive)
    skip('affinity-mode', 'expected balanced or persistent: ingress-nginx used its default, balanced (affinity.on_scale_up: rebalance)')
    set('affinity.on_scale_up', 'rebalance', 'affinity', `affinity-mode not balanced or persistent: ingress-nginx's default, balanced; ${rebalance}`)
  } else set('affinity.on_scale_up', 'rebalance', 'affinity', `no affinity-mode: ingress-nginx's default is balanced; ${rebalance}`)

  const name = use('session-cookie-name')
  if (name !== undefined) {
    if (COOKIE_NAME.test(name)) set('affinity.cookie.name', name, 'session-cookie-name')
    else skip('session-cookie-name', 'not a valid cookie name')
  } else {
    set('affinity.cookie.name', 'INGRESSCOOKIE', 'affinity', "ingress-nginx's default cookie name INGRESSCOOKIE, kept so no second cookie appears (its old values are not read: see affinity.key)")
  }
  const path = use('session-cookie-path')
  if (path !== undefined) {
    if (/^\/[\x20-\x3A\x3C-\x7E]*$/.test(path)) set('affinity.cookie.path', path, 'session-cookie-path')
    else skip('session-cookie-path', 'expected a path starting with /')
  }
  const domain = use('session-cookie-domain')
  if (domain !== undefined && domain !== '') set('affinity.cookie.domain', domain, 'session-cookie-domain')

  const maxAge = use('session-cookie-max-age')
  const expires = use('session-cookie-expires')
  const lifetime = maxAge ?? expires
  const lifetimeName = maxAge !== undefined ? 'session-cookie-max-age' : 'session-cookie-expires'
  if (maxAge !== undefined && expires !== undefined) skip('session-cookie-expires', 'session-cookie-max-age is used (both set the same lifetime; Tether sends Max-Age only)')
  const sessionCookie = "ingress-nginx's cookie lives for the browser session with no idle expiry; Tether's idle_timeout is at most 24h (its longest): a user idle longer is placed again"
  if (lifetime !== undefined) {
    const n = Number(lifetime)
    if (!/^\d+$/.test(lifetime) || n === 0) {
      skip(lifetimeName, /^-?\d+$/.test(lifetime)
        ? 'expected a whole number of seconds > 0: with 0 or less ingress-nginx sent a cookie the browser drops at once (no stickiness); Tether keeps a browser-session cookie'
        : 'expected a whole number of seconds > 0 (ingress-nginx ignores such a value too: a browser-session cookie)')
      set('affinity.idle_timeout', '24h', 'affinity', sessionCookie)
    } else {
      const ms = n * 1000
      const idle = Math.min(n, 86_400)
      const maxAge = Math.min(ms, MAX_COOKIE_AGE_MS)
      const absolute = Math.min(ms, MAX_DURATION_MS)
      const differs = [
        lifetimeName === 'session-cookie-expires' ? 'sent as Max-Age (the same lifetime; Expires is the legacy form)' : null,
        ms > MAX_COOKIE_AGE_MS ? `lowered to ${formatDuration(MAX_COOKIE_AGE_MS)} (400 days), the longest Max-Age browsers keep` : null,
      ].filter((d) => d !== null).join('; ')
      set('affinity.cookie.max_age', formatDuration(maxAge), lifetimeName, differs === '' ? undefined : differs)
      set('affinity.idle_timeout', formatDuration(idle * 1000), lifetimeName, n > 86_400
        ? "ingress-nginx's cookie has no idle expiry; Tether's idle_timeout is at most 24h: a user idle longer is placed again (their state follows with checkpoints)"
        : "ingress-nginx's cookie has no idle expiry: with idle_timeout equal to the lifetime, only the lifetime ends a session")
      set('affinity.absolute_timeout', formatDuration(absolute), lifetimeName, ms > MAX_DURATION_MS
        ? `Tether's absolute_timeout is at most ${formatDuration(MAX_DURATION_MS)} (24.8 days): a user busy for longer than that is placed again once (their state follows with checkpoints), before the cookie's ${formatDuration(maxAge)} are over`
        : 'the session ends after this lifetime however busy the user is, like the cookie expiring in the browser')
    }
  } else {
    set('affinity.idle_timeout', '24h', 'affinity', sessionCookie)
  }
  const sameSite = use('session-cookie-samesite')
  if (sameSite !== undefined) {
    const v = { none: 'None', lax: 'Lax', strict: 'Strict' }[sameSite.toLowerCase()]
    if (v === undefined) skip('session-cookie-samesite', 'expected None, Lax or Strict')
    else set('affinity.cookie.same_site', v, 'session-cookie-samesite', v === 'None' ? 'SameSite=None requires Secure, which Tether sets' : undefined)
  }
  const secure = goBool(use('session-cookie-secure'))
  if (secure === 'false' && /^__(Secure|Host)-/.test(name ?? '')) {
    skip('session-cookie-secure', `a ${name!.startsWith('__Host-') ? '__Host-' : '__Secure-'} cookie is dropped by browsers without Secure: Tether keeps secure: true`)
  } else if (secure === 'false' && sameSite?.toLowerCase() !== 'none') {
    set('affinity.cookie.secure', false, 'session-cookie-secure', 'the cookie is sent over plain HTTP too; prefer HTTPS end to end and secure: true')
  } else if (secure === 'false') {
    skip('session-cookie-secure', 'SameSite=None requires Secure: Tether keeps secure: true')
  } else if (secure === 'true') {
    set('affinity.cookie.secure', true, 'session-cookie-secure')
  } else if (secure !== undefined) {
    skip('session-cookie-secure', 'expected "true" or "false"')
  } else {
    set('affinity.cookie.secure', true, 'affinity', 'ingress-nginx sets Secure only on HTTPS requests; Tether always does (the default): clients must reach it over HTTPS (TLS at the Ingress or load balancer in front)')
  }
  const change = goBool(use('session-cookie-change-on-failure'))
  if (change === 'true') {
    set('affinity.strict', false, 'session-cookie-change-on-failure', 'as ingress-nginx with true: a user whose pod fails is moved to another pod and their cookie names the new one (Tether also adds X-Tether-Moved and brings their checkpointed state)')
  } else if (change === 'false') {
    set('affinity.strict', false, 'session-cookie-change-on-failure', 'ingress-nginx with false retries elsewhere but keeps the cookie, so the user returns to the failed pod; Tether always moves the user (strict: true would answer 503 instead)')
  } else if (change !== undefined) {
    skip('session-cookie-change-on-failure', 'expected "true" or "false"')
  }
  if (use('session-cookie-conditional-samesite-none') !== undefined) {
    skip('session-cookie-conditional-samesite-none', 'Tether does not vary SameSite by User-Agent: it sends the same attributes to every browser')
  }
}

/**
 * "true" or "false" for the values Go's strconv.ParseBool reads (ingress-nginx's booleans: 1, t,
 * T, TRUE, true, True and their false forms), else the value as is. Example: `goBool('True')` -> 'true'.
 */
function goBool(value: string | undefined): string | undefined {
  if (value === undefined) return undefined
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(value)) return 'true'
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(value)) return 'false'
  return value
}

/**
 * Cookie affinity without session-cookie-path: ingress-nginx's cookie Path is the Ingress path
 * the request matched (`/` for none). One such path (to `service`, the backend Tether fronts) is carried over
 * as affinity.cookie.path; several, or a regular expression, are listed (Tether sends one Path).
 */
function cookiePath(ingress: Manifest, annotations: Record<string, unknown>, settings: Setting[], findings: Finding[], service: string | undefined): void {
  const spec = ingress.obj['spec'] ?? {}
  const paths: { path: string; at: string }[] = []
  if (serviceOf(spec['defaultBackend'] ?? spec['backend'])?.name === service) paths.push({ path: '/', at: lineOf(ingress, ['spec']) })
  ;(Array.isArray(spec['rules']) ? spec['rules'] : []).forEach((rule: any, i: number) => {
    ;(Array.isArray(rule?.http?.paths) ? rule.http.paths : []).forEach((p: any, j: number) => {
      if (serviceOf(p?.backend)?.name !== service) return
      paths.push({ path: typeof p.path === 'string' && p.path !== '' ? p.path : '/', at: lineOf(ingress, ['spec', 'rules', i, 'http', 'paths', j]) })
    })
  })
  const distinct = [...new Set(paths.map((p) => p.path))]
  if (distinct.length === 0 || (distinct.length === 1 && distinct[0] === '/')) return
  const regex = String(annotations[`${PREFIX}use-regex`] ?? '').trim() === 'true' || distinct.some((p) => /[\^$()[\]{}*+?|\\]/.test(p))
  if (String(annotations[`${PREFIX}session-cookie-name`] ?? '').trim().startsWith('__Host-')) {
    findings.push({ at: paths[0]!.at, what: `cookie Path (paths ${distinct.join(', ')})`, why: 'a __Host- cookie must have Path=/ (browsers rejected the one ingress-nginx sent with the Ingress path): Tether sends Path=/' })
    return
  }
  if (distinct.length === 1 && !regex && /^\/[\x20-\x3A\x3C-\x7E]*$/.test(distinct[0]!)) {
    settings.push({ path: 'affinity.cookie.path', value: distinct[0]!, from: `${paths[0]!.at} path: ${JSON.stringify(distinct[0])}`, note: "ingress-nginx's default cookie Path: the matched Ingress path (no session-cookie-path)" })
    return
  }
  findings.push({
    at: paths[0]!.at,
    what: `cookie Path (paths ${distinct.join(', ')})`,
    why: `without session-cookie-path, ingress-nginx gave the cookie the Ingress path each request matched (${distinct.join(', ')}${regex ? ', a regular expression' : ''}); Tether sends one Path: / (set affinity.cookie.path if the cookie must stay under one path)`,
  })
}

/** upstream-hash-by: `$remote_addr`, `$cookie_<name>`, `$http_<name>`; anything else is reported. */
function hashKey(value: string, set: Set, skip: Skip): boolean {
  const v = value.trim()
  if (v === '$remote_addr' || v === '$binary_remote_addr') {
    set('affinity.key', 'client_ip', 'upstream-hash-by', 'the client IP as Tether sees it: behind a load balancer, list its address range in affinity.client_ip.trusted_proxies so X-Forwarded-For is used')
    return true
  }
  // nginx variable names are letters, digits and "_" ($cookie_a$cookie_b is two variables)
  const cookie = /^\$cookie_([0-9A-Za-z_]+)$/.exec(v)
  if (cookie !== null) {
    set('affinity.key', 'app_cookie', 'upstream-hash-by', 'routes by the application cookie; a user without it yet is placed by client IP (app_cookie.fallback), and Tether learns which pod issued a new cookie, so the first requests stay together')
    set('affinity.app_cookie.name', cookie[1]!, 'upstream-hash-by')
    return true
  }
  const header = /^\$http_([a-z0-9_]+)$/i.exec(v)
  if (header !== null) {
    const name = header[1]!.split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1).toLowerCase()).join('-')
    set('affinity.key', 'header', 'upstream-hash-by', 'requests without the header are spread by weighted round robin')
    set('affinity.header.name', name, 'upstream-hash-by', `nginx's $http_${header[1]} is the header ${name} (underscores are dashes)`)
    return true
  }
  skip('upstream-hash-by', `${JSON.stringify(v)}: Tether hashes one key: $remote_addr, $cookie_<name> or $http_<name> convert; other variables and combinations do not`)
  return false
}

/** Bytes of an nginx size: `8m`, `512k`, `1g`, `1024` (1024-based). undefined when not a size. */
function sizeBytes(text: string): number | undefined {
  const m = /^(\d+)([kmg]?)$/i.exec(text.trim())
  if (m === null) return undefined
  return Number(m[1]) * ({ '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 } as const)[m[2]!.toLowerCase() as '' | 'k' | 'm' | 'g']
}

/** The annotations ingress-nginx reads as a number or a boolean, whose value it does not trim. */
const UNTRIMMED = new Set(['proxy-connect-timeout', 'proxy-send-timeout', 'proxy-read-timeout', 'proxy-next-upstream-timeout', 'proxy-next-upstream-tries', 'upstream-hash-by-subset-size', 'session-cookie-secure', 'session-cookie-change-on-failure', 'session-cookie-conditional-samesite-none', 'upstream-hash-by-subset'])

/**
 * An annotation not converted, as its finding (stderr and the output's comment) quotes it: the
 * value with a URL's password and a secret query parameter masked (an auth-url); not shown when
 * the annotation's name is a secret's (secret-text's rule: `example.com/api-token`), nor for a
 * snippet (raw nginx configuration, which may set a header with a credential:
 * `proxy_set_header Authorization "Bearer ..."`), its length said instead.
 * Example: `shownAnnotation("x/api-token", "s3cret")` -> `x/api-token: (6 characters, not shown: a secret's name)`.
 */
function shownAnnotation(key: string, value: string): string {
  const name = key.slice(key.lastIndexOf('/') + 1)
  if (secretName(name)) return `${key}: (${value.length} characters, not shown: a secret's name)`
  if (name.endsWith('-snippet')) return `${key}: (${value.split('\n').length} lines of nginx configuration, not shown)`
  return maskUrlCredentials(`${key}: ${JSON.stringify(value)}`)
}

/** Why some common annotations are not converted, when there is more to say than "not a Tether setting". */
const OTHER: Record<string, string> = {
  'ssl-redirect': 'TLS and redirects stay with the Ingress or load balancer in front of Tether',
  'force-ssl-redirect': 'TLS and redirects stay with the Ingress or load balancer in front of Tether',
  'rewrite-target': 'Tether forwards the path unchanged: keep rewrites on the Ingress in front',
  'use-regex': 'Tether does not route by path: keep path rules on the Ingress in front',
  'backend-protocol': 'Tether speaks HTTP/1.1 to the pods (no HTTPS, gRPC or FastCGI upstreams yet)',
  'proxy-buffering': 'Tether streams answers as they come (no buffering to set)',
  'proxy-buffer-size': 'Tether streams answers; the largest response head it accepts is fixed',
  'proxy-request-buffering': 'Tether streams request bodies; it keeps up to retries.replay_buffer_bytes for retries',
  'proxy-http-version': 'Tether speaks HTTP/1.1 to the pods',
  'enable-cors': 'Tether does not answer CORS itself: keep it on the Ingress, or in the app',
  'whitelist-source-range': 'Tether has no source allow-list: keep it on the Ingress or a NetworkPolicy',
  'allowlist-source-range': 'Tether has no source allow-list: keep it on the Ingress or a NetworkPolicy',
  'limit-rps': 'Tether has no rate limits: keep them on the Ingress in front',
  'limit-connections': 'Tether has no rate limits: keep them on the Ingress in front',
  'configuration-snippet': 'raw nginx configuration cannot be converted',
  'server-snippet': 'raw nginx configuration cannot be converted',
  'auth-url': 'Tether does no authentication: keep it on the Ingress in front',
  'auth-type': 'Tether does no authentication: keep it on the Ingress in front',
  'auth-secret': 'Tether does no authentication: keep it on the Ingress in front',
  'canary': 'Tether has no canary split: run the canary as its own Service',
  'affinity-canary-behavior': 'Tether has no canary split',
  'service-upstream': 'Tether always sends to pods (EndpointSlices), never to the Service IP',
  'upstream-vhost': 'use forwarding.preserve_host: false to send the pod address as Host, or keep the Host rewrite on the Ingress',
  'x-forwarded-prefix': 'Tether sets X-Forwarded-For, -Proto and -Host (forwarding.x_forwarded), not -Prefix',
}

/** kubectl's copy of the whole object: not a setting, so not listed. */
const IGNORED = new Set(['kubectl.kubernetes.io/last-applied-configuration'])
