// key client_ip through a real Tether behind a trusted proxy on loopback: an IPv6 client with a
// zone id in X-Forwarded-For is one key (one binding, one upstream) however the proxy spells the
// zone id (`%eth0`, or `[..%25eth0]` as RFC 6874 writes it in a URI) and the address; the
// interfaces 251 and 1 (`fe80::1%251`, `[fe80::1%251]`) are two keys.
import t from 'tap'
import { proxyFor, request } from './fixtures/upstream.js'
import { upstreams } from './fixtures/routing-sticky.js'

t.test('an X-Forwarded-For client with a zone id, spelt four ways, is one key and one upstream', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  const spellings = ['fe80::1%eth0', '[fe80::1%25eth0]', '[FE80:0:0:0:0:0:0:1%25eth0]:5000', 'fe80:0::1%ETH0']
  const ids: string[] = []
  for (const xff of spellings) {
    const r = await request(`${tt.url}/`, { headers: { 'x-forwarded-for': xff } })
    t.equal(r.status, 200)
    ids.push(r.body.trim())
  }
  t.equal(new Set(ids).size, 1, `one upstream for every spelling (${ids.join(' ')})`)
  t.equal(tt.sessions.table.size, 1, 'one binding')
  t.ok(tt.sessions.table.peek('fe80::1%eth0', Date.now()), 'keyed by the canonical form fe80::1%eth0')
})

t.test('X-Forwarded-For clients on interfaces 251 and 1 are two keys, each however it is spelt', async (t) => {
  const ups = await upstreams(t, ['a', 'b', 'c'])
  const tt = await proxyFor(t, ups, { affinity: { key: 'client_ip', client_ip: { trusted_proxies: ['127.0.0.1/32'] } } })
  const steps: [string, string, number][] = [
    ['fe80::1%251', 'fe80::1%251', 1],
    ['[fe80::1%25251]:80', 'fe80::1%251', 1],
    ['fe80::1%1', 'fe80::1%1', 2],
    ['[fe80::1%251]:80', 'fe80::1%1', 2],
  ]
  for (const [xff, key, size] of steps) {
    const r = await request(`${tt.url}/`, { headers: { 'x-forwarded-for': xff } })
    t.equal(r.status, 200)
    t.ok(tt.sessions.table.peek(key, Date.now()), `${xff}: keyed ${key}`)
    t.equal(tt.sessions.table.size, size, `${size} binding(s) after ${xff}`)
  }
})
