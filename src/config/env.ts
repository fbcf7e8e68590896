// `${VAR}` / `${VAR:-default}` substitution inside one config string value; `$${` is a literal `${`.
// Pure: the environment is passed in, never read from process.env here. It works on one
// already-parsed scalar, so a substituted value can never add YAML structure.

/** Result of substituting one string. `substituted` is true if at least one variable was replaced. */
export interface Substitution {
  readonly value: string
  readonly substituted: boolean
  /** One message per bad reference, e.g. `environment variable PORT is not set ...`. */
  readonly errors: readonly string[]
}

export type Env = Readonly<Record<string, string | undefined>>

const REFERENCE = /\$\$\{|\$\{([^}]*)\}|\$\{/g
const BODY = /^([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?$/s

/**
 * Replaces `${NAME}` by `env.NAME` and `${NAME:-default}` by `env.NAME`, or by `default` when
 * NAME is unset or empty (shell semantics). `$${` stands for a literal `${`. An unset NAME
 * without a default is an error, and so is a `${` in a default (references do not nest); the
 * reference is then left in place. `secret` (a password, token or secret key): an unset NAME
 * is told to be exported, not given a default in the file; there, and before an `@` (a URL's
 * password) in any value, an invalid reference is named by its place in the value, not quoted.
 * Example: `"http://${HOST:-127.0.0.1}:9001"` with env {} -> `"http://127.0.0.1:9001"`.
 */
export function substituteEnv(text: string, env: Env, secret = false): Substitution {
  if (!text.includes('${')) return { value: text, substituted: false, errors: [] }
  const errors: string[] = []
  let substituted = false
  const value = text.replace(REFERENCE, (match, body: string | undefined, offset: number) => {
    if (match === '$${') return '${'
    const ref = body === undefined ? undefined : BODY.exec(body)
    if (!ref) {
      // in a secret (`token: "x${hunter2"`, a password holding "${"), or before an `@` (a URL's
      // or address's password: `redis://u:x${hunter2@h:6379`), what follows "${" is the secret:
      // its place in the value is said instead
      const shown = secret || text.includes('@', offset) ? `at character ${offset + 1} of the value (not shown: ${secret ? "a secret's" : 'it may hold a password'})`
        : JSON.stringify(body === undefined ? text.slice(offset, offset + 40) : match)
      errors.push(
        `invalid variable reference ${shown}: expected \${NAME} or \${NAME:-default} (write $\${ for a literal \${)`,
      )
      return match
    }
    const [, name = '', fallback] = ref
    // `${A:-${B}}` would end at B's `}`: A's value and a stray `}`, or the text `${B}`
    if (fallback?.includes('${') === true) {
      errors.push(`the default of \${${name}:-...} holds a \${: references do not nest (write one variable, or a plain default)`)
      return match
    }
    const set = env[name]
    if (set !== undefined && !(fallback !== undefined && set === '')) {
      substituted = true
      return set
    }
    if (fallback !== undefined) {
      substituted = true
      return fallback
    }
    // a secret's default would be written in the file: the same public text on every install
    errors.push(secret
      ? `environment variable ${name} is not set: export it (from a Kubernetes Secret, or \`export ${name}=$(openssl rand -hex 32)\`); a default written in the file would be public`
      : `environment variable ${name} is not set (write \${${name}:-default} to give a default)`)
    return match
  })
  return { value, substituted, errors }
}
