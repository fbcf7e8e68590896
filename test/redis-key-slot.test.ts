// The Cluster hash slot Tether computes for a key (to know which shard a call goes to) is the one
// Redis computes: golden values from a real cluster-enabled redis-server's CLUSTER KEYSLOT,
// hash tags and their edge cases, and non-ASCII keys.
import t from 'tap'
import { join } from 'node:path'
import { CLUSTER_SLOTS, keySlot } from '../src/redis/key-slot.js'
import { redisCli, startRedis } from './fixtures/redis-server.js'

t.test('keySlot agrees with CLUSTER KEYSLOT, hash tags and non-ASCII keys included', async (t) => {
  const redis = await startRedis({ argsForPort: (port, dir) => ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${port}.conf`)] })
  t.teardown(() => redis.stop())
  const keys = [
    'foo', 'abc', 'tether:cp:{abc}', 'tether:af:{9f86d081884c7d659a2feaa0c55ad015}', '', 'a{}b', '{a', 'a}', '}{a}', 'x{b}y{c}',
    '{}{x}', '{{a}}', 'user-1', 'probe-0', 'é', 'tether:cp:{séance}', '日本{語}', 'emoji 🙂',
    ...Array.from({ length: 40 }, (_, i) => `tether:cp:{user-${i * 7919}}`),
  ]
  for (const key of keys) {
    const expected = Number((await redisCli(redis.port, 'CLUSTER', 'KEYSLOT', key)).trim())
    t.equal(keySlot(key), expected, JSON.stringify(key))
  }
})

t.test('a hash tag decides the slot; an empty or unclosed one does not', async (t) => {
  t.equal(keySlot('tether:cp:{abc}'), keySlot('abc'))
  t.equal(keySlot('tether:af:{abc}'), keySlot('abc'), 'checkpoint and binding of one session share a slot')
  t.not(keySlot('a{}b'), keySlot(''), 'an empty tag: the whole key is hashed')
  t.equal(keySlot('x{b}y{c}'), keySlot('b'), 'only the first tag counts')
  t.equal(keySlot('foo'), 12182)
  for (let i = 0; i < 1000; i++) {
    const s = keySlot(`k${i}`)
    if (!(Number.isInteger(s) && s >= 0 && s < CLUSTER_SLOTS)) t.fail(`k${i} -> ${s}`)
  }
})
