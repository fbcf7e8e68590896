// The Redis Cluster hash slot of a key (CRC16/XMODEM of the key, or of its hash tag, mod 16384),
// so the connection can tell which shard a call went to. Pure: no I/O, no state; allocates
// nothing for ASCII keys. The same rule as Redis's keyHashSlot() (src/cluster.c) and CLUSTER KEYSLOT.

/** Number of hash slots of a Redis Cluster. */
export const CLUSTER_SLOTS = 16384

/** CRC16/XMODEM (poly 0x1021, init 0, no reflection), one entry per byte value. */
const TABLE = ((): Uint16Array => {
  const table = new Uint16Array(256)
  for (let i = 0; i < 256; i++) {
    let crc = i << 8
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
    table[i] = crc
  }
  return table
})()

/**
 * The hash slot of `key`: when the key holds `{...}` with at least one character between the
 * first `{` and the first `}` after it, only that part is hashed (a hash tag), else the whole
 * key. Bytes are the key's UTF-8 encoding.
 *
 * Examples (checked against `CLUSTER KEYSLOT`): `keySlot('foo')` -> 12182;
 * `keySlot('tether:cp:{abc}')` === `keySlot('abc')` -> 7638; `keySlot('a{}b')` hashes all of `a{}b`.
 */
export function keySlot(key: string): number {
  let start = 0
  let end = key.length
  const open = key.indexOf('{')
  if (open !== -1) {
    const close = key.indexOf('}', open + 1)
    if (close > open + 1) {
      start = open + 1
      end = close
    }
  }
  let crc = 0
  for (let i = start; i < end; i++) {
    const c = key.charCodeAt(i)
    if (c >= 0x80) return crcOfBytes(Buffer.from(key.slice(start, end), 'utf8'))
    crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ c) & 0xff]!
  }
  return crc & (CLUSTER_SLOTS - 1)
}

function crcOfBytes(bytes: Uint8Array): number {
  let crc = 0
  for (const b of bytes) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ b) & 0xff]!
  return crc & (CLUSTER_SLOTS - 1)
}
