// The plain-PHP example (examples/php: native $_SESSION in per-replica file storage + tether.php)
// behind Tether with `affinity.key: app_cookie` (PHPSESSID): Tether learns the PHP session
// cookie, keeps the user on the replica that created it, and when that `php -S` process is
// SIGKILLed, delivers the newest checkpoint to the next replica, so no increment is lost.
// tether.php restores only what verifies (signed with TETHER_STATE_SECRET, of the session the
// request presented, fresh, newer than the local copy), also when a replica is reached directly,
// and restores nothing without a secret.
import t, { type Test } from 'tap'
import type http from 'node:http'
import { fileURLToPath } from 'node:url'
import { startTether, type Tether } from '../src/app.js'
import type { Config } from '../src/config/schema.js'
import { createLogger } from '../src/observability/logger.js'
import { testConfig } from './fixtures/upstream.js'
import { CookieJar, get, userAgent } from './fixtures/users.js'
import { readCheckpoint, signCheckpoint, type Envelope } from './fixtures/laravel-app.js'
import { phpProblem, startPhpReplica, type PhpReplica, type PhpReplicaOptions } from './fixtures/php-server.js'

const DOCROOT = fileURLToPath(new URL('../examples/php/', import.meta.url))
/** The replicas' TETHER_STATE_SECRET (at least 32 bytes, as tether.php requires). */
const SECRET = 'php-example-test-secret-0123456789'
const OTHER_SECRET = 'another-secret-of-the-same-length-!'
/** Spellings PHP folds into $_SERVER['HTTP_X_TETHER_REHYDRATE'] by case and `_`. */
const SPELLINGS = ['X_Tether_Rehydrate', 'X-Tether_Rehydrate', 'x-tether-rehydrate'] as const
/** And by `.`, which PHP registers as `_` too (`php_register_variable_ex`): every spelling sent through Tether. */
const FOLDED_SPELLINGS = [...SPELLINGS, 'X.Tether.Rehydrate', 'X-Tether.Rehydrate'] as const

interface Page { replica: string; count: number; rehydrate: string }

interface Visit {
  status: number
  headers: http.IncomingHttpHeaders
  page: Page
}

/** One GET / as the user of `jar` (cookies applied), with extra request headers. */
async function visit(url: string, jar: CookieJar, headers: http.OutgoingHttpHeaders = {}): Promise<Visit> {
  const agent = userAgent(1)
  try {
    const r = await get(url, agent, headers, jar)
    try {
      return { status: r.status, headers: r.headers, page: JSON.parse(r.body) as Page }
    } catch {
      throw new Error(`not JSON (status ${r.status}): ${r.body}`)
    }
  } finally {
    agent.destroy()
  }
}

/** Names of X-Tether-* headers in an answer (the client must never see any). */
const tetherHeaders = (v: Visit): string[] => Object.keys(v.headers).filter((h) => h.startsWith('x-tether-'))

/** Resolves once the replica's log has `count` lines containing `text` (polled, 5 s deadline). */
async function logLines(replica: PhpReplica, text: string, count = 1): Promise<string[]> {
  const deadline = Date.now() + 5_000
  for (;;) {
    const lines = replica.log().split('\n').filter((l) => l.includes(text))
    if (lines.length >= count || Date.now() > deadline) return lines
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** The old adapter's unsigned format (base64url JSON of $_SESSION), which it restored as is. */
const unsigned = (session: Record<string, unknown>): string => Buffer.from(JSON.stringify(session)).toString('base64url')
const now = (): number => Math.floor(Date.now() / 1000)

async function setup(t: Test, opts: PhpReplicaOptions & { forwarding?: Partial<Config['forwarding']> } = {}): Promise<{ replicas: PhpReplica[]; tether: Tether }> {
  const replicas: PhpReplica[] = []
  t.teardown(async () => { await Promise.all(replicas.map((r) => r.close())) })
  for (const id of ['php-a', 'php-b', 'php-c']) {
    replicas.push(await startPhpReplica(id, DOCROOT, { ...opts, env: { TETHER_STATE_SECRET: SECRET, ...opts.env } }))
  }
  const tether = await startTether(testConfig(replicas, {
    affinity: { key: 'app_cookie', app_cookie: { name: 'PHPSESSID', fallback: 'random' } },
    ...(opts.forwarding === undefined ? {} : { forwarding: opts.forwarding }),
  }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  return { replicas, tether }
}

const problem = phpProblem()

t.test('php is available', async (t) => {
  t.equal(problem, null, problem ?? 'php runs')
})

if (problem === null) {
  t.test('a PHP session survives the SIGKILL of its replica (default session settings)', async (t) => {
    const { replicas, tether } = await setup(t)
    const alice = new CookieJar()
    const bob = new CookieJar()

    const a1 = await visit(tether.url, alice)
    t.equal(a1.status, 200)
    t.match(a1.page, { count: 1, rehydrate: 'none' })
    const sid = alice.cookies.get('PHPSESSID')
    t.ok(sid, 'PHP issued PHPSESSID')
    t.same(tetherHeaders(a1), [], 'no X-Tether-* header reaches the client')
    const home = a1.page.replica

    const b1 = await visit(tether.url, bob)
    t.match(b1.page, { count: 1, rehydrate: 'none' })

    for (let n = 2; n <= 5; n++) {
      const v = await visit(tether.url, alice)
      t.same(v.page, { replica: home, count: n, rehydrate: 'none' }, `alice request ${n}: learned PHPSESSID keeps her on ${home}`)
      t.same(tetherHeaders(v), [])
    }
    t.same((await visit(tether.url, bob)).page, { replica: b1.page.replica, count: 2, rehydrate: 'none' })

    const dead = replicas.find((r) => r.id === home)!
    t.match(await dead.kill('SIGKILL'), { signal: 'SIGKILL' }, `${home} was SIGKILLed`)

    const moved = await visit(tether.url, alice)
    t.equal(moved.status, 200, 'the request after the kill succeeds (retried on the next replica)')
    t.not(moved.page.replica, home, 'moved to another replica')
    t.same(moved.page, { replica: moved.page.replica, count: 6, rehydrate: 'restored' }, 'the count continues from the signed checkpoint: no acknowledged increment lost')
    t.same(tetherHeaders(moved), [], 'the new checkpoint is stripped too')
    t.equal(alice.cookies.get('PHPSESSID'), sid, 'same PHP session id (use_strict_mode off accepts it)')

    const after = await visit(tether.url, alice)
    t.same(after.page, { replica: moved.page.replica, count: 7, rehydrate: 'none' }, 'stays on the new replica, served from its local session')

    // bob was placed by the fallback for users without PHPSESSID: on another replica, or on alice's
    const b3 = await visit(tether.url, bob)
    if (b1.page.replica !== home) t.same(b3.page, { replica: b1.page.replica, count: 3, rehydrate: 'none' }, 'bob is unaffected: same replica, same count, nothing restored')
    else t.same(b3.page, { replica: b3.page.replica, count: 3, rehydrate: 'restored' }, "bob, on the same replica, got his own session back, not alice's")
  })

  t.test('with session.use_strict_mode=1: the new session id is learned, a second kill rehydrates again', async (t) => {
    const { replicas, tether } = await setup(t, { ini: { 'session.use_strict_mode': '1' } })
    const user = new CookieJar()
    let v = await visit(tether.url, user)
    for (let n = 2; n <= 3; n++) v = await visit(tether.url, user)
    t.match(v.page, { count: 3, rehydrate: 'none' })
    const first = v.page.replica
    const sid = user.cookies.get('PHPSESSID')

    await replicas.find((r) => r.id === first)!.kill()
    v = await visit(tether.url, user)
    t.match(v.page, { count: 4, rehydrate: 'restored' }, 'the checkpoint of the id the user presented is restored into the new session')
    const second = v.page.replica
    t.not(second, first)
    t.not(user.cookies.get('PHPSESSID'), sid, 'strict mode refused the unknown id and issued a new one')
    v = await visit(tether.url, user)
    t.same(v.page, { replica: second, count: 5, rehydrate: 'none' }, 'Tether learned the new id on the new replica')

    await replicas.find((r) => r.id === second)!.kill()
    v = await visit(tether.url, user)
    t.not(v.page.replica, first)
    t.not(v.page.replica, second)
    t.same(v.page, { replica: v.page.replica, count: 6, rehydrate: 'restored' }, 'the checkpoint written (and signed) under the new id moved along')
    t.same(tetherHeaders(v), [])
  })

  t.test('forged rehydration headers in every spelling change nothing through Tether, and the kill -9 failover still restores the real checkpoint', async (t) => {
    // allow_underscores: names with `_` are forwarded, so only the reserved-name rule removes them
    const { replicas, tether } = await setup(t, { forwarding: { allow_underscores: true } })
    const user = new CookieJar()
    const first = await visit(tether.url, user)
    const home = first.page.replica
    const sid = user.cookies.get('PHPSESSID')!
    // what the old adapter restored as is, one signed with another secret, and even one signed
    // with the replicas' own secret (Tether removes it before tether.php sees it)
    const forged = (n: number): string[] => [
      unsigned({ __tether_version: 900 + n, count: 1000 }),
      signCheckpoint({ sid, at: now(), s: { __tether_version: 900 + n, count: 1000 } }, OTHER_SECRET),
      signCheckpoint({ sid, at: now(), s: { __tether_version: 900 + n, count: 1000 } }, SECRET),
    ]
    let count = 1
    for (const spelling of FOLDED_SPELLINGS) {
      for (const value of forged(count)) {
        const v = await visit(tether.url, user, { [spelling]: value })
        t.same(v.page, { replica: home, count: ++count, rehydrate: 'none' }, `${spelling} sent by the client never reaches the replica`)
      }
    }

    await replicas.find((r) => r.id === home)!.kill()
    const moved = await visit(tether.url, user, Object.fromEntries(FOLDED_SPELLINGS.map((s) => [s, forged(count)[2]!])))
    t.not(moved.page.replica, home)
    t.same(moved.page, { replica: moved.page.replica, count: count + 1, rehydrate: 'restored' }, `Tether's delivered checkpoint is restored, not the client's ${FOLDED_SPELLINGS.length} forged ones`)
    t.same(tetherHeaders(moved), [])
  })

  t.test('tether.php restores only a checkpoint that verifies under the secret, is of this session, is fresh and is newer than the local one, also when a replica is reached directly', async (t) => {
    const replica = await startPhpReplica('php-solo', DOCROOT, { env: { TETHER_STATE_SECRET: SECRET } })
    t.teardown(() => replica.close())
    const jar = new CookieJar()
    /** GET / straight to the replica (as a misconfigured proxy, or anyone who reaches the pod, could). */
    const direct = async (headers: http.OutgoingHttpHeaders = {}): Promise<{ page: Page; state: string }> => {
      const v = await visit(replica.url, jar, headers)
      t.equal(v.status, 200)
      return { page: v.page, state: String(v.headers['x-tether-state']) }
    }
    const first = await direct()
    const second = await direct()
    const sid = jar.cookies.get('PHPSESSID')!
    const env = readCheckpoint(second.state)
    t.same(env, { sid, at: env.at, s: { __tether_version: 2, count: 2 } }, 'the checkpoint holds the session, its id and its version')
    t.equal(signCheckpoint(env, SECRET), second.state, "the format is the documented one (the Laravel example's): the test's own encoder gives the same value")

    const newer: Envelope = { ...env, at: now(), s: { __tether_version: 50, count: 40 } }
    const [body, mac] = [second.state.split('.')[1]!, second.state.split('.')[2]!]
    const tampered = Buffer.from(Buffer.from(body, 'base64url').toString().replace('"count":2', '"count":99').replace('"__tether_version":2', '"__tether_version":99')).toString('base64url')
    const lifetime = 1440 // session.gc_maxlifetime's default
    const cases: [string, string, string][] = [
      ['its own older checkpoint (a replica that still holds a newer session)', first.state, 'not newer'],
      ['its latest checkpoint, replayed after the session went on', second.state, 'not newer'],
      ['a forged one: the payload changed, the MAC kept', `v1.${tampered}.${mac}`, 'signature'],
      ['one signed with another secret', signCheckpoint(newer, OTHER_SECRET), 'signature'],
      ['one without a MAC', `v1.${body}`, 'malformed'],
      ["the old adapter's unsigned format", unsigned(newer.s), 'malformed'],
      ["the old adapter's format with a MAC", `${unsigned(newer.s)}.${mac}`, 'malformed'],
      ["one of another session (a proxy delivering the wrong user's state)", signCheckpoint({ ...newer, sid: 'x'.repeat(26) }, SECRET), 'another session'],
      ['one older than session.gc_maxlifetime', signCheckpoint({ ...newer, at: now() - lifetime - 60 }, SECRET), 'expired'],
      ['one from the future', signCheckpoint({ ...newer, at: now() + 3600 }, SECRET), 'expired'],
      ['garbage', 'not a checkpoint', 'malformed'],
    ]
    let count = second.page.count
    for (const [what, value, why] of cases) {
      for (const spelling of SPELLINGS) {
        const { page } = await direct({ [spelling]: value })
        t.same(page, { replica: 'php-solo', count: ++count, rehydrate: `ignored: ${why}` }, `${what}, as ${spelling}: ignored (${why}); the local session goes on`)
      }
    }
    for (const why of new Set(cases.map((c) => c[2]))) {
      const line = `tether: X-Tether-Rehydrate ignored: ${why}`
      const n = 3 * cases.filter((c) => c[2] === why).length
      t.equal((await logLines(replica, line, n)).length, n, `the replica logged "${line}" for each of them`)
    }
    t.equal(jar.cookies.get('PHPSESSID'), sid, 'still the same session')

    const restored = await direct({ 'x-tether-rehydrate': signCheckpoint(newer, SECRET) })
    t.same(restored.page, { replica: 'php-solo', count: 41, rehydrate: 'restored' }, 'the same checkpoint signed with the secret, of this session and newer, is restored (so the refusals above are the checks at work)')
    const replayed = await direct({ 'x-tether-rehydrate': signCheckpoint(newer, SECRET) })
    t.same(replayed.page, { replica: 'php-solo', count: 42, rehydrate: 'ignored: not newer' }, 'and replaying it changes nothing')
    t.same(readCheckpoint(replayed.state).s, { __tether_version: 52, count: 42 })

    // behind Tether every request carries X-Tether-Epoch: a checkpoint from a later epoch is
    // newer whatever its version (the user moved since this copy was written, and the replica
    // they moved to may have started its versions again), as one with a higher version is
    // whatever its epoch (a key placed again starts again at epoch 0); one older by both is not
    const atEpoch3 = await direct({ 'x-tether-epoch': '3' })
    t.same(readCheckpoint(atEpoch3.state).s, { __tether_version: 53, __tether_epoch: 3, count: 43 }, 'the epoch is kept in the session')
    const later = signCheckpoint({ ...env, at: now(), s: { __tether_version: 5, __tether_epoch: 4, count: 7 } }, SECRET)
    t.same((await direct({ 'x-tether-rehydrate': later, 'x-tether-epoch': '5' })).page, { replica: 'php-solo', count: 8, rehydrate: 'restored' }, 'a later epoch with a lower version: restored')
    const older = signCheckpoint({ ...env, at: now(), s: { __tether_version: 3, __tether_epoch: 2, count: 900 } }, SECRET)
    t.same((await direct({ 'x-tether-rehydrate': older, 'x-tether-epoch': '6' })).page, { replica: 'php-solo', count: 9, rehydrate: 'ignored: not newer' }, 'an earlier epoch and a lower version: not newer')
    const higher = signCheckpoint({ ...env, at: now(), s: { __tether_version: 500, __tether_epoch: 2, count: 50 } }, SECRET)
    t.same((await direct({ 'x-tether-rehydrate': higher, 'x-tether-epoch': '1' })).page, { replica: 'php-solo', count: 51, rehydrate: 'restored' }, 'an earlier epoch with a higher version: restored')
    const restarted = await direct({ 'x-tether-epoch': '0' })
    t.equal(readCheckpoint(restarted.state).s['__tether_epoch'], 2, "the epoch kept is the highest seen (2, the restored copy's: a key placed again starts again at 0)")
  })

  t.test('while rotating secrets, a checkpoint signed with TETHER_STATE_SECRET_PREVIOUS is restored and new ones are signed with the new secret', async (t) => {
    const old = await startPhpReplica('php-old', DOCROOT, { env: { TETHER_STATE_SECRET: SECRET } })
    t.teardown(() => old.close())
    const rotated = await startPhpReplica('php-rotated', DOCROOT, { env: { TETHER_STATE_SECRET: OTHER_SECRET, TETHER_STATE_SECRET_PREVIOUS: SECRET } })
    t.teardown(() => rotated.close())
    const jar = new CookieJar()
    await visit(old.url, jar)
    const last = await visit(old.url, jar)
    const checkpoint = String(last.headers['x-tether-state'])
    const moved = await visit(rotated.url, jar, { 'x-tether-rehydrate': checkpoint })
    t.same(moved.page, { replica: 'php-rotated', count: 3, rehydrate: 'restored' }, 'the old secret still verifies')
    const next = String(moved.headers['x-tether-state'])
    t.equal(signCheckpoint(readCheckpoint(next), OTHER_SECRET), next, 'the new checkpoint is signed with the new secret')
  })

  t.test('without a usable TETHER_STATE_SECRET tether.php restores nothing, sends no checkpoint and logs why', async (t) => {
    for (const [secret, why] of [['', 'TETHER_STATE_SECRET is not set'], ['short-secret', 'TETHER_STATE_SECRET is shorter than 32 bytes']] as const) {
      const replica = await startPhpReplica('php-nosecret', DOCROOT, { env: { TETHER_STATE_SECRET: secret } })
      t.teardown(() => replica.close())
      const jar = new CookieJar()
      const first = await visit(replica.url, jar)
      t.same(first.page, { replica: 'php-nosecret', count: 1, rehydrate: `disabled: ${why}` })
      t.same(tetherHeaders(first), [], 'no checkpoint: there is nothing to sign it with')
      const sid = jar.cookies.get('PHPSESSID')!
      // a checkpoint that a replica with the secret would restore (signed, this session, newer)
      const good = signCheckpoint({ sid, at: now(), s: { __tether_version: 50, count: 40 } }, SECRET)
      for (const value of [good, unsigned({ __tether_version: 50, count: 40 })]) {
        for (const spelling of SPELLINGS) {
          const v = await visit(replica.url, jar, { [spelling]: value })
          t.same(v.page.rehydrate, `disabled: ${why}`, `${spelling}: not restored`)
        }
      }
      const last = await visit(replica.url, jar)
      t.same(last.page.count, 8, 'the local session went on: none of the six was restored')
      const line = `tether: ${why}: no session checkpoint is sent and no X-Tether-Rehydrate is restored`
      t.equal((await logLines(replica, line, 8)).length, 8, `every request logged "${line}"`)
    }
  })
}
