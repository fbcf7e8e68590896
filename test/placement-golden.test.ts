// Golden vectors: exact key hashes and exact key -> upstream preference orders, pinned in
// test/fixtures/placement/golden.json, so a change to the hash, the bucket count, the seeds or
// the scoring can never ship silently (ARCHITECTURE principle 11). Rewrites the file only when
// TETHER_GOLDEN_WRITE=1 is set, which is a deliberate, reviewed act.
import t, { type Test } from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { hashKey } from '../src/placement/hash.js'
import { BUCKET_BITS, buildPlacement, type PlacementTable, type UpstreamWeight } from '../src/placement/rendezvous.js'

const FILE = new URL('./fixtures/placement/golden.json', import.meta.url)
const CONTRACT =
  'placement is a compatibility contract: changing these values moves users to other upstreams ' +
  'during a rolling deploy (old and new replicas disagree, sessions are lost). If the change is ' +
  'deliberate, regenerate with TETHER_GOLDEN_WRITE=1 npx tap --disable-coverage ' +
  'test/placement-golden.test.ts and call it out in the release notes.'

interface Placement {
  key: string
  order: string[]
}
interface Golden {
  comment: string
  scheme: { hash: string; placement: string; bucketBits: number }
  hashes: { key: string; hash: number }[]
  equal: { upstreams: UpstreamWeight[]; placements: Placement[] }
  weighted: { upstreams: UpstreamWeight[]; placements: Placement[] }
}

function orderOf(table: PlacementTable, key: string): string[] {
  const out = new Int32Array(table.ids.length)
  table.order(hashKey(key), out)
  return [...out].map((i) => table.ids[i]!)
}

/** The vectors as the current code computes them, from the inputs pinned in `golden`. */
function compute(golden: Golden): Golden {
  const equal = buildPlacement(golden.equal.upstreams)
  const weighted = buildPlacement(golden.weighted.upstreams)
  return {
    comment: golden.comment,
    scheme: { ...golden.scheme, bucketBits: BUCKET_BITS },
    hashes: golden.hashes.map(({ key }) => ({ key, hash: hashKey(key) })),
    equal: { upstreams: golden.equal.upstreams, placements: golden.equal.placements.map(({ key }) => ({ key, order: orderOf(equal, key) })) },
    weighted: {
      upstreams: golden.weighted.upstreams,
      placements: golden.weighted.placements.map(({ key }) => ({ key, order: orderOf(weighted, key) })),
    },
  }
}

/** Passes with a plain name; on a change, fails with the old and new value and the contract. */
function pinned(t: Test, what: string, now: unknown, was: unknown): void {
  if (JSON.stringify(now) === JSON.stringify(was)) t.pass(`${what} is unchanged`)
  else t.fail(`${what} changed from ${JSON.stringify(was)} to ${JSON.stringify(now)}: ${CONTRACT}`)
}

const golden = JSON.parse(readFileSync(FILE, 'utf8')) as Golden
const current = compute(golden)

if (process.env['TETHER_GOLDEN_WRITE'] === '1') {
  writeFileSync(FILE, JSON.stringify(current, null, 2) + '\n')
  t.pass(`rewrote ${FILE.pathname}: review the diff, it moves users`)
} else {
  t.test('the bucket count is pinned', async (t) => {
    pinned(t, 'BUCKET_BITS', current.scheme.bucketBits, golden.scheme.bucketBits)
  })

  t.test('key hashes are pinned', async (t) => {
    t.ok(golden.hashes.length >= 10, 'at least 10 pinned hashes')
    for (const [i, { key, hash }] of golden.hashes.entries()) {
      pinned(t, `hashKey(${JSON.stringify(key)})`, current.hashes[i]!.hash, hash)
    }
  })

  t.test('key -> upstream placements and fallback orders are pinned', async (t) => {
    t.ok(golden.equal.placements.length >= 20, 'at least 20 pinned placements over equal weights')
    for (const set of ['equal', 'weighted'] as const) {
      for (const [i, { key, order }] of golden[set].placements.entries()) {
        const now = current[set].placements[i]!.order
        pinned(t, `${set} set: the upstream of key ${JSON.stringify(key)}`, now[0], order[0])
        pinned(t, `${set} set: the fallback order of key ${JSON.stringify(key)}`, now, order)
      }
    }
  })

  t.test('pinned placements do not depend on the order upstreams are listed in', async (t) => {
    const reversed = buildPlacement([...golden.equal.upstreams].reverse())
    for (const { key, order } of golden.equal.placements) {
      t.equal(reversed.ids[reversed.pick(hashKey(key))], order[0], `key ${JSON.stringify(key)}`)
    }
  })
}
