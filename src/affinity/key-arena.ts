// The key arena: affinity key strings kept as bytes off the V8 heap, in pages per size class,
// for the key index (key-slots.ts). Layer 2 state owner: no I/O; knows nothing of slots,
// owners or hashing. A chunk is addressed by a uint32 location; freed chunks are reused.

/** Page size: each size class allocates its chunks from pages of 64 KiB (or one chunk, if larger). */
const PAGE_BYTES = 1 << 16
/** A location is `page * 2^13 + offset / 8` (chunk sizes are multiples of 8, offsets < 64 KiB). */
const OFFSET_BITS = 13
/** Pages per class a location can address (2^19 x 64 KiB: far beyond any real table). */
const MAX_PAGES = 1 << 19

/**
 * Strings as bytes, in chunks of 16, 24, 32, 48, 64, 96, ... bytes (powers of two and the
 * midpoints, so a chunk wastes under a third of itself), each class carved from 64 KiB pages
 * that are never moved or compacted: a freed chunk goes on its class's free list (kept inside
 * the free chunks themselves) and the next string of that class takes it. Pages are only
 * added, never returned: memory follows the peak number of keys per class.
 *
 * A string is stored by its *shape* ({@link KeyArena.shapeOf}): one byte a code unit when every
 * unit is <= 0xFF (all that HTTP headers, cookies and addresses give: Node reads header bytes
 * as Latin-1), else two bytes a unit (UTF-16LE, lone surrogates kept), so reading it back gives
 * exactly the string stored. The caller keeps each string's shape and location.
 *
 * Example:
 * ```ts
 * const arena = new KeyArena()
 * const shape = KeyArena.shapeOf('10.0.0.5')   // 16: 8 one-byte units
 * const at = arena.put('10.0.0.5', shape)
 * arena.equals(at, shape, '10.0.0.5')           // -> true
 * arena.read(at, shape)                         // -> '10.0.0.5' (a new flat string)
 * arena.free(at, shape)                         // its 16-byte chunk is reused by the next put
 * ```
 */
export class KeyArena {
  /** Per class: its pages. */
  readonly #pages: Buffer[][] = []
  /** Per class: bytes used in its last page (fresh chunks come from there). */
  readonly #fill: number[] = []
  /** Per class: the first free chunk's location + 1 (0: none); each free chunk holds the next's. */
  readonly #free: number[] = []

  /**
   * A string's shape: its length in code units times 2, plus 1 when some unit is > 0xFF (stored
   * two bytes a unit). Example: `shapeOf('ab')` -> 4; `shapeOf('€')` -> 3.
   */
  static shapeOf(s: string): number {
    let units = 0
    for (let i = 0; i < s.length; i++) units |= s.charCodeAt(i)
    return s.length * 2 + (units > 0xff ? 1 : 0)
  }

  /** Bytes held in pages (for measurement). */
  get bytes(): number {
    let total = 0
    for (const pages of this.#pages) for (const page of pages) total += page.length
    return total
  }

  /** Stores `s` (of shape `shape`) and returns its location. */
  put(s: string, shape: number): number {
    const at = this.#alloc(classOf(bytesOf(shape)))
    const page = this.#page(at, shape)
    let o = offsetOf(at)
    const n = s.length
    if ((shape & 1) === 0) {
      for (let i = 0; i < n; i++) page[o + i] = s.charCodeAt(i)
    } else {
      for (let i = 0; i < n; i++, o += 2) {
        const c = s.charCodeAt(i)
        page[o] = c
        page[o + 1] = c >>> 8
      }
    }
    return at
  }

  /** Is the string at `at` (of shape `shape`) equal to `s`? The caller has compared lengths (`shape >>> 1 === s.length`). */
  equals(at: number, shape: number, s: string): boolean {
    const page = this.#page(at, shape)
    let o = offsetOf(at)
    const n = s.length
    if ((shape & 1) === 0) {
      for (let i = 0; i < n; i++) if (page[o + i] !== s.charCodeAt(i)) return false
    } else {
      for (let i = 0; i < n; i++, o += 2) if ((page[o]! | (page[o + 1]! << 8)) !== s.charCodeAt(i)) return false
    }
    return true
  }

  /** The string at `at`, as a new flat string (never a slice of anything). */
  read(at: number, shape: number): string {
    const o = offsetOf(at)
    return this.#page(at, shape).toString((shape & 1) === 0 ? 'latin1' : 'utf16le', o, o + bytesOf(shape))
  }

  /** Frees the chunk at `at`; the location is not valid any more. */
  free(at: number, shape: number): void {
    const c = classOf(bytesOf(shape))
    const page = this.#page(at, shape)
    const o = offsetOf(at)
    const next = this.#free[c]!
    page[o] = next
    page[o + 1] = next >>> 8
    page[o + 2] = next >>> 16
    page[o + 3] = next >>> 24
    this.#free[c] = at + 1
  }

  #page(at: number, shape: number): Buffer {
    return this.#pages[classOf(bytesOf(shape))]![at >>> OFFSET_BITS]!
  }

  /** A chunk of class `c`: a freed one, else the next fresh one (a new page when the last is full). */
  #alloc(c: number): number {
    while (this.#pages.length <= c) {
      this.#pages.push([])
      this.#fill.push(0)
      this.#free.push(0)
    }
    const head = this.#free[c]!
    const pages = this.#pages[c]!
    if (head !== 0) {
      const at = head - 1
      const page = pages[at >>> OFFSET_BITS]!
      const o = offsetOf(at)
      this.#free[c] = (page[o]! | (page[o + 1]! << 8) | (page[o + 2]! << 16) | (page[o + 3]! << 24)) >>> 0
      return at
    }
    const size = sizeOf(c)
    let fill = this.#fill[c]!
    if (pages.length === 0 || fill + size > pages[pages.length - 1]!.length) {
      if (pages.length >= MAX_PAGES) throw new RangeError(`key arena: more than ${MAX_PAGES} pages of ${size}-byte keys`)
      pages.push(Buffer.alloc(Math.max(PAGE_BYTES, size)))
      fill = 0
    }
    this.#fill[c] = fill + size
    return (pages.length - 1) * (1 << OFFSET_BITS) + (fill >>> 3)
  }
}

function bytesOf(shape: number): number {
  return (shape & 1) === 0 ? shape >>> 1 : shape - 1
}

function offsetOf(at: number): number {
  return (at & ((1 << OFFSET_BITS) - 1)) << 3
}

/**
 * The size class of a string of `bytes` bytes: 0 for 16 bytes or fewer, then 24, 32, 48, 64, ...
 * (odd classes are 3/4 of the next power of two). Example: `classOf(30)` -> 2 (32 bytes).
 */
export function classOf(bytes: number): number {
  if (bytes <= 16) return 0
  const k = 32 - Math.clz32(bytes - 1) // 2^k is the smallest power of two >= bytes; k >= 5
  return bytes <= 3 << (k - 2) ? 2 * (k - 4) - 1 : 2 * (k - 4)
}

/** The chunk size of class `c`. Example: `sizeOf(2)` -> 32, `sizeOf(3)` -> 48. */
export function sizeOf(c: number): number {
  return (c & 1) === 0 ? 16 << (c >>> 1) : 24 << (c >>> 1)
}
