// The in-process checkpoint store: the shared CheckpointStore contract, plus what is specific to
// it (exact TTL boundary on a FakeClock, LRU eviction, option checks). Nothing sleeps.
import t from 'tap'
import { MemoryCheckpointStore } from '../src/state/memory-store.js'
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

t.test('reading does not extend the TTL; a stored put restarts it; a stale put does not', async (t) => {
  const clock = new FakeClock()
  const store = new MemoryCheckpointStore({ maxEntries: 10, clock })
  await store.put('k', cp('v1', 1), 1000)
  clock.advance(600)
  await store.get('k')
  await store.put('k', cp('v0', 0), 1000)
  clock.advance(400)
  t.equal((await store.get('k')).status, 'missing', 'neither the read nor the stale put extended it')
  await store.put('k', cp('v2', 2), 1000)
  clock.advance(600)
  t.equal(await store.put('k', cp('v3', 3), 1000), 'stored')
  clock.advance(600)
  t.equal((await store.get('k')).status, 'found', 'the stored put restarted the TTL')
})

t.test('a full store evicts the least recently used session', async (t) => {
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
})
