// What `tether check`, start-up and every reload read of the files a config names: its PEM
// files, and the kubeconfig of Kubernetes discovery as discovery will read it (so a missing or
// unusable one is a located config error, not a failure after start-up or at the next restart).
import type { ConfigFiles } from './index.js'
import { pemFiles } from '../tls/pem.js'
import { kubeconfigAccess } from '../upstream/kubernetes-credentials.js'

/** Example: `readConfigFile(path, process.env, configFiles)`. */
export const configFiles: ConfigFiles = {
  pem: (path, kind) => pemFiles.pem(path, kind),
  pair: (cert, key) => pemFiles.pair(cert, key),
  kubeconfig(path) {
    try {
      kubeconfigAccess(path)
      return null
    } catch (err) {
      // one line: a YAML error's excerpt and hint lines are left out
      const [first = '', second] = (err as Error).message.replace(/^Kubernetes discovery: /, '').split('\n')
      return first.endsWith(':') && second !== undefined ? `${first} ${second}` : first
    }
  },
}

/**
 * The files a config names, recorded and not read, for `tether check --syntax-only` (CI off the
 * machine that runs Tether, where /etc/tether-tls/tls.crt does not exist: promtool's `check
 * config --syntax-only`): validation takes `files` as it takes the real ones, and every file
 * passes (its path is still checked as a value); `named()` lists them once each, in the order met.
 * Example: after validating a config with `listen.tls` -> `["/etc/tether-tls/tls.crt", "/etc/tether-tls/tls.key"]`.
 */
export function unreadConfigFiles(): { readonly files: ConfigFiles; named(): readonly string[] } {
  const named = new Set<string>()
  const record = (path: string): null => {
    named.add(path)
    return null
  }
  return { files: { pem: record, pair: () => null, kubeconfig: record }, named: () => [...named] }
}
