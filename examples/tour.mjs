#!/usr/bin/env node
// `npm run tour`: the failover story told by a script, start to end (about 20 s).
//
//   node examples/tour.mjs        (`npm run tour` runs `exec node examples/tour.mjs`)
//
// Starts the demo (examples/demo.mjs, so the same DEMO_* port variables apply), then:
//   1. one user (a cookie jar) visits three times: one replica answers, the count grows;
//   2. that replica is killed with SIGKILL (its pid from GET /pid through Tether);
//   3. the user goes on: another replica answers and the count continues (rehydrated);
//   4. the dead replica is restarted (the demo's `r` command) and, once Tether finds it
//      healthy, the user still stays where they moved;
//   5. another replica is drained (admin API): new users avoid it, its own user stays;
//   6. the demo is stopped with SIGTERM and every process it started is gone.
// Each step checks what it shows; the tour stops with exit code 1 and the reason when one
// does not hold. SIGINT/SIGTERM stop the demo and exit 130.

import { spawn } from 'node:child_process'
import { request } from 'node:http'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const DEMO = join(ROOT, 'examples', 'demo.mjs')

/** Longest wait for one thing the tour expects (a line from the demo, an answer). */
const STEP_DEADLINE_MS = 20_000
/** Longest wait for Tether to find a restarted replica healthy (its ejection lasts 10 s). */
const HEALTHY_DEADLINE_MS = 40_000
/** New users tried, at most, to find one that lands on a given replica. */
const MAX_NEW_USERS = 100

const tty = process.stdout.isTTY && !process.env.NO_COLOR
const dim = (s) => (tty ? `\x1b[2m${s}\x1b[22m` : s)
const bold = (s) => (tty ? `\x1b[1m${s}\x1b[22m` : s)

class TourError extends Error {}

// ---------------------------------------------------------------- the demo, as a child

const demo = spawn(process.execPath, [DEMO], { cwd: ROOT, env: process.env, stdio: ['pipe', 'pipe', 'pipe'] })
// 'close': the demo exited and every line it printed is read
const demoExit = new Promise((res) => demo.once('close', (code, signal) => res(signal ?? code)))
let demoGone = false
void demoExit.then(() => (demoGone = true))
demo.stdin.on('error', () => {}) // the demo may be gone when the tour writes to it

/** Every line the demo printed, and the waiters for a line to come. */
const lines = []
const waiters = new Set()
let started = false

function onDemoLine(line) {
  lines.push(line)
  if (started) {
    // the demo's events, its processes' lines and its errors; not its hints for people
    // typing, nor the access log (the tour prints the answers), but for a user's move
    const access = /^\[tether\] [A-Z]+ \S+ -> /.test(line)
    if (/^(\[|\* |demo: )/.test(line) && (!access || line.includes('moved here'))) console.log(dim(`  | ${line}`))
  } else if (line.startsWith("Tether's access log follows")) {
    started = true
  }
  for (const waiter of waiters) {
    if (waiter.from <= lines.length - 1 && waiter.pattern.test(line)) waiter.done(line)
  }
}
createInterface({ input: demo.stdout, crlfDelay: Infinity }).on('line', onDemoLine)
createInterface({ input: demo.stderr, crlfDelay: Infinity }).on('line', onDemoLine)

/** Resolves with the first demo line matching `pattern` printed from line index `from` on. */
function demoLine(pattern, what, from = lines.length, ms = STEP_DEADLINE_MS) {
  const seen = lines.slice(from).find((l) => pattern.test(l))
  if (seen !== undefined) return Promise.resolve(seen)
  return new Promise((res, rej) => {
    const waiter = { pattern, from, done: (l) => finish(() => res(l)) }
    const timer = setTimeout(() => finish(() => rej(new TourError(`no sign of ${what} after ${ms / 1000}s`))), ms)
    const gone = () => finish(() => rej(new TourError(`the demo stopped while waiting for ${what}`)))
    void demoExit.then(gone)
    function finish(settle) {
      if (!waiters.delete(waiter)) return
      clearTimeout(timer)
      settle()
    }
    waiters.add(waiter)
  })
}

// ---------------------------------------------------------------- HTTP, as a user

/** One request on a fresh connection: { status, headers, body }. */
function http(method, url, headers = {}) {
  return new Promise((res, rej) => {
    const req = request(url, { method, headers, agent: false }, (response) => {
      let body = ''
      response.setEncoding('utf8')
      response.on('data', (chunk) => (body += chunk))
      response.on('end', () => res({ status: response.statusCode, headers: response.headers, body }))
      response.on('error', rej)
    })
    req.setTimeout(STEP_DEADLINE_MS, () => req.destroy(new TourError(`${method} ${url}: no answer`)))
    req.on('error', rej)
    req.end()
  })
}

/** A user: a cookie jar sending what Tether and the app set, as curl -b/-c would. */
class User {
  constructor(base) {
    this.base = base
    this.jar = new Map()
  }

  async get(path) {
    const cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ')
    const answer = await http('GET', this.base + path, cookie ? { cookie } : {})
    for (const c of answer.headers['set-cookie'] ?? []) {
      const m = /^([^=;\s]+)=([^;]*)/.exec(c)
      if (m) this.jar.set(m[1], m[2])
    }
    if (answer.status !== 200) throw new TourError(`GET ${path} answered ${answer.status}: ${answer.body.trim()}`)
    return answer
  }

  /** GET / once; prints the answer; returns { replica, visits, text }. */
  async visit() {
    const answer = await this.get('/')
    const text = answer.body.trim()
    console.log(`  GET /  ${text}`)
    const m = /^replica (\S+) served you; your visit count: (\d+)/.exec(text)
    if (!m) throw new TourError(`unexpected answer: ${text}`)
    return { replica: m[1], visits: Number(m[2]), text, upstream: answer.headers['x-tether-upstream'] }
  }
}

function check(condition, message) {
  if (!condition) throw new TourError(message)
}

function step(title) {
  console.log(`\n${bold(title)}`)
}

// ---------------------------------------------------------------- the tour

/** Process ids the demo printed: the start-up table, then restarts. */
const pids = new Map()

async function tour() {
  console.log(dim('starting the demo (node examples/demo.mjs)...'))
  const running = await demoLine(/^Tether is running on (http:\/\/\S+)/, 'the demo starting', 0, 60_000)
  const base = /^Tether is running on (http:\/\/\S+)/.exec(running)[1]
  await demoLine(/^Tether's access log follows/, 'the end of the instructions', 0)
  let admin = null
  for (const line of lines) {
    const m = /^ {2}(\S+)\s+pid (\d+)\s+(http:\/\/\S+)(?: \(admin (http:\/\/\S+)\))?/.exec(line)
    if (!m) continue
    pids.set(m[1], Number(m[2]))
    if (m[4]) admin = m[4]
  }
  const replicas = [...pids.keys()].filter((id) => id !== 'tether')
  check(replicas.length >= 2, 'the tour needs at least two replicas')
  console.log(`Tether (pid ${pids.get('tether')}) runs on ${base} in front of ${replicas.join(', ')}.`)

  step('1. One user, three visits: Tether keeps them on one replica.')
  const user = new User(base)
  const first = []
  for (let i = 0; i < 3; i++) first.push(await user.visit())
  const home = first[0].replica
  check(first.every((v) => v.replica === home), 'the user was not kept on one replica')
  check(first.map((v) => v.visits).join() === '1,2,3', 'the count did not grow 1, 2, 3')

  step(`2. Kill ${home}, the user's replica, as a crash would.`)
  const pid = Number((await user.get('/pid')).body.trim())
  check(pid === pids.get(home), `GET /pid said ${pid}, the demo said ${home} is pid ${pids.get(home)}`)
  console.log(`  kill -9 ${pid}    (GET /pid through Tether answered with ${home}'s pid)`)
  const mark = lines.length
  process.kill(pid, 'SIGKILL')
  await demoLine(new RegExp(`^\\* ${home} \\(pid ${pid}\\) was killed by SIGKILL`), `the demo noticing ${home}'s death`, mark)

  step('3. The same user goes on: another replica answers, and the count continues.')
  const moved = []
  for (let i = 0; i < 3; i++) moved.push(await user.visit())
  const now = moved[0].replica
  check(now !== home, `the user is still on ${home}`)
  check(moved.every((v) => v.replica === now), `the user did not stay on ${now}`)
  check(moved.map((v) => v.visits).join() === '4,5,6', 'the count did not continue 4, 5, 6')
  check(moved[0].text.includes(`moved from ${home}`), `the first answer does not say the user moved from ${home}`)
  console.log(`  ${now} got the user's last checkpoint from Tether (X-Tether-Rehydrate) and the move`)
  console.log(`  (X-Tether-Moved: from=${home}; reason=dead), and restored the count.`)

  step(`4. Restart ${home}: once Tether finds it healthy, the user still stays on ${now}.`)
  const restartMark = lines.length
  demo.stdin.write('r\n')
  console.log(`  (typed r into the demo)`)
  const back = await demoLine(new RegExp(`^\\* ${home} is back \\(pid (\\d+)\\)`), `${home} restarting`, restartMark)
  pids.set(home, Number(/\(pid (\d+)\)/.exec(back)[1]))
  await demoLine(new RegExp(`^\\[tether\\] ${home}: \\S+ -> healthy`), `Tether finding ${home} healthy`, restartMark, HEALTHY_DEADLINE_MS)
  for (let i = 0; i < 2; i++) {
    const v = await user.visit()
    check(v.replica === now, `the user went back to ${v.replica}`)
    check(v.visits === 7 + i, `the count is ${v.visits}, not ${7 + i}`)
  }

  if (admin !== null) {
    const drained = replicas.find((id) => id !== now && id !== home) ?? replicas.find((id) => id !== now)
    step(`5. Drain ${drained}: new users avoid it, its own users stay.`)
    const other = await userOn(base, drained)
    console.log(`  a second user landed on ${drained} (visit count ${other.visits})`)
    const drain = await http('POST', `${admin}/upstreams/${drained}/drain`)
    check(drain.status === 200, `the drain answered ${drain.status}: ${drain.body.trim()}`)
    console.log(`  POST ${admin}/upstreams/${drained}/drain  ${drain.status}`)
    const newcomers = []
    for (let i = 0; i < 6; i++) newcomers.push((await new User(base).get('/')).headers['x-tether-upstream'])
    console.log(`  six new users went to: ${newcomers.join(', ')}`)
    check(!newcomers.includes(drained), `a new user went to ${drained} while it drains`)
    const again = await other.user.visit()
    check(again.replica === drained && again.visits === other.visits + 1, `the second user did not stay on ${drained}`)
  }

  step('6. Stop the demo (SIGTERM): it stops Tether, then the replicas.')
  demo.kill('SIGTERM')
  const code = await demoExit
  check(code === 0, `the demo exited with ${code}`)
  const left = await stillRunning([...pids.values()])
  check(left.length === 0, `still running after the demo stopped: pids ${left.join(', ')}`)
  console.log(`  every process is gone (pids ${[...pids.values()].join(', ')})`)
  console.log(`\n${bold('Tour done.')} Try it by hand with \`npm start\`.`)
}

/** New users until one lands on `id`: { user, visits }. */
async function userOn(base, id) {
  for (let i = 0; i < MAX_NEW_USERS; i++) {
    const user = new User(base)
    const answer = await user.get('/?format=json')
    const { replica, visits } = JSON.parse(answer.body)
    if (replica === id) return { user, visits }
  }
  throw new TourError(`none of ${MAX_NEW_USERS} new users landed on ${id}`)
}

/** Pids among `list` that still run once the deadline passes (polls until all are gone). */
async function stillRunning(list) {
  const deadline = Date.now() + STEP_DEADLINE_MS
  for (;;) {
    const left = list.filter(alive)
    if (left.length === 0 || Date.now() > deadline) return left
    await new Promise((res) => setTimeout(res, 100))
  }
}

function alive(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code === 'EPERM'
  }
}

// ---------------------------------------------------------------- start and stop

let ending = false

/** Stops the demo (SIGTERM, waits for it) and exits with `code`. */
async function end(code, message) {
  if (ending) return
  ending = true
  if (message) console.error(`\ntour: ${message}`)
  if (!demoGone) {
    demo.kill('SIGTERM')
    await demoExit
  }
  process.exit(code)
}

process.on('SIGINT', () => void end(130, 'interrupted'))
process.on('SIGTERM', () => void end(130, 'interrupted'))

// Orphaned (npm killed with SIGKILL, say): the re-parented tour stops the demo and ends.
const parent = process.ppid
if (parent > 1) {
  setInterval(() => {
    if (process.ppid !== parent) void end(1, 'the process that started the tour is gone')
  }, 500).unref()
}

void demoExit.then((code) => {
  if (ending || code === 0) return
  // the demo explains its own failure (a port in use, say) in the lines it printed last
  if (!started) for (const line of lines.slice(-10)) console.error(line)
  void end(1, `the demo stopped (${code})`)
})

tour().then(
  () => end(0),
  (err) => end(1, err instanceof TourError ? err.message : (err?.stack ?? String(err))),
)
