// The Kubernetes objects that run Tether as an ingress tier, for `tether import --manifests`:
// the same objects as deploy/kubernetes/ingress/tether (a test keeps them equal), plus the
// ConfigMap holding the imported proxy.yaml, in the application's namespace (or in none, for
// `kubectl apply -n X` to place). Pure: returns plain objects; the caller writes them as YAML.

/** The labels of every Tether object (and the selector of its pods). */
export const TETHER_LABELS = Object.freeze({ 'app.kubernetes.io/name': 'tether', 'app.kubernetes.io/component': 'ingress' })

export interface TetherManifestOptions {
  /**
   * Namespace of every object (the application's: the Role must be where its EndpointSlices
   * are); null writes none, so `kubectl apply -n X` (or the context's namespace) places them,
   * the RoleBinding's ServiceAccount subject included (RBAC reads a subject without a namespace
   * as the binding's own).
   */
  readonly namespace: string | null
  /** The proxy.yaml text for the ConfigMap tether-config. */
  readonly proxyYaml: string
  /** The container image, e.g. `ghcr.io/example/tether:0.1.0`. */
  readonly image: string
}

type Obj = Record<string, unknown>

/**
 * ServiceAccount, Role and RoleBinding (EndpointSlices get/list/watch), ConfigMap, Deployment,
 * Service, PodDisruptionBudget and NetworkPolicy for Tether, in that order.
 * Example: `tetherManifests({ namespace: 'shop', proxyYaml, image: 'ghcr.io/example/tether:0.1.0' })[4].kind` -> 'Deployment'.
 */
export function tetherManifests(options: TetherManifestOptions): Obj[] {
  const ns = options.namespace
  const meta = (name: string): Obj => ({ name, ...(ns === null ? {} : { namespace: ns }), labels: { ...TETHER_LABELS } })
  return [
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta('tether') },
    { apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'Role', metadata: meta('tether-discovery'), rules: DISCOVERY_RULES },
    {
      apiVersion: 'rbac.authorization.k8s.io/v1', kind: 'RoleBinding', metadata: meta('tether-discovery'),
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'tether-discovery' },
      subjects: [{ kind: 'ServiceAccount', name: 'tether', ...(ns === null ? {} : { namespace: ns }) }],
    },
    { apiVersion: 'v1', kind: 'ConfigMap', metadata: meta('tether-config'), data: { 'proxy.yaml': options.proxyYaml } },
    { apiVersion: 'apps/v1', kind: 'Deployment', metadata: meta('tether'), spec: deploymentSpec(options.image) },
    {
      apiVersion: 'v1', kind: 'Service', metadata: meta('tether'),
      spec: { type: 'ClusterIP', selector: { ...TETHER_LABELS }, ports: [{ name: 'http', port: 80, targetPort: 'http', protocol: 'TCP' }, { name: 'https', port: 443, targetPort: 'https', protocol: 'TCP' }] },
    },
    { apiVersion: 'policy/v1', kind: 'PodDisruptionBudget', metadata: meta('tether'), spec: { minAvailable: 1, selector: { matchLabels: { ...TETHER_LABELS } } } },
    { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: meta('tether'), spec: networkPolicySpec() },
  ]
}

/** What discovery.kubernetes reads: the EndpointSlices of the namespace. */
const DISCOVERY_RULES = [{ apiGroups: ['discovery.k8s.io'], resources: ['endpointslices'], verbs: ['get', 'list', 'watch'] }]

function deploymentSpec(image: string): Obj {
  const secret = (name: string, optional = false): Obj => ({
    name, valueFrom: { secretKeyRef: { name: 'tether-secrets', key: name, ...(optional ? { optional: true } : {}) } },
  })
  return {
    replicas: 2,
    revisionHistoryLimit: 5,
    selector: { matchLabels: { ...TETHER_LABELS } },
    strategy: { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } },
    template: {
      metadata: { labels: { ...TETHER_LABELS } },
      spec: {
        serviceAccountName: 'tether',
        automountServiceAccountToken: true,
        terminationGracePeriodSeconds: 30,
        securityContext: { runAsNonRoot: true, runAsUser: 1000, runAsGroup: 1000, seccompProfile: { type: 'RuntimeDefault' } },
        topologySpreadConstraints: [{
          maxSkew: 1, topologyKey: 'kubernetes.io/hostname', whenUnsatisfiable: 'ScheduleAnyway',
          labelSelector: { matchLabels: { ...TETHER_LABELS } },
        }],
        containers: [{
          name: 'tether',
          image,
          imagePullPolicy: 'IfNotPresent',
          args: ['--config', '/etc/tether/proxy.yaml'],
          ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }, { name: 'https', containerPort: 8443, protocol: 'TCP' }, { name: 'admin', containerPort: 9901, protocol: 'TCP' }],
          env: [secret('TETHER_SECRET'), secret('TETHER_ADMIN_TOKEN'), secret('REDIS_PASSWORD', true), { name: 'LOG_LEVEL', value: 'info' }],
          startupProbe: { httpGet: { path: '/healthz', port: 'admin' }, periodSeconds: 1, timeoutSeconds: 2, failureThreshold: 30 },
          readinessProbe: { httpGet: { path: '/readyz', port: 'admin' }, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 2 },
          livenessProbe: { httpGet: { path: '/healthz', port: 'admin' }, periodSeconds: 10, timeoutSeconds: 3, failureThreshold: 3 },
          lifecycle: { preStop: { exec: { command: ['sleep', '5'] } } },
          resources: { requests: { cpu: '150m', memory: '192Mi' }, limits: { cpu: '1', memory: '384Mi' } },
          securityContext: { runAsNonRoot: true, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } },
          volumeMounts: [{ name: 'config', mountPath: '/etc/tether', readOnly: true }, { name: 'tmp', mountPath: '/tmp' }, { name: 'tls', mountPath: '/etc/tether-tls', readOnly: true }],
        }],
        volumes: [
          { name: 'config', configMap: { name: 'tether-config', items: [{ key: 'proxy.yaml', path: 'proxy.yaml' }] } },
          { name: 'tmp', emptyDir: { sizeLimit: '16Mi' } },
          // the kubernetes.io/tls Secret for listen.tls (docs/tls.md); optional: plain HTTP starts without it
          { name: 'tls', secret: { secretName: 'tether-tls', optional: true } },
        ],
      },
    },
  }
}

function networkPolicySpec(): Obj {
  return {
    podSelector: { matchLabels: { ...TETHER_LABELS } },
    policyTypes: ['Ingress'],
    ingress: [
      { ports: [{ port: 'http', protocol: 'TCP' }, { port: 'https', protocol: 'TCP' }] },
      {
        from: [{ podSelector: {} }, { namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'monitoring' } } }],
        ports: [{ port: 'admin', protocol: 'TCP' }],
      },
    ],
  }
}
