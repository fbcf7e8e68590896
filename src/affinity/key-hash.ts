// The keyed hash of affinity keys for the key index (key-slots.ts): HalfSipHash over a string's
// UTF-16 code units, with a secret per-index key, so clients who choose their keys cannot make
// them collide. Layer 1 pure logic: no I/O, no state; the caller owns and draws the secret.
// Not a compatibility contract (placement has its own hash): values never leave the process.

/**
 * HalfSipHash-c-d (Aumasson & Bernstein, the 32-bit-word variant of SipHash,
 * https://github.com/veorq/SipHash; Linux's `hsiphash` for hash tables is HalfSipHash-1-3) of
 * `s` under the 64-bit key `k0`, `k1`, returning a uint32 as a signed int32. A string whose code
 * units are all <= 0xFF is hashed as its Latin-1 bytes (exactly the reference function over
 * those bytes); any other string as its UTF-16LE bytes with the key's first word inverted, so no
 * narrow and wide string of equal bytes hash alike by construction.
 *
 * Why it resists hash flooding: the index's bucket of a key is this value's low bits; SipHash is
 * a pseudorandom function, so without the key (drawn at random per index and never exposed)
 * a client cannot tell which keys share a bucket, nor learn it from timing of a few requests:
 * colliding inputs can only be found by blind guessing (1 in 2^bits per pair). Fast non-keyed
 * or merely seeded hashes (MurmurHash, CityHash, V8's string hash) have seed-independent
 * multicollisions, which a PRF rules out.
 *
 * Example: `halfSipHash('10.0.0.5', 0x03020100, 0x07060504, 2, 4)` is the reference
 * HalfSipHash-2-4 of those 8 bytes under key 00..07; the index calls `halfSipHash(key, k0, k1)`.
 */
export function halfSipHash(s: string, k0: number, k1: number, c = 1, d = 3): number {
  const n = s.length
  let units = 0
  for (let i = 0; i < n; i++) units |= s.charCodeAt(i)
  const wide = units > 0xff // UTF-16LE bytes, two code units a word; else Latin-1, four a word
  const key0 = wide ? ~k0 : k0
  let v0 = key0 | 0
  let v1 = k1 | 0
  let v2 = 0x6c796765 ^ key0
  let v3 = 0x74656462 ^ k1
  const end = wide ? n & ~1 : n & ~3
  let i = 0
  for (;;) {
    let m: number
    if (i < end) {
      if (wide) {
        m = s.charCodeAt(i) | (s.charCodeAt(i + 1) << 16)
        i += 2
      } else {
        m = s.charCodeAt(i) | (s.charCodeAt(i + 1) << 8) | (s.charCodeAt(i + 2) << 16) | (s.charCodeAt(i + 3) << 24)
        i += 4
      }
    } else {
      // the last word: the remaining bytes (wide: 0 or 2; narrow: 0-3) and the byte length's low byte on top
      m = ((wide ? 2 * n : n) & 0xff) << 24
      const left = n - end
      if (wide) {
        if (left >= 1) m |= s.charCodeAt(end)
      } else {
        if (left >= 3) m |= s.charCodeAt(end + 2) << 16
        if (left >= 2) m |= s.charCodeAt(end + 1) << 8
        if (left >= 1) m |= s.charCodeAt(end)
      }
      i = -1
    }
    v3 ^= m
    for (let r = 0; r < c; r++) {
      v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16)
      v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2
      v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0
      v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16)
    }
    v0 ^= m
    if (i < 0) break
  }
  v2 ^= 0xff
  for (let r = 0; r < d; r++) {
    v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16)
    v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2
    v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0
    v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16)
  }
  return v1 ^ v3
}
