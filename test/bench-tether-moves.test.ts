// bench/lib/tether-moves.mjs: the moves and retries a Tether contestant made during a run, read
// from its metrics page, so the harness can warn that a run measured failover work.
import t from 'tap'
// @ts-expect-error plain ESM bench helper without types
import { parseMoves } from '../bench/lib/tether-moves.mjs'

t.test('moves by upstream and reason, and retries, summed from a Prometheus page', async (t) => {
  const page = [
    '# HELP tether_failovers_total Users moved',
    '# TYPE tether_failovers_total counter',
    'tether_failovers_total{from="up-0",reason="dead"} 40181',
    'tether_failovers_total{from="up-0",reason="restart"} 84754',
    'tether_failovers_total{from="up-1",reason="drain"} 0',
    'tether_retries_total{upstream="up-0"} 3',
    'tether_retries_total{upstream="up-1"} 1',
    'tether_http_requests_total{upstream="up-0",method="GET",status_class="2xx"} 100',
  ].join('\n')
  t.same(parseMoves(page), { moves: { 'up-0 dead': 40181, 'up-0 restart': 84754 }, moved: 124935, retries: 4 })
  t.same(parseMoves('tether_http_requests_total{upstream="up-0",method="GET",status_class="2xx"} 100\n'), { moves: {}, moved: 0, retries: 0 }, 'a quiet run: nothing')
})
