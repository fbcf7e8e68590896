// Review s65/r1: paths that still echo a secret after bc0ef69/9ea0656, and a message that
// became less useful. Each runs a real `node dist/cli.js` child; every case fails today.
import t from 'tap'
import { runCli, tempFile } from './fixtures/cli.js'

const SECRET = 'hunter2xyzzy'
const file = (...lines: string[]): string => tempFile('proxy.yaml', ['upstreams:', '  - { id: a, url: "http://127.0.0.1:8080" }', ...lines, ''].join('\n'))

t.test('a stray bare word (a token after a forgotten or split --token) is not echoed', async (t) => {
  for (const args of [
    ['drain', 'app-1', '--wait', '--token', 'Bearer', SECRET], // TOKEN="Bearer ..." unquoted
    ['session', 'k', SECRET],
    ['check', 'a.yaml', SECRET],
    [SECRET],
    ['run', SECRET],
  ]) {
    const r = await runCli(args)
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`)
    t.notOk(r.stderr.includes(SECRET), `${args.join(' ')}: not echoed`, { stderr: r.stderr.split('\n')[0] })
  }
})

t.test('state.redis.sentinels / nodes entries that are no address are not quoted (as state.redis.url now)', async (t) => {
  for (const entry of [`"${SECRET}"`, `"sentinel-0:${SECRET}"`, `"redis://:${SECRET}"`]) {
    for (const key of ['sentinels', 'nodes']) {
      const r = await runCli(['check', file('state:', '  store: redis', '  redis:', `    ${key}: [${entry}]`, ...(key === 'sentinels' ? ['    name: m'] : []))])
      t.equal(r.code, 1)
      t.notOk(r.stderr.includes(SECRET), `${key}: [${entry}]: not echoed`, { stderr: r.stderr.split('\n')[0] })
    }
  }
})

t.test('a YAML syntax error on a line holding a secret does not print it', async (t) => {
  for (const line of [`    url: "redis://:${SECRET}`, `    pasword: "${SECRET}`]) {
    const r = await runCli(['check', file('state:', '  store: redis', '  redis:', line)])
    t.equal(r.code, 1)
    t.match(r.stderr, /YAML syntax error/)
    t.notOk(r.stderr.includes(SECRET), `${line.trim()}: not echoed`, { stderr: r.stderr.split('\n').slice(0, 3).join(' / ') })
  }
})

t.test('a "${" inside a secret is not quoted in the invalid-reference error', async (t) => {
  const r = await runCli(['check', file('admin:', `  token: "x\${${SECRET}"`)])
  t.equal(r.code, 1)
  t.notOk(r.stderr.includes(SECRET), 'not echoed', { stderr: r.stderr.split('\n')[0] })
})

t.test('harmless values stay shown: a compound duration, a bare host given to --admin', async (t) => {
  const d = await runCli(['drain', 'app-1', '--wait', '--timeout', '5m30s'])
  t.match(d.stderr, /got "5m30s"/)
  const a = await runCli(['session', 'k', '--admin', '127.0.0.1'])
  t.match(a.stderr, /got "127\.0\.0\.1"/)
})
