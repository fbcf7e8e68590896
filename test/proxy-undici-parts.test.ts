// Tether loads only the undici files it uses (src/proxy/forward.ts, UNDICI_PARTS), not the
// package's index, which also loads fetch, WebSocket, the caches and the mocks (about 9 MB of
// RSS in every serving process). Checked against the installed undici: each part is the very
// object the index exports (so an upgrade that moves one fails here, by name); and a real
// primary with two workers, serving, never loads the index.
import t from 'tap'
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ROOT, tempFile } from './fixtures/cli.js'
import { request, startPrimary, twoWorkersYaml, workerPids } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { freePorts } from './fixtures/ports.js'
import { waitFor } from './fixtures/wait.js'
import { UNDICI_PARTS } from '../src/proxy/forward.js'

const requireFromRoot = createRequire(join(ROOT, 'package.json'))

t.test("each part Tether loads is the installed undici's own export", async (t) => {
  const undici = requireFromRoot('undici') as Record<string, unknown> & { Dispatcher: { prototype: Record<string, unknown> } }
  const part = (name: keyof typeof UNDICI_PARTS): unknown => requireFromRoot(UNDICI_PARTS[name])
  t.equal(part('Pool'), undici.Pool, `${UNDICI_PARTS.Pool}: undici's Pool`)
  t.equal(part('buildConnector'), undici.buildConnector, `${UNDICI_PARTS.buildConnector}: undici's buildConnector`)
  t.equal(part('errors'), undici.errors, `${UNDICI_PARTS.errors}: undici's errors`)
  // the index puts `request` on every Dispatcher; Tether calls it on its pool
  t.equal(part('request'), undici.Dispatcher.prototype.request, `${UNDICI_PARTS.request}: the request every Dispatcher gets`)
  const errors = part('errors') as Record<string, unknown>
  for (const name of ['HTTPParserError', 'ResponseContentLengthMismatchError', 'HeadersOverflowError', 'SocketError']) {
    t.type(errors[name], 'function', `errors.${name} (forward.ts classifies by it)`)
  }
})

t.test('a primary and its serving workers never load the undici index', async (t) => {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const [port, adminPort] = await freePorts(2)
  const dir = mkdtempSync(join(tmpdir(), 'tether-undici-'))
  const file = tempFile('proxy.yaml', twoWorkersYaml(port!, adminPort!, app.url))
  const preload = join(ROOT, 'test', 'fixtures', 'loaded-undici.cjs')
  const { proc } = await startPrimary(t, file, { NODE_OPTIONS: `--require=${preload}`, TETHER_LOADED_DIR: dir })
  await waitFor(() => workerPids(proc).length === 2, 60_000, 'two workers')
  const workers = workerPids(proc)
  for (let i = 0; i < 8; i++) t.equal((await request(`http://127.0.0.1:${port}/`, null)).status, 200, `request ${i} forwarded`)
  proc.kill('SIGTERM')
  await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  const loaded = new Map(readdirSync(dir).map((f) => [Number(f.replace('.json', '')), JSON.parse(readFileSync(join(dir, f), 'utf8')) as string[]]))
  t.ok(loaded.has(proc.pid!), 'the primary wrote what it loaded')
  for (const pid of workers) {
    const files = loaded.get(pid)
    t.ok(files?.some((f) => f.endsWith('/undici/lib/dispatcher/pool.js')), `worker ${pid} loaded undici's Pool`)
  }
  for (const [pid, files] of loaded) {
    t.notOk(files.some((f) => /\/node_modules\/undici\/index\.js$/.test(f)), `process ${pid}: no undici index`)
    t.notOk(files.some((f) => /\/undici\/lib\/(web|mock|cache)\//.test(f)), `process ${pid}: no fetch, mocks or caches (${files.length} undici files)`)
  }
})
