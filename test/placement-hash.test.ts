// Specification of key hashing (src/placement/hash.ts): MurmurHash3 x86_32 over UTF-8,
// checked against published vectors and against a plain byte-wise reference over
// Buffer.from(text, 'utf8') for seeded random strings, including surrogate pairs.
import t from 'tap'
import { hashKey, murmur3, murmur3U32 } from '../src/placement/hash.js'
import { mulberry32 } from './fixtures/placement/keys.js'

/** The textbook algorithm over a byte array, written independently of the streaming one. */
function referenceMurmur3(bytes: Uint8Array, seed: number): number {
  const c1 = 0xcc9e2d51
  const c2 = 0x1b873593
  let h = seed | 0
  const blocks = bytes.length >> 2
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
  for (let b = 0; b < blocks; b++) {
    let k = view.getUint32(b * 4, true)
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  let k = 0
  const tail = blocks * 4
  const rest = bytes.length & 3
  if (rest >= 3) k ^= bytes[tail + 2]! << 16
  if (rest >= 2) k ^= bytes[tail + 1]! << 8
  if (rest >= 1) {
    k ^= bytes[tail]!
    k = Math.imul(k, c1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, c2)
    h ^= k
  }
  h ^= bytes.length
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

t.test('murmur3 matches the published MurmurHash3 x86_32 test vectors', async (t) => {
  // Vectors as published with SMHasher ports (e.g. the widely cited set by Ian Boyd).
  const vectors: [text: string, seed: number, hash: number][] = [
    ['', 0, 0],
    ['', 1, 0x514e28b7],
    ['', 0xffffffff, 0x81f16f39],
    ['\0\0\0\0', 0, 0x2362f9de],
    ['a', 0x9747b28c, 0x7fa09ea6],
    ['aa', 0x9747b28c, 0x5d211726],
    ['aaa', 0x9747b28c, 0x283e0130],
    ['aaaa', 0x9747b28c, 0x5a97808a],
    ['abc', 0, 0xb3dd93fa],
    ['abcd', 0x9747b28c, 0xf0478627],
    ['hello', 0, 0x248bfa47],
    ['Hello, world!', 0x9747b28c, 0x24884cba],
    ['ππππππππ', 0x9747b28c, 0xd58063c1],
    ['The quick brown fox jumps over the lazy dog', 0, 0x2e4ff723],
    ['The quick brown fox jumps over the lazy dog', 0x9747b28c, 0x2fa826cd],
  ]
  for (const [text, seed, hash] of vectors) {
    t.equal(murmur3(text, seed), hash, `murmur3(${JSON.stringify(text)}, 0x${seed.toString(16)}) is 0x${hash.toString(16)}`)
  }
})

t.test('murmur3 hashes the UTF-8 bytes, whatever the characters', async (t) => {
  const next = mulberry32(7)
  const pools = [
    'abcXYZ019-_.',
    'äöüßéñ€£¥', // 2- and 3-byte UTF-8
    '日本語中文한국어', // 3-byte
    '😀🎉🚀', // surrogate pairs, 4-byte UTF-8
    '\ud800\udfff\udc00x', // lone surrogates among others: encoded as U+FFFD
  ]
  let mismatches = 0
  for (let n = 0; n < 3000; n++) {
    const length = Math.floor(next() * 40)
    let s = ''
    for (let i = 0; i < length; i++) {
      const pool = pools[Math.floor(next() * pools.length)]!
      s += pool[Math.floor(next() * pool.length)]
    }
    const seed = Math.floor(next() * 4294967296)
    const want = referenceMurmur3(Buffer.from(s, 'utf8'), seed)
    if (murmur3(s, seed) !== want) {
      mismatches++
      t.fail(`murmur3(${JSON.stringify(s)}, ${seed}) differs from the reference over UTF-8 bytes`)
    }
  }
  t.equal(mismatches, 0, '3000 random strings of 0..39 mixed-width characters agree with the reference')
})

t.test('murmur3U32 is murmur3 over the four little-endian bytes of the number', async (t) => {
  const next = mulberry32(11)
  for (let n = 0; n < 200; n++) {
    const value = Math.floor(next() * 4294967296)
    const seed = Math.floor(next() * 4294967296)
    const bytes = new Uint8Array(4)
    new DataView(bytes.buffer).setUint32(0, value, true)
    if (murmur3U32(value, seed) !== referenceMurmur3(bytes, seed)) t.fail(`murmur3U32(${value}, ${seed})`)
  }
  t.equal(murmur3U32(0, 0), 0x2362f9de, 'murmur3U32(0, 0) is murmur3 of four zero bytes')
})

t.test('hashKey is murmur3 with seed 0 and always an unsigned 32-bit integer', async (t) => {
  for (const key of ['', 'user-42', 'session:abc', '10.0.0.1', '😀']) {
    const h = hashKey(key)
    t.equal(h, murmur3(key, 0), `hashKey(${JSON.stringify(key)}) equals murmur3 seed 0`)
    t.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff, `hashKey(${JSON.stringify(key)}) is a uint32`)
  }
})
