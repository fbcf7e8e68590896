// A Redis whose maxmemory-policy evicts Tether's keys when full is warned of: INFO memory is read
// each time the connection becomes ready and once a minute after (a policy changed live with
// CONFIG SET), one warn a spell per node (naming the policy, what it does to Tether, the hint),
// an info line once a later check finds it safe; with Cluster each master is checked; an ACL
// user without INFO is told nothing. Real redis-server processes (CLIENT KILL for reconnects),
// fake timers for the re-check's cadence; no fixed sleeps.
import t, { type Test } from 'tap'
import http from 'node:http'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { DEFAULTS, type Config } from '../src/config/schema.js'
import { systemClock } from '../src/clock.js'
import { ProblemLog } from '../src/observability/problem-log.js'
import { RedisConnection, type RedisConnectionOptions, type RedisNodeEvent } from '../src/redis/connection.js'
import { EVICTION_RECHECK_MS, evictionRisk, watchEviction } from '../src/redis/eviction-check.js'
import { keySlot } from '../src/redis/key-slot.js'
import { freePort, redisCli, startRedis, startRedisCluster, startSentinelSet, waitFor, type RedisServer } from './fixtures/redis-server.js'
import { join } from 'node:path'
import { testConfig, type DeepPartial } from './fixtures/upstream.js'
import { get } from './fixtures/users.js'
import { startCounter } from './fixtures/counter-upstream.js'
import { LogCapture } from './fixtures/log-capture.js'
import { FakeTimers } from './fixtures/timers.js'

const WARN = "redis evicts Tether's keys when full (maxmemory-policy)"
const SAFE = "redis no longer evicts Tether's keys (maxmemory-policy)"
const GONE = "redis node serves no slot any more: its maxmemory-policy warn ends"

t.test('evictionRisk: which INFO memory answers evict Tether\'s keys', async (t) => {
  const info = (maxmemory: number, policy: string): string => `# Memory\r\nused_memory:1052384\r\nmaxmemory:${maxmemory}\r\nmaxmemory_human:100.00M\r\nmaxmemory_policy:${policy}\r\n`
  const cases: [string, string, RegExp | null][] = [
    ['allkeys-lru with maxmemory', info(104857600, 'allkeys-lru'), /evicts any key/],
    ['allkeys-lfu', info(1, 'allkeys-lfu'), /evicts any key/],
    ['allkeys-random', info(1, 'allkeys-random'), /evicts any key/],
    ['volatile-lru: Tether\'s keys have TTLs', info(1, 'volatile-lru'), /keys with a TTL/],
    ['volatile-ttl', info(1, 'volatile-ttl'), /keys with a TTL/],
    ['a policy named otherwise (a later Redis, a look-alike server): told as the worst, any key', info(1, 'eviction'), /evicts any key/],
    ['noeviction', info(104857600, 'noeviction'), null],
    ['no maxmemory: nothing is evicted', info(0, 'allkeys-lru'), null],
    ['fields absent', '# Memory\r\nused_memory:1\r\n', null],
  ]
  for (const [name, text, effect] of cases) {
    const risk = evictionRisk(text)
    if (effect === null) t.equal(risk, null, name)
    else t.match(risk, { policy: String, effect, hint: /maxmemory-policy noeviction/ }, name)
  }
  t.equal(evictionRisk(info(104857600, 'allkeys-lru'))?.maxmemory, 104857600, 'maxmemory in bytes')
})

/** A connection with the eviction check as Tether wires it, logging into `logs`; `answers` has each check's count of nodes that answered. */
async function watched(t: Test, options: RedisConnectionOptions, timers?: FakeTimers): Promise<{ logs: LogCapture; answers: number[]; redis: RedisConnection }> {
  const logs = new LogCapture()
  const answers: number[] = []
  const redis = new RedisConnection({ ...options, timeout: 1_000 })
  const stop = watchEviction(redis, new ProblemLog(createLogger('info', logs), systemClock, Infinity), { checked: (n) => answers.push(n), ...(timers === undefined ? {} : { timers }) })
  t.teardown(() => { stop(); return redis.stop() })
  await redis.start()
  await waitFor('the first check', () => answers.length >= 1)
  return { logs, answers, redis }
}

/**
 * The eviction check over a stand-in for the two calls of RedisConnection it makes (onNode and
 * info), held so the order is the test's: `emit` tells it a node event, `replies` holds each
 * INFO's resolver in the order asked. Logs into `logs`; `answers` as for `watched`.
 */
function heldWatch(t: Test, timers = new FakeTimers()): { logs: LogCapture; answers: number[]; emit: (e: RedisNodeEvent) => void; replies: ((infos: Map<string, string | null>) => void)[] } {
  const logs = new LogCapture()
  const answers: number[] = []
  let listener: ((e: RedisNodeEvent) => void) | null = null
  const replies: ((infos: Map<string, string | null>) => void)[] = []
  const redis = {
    onNode: (fn: (e: RedisNodeEvent) => void) => { listener = fn; return () => { listener = null } },
    info: () => new Promise<Map<string, string | null>>((resolve) => { replies.push(resolve) }),
  } as unknown as RedisConnection
  const stop = watchEviction(redis, new ProblemLog(createLogger('info', logs), systemClock, Infinity), { checked: (n) => answers.push(n), timers })
  t.teardown(stop)
  return { logs, answers, emit: (e) => listener!(e), replies }
}

async function redisWith(t: Test, policy: string, extra: string[] = []): Promise<RedisServer> {
  const redis = await startRedis({ args: ['--maxmemory', '100mb', '--maxmemory-policy', policy, ...extra] })
  t.teardown(() => redis.stop())
  return redis
}

const told = (logs: LogCapture, msg: string): Record<string, unknown>[] => logs.records.filter((l) => l['msg'] === msg)

/** Closes every client connection to `port` (Tether's among them: it connects again). */
async function kill(port: number): Promise<void> {
  await redisCli(port, 'CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes')
}

t.test('allkeys-lru: one warn naming the policy and the hint, not repeated at a reconnect; noeviction set, the next check resolves it', async (t) => {
  const server = await redisWith(t, 'allkeys-lru')
  const { logs, answers } = await watched(t, { url: `redis://127.0.0.1:${server.port}` })
  t.same(answers, [1], 'the node answered INFO')
  t.match(told(logs, WARN), [{
    level: 40, node: `127.0.0.1:${server.port}`, policy: 'allkeys-lru', maxmemory: 104857600,
    effect: /lose stickiness.*keyspace marker/, hint: /maxmemory-policy noeviction/,
  }], 'one warn naming the node, the policy, what it does to Tether and the hint')
  await kill(server.port)
  await waitFor('the check after the reconnect', () => answers.length >= 2)
  t.equal(told(logs, WARN).length, 1, 'one warn for the spell: the reconnect checked again and added none')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
  await kill(server.port)
  await waitFor('the check after the second reconnect', () => answers.length >= 3)
  t.match(told(logs, SAFE), [{ level: 30, node: `127.0.0.1:${server.port}`, for_ms: Number, unlogged: 1 }], 'one info line: the node is safe again')
  t.equal(told(logs, WARN).length, 1, 'still one warn')
})

t.test('a policy changed live with CONFIG SET (no reconnect) is seen at the next re-check, a minute later: warned when it turns unsafe, ended when safe again', async (t) => {
  const server = await redisWith(t, 'noeviction')
  const timers = new FakeTimers()
  const { logs, answers } = await watched(t, { url: `redis://127.0.0.1:${server.port}` }, timers)
  t.same([answers, told(logs, WARN)], [[1], []], 'checked at start-up: safe, nothing told')
  const recheck = async (n: number): Promise<void> => {
    await timers.scheduled(EVICTION_RECHECK_MS)
    timers.advance(EVICTION_RECHECK_MS)
    await waitFor(`re-check ${n}`, () => answers.length === n)
  }
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru')
  await recheck(2)
  t.match(told(logs, WARN), [{ level: 40, node: `127.0.0.1:${server.port}`, policy: 'allkeys-lru', maxmemory: 104857600 }], 'one warn, without a reconnect')
  await recheck(3)
  t.equal(told(logs, WARN).length, 1, 'the same policy at the next re-check adds none')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'noeviction')
  await recheck(4)
  t.match(told(logs, SAFE), [{ level: 30, node: `127.0.0.1:${server.port}`, unlogged: 1 }], 'one info line: safe again')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory', '0')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'volatile-lru')
  await recheck(5)
  t.equal(told(logs, WARN).length, 1, 'an evicting policy without maxmemory evicts nothing: not told')
  t.same(timers.pending().map((p) => p.delay), [EVICTION_RECHECK_MS], 'one re-check timer armed, no more')
})

t.test('the watch\'s stop clears the re-check timer', async (t) => {
  const server = await redisWith(t, 'noeviction')
  const timers = new FakeTimers()
  const answers: number[] = []
  const redis = new RedisConnection({ url: `redis://127.0.0.1:${server.port}`, timeout: 1_000 })
  const stop = watchEviction(redis, new ProblemLog(createLogger('info', new LogCapture()), systemClock, Infinity), { checked: (n) => answers.push(n), timers })
  t.teardown(() => redis.stop())
  await redis.start()
  await timers.scheduled(EVICTION_RECHECK_MS)
  stop()
  t.same(timers.pending(), [], 'no timer left')
  timers.advance(EVICTION_RECHECK_MS)
  t.same(answers, [1], 'no re-check after the stop')
})

t.test('a `checked` listener that throws stops neither the check nor the re-checks (no unhandled rejection)', async (t) => {
  const server = await redisWith(t, 'noeviction')
  const timers = new FakeTimers()
  const logs = new LogCapture()
  let calls = 0
  const redis = new RedisConnection({ url: `redis://127.0.0.1:${server.port}`, timeout: 1_000 })
  const stop = watchEviction(redis, new ProblemLog(createLogger('info', logs), systemClock, Infinity), { checked: () => { calls++; throw new Error('the listener failed') }, timers })
  t.teardown(() => { stop(); return redis.stop() })
  await redis.start()
  await timers.scheduled(EVICTION_RECHECK_MS)
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru')
  timers.advance(EVICTION_RECHECK_MS)
  await waitFor('the warn', () => told(logs, WARN).length === 1)
  await timers.scheduled(EVICTION_RECHECK_MS)
  t.equal(calls, 2, 'told twice, throwing each time; the re-check is armed again')
})

t.test('volatile-lru is warned of too (every Tether key but the marker has a TTL); noeviction is not', async (t) => {
  const volatile = await redisWith(t, 'volatile-lru')
  const v = await watched(t, { url: `redis://127.0.0.1:${volatile.port}` })
  t.match(told(v.logs, WARN), [{ policy: 'volatile-lru', effect: /keys with a TTL/ }], 'one warn, naming volatile-lru')
  const safe = await redisWith(t, 'noeviction')
  const s = await watched(t, { url: `redis://127.0.0.1:${safe.port}` })
  t.same(s.answers, [1], 'checked')
  t.equal(told(s.logs, WARN).length + told(s.logs, SAFE).length, 0, 'nothing told')
})

t.test('Cluster: each master is checked and warned of on its own', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  for (const n of cluster.nodes) {
    await redisCli(n.port, 'CONFIG', 'SET', 'maxmemory', '100mb')
    await redisCli(n.port, 'CONFIG', 'SET', 'maxmemory-policy', n === cluster.nodes[0] ? 'noeviction' : 'allkeys-lfu')
  }
  const { logs, answers } = await watched(t, { nodes: cluster.addresses })
  await waitFor('a check of each master', () => answers.length >= 3)
  t.same(answers, [1, 1, 1], 'every master answered')
  t.same(told(logs, WARN).map((l) => [l['node'], l['policy']]).sort(), cluster.nodes.slice(1).map((n) => [`127.0.0.1:${n.port}`, 'allkeys-lfu']).sort(), 'one warn per evicting master, none for the safe one')
})

t.test('Cluster resharding while the Cluster stays ready: a master that joins is checked, one that leaves (serves no slot) has its warn ended', async (t) => {
  const cluster = await startRedisCluster(3)
  t.teardown(() => cluster.stop())
  const busPort = await freePort()
  const added = await startRedis({ argsForPort: (port, dir) => ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`), '--cluster-port', String(busPort), '--cluster-node-timeout', '15000'] })
  t.teardown(() => added.stop())
  for (const n of [...cluster.nodes, added]) {
    await redisCli(n.port, 'CONFIG', 'SET', 'maxmemory', '100mb')
    await redisCli(n.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lfu')
  }
  const { logs, redis } = await watched(t, { nodes: cluster.addresses })
  await waitFor('a warn for each of the three masters', () => told(logs, WARN).length === 3)
  const first = cluster.nodes[0]!
  const id = async (port: number): Promise<string> => (await redisCli(port, 'CLUSTER', 'MYID')).trim()
  const [fromId, toId] = [await id(first.port), await id(added.port)]
  await redisCli(first.port, '--cluster', 'add-node', `127.0.0.1:${added.port}`, `127.0.0.1:${first.port}`)
  const reshard = (from: string, to: string): Promise<string> =>
    redisCli(first.port, '--cluster', 'reshard', `127.0.0.1:${first.port}`, '--cluster-from', from, '--cluster-to', to, '--cluster-slots', '10', '--cluster-yes')
  // (redis-cli reshards only once every node agrees on the configuration: gossip, polled; the
  // check may exit 0 while they do not)
  const agreed = async (): Promise<boolean> =>
    (await Promise.all([...cluster.nodes, added].map((n) => redisCli(n.port, 'CLUSTER', 'NODES')))).every((nodes) => nodes.trim().split('\n').length === 4) &&
    (await redisCli(first.port, '--cluster', 'check', `127.0.0.1:${first.port}`).catch(() => '')).includes('All nodes agree')
  await waitFor('every node to agree on the configuration', agreed, 15_000)
  await reshard(fromId, toId)
  // a key of a moved slot: its call gets a MOVED, and the client refreshes its slot map
  const [low, high] = (/myself,master (?:\S+ ){4}connected (\d+)-(\d+)/.exec(await redisCli(added.port, 'CLUSTER', 'NODES')) ?? []).slice(1).map(Number)
  let key = ''
  for (let i = 0; key === '' && i < 1_000_000; i++) { const slot = keySlot(`tether:moved-${i}`); if (slot >= low! && slot <= high!) key = `tether:moved-${i}` }
  const call = (): Promise<unknown> => redis.run(key, (c) => c.get(key))
  const address = `127.0.0.1:${added.port}`
  await waitFor('the new master in the slot map (after a MOVED)', async () => { await call(); return redis.nodes().some((n) => n.address === address) })
  t.equal(redis.status, 'ready', 'the Cluster stayed ready throughout')
  await waitFor('a warn for the master that joined', () => told(logs, WARN).some((l) => l['node'] === address))
  t.equal(told(logs, WARN).length, 4, 'one warn per master')
  await waitFor('every node to agree on the configuration', agreed, 15_000)
  await reshard(toId, fromId)
  await waitFor('the master gone from the slot map', async () => { await call(); return !redis.nodes().some((n) => n.address === address) })
  await waitFor('its warn ended', () => told(logs, GONE).some((l) => l['node'] === address))
  t.match(told(logs, GONE), [{ level: 30, node: address, for_ms: Number }], 'one info line, for that node only')
  t.equal(told(logs, SAFE).length, 0, 'not told as safe: its policy did not change')
})

t.test('Sentinel: a failover to a master whose policy evicts is warned of (node: the master name)', async (t) => {
  const set = await startSentinelSet()
  t.teardown(() => set.stop())
  for (const n of [set.master, set.replica]) await redisCli(n.port, 'CONFIG', 'SET', 'maxmemory', '100mb')
  await redisCli(set.replica.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru')
  const { logs, answers } = await watched(t, { sentinels: set.addresses, name: set.name })
  t.same([answers, told(logs, WARN)], [[1], []], 'the first master (noeviction) was checked, nothing told')
  await set.failover()
  await waitFor('the warn for the new master', () => told(logs, WARN).length > 0, 10_000)
  t.match(told(logs, WARN), [{ node: set.name, policy: 'allkeys-lru' }], 'one warn, naming the master name and the new policy')
})

t.test('an ACL user that may not run INFO: nothing told (no eviction warn, no refusal), no node failure, asked once a ready', async (t) => {
  const server = await redisWith(t, 'allkeys-lru', ['--requirepass', 'default-s3cret'])
  const auth = ['--no-auth-warning', '-a', 'default-s3cret']
  await redisCli(server.port, ...auth, 'ACL', 'SETUSER', 'tether-app', 'on', '>app-s3cret', '~*', '&*', '+@all', '-info')
  const refused: unknown[] = []
  const logs = new LogCapture()
  const answers: number[] = []
  const redis = new RedisConnection({ url: `redis://127.0.0.1:${server.port}`, username: 'tether-app', password: 'app-s3cret', timeout: 1_000 })
  redis.onRefused((r) => refused.push(r))
  const timers = new FakeTimers()
  watchEviction(redis, new ProblemLog(createLogger('info', logs), systemClock, Infinity), { checked: (n) => answers.push(n), timers })
  t.teardown(() => redis.stop())
  await redis.start()
  await waitFor('the first check', () => answers.length >= 1)
  t.same(answers, [0], 'the node refused: left out')
  t.equal(logs.records.length, 0, 'nothing logged')
  t.same(refused, [], 'no refusal told to the NOPERM listeners')
  t.same(redis.nodes().map((n) => n.status), ['up'], 'the node stays up')
  // (ioredis's own ready check is an INFO too: one refusal each, ours the second)
  const count = Number(/count\n(\d+)/.exec(await redisCli(server.port, ...auth, 'ACL', 'LOG'))?.[1])
  t.equal(count, 2, 'INFO refused twice: the ready check and ours, no retry')
  t.same(timers.pending(), [], 'no re-check armed: it is not asked again until it next comes up')
})

/** Tether (state.store: redis) on `server`, logging into `logs`; closed at teardown unless closed before. */
async function tetherOn(t: Test, server: RedisServer, logs: LogCapture, timers?: FakeTimers): Promise<Tether> {
  const app = await startCounter('app-0')
  t.teardown(() => app.kill())
  const cfg = testConfig([app], {
    affinity: { cookie: { ...DEFAULTS.affinity.cookie, secret: ['redis-eviction-secret-0123456789ab'] } },
    state: { store: 'redis', timeout: 1_000, redis: { url: `redis://127.0.0.1:${server.port}` } satisfies DeepPartial<Config['state']['redis']> },
  })
  const tt: Tether = await startTether(cfg, { logger: createLogger('info', logs), ...(timers === undefined ? {} : { timers }) })
  t.teardown(() => tt.close(0)) // (a second close returns the first's promise)
  return tt
}

t.test('Tether warns of an evicting Redis at start-up (state.store: redis)', async (t) => {
  const server = await redisWith(t, 'allkeys-lru')
  const logs = new LogCapture()
  const tt = await tetherOn(t, server, logs)
  await waitFor('the warn', () => told(logs, WARN).length > 0)
  t.match(told(logs, WARN), [{ node: `127.0.0.1:${server.port}`, policy: 'allkeys-lru' }], 'one warn')
  const r = await get(`${tt.adminUrl}/readyz`, new http.Agent())
  t.equal(r.status, 200, '/readyz stays ready: it is a warning')
})

t.test('Tether re-checks a policy changed live, and its close leaves no re-check timer', async (t) => {
  const server = await redisWith(t, 'noeviction')
  const logs = new LogCapture()
  const timers = new FakeTimers()
  const tt = await tetherOn(t, server, logs, timers)
  await timers.scheduled(EVICTION_RECHECK_MS) // the start-up check answered
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lfu')
  timers.advance(EVICTION_RECHECK_MS)
  await waitFor('the warn', () => told(logs, WARN).length > 0)
  t.match(told(logs, WARN), [{ node: `127.0.0.1:${server.port}`, policy: 'allkeys-lfu' }], 'one warn, a minute after the change')
  await timers.scheduled(EVICTION_RECHECK_MS)
  await tt.close(0)
  t.same(timers.pending(EVICTION_RECHECK_MS), [], 'no re-check timer after close')
})

t.test('a node removed while its INFO is unanswered: the late reply opens no warn (it would never end)', async (t) => {
  // (its re-check timer, armed by the second check, is the fake timers')
  const { logs, answers, emit, replies } = heldWatch(t)
  const reply = (infos: Map<string, string>): void => replies.at(-1)!(infos)
  const node = { address: '127.0.0.1:7003' } as RedisNodeEvent['node']
  const evicting = new Map([[node.address, 'maxmemory:1\r\nmaxmemory_policy:allkeys-lru\r\n']])
  emit({ kind: 'up', node })
  emit({ kind: 'removed', node })
  reply!(evicting)
  await waitFor('the check ends', () => answers.length === 1)
  t.same(told(logs, WARN), [], 'no warn for a node that serves no slot any more')
  emit({ kind: 'up', node }) // it comes back: checked again, and told
  reply!(evicting)
  await waitFor('the second check ends', () => answers.length === 2)
  t.equal(told(logs, WARN).length, 1, 'a node back up is checked as any other')
})

t.test('a node removed while its minute\'s re-check is unanswered: the late reply opens no warn, and no re-check is armed for it', async (t) => {
  const timers = new FakeTimers()
  const { logs, answers, emit, replies } = heldWatch(t, timers)
  const reply = (infos: Map<string, string>): void => replies.at(-1)!(infos)
  const node = { address: '127.0.0.1:7003' } as RedisNodeEvent['node']
  emit({ kind: 'up', node })
  reply!(new Map([[node.address, 'maxmemory:0\r\nmaxmemory_policy:noeviction\r\n']]))
  await timers.scheduled(EVICTION_RECHECK_MS) // answered: safe, the re-check armed
  const asked = replies.length
  timers.advance(EVICTION_RECHECK_MS)
  t.ok(replies.length > asked, 'the re-check asked it')
  emit({ kind: 'removed', node })
  reply!(new Map([[node.address, 'maxmemory:1\r\nmaxmemory_policy:allkeys-lru\r\n']]))
  await waitFor('the re-check ends', () => answers.length === 2)
  t.same(told(logs, WARN), [], 'no warn for a node that serves no slot any more')
  await timers.settled((pending) => pending.length === 0)
  t.same(timers.pending(), [], 'no re-check armed: no node answers')
})

t.test('a node that comes up again while its INFO is unanswered is asked again once that one ends (an up is never lost)', async (t) => {
  const timers = new FakeTimers()
  const { logs, answers, emit, replies } = heldWatch(t, timers)
  const node = { address: '127.0.0.1:6379' } as RedisNodeEvent['node']
  emit({ kind: 'up', node })
  emit({ kind: 'down', node })
  emit({ kind: 'up', node }) // a reconnect while the first INFO waits: its socket's reply is lost
  t.equal(replies.length, 1, 'one INFO at a time')
  replies[0]!(new Map())
  await waitFor('the first check ends', () => answers.length === 1)
  await waitFor('the node asked again', () => replies.length === 2)
  replies[1]!(new Map([[node.address, 'maxmemory:1\r\nmaxmemory_policy:allkeys-lru\r\n']]))
  await waitFor('the second check ends', () => answers.length === 2)
  t.match(told(logs, WARN), [{ node: node.address, policy: 'allkeys-lru' }], 'the node that came up is checked and told')
  await timers.scheduled(EVICTION_RECHECK_MS)
  t.pass('and re-checked once a minute')
})

t.test('a re-check that gets no reply in time (a Redis busy for seconds) keeps the node in the minute\'s re-checks: a policy changed after is still told', async (t) => {
  const server = await redisWith(t, 'noeviction')
  const timers = new FakeTimers()
  // (a stall closes the connection only after 10 s, as with a long state.timeout: no reconnect, no `up`)
  const { logs, answers } = await watched(t, { url: `redis://127.0.0.1:${server.port}`, stallTimeout: 10_000 }, timers)
  await timers.scheduled(EVICTION_RECHECK_MS)
  await redisCli(server.port, 'CLIENT', 'PAUSE', '4000', 'ALL') // Redis answers no command for 4 s (the INFO's deadline: 2 s)
  timers.advance(EVICTION_RECHECK_MS)
  await waitFor('the re-check given up (no reply within connectTimeout)', () => answers.length === 2, 8_000)
  t.equal(answers[1], 0, 'no node answered it')
  await redisCli(server.port, 'CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru') // (answered once the pause ends)
  await timers.scheduled(EVICTION_RECHECK_MS)
  timers.advance(EVICTION_RECHECK_MS)
  await waitFor('the next re-check', () => answers.length === 3)
  t.match(told(logs, WARN), [{ node: `127.0.0.1:${server.port}`, policy: 'allkeys-lru' }], 'the policy changed after the slow reply is told')
})

t.test('a node that goes down while its re-check waits, and whose INFO then gets no reply in time, is not asked again until it comes up', async (t) => {
  const timers = new FakeTimers()
  const { answers, emit, replies } = heldWatch(t, timers)
  const node = { address: '127.0.0.1:7004' } as RedisNodeEvent['node']
  emit({ kind: 'up', node })
  replies[0]!(new Map([[node.address, 'maxmemory:0\r\nmaxmemory_policy:noeviction\r\n']]))
  await timers.scheduled(EVICTION_RECHECK_MS)
  timers.advance(EVICTION_RECHECK_MS)
  t.equal(replies.length, 2, 're-checked')
  emit({ kind: 'down', node })
  replies[1]!(new Map([[node.address, null]]))
  await waitFor('the re-check ends', () => answers.length === 2)
  await new Promise<void>((resolve) => setImmediate(resolve)) // (the re-check's settled handler)
  t.same(timers.pending(), [], 'no re-check armed for a node that is down')
})
