// Kubernetes discovery (layer 3 adapter): watches one Service's EndpointSlices (and, for weights,
// its annotation) and reports one upstream per serving pod, named after the pod, terminating pods
// as draining. Owns its list/watch loops only: never checks health or places, never starts
// itself, never reports an empty set (it keeps the last one and says so in status()), but for
// the pods the listing says are gone (re-created under their name, or their address another's).
import { systemClock, systemTimers, type Clock, type Timers } from '../clock.js'
import type { KubernetesDiscoveryConfig } from '../config/schema.js'
import { KubernetesApi, type KubernetesApiError } from './kubernetes-api.js'
import { inClusterAccess, kubeconfigAccess, SERVICE_ACCOUNT_DIR, type ClusterAccess } from './kubernetes-credentials.js'
import { EQUAL_WEIGHTS, parseWeights, sameUpstreams, SliceMerge, type EndpointSlice, type Weights } from './endpoint-slices.js'
import { ListWatch, type KubernetesObject, type ListWatchOptions } from './list-watch.js'
import { goneByUnready, type DiscoveredUpstream } from './upstream-set.js'

/**
 * What a problem is about, each reported and over on its own: the list/watch of the
 * EndpointSlices or of the Service (the API), the endpoints (none serving), the weight annotation.
 */
export type KubernetesProblemArea = 'EndpointSlices' | 'Service' | 'endpoints' | 'weights'

/**
 * A problem discovery reports while keeping the last known upstreams. `code`: the API's
 * ('ECONNREFUSED', 'EHTTP' with `status`, 'ETIMEDOUT', ...: see KubernetesApiError), or
 * 'EEMPTY' (the Service has no serving endpoint on the port), or 'EWEIGHTS' (the weight
 * annotation cannot be read; weights stay 1). Example message: "Kubernetes discovery of
 * Service shop/web: GET /apis/...: connect ECONNREFUSED 10.96.0.1:443; keeping the last 3 upstreams".
 */
export class KubernetesDiscoveryError extends Error {
  readonly code: string
  readonly area: KubernetesProblemArea
  readonly status: number | null
  constructor(message: string, code: string, area: KubernetesProblemArea, status: number | null = null, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'KubernetesDiscoveryError'
    this.code = code
    this.area = area
    this.status = status
  }
}

export interface KubernetesDiscoveryHooks {
  /**
   * The upstream set changed (ids, urls, weights, draining or unready flags). Never without a
   * serving or draining pod (pods listed not ready come as `unready`). Must not throw.
   */
  onChange(upstreams: readonly DiscoveredUpstream[]): void
  /**
   * A problem; the last known set stays. Called for every failed request and every slice or
   * Service event that leaves the problem in place, so it may repeat often (each is counted;
   * what to log is the caller's choice). `failures` counts the API's consecutive failures (1 for the others).
   */
  onError?(err: KubernetesDiscoveryError, failures: number): void
  /**
   * A problem of `area` reported through onError is over: the API answers again after
   * failures ('EndpointSlices' or 'Service'), a serving endpoint is back ('endpoints'), the
   * weight annotation reads again or is gone ('weights').
   */
  onRecover?(area: KubernetesProblemArea): void
  /**
   * The set the proxy uses now, maybe made before this watch ran (with workers, by the lead
   * before it) or holding an upstream that left its list and still drains: an upstream keeps
   * its url from it, as from this watch's own last set, while that address is still listed
   * (also one another source put there: DNS discovery's SRV target with the pod's name).
   */
  previous?(): readonly DiscoveredUpstream[]
}

export interface KubernetesDiscoveryDeps {
  /** For KUBERNETES_SERVICE_HOST/PORT (in-cluster). Default: an empty environment. */
  readonly env?: Readonly<Record<string, string | undefined>>
  readonly timers?: Timers
  /** For the pacing of watches and a Retry-After given as a date. Default the system clock. */
  readonly clock?: Clock
  /** The service account mount. Default /var/run/secrets/kubernetes.io/serviceaccount. */
  readonly serviceAccountDir?: string
  /** Loop tuning (timeouts, back-off, page size, jitter), for tests. */
  readonly tuning?: Omit<ListWatchOptions, 'path' | 'selector'>
}

interface Service extends KubernetesObject {
  readonly metadata?: KubernetesObject['metadata'] & { readonly annotations?: Readonly<Record<string, string>> | null }
}

/**
 * Discovery of a Service's pods through its `discovery.k8s.io/v1` EndpointSlices (label
 * `kubernetes.io/service-name`), by list and watch.
 *
 * - The constructor reads the credentials (service account files or the kubeconfig) and throws
 *   KubernetesCredentialsError when they cannot be used; it makes no request.
 * - `start()` lists once and resolves with the initial set (empty when that list failed or found
 *   no serving endpoint: reported through `onError`), then keeps watching; it rejects only
 *   when called twice or after `stop()` (a `stop()` while it runs makes it resolve with what it has).
 * - A pod's upstream id is its name (StatefulSet pods keep theirs across restarts); `ready`
 *   pods take new users, `serving` + `terminating` ones are reported `draining: true` (but
 *   take new users too while no pod is ready, as kube-proxy falls back to them), others are
 *   left out (membership drains them, then removes them after drain_timeout).
 * - A listing with no pod ready or serving keeps the last set (an API hiccup, a Service deleted
 *   by mistake), but for the pods it says are gone (goneByUnready: the name listed not ready
 *   under another pod uid, the address listed for another pod not ready): those leave, even
 *   when that leaves no upstream.
 * - With `weight_annotation`, the Service is watched too and its annotation sets weights.
 * - `status()` lists what is degraded now (API unreachable or failing, no endpoints, a bad
 *   annotation); [] when all is well.
 *
 * Example:
 *   const discovery = new KubernetesDiscovery({ service: 'web', namespace: null, port: 'http',
 *     kubeconfig: null, weight_annotation: null }, { onChange: (u) => membership.setDiscovered(u, 'kubernetes') },
 *     { env: process.env })
 *   await discovery.start() // [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1 }, ...]
 *   await discovery.stop()
 */
export class KubernetesDiscovery {
  readonly #config: KubernetesDiscoveryConfig
  readonly #hooks: KubernetesDiscoveryHooks
  readonly #access: ClusterAccess
  readonly #namespace: string
  readonly #slices: ListWatch<EndpointSlice>
  readonly #service: ListWatch<Service> | null
  #state: 'new' | 'running' | 'stopped' = 'new'
  #current: readonly DiscoveredUpstream[] = Object.freeze([])
  #weights: Weights = EQUAL_WEIGHTS
  #weightsProblem: string | null = null
  /** The merged view of the slices: an event re-reads and merges again the pods of the slice it replaced alone. */
  readonly #merge = new SliceMerge()
  #emptyProblem: string | null = null
  /** Each loop's failure until it works again (the slices' first in status()). */
  readonly #apiProblems: Record<'EndpointSlices' | 'Service', string | null> = { EndpointSlices: null, Service: null }

  constructor(config: KubernetesDiscoveryConfig, hooks: KubernetesDiscoveryHooks, deps: KubernetesDiscoveryDeps = {}) {
    this.#config = config
    this.#hooks = hooks
    this.#access = config.kubeconfig !== null ? kubeconfigAccess(config.kubeconfig) : inClusterAccess(deps.env ?? {}, deps.serviceAccountDir ?? SERVICE_ACCOUNT_DIR)
    this.#namespace = config.namespace ?? this.#access.namespace
    const clock = deps.clock ?? systemClock
    const api = new KubernetesApi(this.#access.endpoint, clock)
    const timers = deps.timers ?? systemTimers
    const ns = encodeURIComponent(this.#namespace)
    this.#slices = new ListWatch<EndpointSlice>(api, {
      ...deps.tuning,
      path: `/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`,
      selector: { labelSelector: `kubernetes.io/service-name=${config.service}` },
    }, this.#loopHooks('EndpointSlices', () => this.#update()), timers, clock)
    this.#service = config.weight_annotation === null ? null : new ListWatch<Service>(api, {
      ...deps.tuning,
      path: `/api/v1/namespaces/${ns}/services`,
      selector: { fieldSelector: `metadata.name=${config.service}` },
    }, this.#loopHooks('Service', (objects) => this.#readWeights(objects)), timers, clock)
  }

  /** `namespace/service`, for messages. */
  get target(): string {
    return `${this.#namespace}/${this.#config.service}`
  }

  /** Where the credentials came from, for the start-up log line. */
  get source(): string {
    return this.#access.source
  }

  /** Lists (the Service first, for its weights, then the slices) and keeps watching; resolves with the initial set. */
  async start(): Promise<readonly DiscoveredUpstream[]> {
    if (this.#state !== 'new') throw new Error(`KubernetesDiscovery: start() after ${this.#state === 'running' ? 'start()' : 'stop()'}`)
    this.#state = 'running'
    await this.#service?.start()
    // stop() meanwhile (a worker that became the lead while it shuts down) stopped the slices'
    // loop before it started: nothing to start, and no reason to reject
    if (this.#state !== 'running') return this.#current
    await this.#slices.start()
    return this.#current
  }

  /** Stops both loops (aborting requests in flight); no hook is called after. Idempotent. */
  async stop(): Promise<void> {
    this.#state = 'stopped'
    await Promise.all([this.#slices.stop(), this.#service?.stop()])
  }

  /** The last reported set (sorted by id, frozen; pods listed not ready among it as `unready`); no upstream that serves until a list found one (only pods listed not ready, if any). */
  current(): readonly DiscoveredUpstream[] {
    return this.#current
  }

  /** What is degraded now, one sentence each; [] when the API answers and the set is fine. */
  status(): string[] {
    return [this.#apiProblems.EndpointSlices, this.#apiProblems.Service, this.#emptyProblem, this.#weightsProblem].filter((p): p is string => p !== null)
  }

  #loopHooks<T>(what: 'EndpointSlices' | 'Service', onSync: (objects: ReadonlyMap<string, T>) => void) {
    return {
      onSync: (objects: ReadonlyMap<string, T>) => {
        if (this.#state === 'running') onSync(objects)
      },
      onError: (err: KubernetesApiError, failures: number) => {
        if (this.#state !== 'running') return
        const error = this.#error(`${what}: ${err.message}${hint(err)}`, err.code, what, err.status, err)
        this.#apiProblems[what] = error.message
        this.#hooks.onError?.(error, failures)
      },
      onRecover: () => {
        if (this.#state !== 'running') return
        // this loop's problem only: the other one may still fail (a Service refused by RBAC
        // while the slices answer again must not leave the slices' old error in its place)
        this.#apiProblems[what] = null
        this.#hooks.onRecover?.(what)
      },
    }
  }

  #readWeights(objects: ReadonlyMap<string, Service>): void {
    const annotation = this.#config.weight_annotation!
    const text = objects.get(this.#config.service)?.metadata?.annotations?.[annotation]
    let weights = EQUAL_WEIGHTS
    const had = this.#weightsProblem !== null
    this.#weightsProblem = null
    if (typeof text === 'string') {
      const parsed = parseWeights(text)
      if (parsed.ok) weights = parsed.weights
      else {
        this.#weightsProblem = `annotation ${annotation} on Service ${this.target} is invalid (${parsed.message}); every pod has weight 1`
        this.#hooks.onError?.(new KubernetesDiscoveryError(`Kubernetes discovery: ${this.#weightsProblem}`, 'EWEIGHTS', 'weights'), 1)
      }
    }
    if (had && this.#weightsProblem === null) this.#hooks.onRecover?.('weights')
    this.#weights = weights
    if (this.#slices.objects.size > 0) this.#update()
  }

  /** Recomputes the set from the slices; reports a change, or keeps the last set when empty. */
  #update(): void {
    const { upstreams, slicesWithoutPort } = this.#merge.upstreams(this.#slices.objects.values(), this.#config.port, this.#weights, [...(this.#hooks.previous?.() ?? []), ...this.#current])
    if (upstreams.every((u) => u.unready === true)) {
      // the last set is kept (an empty listing may be an API hiccup), but not a pod the listing
      // positively says is gone: its name listed not ready under another pod uid, or its address
      // listed for another pod not ready (a one-replica StatefulSet re-created: its url may lead
      // to the new, half-started pod). It leaves (membership moves its users at once), as Envoy's
      // EDS or ingress-nginx would drop it; with nothing left, requests get 503 until a pod is ready
      // The pods listed not ready are reported with it whenever they change, not only when a
      // kept pod leaves: they also tell membership about the pods it still drains (gone from
      // the listing earlier), whose address a new pod not ready may have now
      const gone = goneByUnready(upstreams)
      const kept = this.#current.filter((u) => u.unready !== true && !gone(u))
      const ids = new Set(kept.map((u) => u.id))
      const next = Object.freeze([...kept, ...upstreams.filter((u) => !ids.has(u.id))].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)))
      if (!sameUpstreams(next, this.#current)) {
        this.#current = next
        this.#hooks.onChange(next)
      }
      const why = slicesWithoutPort.length > 0
        ? `its EndpointSlices have no TCP port named ${JSON.stringify(this.#config.port)}`
        : this.#slices.objects.size === 0 ? 'it has no EndpointSlice (no Service of that name, or no pods selected)' : 'no endpoint is ready or serving'
      const error = this.#error(`Service ${this.target}: ${why}`, 'EEMPTY', 'endpoints')
      this.#emptyProblem = error.message
      this.#hooks.onError?.(error, 1)
      return
    }
    const wasEmpty = this.#emptyProblem !== null
    this.#emptyProblem = null
    if (!sameUpstreams(upstreams, this.#current)) {
      this.#current = upstreams
      this.#hooks.onChange(upstreams)
    }
    if (wasEmpty) this.#hooks.onRecover?.('endpoints')
  }

  #error(message: string, code: string, area: KubernetesProblemArea, status: number | null = null, cause?: unknown): KubernetesDiscoveryError {
    const n = this.#current.filter((u) => u.unready !== true).length
    return new KubernetesDiscoveryError(`Kubernetes discovery of Service ${this.target}: ${message}; keeping the last ${n} upstream${n === 1 ? '' : 's'}`, code, area, status, cause)
  }
}

/** What to do about an authorization failure. */
function hint(err: KubernetesApiError): string {
  if (err.status === 401) return ' (the token was refused)'
  if (err.status === 403) return ' (the ServiceAccount needs get, list and watch on endpointslices, and on services with weight_annotation: see deploy/kubernetes/ingress/tether/rbac.yaml)'
  return ''
}
