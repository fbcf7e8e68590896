#!/usr/bin/env node
// `npm start`: Tether in front of three demo replicas, all on loopback, and a failover to try.
//
//   node examples/demo.mjs        (`npm start` runs `exec node examples/demo.mjs`)
//
// Builds dist/ with tsc when dist/cli.js is missing or older than a file under src/ (or
// tsconfig.json), starts one examples/demo-app replica per upstream of config/proxy.yaml
// (app-0..app-2 on 127.0.0.1:9001-9003), then `node dist/cli.js --config config/proxy.yaml`,
// waits until every process says it is listening, and prints each one's pid and what to
// try, the failover included.
//
// A replica that dies after start-up (`kill -9 <pid>`) is an event to show, not a failure:
// the demo says so and keeps Tether and the other replicas running; Tether moves that
// replica's users to another one on their next request, with their checkpointed counters.
// Typing `r` and Enter restarts the dead replicas. Tether dying, or anything failing during
// start-up (say port 8080 is taken), stops everything with the reason and exit code 1.
//
// SIGINT (Ctrl-C), SIGTERM or SIGHUP stops Tether, then the replicas, and exits 0; so does
// the loss of the parent process (npm killed with SIGKILL, say). `npm start` execs this
// script, so npm's own SIGINT/SIGTERM forwarding reaches it directly (with `sh -c "a && b"`
// in between, the shell swallowed them and every process stayed up). If this script itself
// is killed with SIGKILL, each child sees its stdin pipe from it end and kills itself
// (examples/exit-with-parent.mjs, preloaded with --import), freeing its port.
//
// Environment:
//   DEMO_BASE_PORT   first replica port (default: the ports in proxy.yaml, 9001..);
//                    the replicas take consecutive ports from it
//   DEMO_PORT        Tether's port (default: listen.port of proxy.yaml, 8080)
//   DEMO_ADMIN_PORT  Tether's admin port (default: admin.listen.port, 9901)
// When any is set the demo runs Tether on a copy of proxy.yaml with those ports.

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseDocument } from 'yaml'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const CONFIG = join(ROOT, 'config', 'proxy.yaml')
const SRC = join(ROOT, 'src')
const TSCONFIG = join(ROOT, 'tsconfig.json')
const CLI = join(ROOT, 'dist', 'cli.js')
const APP = join(ROOT, 'examples', 'demo-app', 'server.mjs')
/** Preloaded into every child: it stops when its stdin pipe (from this script) ends. */
const EXIT_WITH_PARENT = pathToFileURL(join(ROOT, 'examples', 'exit-with-parent.mjs')).href

/** How long every process together has to come up (and a restarted replica alone). */
const STARTUP_DEADLINE_MS = 15_000
/** How long a process has to exit after SIGTERM before it gets SIGKILL. */
const STOP_DEADLINE_MS = 5_000
/** Lines of a process's own output kept to explain its death. */
const KEEP_LINES = 6
/** How often the demo checks that the process that started it is still there. */
const PARENT_CHECK_MS = 500

const tty = process.stdout.isTTY && !process.env.NO_COLOR
const dim = (s) => (tty ? `\x1b[2m${s}\x1b[22m` : s)
const bold = (s) => (tty ? `\x1b[1m${s}\x1b[22m` : s)

function fail(message) {
  console.error(`demo: ${message}`)
  process.exit(1)
}

// ---------------------------------------------------------------- configuration

function portFromEnv(name) {
  const text = process.env[name]
  if (text === undefined || text === '') return undefined
  const port = Number(text)
  if (!/^\d+$/.test(text) || port < 1 || port > 65535) fail(`${name}=${text} is not a port (1-65535)`)
  return port
}

/** Port -> the DEMO_* variable that moves it (Tether's, its admin API's, the replicas'). */
const portVariables = new Map()

/**
 * Reads proxy.yaml for the replicas to start and, when a DEMO_*PORT variable asks for
 * other ports, writes a copy with them. Returns { configPath, replicas, cleanup }.
 */
function prepareConfig() {
  if (!existsSync(CONFIG)) fail(`${relative(process.cwd(), CONFIG)} is missing`)
  const doc = parseDocument(readFileSync(CONFIG, 'utf8'))
  if (doc.errors.length > 0) fail(`${relative(process.cwd(), CONFIG)}: ${doc.errors[0].message}`)
  const upstreams = doc.get('upstreams')?.toJSON?.() ?? []
  if (!Array.isArray(upstreams) || upstreams.length === 0) fail('config/proxy.yaml lists no upstreams')

  const basePort = portFromEnv('DEMO_BASE_PORT')
  const proxyPort = portFromEnv('DEMO_PORT')
  const adminPort = portFromEnv('DEMO_ADMIN_PORT')

  const replicas = upstreams.map((upstream, i) => {
    let port
    if (basePort !== undefined) {
      port = basePort + i
      if (port > 65535) fail(`DEMO_BASE_PORT=${basePort} leaves no room for ${upstreams.length} replicas`)
      doc.setIn(['upstreams', i, 'url'], `http://127.0.0.1:${port}`)
    } else {
      let url
      try {
        url = new URL(String(upstream.url))
      } catch {
        fail(`upstream ${upstream.id}: url ${JSON.stringify(upstream.url)} is not a URL`)
      }
      if (!['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname)) {
        fail(`upstream ${upstream.id} (${url.origin}) is not on this machine; the demo starts local replicas only`)
      }
      port = Number(url.port || 80)
    }
    return { id: String(upstream.id), port, child: null, url: null }
  })

  // which variable moves which port, for the hint when one is taken
  portVariables.set(Number(proxyPort ?? doc.getIn(['listen', 'port'])), 'DEMO_PORT')
  portVariables.set(Number(adminPort ?? doc.getIn(['admin', 'listen', 'port'])), 'DEMO_ADMIN_PORT')
  for (const r of replicas) portVariables.set(r.port, 'DEMO_BASE_PORT')

  if (basePort === undefined && proxyPort === undefined && adminPort === undefined) {
    return { configPath: CONFIG, replicas, cleanup: () => {} }
  }
  if (proxyPort !== undefined) doc.setIn(['listen', 'port'], proxyPort)
  if (adminPort !== undefined) doc.setIn(['admin', 'listen', 'port'], adminPort)
  const dir = mkdtempSync(join(tmpdir(), 'tether-demo-'))
  const configPath = join(dir, 'proxy.yaml')
  writeFileSync(configPath, String(doc))
  return { configPath, replicas, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

// ---------------------------------------------------------------- build

/** The running tsc, while building. */
let building = null

/** Newest modification time (ms) among the files tsc compiles dist/ from. */
function newestSourceTime() {
  let newest = statSync(TSCONFIG).mtimeMs
  for (const name of readdirSync(SRC, { recursive: true })) {
    if (String(name).endsWith('.ts')) newest = Math.max(newest, statSync(join(SRC, String(name))).mtimeMs)
  }
  return newest
}

/**
 * Runs tsc when dist/cli.js is missing or older than the sources, so a fresh clone and an
 * edited src/ both run current code, and an up-to-date dist/ (as `npm test` leaves it) is
 * not rewritten under other processes reading it. Without src/ (an installed package) the
 * shipped dist/ is used as it is.
 */
async function build() {
  const haveSources = existsSync(SRC) && existsSync(TSCONFIG)
  if (!haveSources || (existsSync(CLI) && statSync(CLI).mtimeMs >= newestSourceTime())) {
    if (!existsSync(CLI)) fail(`${relative(process.cwd(), CLI)} is missing and there is no src/ to build it from`)
    return
  }
  let tsc
  try {
    tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')
  } catch {
    fail('TypeScript is not installed, so Tether cannot be built: run `npm ci` first')
  }
  console.log(dim(existsSync(CLI) ? 'src/ changed: rebuilding Tether (tsc)...' : 'building Tether (tsc)...'))
  const code = await new Promise((res) => {
    building = spawn(process.execPath, [tsc, '-p', TSCONFIG], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] })
    building.once('error', (err) => {
      console.error(`demo: could not run tsc: ${err.message}`)
      res(1)
    })
    building.once('exit', (status, signal) => res(signal ?? status))
  })
  building = null
  if (stopping) return
  if (code !== 0) {
    // tsc emits despite type errors: age dist/cli.js so that the next run builds again
    if (existsSync(CLI)) utimesSync(CLI, 0, 0)
    fail(`the build failed (tsc: ${code}); fix the errors above and run \`npm start\` again`)
  }
}

// ---------------------------------------------------------------- child processes

/** @type {Set<Child>} */
const children = new Set()
let stopping = false

/**
 * One supervised node process. `onLine(line)` sees every stdout line; returning a value
 * other than undefined marks the child ready with that value. `onDeath(child, how)` runs
 * when it exits while the demo is not stopping (default: stop everything, exit 1).
 */
class Child {
  constructor(name, args, onLine) {
    this.name = name
    this.recent = []
    this.exited = false
    this.isReady = false
    this.onDeath = fatalDeath
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res
      this.rejectReady = rej
    })
    this.ready.catch(() => {})
    this.proc = spawn(process.execPath, ['--import', EXIT_WITH_PARENT, ...args], {
      cwd: ROOT,
      // Own process group: a terminal's Ctrl-C reaches only this script, which then
      // stops the children in order (Tether first) instead of all of them at once.
      detached: true,
      // stdin is a pipe from this script that nothing is written to: when this script dies,
      // even by SIGKILL, it ends, and the preload ends the child (exit-with-parent.mjs)
      stdio: ['pipe', 'pipe', 'pipe'],
    })
    this.proc.stdin?.on('error', () => {})
    this.pid = this.proc.pid
    children.add(this)
    // 'close' rather than 'exit': the process is gone and its last output lines are read
    this.exitedPromise = new Promise((res) => this.proc.once('close', res))

    createInterface({ input: this.proc.stdout, crlfDelay: Infinity }).on('line', (line) => {
      const value = onLine.call(this, line)
      if (value !== undefined) {
        this.isReady = true
        this.resolveReady(value)
      }
    })
    createInterface({ input: this.proc.stderr, crlfDelay: Infinity }).on('line', (line) => {
      this.remember(line)
      console.error(dim(`[${this.name}] `) + line)
    })
    this.proc.once('error', (err) => {
      this.exited = this.proc.pid === undefined // never started: nothing to stop
      this.died(`could not start: ${err.message}`)
    })
    this.proc.once('close', (code, signal) => {
      this.exited = true
      this.died(signal ? `was killed by ${signal}` : `exited with code ${code}`)
    })
  }

  remember(line) {
    // Stack frames and Node's version footer explain nothing; the error line does.
    if (line.trim() === '' || /^\s+at /.test(line) || /^Node\.js v\d/.test(line)) return
    this.recent.push(line.trim())
    if (this.recent.length > KEEP_LINES) this.recent.shift()
  }

  died(how) {
    if (!children.delete(this)) return // 'error' and 'close' can both report one death
    const err = new Error(`${this.name} ${how}`)
    err.childDeath = true
    this.rejectReady(err)
    if (stopping) return
    this.onDeath(this, how)
  }

  /** SIGTERM, then SIGKILL after the deadline. Resolves when the process is gone. */
  async stop() {
    if (this.exited) return
    this.signal('SIGTERM')
    let timer
    const deadline = new Promise((res) => {
      timer = setTimeout(res, STOP_DEADLINE_MS, 'timeout')
    })
    const outcome = await Promise.race([this.exitedPromise, deadline])
    clearTimeout(timer)
    if (outcome === 'timeout' && !this.exited) {
      console.error(`demo: ${this.name} did not stop within ${STOP_DEADLINE_MS / 1000}s; killing it`)
      this.signal('SIGKILL')
      await this.exitedPromise
    }
  }

  signal(sig) {
    try {
      this.proc.kill(sig)
    } catch {
      // already gone
    }
  }
}

/** A death the demo cannot show around: stop everything and say why. */
function fatalDeath(child, how) {
  const recent = child.recent.slice(-3)
  const last = recent.length > 0 ? `; last output: ${recent.join(' | ')}` : ''
  void shutdown(1, `${child.name} ${how.replace(/^(exited|was killed)/, '$1 unexpectedly')}${last}${portHint(child.recent)}`)
}

/**
 * For a child that could not listen because its port is taken (another demo still running,
 * say): which DEMO_* variable moves that port.
 */
function portHint(lines) {
  const line = lines.find((l) => /EADDRINUSE|address already in use/i.test(l))
  if (line === undefined) return ''
  const port = Number(/:(\d+)(?=[\s):]|$)/.exec(line)?.[1])
  const variable = portVariables.get(port)
  const which = variable !== undefined ? `set ${variable}` : 'set DEMO_PORT, DEMO_ADMIN_PORT or DEMO_BASE_PORT'
  const where = Number.isInteger(port) ? `port ${port}` : 'a port'
  return `\n  ${where} is in use (by another demo still running?): stop that, or ${which} to use another port (\`DEMO_BASE_PORT=19001 DEMO_PORT=18080 DEMO_ADMIN_PORT=19901 npm start\`)`
}

async function shutdown(code, reason) {
  if (stopping) return
  stopping = true
  if (reason) console.error(`demo: ${reason}`)
  if (code === 0) console.log('\nstopping Tether and the replicas...')
  building?.kill('SIGTERM')
  // Tether first, so it does not log every replica going away.
  const all = [...children]
  await Promise.all(all.filter((c) => c.name === 'tether').map((c) => c.stop()))
  await Promise.all(all.filter((c) => c.name !== 'tether').map((c) => c.stop()))
  cleanupConfig()
  if (code === 0) console.log('stopped.')
  process.exit(code)
}

// If this script exits any other way, take the children along.
process.on('exit', () => {
  for (const child of children) child.signal('SIGKILL')
  building?.kill('SIGKILL')
})
process.on('SIGINT', () => shutdown(0))
process.on('SIGTERM', () => shutdown(0))
process.on('SIGHUP', () => shutdown(0))

/**
 * Stops everything when the process that started the demo goes away without a signal
 * reaching us (npm killed with SIGKILL; a wrapper shell that swallowed the signal): an
 * orphan is re-parented, so its parent pid changes.
 */
function watchParent() {
  const parent = process.ppid
  if (parent <= 1) return
  setInterval(() => {
    if (process.ppid !== parent) void shutdown(0, 'the process that started the demo is gone')
  }, PARENT_CHECK_MS).unref()
}

// ---------------------------------------------------------------- replicas

/** Starts (or restarts) one replica; its `ready` resolves with its URL. */
function startReplica(replica) {
  const { id, port } = replica
  const child = new Child(id, [APP, '--id', id, '--port', String(port), '--host', '127.0.0.1'], function (line) {
    const m = /listening on (http:\/\/\S+)/.exec(line)
    if (m) return m[1]
    this.remember(line)
    console.log(dim(`[${id}] `) + line)
    return undefined
  })
  replica.child = child
  return child
}

/** Names as "a", "a and b", "a, b and c". */
function listNames(names) {
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : names[0]
}

/** Set once everything runs: what the event messages need. */
const shown = { base: '', jar: '', replicas: [] }

function loopLine() {
  return `for i in 1 2 3; do curl -s -c ${shown.jar} -b ${shown.jar} ${shown.base}/; done`
}

/** A replica died after start-up: say what happens now, and keep everything else running. */
function replicaDied(child, how) {
  const dead = shown.replicas.filter((r) => r.child.exited).map((r) => r.id)
  const lines = [
    '',
    bold(`* ${child.name} (pid ${child.pid}) ${how}.`),
    '  Its users move to another replica on their next request, and their',
    "  counters come along (Tether hands the new replica the user's last checkpoint):",
    `    ${loopLine()}`,
  ]
  if (dead.length === shown.replicas.length) lines.push('  No replica is left: Tether answers 503 until one is back.')
  lines.push(
    `  Then type r and Enter to restart ${listNames(dead)}. (Users who made no request`,
    '  meanwhile stay pinned to it and get their count back there: Tether rehydrates',
    '  the users of a replica it saw restart, X-Tether-Moved: reason=restart.)',
    '',
  )
  console.log(lines.join('\n'))
}

/** Restarts every dead replica (the `r` command). */
async function restartDead() {
  const dead = shown.replicas.filter((r) => r.child.exited)
  if (dead.length === 0) {
    const pids = shown.replicas.map((r) => `${r.id} ${r.child.pid}`).join(', ')
    console.log(`demo: every replica is running (pids: ${pids})`)
    return
  }
  await Promise.all(
    dead.map(async (replica) => {
      const child = startReplica(replica)
      child.onDeath = () => {} // a failed restart is reported below; the demo goes on
      let timer
      const deadline = new Promise((_, rej) => {
        timer = setTimeout(() => rej(new Error(`not listening after ${STARTUP_DEADLINE_MS / 1000}s`)), STARTUP_DEADLINE_MS)
      })
      try {
        replica.url = await Promise.race([child.ready, deadline])
      } catch (err) {
        if (stopping) return
        child.signal('SIGKILL')
        const why = child.recent.at(-1) ?? err.message
        console.log(`demo: could not restart ${replica.id}: ${why}\n  Type r and Enter to try again.`)
        return
      } finally {
        clearTimeout(timer)
      }
      if (stopping) return
      child.onDeath = replicaDied
      console.log(
        [
          '',
          bold(`* ${replica.id} is back (pid ${child.pid}) on ${replica.url}.`),
          '  Users who moved away from it stay where they are now (no flapping);',
          `  new users can land on ${replica.id} again once Tether's health check passes.`,
          `    ${loopLine()}`,
          '',
        ].join('\n'),
      )
    }),
  )
}

/** Commands typed into the demo's terminal: `r` restarts dead replicas. */
function readCommands() {
  // terminal: false keeps the terminal in line mode, so Ctrl-C stays a SIGINT
  const commands = createInterface({ input: process.stdin, terminal: false })
  commands.on('line', (line) => {
    const command = line.trim().toLowerCase()
    if (command === '') return
    if (command === 'r' || command === 'restart') void restartDead()
    else console.log('demo: type r and Enter to restart dead replicas; Ctrl-C stops everything')
  })
  // stdin closed (run from a script): no commands, the demo goes on
  commands.on('error', () => {})
}

// ---------------------------------------------------------------- Tether's log lines

const LEVELS = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' }

/** What an access line's outcome tells the person watching. */
const OUTCOMES = new Map([
  ['rehydrated', '(user moved here; state rehydrated)'],
  ['failover', '(user moved here; no saved state)'],
])

function pick(obj, ...paths) {
  for (const path of paths) {
    let v = obj
    for (const key of path.split('.')) v = v == null ? undefined : v[key]
    if (v !== undefined && v !== null && v !== '') return v
  }
  return undefined
}

/**
 * One readable line for a pino JSON line. Access lines (those with a method and a
 * status) become `GET / -> app-1 200 3ms [outcome]`, health changes `app-1: healthy ->
 * ejected (reason)`, others `level msg key=value...`.
 */
function formatLogLine(entry) {
  const method = pick(entry, 'method', 'req.method')
  const status = pick(entry, 'status', 'statusCode', 'res.statusCode', 'res.status')
  if (method !== undefined && status !== undefined) {
    const path = pick(entry, 'path', 'url', 'req.url', 'req.path') ?? ''
    const upstream = pick(entry, 'upstream', 'upstream_id', 'upstreamId', 'upstream.id', 'target')
    const ms = pick(entry, 'duration_ms', 'durationMs', 'responseTime', 'response_time', 'elapsed_ms', 'ms')
    const msText = ms !== undefined ? ` ${typeof ms === 'number' ? Math.round(ms * 10) / 10 : ms}ms` : ''
    const upstreamText = upstream !== undefined ? ` -> ${typeof upstream === 'object' ? JSON.stringify(upstream) : upstream}` : ''
    const outcome = pick(entry, 'outcome')
    const outcomeText = outcome !== undefined && outcome !== 'ok' ? ` ${OUTCOMES.get(outcome) ?? outcome}` : ''
    return `${method} ${path}${upstreamText} ${status}${msText}${outcomeText}`
  }
  if (entry.msg === 'upstream health changed' && typeof entry.upstream === 'string') {
    const detail = entry.detail ?? entry.reason
    return `${entry.upstream}: ${entry.from ?? 'new'} -> ${entry.to ?? 'removed'}${detail ? ` (${detail})` : ''}`
  }
  const level = LEVELS[entry.level] ?? entry.level ?? ''
  const skip = new Set(['level', 'time', 'pid', 'hostname', 'name', 'msg', 'v'])
  const extra = Object.entries(entry)
    .filter(([k]) => !skip.has(k))
    .map(([k, v]) => {
      if (k === 'err' && v && typeof v === 'object') return `err=${JSON.stringify(v.message ?? v)}`
      return `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`
    })
  return [level, entry.msg ?? '', ...extra].filter((s) => s !== '').join(' ')
}

// ---------------------------------------------------------------- main

let cleanupConfig = () => {}

async function main() {
  watchParent()
  const prepared = prepareConfig()
  cleanupConfig = prepared.cleanup
  await build()
  if (stopping) return
  const { configPath, replicas } = prepared

  const replicaChildren = replicas.map(startReplica)

  let deadlineTimer
  const deadline = new Promise((_, rej) => {
    deadlineTimer = setTimeout(() => {
      const waiting = [...children].filter((c) => !c.isReady).map((c) => c.name)
      rej(new Error(`still waiting after ${STARTUP_DEADLINE_MS / 1000}s for ${waiting.join(', ') || 'startup'}`))
    }, STARTUP_DEADLINE_MS)
  })

  try {
    const urls = await Promise.race([Promise.all(replicaChildren.map((c) => c.ready)), deadline])
    replicas.forEach((r, i) => (r.url = urls[i]))

    const configArg = configPath === CONFIG ? relative(ROOT, CONFIG) : configPath
    let tetherReady = false
    const tether = new Child('tether', [CLI, '--config', configArg], function (line) {
      let entry
      try {
        entry = JSON.parse(line)
      } catch {
        entry = undefined
      }
      if (entry === null || typeof entry !== 'object') {
        this.remember(line)
        console.log(dim('[tether] ') + line)
        return undefined
      }
      if (!tetherReady && entry.msg === 'tether listening') {
        tetherReady = true
        return {
          url: typeof entry.url === 'string' ? entry.url : 'http://127.0.0.1:8080',
          admin: typeof entry.admin === 'string' ? entry.admin : null,
        }
      }
      const text = formatLogLine(entry)
      if (typeof entry.level === 'number' && entry.level >= 40) {
        this.remember(text)
        console.error(dim('[tether] ') + text)
      } else {
        console.log(dim('[tether] ') + text)
      }
      return undefined
    })
    const { url, admin } = await Promise.race([tether.ready, deadline])
    clearTimeout(deadlineTimer)
    if (stopping) return
    // From here on a replica's death is part of the show.
    for (const r of replicas) r.child.onDeath = replicaDied
    printInstructions({ url, admin, pid: tether.pid }, replicas)
    readCommands()
  } catch (err) {
    clearTimeout(deadlineTimer)
    // A child's death starts the shutdown itself, with its own explanation.
    if (!err.childDeath && !stopping) await shutdown(1, err.message)
  }
}

function printInstructions(tether, replicas) {
  const base = tether.url.replace(/\/+$/, '')
  const jar = join(tmpdir(), 'tether.jar')
  Object.assign(shown, { base, jar, replicas })
  const names = replicas.map((r) => r.id)
  const width = Math.max(6, ...names.map((n) => n.length))
  const row = (name, pid, where) => `  ${name.padEnd(width)}  pid ${String(pid).padEnd(7)} ${where}`
  const adminText = tether.admin ? ` (admin ${tether.admin})` : ''
  const lines = [
    '',
    bold(`Tether is running on ${base} in front of ${names.join(', ')}`),
    row('tether', tether.pid, `${base}${adminText}`),
    ...replicas.map((r) => row(r.id, r.child.pid, r.url)),
    '',
    '1. Be one user (the jar keeps their cookies): every answer comes from the',
    '   same replica and its counter grows.',
    `     ${loopLine()}`,
    "2. Kill that user's replica (/pid answers with its pid), then go on: Tether",
    '   moves the user to another replica and the counter continues there.',
    `     kill -9 $(curl -s -b ${jar} ${base}/pid)`,
    `     ${loopLine()}`,
    '3. Type r and Enter here to restart it: the user stays where they moved.',
    '4. New users (no jar) spread over the replicas:',
    `     for i in 1 2 3; do curl -s -i '${base}/?format=json' | grep -i -e x-tether-upstream -e visits; done`,
  ]
  if (tether.admin) {
    lines.push(
      `   Drain ${names.at(-1)}: it gets no new users, and its users stay until idle:`,
      `     curl -s -X POST ${tether.admin.replace(/\/+$/, '')}/upstreams/${names.at(-1)}/drain`,
    )
  }
  lines.push('', "`npm run tour` shows all this by itself. Ctrl-C stops everything.", "Tether's access log follows.", '')
  console.log(lines.join('\n'))
}

main().catch((err) => {
  if (!stopping) void shutdown(1, err?.stack ?? String(err))
})
