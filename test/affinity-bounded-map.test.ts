// The bounded side map of the session table and records: exactly `max` entries at most, the
// oldest out, a re-set entry counted as newest; checked against a plain array model over many
// evictions (the kept iterator must keep finding the oldest entry).
import t from 'tap'
import { BoundedMap } from '../src/affinity/bounded-map.js'
import { mulberry32 as prng } from './fixtures/random.js'

t.test('a bounded map drops its oldest entry beyond the bound, and a re-set entry becomes the newest', async (t) => {
  const m = new BoundedMap<string, number>(2)
  m.set('a', 1)
  m.set('b', 2)
  m.set('a', 3)
  m.set('c', 4)
  t.equal(m.get('b'), undefined)
  t.same([...m], [['a', 3], ['c', 4]])
  t.equal(m.size, 2)
  t.equal(m.delete('a'), true)
  t.equal(m.delete('a'), false)
  m.set('d', 5)
  m.set('e', 6)
  t.same([...m], [['d', 5], ['e', 6]])
})

t.test('a bounded map refuses a bound that is not a positive integer', async (t) => {
  t.throws(() => new BoundedMap(0), RangeError)
  t.throws(() => new BoundedMap(1.5), RangeError)
})

t.test('a bounded map matches an oldest-first model over 20,000 random sets and deletes', async (t) => {
  const max = 100
  const m = new BoundedMap<number, number>(max)
  const model: [number, number][] = []
  const next = prng(7)
  for (let i = 0; i < 20_000; i++) {
    const k = Math.floor(next() * 300)
    const at = model.findIndex(([mk]) => mk === k)
    if (next() < 0.25) {
      t.equal(m.delete(k), at >= 0)
      if (at >= 0) model.splice(at, 1)
    } else {
      m.set(k, i)
      if (at >= 0) model.splice(at, 1)
      model.push([k, i])
      if (model.length > max) model.shift()
    }
  }
  t.same([...m], model)
  t.equal(m.size, model.length)
})
