// No secret echoed by the CLI, as a typo or otherwise: every path that can quote a word the user
// gave (an unknown option with a value written onto it, `--tok=S3CRET` for `--token=S3CRET`; a
// value after an option that takes none; the word taken for an option after one that takes a
// value; a stray word; an --admin or TETHER_ADMIN that is no URL; a --timeout that is no
// duration; TETHER_WORKER; an admin URL's path in the admin client's errors; an invalid
// state.redis.url in `tether check`) names the option, key or argument that is wrong, and never
// the value. Each is run as a real `node dist/cli.js` child (spawned without a shell) and its
// stdout and stderr searched for the secret.
import t from 'tap'
import type { Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { runCli, tempFile } from './fixtures/cli.js'

/** The secret every case gives somewhere; found in no output. */
const SECRET = 'hunter2xyzzy'

/** A case: the argv (and environment) with the secret in it, its exit code and what its stderr must name. */
interface Case { readonly args: readonly string[]; readonly env?: Record<string, string>; readonly code: number; readonly names: RegExp; readonly secret?: string }

/** Runs each case as a real CLI process, one after another (the machine is shared), and checks its output. */
async function check(t: Test, cases: readonly Case[]): Promise<void> {
  for (const c of cases) {
    const r = await runCli([...c.args], c.env)
    const what = [...c.args, ...Object.entries(c.env ?? {}).map(([k, v]) => `${k}=${v}`)].join(' ')
    t.equal(r.code, c.code, `${what}: exit ${c.code}`)
    const secret = c.secret ?? SECRET
    t.notOk(r.stdout.includes(secret) || r.stderr.includes(secret), `${what}: the secret appears nowhere`, { stderr: r.stderr.split('\n')[0] })
    t.match(r.stderr, c.names, `${what}: says what is wrong`)
  }
}

t.test('a usage error names the option or argument that is wrong, never a value the user gave that may be a secret (exit 2)', async (t) => {
  await check(t, [
    // a misspelt --token=, to a command that takes --token and to those that do not
    { args: ['session', 'k', `--tok=${SECRET}`], code: 2, names: /unknown argument "--tok=\.\.\.", did you mean "--token"\?/ },
    { args: ['check', `--tok=${SECRET}`, 'a.yaml'], code: 2, names: /unknown argument "--tok=\.\.\."/ },
    { args: [`--tok=${SECRET}`], code: 2, names: /unknown argument "--tok=\.\.\."/ },
    { args: ['import', `--tok=${SECRET}`, 'a.yaml'], code: 2, names: /unknown argument "--tok=\.\.\."/ },
    { args: ['drain', 'app-1', `--token-file=${SECRET}`], code: 2, names: /unknown argument "--token-file=\.\.\."/ },
    { args: ['run', `--cookie-secret=${SECRET}`], code: 2, names: /unknown argument "--cookie-secret=\.\.\."/ },
    // a short option with its value attached, as mysql's -pPASSWORD
    { args: ['check', `-p${SECRET}`, 'a.yaml'], code: 2, names: /unknown argument "-p\.\.\."/ },
    // a value given to an option that takes none
    { args: ['session', 'k', `--json=${SECRET}`], code: 2, names: /--json takes no value/ },
    { args: ['check', `--syntax-only=${SECRET}`, 'a.yaml'], code: 2, names: /--syntax-only takes no value/ },
    // the word taken for an option after one whose value was forgotten
    { args: ['check', '--config', `--tok=${SECRET}`], code: 2, names: /--config needs a file path, and "--tok=\.\.\." after it/ },
    { args: ['session', 'k', '--admin', `--tok=${SECRET}`], code: 2, names: /--admin needs a URL, and the word after it starts with "-" \(for a URL that starts with "-", write --admin=<url>\)/ },
    { args: ['drain', 'app-1', '--wait', '--timeout', `--tok=${SECRET}`], code: 2, names: /--timeout needs a duration/ },
    // (review s65 r1) a URL or token given with dashes after --admin: nor in the hint
    { args: ['session', 'k', '--admin', `--${SECRET}`], code: 2, names: /--admin needs a URL, and the word after it starts with "-" \(for a URL that starts with "-", write --admin=<url>\)/ },
    // after "--", and stray words (an option's dashes forgotten)
    { args: ['--', `--tok=${SECRET}`], code: 2, names: /"--tok=\.\.\." after "--" is an argument/ },
    { args: ['session', 'k', `token=${SECRET}`], code: 2, names: /session takes one session key: a second session key \(word 3, 18 characters\) was given/ },
    { args: ['check', 'a.yaml', `token=${SECRET}`], code: 2, names: /check takes one config file: a second config file \(word 3, 18 characters\) was given/ },
    { args: [`token=${SECRET}`], code: 2, names: /unknown argument \(word 1, 18 characters\)/ },
    // (review s65 r1) a bare word: a token split off --token (`--token Bearer S3CRET`, unquoted), a
    // second key, file or id, an unknown command (still "did you mean" near one) or argument
    { args: ['drain', 'app-1', '--wait', '--token', 'Bearer', SECRET], code: 2, names: /drain takes one upstream id: a second upstream id \(word 6, 12 characters\) was given/ },
    { args: [SECRET], code: 2, names: /unknown argument \(word 1, 12 characters\) \(commands: / },
    { args: ['run', SECRET], code: 2, names: /unknown argument \(word 2, 12 characters\)/ },
    { args: ['sesion', 'k'], code: 2, names: /unknown argument \(word 1, 6 characters\), did you mean "session"\?/, secret: 'sesion' },
    // a value of the wrong shape: a token given to --admin or --timeout, TETHER_ADMIN set to one
    { args: ['session', 'k', '--admin', SECRET], code: 2, names: /--admin: expected a URL .*a value of 12 characters/ },
    { args: ['session', 'k', '--admin', `http:${SECRET}`], code: 2, names: /--admin: expected a URL/ },
    { args: ['session', 'k'], env: { TETHER_ADMIN: SECRET }, code: 2, names: /TETHER_ADMIN: expected a URL/ },
    { args: ['drain', 'app-1', '--wait', '--timeout', SECRET], code: 2, names: /--timeout: expected a duration .*a value of 12 characters/ },
    { args: ['drain', 'app-1', '--wait', '--timeout', '5m', `--timeout=${SECRET}`], code: 2, names: /--timeout is given twice \("5m" and a value not shown\)/ },
    // (as before: --token twice, a password in --admin)
    { args: ['session', 'k', '--token', SECRET, '--token', 'other'], code: 2, names: /--token is given twice/ },
    { args: ['session', 'k', '--admin', `redis://:${SECRET}@h`], code: 2, names: /--admin: expected a URL/ },
  ])
})

t.test('TETHER_WORKER set to no worker index is named without its value (exit 1)', async (t) => {
  await check(t, [{ args: ['--config', 'config/proxy.yaml'], env: { TETHER_WORKER: SECRET }, code: 1, names: /TETHER_WORKER is set by Tether's primary .*a value of 12 characters/ }])
})

t.test("an --admin URL whose server is not the admin API is named by its origin, not its path (a token's place)", async (t) => {
  const server = http.createServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')).listen(0, '127.0.0.1')
  await new Promise((r) => server.once('listening', r))
  t.teardown(() => server.close())
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const said = new RegExp(`the answer from ${origin.replace(/\./g, '\\.')} is not the Tether admin API's`)
  await check(t, [
    { args: ['session', 'k', '--admin', `${origin}/${SECRET}`], code: 1, names: said },
    { args: ['drain', 'app-1', '--admin', `${origin}/${SECRET}`], code: 1, names: said },
  ])
})

t.test('tether check: an invalid secret-bearing config value is named by its file, line and key, never shown (exit 1)', async (t) => {
  const file = (...lines: string[]): string => tempFile('proxy.yaml', ['upstreams:', '  - { id: a, url: "http://127.0.0.1:8080" }', ...lines, ''].join('\n'))
  const redis = (url: string): string => file('state:', '  store: redis', '  redis:', `    url: ${url}`)
  await check(t, [
    // a Redis URL that is no address: its @host forgotten, a password in the URL's place (also from ${VAR}), a path
    { args: ['check', redis(`"redis://:${SECRET}"`)], code: 1, names: /proxy\.yaml:6:10 state\.redis\.url: expected a redis:\/\/ or rediss:\/\/ URL, got a value of 21 characters/ },
    { args: ['check', redis(SECRET)], code: 1, names: /proxy\.yaml:6:10 state\.redis\.url: expected a redis:\/\/ or rediss:\/\/ URL/ },
    { args: ['check', redis('${REDIS_URL}')], env: { REDIS_URL: SECRET }, code: 1, names: /proxy\.yaml:6:10 state\.redis\.url: expected a redis:\/\/ or rediss:\/\/ URL/ },
    { args: ['check', redis(`"http://redis:6379/${SECRET}"`)], code: 1, names: /proxy\.yaml:6:10 state\.redis\.url: expected a redis:\/\/ or rediss:\/\/ URL/ },
    // (as before: a password with a port out of range, an unclosed quote's syntax error, a short cookie secret)
    { args: ['check', redis(`"redis://:${SECRET}@redis:99999"`)], code: 1, names: /state\.redis\.url: expected a redis:\/\/ or rediss:\/\/ URL, got "redis:\/\/\*\*\*@redis:99999"/ },
    { args: ['check', redis(`"redis://:${SECRET}@redis`)], code: 1, names: /proxy\.yaml:6:10: YAML syntax error/ },
    { args: ['check', file('affinity:', '  cookie:', `    secret: ${SECRET.slice(0, 10)}`)], code: 1, names: /proxy\.yaml:5:13 affinity\.cookie\.secret: expected a secret of at least 16 bytes, got 10/, secret: SECRET.slice(0, 10) },
  ])
})
