// Where the Kubernetes API server is and how to authenticate: the pod's service account (token,
// CA and namespace from the standard mount, host and port from the environment) or a kubeconfig.
// Layer 3: reads those files once at start-up (a kubeconfig through the config loader's YAML)
// and the token file again for every request (projected tokens rotate). Makes no request.
import { readFileSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import { isIPv6 } from 'node:net'
import { ConfigError, parseYamlDocuments, plainValue } from '../config/index.js'
import type { ApiEndpoint } from './kubernetes-api.js'

/** The standard service account mount in every pod that has a token. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount'

/** How to reach the API server, the namespace to default to, and a phrase for logs. */
export interface ClusterAccess {
  readonly endpoint: ApiEndpoint
  /** The pod's own namespace, or the kubeconfig context's (`default` when it names none). */
  readonly namespace: string
  /** Example: `'the in-cluster service account'`, `'kubeconfig /home/me/.kube/config (context kind-dev)'`. */
  readonly source: string
}

/**
 * Credentials that cannot be used: missing environment or files, or a kubeconfig Tether cannot
 * read or does not support. The message says what to do. Example: "Kubernetes discovery:
 * KUBERNETES_SERVICE_HOST is not set, so Tether is not running in a pod: set discovery.kubernetes.kubeconfig to run outside a cluster".
 */
export class KubernetesCredentialsError extends Error {
  readonly code = 'TETHER_KUBERNETES_CREDENTIALS'
  constructor(message: string, cause?: unknown) {
    super(`Kubernetes discovery: ${message}`, cause === undefined ? undefined : { cause })
    this.name = 'KubernetesCredentialsError'
  }
}

/**
 * The in-cluster access of a pod: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
 * verified with `<dir>/ca.crt`, the bearer token re-read from `<dir>/token` for each request,
 * the namespace from `<dir>/namespace`. Throws KubernetesCredentialsError when any is missing.
 * Example: `inClusterAccess(process.env)` -> `{ endpoint: { server: 'https://10.96.0.1:443', ... }, namespace: 'shop', ... }`.
 */
export function inClusterAccess(env: Readonly<Record<string, string | undefined>>, dir: string = SERVICE_ACCOUNT_DIR): ClusterAccess {
  const host = env['KUBERNETES_SERVICE_HOST']
  const port = env['KUBERNETES_SERVICE_PORT'] ?? '443'
  if (host === undefined || host === '') {
    throw new KubernetesCredentialsError('KUBERNETES_SERVICE_HOST is not set, so Tether is not running in a pod: set discovery.kubernetes.kubeconfig to run outside a cluster')
  }
  if (!/^\d{1,5}$/.test(port)) throw new KubernetesCredentialsError(`KUBERNETES_SERVICE_PORT is not a port: ${JSON.stringify(port)}`)
  const hint = '(a pod gets them with a ServiceAccount and automountServiceAccountToken: true; see deploy/kubernetes/ingress/tether/rbac.yaml)'
  const read = (name: string): string => {
    const path = `${dir}/${name}`
    try {
      return readFileSync(path, 'utf8')
    } catch (err) {
      throw new KubernetesCredentialsError(`cannot read the service account's ${name} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} ${hint}`, err)
    }
  }
  const tokenPath = `${dir}/token`
  read('token') // present now; re-read for every request
  const ca = read('ca.crt')
  const namespace = read('namespace').trim()
  return {
    endpoint: {
      server: `https://${isIPv6(host) ? `[${host}]` : host}:${port}`,
      ca, cert: null, key: null, insecure: false,
      token: () => readFileSync(tokenPath, 'utf8').trim(),
    },
    namespace: namespace === '' ? 'default' : namespace,
    source: 'the in-cluster service account',
  }
}

type Plain = Record<string, unknown>

/**
 * The access described by a kubeconfig file's current context: its cluster's `server`, CA
 * (`certificate-authority` file or `-data`) or `insecure-skip-tls-verify`, its user's `token`,
 * `tokenFile` (re-read per request) or client certificate (`client-certificate`/`client-key`,
 * files or `-data`), and its namespace. Relative file paths are relative to the kubeconfig.
 * Exec credential plugins and auth providers are not run: the error says to use `kubectl proxy`.
 * Example: `kubeconfigAccess('/home/me/.kube/config')`.
 */
export function kubeconfigAccess(path: string): ClusterAccess {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    throw new KubernetesCredentialsError(`cannot read the kubeconfig ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, err)
  }
  let root: unknown
  try {
    const docs = parseYamlDocuments(text, path)
    root = docs.length === 1 ? plainValue(docs[0]!) : null
  } catch (err) {
    throw new KubernetesCredentialsError(`the kubeconfig is not valid YAML:\n${err instanceof ConfigError ? err.message : (err as Error).message}`, err)
  }
  const fail = (message: string): never => { throw new KubernetesCredentialsError(`kubeconfig ${path}: ${message}`) }
  if (!isPlain(root)) return fail('expected one YAML map (apiVersion: v1, kind: Config)')
  const contextName = str(root['current-context']) ?? fail('no current-context')
  const named = (list: string, name: string): Plain => {
    const items = Array.isArray(root[list]) ? (root[list] as unknown[]) : []
    const item = items.find((i) => isPlain(i) && i['name'] === name) as Plain | undefined
    const body = item?.[list.slice(0, -1)]
    return isPlain(body) ? body : fail(`no ${list.slice(0, -1)} named ${JSON.stringify(name)} in ${list}`)
  }
  const context = named('contexts', contextName)
  const cluster = named('clusters', str(context['cluster']) ?? fail(`context ${contextName} names no cluster`))
  const userName = str(context['user'])
  const user = userName === null ? {} : named('users', userName)
  const base = dirname(resolve(path))
  const file = (key: string, value: unknown): string => {
    const p = resolve(base, str(value) ?? fail(`${key} must be a file path`))
    try {
      return readFileSync(p, 'utf8')
    } catch (err) {
      return fail(`cannot read ${key} ${p}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
  }
  const pem = (key: string, source: Plain): string | null => {
    const data = str(source[`${key}-data`])
    if (data !== null) return Buffer.from(data, 'base64').toString('utf8')
    return source[key] === undefined || source[key] === null ? null : file(key, source[key])
  }
  for (const unsupported of ['exec', 'auth-provider', 'username', 'password']) {
    if (user[unsupported] !== undefined && user[unsupported] !== null) {
      fail(`user ${userName} authenticates with ${unsupported}, which Tether does not support: run \`kubectl proxy\` beside Tether and use a kubeconfig whose cluster has server: http://127.0.0.1:8001 (no user), or give the user a token or client certificate`)
    }
  }
  const server = str(cluster['server']) ?? fail(`cluster of context ${contextName} has no server`)
  let url: URL
  try {
    url = new URL(server)
  } catch {
    return fail(`server ${JSON.stringify(server)} is not a URL`)
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') fail(`server ${server} must be https:// (or http:// for kubectl proxy)`)
  if (url.pathname !== '/' && url.pathname !== '') fail(`server ${server} has a path, which Tether does not support`)
  const staticToken = str(user['token'])
  const tokenFile = str(user['tokenFile'])
  const tokenPath = tokenFile === null ? null : resolve(base, tokenFile)
  if (tokenPath !== null) file('tokenFile', tokenPath)
  const cert = pem('client-certificate', user)
  const key = pem('client-key', user)
  if ((cert === null) !== (key === null)) fail(`user ${userName} needs both client-certificate and client-key`)
  return {
    endpoint: {
      server: url.origin,
      ca: pem('certificate-authority', cluster),
      cert, key,
      insecure: cluster['insecure-skip-tls-verify'] === true,
      token: tokenPath !== null ? () => readFileSync(tokenPath, 'utf8').trim() : () => staticToken,
    },
    namespace: str(context['namespace']) ?? 'default',
    source: `kubeconfig ${path} (context ${contextName})`,
  }
}

function isPlain(value: unknown): value is Plain {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function str(value: unknown): string | null {
  return typeof value === 'string' && value !== '' ? value : null
}
