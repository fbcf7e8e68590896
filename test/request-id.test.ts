import t from 'tap'
import { RequestIds } from '../src/proxy/request-id.js'

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/

t.test('new request ids are version-4 UUIDs, all different, across many batches', async (t) => {
  const ids = new RequestIds()
  const seen = new Set<string>()
  let malformed = 0
  for (let i = 0; i < 5_000; i++) {
    const id = ids.next()
    if (!UUID_V4.test(id)) malformed++
    seen.add(id)
  }
  t.equal(malformed, 0, 'every id has the 8-4-4-4-12 form, version 4 and the RFC 9562 variant')
  t.equal(seen.size, 5_000, 'no id repeats (the batch is refilled with new random bytes)')
})

t.test('two sources of ids do not repeat each other', async (t) => {
  const a = new RequestIds()
  const b = new RequestIds()
  const fromA = new Set(Array.from({ length: 300 }, () => a.next()))
  t.notOk(Array.from({ length: 300 }, () => b.next()).some((id) => fromA.has(id)))
})

t.test('the hex digits are spread over the whole alphabet (the random bytes reach the text)', async (t) => {
  const ids = new RequestIds()
  const counts = new Map<string, number>()
  for (let i = 0; i < 1_000; i++) for (const c of ids.next().replaceAll('-', '')) counts.set(c, (counts.get(c) ?? 0) + 1)
  t.equal(counts.size, 16)
})
