// The Laravel example for real: examples/laravel/app (Laravel 8.83 from Debian's
// php-laravel-framework: file sessions, CSRF, flash messages) as three `php -S` replicas, each
// with its own storage directory, behind Tether. Sticky sessions with Tether's cookie and with
// the rotating laravel_session cookie; a replica SIGKILLed under load, with TetherSessionState
// (nobody notices) and without it (419 Page Expired, counters reset); forged, foreign, expired
// and older checkpoints ignored by the middleware.
import t, { type Test } from 'tap'
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { loadConfigFile } from '../src/config/load.js'
import type { AffinityConfig } from '../src/config/schema.js'
import { testConfig, type DeepPartial } from './fixtures/upstream.js'
import { laravelProblem, type PhpReplica } from './fixtures/php-server.js'
import { APP_KEY, LaravelUser, readCheckpoint, signCheckpoint, startLaravelReplica, type Page, type Step } from './fixtures/laravel-app.js'
import { CookieJar, get, userAgent } from './fixtures/users.js'

type Key = 'cookie' | 'app_cookie'

/** The example's own Tether config (its upstreams replaced by the test's replicas). */
const EXAMPLE = loadConfigFile(fileURLToPath(new URL('../examples/laravel/proxy.yaml', import.meta.url)), {})

const AFFINITY: Record<Key, DeepPartial<AffinityConfig>> = {
  cookie: EXAMPLE.affinity,
  // learned from the app's answers: a new value on every answer (Laravel re-encrypts it)
  app_cookie: { ...EXAMPLE.affinity, key: 'app_cookie', app_cookie: { name: 'laravel_session', fallback: 'random' } },
}

/** Three replicas of the example app (each with its own storage), stopped at the end of `t`. */
async function replicas(t: Test, middleware = true): Promise<PhpReplica[]> {
  const started = await Promise.all(['laravel-a', 'laravel-b', 'laravel-c'].map((id) => startLaravelReplica(id, { middleware })))
  t.teardown(async () => { await Promise.all(started.map((r) => r.close())) })
  return started
}

/** Tether in front of `upstreams` with `key`, and a keep-alive agent for the users, closed at the end of `t`. */
async function proxy(t: Test, upstreams: readonly PhpReplica[], key: Key): Promise<{ tether: Tether; agent: http.Agent }> {
  const tether = await startTether(testConfig(upstreams, {
    affinity: AFFINITY[key],
    state: EXAMPLE.state,
    forwarding: EXAMPLE.forwarding, // upstream_header: X-Tether-Upstream says which replica answered
  }), { logger: createLogger('silent') })
  const agent = userAgent(32)
  t.teardown(async () => { agent.destroy(); await tether.close(0) })
  return { tether, agent }
}

const problem = laravelProblem()

t.test('Laravel (php-laravel-framework) is available', async (t) => {
  t.equal(problem, null, problem ?? 'Laravel loads')
})

if (problem === null) t.test('sticky sessions', async (t) => {
  const apps = await replicas(t)
  for (const key of ['cookie', 'app_cookie'] as const) {
    t.test(`key: ${key}: every user stays on one replica, counters continuous, every form accepted, each flash shown once`, async (t) => {
      const { tether, agent } = await proxy(t, apps, key)
      const users = Array.from({ length: 6 }, (_, i) => new LaravelUser(`u${i}`, tether.url, agent))
      const sessions = new Map<LaravelUser, Set<string>>()
      await Promise.all(users.map(async (u, i) => {
        const values = new Set<string>()
        const seen = (): void => { const v = u.jar.cookies.get('laravel_session'); if (v !== undefined) values.add(v) }
        await u.visit(); seen()
        await u.login(`user-${i}`); seen()
        await u.visit(); seen()
        for (let c = 0; c < 2; c++) {
          await u.note(`${u.name}-${c}`); seen()
          await u.visit(); seen()
          await u.visit(); seen()
        }
        sessions.set(u, values)
      }))
      const steps = users.flatMap((u) => u.steps)
      t.same(users.flatMap((u) => u.violations), [], 'every answer as the session implies: counter +1, note, user, flash exactly once, same CSRF token')
      t.equal(steps.filter((s) => s.kind !== 'visit' && s.status === 302).length, users.length * 3, 'every form POST accepted (302, never 419)')
      for (const u of users) {
        t.equal(new Set(u.steps.map((s) => s.replica)).size, 1, `${u.name} stayed on one replica`)
      }
      t.ok(new Set(steps.map((s) => s.replica)).size > 1, 'users were spread over several replicas')
      t.ok(steps.every((s) => s.page === null || s.page.rehydrate === 'none'), 'nobody was moved, so nothing was rehydrated')
      t.same(steps.flatMap((s) => s.leaked), [], 'no X-Tether-State (or other internal header) reached a client')
      if (key === 'app_cookie') {
        t.same([...sessions.values()].map((v) => v.size), users.map(() => 9), 'laravel_session had a new value on every one of the 9 answers, and the user still stayed')
      }
    })
  }
})

/** A promise with its resolve function. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((r) => { resolve = r })
  return { promise, resolve }
}

interface KillRun {
  users: LaravelUser[]
  victim: string
  /** Users served by the victim before the kill. */
  moved: LaravelUser[]
  /** A moved user that POSTed its note right before the kill and visits only after it. */
  paused: LaravelUser
  /** performance.now() when the SIGKILL was sent, and when the victim had stopped accepting. */
  killStart: number
  killedAt: number
  seconds: number
  rehydrations: number
}

const USERS = 9
const CYCLES_BEFORE = 1
const CYCLES_AFTER = 1
const MAX_CYCLES = 30

/**
 * USERS users log in, then repeat cycles of [POST a note with the token they already have,
 * visit (the flash shows), visit (it does not)]. Once every user has done CYCLES_BEFORE
 * cycles, one user of the busiest replica pauses right after its POST is answered, that
 * replica's process group is SIGKILLed while the others keep going, and every user goes on
 * for CYCLES_AFTER more cycles (bounded by MAX_CYCLES and 60 s).
 */
async function killUnderLoad(t: Test, key: Key, middleware: boolean): Promise<KillRun> {
  const apps = await replicas(t, middleware)
  const { tether, agent } = await proxy(t, apps, key)
  const users = Array.from({ length: USERS }, (_, i) => new LaravelUser(`u${i}`, tether.url, agent))
  const done = new Map<LaravelUser, number>(users.map((u) => [u, 0]))
  const doneAfter = new Map<LaravelUser, number>(users.map((u) => [u, 0]))
  const warmed = deferred()
  const pausedSignal = deferred()
  const killed = deferred()
  let armed: LaravelUser | null = null
  let killedAt: number | null = null
  const t0 = performance.now()
  const deadline = t0 + 60_000

  const run = async (u: LaravelUser, i: number): Promise<void> => {
    await u.visit()
    await u.login(`user-${i}`)
    await u.visit()
    for (let c = 0; c < MAX_CYCLES && performance.now() < deadline; c++) {
      if (killedAt !== null && doneAfter.get(u)! >= CYCLES_AFTER) break
      const afterKill = killedAt !== null
      await u.note(`${u.name}-${c}`)
      if (u === armed && killedAt === null) {
        pausedSignal.resolve()
        await killed.promise
      }
      await u.visit()
      await u.visit()
      done.set(u, c + 1)
      if (afterKill) doneAfter.set(u, doneAfter.get(u)! + 1)
      if ([...done.values()].every((n) => n >= CYCLES_BEFORE)) warmed.resolve()
    }
  }
  const runs = Promise.all(users.map(run))
  const ended = runs.then(() => { throw new Error('the load ended before the kill') })

  await Promise.race([warmed.promise, ended])
  const homeOf = (u: LaravelUser): string | null => u.steps.findLast((s) => s.replica !== null)?.replica ?? null
  const load = new Map<string, LaravelUser[]>()
  for (const u of users) load.set(homeOf(u)!, [...(load.get(homeOf(u)!) ?? []), u])
  const [victimId, onVictim] = [...load].sort((a, b) => b[1].length - a[1].length)[0]!
  armed = onVictim[0]!
  await Promise.race([pausedSignal.promise, ended])
  const victim = apps.find((r) => r.id === victimId)!
  const killStart = performance.now()
  await victim.kill('SIGKILL')
  killedAt = performance.now()
  killed.resolve()
  await runs
  const seconds = (performance.now() - t0) / 1000
  const metrics = await tether.metrics.render()
  const rehydrations = Number(/tether_rehydrations_total\{result="delivered"\} (\d+)/.exec(metrics)?.[1] ?? 0)
  const moved = users.filter((u) => u.steps.findLast((s) => s.end <= killStart && s.replica !== null)?.replica === victimId)
  for (const u of users) t.ok(doneAfter.get(u)! >= CYCLES_AFTER, `${u.name} went on for ${CYCLES_AFTER} cycles after the kill`)
  return { users, victim: victimId, moved, paused: armed, killStart, killedAt, seconds, rehydrations }
}

/** The steps of `u` answered by another replica than the victim after the kill (all of them, for a moved user). */
const after = (run: KillRun, u: LaravelUser): Step[] => u.steps.filter((s) => s.end > run.killStart && s.replica !== null && s.replica !== run.victim)

if (problem === null) {
  for (const key of ['cookie', 'app_cookie'] as const) {
    t.test(`key: ${key}: a replica SIGKILLed under load; with TetherSessionState every moved user's next form is accepted with the token they had, counter, values and flash intact`, async (t) => {
      const run = await killUnderLoad(t, key, true)
      const steps = run.users.flatMap((u) => u.steps)
      t.ok(run.moved.length >= USERS / 3, `${run.moved.length} users were on ${run.victim}`)
      t.same(run.users.flatMap((u) => u.violations), [],
        'every answer as the session implies (counter +1, the last note, the login-like value, each flash exactly once, the same CSRF token, every answered POST 302)')
      const failed = run.users.flatMap((u) => u.steps.filter((s) => s.status === 0 || s.status === 502 || s.status === 504).map((s) => ({ u, s })))
      t.ok(failed.every(({ u, s }) => run.moved.includes(u) && s.kind !== 'visit' && s.start < run.killedAt && s.end >= run.killStart),
        `only form POSTs in flight on the victim at the kill went unanswered (${failed.length}: a POST that may have reached the app is never retried)`)
      t.equal(steps.filter((s) => s.status === 419).length, 0, 'no 419 Page Expired at all')
      for (const u of run.moved) {
        const post = after(run, u).find((s) => s.kind === 'note')
        t.equal(post?.status, 302, `${u.name}: the first form POST after the kill, with the token from before it, is accepted`)
        t.ok(u.steps.every((s) => s.start < run.killedAt || (s.replica !== null && s.replica !== run.victim)), `${u.name}: served elsewhere after the kill`)
      }
      const [first, second] = after(run, run.paused)
      const lastNote = run.paused.steps.findLast((s) => s.kind === 'note' && s.end <= run.killStart)!
      t.equal(lastNote.status, 302, `${run.paused.name} posted a note right before the kill (${(run.killStart - lastNote.end).toFixed(0)} ms before)`)
      t.match(first?.page, { rehydrate: 'restored', note: lastNote.value, flash: `Saved: ${lastNote.value}`, user: `user-${run.users.indexOf(run.paused)}` },
        'its next page, on another replica, restored the session: the note set right before the kill is there, its flash shows there, the login-like value is kept')
      t.equal(second?.page?.flash, null, 'and the flash shows only once')
      t.ok(run.users.filter((u) => !run.moved.includes(u)).every((u) => new Set(u.steps.map((s) => s.replica)).size === 1 && u.steps.every((s) => s.page === null || s.page.rehydrate === 'none')),
        'users of the other replicas stayed where they were, never rehydrated')
      t.ok(run.rehydrations >= run.moved.length, `Tether delivered a checkpoint to each moved user (${run.rehydrations} rehydrations)`)
      const recover = run.moved.map((u) => after(run, u)[0]!.end - run.killStart)
      t.comment(`measured: ${steps.length} requests by ${USERS} users in ${run.seconds.toFixed(1)} s (${(steps.length / run.seconds).toFixed(0)}/s); ${run.moved.length} moved, ${failed.length} POSTs in flight unanswered, first answer after the kill within ${Math.max(...recover).toFixed(0)} ms [${recover.map((r) => r.toFixed(0)).join(', ')}] (the kill itself: ${(run.killedAt - run.killStart).toFixed(0)} ms)`)
    })
  }

  t.test('control: the same kill without TetherSessionState answers 419 Page Expired to every moved user, and their sessions start over', async (t) => {
    const run = await killUnderLoad(t, 'cookie', false)
    t.equal(run.rehydrations, 0, 'without the middleware the app sends no checkpoints: Tether has nothing to deliver')
    t.ok(run.moved.length >= USERS / 3, `${run.moved.length} users were on ${run.victim}`)
    for (const u of run.moved) {
      const steps = after(run, u)
      t.equal(steps.find((s) => s.kind === 'note')?.status, 419, `${u.name}: the first form POST after the kill, with the token from before it, gets 419`)
      t.match(steps.find((s) => s.page !== null)?.page, { count: 1, user: null }, `${u.name}: the counter starts over, logged out`)
    }
    t.equal(after(run, run.paused)[0]?.page?.flash, null, `${run.paused.name}: the flash of the POST made before the kill is lost`)
    t.same(run.users.filter((u) => !run.moved.includes(u)).flatMap((u) => u.violations), [], 'users of the other replicas are unaffected')
  })
}

if (problem === null) {
  t.test('TetherSessionState restores only a checkpoint that verifies under APP_KEY, is of this session, is fresh and is newer than the local one', async (t) => {
    const replica = await startLaravelReplica('laravel-solo')
    const agent = userAgent(2)
    t.teardown(async () => { agent.destroy(); await replica.close() })
    const jar = new CookieJar()
    /** GET / straight to the replica (as a misconfigured proxy, or anyone who reaches the pod, could). */
    const visit = async (rehydrate?: string, epoch?: number): Promise<{ page: Page; state: string }> => {
      const r = await get(`${replica.url}/`, agent, { accept: 'application/json', ...(rehydrate === undefined ? {} : { 'x-tether-rehydrate': rehydrate }), ...(epoch === undefined ? {} : { 'x-tether-epoch': String(epoch) }) }, jar)
      t.equal(r.status, 200)
      return { page: JSON.parse(r.body) as Page, state: String(r.headers['x-tether-state']) }
    }
    const first = await visit()
    const second = await visit()
    const env = readCheckpoint(second.state)
    t.match(env, { sid: /^[A-Za-z0-9]{40}$/, s: { count: 2, __tether_version: 2, _token: second.page.token } }, 'the checkpoint holds the session, its id and its version')
    t.equal(signCheckpoint(env, APP_KEY), second.state, "the format is the documented one: the test's own encoder gives the same value")
    t.comment(`measured: a checkpoint of this session is ${second.state.length} bytes of X-Tether-State`)

    const now = Math.floor(Date.now() / 1000)
    const newer = { ...env, at: now, s: { ...env.s, count: 40, __tether_version: 50 } }
    const [body, mac] = [second.state.split('.')[1]!, second.state.split('.')[2]!]
    const tampered = Buffer.from(Buffer.from(body, 'base64url').toString().replace('"count":2', '"count":99').replace('"__tether_version":2', '"__tether_version":99')).toString('base64url')
    const OTHER_KEY = `base64:${Buffer.from('another-app-key-of-32-bytes-0032').toString('base64')}`
    const cases: [string, string, string][] = [
      ['its own older checkpoint (a replica that still holds a newer session)', first.state, 'ignored: not newer'],
      ['its latest checkpoint, replayed after the session went on', second.state, 'ignored: not newer'],
      ['a forged one: the payload changed, the MAC kept', `v1.${tampered}.${mac}`, 'ignored: signature'],
      ['one signed with another app key', signCheckpoint(newer, OTHER_KEY), 'ignored: signature'],
      ['one without a MAC', `v1.${body}`, 'ignored: malformed'],
      ['one of another session (a proxy delivering the wrong user\'s state)', signCheckpoint({ ...newer, sid: 'x'.repeat(40) }, APP_KEY), 'ignored: another session'],
      ['one older than session.lifetime', signCheckpoint({ ...newer, at: now - 3 * 3600 }, APP_KEY), 'ignored: expired'],
      ['one from the future', signCheckpoint({ ...newer, at: now + 3600 }, APP_KEY), 'ignored: expired'],
      ['garbage', 'not a checkpoint', 'ignored: malformed'],
    ]
    let count = second.page.count
    for (const [what, value, outcome] of cases) {
      const { page } = await visit(value)
      t.match(page, { rehydrate: outcome, count: ++count, token: first.page.token }, `${what}: ${outcome}; the local session goes on`)
    }
    const restored = await visit(signCheckpoint(newer, APP_KEY))
    t.match(restored.page, { rehydrate: 'restored', count: 41 }, 'the same checkpoint signed with this APP_KEY, of this session and newer, is restored (so the refusals above are the checks at work)')
    const replayed = await visit(signCheckpoint(newer, APP_KEY))
    t.match(replayed.page, { rehydrate: 'ignored: not newer', count: 42 }, 'and replaying it changes nothing')

    // behind Tether every request carries X-Tether-Epoch: a later epoch is newer whatever the
    // version (the replica the user moved to may have started its versions again), a higher
    // version whatever the epoch (a key placed again starts again at 0); older by both is not
    const atEpoch3 = await visit(undefined, 3)
    t.match(readCheckpoint(atEpoch3.state).s, { __tether_epoch: 3, __tether_version: 53 }, 'the epoch is kept in the session')
    const base = readCheckpoint(atEpoch3.state)
    const later = signCheckpoint({ ...base, at: now, s: { ...base.s, count: 7, __tether_version: 5, __tether_epoch: 4 } }, APP_KEY)
    t.match((await visit(later, 5)).page, { rehydrate: 'restored', count: 8 }, 'a later epoch with a lower version: restored')
    const older = signCheckpoint({ ...base, at: now, s: { ...base.s, count: 900, __tether_version: 3, __tether_epoch: 2 } }, APP_KEY)
    t.match((await visit(older, 6)).page, { rehydrate: 'ignored: not newer', count: 9 }, 'an earlier epoch and a lower version: not newer')
    const higher = signCheckpoint({ ...base, at: now, s: { ...base.s, count: 50, __tether_version: 500, __tether_epoch: 2 } }, APP_KEY)
    t.match((await visit(higher, 1)).page, { rehydrate: 'restored', count: 51 }, 'an earlier epoch with a higher version: restored')
  })
}
