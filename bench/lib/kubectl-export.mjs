// A synthetic `kubectl get all,ingress -A -o yaml` of a big cluster, as kubectl prints it: one
// `kind: List` document (its `kind` after `items`), every object with the fields kubectl adds
// (managedFields, last-applied-configuration, status, uid, resourceVersion), per application
// namespace a Deployment, its ReplicaSets and Pods, a Service and an Ingress. Deterministic (no
// randomness): the same options give the same text. For bench/import-large.mjs and the import
// tests; plain ESM, no dependencies.

/**
 * The export text. `apps` namespaces (app-0 ... app-N), each with `pods` Pods; the Ingress of
 * every `stickyEvery`-th namespace has cookie affinity (0: none has), the others none; every
 * `clientIpEvery`-th Service has `sessionAffinity: ClientIP` (0: none has).
 * Example: `kubectlExport({ apps: 900, pods: 4 })` is about 50 MB.
 */
export function kubectlExport({ apps, pods = 4, stickyEvery = 0, clientIpEvery = 0 }) {
  const out = ['apiVersion: v1\nitems:\n']
  for (let a = 0; a < apps; a++) {
    const ns = `app-${a}`
    const name = `web-${a}`
    out.push(deployment(ns, name, a))
    for (let r = 0; r < 2; r++) out.push(replicaSet(ns, name, a, r))
    for (let p = 0; p < pods; p++) out.push(pod(ns, name, a, p))
    out.push(service(ns, name, a, clientIpEvery > 0 && a % clientIpEvery === 0))
    out.push(ingress(ns, name, a, stickyEvery > 0 && a % stickyEvery === 0))
  }
  out.push('kind: List\nmetadata:\n  resourceVersion: ""\n')
  return out.join('')
}

const uid = (a, b) => `${hex(a, 8)}-${hex(b, 4)}-4${hex(a + b, 3)}-8${hex(a * 7 + b, 3)}-${hex(a * 31 + b, 12)}`
const hex = (n, width) => (n * 2654435761 >>> 0).toString(16).repeat(3).slice(0, width).padStart(width, '0')
const stamp = (a) => `2026-0${1 + (a % 9)}-1${a % 10}T0${a % 10}:1${a % 6}:2${a % 10}Z`

/** `text` with every line indented by `n` spaces, the first turned into a list entry (`- `). */
function item(text) {
  const lines = text.replace(/\n$/, '').split('\n')
  return `${lines.map((l, i) => (i === 0 ? `- ${l}` : `  ${l}`)).join('\n')}\n`
}

function managed(manager, op, fields) {
  return `  - apiVersion: apps/v1
    fieldsType: FieldsV1
    fieldsV1:
${fields.map((f) => `      ${f}`).join('\n')}
    manager: ${manager}
    operation: ${op}
    time: "2026-11-02T10:11:12Z"
`
}

const containerFields = [
  'f:spec:',
  '  f:containers:',
  '    k:{"name":"app"}:',
  '      .: {}',
  '      f:env:',
  '        .: {}',
  '        k:{"name":"APP_ENV"}:',
  '          .: {}',
  '          f:name: {}',
  '          f:value: {}',
  '      f:image: {}',
  '      f:imagePullPolicy: {}',
  '      f:name: {}',
  '      f:ports:',
  '        .: {}',
  '        k:{"containerPort":8080,"protocol":"TCP"}:',
  '          .: {}',
  '          f:containerPort: {}',
  '          f:name: {}',
  '          f:protocol: {}',
  '      f:readinessProbe:',
  '        .: {}',
  '        f:failureThreshold: {}',
  '        f:httpGet:',
  '          .: {}',
  '          f:path: {}',
  '          f:port: {}',
  '          f:scheme: {}',
  '      f:resources:',
  '        .: {}',
  '        f:limits:',
  '          .: {}',
  '          f:memory: {}',
  '        f:requests:',
  '          .: {}',
  '          f:cpu: {}',
  '          f:memory: {}',
]

function podSpec(a, indent) {
  const text = `containers:
- env:
  - name: APP_ENV
    value: production
  - name: APP_URL
    value: https://app-${a}.example.com
  image: registry.example.com/team-${a % 17}/web:1.${a % 40}.${a % 7}
  imagePullPolicy: IfNotPresent
  name: app
  ports:
  - containerPort: 8080
    name: http
    protocol: TCP
  readinessProbe:
    failureThreshold: 3
    httpGet:
      path: /healthz
      port: http
      scheme: HTTP
    periodSeconds: 10
    successThreshold: 1
    timeoutSeconds: 1
  resources:
    limits:
      memory: 512Mi
    requests:
      cpu: 100m
      memory: 256Mi
  terminationMessagePath: /dev/termination-log
  terminationMessagePolicy: File
dnsPolicy: ClusterFirst
restartPolicy: Always
schedulerName: default-scheduler
securityContext: {}
terminationGracePeriodSeconds: 30
`
  return text.replace(/\n$/, '').split('\n').map((l) => ' '.repeat(indent) + l).join('\n') + '\n'
}

function deployment(ns, name, a) {
  const applied = JSON.stringify({ apiVersion: 'apps/v1', kind: 'Deployment', metadata: { annotations: {}, labels: { app: name }, name, namespace: ns }, spec: { replicas: 4, selector: { matchLabels: { app: name } }, template: { metadata: { labels: { app: name } }, spec: { containers: [{ image: `registry.example.com/team-${a % 17}/web:1.${a % 40}.${a % 7}`, name: 'app', ports: [{ containerPort: 8080, name: 'http' }] }] } } } })
  return item(`apiVersion: apps/v1
kind: Deployment
metadata:
  annotations:
    deployment.kubernetes.io/revision: "${2 + (a % 5)}"
    kubectl.kubernetes.io/last-applied-configuration: |
      ${applied}
  creationTimestamp: "${stamp(a)}"
  generation: ${3 + (a % 5)}
  labels:
    app: ${name}
    app.kubernetes.io/part-of: shop-${a % 13}
  managedFields:
${managed('kubectl-client-side-apply', 'Update', ['f:metadata:', '  f:annotations:', '    .: {}', '    f:kubectl.kubernetes.io/last-applied-configuration: {}', '  f:labels:', '    .: {}', '    f:app: {}', ...containerFields])}${managed('kube-controller-manager', 'Update', ['f:status:', '  f:availableReplicas: {}', '  f:conditions: {}', '  f:observedGeneration: {}', '  f:readyReplicas: {}', '  f:replicas: {}', '  f:updatedReplicas: {}'])}  name: ${name}
  namespace: ${ns}
  resourceVersion: "${1000000 + a * 17}"
  uid: ${uid(a, 1)}
spec:
  progressDeadlineSeconds: 600
  replicas: 4
  revisionHistoryLimit: 10
  selector:
    matchLabels:
      app: ${name}
  strategy:
    rollingUpdate:
      maxSurge: 25%
      maxUnavailable: 25%
    type: RollingUpdate
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: ${name}
    spec:
${podSpec(a, 6)}status:
  availableReplicas: 4
  conditions:
  - lastTransitionTime: "${stamp(a)}"
    lastUpdateTime: "${stamp(a)}"
    message: Deployment has minimum availability.
    reason: MinimumReplicasAvailable
    status: "True"
    type: Available
  - lastTransitionTime: "${stamp(a)}"
    lastUpdateTime: "${stamp(a)}"
    message: ReplicaSet "${name}-${hex(a, 10)}" has successfully progressed.
    reason: NewReplicaSetAvailable
    status: "True"
    type: Progressing
  observedGeneration: ${3 + (a % 5)}
  readyReplicas: 4
  replicas: 4
  updatedReplicas: 4
`)
}

function replicaSet(ns, name, a, r) {
  return item(`apiVersion: apps/v1
kind: ReplicaSet
metadata:
  annotations:
    deployment.kubernetes.io/desired-replicas: "4"
    deployment.kubernetes.io/max-replicas: "5"
    deployment.kubernetes.io/revision: "${r + 1}"
  creationTimestamp: "${stamp(a + r)}"
  generation: ${r + 1}
  labels:
    app: ${name}
    pod-template-hash: ${hex(a + r, 10)}
  managedFields:
${managed('kube-controller-manager', 'Update', ['f:metadata:', '  f:annotations:', '    .: {}', '    f:deployment.kubernetes.io/desired-replicas: {}', '  f:labels:', '    .: {}', '    f:app: {}', '  f:ownerReferences:', '    .: {}', `    k:{"uid":"${uid(a, 1)}"}: {}`, ...containerFields])}  name: ${name}-${hex(a + r, 10)}
  namespace: ${ns}
  ownerReferences:
  - apiVersion: apps/v1
    blockOwnerDeletion: true
    controller: true
    kind: Deployment
    name: ${name}
    uid: ${uid(a, 1)}
  resourceVersion: "${1000000 + a * 17 + r}"
  uid: ${uid(a, 10 + r)}
spec:
  replicas: ${r === 1 ? 4 : 0}
  selector:
    matchLabels:
      app: ${name}
      pod-template-hash: ${hex(a + r, 10)}
  template:
    metadata:
      creationTimestamp: null
      labels:
        app: ${name}
        pod-template-hash: ${hex(a + r, 10)}
    spec:
${podSpec(a, 6)}status:
  observedGeneration: ${r + 1}
  replicas: ${r === 1 ? 4 : 0}
`)
}

function pod(ns, name, a, p) {
  return item(`apiVersion: v1
kind: Pod
metadata:
  creationTimestamp: "${stamp(a + p)}"
  generateName: ${name}-${hex(a + 1, 10)}-
  labels:
    app: ${name}
    pod-template-hash: ${hex(a + 1, 10)}
  managedFields:
${managed('kube-controller-manager', 'Update', ['f:metadata:', '  f:generateName: {}', '  f:labels:', '    .: {}', '    f:app: {}', '  f:ownerReferences:', '    .: {}', `    k:{"uid":"${uid(a, 11)}"}: {}`, ...containerFields])}${managed('kubelet', 'Update', ['f:status:', '  f:conditions:', '    k:{"type":"ContainersReady"}:', '      .: {}', '      f:lastProbeTime: {}', '      f:lastTransitionTime: {}', '      f:status: {}', '      f:type: {}', '  f:containerStatuses: {}', '  f:hostIP: {}', '  f:phase: {}', '  f:podIP: {}', '  f:podIPs:', '    .: {}', `    k:{"ip":"10.${a % 250}.${p}.${a % 200}"}:`, '      .: {}', '      f:ip: {}', '  f:startTime: {}'])}  name: ${name}-${hex(a + 1, 10)}-${hex(a * 5 + p, 5)}
  namespace: ${ns}
  ownerReferences:
  - apiVersion: apps/v1
    blockOwnerDeletion: true
    controller: true
    kind: ReplicaSet
    name: ${name}-${hex(a + 1, 10)}
    uid: ${uid(a, 11)}
  resourceVersion: "${2000000 + a * 17 + p}"
  uid: ${uid(a, 100 + p)}
spec:
${podSpec(a, 2)}  enableServiceLinks: true
  nodeName: node-${(a + p) % 60}
  preemptionPolicy: PreemptLowerPriority
  priority: 0
  serviceAccount: default
  serviceAccountName: default
  tolerations:
  - effect: NoExecute
    key: node.kubernetes.io/not-ready
    operator: Exists
    tolerationSeconds: 300
  - effect: NoExecute
    key: node.kubernetes.io/unreachable
    operator: Exists
    tolerationSeconds: 300
  volumes:
  - name: kube-api-access-${hex(a + p, 5)}
    projected:
      defaultMode: 420
      sources:
      - serviceAccountToken:
          expirationSeconds: 3607
          path: token
      - configMap:
          items:
          - key: ca.crt
            path: ca.crt
          name: kube-root-ca.crt
      - downwardAPI:
          items:
          - fieldRef:
              apiVersion: v1
              fieldPath: metadata.namespace
            path: namespace
status:
  conditions:
  - lastProbeTime: null
    lastTransitionTime: "${stamp(a + p)}"
    status: "True"
    type: Initialized
  - lastProbeTime: null
    lastTransitionTime: "${stamp(a + p)}"
    status: "True"
    type: Ready
  - lastProbeTime: null
    lastTransitionTime: "${stamp(a + p)}"
    status: "True"
    type: ContainersReady
  - lastProbeTime: null
    lastTransitionTime: "${stamp(a + p)}"
    status: "True"
    type: PodScheduled
  containerStatuses:
  - containerID: containerd://${hex(a * 3 + p, 64)}
    image: registry.example.com/team-${a % 17}/web:1.${a % 40}.${a % 7}
    imageID: registry.example.com/team-${a % 17}/web@sha256:${hex(a + p * 3, 64)}
    lastState: {}
    name: app
    ready: true
    restartCount: ${p % 3}
    started: true
    state:
      running:
        startedAt: "${stamp(a + p)}"
  hostIP: 10.240.${(a + p) % 60}.4
  phase: Running
  podIP: 10.${a % 250}.${p}.${a % 200}
  podIPs:
  - ip: 10.${a % 250}.${p}.${a % 200}
  qosClass: Burstable
  startTime: "${stamp(a + p)}"
`)
}

function service(ns, name, a, clientIp) {
  return item(`apiVersion: v1
kind: Service
metadata:
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: |
      {"apiVersion":"v1","kind":"Service","metadata":{"annotations":{},"name":"${name}","namespace":"${ns}"},"spec":{"ports":[{"name":"http","port":80,"targetPort":"http"}],"selector":{"app":"${name}"}}}
  creationTimestamp: "${stamp(a)}"
  labels:
    app: ${name}
  name: ${name}
  namespace: ${ns}
  resourceVersion: "${3000000 + a}"
  uid: ${uid(a, 7)}
spec:
  clusterIP: 10.96.${a % 250}.${a % 200}
  clusterIPs:
  - 10.96.${a % 250}.${a % 200}
  internalTrafficPolicy: Cluster
  ipFamilies:
  - IPv4
  ipFamilyPolicy: SingleStack
  ports:
  - name: http
    port: 80
    protocol: TCP
    targetPort: http
  selector:
    app: ${name}
  sessionAffinity: ${clientIp ? 'ClientIP\n  sessionAffinityConfig:\n    clientIP:\n      timeoutSeconds: 1800' : 'None'}
  type: ClusterIP
status:
  loadBalancer: {}
`)
}

function ingress(ns, name, a, sticky) {
  const affinity = sticky ? '    nginx.ingress.kubernetes.io/affinity: cookie\n    nginx.ingress.kubernetes.io/session-cookie-name: route\n' : ''
  return item(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  annotations:
${affinity}    nginx.ingress.kubernetes.io/proxy-body-size: 20m
    nginx.ingress.kubernetes.io/proxy-read-timeout: "120"
  creationTimestamp: "${stamp(a)}"
  generation: 1
  name: ${name}
  namespace: ${ns}
  resourceVersion: "${4000000 + a}"
  uid: ${uid(a, 9)}
spec:
  ingressClassName: nginx
  rules:
  - host: app-${a}.example.com
    http:
      paths:
      - backend:
          service:
            name: ${name}
            port:
              number: 80
        path: /
        pathType: Prefix
  tls:
  - hosts:
    - app-${a}.example.com
    secretName: app-${a}-tls
status:
  loadBalancer:
    ingress:
    - ip: 203.0.113.${a % 250}
`)
}
