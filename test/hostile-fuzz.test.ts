// Seeded, bounded fuzzing of Tether as a real child process: a few thousand mutations of valid
// requests (raw-fuzz.ts), each on its own connection, split into random writes, against a raw
// upstream that parses every byte it receives strictly. Invariants: the process never exits,
// never logs an error-level record, writes nothing to stderr (where an unhandled error's stack
// goes; a dependency's deprecation notice excepted), every byte the upstream receives parses
// as well-formed HTTP/1.1 requests, and every byte a client receives parses as HTTP/1.1
// responses. Then the admin API gets its own hostile requests (tokens, malformed paths).
// Reproduce a run with HOSTILE_FUZZ_SEED=<seed>; bound it with HOSTILE_FUZZ_INPUTS and
// HOSTILE_FUZZ_SECONDS.
import t from 'tap'
import { mulberry32 } from './fixtures/random.js'
import { mutate, type FuzzInput } from './fixtures/raw-fuzz.js'
import { parseResponses } from './fixtures/raw-http.js'
import { exchange, rawConnect } from './fixtures/raw-client.js'
import { startRawUpstream, type RawUpstream } from './fixtures/raw-upstream.js'
import { startChildTether, type ChildTether } from './fixtures/raw-tether.js'
import { waitFor } from './fixtures/upstream.js'

const SEED = Number(process.env['HOSTILE_FUZZ_SEED'] ?? 20261130)
const INPUTS = Number(process.env['HOSTILE_FUZZ_INPUTS'] ?? 4000)
const SECONDS = Number(process.env['HOSTILE_FUZZ_SECONDS'] ?? 35)
const WORKERS = 8
const TOKEN = 'hostile-admin-token'

let up: RawUpstream
let child: ChildTether

t.before(async () => {
  up = await startRawUpstream('app-0')
  child = await startChildTether([
    'listen: { host: 127.0.0.1, port: 0 }',
    `admin: { listen: { host: 127.0.0.1, port: 0 }, token: ${TOKEN} }`,
    `upstreams: [ { id: app-0, url: "${up.url}" } ]`,
    'affinity: { key: cookie, cookie: { secret: [fuzz-secret-0123456789abcdef] } }',
    // short client timeouts: an input that stops half-way is cut by Tether, not by the deadline
    'timeouts: { client_headers: 500ms, body_idle: 500ms, client_keep_alive: 300ms, response_headers: 2s }',
    // a client-caused failure must not eject the only upstream and turn the rest into 503s
    'health: { passive: { enabled: false } }',
    'log: { level: info, access: false }',
  ].join('\n'))
})
t.teardown(async () => {
  await child?.kill()
  await up?.close()
})

/** What one input got back. */
interface Outcome { readonly status: string; readonly invalid: string | null }

async function send(port: number, input: FuzzInput): Promise<Outcome> {
  const conn = await rawConnect(port)
  try {
    await conn.writeSplit(input.pieces)
    if (input.halfClose) conn.socket.end()
    // half-closed: until Tether ends the connection; else until the first answer (keep-alive)
    // or until Tether cuts an input that stops half-way (client_headers / body_idle)
    await conn.until(() => conn.ended || (!input.halfClose && parseResponses(conn.bytes, false).responses.some((r) => r.status >= 200)), 1500)
    const parsed = parseResponses(conn.bytes, conn.ended)
    const finals = parsed.responses.filter((r) => r.status >= 200 || r.status === 101)
    const status = finals.length > 0 ? String(finals[0]!.status) : conn.bytes.length > 0 ? 'cut' : conn.ended ? 'closed' : 'open'
    return { status, invalid: parsed.invalid }
  } finally {
    conn.destroy()
  }
}

t.test(`fuzz: mutated requests never crash Tether, never log an unhandled error, and never reach the upstream ill-framed (seed ${SEED})`, async (t) => {
  t.comment(`seed ${SEED} (HOSTILE_FUZZ_SEED), up to ${INPUTS} inputs in ${SECONDS} s, ${WORKERS} connections at a time, tether from ${child.how}`)
  const rng = mulberry32(SEED)
  const inputs: FuzzInput[] = Array.from({ length: INPUTS }, () => mutate(rng))
  const statuses = new Map<string, number>()
  const badAnswers: string[] = []
  const blamed: string[] = []
  const recent: FuzzInput[] = []
  let next = 0
  let done = 0
  let exitedAfter: string | null = null
  const started = Date.now()
  const deadline = started + SECONDS * 1000
  const worker = async (): Promise<void> => {
    while (next < inputs.length && Date.now() < deadline && exitedAfter === null) {
      const input = inputs[next++]!
      recent.push(input)
      if (recent.length > 2 * WORKERS) recent.shift()
      const violations = up.violations().length
      const o = await send(child.port, input).catch((err: Error) => ({ status: `error ${err.message}`, invalid: null }))
      done++
      statuses.set(o.status, (statuses.get(o.status) ?? 0) + 1)
      if (o.invalid !== null && badAnswers.length < 5) badAnswers.push(`${o.invalid} for ${JSON.stringify(input.bytes.toString('latin1'))}`)
      if (up.violations().length > violations && blamed.length < 5) {
        blamed.push(`${up.violations().at(-1)} after one of: ${recent.map((i) => `${i.recipe} ${JSON.stringify(i.bytes.toString('latin1'))}`).join(' | ')}`)
      }
      if (child.proc.exitCode !== null || child.proc.signalCode !== null) exitedAfter ??= `${input.recipe} ${JSON.stringify(input.bytes.toString('latin1'))}`
    }
  }
  await Promise.all(Array.from({ length: WORKERS }, worker))
  const seconds = (Date.now() - started) / 1000

  // Tether still serves: a plain request gets its 200
  const after = exitedAfter === null ? await exchange(child.port, 'GET /after-fuzz HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1 }) : null
  // a request Tether stopped forwarding half-way must be aborted (its upstream connection closed)
  const halfway = (): number => up.connections.filter((c) => !c.closed && c.pending.length > 0).length
  await waitFor(() => halfway() === 0, 3000, 'upstream requests left half-way to be aborted').catch(() => undefined)
  const aborted = up.connections.filter((c) => c.closed && c.pending.length > 0).length
  const hanging = halfway()
  const byStatus = [...statuses].sort((a, b) => b[1] - a[1]).map(([s, n]) => `${s}: ${n}`).join(', ')
  t.comment(`${done} inputs in ${seconds.toFixed(1)} s (${Math.round(done / seconds)}/s); answers ${byStatus}`)
  t.comment(`upstream: ${up.requests.length} requests on ${up.connections.length} connections, ${aborted} aborted mid-request by Tether, ${hanging} left open mid-request`)

  t.equal(exitedAfter, null, 'the Tether process never exited')
  t.equal(after?.first, '200', 'and still answers a plain request afterwards')
  t.same(up.violations(), [], 'every byte the upstream received parsed as well-formed HTTP/1.1 requests')
  t.same(blamed, [], 'no input led to an ill-framed upstream request')
  t.same(badAnswers, [], 'every byte a client received parsed as HTTP/1.1 responses')
  t.notOk(statuses.has('500'), 'Tether never answered 500')
  t.same(unexpectedStderr(), [], 'nothing on stderr (no stack, no warning but a library deprecation)')
  const lines = child.stdout().split('\n').filter((l) => l !== '')
  const notJson = lines.filter((l) => { try { JSON.parse(l); return false } catch { return true } })
  t.same(notJson.slice(0, 3), [], 'every stdout line is a JSON log record')
  const errors = lines.flatMap((l) => { try { return [JSON.parse(l) as { level: number; msg: string }] } catch { return [] } }).filter((r) => r.level >= 50)
  t.same(errors.slice(0, 3), [], 'no error-level log record')
  t.equal(hanging, 0, 'no upstream request was left half-way with its connection open')
  t.ok(done >= Math.min(INPUTS, 500), `a meaningful number of inputs ran (${done})`)
})

/** The child's stderr lines: none expected (not even a dependency's deprecation notice, see src/proxy/upgrade-transport.ts). */
function unexpectedStderr(): string[] {
  return child.stderr().split('\n').filter((l) => l.trim() !== '')
}

/** One admin request, raw; resolves with the status ("none" when the connection died). */
async function admin(method: string, path: string, auth?: string): Promise<string> {
  if (child.proc.exitCode !== null || child.proc.signalCode !== null) return 'exited'
  const r = await exchange(child.adminPort, `${method} ${path} HTTP/1.1\r\nHost: admin\r\n${auth === undefined ? '' : `Authorization: ${auth}\r\n`}Content-Length: 0\r\nConnection: close\r\n\r\n`).catch(() => null)
  return r?.first ?? 'refused'
}

t.test('admin API: mutations need the bearer token, and hostile paths are refused without harm', async (t) => {
  t.equal(await admin('GET', '/healthz'), '200')
  t.equal(await admin('POST', '/upstreams/app-0/drain'), '401', 'no token')
  t.equal(await admin('POST', '/upstreams/app-0/drain', 'Bearer wrong'), '401', 'wrong token')
  t.equal(await admin('POST', '/upstreams/app-0/drain', `Basic ${TOKEN}`), '401', 'not a bearer token')
  t.equal(await admin('POST', '/upstreams/app-0/drain', `Bearer ${TOKEN}x`), '401', 'token with a suffix')
  t.equal(await admin('POST', '/upstreams/app-0/drain', `Bearer ${TOKEN.slice(0, -1)}`), '401', 'token prefix')
  t.equal(await admin('GET', '/upstreams/app-0/drain', `Bearer ${TOKEN}`), '405', 'drain needs POST')
  t.equal(await admin('POST', '/upstreams/nope/drain', `Bearer ${TOKEN}`), '404', 'unknown upstream')
  const refused = ['400', '404']
  for (const path of ['/upstreams/%2e%2e/drain', '/upstreams/app-0%2Fx/drain', '/upstreams/app-0/drain/extra', '/upstreams//drain']) {
    const status = await admin('POST', path, `Bearer ${TOKEN}`)
    t.ok(refused.includes(status), `${path} is refused, not acted on (${status})`)
  }
  const long = await admin('GET', `/${'x'.repeat(20_000)}`)
  t.ok(['404', '414', '431'].includes(long), `a 20 KiB path is refused (${long})`)
  t.equal(await admin('POST', '/upstreams/app-0/drain', `Bearer ${TOKEN}`), '200', 'the right token drains')
  t.equal(await admin('POST', '/upstreams/app-0/undrain', `Bearer ${TOKEN}`), '200', 'and undrains')
  t.equal(child.proc.exitCode, null, 'the process is still running')
})

t.test('admin API: a malformed percent-escape in an upstream id is a 400, and the admin listener and the process survive', async (t) => {
  t.equal(await admin('POST', '/upstreams/%E0%A4%A/drain', `Bearer ${TOKEN}`), '400')
  t.equal(await admin('POST', '/upstreams/%/undrain', `Bearer ${TOKEN}`), '400')
  t.equal(await admin('GET', '/healthz'), '200', 'the admin listener still answers')
  t.equal(child.proc.exitCode, null, 'the process is still running')
  t.same(unexpectedStderr(), [], 'nothing on stderr')
})
