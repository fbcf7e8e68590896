// Takes docs/status-page.png: a built Tether (in this process, from a YAML config) in front of
// three loopback upstreams under a bounded load, one drained with migration and one stopped,
// and the admin status page photographed in Debian's headless Chromium (playwright-core).
// Loopback only; the load stops after RUN_MS. Reads dist/: build first.
// Run: npx tsc -p tsconfig.json && node scripts/status-screenshot.mjs [out.png]
import http from 'node:http'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import { startTether } from '../dist/app.js'
import { loadConfigFile } from '../dist/config/index.js'
import { createLogger } from '../dist/observability/logger.js'

const OUT = process.argv[2] ?? fileURLToPath(new URL('../docs/status-page.png', import.meta.url))
const TOKEN = 'screenshot-admin-token'
const USERS = 40
const RUN_MS = 70_000
const sleep = (ms) => new Promise((r) => setTimeout(r, ms))

/** An upstream answering after `delayMs` (jittered), with a share `failRate` of 500s. */
function upstream(id, delayMs, failRate) {
  const server = http.createServer((req, res) => {
    req.resume()
    setTimeout(() => {
      const fail = Math.random() < failRate
      res.writeHead(fail ? 500 : 200, { 'content-type': 'text/plain' })
      res.end(fail ? 'oops\n' : `${id}\n`)
    }, delayMs * (0.5 + Math.random()))
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve({ id, server, url: `http://127.0.0.1:${server.address().port}` })))
}

const ups = await Promise.all([upstream('app-0', 3, 0.002), upstream('app-1', 8, 0), upstream('app-2', 15, 0.01)])
const dir = mkdtempSync(join(tmpdir(), 'tether-status-'))
const file = join(dir, 'tether.yaml')
writeFileSync(file, `listen: { host: 127.0.0.1, port: 0 }
admin: { listen: { host: 127.0.0.1, port: 0 }, token: ${TOKEN} }
upstreams:
${ups.map((u) => `  - { id: ${u.id}, url: "${u.url}" }`).join('\n')}
affinity:
  key: header
  header: { name: X-User }
  drain: { migrate: true, min_idle: 500ms }
health:
  active: { path: /, interval: 1s, timeout: 1s }
`)
const tether = await startTether(loadConfigFile(file, {}), { logger: createLogger('error') })
const auth = { authorization: `Bearer ${TOKEN}` }
const agent = new http.Agent({ keepAlive: true, maxSockets: USERS })

function get(user) {
  return new Promise((resolve) => {
    const req = http.get(`${tether.url}/`, { agent, headers: { 'x-user': user } }, (res) => { res.resume(); res.on('end', resolve) })
    req.on('error', resolve)
  })
}

// the load: USERS users, each a request every 20-60 ms (busier at times), now and then a 1 s
// pause (after which a migrating drain may move them), until RUN_MS
const started = Date.now()
const load = Promise.all(Array.from({ length: USERS }, async (_, i) => {
  while (Date.now() - started < RUN_MS) {
    await get(`user-${i}`)
    const phase = (Date.now() - started) / RUN_MS
    await sleep(Math.random() < 0.02 ? 1_000 : 20 + 40 * Math.abs(Math.cos(phase * Math.PI * 2)))
  }
}))

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, colorScheme: 'light' })
  await page.goto(`${tether.adminUrl}/`)
  await page.fill('#token', TOKEN)
  await page.press('#token', 'Enter')
  await sleep(52_000) // most of the sparkline's minute
  // app-2 stops answering; then app-1 drains with migration (a user moves after a 500 ms pause)
  ups[2].server.closeAllConnections()
  ups[2].server.close()
  await sleep(3_000)
  await fetch(`${tether.adminUrl}/upstreams/app-1/drain?migrate=true`, { method: 'POST', headers: auth })
  await page.fill('#lookup-key', 'user-7')
  await page.press('#lookup-key', 'Enter')
  await sleep(2_500)
  await page.screenshot({ path: OUT, fullPage: true })
  console.log(`wrote ${OUT}`)
  if (process.env.NARROW) {
    await page.setViewportSize({ width: 360, height: 800 })
    await page.screenshot({ path: process.env.NARROW, fullPage: true })
  }
} finally {
  await browser.close()
  await load
  agent.destroy()
  await tether.close(0)
  for (const u of ups) u.server.close()
}
