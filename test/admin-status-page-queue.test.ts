// The status page shows an upstream's queue (limits.max_upstream_connections) beside its
// in-flight requests, in a real headless Chromium: one connection, three requests held at the
// upstream's door -> "3 (2 queued)"; released -> "0". The figure is GET /status's `queued`
// (with workers, summed over them: see combineStatus in test/recent-traffic.test.ts).
/// <reference lib="dom" />
import t from 'tap'
import type { ServerResponse } from 'node:http'
import { openPage } from './fixtures/browser.js'
import { proxyFor, request, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

t.test('the status page shows how many of an upstream\'s requests wait for a connection', async (t) => {
  const held: ServerResponse[] = []
  const up = await startUpstream('app-0', (req, res) => { req.resume(); held.push(res) })
  t.teardown(() => up.close())
  const tether = await proxyFor(t, [up], { limits: { max_upstream_connections: 1 }, timeouts: { queue: 60_000 } })
  const answers = [1, 2, 3].map((i) => request(`${tether.url}/${i}`))
  await waitFor(async () => (JSON.parse((await request(`${tether.adminUrl}/status`)).body) as { upstreams: { queued: number }[] }).upstreams[0]!.queued === 2, 5_000, 'two requests waiting')
  t.equal(held.length, 1, 'one request at the upstream')

  const { page, errors } = await openPage(t)
  await page.goto(`${tether.adminUrl}/`)
  const cell = page.locator('tr[data-upstream="app-0"] td[data-label="In flight"]')
  await page.waitForFunction(() => /queued/.test(document.querySelector('tr[data-upstream="app-0"] td[data-label="In flight"]')?.textContent ?? ''), null, { timeout: 5_000 })
  t.equal(await cell.innerText(), '3 (2 queued)', 'in flight, of which waiting for a connection')

  for (let i = 0; i < 3; i++) {
    await waitFor(() => held.length > i, 5_000, `request ${i + 1} at the upstream`)
    held[i]!.end('ok\n')
  }
  t.same((await Promise.all(answers)).map((r) => r.status), [200, 200, 200])
  await page.waitForFunction(() => document.querySelector('tr[data-upstream="app-0"] td[data-label="In flight"]')?.textContent === '0', null, { timeout: 5_000 })
  t.pass('back to "0" once the queue emptied')
  t.same(errors, [], 'no console or page errors')
})
