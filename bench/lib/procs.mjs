// Child-process plumbing for the benchmark: spawning in own process groups, stderr capture,
// readiness polling, CPU accounting from /proc, and guaranteed cleanup.
import { spawn, execFileSync } from 'node:child_process'
import { readFileSync, readdirSync, existsSync, accessSync, constants } from 'node:fs'
import net from 'node:net'
import http from 'node:http'
import https from 'node:https'
import path from 'node:path'

const children = new Set()

/** Clock ticks per second for /proc/<pid>/stat utime/stime (almost always 100). */
export const CLK_TCK = (() => {
  try {
    const n = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim())
    return Number.isFinite(n) && n > 0 ? n : 100
  } catch {
    return 100
  }
})()

/** Find an executable on PATH (plus the sbin dirs a non-root PATH may lack); null if absent. */
export function which(cmd) {
  const dirs = (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/usr/local/sbin', '/sbin'])
  for (const d of dirs) {
    if (!d) continue
    const p = path.join(d, cmd)
    try {
      accessSync(p, constants.X_OK)
      return p
    } catch {}
  }
  return null
}

/** A free TCP port on 127.0.0.1 (listen on 0, read it, close). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.unref()
    s.on('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

/**
 * Spawn a child in its own process group (so we can kill its whole tree, e.g. nginx workers
 * or a `sh -c` wrapper) and keep the tail of its output for error messages.
 */
export function startChild(name, cmd, args, opts = {}) {
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
    shell: opts.shell ?? false,
    env: { ...process.env, ...(opts.env ?? {}) },
    cwd: opts.cwd,
  })
  const rec = { name, child, pid: child.pid, output: '', exited: null, cmdline: [cmd, ...args].join(' ') }
  const keep = (buf) => {
    rec.output = (rec.output + buf.toString()).slice(-8192)
  }
  child.stdout.on('data', keep)
  child.stderr.on('data', keep)
  rec.exitPromise = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      rec.exited = { code, signal }
      children.delete(rec)
      resolve(rec.exited)
    })
    child.on('error', (err) => {
      rec.exited = { code: null, signal: null, error: err }
      rec.output += `\n[spawn error] ${err.message}`
      children.delete(rec)
      resolve(rec.exited)
    })
  })
  children.add(rec)
  return rec
}

function describeExit(rec) {
  const e = rec.exited
  const how = e.error ? `failed to spawn (${e.error.message})` : `exited (code ${e.code}, signal ${e.signal})`
  return `${rec.name} ${how}; command: ${rec.cmdline}\n--- last output ---\n${rec.output.trim() || '(none)'}`
}

/** Wait for the first stdout line that parses as JSON (used by the upstream servers). */
export function waitForJsonLine(rec, timeoutMs = 10_000) {
  return new Promise((resolve, reject) => {
    let buf = ''
    const timer = setTimeout(() => done(new Error(`${rec.name}: no ready line within ${timeoutMs} ms\n${rec.output}`)), timeoutMs)
    const onData = (d) => {
      buf += d.toString()
      for (const line of buf.split('\n').slice(0, -1)) {
        try {
          return done(null, JSON.parse(line))
        } catch {}
      }
    }
    const onExit = () => done(new Error(describeExit(rec)))
    function done(err, val) {
      clearTimeout(timer)
      rec.child.stdout.off('data', onData)
      rec.child.off('exit', onExit)
      err ? reject(err) : resolve(val)
    }
    rec.child.stdout.on('data', onData)
    rec.child.once('exit', onExit)
  })
}

function httpGetStatus(port, headers, tls) {
  return new Promise((resolve) => {
    const opts = { host: '127.0.0.1', port, path: '/', headers, agent: false, timeout: 1000 }
    // tls: HTTPS/1.1 (no ALPN offered, so an h2-capable listener answers in HTTP/1.1), any certificate
    const req = (tls ? https : http).get(tls ? { ...opts, rejectUnauthorized: false } : opts, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode))
      res.on('error', () => resolve(null))
    })
    req.on('timeout', () => req.destroy())
    req.on('error', () => resolve(null))
  })
}

/**
 * Poll until an HTTP GET through `port` answers 200 (this proves the listener is up AND it
 * can reach the upstreams); over HTTPS with `tls`. Fails fast if the child exits; deadline `timeoutMs`.
 */
export async function waitHttpReady(rec, port, headers = {}, timeoutMs = 10_000, { tls = false } = {}) {
  const deadline = Date.now() + timeoutMs
  let last = null
  while (Date.now() < deadline) {
    if (rec.exited) throw new Error(describeExit(rec))
    last = await httpGetStatus(port, headers, tls)
    if (last === 200) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(
    `${rec.name} not ready on ${tls ? 'https' : 'http'}://127.0.0.1:${port} within ${timeoutMs} ms (last status: ${last ?? 'no connection'}); ` +
      `command: ${rec.cmdline}\n--- last output ---\n${rec.output.trim() || '(none)'}`,
  )
}

function readStat(pid) {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    // f[0] = field 3 (state); ppid is field 4, utime 14, stime 15.
    return { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) }
  } catch {
    return null
  }
}

/**
 * CPU ticks (utime+stime) of each root pid summed over its live process tree.
 * Returns Map<rootPid, ticks>.
 */
export function cpuTicks(rootPids) {
  const stats = new Map()
  const kids = new Map()
  for (const ent of readdirSync('/proc')) {
    if (!/^\d+$/.test(ent)) continue
    const st = readStat(ent)
    if (!st) continue
    const pid = Number(ent)
    stats.set(pid, st)
    if (!kids.has(st.ppid)) kids.set(st.ppid, [])
    kids.get(st.ppid).push(pid)
  }
  const out = new Map()
  for (const root of rootPids) {
    let sum = 0
    const stack = [root]
    const seen = new Set()
    while (stack.length) {
      const p = stack.pop()
      if (seen.has(p)) continue
      seen.add(p)
      const st = stats.get(p)
      if (st) sum += st.ticks
      for (const k of kids.get(p) ?? []) stack.push(k)
    }
    out.set(root, sum)
  }
  return out
}

export const procAvailable = () => existsSync('/proc/self/stat')

function killGroup(rec, sig) {
  try {
    process.kill(-rec.pid, sig)
  } catch {
    try {
      process.kill(rec.pid, sig)
    } catch {}
  }
}

/**
 * Freeze every child in `recs` (SIGSTOP to its process group) and return a function that
 * continues them (SIGCONT). The harness freezes the idle contestants while one is measured: an
 * idle Node process still wakes on its own (timers, health checks, and V8's memory reducer,
 * which runs a full GC several seconds after the load stops) on the core the measured proxy
 * is pinned to, where that work would land in the measured window.
 */
export function freeze(recs) {
  const frozen = recs.filter((rec) => rec && !rec.exited)
  for (const rec of frozen) killGroup(rec, 'SIGSTOP')
  return () => {
    for (const rec of frozen) killGroup(rec, 'SIGCONT')
  }
}

/** Graceful: SIGTERM every child group, wait up to `graceMs`, then SIGKILL the rest. */
export async function stopAll(graceMs = 2000) {
  const recs = [...children]
  for (const rec of recs) killGroup(rec, 'SIGTERM')
  // a frozen child (see freeze) acts on SIGTERM only once continued
  for (const rec of recs) killGroup(rec, 'SIGCONT')
  await Promise.race([Promise.all(recs.map((r) => r.exitPromise)), new Promise((r) => setTimeout(r, graceMs).unref())])
  for (const rec of [...children]) killGroup(rec, 'SIGKILL')
}

/** Last resort, synchronous (process 'exit' handler): SIGKILL whatever is left. */
export function killAllSync() {
  for (const rec of [...children]) killGroup(rec, 'SIGKILL')
}

/** Host-wide CPU ticks from /proc/stat: busy (everything but idle+iowait) and total, all cores. */
export function hostTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number)
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0) // user..steal (guest is inside user)
  return { busy: total - f[3] - f[4], total }
}
