// A Service with `sessionAffinity: ClientIP` to proxy.yaml settings: client-IP affinity with
// the same sliding timeout, and the Service itself as the backend. Pure.
import { formatDuration } from '../config/duration.js'
import { backendPort, lineOf, type Backend, type Conversion, type Manifest } from './manifests.js'

/** Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3h). */
const DEFAULT_TIMEOUT_SECONDS = 10_800

/**
 * Converts a Service with ClientIP affinity (null for one without: nothing to convert).
 * Example: `sessionAffinity: ClientIP`, `timeoutSeconds: 1800` -> affinity.key client_ip,
 * affinity.idle_timeout 30m, backend { service: 'web', port: 'http' }.
 */
export function convertServiceAffinity(service: Manifest, manifests: readonly Manifest[]): (Conversion & { readonly backend: Backend | null }) | null {
  const spec = service.obj['spec'] ?? {}
  if (spec['sessionAffinity'] !== 'ClientIP') return null
  const at = lineOf(service, ['spec', 'sessionAffinity'])
  const settings: Conversion['settings'] = [{
    path: 'affinity.key', value: 'client_ip', from: `${at} Service ${service.name} sessionAffinity: ClientIP`,
    differs: "kube-proxy keeps its table on each node, so a client arriving through another node may land elsewhere; every Tether replica places a client IP the same way. Behind a load balancer, list its address range in affinity.client_ip.trusted_proxies so Tether reads X-Forwarded-For (kube-proxy saw the balancer's or a node's address). With browsers, consider affinity.key: cookie (one user per cookie instead of everyone behind one NAT on one pod)",
  }]
  const findings: Conversion['findings'] = []
  const raw = spec['sessionAffinityConfig']?.clientIP?.timeoutSeconds
  const seconds = typeof raw === 'number' && Number.isInteger(raw) && raw > 0 && raw <= 86_400 ? raw : DEFAULT_TIMEOUT_SECONDS
  if (raw !== undefined && seconds !== raw) {
    findings.push({ at: lineOf(service, ['spec', 'sessionAffinityConfig', 'clientIP', 'timeoutSeconds']), what: `timeoutSeconds: ${JSON.stringify(raw)}`, why: 'not 1..86400: the default 10800 (3h) is used' })
  }
  const timeoutAt = raw === undefined ? at : lineOf(service, ['spec', 'sessionAffinityConfig', 'clientIP', 'timeoutSeconds'])
  settings.push({
    path: 'affinity.idle_timeout', value: formatDuration(seconds * 1000),
    from: `${timeoutAt} sessionAffinityConfig.clientIP.timeoutSeconds: ${raw === undefined ? `(default ${DEFAULT_TIMEOUT_SECONDS})` : raw}`,
    differs: 'the same sliding idle expiry, refreshed by every request',
  })
  // an empty entry (`- ` with nothing after it) is null: not a port
  const ports: any[] = Array.isArray(spec['ports']) ? spec['ports'].filter((p: unknown) => typeof p === 'object' && p !== null) : []
  const first = ports[0]
  const backend: Backend | null = first === undefined ? null : (() => {
    const { port, note } = backendPort(manifests, service.name, service.namespace, { name: first['name'], number: first['port'] })
    return { service: service.name, namespace: service.namespace, port, from: lineOf(service, ['spec', 'ports']), ...(note === undefined ? {} : { portNote: note }) }
  })()
  if (ports.length > 1) findings.push({ at: lineOf(service, ['spec', 'ports']), what: `ports ${ports.map((p) => p?.name ?? p?.port).join(', ')}`, why: `Tether sends to one port of the pods: the first (${backend?.port}) was used` })
  return { settings, findings, backend }
}
