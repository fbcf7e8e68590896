// A reload that changes state.redis.key_prefix or the database (same Redis node address) rolls
// the workers; the markers the primary kept for the node are the old keyspace's. 49d4da8 kept
// them by node address only, and every new worker's first check compared the new keyspace's
// marker with the old one: a keyspace loss that never happened. Now a known marker is compared
// only at the same key and database, and the primary drops them when state.redis changes.
// Real redis-server, real primary with two workers.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { redisCli, startRedis } from './fixtures/redis-server.js'
import { startUpstream } from './fixtures/upstream.js'
import { freePorts } from './fixtures/ports.js'
import { tempFile } from './fixtures/cli.js'
import { startPrimary } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'

const evalshas = async (port: number): Promise<number> => {
  const info = await redisCli(port, 'INFO', 'commandstats')
  return Number(/cmdstat_evalsha:calls=(\d+)/.exec(info)?.[1] ?? 0) + Number(/cmdstat_eval:calls=(\d+)/.exec(info)?.[1] ?? 0)
}

/** One keyspace: state.redis's url and key_prefix (from the redis-server's url), and the redis-cli arguments that ask whether its marker exists. */
interface Keyspace { readonly redis: (url: string) => string; readonly exists: readonly string[] }

/**
 * A primary with two workers on `before`: once the lead's marker reached the primary (both
 * workers checked several times since the lead was named), reloaded to `after`; once the new
 * workers checked several times, no `redis keyspace lost` line was logged.
 */
function reloadIsNoLoss(name: string, before: Keyspace, after: Keyspace, why: string): void {
  t.test(name, async (t) => {
    const redis = await startRedis()
    t.teardown(() => redis.stop())
    const app = await startUpstream('app-0', (_req, res) => res.end('ok\n'))
    t.teardown(() => app.close())
    const [port, adminPort] = await freePorts(2)
    const yaml = (k: Keyspace): string => [
      `listen: { host: 127.0.0.1, port: ${port} }`,
      `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
      'workers: 2',
      'log: { level: info }',
      'health: { shared: redis, active: { enabled: false } }',
      `state: { store: redis, redis: { ${k.redis(redis.url)} } }`,
      'upstreams:',
      `  - { id: app-0, url: "${app.url}" }`,
      '',
    ].join('\n')
    const file = tempFile('keyspace-reload.yaml', yaml(before))
    const { proc, out } = await startPrimary(t, file)
    t.teardown(async () => { if (proc.exitCode === null) { proc.kill('SIGTERM'); await waitFor(() => proc.exitCode !== null, 30_000, 'stop') } })
    // whole lines only: JSON.parse of the last one, still arriving, would throw in a poll
    const lines = (): Record<string, unknown>[] => out().split('\n').slice(0, -1).filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
    await waitFor(() => lines().some((l) => l['msg'] === 'worker runs the active health checks'), 10_000, 'a lead')
    const base = await evalshas(redis.port)
    await waitFor(async () => (await evalshas(redis.port)) >= base + 6, 10_000, 'checks after the lead')
    t.equal((await redisCli(redis.port, ...before.exists)).trim(), '1', 'the marker of the first keyspace')
    writeFileSync(file, yaml(after))
    proc.kill('SIGHUP')
    await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
    const later = await evalshas(redis.port)
    await waitFor(async () => (await evalshas(redis.port)) >= later + 6, 10_000, 'the new workers checks')
    t.equal((await redisCli(redis.port, ...after.exists)).trim(), '1', 'the marker of the second keyspace')
    const lost = lines().filter((l) => l['msg'] === 'redis keyspace lost')
    for (const l of lost) t.comment(JSON.stringify(l).slice(0, 400))
    t.equal(lost.length, 0, `no keyspace loss reported: nothing was lost (${why})`)
  })
}

reloadIsNoLoss('a key_prefix reload is not a keyspace loss',
  { redis: (url) => `url: "${url}", key_prefix: "a:"`, exists: ['EXISTS', 'a:keyspace'] },
  { redis: (url) => `url: "${url}", key_prefix: "b:"`, exists: ['EXISTS', 'b:keyspace'] },
  'the prefix changed')
reloadIsNoLoss('a database reload (same address) is not a keyspace loss',
  { redis: (url) => `url: "${url}/0", key_prefix: "p:"`, exists: ['EXISTS', 'p:keyspace'] },
  { redis: (url) => `url: "${url}/1", key_prefix: "p:"`, exists: ['-n', '1', 'EXISTS', 'p:keyspace'] },
  'the database changed')
