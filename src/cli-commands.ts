// The commands of the process entry (cli.ts, which loads this module once it holds the signals):
// argv, exit codes and signals. Loads the config, starts the composition root, and turns
// SIGTERM/SIGINT into a graceful stop. No proxy logic here.
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CONFIG_WARNING, ConfigError, configWarnings, escapeControls, inputErrorReason, inputName, readConfigFile, readInput, type Config, type ConfigFiles } from './config/index.js'
import { parseArgs, USAGE } from './cli-args.js'
import { configFiles, unreadConfigFiles } from './config/config-files.js'
import { formatDuration } from './config/duration.js'
import { convertManifests, ImportError, manifestText } from './import/convert.js'
import type { Tether } from './app.js'
import type { Logger } from './observability/logger.js'
import { drainUpstream, showSession } from './admin/admin-client.js'
import { workerCount } from './workers/worker-count.js'
import type { EarlySignals } from './early-signals.js'
import { redisPasswordSettings, routeRedisConsole } from './redis/console-notices.js'
import { maskUrlCredentials } from './secret-text.js'

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

/**
 * `tether check --syntax-only`'s verdict, worded apart from the full check's "ok" so that no
 * one takes it for one: what it will discover, and the files it names, which were not read.
 * Example: "syntax ok (2 static upstreams); not read (--syntax-only): /etc/tether-tls/tls.crt, /etc/tether-tls/tls.key".
 */
function syntaxOnlyResult(config: Config, unread: readonly string[]): string {
  const files = unread.length === 0 ? 'it names no files: nothing was left unread' : `not read (--syntax-only): ${unread.join(', ')}`
  return `syntax ok (${upstreamSources(config)}); ${files}`
}

function load(file: string, files: ConfigFiles): Config | null {
  return read(file, 'argument', files)?.config ?? null
}

/**
 * The config file's text and config, or null after writing why it is not valid to stderr. A
 * missing file that no argument named says where its name came from (`tether` run from another
 * directory reads `config/proxy.yaml` relative to it).
 */
function read(file: string, from: 'argument' | 'TETHER_CONFIG' | 'default' = 'argument', files: ConfigFiles = configFiles): ReturnType<typeof readConfigFile> | null {
  try {
    return readConfigFile(file, process.env, files)
  } catch (err) {
    const code = err instanceof ConfigError ? (err.cause as NodeJS.ErrnoException | undefined)?.code : undefined
    const missing = code === 'ENOENT'
    // (stdin given a directory is said so by the error itself: no file named "-" to look into)
    const source = code === 'EISDIR' ? (file === '-' ? '' : directoryHint(file))
      : !missing || from === 'argument' ? ''
      : from === 'TETHER_CONFIG' ? '; the file TETHER_CONFIG names (--config <file> overrides it)'
      : `; the default file (no --config given, TETHER_CONFIG unset), read from ${process.cwd()}: pass --config <file>`
    // (a read error's OS message names the path, and could carry anything: masked as every stderr line)
    // (the directory's file names and the working directory: escaped as the rest of the line)
    if (err instanceof ConfigError) process.stderr.write(`${maskUrlCredentials(err.message + escapeControls(source), true)}\n`)
    else process.stderr.write(`${escapeControls(`${file}: ${failureLine(err)}`)}\n`)
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

async function main(early: EarlySignals): Promise<number> {
  const cmd = parseArgs(process.argv.slice(2), process.env)
  // only `run` is a server, which applies a signal held during its start once it has started:
  // the others end at a SIGTERM (a SIGHUP, a SIGINT) as any command-line tool does, one held
  // since the process started included
  // (awaited: the holders gone before `check -` blocks reading stdin, see letGo)
  if (cmd.kind !== 'run') await early.letGo()
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
          files.push({ file, bytes: readInput(file) })
        } catch (err) {
          const hint = (err as NodeJS.ErrnoException).code === 'EISDIR' && file !== '-' ? directoryHint(file, 'the YAML files') : ''
          process.stderr.write(`${maskUrlCredentials(escapeControls(`tether import: cannot read ${inputName(file)}: ${inputErrorReason(file, err)}${hint}`))}\n`)
          return 1
        }
      }
      try {
        // stdin ("-") named `<stdin>` in every position, finding and the output, as check names it
        const sources = files.map(({ file, bytes }) => ({ file: inputName(file), text: manifestText(file, bytes) }))
        const result = convertManifests(sources, { manifests: cmd.manifests, image: cmd.image ?? `ghcr.io/example/tether:${version()}` })
        process.stdout.write(result.manifests ?? result.proxyYaml)
        process.stderr.write(`tether import: converted ${escapeControls(result.converted)}\n`)
        if (result.findings.length > 0) {
          process.stderr.write(`tether import: not converted (${result.findings.length}, also listed at the top of the output):\n`)
          for (const f of result.findings) process.stderr.write(`  ${escapeControls(`${f.at} ${f.what}: ${f.why}`)}\n`)
        }
        return 0
      } catch (err) {
        if (err instanceof ImportError || err instanceof ConfigError) {
          // a ConfigError's message is safe already, its lines ours (a YAML error's excerpt and
          // caret): escaping it whole printed them on one line with literal \n
          const message = err instanceof ConfigError ? err.message : escapeControls(err.message)
          process.stderr.write(`tether import: ${maskUrlCredentials(message, true)}\n`)
          return 1
        }
        throw err
      }
    }
    case 'session':
    case 'drain': {
      if (cmd.kind === 'drain' && cmd.warning !== undefined) process.stderr.write(`tether drain: warning: ${cmd.warning}\n`)
      const r = cmd.kind === 'session'
        ? await showSession(cmd.admin, cmd.key, cmd.json)
        : await drainUpstream(cmd.admin, cmd.id, { migrate: cmd.migrate, wait: cmd.wait, timeout: cmd.timeout, poll: 1_000, progress: (line) => process.stdout.write(line) })
      process.stdout.write(r.out)
      process.stderr.write(maskUrlCredentials(r.err)) // an --admin URL with credentials, echoed in an error
      return r.code
    }
    case 'check': {
      const unread = cmd.syntaxOnly ? unreadConfigFiles() : null
      const config = load(cmd.config, unread?.files ?? configFiles)
      if (config === null) return 1
      for (const w of configWarnings(config)) process.stderr.write(`warning: ${w}\n`)
      const name = escapeControls(inputName(cmd.config))
      if (unread === null) process.stdout.write(`${name}: ok (${upstreamSources(config)})\n`)
      else process.stdout.write(`${name}: ${escapeControls(syntaxOnlyResult(config, unread.named()))}\n`)
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
      }, early)
      // a SIGHUP or SIGTERM since the process started is applied once started (see cli.ts)
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

/**
 * Run the command argv names and exit with its code. `early`: the signals held since the
 * process started (cli.ts), applied by `run` once started, let go by the other commands.
 */
export function runCommand(early: EarlySignals): void {
  main(early).then(
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
}
