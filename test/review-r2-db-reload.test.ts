// Review r2: a reload that changes state.redis.key_prefix (same Redis node address) rolls the
// workers; the primary's keyspace markers (keyed by node address only) are the old prefix's, so
// every new worker's first check compares the new prefix's marker with the old one and reports a
// keyspace loss that never happened. Real redis-server, real primary with two workers.
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

t.test('a database reload (same address) is not a keyspace loss', async (t) => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const app = await startUpstream('app-0', (_req, res) => res.end('ok\n'))
  t.teardown(() => app.close())
  const [port, adminPort] = await freePorts(2)
  const yaml = (prefix: string): string => [
    `listen: { host: 127.0.0.1, port: ${port} }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info }',
    'health: { shared: redis, active: { enabled: false } }',
    `state: { store: redis, redis: { url: "${redis.url}/${prefix === "a:" ? 0 : 1}", key_prefix: "p:" } }`,
    'upstreams:',
    `  - { id: app-0, url: "${app.url}" }`,
    '',
  ].join('\n')
  const file = tempFile('r2.yaml', yaml('a:'))
  const { proc, out } = await startPrimary(t, file)
  t.teardown(async () => { if (proc.exitCode === null) { proc.kill('SIGTERM'); await waitFor(() => proc.exitCode !== null, 30_000, 'stop') } })
  const lines = (): Record<string, unknown>[] => out().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>)
  await waitFor(() => lines().some((l) => l['msg'] === 'worker runs the active health checks'), 10_000, 'a lead')
  // both workers checked several times since the lead was named (the lead's marker reached the primary)
  const base = await evalshas(redis.port)
  await waitFor(async () => (await evalshas(redis.port)) >= base + 6, 10_000, 'checks after the lead')
  t.equal((await redisCli(redis.port, 'EXISTS', 'p:keyspace')).trim(), '1', 'marker in db 0')
  writeFileSync(file, yaml('b:'))
  proc.kill('SIGHUP')
  await waitFor(() => out().includes('"workers replaced"'), 60_000, 'the roll to end')
  const after = await evalshas(redis.port)
  await waitFor(async () => (await evalshas(redis.port)) >= after + 6, 10_000, 'the new workers checks')
  t.equal((await redisCli(redis.port, '-n', '1', 'EXISTS', 'p:keyspace')).trim(), '1', 'marker in db 1')
  const lost = lines().filter((l) => l['msg'] === 'redis keyspace lost')
  for (const l of lost) t.comment(JSON.stringify(l).slice(0, 400))
  t.equal(lost.length, 0, 'no keyspace loss reported: nothing was lost (the database changed)')
})
