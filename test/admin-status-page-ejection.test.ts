// The status page names the kind of each ejection and what ends it, in a real headless
// Chromium: an upstream on a closed port (refused connections: back after passed probes, or at
// its time) and one answering 503 (back at its time), both ejected through real requests.
/// <reference lib="dom" />
import t from 'tap'
import { openPage } from './fixtures/browser.js'
import { freePorts } from './fixtures/ports.js'
import { proxyFor, request, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

t.test('the status page says why each upstream is ejected and what brings it back', async (t) => {
  const ok = await startUpstream('ok')
  const failing = await startUpstream('failing', (_req, res) => { res.statusCode = 503; res.end('busy\n') })
  t.teardown(async () => { await ok.close(); await failing.close() })
  const [closed] = await freePorts(1)
  const tether = await proxyFor(t, [ok, { id: 'refusing', url: `http://127.0.0.1:${closed!}` }, failing], {
    health: {
      active: { enabled: true, interval: 30_000, timeout: 500, healthy_threshold: 2, unhealthy_threshold: 5 },
      passive: { consecutive_failures: 2, count_5xx: true, base_ejection: 60_000, max_ejection: 300_000, max_ejection_percent: 100 },
    },
  })
  await waitFor(async () => {
    await request(tether.url)
    return tether.health.state('refusing') === 'ejected' && tether.health.state('failing') === 'ejected'
  }, 15_000, 'both the refusing and the 503 upstream to be ejected', 0)

  const { page, errors } = await openPage(t)
  await page.goto(`${tether.adminUrl}/`)
  const progress = (id: string): Promise<string> => page.locator(`tr[data-upstream="${id}"] td[data-label="Ejection / drain"]`).innerText()
  await page.waitForFunction(() => document.querySelectorAll('tr[data-upstream][data-state="ejected"]').length === 2, null, { timeout: 5_000 })
  t.match(await progress('refusing'), /^refused connections: back after 2 passed checks, or in \d+ s \(ejection 1\)$/, 'refused: the probes bring it back, or the time')
  t.match(await progress('failing'), /^5xx answers: back in \d+ s \(ejection 1\)$/, '5xx: its time')
  t.equal(await progress('ok'), '', 'nothing for the healthy one')
  t.same(errors, [], 'no console or page errors')
})
