#!/usr/bin/env node
// `npm start`: Tether in front of three demo replicas, all on loopback.
//
//   node examples/demo.mjs          (after `npm run build`; `npm start` does both)
//
// Starts one examples/demo-app replica per upstream of config/proxy.yaml (app-0..app-2
// on 127.0.0.1:9001-9003), then `node dist/cli.js --config config/proxy.yaml`, waits
// until every process says it is listening, and prints what to try. Ctrl-C stops all.
//
// Environment:
//   DEMO_BASE_PORT   first replica port (default: the ports in proxy.yaml, 9001..);
//                    the replicas take consecutive ports from it
//   DEMO_PORT        Tether's port (default: listen.port of proxy.yaml, 8080)
//   DEMO_ADMIN_PORT  Tether's admin port (default: admin.listen.port, 9901)
// When any is set the demo runs Tether on a copy of proxy.yaml with those ports.
//
// If a process dies (say port 8080 is taken) the demo prints why, stops the rest and
// exits 1.

import { spawn } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, relative, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { parseDocument } from 'yaml'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const CONFIG = join(ROOT, 'config', 'proxy.yaml')
const CLI = join(ROOT, 'dist', 'cli.js')
const APP = join(ROOT, 'examples', 'demo-app', 'server.mjs')

/** How long every process together has to come up. */
const STARTUP_DEADLINE_MS = 15_000
/** How long a process has to exit after SIGTERM before it gets SIGKILL. */
const STOP_DEADLINE_MS = 5_000
/** Lines of a process's own output kept to explain its death. */
const KEEP_LINES = 6

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
    return { id: String(upstream.id), port }
  })

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

// ---------------------------------------------------------------- child processes

/** @type {Set<Child>} */
const children = new Set()
let stopping = false

/**
 * One supervised process. `onLine(line)` sees every stdout line; returning a value
 * other than undefined marks the child ready with that value.
 */
class Child {
  constructor(name, args, onLine) {
    this.name = name
    this.recent = []
    this.exited = false
    this.ready = new Promise((res, rej) => {
      this.resolveReady = res
      this.rejectReady = rej
    })
    this.ready.catch(() => {})
    this.proc = spawn(process.execPath, args, {
      cwd: ROOT,
      // Own process group: a terminal's Ctrl-C reaches only this script, which then
      // stops the children in order (Tether first) instead of all of them at once.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    children.add(this)
    this.exitedPromise = new Promise((res) => this.proc.once('exit', res))

    createInterface({ input: this.proc.stdout, crlfDelay: Infinity }).on('line', (line) => {
      const value = onLine.call(this, line)
      if (value !== undefined) this.resolveReady(value)
    })
    createInterface({ input: this.proc.stderr, crlfDelay: Infinity }).on('line', (line) => {
      this.remember(line)
      console.error(dim(`[${this.name}] `) + line)
    })
    this.proc.once('error', (err) => this.died(`could not start: ${err.message}`))
    this.proc.once('exit', (code, signal) => {
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
    if (!children.delete(this)) return // 'error' and 'exit' can both report one death
    const err = new Error(`${this.name} ${how}`)
    err.childDeath = true
    this.rejectReady(err)
    if (stopping) return
    // Let the last buffered output lines arrive before explaining the death.
    setImmediate(() => {
      const recent = this.recent.slice(-3)
      const last = recent.length > 0 ? `; last output: ${recent.join(' | ')}` : ''
      shutdown(1, `${this.name} ${how.replace(/^(exited|was killed)/, '$1 unexpectedly')}${last}`)
    })
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

async function shutdown(code, reason) {
  if (stopping) return
  stopping = true
  if (reason) console.error(`demo: ${reason}`)
  else console.log('\nstopping Tether and the replicas...')
  // Tether first, so it does not log every replica going away.
  const all = [...children]
  const proxies = all.filter((c) => c.name === 'tether')
  await Promise.all(proxies.map((c) => c.stop()))
  await Promise.all(all.filter((c) => c.name !== 'tether').map((c) => c.stop()))
  cleanupConfig()
  process.exit(code)
}

// If this script exits any other way, take the children along.
process.on('exit', () => {
  for (const child of children) child.signal('SIGKILL')
})
process.on('SIGINT', () => shutdown(0))
process.on('SIGTERM', () => shutdown(0))
process.on('SIGHUP', () => shutdown(0))

// ---------------------------------------------------------------- Tether's log lines

const LEVELS = { 10: 'trace', 20: 'debug', 30: 'info', 40: 'warn', 50: 'error', 60: 'fatal' }

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
 * status) become `GET / -> app-1 200 3ms [outcome]`; others `level msg key=value...`.
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
    const outcomeText = outcome !== undefined && outcome !== 'ok' ? ` ${outcome}` : ''
    return `${method} ${path}${upstreamText} ${status}${msText}${outcomeText}`
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
  if (!existsSync(CLI)) {
    fail(`${relative(process.cwd(), CLI) || CLI} not found: build first with \`npm run build\` (\`npm start\` builds and runs the demo)`)
  }
  const prepared = prepareConfig()
  cleanupConfig = prepared.cleanup
  const { configPath, replicas } = prepared

  const replicaChildren = replicas.map(
    ({ id, port }) =>
      new Child(id, [APP, '--id', id, '--port', String(port), '--host', '127.0.0.1'], function (line) {
        const m = /listening on (http:\/\/\S+)/.exec(line)
        if (m) return m[1]
        this.remember(line)
        console.log(dim(`[${id}] `) + line)
        return undefined
      }),
  )

  let deadlineTimer
  const deadline = new Promise((_, rej) => {
    deadlineTimer = setTimeout(() => {
      const waiting = [...children].filter((c) => !c.isReady).map((c) => c.name)
      rej(new Error(`still waiting after ${STARTUP_DEADLINE_MS / 1000}s for ${waiting.join(', ') || 'startup'}`))
    }, STARTUP_DEADLINE_MS)
  })
  const markReady = (child) => child.ready.then(() => (child.isReady = true))

  try {
    await Promise.race([Promise.all(replicaChildren.map(markReady)), deadline])

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
        return typeof entry.url === 'string' ? entry.url : 'http://127.0.0.1:8080'
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
    const url = await Promise.race([markReady(tether).then(() => tether.ready), deadline])
    clearTimeout(deadlineTimer)
    if (stopping) return
    printInstructions(url, replicas)
  } catch (err) {
    clearTimeout(deadlineTimer)
    // A child's death starts the shutdown itself, with its own explanation.
    if (!err.childDeath && !stopping) await shutdown(1, err.message)
  }
}

function printInstructions(url, replicas) {
  const base = url.replace(/\/+$/, '')
  const jar = join(tmpdir(), 'tether.jar')
  const curl = `curl -s -c ${jar} -b ${jar} ${base}/`
  const names = replicas.map((r) => r.id)
  const list = names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names.at(-1)}` : names[0]
  const lines = [
    '',
    bold(`Tether is running on ${base} in front of ${names.join(', ')}`),
    '',
    '  One user (the cookie jar keeps Tether\'s signed "tether" cookie and the app\'s demo_user):',
    `    for i in 1 2 3 4 5 6; do ${curl}; done`,
    '  The first answer pins the user to one of ' + list + ';',
    '  every later one comes from the same replica, and its counter keeps growing.',
    '',
    '  A new user on every request (no cookie jar), spread over the replicas:',
    `    for i in 1 2 3; do curl -s -i '${base}/?format=json' | grep -i -e x-tether-upstream -e visits; done`,
    '  A replica directly, bypassing Tether:',
    `    curl -s http://127.0.0.1:${replicas[0].port}/`,
    '',
    'Tether\'s access log follows. Ctrl-C stops everything.',
    '',
  ]
  console.log(lines.join('\n'))
}

main().catch((err) => {
  if (!stopping) shutdown(1, err?.stack ?? String(err))
})
