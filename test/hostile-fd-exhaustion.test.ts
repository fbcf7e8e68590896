// An attacker who holds enough client connections to use up Tether's open-files limit makes
// every upstream connect fail with EMFILE. That is Tether's own failure: it answers 503
// TETHER_OUT_OF_RESOURCES, and must not count it against the upstreams (it ejected healthy
// ones, and moved their users for good). A real Tether process under `ulimit -n`, real idle
// connections holding its descriptors; Linux (/proc) only.
import t from 'tap'
import net from 'node:net'
import { readdirSync } from 'node:fs'
import { startCli, tempFile } from './fixtures/cli.js'
import { request, startUpstream } from './fixtures/upstream.js'
import { waitFor } from './fixtures/wait.js'

const LIMIT = 160

/** Descriptors `pid` has open now. */
function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length
}

/** Sends raw `requests` on one connection and resolves with every byte read until `done(text)`. */
function exchange(port: number, requests: string, done: (text: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1', () => socket.write(requests))
    let text = ''
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`no full answer: ${JSON.stringify(text)}`)) }, 10_000)
    socket.on('data', (c: Buffer) => {
      text += c.toString('latin1')
      if (done(text)) { clearTimeout(timer); socket.destroy(); resolve(text) }
    })
    socket.on('error', reject)
  })
}

t.test('out of file descriptors: 503 TETHER_OUT_OF_RESOURCES, one error line, and the upstream is not blamed (no ejection, no move)', async (t) => {
  const app = await startUpstream('a')
  t.teardown(() => app.close())
  const tether = await startCli(tempFile('fd.yaml', [
    'listen: { host: 127.0.0.1, port: 0 }',
    'admin: { listen: { host: 127.0.0.1, port: 0 } }',
    'affinity: { key: none }',
    // no active probes: each opens a descriptor for a moment, and the count below must hold still
    'health: { active: { enabled: false }, passive: { consecutive_failures: 2, max_ejection_percent: 100 } }',
    'upstreams:',
    `  - { id: a, url: "${app.url}" }`,
    '',
  ].join('\n')), {}, 15_000, undefined, LIMIT)
  t.teardown(() => tether.stop('SIGKILL'))
  const pid = tether.proc.pid!
  const port = Number(new URL(tether.url).port)
  const line = tether.stdout().split('\n').find((l) => l.includes('"tether listening"'))!
  const admin = (JSON.parse(line) as { admin: string }).admin

  // hold every descriptor but one; the request's own connection takes that one
  const held: net.Socket[] = []
  t.teardown(() => { for (const s of held) s.destroy() })
  const spare = LIMIT - openFiles(pid) - 1
  for (let i = 0; i < spare; i++) {
    const s = net.connect(port, '127.0.0.1')
    s.on('error', () => undefined)
    held.push(s)
  }
  await waitFor(() => openFiles(pid) === LIMIT - 1, 10_000, `Tether to hold ${LIMIT - 1} descriptors`)
  const get = 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'
  const text = await exchange(port, get.repeat(4), (s) => (s.match(/HTTP\/1\.1 /g) ?? []).length === 4 && s.endsWith('\n'))
  const statuses = [...text.matchAll(/HTTP\/1\.1 (\d+)/g)].map((m) => m[1])
  t.same(statuses, ['503', '503', '503', '503'], 'every request: 503')
  t.match(text, /the proxy is out of resources/)

  for (const s of held) s.destroy()
  await waitFor(() => openFiles(pid) < LIMIT / 2, 10_000, 'the held connections to close')
  const rows = JSON.parse((await request(`${admin}/upstreams`)).body) as { id: string; state: string }[]
  t.equal(rows.find((r) => r.id === 'a')?.state, 'healthy', 'the upstream stays healthy: 4 connect failures of its own would have ejected it')
  const errors = tether.stdout().split('\n').filter((l) => l.includes('Tether cannot open upstream connections'))
  t.equal(errors.length, 1, 'one error line says why (rate-limited), none per request')
  t.match(errors[0], /"code":"EMFILE"/)
  t.notOk(tether.stdout().includes('upstream exchange failed'), 'no warning blames the upstream')
  t.match(tether.stdout(), /"outcome":"TETHER_OUT_OF_RESOURCES"/, 'the access log names it')
})

t.test('an active probe that fails for lack of file descriptors is not counted against the upstream', async (t) => {
  // a process with no descriptor left: every probe fails with EMFILE before any byte is sent
  const checker = new URL('../dist/health/active-checker.js', import.meta.url).href
  const script = `import { openSync } from 'node:fs'
import { ActiveChecker } from ${JSON.stringify(checker)}
const reports = [], codes = []
const c = new ActiveChecker({ path: '/healthz', interval: 20, timeout: 1000, jitter: 0 }, { reportActive: (id, ok) => reports.push(ok) })
c.onProbe((e) => {
  codes.push(e.code)
  if (codes.length === 3) { process.stdout.write(JSON.stringify({ reports, codes })); process.exit(0) }
})
c.setUpstreams([{ id: 'a', url: 'http://127.0.0.1:9' }])
try { for (;;) openSync('/dev/null', 'r') } catch {}
setTimeout(() => { process.stdout.write(JSON.stringify({ reports, codes })); process.exit(1) }, 5000) // the checker's timers are unref'd
c.start()`
  const { spawn } = await import('node:child_process')
  const proc = spawn('/bin/sh', ['-c', `ulimit -n 64 && exec "$0" --input-type=module -e "$1"`, process.execPath, script], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const code = await new Promise<number | null>((resolve) => proc.on('close', resolve))
  t.equal(code, 0)
  const { reports, codes } = JSON.parse(out) as { reports: boolean[]; codes: string[] }
  t.same(codes, ['EMFILE', 'EMFILE', 'EMFILE'], 'three probes failed with EMFILE')
  t.same(reports, [], 'none was reported to health')
})
