// A Gateway API HTTPRoute's `sessionPersistence` (GEP-1619) to proxy.yaml settings: Cookie or
// Header persistence, its name, idle and absolute timeouts, the cookie lifetime type, and the
// backend Service of the rule. Pure.
import { formatDuration } from '../config/duration.js'
import { MAX_COOKIE_AGE_MS, MAX_DURATION_MS } from '../config/validate.js'
import { backendPort, COOKIE_SECRET, lineOf, type Backend, type Conversion, type Finding, type Manifest, type Setting } from './manifests.js'

const COOKIE_NAME = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/
const HEADER_NAME = COOKIE_NAME
const DAY_MS = 86_400_000

/**
 * Milliseconds of a Gateway API duration (GEP-2257: up to four `<n>h|m|s|ms` parts, e.g.
 * `1h30m`), or undefined when it is not one. Example: `gatewayDuration('1h30m')` -> 5400000.
 */
export function gatewayDuration(text: unknown): number | undefined {
  if (typeof text !== 'string' || !/^([0-9]{1,5}(h|m|s|ms)){1,4}$/.test(text)) return undefined
  let ms = 0
  for (const [, n, unit] of text.matchAll(/([0-9]+)(ms|h|m|s)/g)) ms += Number(n) * { h: 3_600_000, m: 60_000, s: 1_000, ms: 1 }[unit as 'h' | 'm' | 's' | 'ms']
  return ms
}

/**
 * Converts the first rule of an HTTPRoute that has `sessionPersistence` (null when no rule has
 * one); the other rules and backends are reported, as Tether fronts one set of pods.
 * Example: `{ type: Cookie, sessionName: session, idleTimeout: 30m, absoluteTimeout: 8h }` ->
 * affinity.key cookie, cookie.name "session", idle_timeout 30m, absolute_timeout 8h.
 */
export function convertHttpRoute(route: Manifest, manifests: readonly Manifest[]): (Conversion & { readonly backends: Backend[] }) | null {
  const rules: any[] = Array.isArray(route.obj['spec']?.rules) ? route.obj['spec'].rules : []
  const index = rules.findIndex((r) => r?.sessionPersistence !== undefined && r?.sessionPersistence !== null)
  if (index === -1) return null
  const sp = rules[index].sessionPersistence
  const at = (...path: string[]): string => lineOf(route, ['spec', 'rules', index, 'sessionPersistence', ...path])
  const settings: Setting[] = []
  const findings: Finding[] = []
  const field = (name: string, value: unknown): string => `${at(name)} sessionPersistence.${name}: ${JSON.stringify(value)}`
  const type = sp.type ?? 'Cookie'
  const name: unknown = sp.sessionName
  if (type === 'Header') {
    settings.push({ path: 'affinity.key', value: 'header', from: field('type', type), differs: 'Tether reads the header the client sends and places its value by hash; it never issues the header itself, so clients must send one (requests without it are spread by round robin)' })
    if (typeof name === 'string' && HEADER_NAME.test(name)) settings.push({ path: 'affinity.header.name', value: name, from: field('sessionName', name) })
    else {
      settings.push({ path: 'affinity.header.name', value: 'X-Session', from: `${at()} (no usable sessionName)`, differs: 'the Gateway chose a name of its own: set the header your clients send' })
      if (name !== undefined) findings.push({ at: at('sessionName'), what: `sessionName: ${JSON.stringify(name)}`, why: 'not a valid header name' })
    }
  } else if (type === 'Cookie') {
    settings.push({ path: 'affinity.key', value: 'cookie', from: field('type', type), differs: "Tether's cookie is signed and names the pod; the Gateway's cookie is not read, so each user is placed once more on their first request through Tether" })
    settings.push(COOKIE_SECRET)
    if (typeof name === 'string' && COOKIE_NAME.test(name)) settings.push({ path: 'affinity.cookie.name', value: name, from: field('sessionName', name) })
    else if (name !== undefined) findings.push({ at: at('sessionName'), what: `sessionName: ${JSON.stringify(name)}`, why: 'not a valid cookie name: Tether keeps its default name (tether)' })
  } else {
    findings.push({ at: at('type'), what: `type: ${JSON.stringify(type)}`, why: 'expected Cookie or Header: not converted' })
    return { settings, findings, backends: backendsOf(route, rules, index, manifests, findings) }
  }
  const idle = timeout(sp.idleTimeout, 'idleTimeout', field, at, findings)
  const absolute = timeout(sp.absoluteTimeout, 'absoluteTimeout', field, at, findings)
  if (idle !== undefined) {
    settings.push({
      path: 'affinity.idle_timeout', value: formatDuration(Math.min(idle, DAY_MS)), from: field('idleTimeout', sp.idleTimeout),
      ...(idle > DAY_MS ? { differs: "Tether's idle_timeout is at most 24h" } : {}),
    })
  } else if (absolute !== undefined) {
    settings.push({ path: 'affinity.idle_timeout', value: formatDuration(Math.min(absolute, DAY_MS)), from: field('absoluteTimeout', sp.absoluteTimeout), differs: 'no idleTimeout: the session is ended by absoluteTimeout only (idle_timeout set as long as Tether allows, at most 24h)' })
  } else {
    settings.push({ path: 'affinity.idle_timeout', value: '24h', from: `${at()} (no idleTimeout)`, differs: 'the Gateway API sets no idle expiry by default; 24h is the longest Tether allows' })
  }
  if (absolute !== undefined) {
    const effectiveIdle = Math.min(idle ?? absolute, DAY_MS)
    const differs = absolute < effectiveIdle ? 'raised to idle_timeout: Tether requires absolute_timeout >= idle_timeout'
      : absolute > MAX_DURATION_MS ? `lowered to ${formatDuration(MAX_DURATION_MS)} (24.8 days), the longest Tether allows: a user busy for longer is placed again once (their state follows with checkpoints)`
        : undefined
    settings.push({
      path: 'affinity.absolute_timeout', value: formatDuration(Math.min(Math.max(absolute, effectiveIdle), MAX_DURATION_MS)), from: field('absoluteTimeout', sp.absoluteTimeout),
      ...(differs === undefined ? {} : { differs }),
    })
  }
  if (type === 'Cookie') {
    const lifetime = sp.cookieConfig?.lifetimeType
    if (lifetime === 'Permanent' && absolute !== undefined) {
      settings.push({
        path: 'affinity.cookie.max_age', value: formatDuration(Math.min(absolute, MAX_COOKIE_AGE_MS)), from: `${at('cookieConfig', 'lifetimeType')} cookieConfig.lifetimeType: Permanent`,
        differs: absolute > MAX_COOKIE_AGE_MS ? `Max-Age is the absoluteTimeout, lowered to ${formatDuration(MAX_COOKIE_AGE_MS)} (400 days), the longest browsers keep` : 'Max-Age is the absoluteTimeout',
      })
    } else if (lifetime === 'Permanent') {
      findings.push({ at: at('cookieConfig', 'lifetimeType'), what: 'cookieConfig.lifetimeType: Permanent', why: 'without absoluteTimeout there is no lifetime to give the cookie: it stays a browser-session cookie' })
    } else if (lifetime !== undefined && lifetime !== 'Session') {
      findings.push({ at: at('cookieConfig', 'lifetimeType'), what: `cookieConfig.lifetimeType: ${JSON.stringify(lifetime)}`, why: 'expected Permanent or Session' })
    }
  } else if (sp.cookieConfig !== undefined) {
    findings.push({ at: at('cookieConfig'), what: 'cookieConfig', why: 'applies to Cookie persistence only' })
  }
  return { settings, findings, backends: backendsOf(route, rules, index, manifests, findings) }
}

function timeout(value: unknown, name: string, field: (n: string, v: unknown) => string, at: (...p: string[]) => string, findings: Finding[]): number | undefined {
  if (value === undefined || value === null) return undefined
  const ms = gatewayDuration(value)
  if (ms === undefined || ms === 0) {
    findings.push({ at: at(name), what: field(name, value).replace(/^\S+ /, ''), why: 'not a Gateway API duration > 0 (like 30m or 1h30m): not converted' })
    return undefined
  }
  return ms
}

/** The Service backends of the rule with persistence; other rules' backends are reported. */
function backendsOf(route: Manifest, rules: any[], index: number, manifests: readonly Manifest[], findings: Finding[]): Backend[] {
  const out: Backend[] = []
  const namespace = route.namespace
  const refs: any[] = Array.isArray(rules[index]?.backendRefs) ? rules[index].backendRefs : []
  refs.forEach((ref, j) => {
    const at = lineOf(route, ['spec', 'rules', index, 'backendRefs', j])
    if ((ref?.kind ?? 'Service') !== 'Service' || (ref?.group ?? '') !== '' || typeof ref?.name !== 'string') {
      findings.push({ at, what: `backendRef ${JSON.stringify(ref?.name)} (${ref?.group ?? ''}/${ref?.kind ?? 'Service'})`, why: 'only Service backends are discovered' })
      return
    }
    const { port, note } = backendPort(manifests, ref.name, ref.namespace ?? namespace, { number: ref.port })
    out.push({ service: ref.name, namespace: ref.namespace ?? namespace, port, from: at, ...(note === undefined ? {} : { portNote: note }) })
  })
  if (refs.some((r) => r?.weight !== undefined && r?.weight !== null) && refs.length > 1) {
    findings.push({ at: lineOf(route, ['spec', 'rules', index, 'backendRefs']), what: 'backendRefs weights', why: 'Tether weights pods, not Services (discovery.kubernetes.weight_annotation): the weights were not converted' })
  }
  rules.forEach((rule, i) => {
    if (i !== index && Array.isArray(rule?.backendRefs) && rule.backendRefs.length > 0) {
      findings.push({ at: lineOf(route, ['spec', 'rules', i]), what: `rule ${i + 1} (no sessionPersistence)`, why: 'Tether fronts one set of pods: keep this rule on the Gateway, pointing where it did' })
    }
  })
  return out
}
