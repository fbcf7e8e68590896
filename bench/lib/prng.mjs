// A seeded pseudo-random generator for benchmarks, so every run uses the same keys.

/** mulberry32: `prng(1)()` -> the same 32-bit unsigned integers on every run. */
export function prng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return (x ^ (x >>> 14)) >>> 0
  }
}
