// Side by side: the hostile case tables of the test suite (test/fixtures/raw-cases.ts) sent to
// Tether, nginx and HAProxy, each in front of the same kind of raw recording upstream; prints
// one Markdown table per class (what the client got, what the upstream received). A tool for
// writing notes, not a test: nginx and haproxy must be on PATH (Debian: nginx 1.22, HAProxy 2.6).
//
//   TS_NODE_TRANSPILE_ONLY=1 node --import @tapjs/typescript/import bench/hostile-compare.ts [framing|routing|upstream|differential]...
//
// Tether runs in-process from src/ (retries 0, so a replay does not hide a first answer; passive
// health off, so one bad answer does not eject the only upstream for the cases after it).
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FRAMING, ROUTING, UPSTREAM, type ClientCase, type UpstreamCase } from '../test/fixtures/raw-cases.js'
import { DIFFERENTIAL, observe } from '../test/fixtures/protocol-diff.js'
import { runCase, startHarness, type CaseTarget } from '../test/fixtures/raw-tether.js'
import { exchange } from '../test/fixtures/raw-client.js'
import { BARRIER, answerOk, startRawUpstream, type RawUpstream } from '../test/fixtures/raw-upstream.js'

interface Contestant extends CaseTarget {
  readonly name: string
  readonly up: RawUpstream
  stop(): Promise<void>
}

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

async function listening(port: number, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  for (;;) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); r(true) })
      s.on('error', () => r(false))
    })
    if (ok) return
    if (Date.now() > end) throw new Error(`nothing listens on ${port}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** A proxy process in front of a fresh raw upstream; stopped by its PID. */
async function peer(name: string, config: (dir: string, port: number, upPort: number) => { file: string; text: string; args: string[] }): Promise<Contestant> {
  const up = await startRawUpstream(name)
  const dir = mkdtempSync(join(tmpdir(), `tether-compare-${name}-`))
  const port = await freePort()
  const c = config(dir, port, up.port)
  writeFileSync(c.file, c.text)
  const cmd = name === 'nginx' ? 'nginx' : 'haproxy'
  const proc: ChildProcess = spawn(cmd, c.args, { stdio: 'ignore' })
  await listening(port)
  return {
    name, up, port,
    received: () => up.requests,
    violations: () => up.violations(),
    barrier: async () => { await exchange(port, `GET ${BARRIER} HTTP/1.1\r\nHost: barrier\r\nConnection: close\r\n\r\n`) },
    stop: async () => {
      const gone = new Promise((r) => proc.once('exit', r))
      proc.kill('SIGKILL')
      await gone
      await up.close()
    },
  }
}

const nginx = (): Promise<Contestant> => peer('nginx', (dir, port, upPort) => {
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) mkdirSync(join(dir, d))
  const file = join(dir, 'nginx.conf')
  return {
    file,
    args: ['-p', dir, '-c', file, '-e', join(dir, 'error.log')],
    text: `daemon off; master_process off; worker_processes 1; pid ${dir}/nginx.pid; error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  client_header_timeout 2s; client_body_timeout 2s;
  upstream app { server 127.0.0.1:${upPort} max_fails=0; keepalive 8; }
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://app; proxy_http_version 1.1; proxy_read_timeout 2s;
      proxy_set_header Host $host; proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection $connection_upgrade;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }
  }
}
`,
  }
})

const haproxy = (): Promise<Contestant> => peer('haproxy', (dir, port, upPort) => {
  const file = join(dir, 'haproxy.cfg')
  return {
    file,
    args: ['-db', '-f', file],
    text: `global
  nbthread 1
defaults
  mode http
  option http-keep-alive
  option forwardfor
  timeout connect 2s
  timeout client 2s
  timeout server 2s
  timeout http-request 2s
frontend fe
  bind 127.0.0.1:${port}
  default_backend be
backend be
  server s1 127.0.0.1:${upPort}
`,
  }
})

async function tether(): Promise<Contestant> {
  const h = await startHarness({ retries: { attempts: 0 }, timeouts: { client_headers: 2000, response_headers: 2000 }, health: { passive: { enabled: false } } })
  return { name: 'tether', up: h.up, port: h.port, received: h.received, violations: h.violations, barrier: h.barrier, stop: h.close }
}

const cell = (s: string): string => s.replaceAll('|', '\\|').replaceAll('\n', ' ')
const shown = (s: string): string => JSON.stringify(s).slice(1, -1).replaceAll('\\r\\n', '⏎').slice(0, 70)

function wanted(c: ClientCase): string {
  const w = c.want
  if (w.kind === 'reject') return `${typeof w.status === 'number' ? w.status : w.status.join('/')}, close, up 0`
  return `200${(w.count ?? 1) > 1 ? `×${w.count}` : ''}, up ${w.count ?? 1}${w.target === undefined ? '' : ` ${w.target}`}`
}

async function clientTable(title: string, cases: readonly ClientCase[], contestants: readonly Contestant[]): Promise<void> {
  console.log(`\n### ${title}\n\n| input | wanted | ${contestants.map((c) => c.name).join(' | ')} |\n|---|---|${contestants.map(() => '---|').join('')}`)
  for (const c of cases) {
    const cells: string[] = []
    for (const p of contestants) {
      const r = await runCase(p, c)
      const up = r.received.length === 0 ? 'up 0' : `up ${r.received.length} ${r.received.map((q) => q.target).join(' ')}`
      cells.push(`${r.statuses.join('+') || 'none'}, ${r.ended ? 'close' : 'open'}, ${up}${r.violations.length > 0 ? ', ILL-FRAMED upstream' : ''}`)
    }
    console.log(`| ${cell(c.name)}${c.todo === undefined ? '' : ' (todo)'} | ${wanted(c)} | ${cells.map(cell).join(' | ')} |`)
  }
}

async function upstreamTable(cases: readonly UpstreamCase[], contestants: readonly Contestant[]): Promise<void> {
  console.log(`\n### Misbehaving upstreams (GET /x answered with raw bytes)\n\n| upstream answer | wanted | ${contestants.map((c) => c.name).join(' | ')} |\n|---|---|${contestants.map(() => '---|').join('')}`)
  for (const c of cases) {
    const cells: string[] = []
    for (const p of contestants) {
      p.up.setScript(c.script)
      const r = await exchange(p.port, 'GET /x HTTP/1.1\r\nHost: a\r\n\r\n', { responses: 1, ms: 4000 })
      const body = r.finals[0]?.body.toString().trim() ?? ''
      cells.push(r.finals.length > 0 ? `${r.first} ${shown(body.slice(0, 30))}` : r.bytes.length > 0 ? `cut after ${shown(r.bytes.toString('latin1').split('\r\n')[0]!)}` : r.ended ? 'closed, no answer' : 'no answer (4 s)')
      for (const conn of p.up.connections) if (!conn.closed) conn.destroy() // no stale state into the next case
      p.up.setScript(answerOk)
    }
    const w = c.want
    const want = w.kind === 'error' ? `${w.status}` : w.kind === 'answer' ? `${w.status} ${w.body}` : 'head, then cut'
    console.log(`| ${cell(c.name)}${c.todo === undefined ? '' : ' (todo)'} | ${cell(want)} | ${cells.map(cell).join(' | ')} |`)
  }
}

async function differentialTable(contestants: readonly Contestant[]): Promise<void> {
  console.log(`\n### Protocol differential (test/fixtures/protocol-diff.ts)\n\n| case | ${contestants.map((c) => c.name).join(' | ')} |\n|---|${contestants.map(() => '---|').join('')}`)
  for (const c of DIFFERENTIAL) {
    const cells: string[] = []
    for (const p of contestants) {
      const got = await observe(p, c)
      const recorded = p.name === 'tether' ? c.tether : p.name === 'nginx' ? c.nginx : c.haproxy
      cells.push(got === recorded ? got : `${got} (recorded: ${recorded})`)
    }
    console.log(`| ${cell(c.name)} | ${cells.map(cell).join(' | ')} |`)
  }
}

const classes = process.argv.slice(2)
const want = (k: string): boolean => classes.length === 0 || classes.includes(k)
const contestants = [await tether(), await nginx(), await haproxy()]
const stopAll = async (): Promise<void> => { await Promise.all(contestants.map((c) => c.stop())) }
process.once('SIGINT', () => void stopAll().then(() => process.exit(130)))
try {
  if (want('framing')) await clientTable('Framing and smuggling', FRAMING, contestants)
  if (want('routing')) await clientTable('Routing abuse', ROUTING, contestants)
  if (want('upstream')) await upstreamTable(UPSTREAM, contestants)
  if (want('differential')) await differentialTable(contestants)
} finally {
  await stopAll()
}
process.exit(0)
