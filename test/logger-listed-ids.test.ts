// Log lines that list upstream ids (`upstreams updated`, `Kubernetes discovery: endpoints
// changed`) list at most LOGGED_IDS of them and say how many more: a Service of 10,000 pods
// listed whole made every rollout's line ~140 KB, twice.
import t from 'tap'
import { LOGGED_IDS, listedIds } from '../src/observability/logger.js'

t.test('short lists as they are; long ones cut with a count', async (t) => {
  t.same(listedIds([]), [])
  t.same(listedIds(['a', 'b']), ['a', 'b'])
  const many = Array.from({ length: 10_000 }, (_, i) => `web-${i}`)
  const shown = listedIds(many)
  t.equal(shown.length, LOGGED_IDS + 1)
  t.same(shown.slice(0, 2), ['web-0', 'web-1'])
  t.equal(shown[LOGGED_IDS], `... ${10_000 - LOGGED_IDS} more`)
  t.ok(JSON.stringify(shown).length < 2_000, 'a line of a few hundred bytes, not ~140 KB')
  t.same(listedIds(many.slice(0, LOGGED_IDS)), many.slice(0, LOGGED_IDS), 'exactly the bound: whole')
})
