#!/usr/bin/env node
// Process entry: argv, exit codes and signals. Loads the config, starts the composition
// root, and turns SIGTERM/SIGINT into a graceful stop. No proxy logic here.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CONFIG_WARNING, ConfigError, configWarnings, didYouMean, nearest, readConfigFile, readErrorReason, type Config } from './config/index.js'
import { configFiles } from './config/config-files.js'
import { formatDuration, parseDuration } from './config/duration.js'
import { convertManifests, ImportError, manifestText } from './import/convert.js'
import type { Tether } from './app.js'
import type { Logger } from './observability/logger.js'
import { drainUpstream, showSession, type AdminTarget } from './admin/admin-client.js'
import { workerCount } from './workers/worker-count.js'
import { EarlySignals } from './early-signals.js'
import { redisPasswordSettings, routeRedisConsole } from './redis/console-notices.js'
import { maskUrlCredentials } from './secret-text.js'

const USAGE = `Usage:
  tether [run] [--config <file>]
                             run the proxy (default file: $TETHER_CONFIG or config/proxy.yaml);
                             -c <file> and --config=<file> are the same option
  tether check <file>        validate a config file; exit 0 when valid, 1 when not
                             (also: tether check --config <file>)
  tether import [--manifests] [--image <ref>] <file.yaml>...
                             read Kubernetes manifests (ingress-nginx Ingress, Service with
                             ClientIP affinity, Gateway API HTTPRoute) and print a proxy.yaml
                             that reproduces their stickiness; --manifests prints the Tether
                             Deployment, Service, RBAC and ConfigMap instead. What was not
                             converted is listed in the output and on stderr.
  tether session <key> [--json] [--admin URL] [--token T]
                             where is this user: upstream, epoch, last move, checkpoint;
                             <key> as the access log's session field shows it, or raw
  tether drain <id> [--migrate] [--wait] [--timeout 5m] [--admin URL] [--token T]
                             drain an upstream (--migrate: its users move at their next
                             request after an idle gap); --wait returns once no session
                             remains or the timeout passed (exit 0: a preStop hook)
                             --admin defaults to $TETHER_ADMIN or http://127.0.0.1:9901,
                             --token to $TETHER_ADMIN_TOKEN
  tether --help, -h          show this help
  tether --version, -v       print the version

Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads the config (also done on file change).
Environment: LOG_LEVEL overrides log.level; \${VAR} in the config is read from the environment.
`

/** Parsed command line. */
type Command =
  | { kind: 'run'; config: string; configFrom: 'argument' | 'TETHER_CONFIG' | 'default' }
  | { kind: 'check'; config: string }
  | { kind: 'import'; files: string[]; manifests: boolean; image: string | undefined }
  | { kind: 'session'; admin: AdminTarget; key: string; json: boolean }
  | { kind: 'drain'; admin: AdminTarget; id: string; migrate: boolean; wait: boolean; timeout: number }
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'usage-error'; message: string }

/** The words `tether` takes first, for a "did you mean" on a mistyped one. */
const COMMANDS = ['run', 'check', 'import', 'session', 'drain'] as const

/** What other tools spell these as: `tether help`, `tether version`, `tether -V`. */
const FLAG_WORDS: Readonly<Record<string, string>> = { help: '--help', version: '--version', '-V': '--version', '-?': '--help' }

/** The options of one admin subcommand that the other takes: `tether session k --migrate`. */
const ADMIN_ONLY: Readonly<Record<string, 'session' | 'drain'>> = { '--json': 'session', '--migrate': 'drain', '--wait': 'drain' }

/**
 * A usage error for an argument nothing takes, with the option or command it is closest to:
 * `unknownArgument("--conifg", ["--config"])` -> `unknown argument "--conifg", did you mean "--config"?`.
 */
function unknownArgument(a: string, candidates: readonly string[]): Command {
  const name = a.startsWith('--') ? a.split('=')[0]! : a // `--confg=x`: the option's name
  const flag = FLAG_WORDS[a]
  const near = flag !== undefined ? `did you mean "${flag}"?` : /^-?-?[a-z][a-z-]*$/i.test(name) ? didYouMean(nearest(name, candidates)) : undefined
  return { kind: 'usage-error', message: `unknown argument "${a}"${near === undefined ? '' : `, ${near}`}` }
}

export function parseArgs(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): Command {
  const args = [...argv]
  if (args.includes('--help') || args.includes('-h')) return { kind: 'help' }
  if (args.includes('--version') || args.includes('-v')) return { kind: 'version' }
  if (args[0] === 'import') return parseImport(args.slice(1))
  if (args[0] === 'session' || args[0] === 'drain') return parseAdminCommand(args[0], args.slice(1), env)
  let kind: 'run' | 'check' = 'run'
  if (args[0] === 'check' || args[0] === 'run') kind = args.shift() as 'run' | 'check'
  let config: string | undefined
  while (args.length > 0) {
    const a = args.shift()!
    if (a === '--config' || a === '-c') {
      const v = args.shift()
      if (v === undefined || v === '') return { kind: 'usage-error', message: `${a} needs a file path` }
      config = v
    } else if (a.startsWith('--config=')) {
      config = a.slice('--config='.length)
      if (config === '') return { kind: 'usage-error', message: '--config needs a file path (--config=<file>)' }
    } else if (kind === 'check' && config === undefined && !a.startsWith('-')) {
      if (a === '') return { kind: 'usage-error', message: 'check needs a config file (an empty argument was given)' }
      config = a
    } else if (kind === 'check' && !a.startsWith('-')) {
      return { kind: 'usage-error', message: `check takes one config file: "${a}" is a second (check each on its own)` }
    } else if (kind === 'run' && config === undefined && !a.startsWith('-') && /\.ya?ml$/i.test(a)) {
      // `tether proxy.yaml`: the file is an option's value when running
      return { kind: 'usage-error', message: `unknown argument "${a}": to run with this file, write --config ${a} (to validate it: tether check ${a})` }
    } else {
      const unknown = unknownArgument(a, a.startsWith('-') ? ['--config', '--help', '--version'] : argv[0] === a ? COMMANDS : [])
      // a first word that is no command and near none: which there are
      return argv[0] === a && unknown.kind === 'usage-error' && !unknown.message.includes('did you mean') && !a.startsWith('-')
        ? { kind: 'usage-error', message: `${unknown.message} (commands: ${COMMANDS.join(', ')})` }
        : unknown
    }
  }
  if (kind === 'check' && config === undefined) return { kind: 'usage-error', message: 'check needs a config file' }
  if (kind === 'check') return { kind, config: config! }
  if (config !== undefined) return { kind, config, configFrom: 'argument' }
  const fromEnv = env['TETHER_CONFIG']
  return fromEnv !== undefined ? { kind, config: fromEnv, configFrom: 'TETHER_CONFIG' } : { kind, config: 'config/proxy.yaml', configFrom: 'default' }
}

function parseImport(args: string[]): Command {
  const files: string[] = []
  let manifests = false
  let image: string | undefined
  while (args.length > 0) {
    const a = args.shift()!
    if (a === '--manifests') manifests = true
    else if (a === '--image') {
      image = args.shift()
      if (image === undefined || image === '') return { kind: 'usage-error', message: '--image needs an image reference' }
    } else if (a.startsWith('--image=')) image = a.slice('--image='.length)
    else if (a.startsWith('-') && a !== '-') return unknownArgument(a, ['--manifests', '--image'])
    else if (a === '') return { kind: 'usage-error', message: 'import: a manifest file argument is empty' }
    // (its objects would each be read twice: the second reported as a second source of stickiness)
    else if (files.includes(a)) return { kind: 'usage-error', message: `import: ${a === '-' ? 'stdin (-)' : `"${a}"`} is named twice` }
    else files.push(a)
  }
  if (files.length === 0) return { kind: 'usage-error', message: 'import needs at least one manifest file' }
  return { kind: 'import', files, manifests, image }
}

/** `tether session <key> ...` and `tether drain <id> ...`: the admin API's client commands. */
function parseAdminCommand(kind: 'session' | 'drain', args: string[], env: Readonly<Record<string, string | undefined>>): Command {
  let url = env['TETHER_ADMIN'] ?? 'http://127.0.0.1:9901'
  let urlFrom = 'TETHER_ADMIN'
  let token = env['TETHER_ADMIN_TOKEN'] ?? null
  let tokenFrom = 'TETHER_ADMIN_TOKEN'
  let target: string | undefined
  let json = false
  let migrate = false
  let wait = false
  let timeout = 5 * 60_000
  while (args.length > 0) {
    const a = args.shift()!
    const [name, inline] = a.startsWith('--') && a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    const value = (): string | null => inline ?? args.shift() ?? null
    if (name === '--admin' || name === '--token' || name === '--timeout') {
      const v = value()
      if (v === null || v === '') return { kind: 'usage-error', message: `${name} needs a value` }
      if (name === '--admin') [url, urlFrom] = [v, '--admin']
      else if (name === '--token') [token, tokenFrom] = [v, '--token']
      else {
        try {
          timeout = parseDuration(v)
        } catch (err) {
          return { kind: 'usage-error', message: `--timeout: ${(err as Error).message}` }
        }
      }
    } else if (a === '--json' && kind === 'session') json = true
    else if (a === '--migrate' && kind === 'drain') migrate = true
    else if (a === '--wait' && kind === 'drain') wait = true
    else if (ADMIN_ONLY[name] !== undefined && ADMIN_ONLY[name] !== kind) return { kind: 'usage-error', message: `${name} is an option of tether ${ADMIN_ONLY[name]}, not of tether ${kind}` }
    else if (a.startsWith('-')) return unknownArgument(a, ['--admin', '--token', ...(kind === 'session' ? ['--json'] : ['--timeout', '--migrate', '--wait'])])
    else if (target !== undefined) {
      const what = kind === 'session' ? 'session key' : 'upstream id'
      return { kind: 'usage-error', message: `${kind} takes one ${what}: "${a}" is a second${kind === 'drain' ? ' (drain each on its own)' : ''}` }
    } else target = a
  }
  if (target === undefined || target === '') return { kind: 'usage-error', message: `${kind} needs ${kind === 'session' ? 'a session key' : 'an upstream id'}` }
  if (!/^https?:\/\/[^/]/.test(url)) return { kind: 'usage-error', message: `${urlFrom}: expected a URL like http://127.0.0.1:9901, got "${url}"${urlFrom === '--admin' ? '' : ' (--admin <url> overrides it)'}` }
  // fetch drops whitespace at a header value's ends and refuses a control character inside,
  // with an error that quotes the value: said here, the token never shown
  if (token !== null && /[\x00-\x08\x0a-\x1f\x7f]/.test(token.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, ''))) {
    return { kind: 'usage-error', message: `${tokenFrom}: holds a control character (a line break inside?), which an Authorization header cannot carry (not shown)` }
  }
  const admin = { url, token }
  return kind === 'session' ? { kind, admin, key: target, json } : { kind, admin, id: target, migrate, wait, timeout }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
  return pkg.version
}

/**
 * Where a valid config's upstreams come from, for `tether check`:
 * "2 static upstreams; DNS discovery of app-headless.default.svc.cluster.local port 8080 every 5s";
 * "Kubernetes discovery of Service web (the pod's namespace) port http (EndpointSlices)".
 */
function upstreamSources(config: Config): string {
  const n = config.upstreams.length
  const parts = n > 0 ? [`${n} static upstream${n === 1 ? '' : 's'}`] : []
  const dns = config.discovery.dns
  if (dns !== null) {
    const family = dns.family === 'any' ? '' : `, ${dns.family === 'ipv4' ? 'IPv4' : 'IPv6'} only`
    const servers = dns.servers.length > 0 ? `, asking ${dns.servers.join(', ')}` : ''
    const port = dns.port === null ? 'ports from SRV records' : `port ${dns.port}`
    parts.push(`DNS${dns.srv ? ' SRV' : ''} discovery of ${dns.name} ${port} every ${formatDuration(dns.interval)}${family}${servers}`)
  }
  const k8s = config.discovery.kubernetes
  if (k8s !== null) {
    const namespace = k8s.namespace ?? (k8s.kubeconfig === null ? "the pod's namespace" : "the kubeconfig context's namespace")
    const via = k8s.kubeconfig === null ? '' : `, through kubeconfig ${k8s.kubeconfig}`
    parts.push(`Kubernetes discovery of Service ${k8s.service} (${namespace}) port ${k8s.port} (EndpointSlices${via})`)
  }
  return parts.join('; ')
}

function load(file: string): Config | null {
  return read(file)?.config ?? null
}

/**
 * The config file's text and config, or null after writing why it is not valid to stderr. A
 * missing file that no argument named says where its name came from (`tether` run from another
 * directory reads `config/proxy.yaml` relative to it).
 */
function read(file: string, from: 'argument' | 'TETHER_CONFIG' | 'default' = 'argument'): ReturnType<typeof readConfigFile> | null {
  try {
    return readConfigFile(file, process.env, configFiles)
  } catch (err) {
    const code = err instanceof ConfigError ? (err.cause as NodeJS.ErrnoException | undefined)?.code : undefined
    const missing = code === 'ENOENT'
    const source = code === 'EISDIR' ? directoryHint(file)
      : !missing || from === 'argument' ? ''
      : from === 'TETHER_CONFIG' ? '; the file TETHER_CONFIG names (--config <file> overrides it)'
      : `; the default file (no --config given, TETHER_CONFIG unset), read from ${process.cwd()}: pass --config <file>`
    // (a read error's OS message names the path, and could carry anything: masked as every stderr line)
    if (err instanceof ConfigError) process.stderr.write(`${maskUrlCredentials(err.message + source, true)}\n`)
    else process.stderr.write(`${file}: ${failureLine(err)}\n`)
    return null
  }
}

/**
 * What to do with a directory given for a file: name a YAML file in it (the first 5 listed).
 * Example: for `config`, holding proxy.yaml -> "; a directory: name the YAML file in it (config/proxy.yaml)";
 * `files` says what to name (import reads several).
 */
function directoryHint(dir: string, files = 'the YAML file'): string {
  let names: string[] = []
  try {
    names = readdirSync(dir).filter((n) => /\.ya?ml$/i.test(n)).sort()
  } catch {
    // not listable (permissions): said without the names
  }
  const listed = names.length === 0 ? 'it holds none' : `${names.slice(0, 5).map((n) => join(dir, n)).join(', ')}${names.length > 5 ? `, and ${names.length - 5} more` : ''}`
  return `; a directory: name ${files} in it (${listed})`
}

/**
 * An error as one line for stderr, its URL passwords masked: its message's lines joined (never
 * its stack), else its code or name. Example: `failureLine(new Error('a\\n  b'))` -> "a b".
 */
function failureLine(err: unknown): string {
  const e = err as Partial<NodeJS.ErrnoException> | null | undefined
  const message = typeof e?.message === 'string' ? e.message.split(/\s*\n\s*/).filter((l) => l !== '').join(' ') : ''
  return maskUrlCredentials(message !== '' ? message : typeof e?.code === 'string' ? e.code : typeof e?.name === 'string' ? e.name : String(err))
}

async function main(): Promise<number> {
  const cmd = parseArgs(process.argv.slice(2), process.env)
  // check, import, session, drain: a throw nobody caught (a bug, in a library's event handler) is
  // one masked line and exit 1, not Node's print of the error and its stack (`run` logs it as JSON)
  if (cmd.kind !== 'run') {
    process.on('uncaughtException', (err: unknown) => {
      process.stderr.write(`tether: uncaught exception (a bug in Tether or a library): ${failureLine(err)}\n`)
      process.exit(1)
    })
  }
  switch (cmd.kind) {
    case 'help':
      process.stdout.write(USAGE)
      return 0
    case 'version':
      process.stdout.write(`tether ${version()}\n`)
      return 0
    case 'usage-error':
      process.stderr.write(`tether: ${maskUrlCredentials(cmd.message)}\n\n${USAGE}`)
      return 2
    case 'import': {
      const files: { file: string; bytes: Buffer }[] = []
      for (const file of cmd.files) {
        try {
          files.push({ file, bytes: readFileSync(file === '-' ? 0 : file) })
        } catch (err) {
          const hint = (err as NodeJS.ErrnoException).code === 'EISDIR' ? directoryHint(file, 'the YAML files') : ''
          process.stderr.write(`${maskUrlCredentials(`tether import: cannot read ${file}: ${readErrorReason(err)}${hint}`)}\n`)
          return 1
        }
      }
      try {
        const sources = files.map(({ file, bytes }) => ({ file, text: manifestText(file, bytes) }))
        const result = convertManifests(sources, { manifests: cmd.manifests, image: cmd.image ?? `ghcr.io/example/tether:${version()}` })
        process.stdout.write(result.manifests ?? result.proxyYaml)
        process.stderr.write(`tether import: converted ${result.converted}\n`)
        if (result.findings.length > 0) {
          process.stderr.write(`tether import: not converted (${result.findings.length}, also listed at the top of the output):\n`)
          for (const f of result.findings) process.stderr.write(`  ${f.at} ${f.what}: ${f.why}\n`)
        }
        return 0
      } catch (err) {
        if (err instanceof ImportError || err instanceof ConfigError) {
          process.stderr.write(`tether import: ${maskUrlCredentials(err.message, true)}\n`)
          return 1
        }
        throw err
      }
    }
    case 'session':
    case 'drain': {
      const r = cmd.kind === 'session'
        ? await showSession(cmd.admin, cmd.key, cmd.json)
        : await drainUpstream(cmd.admin, cmd.id, { migrate: cmd.migrate, wait: cmd.wait, timeout: cmd.timeout, poll: 1_000, progress: (line) => process.stdout.write(line) })
      process.stdout.write(r.out)
      process.stderr.write(maskUrlCredentials(r.err)) // an --admin URL with credentials, echoed in an error
      return r.code
    }
    case 'check': {
      const config = load(cmd.config)
      if (config === null) return 1
      for (const w of configWarnings(config)) process.stderr.write(`warning: ${w}\n`)
      process.stdout.write(`${cmd.config}: ok (${upstreamSources(config)})\n`)
      return 0
    }
    case 'run': {
      // workers > 1: this process is one of the workers (it runs what its primary gives it,
      // not the file as it is now), or it supervises them (the primary)
      const worker = await import('./workers/worker-main.js')
      const index = worker.workerIndex(process.env)
      const { createLogger, effectiveLevel, holdLinesForExit, stdoutSettled } = await import('./observability/logger.js')
      logsSettled = stdoutSettled
      const makeLogger = (c: Config): Logger => createLogger(effectiveLevel(c.log.level, process.env['LOG_LEVEL']))
      // Last resort: a promise rejection nobody handled (a library's, in a reconnect path) is a
      // bug, logged at error level; Node's default would end the process, and the same event
      // (a Redis failover) would end every replica at once.
      let lastResort = createLogger(effectiveLevel('error', process.env['LOG_LEVEL']))
      process.on('unhandledRejection', (err: unknown) => {
        lastResort.error({ err }, 'unhandled promise rejection: a bug in Tether or a library, not fatal (Tether keeps running)')
      })
      // A synchronous throw nobody caught (a library's, from an event handler): Node's default
      // prints the error to stderr as it is, an ioredis ReplyError's command args (an AUTH
      // password) included. Logged through the logger's serializer instead, as one fatal JSON
      // line, and the process ends with Node's code (1) after that line is flushed (pino's exit
      // flush, which writes it synchronously: not an asynchronous write the exit would cut): its
      // state may be broken. A worker's exit is a crash its primary restarts.
      process.on('uncaughtException', (err: unknown) => {
        try {
          holdLinesForExit()
          lastResort.fatal({ err }, 'uncaught exception: a bug in Tether or a library; exiting (code 1)')
        } catch {
          // the error cannot be serialized (a field's toJSON throws): said without it, else the exit is silent
          process.stderr.write('tether: uncaught exception (a bug in Tether or a library); it could not be logged; exiting (code 1)\n')
        } finally {
          process.exit(1)
        }
      })
      // ioredis's console.warn lines ("[WARN] ... a password was supplied"): JSON lines, once each,
      // with the setting to change
      // (a worker's go to its primary, which logs each once for all workers)
      let redisConfig: Config['state']['redis'] | null = null
      let forward: ReturnType<typeof worker.noticeForwarder> = null
      routeRedisConsole(() => lastResort, () => redisConfig === null ? [] : redisPasswordSettings(redisConfig), () => forward)
      // a worker's: at its config's level, with its `worker` field, as its other lines
      if (index !== null) return worker.runWorkerProcess(cmd.config, index, (c, setup) => {
        redisConfig = c.state.redis
        forward = worker.noticeForwarder(setup)
        const logger = makeLogger(c)
        lastResort = logger.child({ worker: index })
        return logger
      })
      // a SIGHUP or SIGTERM during the start is applied once started (Node's default ends the process)
      const early = new EarlySignals()
      const file = read(cmd.config, cmd.configFrom)
      if (file === null) return 1
      const config = file.config
      redisConfig = config.state.redis
      lastResort = makeLogger(config)
      // (the primary's or the single process's: workers are handed the file, not told again)
      for (const w of configWarnings(config)) lastResort.warn({ warning: w }, CONFIG_WARNING)
      // LOG_LEVEL=verbose (no level): effectiveLevel ignores it, which without a word looks like
      // a LOG_LEVEL that does not work (a valid one gives the same level whatever log.level is)
      const envLevel = process.env['LOG_LEVEL']
      if (envLevel !== undefined && envLevel.trim() !== '' && effectiveLevel('fatal', envLevel) !== effectiveLevel('trace', envLevel)) {
        lastResort.warn({ LOG_LEVEL: envLevel.slice(0, 40), log_level: config.log.level }, 'LOG_LEVEL is not a log level (fatal, error, warn, info, debug, trace or silent): ignored, log.level applies')
      }
      if (workerCount(config.workers) > 1) {
        const { runPrimary } = await import('./workers/primary.js')
        try {
          lastResort = makeLogger(config).child({ worker: 'primary' })
          return await runPrimary(file, cmd.config, lastResort, early)
        } catch (err) {
          process.stderr.write(`tether: ${failureLine(err)}\n`)
          return 1
        }
      }
      let tether: Tether
      try {
        // loaded here, so check and import start without the proxy's libraries
        const { startTether } = await import('./app.js')
        tether = await startTether(config, { configPath: cmd.config, configText: file.text })
      } catch (err) {
        process.stderr.write(`tether: ${failureLine(err)}\n`)
        return 1
      }
      return new Promise<number>((resolve) => {
        let stopping = false
        const stop = (signal: string): void => {
          if (stopping) {
            // its line is the last: held for the exit's synchronous flush (an asynchronous write
            // into a full pipe was lost at the exit), see holdLinesForExit
            holdLinesForExit()
            tether.logger.warn({ signal }, 'second signal: exiting now')
            resolve(1)
            return
          }
          stopping = true
          tether.logger.info({ signal }, 'signal received')
          tether.close().then(() => resolve(0), () => resolve(1))
        }
        early.release({
          SIGTERM: stop,
          SIGINT: stop,
          SIGHUP: () => {
            tether.logger.info('SIGHUP: reloading the config')
            tether.reloadFile()
          },
        })
      })
    }
  }
}

/** Resolves once no log line is being written (the logger's stdoutSettled, once `run` loaded it). */
let logsSettled: () => Promise<void> = () => Promise.resolve()

main().then(
  // a log line's write still in flight is let end first: the exit's flush cannot retry it
  async (code) => {
    await logsSettled()
    process.exit(code)
  },
  (err: unknown) => {
    process.stderr.write(`tether: fatal: ${failureLine(err)}\n`)
    process.exit(1)
  },
)
