// Hashing for placement: MurmurHash3 x86_32 over the UTF-8 bytes of a JS string, plus the
// 4-byte variant that scores (upstream, bucket) pairs. Pure and allocation-free (no TextEncoder,
// no Buffer, no closures). Must not change silently: the values are a compatibility contract
// between replicas and versions (ARCHITECTURE 11), pinned in test/fixtures/placement/golden.json.

// Source: Austin Appleby, SMHasher, MurmurHash3.cpp, `MurmurHash3_x86_32` (public domain),
// https://github.com/aappleby/smhasher/blob/master/src/MurmurHash3.cpp
const C1 = 0xcc9e2d51
const C2 = 0x1b873593

/** One 4-byte block of the MurmurHash3 x86_32 body. */
function mixBlock(h: number, k: number): number {
  k = Math.imul(k, C1)
  k = (k << 15) | (k >>> 17)
  k = Math.imul(k, C2)
  h ^= k
  h = (h << 13) | (h >>> 19)
  return (Math.imul(h, 5) + 0xe6546b64) | 0
}

/** The MurmurHash3 finaliser (`fmix32`): avalanches all 32 bits. */
function fmix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/**
 * MurmurHash3 x86_32 of the UTF-8 encoding of `text`, as an unsigned 32-bit integer.
 * Identical to `mmh3.hash(text, seed, signed=False)` in Python or `murmur3.Sum32WithSeed` in
 * Go over the same UTF-8 bytes; lone surrogates are encoded as U+FFFD, as `TextEncoder` does.
 * Allocates nothing: the UTF-8 bytes are produced and consumed on the fly.
 *
 * Example: `murmur3('hello')` is `0x248bfa47` (613153351);
 * `murmur3('The quick brown fox jumps over the lazy dog')` is `0x2e4ff723`.
 */
export function murmur3(text: string, seed = 0): number {
  let h = seed | 0
  let k = 0 // pending bytes of the current block, little-endian
  let shift = 0 // bit position of the next byte in k: 0, 8, 16 or 24
  let length = 0 // total UTF-8 bytes
  const n = text.length
  let i = 0
  while (i < n) {
    // Fast path: four ASCII characters at a block boundary are one whole block.
    if (shift === 0 && i + 4 <= n) {
      const c0 = text.charCodeAt(i)
      const c1 = text.charCodeAt(i + 1)
      const c2 = text.charCodeAt(i + 2)
      const c3 = text.charCodeAt(i + 3)
      if ((c0 | c1 | c2 | c3) < 0x80) {
        h = mixBlock(h, c0 | (c1 << 8) | (c2 << 16) | (c3 << 24))
        length += 4
        i += 4
        continue
      }
    }
    // General path: one code point as 1 to 4 UTF-8 bytes, packed little-endian in `seq`.
    let c = text.charCodeAt(i++)
    let seq: number
    let count: number
    if (c < 0x80) {
      seq = c
      count = 1
    } else if (c < 0x800) {
      seq = (0xc0 | (c >>> 6)) | ((0x80 | (c & 0x3f)) << 8)
      count = 2
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const d = i < n ? text.charCodeAt(i) : 0
        if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
          i++
          c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00)
        } else {
          c = 0xfffd // a lone surrogate, as TextEncoder encodes it
        }
      }
      if (c < 0x10000) {
        seq = (0xe0 | (c >>> 12)) | ((0x80 | ((c >>> 6) & 0x3f)) << 8) | ((0x80 | (c & 0x3f)) << 16)
        count = 3
      } else {
        seq =
          (0xf0 | (c >>> 18)) |
          ((0x80 | ((c >>> 12) & 0x3f)) << 8) |
          ((0x80 | ((c >>> 6) & 0x3f)) << 16) |
          ((0x80 | (c & 0x3f)) << 24)
        count = 4
      }
    }
    length += count
    for (; count > 0; count--) {
      k |= (seq & 0xff) << shift
      seq >>>= 8
      shift += 8
      if (shift === 32) {
        h = mixBlock(h, k)
        k = 0
        shift = 0
      }
    }
  }
  if (shift !== 0) {
    k = Math.imul(k, C1)
    k = (k << 15) | (k >>> 17)
    k = Math.imul(k, C2)
    h ^= k
  }
  return fmix32(h ^ length)
}

/**
 * MurmurHash3 x86_32 of the 4 little-endian bytes of the unsigned 32-bit `value`. Used to score
 * an (upstream, bucket) pair: `murmur3U32(bucket, upstreamSeed)`.
 * Same as `murmur3` over those four bytes, e.g. `murmur3U32(0, 0) === murmur3('\0\0\0\0')`,
 * which is `0x2362f9de`.
 */
export function murmur3U32(value: number, seed: number): number {
  return fmix32(mixBlock(seed | 0, value | 0) ^ 4)
}

/**
 * The placement hash of an affinity key (a cookie value, a header, a client IP):
 * `murmur3(key, 0)`. Feed it to `PlacementTable.pick`.
 *
 * Example: `hashKey('user-42')` -> an unsigned 32-bit integer, the same on every replica and
 * every Tether version (see test/fixtures/placement/golden.json for pinned values).
 */
export function hashKey(key: string): number {
  return murmur3(key, 0)
}
