// The Sentinel setup of deploy/kubernetes/ingress/redis-sentinel, run for real: its init.sh
// (from the ConfigMap, as the init container runs it) writes each "pod"'s redis.conf and
// sentinel.conf, and three redis-server + three Sentinel processes run them on 127.0.0.1,
// 127.0.0.2 and 127.0.0.3 (one address per pod, the same ports, as pods have). A fresh start
// makes the first pod primary; killing it promotes a replica; the restarted pod asks the
// Sentinels and rejoins as a replica of the new primary. Real processes, no sleeps: every
// wait polls redis-cli with a deadline.
import t from 'tap'
import { execFile, execFileSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseYamlDocuments, plainValue } from '../src/config/index.js'
import { ROOT } from './fixtures/cli.js'
import { spawnRedisServer, waitFor, type RedisProcessHandle } from './fixtures/redis-server.js'
import { freePorts } from './fixtures/ports.js'

const CONFIGMAP = join(ROOT, 'deploy', 'kubernetes', 'ingress', 'redis-sentinel', 'configmap.yaml')
const PODS = ['127.0.0.1', '127.0.0.2', '127.0.0.3']

function cli(host: string, port: number, ...args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile('redis-cli', ['-h', host, '-p', String(port), '--raw', ...args], { timeout: 3_000 }, (err, stdout) => resolve(err ? '' : stdout.trim()))
  })
}

t.test('the Sentinel setup: the first pod is primary, a killed primary is replaced, the restarted pod rejoins as a replica', async (t) => {
  const cm = plainValue(parseYamlDocuments(readFileSync(CONFIGMAP, 'utf8'), CONFIGMAP)[0]!) as { data: Record<string, string> }
  const root = mkdtempSync(join(tmpdir(), 'tether-sentinel-setup-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const configDir = join(root, 'config')
  mkdirSync(configDir)
  // as written, but the data directory: each pod's process runs in its own (`dir .`)
  for (const [name, text] of Object.entries(cm.data)) writeFileSync(join(configDir, name), text.replace(/^dir \/data$/m, 'dir .'))
  const [redisPort, sentinelPort] = await freePorts(2)
  const running = new Map<string, RedisProcessHandle[]>()
  t.teardown(async () => { await Promise.all([...running.values()].flat().map((p) => p.stop('SIGKILL'))) })

  /** One pod: the init container, then its Redis and its Sentinel. Returns the init log line. */
  const startPod = async (self: string): Promise<string> => {
    const runtime = join(root, self, 'runtime')
    const data = join(root, self, 'data')
    rmSync(runtime, { recursive: true, force: true }) // an emptyDir is new with each pod
    mkdirSync(runtime, { recursive: true })
    mkdirSync(data, { recursive: true })
    const env = {
      PATH: process.env['PATH'] ?? '/usr/bin:/bin', SELF: self, PEERS: PODS.join(' '), FIRST: PODS[0]!, RUNTIME: runtime,
      CONFIG_DIR: configDir, BIND: self, REDIS_PORT: String(redisPort), SENTINEL_PORT: String(sentinelPort), DOWN_AFTER: '1000',
      // a split vote between the two Sentinels left is tried again after twice this (120 s as shipped)
      FAILOVER_TIMEOUT: '5000',
    }
    const log = execFileSync('sh', [join(configDir, 'init.sh')], { env, encoding: 'utf8', timeout: 20_000 }).trim()
    const redis = await spawnRedisServer([join(runtime, 'redis.conf')], data)
    const sentinel = await spawnRedisServer([join(runtime, 'sentinel.conf'), '--sentinel'], runtime, '+monitor master')
    running.set(self, [redis, sentinel])
    return log
  }
  const role = async (host: string): Promise<string> => {
    const info = await cli(host, redisPort, 'INFO', 'replication')
    const r = /role:(\w+)/.exec(info)?.[1] ?? 'down'
    return r === 'slave' ? `replica of ${/master_host:(\S+)/.exec(info)?.[1]} (${/master_link_status:(\w+)/.exec(info)?.[1]})` : r
  }
  const primaryBy = async (sentinel: string): Promise<string> => (await cli(sentinel, sentinelPort, 'SENTINEL', 'get-master-addr-by-name', 'mymaster')).split('\n')[0] ?? ''

  // a fresh start: pod 0 finds no Sentinel and is primary; the others find pod 0 through its Sentinel
  t.equal(await startPod(PODS[0]!), `init: ${PODS[0]} starts with primary ${PODS[0]}`)
  t.equal(await startPod(PODS[1]!), `init: ${PODS[1]} starts with primary ${PODS[0]}`)
  t.equal(await startPod(PODS[2]!), `init: ${PODS[2]} starts with primary ${PODS[0]}`)
  t.equal(await role(PODS[0]!), 'master')
  await waitFor('both replicas in sync', async () => (await role(PODS[1]!)) === `replica of ${PODS[0]} (up)` && (await role(PODS[2]!)) === `replica of ${PODS[0]} (up)`, 60_000)
  await waitFor('every Sentinel to know the two others', async () => {
    const counts = await Promise.all(PODS.map((p) => cli(p, sentinelPort, 'SENTINEL', 'SENTINELS', 'mymaster')))
    return counts.every((c) => (c.match(/^name$/gm) ?? []).length === 2)
  }, 60_000)
  await cli(PODS[0]!, redisPort, 'SET', 'tether:test', 'before')
  // replication is asynchronous: killed at once, the primary may take the write with it (the
  // lagging-replica loss docs/redis.md describes); the test is about the promotion
  t.equal(await cli(PODS[0]!, redisPort, 'WAIT', '2', '30000'), '2', 'the write reached both replicas')

  // pod 0 dies (both containers): a replica is promoted
  for (const p of running.get(PODS[0]!)!) await p.stop('SIGKILL')
  running.delete(PODS[0]!)
  let promoted = ''
  await waitFor('a replica to be promoted', async () => {
    promoted = await primaryBy(PODS[1]!)
    return promoted !== PODS[0] && promoted !== '' && (await role(promoted)) === 'master'
  }, 60_000)
  t.ok(PODS.slice(1).includes(promoted), `the Sentinels promoted ${promoted}`)
  t.equal(await cli(promoted, redisPort, 'GET', 'tether:test'), 'before', 'with the data written before')

  // pod 0 restarts: its init asks the Sentinels, and it rejoins as a replica of the new primary
  t.equal(await startPod(PODS[0]!), `init: ${PODS[0]} starts with primary ${promoted}`)
  await waitFor('the old primary to replicate the new one', async () => (await role(PODS[0]!)) === `replica of ${promoted} (up)`, 60_000)
  await cli(promoted, redisPort, 'SET', 'tether:test', 'after')
  await waitFor('the write to reach it', async () => (await cli(PODS[0]!, redisPort, 'GET', 'tether:test')) === 'after', 60_000)
  t.pass('writes to the new primary reach the restarted pod')
})
