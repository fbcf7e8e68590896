// A small client of the Kubernetes API for discovery: GET a JSON document, or stream a watch's
// events. Layer 3 adapter on node:http/node:https (no client library: docs/kubernetes-discovery.md
// says why), the only file that talks to the API server. It knows nothing of EndpointSlices,
// retries or timers: list-watch.ts decides what to ask, when, and how long to wait.
import http from 'node:http'
import https from 'node:https'
import { systemClock, type Clock } from '../clock.js'

/**
 * Where the API server is and how to authenticate (from the service account or a kubeconfig:
 * kubernetes-credentials.ts). `token()` is called for every request, so a rotated projected
 * token is picked up. Example: `{ server: 'https://10.96.0.1:443', ca: '-----BEGIN ...',
 * cert: null, key: null, insecure: false, token: () => readFileSync(TOKEN, 'utf8').trim() }`.
 */
export interface ApiEndpoint {
  /** `https://host:port` (or `http://` for `kubectl proxy`), without a path. */
  readonly server: string
  /** PEM CA bundle to verify the server; null: the system's CAs. */
  readonly ca: string | null
  /** PEM client certificate and key (kubeconfig users), or null. */
  readonly cert: string | null
  readonly key: string | null
  /** Skip verification of the server's certificate (kubeconfig `insecure-skip-tls-verify`). */
  readonly insecure: boolean
  /** The bearer token for this request, or null for none. May throw (an unreadable token file). */
  readonly token: () => string | null
}

/**
 * A failed API call. `code`: 'EGONE' (410: the resourceVersion is too old, list again),
 * 'EHTTP' (another status: see `status`), 'EBADRESPONSE' (not the JSON expected), 'ETOKEN'
 * (the token could not be read), or the network's own code ('ECONNREFUSED', 'ECONNRESET',
 * 'ETIMEDOUT', 'ENOTFOUND', a TLS code such as 'UNABLE_TO_VERIFY_LEAF_SIGNATURE'). The
 * message names the request and, for statuses, the API's own message. `retryAfter`: how long
 * the server asked the client to wait before trying again, ms (a 429 or 5xx with a
 * `Retry-After` header, in seconds or as an HTTP date, or a `Status` with
 * `details.retryAfterSeconds`, as API Priority and Fairness sends), else null.
 * Example message: "GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices: 403 Forbidden: endpointslices.discovery.k8s.io is forbidden: ...".
 */
export class KubernetesApiError extends Error {
  readonly code: string
  readonly status: number | null
  readonly retryAfter: number | null
  constructor(message: string, code: string, status: number | null = null, cause?: unknown, retryAfter: number | null = null) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'KubernetesApiError'
    this.code = code
    this.status = status
    this.retryAfter = retryAfter
  }
}

/**
 * The wait a 429 or 5xx answer asks for, ms: its `Retry-After` header (delay-seconds, or an
 * HTTP date taken against `now`), else its `Status` body's `details.retryAfterSeconds`; null
 * for other statuses, or when neither is there or readable. Not capped (the caller caps).
 * Example: `retryAfterOf(429, '10', null, now)` -> 10000; `retryAfterOf(404, '10', null, now)` -> null.
 */
export function retryAfterOf(status: number, header: string | undefined, body: unknown, now: number): number | null {
  if (status !== 429 && !(status >= 500 && status <= 599)) return null
  const value = header?.trim() ?? ''
  if (/^\d+$/.test(value)) return Number(value) * 1000
  if (value !== '') {
    const at = Date.parse(value)
    if (Number.isFinite(at)) return Math.max(0, at - now)
  }
  const seconds = (body as { details?: { retryAfterSeconds?: unknown } } | null)?.details?.retryAfterSeconds
  return typeof seconds === 'number' && Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : null
}

/** One watch event as the API sends it: `{"type": "ADDED", "object": {...}}`. */
export interface WatchEvent {
  readonly type: string
  readonly object: unknown
}

export interface WatchHandlers {
  /** The server accepted the watch (200): from here on events stream. */
  onOpen(): void
  /** Bytes arrived (any, even part of a line): the connection is alive. */
  onData(): void
  /** Complete events of one chunk, in order. Throwing ends the watch with that error. */
  onEvents(events: readonly WatchEvent[]): void
}

/** Largest JSON document or watch line accepted, bytes (a Service's slices are far smaller). */
const MAX_BYTES = 64 * 1024 * 1024
/** Largest error body read to explain a status. */
const MAX_ERROR_BYTES = 64 * 1024

/**
 * Requests to one API server. Every call takes an AbortSignal: aborting rejects the call with
 * the signal's reason (the caller's timeouts and shutdown), and destroys the connection. The
 * clock only reads a `Retry-After` given as an HTTP date.
 *
 * Example:
 *   const api = new KubernetesApi(endpoint)
 *   const list = await api.get('/apis/discovery.k8s.io/v1/namespaces/default/endpointslices',
 *     { labelSelector: 'kubernetes.io/service-name=web' }, signal)
 *   await api.watch(path, { watch: '1', resourceVersion: '123', allowWatchBookmarks: 'true' }, signal,
 *     { onOpen: () => {}, onData: () => {}, onEvents: (events) => apply(events) })
 */
export class KubernetesApi {
  readonly #endpoint: ApiEndpoint
  readonly #clock: Clock

  constructor(endpoint: ApiEndpoint, clock: Clock = systemClock) {
    this.#endpoint = endpoint
    this.#clock = clock
  }

  /** The API server's origin, for messages. */
  get server(): string {
    return this.#endpoint.server
  }

  /** GET `path?query` and parse the 200 answer as JSON; any other status rejects. */
  async get(path: string, query: Readonly<Record<string, string>>, signal: AbortSignal): Promise<unknown> {
    const what = `GET ${path}`
    const res = await this.#request(what, path, query, signal)
    if (res.statusCode !== 200) throw await statusError(what, res, this.#clock.now())
    const body = await readBody(res, MAX_BYTES, what, signal)
    try {
      return JSON.parse(body.toString('utf8'))
    } catch (err) {
      throw new KubernetesApiError(`${what}: the answer is not JSON`, 'EBADRESPONSE', 200, err)
    }
  }

  /**
   * Opens a watch (`path?query`, the query carrying `watch=1`) and streams its events until the
   * server ends it (resolves) or it fails (rejects). A non-200 answer rejects with its status
   * (410 as 'EGONE').
   */
  async watch(path: string, query: Readonly<Record<string, string>>, signal: AbortSignal, handlers: WatchHandlers): Promise<void> {
    const what = `watch ${path}`
    const res = await this.#request(what, path, query, signal)
    if (res.statusCode !== 200) throw await statusError(what, res, this.#clock.now())
    handlers.onOpen()
    await new Promise<void>((resolve, reject) => {
      let pending = ''
      let failed = false
      let ended = false
      const fail = (err: unknown): void => {
        if (failed) return
        failed = true
        res.destroy()
        reject(err)
      }
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if (failed) return
        handlers.onData()
        pending += chunk
        const lines = pending.split('\n')
        pending = lines.pop()!
        if (pending.length > MAX_BYTES) return fail(new KubernetesApiError(`${what}: a line longer than ${MAX_BYTES} bytes`, 'EBADRESPONSE', 200))
        const events: WatchEvent[] = []
        for (const line of lines) {
          if (line.trim() === '') continue
          let event: unknown
          try {
            event = JSON.parse(line)
          } catch (err) {
            return fail(new KubernetesApiError(`${what}: an event is not JSON`, 'EBADRESPONSE', 200, err))
          }
          if (!isEvent(event)) return fail(new KubernetesApiError(`${what}: an event without type and object`, 'EBADRESPONSE', 200))
          events.push(event)
        }
        if (events.length === 0) return
        try {
          handlers.onEvents(events)
        } catch (err) {
          fail(err)
        }
      })
      res.on('end', () => {
        ended = true
        if (failed) return
        if (pending.trim() !== '') return fail(new KubernetesApiError(`${what}: the stream ended inside an event`, 'ECONNRESET', 200))
        resolve()
      })
      res.on('error', (err) => fail(signal.aborted ? signal.reason : networkError(what, err)))
      res.on('aborted', () => fail(signal.aborted ? signal.reason : new KubernetesApiError(`${what}: the connection was cut`, 'ECONNRESET', 200)))
      res.on('close', () => {
        if (!ended) fail(signal.aborted ? signal.reason : new KubernetesApiError(`${what}: the connection was cut`, 'ECONNRESET', 200))
      })
      signal.addEventListener('abort', () => fail(signal.reason), { once: true })
    })
  }

  #request(what: string, path: string, query: Readonly<Record<string, string>>, signal: AbortSignal): Promise<http.IncomingMessage> {
    const url = new URL(path, this.#endpoint.server)
    for (const [k, v] of Object.entries(query)) url.searchParams.set(k, v)
    let token: string | null
    try {
      token = this.#endpoint.token()
    } catch (err) {
      return Promise.reject(new KubernetesApiError(`${what}: cannot read the token: ${(err as Error).message}`, 'ETOKEN', null, err))
    }
    const e = this.#endpoint
    const headers: Record<string, string> = { accept: 'application/json', 'user-agent': 'tether' }
    if (token !== null && token !== '') headers['authorization'] = `Bearer ${token}`
    const secure = url.protocol === 'https:'
    return new Promise((resolve, reject) => {
      if (signal.aborted) return reject(signal.reason)
      const options: https.RequestOptions = {
        method: 'GET', headers, agent: false, signal,
        ...(secure ? { ca: e.ca ?? undefined, cert: e.cert ?? undefined, key: e.key ?? undefined, rejectUnauthorized: !e.insecure } : {}),
      }
      const req = (secure ? https : http).request(url, options, resolve)
      req.on('error', (err) => reject(signal.aborted ? signal.reason : networkError(what, err)))
      req.end()
    })
  }
}

function isEvent(value: unknown): value is WatchEvent {
  return typeof value === 'object' && value !== null && typeof (value as WatchEvent).type === 'string' && 'object' in value
}

function networkError(what: string, err: NodeJS.ErrnoException): KubernetesApiError {
  const code = typeof err.code === 'string' ? err.code : 'ECONNRESET'
  return new KubernetesApiError(`${what}: ${code === err.message ? code : `${err.message}`}`, code, null, err)
}

/** The error of a non-200 answer, with the API's own message (a `Status` body) when it has one. */
async function statusError(what: string, res: http.IncomingMessage, now: number): Promise<KubernetesApiError> {
  const status = res.statusCode ?? 0
  let detail = ''
  let body: unknown = null
  try {
    body = JSON.parse((await readBody(res, MAX_ERROR_BYTES, what, null)).toString('utf8')) as unknown
    const message = (body as { message?: unknown } | null)?.message
    if (typeof message === 'string') detail = `: ${message}`
  } catch {
    res.destroy() // not a Status, or too long: the status line says enough
  }
  const code = status === 410 ? 'EGONE' : 'EHTTP'
  const retryAfter = retryAfterOf(status, res.headers['retry-after'], body, now)
  return new KubernetesApiError(`${what}: ${status} ${http.STATUS_CODES[status] ?? ''}${detail}`.replace(/ +:/, ':'), code, status, undefined, retryAfter)
}

function readBody(res: http.IncomingMessage, max: number, what: string, signal: AbortSignal | null): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const cut = (err: KubernetesApiError): void => reject(signal?.aborted === true ? signal.reason : err)
    const chunks: Buffer[] = []
    let size = 0
    res.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > max) {
        res.destroy()
        reject(new KubernetesApiError(`${what}: an answer over ${max} bytes`, 'EBADRESPONSE', res.statusCode ?? null))
        return
      }
      chunks.push(chunk)
    })
    res.on('end', () => resolve(Buffer.concat(chunks)))
    res.on('error', (err) => cut(networkError(what, err)))
    res.on('aborted', () => cut(new KubernetesApiError(`${what}: the connection was cut`, 'ECONNRESET', res.statusCode ?? null)))
  })
}
