// The key index under KeySlots: keys as bytes in size-classed pages (KeyArena), the keyed hash
// (HalfSipHash, checked against the reference vectors) and the open-addressing index, checked
// against a plain Map over seeded random runs. Pure and deterministic: seeds are pinned.
import t from 'tap'
import { KeySlots } from '../src/affinity/key-slots.js'
import { KeyArena, classOf, sizeOf } from '../src/affinity/key-arena.js'
import { halfSipHash } from '../src/affinity/key-hash.js'
import { mulberry32 as prng } from './fixtures/random.js'

const SEED = [0x9e3779b9, 0x7f4a7c15] as const

t.test('the hash is HalfSipHash: the reference vectors of HalfSipHash-2-4 with 32-bit output', async (t) => {
  // veorq/SipHash vectors.h, vectors_hsip32: key 00..07, message i = bytes 00..i-1, little-endian output
  const vectors: Record<number, string> = { 0: 'a9359f5b', 1: '27475ab8', 3: '8afee704', 4: '2a6e4689', 7: '8bcf63c5', 8: 'd0b8848f', 15: '74fe2b97', 63: '59ea4a74' }
  for (const [n, hex] of Object.entries(vectors)) {
    const message = String.fromCharCode(...Array.from({ length: Number(n) }, (_, i) => i))
    const h = halfSipHash(message, 0x03020100, 0x07060504, 2, 4)
    t.equal(Buffer.from(new Uint32Array([h >>> 0]).buffer).toString('hex'), hex, `${n} bytes`)
  }
})

t.test('the hash depends on the key, and wide strings hash apart from narrow ones with the same bytes', async (t) => {
  t.not(halfSipHash('10.0.0.5', 1, 2), halfSipHash('10.0.0.5', 1, 3))
  t.equal(halfSipHash('10.0.0.5', 1, 2), halfSipHash('10.0.0.5', 1, 2))
  t.not(halfSipHash('\u0101', 1, 2), halfSipHash('\u0001\u0001', 1, 2))
  t.equal(halfSipHash('€uro', 5, 6), halfSipHash('€uro', 5, 6))
})

t.test('size classes are 16, 24, 32, 48, 64, ... bytes and each holds the lengths up to it', async (t) => {
  t.same([0, 1, 2, 3, 4, 5, 6, 7].map(sizeOf), [16, 24, 32, 48, 64, 96, 128, 192])
  t.same([0, 16, 17, 24, 25, 32, 33, 48, 49, 64, 65, 340, 4096, 4097].map(classOf), [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 9, 16, 17])
  for (let n = 0; n < 5000; n++) {
    const c = classOf(n)
    if (sizeOf(c) < n || (c > 0 && sizeOf(c - 1) >= n)) t.fail(`${n} bytes in class ${c}`)
  }
})

t.test('the arena reads back what it stored, reuses freed chunks per class and never moves a stored key', async (t) => {
  const arena = new KeyArena()
  const keys = ['', '10.0.0.5', 'x'.repeat(31), 'é'.repeat(40), '€ and \ud800 lone', 'y'.repeat(300), 'z'.repeat(70_000)]
  const at = keys.map((k) => arena.put(k, KeyArena.shapeOf(k)))
  keys.forEach((k, i) => {
    t.equal(arena.read(at[i]!, KeyArena.shapeOf(k)), k)
    t.ok(arena.equals(at[i]!, KeyArena.shapeOf(k), k))
  })
  t.equal(KeyArena.shapeOf('é'.repeat(40)), 80, 'Latin-1 is one byte a unit')
  t.equal(KeyArena.shapeOf('€'), 3, 'wider units are two bytes a unit')
  t.notOk(arena.equals(at[1]!, KeyArena.shapeOf('10.0.0.5'), '10.0.0.6'))
  const bytes = arena.bytes
  arena.free(at[2]!, KeyArena.shapeOf(keys[2]!))
  const again = arena.put('w'.repeat(30), KeyArena.shapeOf('w'.repeat(30)))
  t.equal(again, at[2], 'a key of the same class takes the freed chunk')
  t.equal(arena.bytes, bytes, 'no new page for it')
  keys.forEach((k, i) => { if (i !== 2) t.equal(arena.read(at[i]!, KeyArena.shapeOf(k)), k, 'the other keys are where they were') })
})

t.test('keys of every shape round-trip through the index: UTF-8, lone surrogates, long and one byte apart', async (t) => {
  const slots = new KeySlots({ seed: SEED })
  const a = slots.owner()
  const keys = [
    '', '1', '10.0.0.5', '2001:db8::ff00:42:8329', 'Grüße', '東京', '\u{1F600} emoji', '\udc00 lone', 'x'.repeat(300),
    `eyJpdiI6${'A'.repeat(332)}`, `eyJpdiI6${'A'.repeat(331)}B`, 'ab', 'ac', 'é'.repeat(200), '€'.repeat(200),
  ]
  const at = keys.map((k) => slots.claim(k, a))
  t.equal(new Set(at).size, keys.length, 'each key its own slot')
  keys.forEach((k, i) => {
    t.equal(slots.slotOf(k), at[i], JSON.stringify(k.slice(0, 20)))
    t.equal(slots.keyAt(at[i]!), k)
    t.equal(slots.stored(k), k)
  })
  t.equal(slots.slotOf('x'.repeat(299)), undefined)
  t.equal(slots.slotOf('x'.repeat(301)), undefined)
  t.equal(slots.slotOf('10.0.0.6'), undefined)
  t.equal(slots.slotOf('\udc01 lone'), undefined)
  t.same(new Map(slots.held(a)), new Map(keys.map((k, i) => [k, at[i]!])))
})

t.test('a random run of claims and releases over keys of many sizes agrees with a Map, past several growths', async (t) => {
  const slots = new KeySlots({ seed: SEED })
  const owners = [slots.owner(), slots.owner()]
  const next = prng(21)
  const pick = (n: number): number => Math.floor(next() * n)
  // the model: key -> [slot, owner bits]
  const model = new Map<string, [number, number]>()
  const keyOf = (i: number): string => {
    const len = [3, 15, 16, 17, 31, 33, 100, 340][i % 8]!
    const base = `${i.toString(36)}:${i % 5 === 0 ? 'ü' : i % 7 === 0 ? '€' : '-'}`
    return base.padEnd(len, String.fromCharCode(97 + (i % 26)))
  }
  let mismatches = 0
  let growths = 0
  let lastUsed = 0
  for (let step = 0; step < 60_000; step++) {
    // the key space widens over the run, so the index grows with deletes interleaved
    const key = keyOf(pick(200 + step / 4))
    const owner = owners[pick(2)]!
    const op = next()
    const held = model.get(key)
    if (op < 0.55) {
      const slot = slots.claim(key, owner)
      if (held !== undefined && held[0] !== slot) mismatches++
      model.set(key, [slot, (held?.[1] ?? 0) | owner])
    } else if (op < 0.85) {
      if (held !== undefined) {
        slots.release(held[0], owner)
        const left = held[1] & ~owner
        if (left === 0) model.delete(key)
        else model.set(key, [held[0], left])
      }
    } else {
      const slot = slots.slotOf(key)
      if (slot !== held?.[0]) mismatches++
      if (held !== undefined && (slots.keyAt(held[0]) !== key || slots.holds(held[0], owner) !== ((held[1] & owner) !== 0))) mismatches++
    }
    if (slots.size !== model.size) mismatches++
    if (slots.used > lastUsed * 2) { growths++; lastUsed = slots.used }
  }
  t.equal(mismatches, 0, 'no mismatches')
  for (const [key, [slot]] of model) if (slots.slotOf(key) !== slot || slots.keyAt(slot) !== key) t.fail(key)
  const bySlot = new Map([...model].map(([key, [slot, bits]]) => [slot, [key, bits] as const]))
  t.equal(new Set([...model.values()].map(([s]) => s)).size, model.size, 'no slot given to two keys')
  for (const o of owners) {
    const expected = [...bySlot].filter(([, [, bits]]) => (bits & o) !== 0).map(([slot, [key]]) => [key, slot])
    t.same([...slots.held(o)].sort((x, y) => x[1] - y[1]), expected.sort((x, y) => (x[1] as number) - (y[1] as number)))
  }
  t.ok(model.size > 3000, `the index grew past its first buckets (${model.size} keys held)`)
  t.ok(growths >= 3, `slots grew ${growths} times`)
  t.ok(slots.used < model.size * 2, `freed slots are reused (${slots.used} slots for ${model.size} keys)`)
})

t.test('keys a client can choose alike (one prefix, sequential suffixes) keep probe sequences short', async (t) => {
  for (const seed of [SEED, [1, 2] as const, undefined]) {
    const slots = new KeySlots(seed === undefined ? {} : { seed })
    const a = slots.owner()
    for (let i = 0; i < 100_000; i++) slots.claim(`session=${'0'.repeat(20)}${i}`, a)
    for (let i = 0; i < 20_000; i++) slots.claim(`10.0.${i >> 8}.${i & 255}`, a)
    const { longest, mean } = slots.probes()
    // random keys under linear probing at load <= 0.7: mean displacement <= ~1.2, longest a few dozen
    t.ok(mean < 2, `mean distance from home ${mean.toFixed(2)} (seed ${seed ?? 'random'})`)
    t.ok(longest < 100, `longest distance from home ${longest}`)
  }
})

t.test('backward-shift deletion keeps every remaining key findable and distances short after heavy churn', async (t) => {
  const slots = new KeySlots({ seed: SEED })
  const a = slots.owner()
  const live = new Map<string, number>()
  const next = prng(5)
  for (let i = 0; i < 50_000; i++) {
    const key = `k${i}`
    live.set(key, slots.claim(key, a))
    if (next() < 0.6) {
      const victim = `k${Math.floor(next() * i)}`
      const s = live.get(victim)
      if (s !== undefined) { slots.release(s, a); live.delete(victim) }
    }
  }
  let lost = 0
  for (const [key, s] of live) if (slots.slotOf(key) !== s) lost++
  t.equal(lost, 0)
  t.equal(slots.size, live.size)
  t.ok(slots.probes().mean < 2, `mean distance ${slots.probes().mean.toFixed(2)}`)
})
