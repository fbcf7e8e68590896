// The admin status page in a real headless Chromium, in front of a real Tether with three child
// process upstreams: the page asks for the admin token, shows the upstreams live (a SIGKILLed
// one turns down within 2 s), its drain button drains, its lookup finds a user, it fits a
// 360 px screen, Tab reaches its buttons, and nothing logs a console or page error; behind a
// primary with no worker up it says why (not ready, no worker started yet), shows nothing from
// before as current (no rows, sparkline, moves or lookup result) and recovers.
/// <reference lib="dom" />
import t from 'tap'
import { startTether, type Tether } from '../src/app.js'
import { createLogger } from '../src/observability/logger.js'
import { STATUS_POLL_MS } from '../src/admin/status-page.js'
import type { UpstreamRow } from '../src/admin/upstream-row.js'
import { LogCapture } from './fixtures/log-capture.js'
import { request, testConfig } from './fixtures/upstream.js'
import { startChildUpstream, type ChildAnswer, type ChildUpstream } from './fixtures/child-upstream.js'
import { openPage } from './fixtures/browser.js'
import { waitFor } from './fixtures/wait.js'
import { startAll } from './fixtures/children.js'

const TOKEN = 'status-page-token-0123'
const AUTH = { authorization: `Bearer ${TOKEN}` }
const IDS = ['app-0', 'app-1', 'app-2']
/** Active health checks: one failed probe marks an upstream down, one every PROBE_MS. */
const PROBE_MS = 200

async function upstreams(tether: Tether, token = TOKEN): Promise<UpstreamRow[]> {
  const r = await request(`${tether.adminUrl}/upstreams`, { headers: token === TOKEN ? AUTH : { authorization: `Bearer ${Buffer.from(token, 'utf8').toString('latin1')}` } })
  return JSON.parse(r.body) as UpstreamRow[]
}

/** A request through Tether as tenant `user`; returns the upstream that answered. */
async function visit(tether: Tether, user: string): Promise<string> {
  const r = await request(`${tether.url}/page`, { headers: { 'x-tenant': user } })
  if (r.status !== 200) throw new Error(`request for ${user} answered ${r.status}: ${r.body}`)
  return (JSON.parse(r.body) as ChildAnswer).id
}

t.test('the status page shows live upstreams, drains, looks up a user, fits 360 px and runs without errors', async (t) => {
  const pods = await startAll(IDS.map((id) => startChildUpstream(id)))
  t.teardown(() => Promise.all(pods.map((p) => p.kill())))
  const byId = new Map<string, ChildUpstream>(pods.map((p) => [p.id, p]))
  const tether = await startTether(testConfig(pods.map((p) => ({ id: p.id, url: p.url })), {
    admin: { token: TOKEN },
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    health: { active: { path: '/healthz', interval: PROBE_MS, timeout: PROBE_MS, unhealthy_threshold: 1 } },
  }), { logger: createLogger('warn', new LogCapture()) })
  t.teardown(() => tether.close(0))

  const aliceOn = await visit(tether, 'alice')
  for (let i = 0; i < 20; i++) await visit(tether, `user-${i}`)

  const { page, errors } = await openPage(t)
  await page.goto(`${tether.adminUrl}/`)

  // a token is set: the page asks for it before its first poll, and keeps it for the session
  await page.locator('#token-form').waitFor({ state: 'visible', timeout: 5_000 })
  t.equal(await page.evaluate(() => document.activeElement?.id), 'token', 'the token field has the focus')
  await page.keyboard.type(TOKEN)
  await page.keyboard.press('Enter')
  await page.locator('tr[data-upstream]').nth(2).waitFor({ timeout: 5_000 })
  t.same(await page.locator('tr[data-upstream]').evaluateAll((rows) => rows.map((r) => (r as HTMLElement).dataset['upstream'])), IDS, 'one row per upstream')
  t.equal(await page.evaluate(() => sessionStorage.getItem('tether-admin-token')), TOKEN, 'the token is kept in sessionStorage')
  t.ok(await page.locator('#token-form').isHidden(), 'the token form is gone once the token works')
  await page.waitForFunction(() => /[1-9]/.test(document.querySelector('#spark-label')?.textContent ?? ''), null, { timeout: 3_000 })

  await t.test('the lookup finds a user who made a request', async (t) => {
    await page.getByLabel('Session key').fill('alice')
    await page.getByRole('button', { name: 'Look up' }).click()
    await page.locator('#lookup-fields').waitFor({ timeout: 3_000 })
    const fields = await page.locator('#lookup-fields').innerText()
    t.match(fields, new RegExp(`Upstream\\s+${aliceOn}`), `alice is shown on ${aliceOn}`)
    t.match(fields, /Last seen/, 'with when she was last seen')
  })

  await t.test('Tab reaches the drain buttons and the lookup', async (t) => {
    await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur())
    const reached: string[] = []
    for (let i = 0; i < 60; i++) {
      await page.keyboard.press('Tab')
      reached.push(await page.evaluate(() => document.activeElement?.getAttribute('aria-label') ?? document.activeElement?.textContent ?? ''))
    }
    for (const name of ['Drain app-0', 'Drain and migrate app-1', 'Undrain app-2', 'Look up']) t.ok(reached.includes(name), `Tab reaches "${name}"`)
  })

  await t.test('the drain button drains with the token', async (t) => {
    await page.getByRole('button', { name: 'Drain app-1', exact: true }).click()
    await waitFor(async () => (await upstreams(tether)).find((u) => u.id === 'app-1')?.draining === true, 3_000, 'GET /upstreams to show app-1 draining (no event announces the admin API answer)', 50)
    await page.waitForFunction(() => document.querySelector('tr[data-upstream="app-1"]')?.getAttribute('data-state') === 'draining', null, { timeout: 3_000 })
    t.match(await page.locator('#notice').innerText(), /Drain app-1: done/, 'the page says the drain was done')
    t.match(await page.locator('tr[data-upstream="app-1"]').innerText(), /draining \d+ s/, 'the row shows the drain going on')
  })

  await t.test('a SIGKILLed upstream shows as down on the page within 2 s', async (t) => {
    const victim = IDS.find((id) => id !== 'app-1')!
    const killedAt = performance.now()
    await byId.get(victim)!.kill('SIGKILL')
    await page.waitForFunction((id) => {
      const state = document.querySelector(`tr[data-upstream="${id}"]`)?.getAttribute('data-state')
      return state === 'unhealthy' || state === 'ejected'
    }, victim, { timeout: 2_000, polling: 20 })
    const shownMs = performance.now() - killedAt
    t.ok(shownMs <= 2_000, `${victim} shown down ${Math.round(shownMs)} ms after the kill (poll every ${STATUS_POLL_MS} ms, probes every ${PROBE_MS} ms)`)
  })

  await t.test('at 360 px the page has no horizontal overflow', async (t) => {
    await page.setViewportSize({ width: 360, height: 780 })
    const width = await page.evaluate(() => document.documentElement.scrollWidth)
    t.ok(width <= 360, `scrollWidth ${width} <= 360`)
    const box = await page.getByRole('button', { name: 'Undrain app-2' }).boundingBox()
    t.ok(box !== null && box.x >= 0 && box.x + box.width <= 360, 'the buttons are within the screen')
  })

  t.same(errors, [], 'no console errors and no page errors')

  await t.test('a refused token is asked for again, and the page carries on with the right one', async (t) => {
    await page.evaluate(() => sessionStorage.setItem('tether-admin-token', 'wrong'))
    await page.reload()
    await page.locator('#token-form').waitFor({ state: 'visible', timeout: 5_000 })
    t.match(await page.locator('#token-why').innerText(), /refused/)
    await page.getByLabel('Admin token').fill(TOKEN)
    await page.getByRole('button', { name: 'Use token' }).click()
    await page.locator('tr[data-upstream]').nth(2).waitFor({ timeout: 5_000 })
    // Chromium logs the refused request itself ("the server responded with a status of 401")
    t.same(errors.filter((e) => !/status of 401/.test(e)), [], 'nothing else went wrong')
  })
})

t.test('the page is open and locked down by its CSP; its JSON needs the token', async (t) => {
  const tether = await startTether(testConfig([{ id: 'a', url: 'http://127.0.0.1:9' }], { admin: { token: TOKEN } }), { logger: createLogger('warn', new LogCapture()) })
  t.teardown(() => tether.close(0))
  const page = await request(`${tether.adminUrl}/`)
  t.equal(page.status, 200)
  t.match(page.headers['content-type'], /^text\/html/)
  t.match(page.headers['content-security-policy'], /default-src 'none'; script-src 'sha256-[^']+'; style-src 'sha256-[^']+'/)
  t.notMatch(page.body, /https?:\/\//, 'the page names no external resource')
  t.equal((await request(`${tether.adminUrl}/status`)).status, 401, '/status without the token is 401')
  const status = await request(`${tether.adminUrl}/status`, { headers: AUTH })
  const view = JSON.parse(status.body) as { upstreams: { id: string; requests_per_second: number }[]; requests_per_second: number[]; session_lookup: boolean }
  t.same(view.upstreams.map((u) => [u.id, u.requests_per_second]), [['a', 0]])
  t.equal(view.requests_per_second.length, 60, 'a minute of request rates')
  t.equal(view.session_lookup, true)
})

t.test('behind a primary none of whose workers is up (all restarting), the page says not ready with the reason, without rows, traffic, moves or lookup, and recovers', async (t) => {
  const { startAdminFront } = await import('../src/workers/admin-front.js')
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const tether = await startTether(testConfig([{ id: app.id, url: app.url }], { affinity: { key: 'header', header: { name: 'X-Tenant' } } }), { logger: createLogger('silent') })
  t.teardown(() => tether.close(0))
  await visit(tether, 'alice')
  let admins: string[] = [tether.adminUrl] // the one worker's admin listener, as the primary passes to it
  const front = await startAdminFront('127.0.0.1', 0, { admins: () => admins, metrics: () => Promise.resolve([]), stopping: () => false }, createLogger('silent'), [])
  t.teardown(() => front.close())
  const { page } = await openPage(t)
  await page.goto(`${front.url}/`)
  await page.locator('tr[data-upstream]').first().waitFor({ timeout: 5_000 })
  await page.waitForFunction(() => /[1-9]/.test(document.querySelector('#spark-label')?.textContent ?? ''), null, { timeout: 5_000 })
  await page.getByLabel('Session key').fill('alice')
  await page.getByRole('button', { name: 'Look up' }).click()
  await page.locator('#lookup-fields').waitFor({ timeout: 5_000 })
  const shown = () => page.evaluate(() => ({
    spark: document.querySelector('#spark-line')?.getAttribute('points') ?? '',
    moves: document.querySelectorAll('#moves dt').length,
    lookup: !(document.querySelector('#lookup') as HTMLElement).hidden,
    lookupResult: document.querySelector('#lookup-result')?.childElementCount ?? 0,
  }))
  const up = await shown()
  t.ok(up.spark !== '' && up.moves > 0 && up.lookup && up.lookupResult > 0, 'with a worker: the sparkline, the moves and the lookup with its result')

  admins = [] // every worker restarting
  await page.locator('#summary', { hasText: 'Not ready: no worker started yet' }).waitFor({ timeout: 5_000 })
  t.equal(await page.locator('tr[data-upstream]').count(), 0, 'no stale rows')
  t.same(await shown(), { spark: '', moves: 0, lookup: false, lookupResult: 0 }, 'no stale sparkline, moves or lookup result')
  t.match(await page.locator('#spark-label').textContent(), /no worker is up/, 'the traffic figure says why it is empty')
  t.equal(await page.locator('#conn').textContent(), '', 'not "Tether does not answer": the primary answered why')

  admins = [tether.adminUrl] // a worker is back
  await page.locator('tr[data-upstream]').first().waitFor({ timeout: 5_000 })
  t.equal(await page.locator('#summary').textContent(), 'Ready')
  const back = await shown()
  t.ok(back.spark !== '' && back.moves > 0 && back.lookup, 'the sparkline, the moves and the lookup are back')
  t.match(await page.locator('#spark-label').textContent(), /^Requests per second/, 'with current figures')
})

t.test('a token beyond ASCII (admin.token is compared as UTF-8 bytes) works from the page as from the CLI', async (t) => {
  // the page sent the token's characters as they are: fetch sends one up to U+00FF as one byte
  // (latin1, not its UTF-8 bytes: 401 "refused" forever) and throws on any other (the page
  // said Tether does not answer)
  for (const token of ['tökén-status-page', 'token-€-status-page']) {
    await t.test(token, async (t) => {
      const tether = await startTether(testConfig([{ id: 'a', url: 'http://127.0.0.1:9' }], { admin: { token } }), { logger: createLogger('warn', new LogCapture()) })
      t.teardown(() => tether.close(0))
      const { page, errors } = await openPage(t)
      await page.goto(`${tether.adminUrl}/`)
      await page.locator('#token-form').waitFor({ state: 'visible', timeout: 5_000 })
      await page.getByLabel('Admin token').fill(token)
      await page.getByRole('button', { name: 'Use token' }).click()
      await page.locator('tr[data-upstream="a"]').waitFor({ timeout: 5_000 })
      t.ok(await page.locator('#token-form').isHidden(), 'the token is taken')
      t.equal(await page.locator('#conn').innerText(), '', 'Tether answers')
      await page.getByRole('button', { name: 'Drain a', exact: true }).click()
      await waitFor(async () => (await upstreams(tether, token)).find((u) => u.id === 'a')?.draining === true, 5_000, 'the drain from the page')
      t.same(errors, [], 'no console or page error')
    })
  }
})
