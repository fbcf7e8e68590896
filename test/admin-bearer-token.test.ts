// The admin token check: RFC 6750 bearer syntax, a case-insensitive scheme, exact tokens,
// and refusal of ambiguous duplicate Authorization headers.
import t from 'tap'
import { BearerToken, type BearerVerdict } from '../src/admin/bearer-token.js'
import { startAdmin } from '../src/admin/admin-server.js'
import { drainUpstream } from '../src/admin/admin-client.js'
import { adminDeps } from './fixtures/admin-deps.js'
import { LogCapture } from './fixtures/log-capture.js'

const TOKEN = 's3cret-admin-token'

t.test('credentials are judged ok, missing, malformed, wrong or ambiguous', async (t) => {
  const token = new BearerToken(TOKEN)
  const cases: [string, string[], BearerVerdict][] = [
    ['the right token', ['Authorization', `Bearer ${TOKEN}`], 'ok'],
    ['a lower-case scheme (schemes are case-insensitive)', ['authorization', `bearer ${TOKEN}`], 'ok'],
    ['an upper-case scheme', ['AUTHORIZATION', `BEARER ${TOKEN}`], 'ok'],
    ['several spaces after the scheme', ['Authorization', `Bearer   ${TOKEN}`], 'ok'],
    ['among other headers', ['Host', 'x', 'Authorization', `Bearer ${TOKEN}`, 'Accept', '*/*'], 'ok'],
    ['no Authorization header', ['Host', 'x'], 'missing'],
    ['no headers at all', [], 'missing'],
    ['an empty Authorization header', ['Authorization', ''], 'malformed'],
    ['"Bearer" with no token', ['Authorization', 'Bearer'], 'malformed'],
    ['"Bearer " with only spaces', ['Authorization', 'Bearer   '], 'malformed'],
    ['the token without a scheme', ['Authorization', TOKEN], 'malformed'],
    ['another scheme', ['Authorization', `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`], 'malformed'],
    ['a scheme glued to the token', ['Authorization', `Bearer${TOKEN}`], 'malformed'],
    ['a tab instead of a space', ['Authorization', `Bearer\t${TOKEN}`], 'malformed'],
    ['a wrong token', ['Authorization', 'Bearer nope'], 'wrong'],
    ['a prefix of the token', ['Authorization', `Bearer ${TOKEN.slice(0, -1)}`], 'wrong'],
    ['the token with a suffix', ['Authorization', `Bearer ${TOKEN}x`], 'wrong'],
    ['the token and more words', ['Authorization', `Bearer ${TOKEN} ${TOKEN}`], 'wrong'],
    ['the token in another case', ['Authorization', `Bearer ${TOKEN.toUpperCase()}`], 'wrong'],
    ['two headers, right then wrong', ['Authorization', `Bearer ${TOKEN}`, 'Authorization', 'Bearer nope'], 'ambiguous'],
    ['two headers, wrong then right', ['authorization', 'Bearer nope', 'Authorization', `Bearer ${TOKEN}`], 'ambiguous'],
    ['the same right header twice', ['Authorization', `Bearer ${TOKEN}`, 'authorization', `Bearer ${TOKEN}`], 'ambiguous'],
    ['a dangling header name', ['Authorization'], 'missing'],
  ]
  for (const [name, raw, verdict] of cases) t.equal(token.check(raw), verdict, name)
})

t.test('a non-ASCII token matches the UTF-8 bytes a client sends (Node reads them as latin1)', async (t) => {
  const token = new BearerToken('jeton-é-ü')
  const onTheWire = Buffer.from('Bearer jeton-é-ü', 'utf8').toString('latin1')
  t.equal(token.check(['Authorization', onTheWire]), 'ok')
  t.equal(token.check(['Authorization', 'Bearer jeton-e-u']), 'wrong')
})

t.test('a token whose UTF-8 ends or starts in a byte JavaScript calls a space (0xA0: à, Ġ) is not cut: the CLI drains over real HTTP', async (t) => {
  // the header read as latin1 holds U+00A0 for the byte 0xA0, which String#trim removed: such a
  // token (`voilà`, C3 A0) was then "wrong" for every client
  for (const secret of ['voilà', 'àvoir', 'Ġtoken-Ġ']) {
    const token = new BearerToken(secret)
    t.equal(token.check(['Authorization', Buffer.from(`Bearer ${secret}`, 'utf8').toString('latin1')]), 'ok', `${secret}: the bytes on the wire`)
    const drained: string[] = []
    const admin = await startAdmin('127.0.0.1', 0, adminDeps(new LogCapture(), { token: secret, drain: (id) => { drained.push(id); return true } }))
    try {
      const r = await drainUpstream({ url: admin.url, token: secret }, 'a', { migrate: false, wait: false, timeout: 5_000, poll: 100 })
      t.equal(r.code, 0, `${secret}: tether drain is let in: ${r.err}`)
      t.same(drained, ['a'])
    } finally {
      await admin.close()
    }
  }
  t.equal(new BearerToken('voil').check(['Authorization', Buffer.from('Bearer voilà', 'utf8').toString('latin1')]), 'wrong', 'a token that is a prefix of the bytes sent is still wrong')
})
