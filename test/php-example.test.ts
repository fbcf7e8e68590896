// The plain-PHP example (examples/php: native $_SESSION in per-replica file storage + tether.php)
// behind Tether with `affinity.key: app_cookie` (PHPSESSID): Tether learns the PHP session
// cookie, keeps the user on the replica that created it, and when that `php -S` process is
// SIGKILLed, delivers the newest checkpoint to the next replica, so no increment is lost.
import t, { type Test } from 'tap'
import http from 'node:http'
import { fileURLToPath } from 'node:url'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { testConfig } from './fixtures/upstream.js'
import { CookieJar } from './fixtures/users.js'
import { phpProblem, startPhpReplica, type PhpReplica } from './fixtures/php-server.js'

const DOCROOT = fileURLToPath(new URL('../examples/php/', import.meta.url))

interface Visit {
  status: number
  headers: http.IncomingHttpHeaders
  body: { replica: string; count: number; rehydrated: boolean }
}

/** One GET / through Tether as the user of `jar` (fresh connection, cookies applied). */
function visit(url: string, jar: CookieJar): Promise<Visit> {
  const cookie = jar.header()
  return new Promise((resolve, reject) => {
    http.get(url, { agent: false, headers: cookie === undefined ? {} : { cookie } }, (res) => {
      jar.apply(res.headers['set-cookie'])
      let s = ''
      res.on('data', (c) => (s += c))
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(s) as Visit['body'] })
        } catch {
          reject(new Error(`not JSON (status ${res.statusCode}): ${s}`))
        }
      })
    }).on('error', reject)
  })
}

/** Names of X-Tether-* headers in an answer (the client must never see any). */
const tetherHeaders = (v: Visit): string[] => Object.keys(v.headers).filter((h) => h.startsWith('x-tether-'))

async function setup(t: Test, opts: { ini?: Record<string, string>; env?: Record<string, string> } = {}): Promise<{ replicas: PhpReplica[]; tether: Tether }> {
  const replicas: PhpReplica[] = []
  t.teardown(async () => { await Promise.all(replicas.map((r) => r.close())) })
  for (const id of ['php-a', 'php-b', 'php-c']) replicas.push(await startPhpReplica(id, DOCROOT, opts))
  const tether = await startTether(testConfig(replicas, {
    affinity: { key: 'app_cookie', app_cookie: { name: 'PHPSESSID', fallback: 'random' } },
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
    t.match(a1.body, { count: 1, rehydrated: false })
    const sid = alice.cookies.get('PHPSESSID')
    t.ok(sid, 'PHP issued PHPSESSID')
    t.same(tetherHeaders(a1), [], 'no X-Tether-* header reaches the client')
    const home = a1.body.replica

    const b1 = await visit(tether.url, bob)
    t.match(b1.body, { count: 1, rehydrated: false })
    t.not(b1.body.replica, home, 'the second new user was placed elsewhere (round robin fallback)')

    for (let n = 2; n <= 5; n++) {
      const v = await visit(tether.url, alice)
      t.same(v.body, { replica: home, count: n, rehydrated: false }, `alice request ${n}: learned PHPSESSID keeps her on ${home}`)
      t.same(tetherHeaders(v), [])
    }
    t.same((await visit(tether.url, bob)).body, { replica: b1.body.replica, count: 2, rehydrated: false })

    const dead = replicas.find((r) => r.id === home)!
    t.match(await dead.kill('SIGKILL'), { signal: 'SIGKILL' }, `${home} was SIGKILLed`)

    const moved = await visit(tether.url, alice)
    t.equal(moved.status, 200, 'the request after the kill succeeds (retried on the next replica)')
    t.not(moved.body.replica, home, 'moved to another replica')
    t.same(moved.body, { replica: moved.body.replica, count: 6, rehydrated: true }, 'the count continues from the checkpoint: no acknowledged increment lost')
    t.same(tetherHeaders(moved), [], 'the new checkpoint is stripped too')
    t.equal(alice.cookies.get('PHPSESSID'), sid, 'same PHP session id (use_strict_mode off accepts it)')

    const after = await visit(tether.url, alice)
    t.same(after.body, { replica: moved.body.replica, count: 7, rehydrated: false }, 'stays on the new replica, served from its local session')

    t.same((await visit(tether.url, bob)).body, { replica: b1.body.replica, count: 3, rehydrated: false }, 'bob is unaffected: same replica, same count, nothing restored')
  })

  t.test('with session.use_strict_mode=1 and signed state: the new session id is learned, a second kill rehydrates again', async (t) => {
    const { replicas, tether } = await setup(t, { ini: { 'session.use_strict_mode': '1' }, env: { TETHER_STATE_SECRET: 'test-secret' } })
    const user = new CookieJar()
    let v = await visit(tether.url, user)
    for (let n = 2; n <= 3; n++) v = await visit(tether.url, user)
    t.match(v.body, { count: 3, rehydrated: false })
    const first = v.body.replica
    const sid = user.cookies.get('PHPSESSID')

    await replicas.find((r) => r.id === first)!.kill()
    v = await visit(tether.url, user)
    t.match(v.body, { count: 4, rehydrated: true })
    const second = v.body.replica
    t.not(second, first)
    t.not(user.cookies.get('PHPSESSID'), sid, 'strict mode refused the unknown id and issued a new one')
    v = await visit(tether.url, user)
    t.same(v.body, { replica: second, count: 5, rehydrated: false }, 'Tether learned the new id on the new replica')

    await replicas.find((r) => r.id === second)!.kill()
    v = await visit(tether.url, user)
    t.not(v.body.replica, first)
    t.not(v.body.replica, second)
    t.same(v.body, { replica: v.body.replica, count: 6, rehydrated: true }, 'the checkpoint written under the new id moved along')
    t.same(tetherHeaders(v), [])
  })

  t.test('an X-Tether-Rehydrate forged with the wrong secret is ignored by tether.php', async (t) => {
    const replica = await startPhpReplica('php-solo', DOCROOT, { env: { TETHER_STATE_SECRET: 'right' } })
    t.teardown(() => replica.close())
    const forged = Buffer.from(JSON.stringify({ __tether_version: 99, count: 41 })).toString('base64url')
    for (const value of [forged, `${forged}.AAAA`]) {
      const body = await new Promise<string>((resolve, reject) => {
        http.get(replica.url, { agent: false, headers: { 'x-tether-rehydrate': value } }, (res) => {
          let s = ''
          res.on('data', (c) => (s += c))
          res.on('end', () => resolve(s))
        }).on('error', reject)
      })
      t.match(JSON.parse(body), { count: 1, rehydrated: false })
    }
  })
}
