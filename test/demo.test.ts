// The demo app (examples/demo-app/server.mjs) and the shipped configs
// (config/proxy.yaml, config/examples/kubernetes.yaml).
// examples/demo.mjs itself is not run here: it needs dist/ and fixed ports.

import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { request } from 'node:http'
import { dirname, join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { DEFAULTS, loadConfigFile } from '../src/config/index.js'
import { waitFor } from './fixtures/upstream.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const APP = join(ROOT, 'examples', 'demo-app', 'server.mjs')
const DEADLINE_MS = 10_000

interface App {
  proc: ChildProcess
  base: string
  /** Every stdout line so far. */
  stdout: string[]
  /** Resolves with the exit code (or signal name) when the process ends. */
  exited: Promise<number | string | null>
}

function withDeadline<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms}ms waiting for ${what}`)), ms)
  })
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer))
}

/** Starts one replica and resolves once it prints its listening line. */
async function startApp(
  t: Test,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<App> {
  const proc = spawn(process.execPath, [APP, ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const stdout: string[] = []
  let stderr = ''
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const exited = new Promise<number | string | null>((res) =>
    proc.once('exit', (code, signal) => res(signal ?? code)),
  )
  t.teardown(() => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
  })
  const listening = new Promise<string>((res, rej) => {
    createInterface({ input: proc.stdout! }).on('line', (line) => {
      stdout.push(line)
      const m = /listening on (http:\/\/\S+)/.exec(line)
      if (m) res(m[1]!)
    })
    void exited.then((code) => rej(new Error(`demo app exited (${code}) before listening: ${stderr}`)))
  })
  const base = await withDeadline(listening, 'the listening line')
  return { proc, base, stdout, exited }
}

interface Reply {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

/** One GET on a fresh connection (no agent: nothing keeps the test alive). */
function get(url: string, headers: Record<string, string> = {}): Promise<Reply> {
  return withDeadline(
    new Promise<Reply>((res, rej) => {
      const req = request(url, { headers, agent: false }, (response) => {
        let body = ''
        response.setEncoding('utf8')
        response.on('data', (chunk: string) => (body += chunk))
        response.on('end', () => res({ status: response.statusCode!, headers: response.headers, body }))
        response.on('error', rej)
      })
      req.on('error', rej)
      req.end()
    }),
    `GET ${url}`,
  )
}

/** `demo_user=<id>` from a reply's Set-Cookie, or undefined. */
function userCookie(reply: Reply): string | undefined {
  const set = reply.headers['set-cookie'] ?? []
  for (const c of set) {
    const m = /^demo_user=([^;]+)/.exec(c)
    if (m) return m[1]
  }
  return undefined
}

t.test('demo app', async (t) => {
  const app = await startApp(t, ['--id', 'app-x', '--port', '0'])
  t.match(app.stdout[0], /^demo-app app-x listening on http:\/\/127\.0\.0\.1:\d+$/, 'one line with the real port')
  t.not(new URL(app.base).port, '0')

  t.test('counts visits per user cookie', async (t) => {
    const first = await get(`${app.base}/`)
    t.equal(first.status, 200)
    t.match(first.headers['content-type'], /^text\/plain/)
    t.equal(first.body, 'replica app-x served you; your visit count: 1\n')
    const user = userCookie(first)
    t.ok(user, 'sets the demo_user cookie on the first visit')
    t.match(first.headers['set-cookie']![0], /Path=\/; HttpOnly; SameSite=Lax/)

    const second = await get(`${app.base}/`, { cookie: `other=1; demo_user=${user}` })
    t.equal(second.body, 'replica app-x served you; your visit count: 2\n')
    t.equal(userCookie(second), undefined, 'no new cookie for a known user')
    const third = await get(`${app.base}/`, { cookie: `demo_user=${user}` })
    t.equal(third.body, 'replica app-x served you; your visit count: 3\n')
  })

  t.test('separate users have separate counters', async (t) => {
    const a = await get(`${app.base}/`)
    const b = await get(`${app.base}/`)
    const userA = userCookie(a)!
    const userB = userCookie(b)!
    t.not(userA, userB, 'each new visitor gets its own id')
    t.match(b.body, /visit count: 1$/m)
    const a2 = await get(`${app.base}/`, { cookie: `demo_user=${userA}` })
    t.match(a2.body, /visit count: 2$/m)
    const b2 = await get(`${app.base}/`, { cookie: `demo_user=${userB}` })
    t.match(b2.body, /visit count: 2$/m)
  })

  t.test('a malformed cookie value is a new user', async (t) => {
    const reply = await get(`${app.base}/`, { cookie: 'demo_user=no spaces<>' })
    t.ok(userCookie(reply))
    t.match(reply.body, /visit count: 1$/m)
  })

  t.test('JSON with ?format=json or Accept: application/json', async (t) => {
    const first = await get(`${app.base}/?format=json`)
    t.equal(first.status, 200)
    t.match(first.headers['content-type'], /^application\/json/)
    const user = userCookie(first)!
    t.same(JSON.parse(first.body), { replica: 'app-x', pid: app.proc.pid, user, visits: 1, rehydrated: false, moved: null })

    const second = await get(`${app.base}/`, {
      accept: 'text/html;q=0.9, application/json',
      cookie: `demo_user=${user}`,
    })
    t.match(second.headers['content-type'], /^application\/json/)
    t.same(JSON.parse(second.body), { replica: 'app-x', pid: app.proc.pid, user, visits: 2, rehydrated: false, moved: null })
  })

  t.test('a returning user this replica does not know is told the count restarted', async (t) => {
    const reply = await get(`${app.base}/`, { cookie: 'demo_user=known-elsewhere' })
    t.equal(userCookie(reply), undefined, 'the user keeps their id')
    t.equal(reply.body, 'replica app-x served you; your visit count: 1 (this replica did not know you: count restarted)\n')
  })

  t.test('/pid answers with the process id, and is no visit', async (t) => {
    const reply = await get(`${app.base}/pid`)
    t.equal(reply.status, 200)
    t.equal(reply.body, `${app.proc.pid}\n`)
    t.equal(userCookie(reply), undefined)
  })

  t.test('/healthz answers 200 ok', async (t) => {
    const reply = await get(`${app.base}/healthz`)
    t.equal(reply.status, 200)
    t.equal(reply.body.trim(), 'ok')
    t.equal(userCookie(reply), undefined, 'no cookie, no visit')
  })

  t.test('unknown paths are 404', async (t) => {
    t.equal((await get(`${app.base}/nope`)).status, 404)
  })

  t.test('SIGTERM exits 0 and nothing was logged per request', async (t) => {
    app.proc.kill('SIGTERM')
    t.equal(await withDeadline(app.exited, 'exit after SIGTERM'), 0)
    t.equal(app.stdout.length, 1, 'only the listening line on stdout')
  })
})

t.test('demo app takes REPLICA_ID and PORT from the environment and stops on SIGINT', async (t) => {
  const app = await startApp(t, [], { REPLICA_ID: 'env-replica', PORT: '0' })
  const reply = await get(`${app.base}/?format=json`)
  t.equal(JSON.parse(reply.body).replica, 'env-replica')
  app.proc.kill('SIGINT')
  t.equal(await withDeadline(app.exited, 'exit after SIGINT'), 0)
})

t.test('demo app rejects a bad port', async (t) => {
  const proc = spawn(process.execPath, [APP, '--id', 'x', '--port', 'eighty'], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  proc.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
  const code = await withDeadline(new Promise((res) => proc.once('exit', res)), 'exit')
  t.equal(code, 2)
  t.match(stderr, /invalid port/)
})

t.test('config/proxy.yaml loads: the demo topology, every other key at its default', async (t) => {
  const config = await loadConfigFile(join(ROOT, 'config', 'proxy.yaml'), {})
  t.same(config.listen, { ...DEFAULTS.listen, host: '127.0.0.1', port: 8080 }, 'demo stays on loopback')
  t.same(config.admin, DEFAULTS.admin)
  t.same(
    config.upstreams.map((u) => ({ id: u.id, origin: new URL(u.url).origin, weight: u.weight })),
    [
      { id: 'app-0', origin: 'http://127.0.0.1:9001', weight: 1 },
      { id: 'app-1', origin: 'http://127.0.0.1:9002', weight: 1 },
      { id: 'app-2', origin: 'http://127.0.0.1:9003', weight: 1 },
    ],
  )
  // The file's comments name each default; the values written must be those defaults.
  // ...but for Secure, which the demo turns off to run on plain http://127.0.0.1
  t.same(config.affinity, { ...DEFAULTS.affinity, cookie: { ...DEFAULTS.affinity.cookie, secure: false } })
  t.same(config.timeouts, DEFAULTS.timeouts)
  t.same(config.limits, DEFAULTS.limits)
  t.same(config.forwarding, { ...DEFAULTS.forwarding, upstream_header: true }, 'the demo shows X-Tether-Upstream')
  t.same(config.log, DEFAULTS.log)

  // The container image sets TETHER_HOST=0.0.0.0 and ships this file as its default.
  const inContainer = await loadConfigFile(join(ROOT, 'config', 'proxy.yaml'), { TETHER_HOST: '0.0.0.0' })
  t.same(inContainer.listen, { ...DEFAULTS.listen, host: '0.0.0.0', port: 8080 })
})

t.test('config/examples/kubernetes.yaml loads', async (t) => {
  const file = join(ROOT, 'config', 'examples', 'kubernetes.yaml')
  const env: NodeJS.ProcessEnv = { ...process.env, TETHER_ADMIN_TOKEN: 'x', TETHER_SECRET: 'a-secret-of-32-characters-or-so!' }
  delete env.LOG_LEVEL
  const config = await loadConfigFile(file, env)
  t.same(config.listen, { ...DEFAULTS.listen, host: '0.0.0.0', port: 8080 })
  t.same(config.admin, { listen: { host: '0.0.0.0', port: 9901 }, token: 'x', allowed_hosts: [], readiness: { require_upstream: 'startup' } })
  t.same(
    config.upstreams.map((u) => [u.id, new URL(u.url).origin]),
    [0, 1, 2].map((i) => [`web-${i}`, `http://web-${i}.web.default.svc.cluster.local:8080`]),
  )
  t.same(config.forwarding, DEFAULTS.forwarding)
  t.equal(config.affinity.key, 'cookie')
  t.same(config.affinity.cookie.secret, ['a-secret-of-32-characters-or-so!'])
  t.equal(config.log.level, 'info', 'LOG_LEVEL unset -> info')
  t.equal(config.limits.max_body_bytes, 10 * 1024 * 1024)

  const debug = await loadConfigFile(file, { TETHER_ADMIN_TOKEN: 'x', TETHER_SECRET: 'a-secret-of-32-characters-or-so!', LOG_LEVEL: 'debug' })
  t.equal(debug.log.level, 'debug')

  await t.rejects(
    async () => loadConfigFile(file, {}),
    { message: /TETHER_ADMIN_TOKEN/ },
    'the admin token must come from the environment',
  )
})

t.test('demo app: checkpoints its counter, restores it from X-Tether-Rehydrate and shows the move', async (t) => {
  const app = await startApp(t, ['--id', 'app-y', '--port', '0'])
  const first = await get(`${app.base}/?format=json`)
  const user = (JSON.parse(first.body) as { user: string }).user
  t.equal(first.headers['x-tether-state-version'], '1')
  const state = Buffer.from(String(first.headers['x-tether-state']), 'base64url').toString()
  t.same(JSON.parse(state), { user, visits: 1 })
  t.equal(first.headers['x-demo-moved'], undefined)

  // the user arrives from a dead replica with a checkpoint of 41 visits
  const saved = Buffer.from(JSON.stringify({ user, visits: 41 })).toString('base64url')
  const moved = await get(`${app.base}/?format=json`, {
    cookie: `demo_user=${user}`,
    'x-tether-rehydrate': saved,
    'x-tether-moved': 'from=app-0; reason=dead; epoch=1',
  })
  t.same(JSON.parse(moved.body), {
    replica: 'app-y', pid: app.proc.pid, user, visits: 42, rehydrated: true,
    moved: { from: 'app-0', reason: 'dead', epoch: 1 },
  })
  t.equal(moved.headers['x-demo-moved'], 'from=app-0; reason=dead; epoch=1', 'the move is visible to curl -i')
  t.equal(moved.headers['x-demo-rehydrated'], 'yes')
  t.equal(moved.headers['x-tether-state-version'], '42')
  await waitFor(() => app.stdout.length >= 2, DEADLINE_MS, 'the move line')
  t.equal(app.stdout[1], `user ${user} moved here from app-0 (dead, epoch 1): 41 visits restored`, 'one line per move')

  const text = await get(`${app.base}/`, {
    cookie: `demo_user=${user}`,
    'x-tether-rehydrate': Buffer.from(JSON.stringify({ user, visits: 50 })).toString('base64url'),
    'x-tether-moved': 'from=app-2; reason=drain; epoch=2',
  })
  t.equal(text.body, 'replica app-y served you; your visit count: 51 (moved from app-2, which is draining; count restored)\n')

  const noState = await get(`${app.base}/`, { cookie: 'demo_user=someone-new', 'x-tether-moved': 'from=app-0; reason=rebalance; epoch=3' })
  t.equal(noState.body, 'replica app-y served you; your visit count: 1 (moved from app-0 by a rebalance; no saved count)\n')

  const stale = await get(`${app.base}/`, {
    cookie: `demo_user=${user}`,
    'x-tether-rehydrate': Buffer.from(JSON.stringify({ user, visits: 3 })).toString('base64url'),
    'x-tether-moved': 'from=app-0; reason=dead; epoch=4',
  })
  t.match(stale.body, /your visit count: 52 \(moved from app-0, which is down; no saved count\)$/m, 'an older checkpoint never lowers the count')
})

t.test('demo app: a malformed move or state from a direct caller is ignored, never echoed', async (t) => {
  const app = await startApp(t, ['--id', 'app-z', '--port', '0'])
  for (const moved of ['from=<b>; reason=dead; epoch=1', 'from=app-0; reason=dead', 'from=app-0; reason=DEAD; epoch=1', 'nonsense']) {
    const reply = await get(`${app.base}/?format=json`, { 'x-tether-moved': moved, 'x-tether-rehydrate': 'not base64 json' })
    t.equal(reply.status, 200, moved)
    t.equal(reply.headers['x-demo-moved'], undefined, moved)
    t.match(JSON.parse(reply.body), { visits: 1, rehydrated: false, moved: null }, moved)
  }
  const odd = await get(`${app.base}/`, { 'x-tether-moved': 'from=app-0; reason=constructor; epoch=1' })
  t.match(odd.body, /\(moved from app-0, reason constructor; no saved count\)$/m, 'an unknown reason is named, not looked up')
  await waitFor(() => app.stdout.length >= 2, DEADLINE_MS, 'the move line')
  // the malformed moves came first: had they printed anything, it would be this line
  t.match(app.stdout[1], /^user \S+ moved here from app-0 \(constructor, epoch 1\): no saved count$/, 'one line, for the well-formed move only')
})
