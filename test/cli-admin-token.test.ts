// The admin commands' token (`--token`, `$TETHER_ADMIN_TOKEN`), run as a real CLI process: a
// token with a control character inside is a usage error naming where it came from and never
// showing it (fetch's own error quoted the whole header value, the token with it, on stderr:
// a preStop hook's log); whitespace at its ends (a Secret's value read from a file) still
// reaches the admin API as the bare token.
import t from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { runCli } from './fixtures/cli.js'

t.test('a control character inside the token: exit 2, the source named, the token not shown', async (t) => {
  const fromEnv = await runCli(['drain', 'app-0', '--admin', 'http://127.0.0.1:9'], { TETHER_ADMIN_TOKEN: 'secret-part-one\nsecret-part-two' })
  t.equal(fromEnv.code, 2)
  t.match(fromEnv.stderr, /TETHER_ADMIN_TOKEN: holds a control character/)
  t.notMatch(fromEnv.stderr, /secret-part/)
  const fromFlag = await runCli(['session', 'u1', '--admin', 'http://127.0.0.1:9', '--token', 'secret-part-one\u0001two'])
  t.equal(fromFlag.code, 2)
  t.match(fromFlag.stderr, /--token: holds a control character/)
  t.notMatch(fromFlag.stderr, /secret-part/)
})

t.test('a newline at the end of $TETHER_ADMIN_TOKEN: the bare token is sent', async (t) => {
  const seen: (string | undefined)[] = []
  const server = http.createServer((req, res) => {
    seen.push(req.headers.authorization)
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ id: 'app-0', draining: true, migrate: false }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => server.close())
  const r = await runCli(['drain', 'app-0', '--admin', `http://127.0.0.1:${(server.address() as AddressInfo).port}`], { TETHER_ADMIN_TOKEN: 'tok-1\n' })
  t.equal(r.code, 0, r.stderr)
  t.same(seen, ['Bearer tok-1'])
})
