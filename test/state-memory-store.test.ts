// The in-process checkpoint store: the shared CheckpointStore contract, plus what is specific to
// it (exact TTL boundary on a FakeClock, the byte and entry bounds, segmented LRU eviction that
// a flood of sessions seen once cannot use against returning ones, option checks). Nothing sleeps.
import t from 'tap'
import { CHECKPOINT_ENTRY_OVERHEAD_BYTES, MemoryCheckpointStore, checkpointCost } from '../src/state/memory-store.js'
import type { Checkpoint } from '../src/state/checkpoint-store.js'
import { FakeClock } from './fixtures/clock.js'
import { checkpointStoreConformance } from './fixtures/checkpoint-store-conformance.js'

const cp = (value: string, version: number | null = null): Checkpoint => ({ value, version, upstream: 'app-0', epoch: 0, writtenAt: 0 })

t.test('MemoryCheckpointStore meets the CheckpointStore contract', async (t) => {
  const clock = new FakeClock()
  checkpointStoreConformance(t, {
    make: async ({ maxBytes }) => {
      const store = new MemoryCheckpointStore({ maxEntries: 1000, maxBytes, clock })
      await store.start()
      return store
    },
    shortTtl: 60_000,
    elapse: (ms) => void clock.advance(ms),
    eventually: async (what, check) => {
      if (!(await check())) throw new Error(`expected ${what} once the clock was advanced`)
    },
  })
})

t.test('a checkpoint lives exactly ttlMs: present 1 ms before, gone at the TTL', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock })
  await store.put('k', cp('v'), 1000)
  clock.advance(999)
  t.equal((await store.get('k')).status, 'found')
  clock.advance(1)
  t.equal((await store.get('k')).status, 'missing')
  t.equal(store.size, 0, 'the expired entry was removed when read')
})

t.test('reading does not extend the TTL; a stored put restarts it; a stale put extends it, never shortens it', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock })
  await store.put('k', cp('v1', 1), 1000)
  clock.advance(600)
  await store.get('k')
  clock.advance(400)
  t.equal((await store.get('k')).status, 'missing', 'the read did not extend it')
  await store.put('k', cp('v1', 1), 1000)
  clock.advance(600)
  t.equal(await store.put('k', cp('v0', 0), 1000), 'stale')
  clock.advance(600)
  t.same(await store.get('k'), { status: 'found', checkpoint: cp('v1', 1) }, 'the stale put extended it (the user is active), checkpoint unchanged')
  t.equal(await store.put('k', cp('v0', 0), 10), 'stale')
  clock.advance(300)
  t.equal((await store.get('k')).status, 'found', 'a stale put with a shorter TTL did not shorten it')
  await store.put('k', cp('v2', 2), 1000)
  clock.advance(600)
  t.equal(await store.put('k', cp('v3', 3), 1000), 'stored')
  clock.advance(600)
  t.equal((await store.get('k')).status, 'found', 'the stored put restarted the TTL')
})

t.test('a full store evicts the least recently used session seen only once', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 3, clock })
  await store.put('a', cp('a'), 60_000)
  await store.put('b', cp('b'), 60_000)
  await store.put('c', cp('c'), 60_000)
  await store.get('a') // a is now the most recently used; b the least
  await store.put('d', cp('d'), 60_000)
  t.equal(store.size, 3)
  t.equal((await store.get('b')).status, 'missing', 'b was evicted')
  for (const k of ['a', 'c', 'd']) t.equal((await store.get(k)).status, 'found', k)
  await store.put('c', cp('c2'), 60_000) // re-putting a held key evicts nothing
  t.equal(store.size, 3)
})

t.test('resize: the checkpoints held are kept down to the new bounds, least recently used of probation first; new bounds apply to puts', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock })
  for (const k of ['a', 'b', 'c', 'd', 'e']) await store.put(k, cp(k), 60_000)
  await store.get('a') // protected
  store.resize({ maxEntries: 3 })
  t.equal(store.size, 3)
  for (const k of ['b', 'c']) t.equal((await store.get(k)).status, 'missing', `${k} (probation, least recently used) evicted`)
  t.equal((await store.get('a')).status, 'found', 'the returning session kept')
  store.resize({ maxEntries: 3, maxBytes: 1 })
  t.equal(await store.put('f', cp('too long'), 60_000), 'too_large', 'the new maxBytes applies')
  store.resize({ maxEntries: 100 })
  for (const k of ['g', 'h', 'i', 'j']) await store.put(k, cp(k), 60_000)
  t.equal(store.size, 7, 'room for more')
  t.throws(() => store.resize({ maxEntries: 0 }), RangeError, 'bounds checked as at construction')
  t.equal(store.size, 7, 'a refused resize changes nothing')
})

t.test('refused puts neither store nor evict', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 2, maxBytes: 4, clock })
  await store.put('a', cp('a', 5), 60_000)
  await store.put('b', cp('b'), 60_000)
  t.equal(await store.put('c', cp('too long'), 60_000), 'too_large')
  t.equal(await store.put('a', cp('a', 4), 60_000), 'stale')
  t.equal(store.size, 2)
  t.equal((await store.get('b')).status, 'found')
})

t.test('the returned checkpoint is a frozen copy', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 2, clock: new FakeClock() })
  const written = { ...cp('v', 1) }
  await store.put('k', written, 60_000)
  written.upstream = 'mutated'
  const got = await store.get('k')
  t.equal(got.status === 'found' && got.checkpoint.upstream, 'app-0')
  t.ok(got.status === 'found' && Object.isFrozen(got.checkpoint))
})

t.test('status is always ready and stop keeps the checkpoints', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 2, clock: new FakeClock() })
  t.equal(store.status, 'ready')
  await store.put('k', cp('v'), 60_000)
  await store.stop()
  t.equal(store.status, 'ready')
  t.equal((await store.get('k')).status, 'found')
})

t.test('invalid limits are rejected with a precise message', async (t) => {
  const clock = new FakeClock()
  t.throws(() => new MemoryCheckpointStore({ maxEntries: 0, clock }), /maxEntries must be an integer >= 1, got 0/)
  t.throws(() => new MemoryCheckpointStore({ maxEntries: 1.5, clock }), /maxEntries/)
  t.throws(() => new MemoryCheckpointStore({ maxEntries: 1, maxBytes: -1, clock }), /maxBytes must be an integer >= 0, got -1/)
  t.throws(() => new MemoryCheckpointStore({ maxEntries: 1, maxTotalBytes: 0, clock }), /maxTotalBytes must be an integer >= 1, got 0/)
  t.throws(() => new MemoryCheckpointStore({ maxEntries: 1, maxTotalBytes: 2.5, clock }), /maxTotalBytes/)
})

// --- The byte bound and segmented LRU --------------------------------------------------------

const HOUR = 3_600_000
/** A distinct value of exactly `n` characters. */
const sized = (tag: string, n: number): string => `${tag}:`.padEnd(n, 'x')
/** The key of user `i`, 32 characters like a session id. */
const user = (i: number): string => `user-${i}-`.padEnd(32, '0')
/** The key of one-request visitor `i`. */
const visitor = (i: number): string => `visitor-${i}-`.padEnd(32, '0')
const found = async (store: MemoryCheckpointStore, key: string): Promise<string | null> => {
  const r = await store.get(key)
  return r.status === 'found' ? r.checkpoint.value : null
}

t.test('a checkpoint costs its value, its key and the fixed entry overhead; two-byte strings count double', async (t) => {
  const key = user(1)
  t.equal(checkpointCost(key, sized('a', 1000)), CHECKPOINT_ENTRY_OVERHEAD_BYTES + 32 + 1000)
  t.equal(checkpointCost(key, ''), CHECKPOINT_ENTRY_OVERHEAD_BYTES + 32)
  t.equal(checkpointCost(key, 'caf\u00e9\u00ff'), CHECKPOINT_ENTRY_OVERHEAD_BYTES + 32 + 5, 'latin1: one byte a character')
  t.equal(checkpointCost(key, 'caf\u20ac'), CHECKPOINT_ENTRY_OVERHEAD_BYTES + 32 + 8, 'beyond latin1 V8 stores two bytes a character')
})

t.test('the byte total is the sum of the held costs and never exceeds maxTotalBytes', async (t) => {
  const cost = checkpointCost(visitor(0), sized('v', 1000))
  const bound = 10 * cost + 100 // room for 10, not 11
  const store = new MemoryCheckpointStore({ maxEntries: 1000, maxTotalBytes: bound, clock: new FakeClock() })
  for (let i = 0; i < 10; i++) t.equal(await store.put(visitor(i), cp(sized(`v${i}`, 1000)), HOUR), 'stored')
  t.equal(store.bytes, 10 * cost)
  t.equal(store.size, 10)
  for (let i = 10; i < 200; i++) {
    await store.put(visitor(i), cp(sized(`v${i}`, 1000)), HOUR)
    if (store.bytes > bound) t.fail(`over the bound after visitor ${i}: ${store.bytes}`)
  }
  t.equal(store.size, 10, 'full: each new checkpoint evicted one')
  t.equal(await found(store, visitor(189)), null, 'the oldest went first')
  t.equal(await found(store, visitor(190)), sized('v190', 1000))
  await store.put(visitor(190), cp(sized('v190', 2000)), HOUR) // a bigger rewrite makes room too
  t.ok(store.bytes <= bound)
  t.equal(store.size, 9)
  await store.delete(visitor(190))
  t.equal(store.bytes, 8 * cost, 'a delete gives its bytes back')
})

t.test('an expired checkpoint gives its bytes back when read', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock })
  await store.put('k', cp('v'), 1000)
  t.equal(store.bytes, checkpointCost('k', 'v'))
  clock.advance(1000)
  await store.get('k')
  t.equal(store.bytes, 0)
})

t.test('a checkpoint that costs more than the whole store is too_large and evicts nothing', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 10, maxTotalBytes: 2000, clock: new FakeClock() })
  await store.put('a', cp('a'), HOUR)
  t.equal(await store.put('b', cp(sized('b', 2000)), HOUR), 'too_large')
  t.equal(await found(store, 'a'), 'a')
  t.equal(store.size, 1)
})

t.test('a flood of sessions seen once never evicts a session seen twice', async (t) => {
  // 20 returning users with 1 KB checkpoints fit in the protected 80% of a 64-checkpoint store
  const cost = checkpointCost(user(0), sized('u', 1000))
  const store = new MemoryCheckpointStore({ maxEntries: 1_000_000, maxTotalBytes: 64 * cost, clock: new FakeClock() })
  for (let i = 0; i < 20; i++) await store.put(user(i), cp(sized(`u${i}-1`, 1000), 1), HOUR)
  for (let i = 0; i < 20; i++) t.equal(await store.put(user(i), cp(sized(`u${i}-2`, 1000), 2), HOUR), 'stored', 'a returning user\'s next answer')
  for (let i = 0; i < 5000; i++) await store.put(visitor(i), cp(sized(`v${i}`, 1000)), HOUR)
  t.ok(store.bytes <= 64 * cost)
  for (let i = 0; i < 20; i++) t.equal(await found(store, user(i)), sized(`u${i}-2`, 1000), `user ${i} kept`)
  t.equal(await found(store, visitor(4999)), sized('v4999', 1000), 'the newest visitor is kept too')
  t.equal(store.size, 64, 'visitors filled the rest of the bound')
})

t.test('a read (a rehydration) promotes: that session survives a flood of new ones', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: new FakeClock() })
  await store.put('read', cp('r'), HOUR)
  await store.put('unread', cp('u'), HOUR)
  t.equal(await found(store, 'read'), 'r')
  for (let i = 0; i < 100; i++) await store.put(visitor(i), cp('v'), HOUR)
  t.equal(await found(store, 'read'), 'r')
  t.equal(await found(store, 'unread'), null)
})

t.test('a stale put neither stores nor promotes', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: new FakeClock() })
  await store.put('k', cp('v5', 5), HOUR)
  t.equal(await store.put('k', cp('v4', 4), HOUR), 'stale')
  for (let i = 0; i < 100; i++) await store.put(visitor(i), cp('v'), HOUR)
  t.equal(await found(store, 'k'), null, 'still on probation, so the flood evicted it')
})

t.test('an expired checkpoint written again is a new session (probation), not a returning one', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock })
  await store.put('k', cp('old'), 1000)
  clock.advance(1000)
  await store.put('k', cp('new'), HOUR)
  for (let i = 0; i < 100; i++) await store.put(visitor(i), cp('v'), HOUR)
  t.equal(await found(store, 'k'), null)
})

t.test('protected keeps 80%: beyond it the least recently used returning session is demoted, not dropped', async (t) => {
  // 10 entries: protected holds at most 8
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: new FakeClock() })
  for (let i = 0; i < 9; i++) {
    await store.put(user(i), cp(`u${i}`), HOUR)
    await store.get(user(i)) // promoted; the 9th demotes user 0
  }
  t.equal(store.size, 9, 'a demotion drops nothing')
  await store.put(visitor(0), cp('v0'), HOUR) // 10 held: no eviction
  t.equal(store.size, 10)
  await store.put(visitor(1), cp('v1'), HOUR) // evicts probation's least recently used: demoted user 0
  t.equal(store.size, 10)
  t.equal(await found(store, visitor(0)), 'v0', 'the visitor that came after the demotion is kept')
  t.equal(await found(store, user(0)), null, 'the demoted user went first')
  for (let i = 1; i < 9; i++) t.equal(await found(store, user(i)), `u${i}`)
})

t.test('with no returning sessions, new ones use the whole bound', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock: new FakeClock() })
  for (let i = 0; i < 10; i++) await store.put(visitor(i), cp(`v${i}`), HOUR)
  t.equal(store.size, 10)
  for (let i = 0; i < 10; i++) t.equal(await found(store, visitor(i)), `v${i}`)
})

t.test('one returning session larger than the protected share is demoted and still kept', async (t) => {
  const big = sized('big', 900)
  const store = new MemoryCheckpointStore({ maxEntries: 10, maxTotalBytes: checkpointCost(user(0), big) + 200, clock: new FakeClock() })
  await store.put(user(0), cp(big), HOUR)
  t.equal(await found(store, user(0)), big)
  t.equal(await found(store, user(0)), big)
  t.equal(store.size, 1)
})

t.test('protected is touched only when probation is empty', async (t) => {
  // one returning user costing 70% of the bound (protected), then a visitor costing 50%
  const big = sized('big', 7000)
  const bound = Math.ceil(checkpointCost(user(0), big) / 0.7)
  const store = new MemoryCheckpointStore({ maxEntries: 10, maxTotalBytes: bound, clock: new FakeClock() })
  await store.put(user(0), cp(big), HOUR)
  t.equal(await found(store, user(0)), big)
  await store.put(visitor(0), cp(sized('v0', 100)), HOUR)
  t.equal(await found(store, user(0)), big, 'a small visitor fits in the probation share')
  t.equal(await store.put(visitor(1), cp(sized('v1', Math.floor(bound / 2))), HOUR), 'stored')
  t.equal(await found(store, visitor(0)), null, 'probation went first')
  t.equal(await found(store, user(0)), null, 'then protected, as nothing else could make room')
  t.equal(store.size, 1)
  t.ok(store.bytes <= bound)
})

t.test('a one-entry store keeps the newest session', async (t) => {
  const store = new MemoryCheckpointStore({ maxEntries: 1, clock: new FakeClock() })
  await store.put('a', cp('a'), HOUR)
  t.equal(await found(store, 'a'), 'a')
  await store.put('b', cp('b'), HOUR)
  t.equal(await found(store, 'a'), null)
  t.equal(await found(store, 'b'), 'b')
})
