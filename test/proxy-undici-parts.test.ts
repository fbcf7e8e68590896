// Tether loads only the undici files it uses (src/proxy/forward.ts, UNDICI_PARTS), not the
// package's index, which also loads fetch, WebSocket, the caches and the mocks (about 9 MB of
// RSS in every serving process). Checked against the installed undici: each part is the very
// object the index exports (so an upgrade that moves one fails here, by name); and a real
// primary with two workers, serving, never loads the index.
import t from 'tap'
import { createRequire } from 'node:module'
import { loadedPackages } from './fixtures/loaded-packages.js'
import { join } from 'node:path'
import { ROOT } from './fixtures/cli.js'
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
  const { loaded, primary, workers } = await loadedPackages(t, 8)
  t.ok(loaded.has(primary), 'the primary wrote what it loaded')
  for (const pid of workers) {
    const files = loaded.get(pid)
    t.ok(files?.some((f) => f.endsWith('/undici/lib/dispatcher/pool.js')), `worker ${pid} loaded undici's Pool`)
  }
  for (const [pid, all] of loaded) {
    const files = all.filter((f) => f.includes('/node_modules/undici/'))
    t.notOk(files.some((f) => /\/node_modules\/undici\/index\.js$/.test(f)), `process ${pid}: no undici index`)
    t.notOk(files.some((f) => /\/undici\/lib\/(web|mock|cache)\//.test(f)), `process ${pid}: no fetch, mocks or caches (${files.length} undici files)`)
  }
})
