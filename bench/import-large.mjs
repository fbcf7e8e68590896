// `tether import` on a big cluster export: writes a synthetic `kubectl get all,ingress -A -o
// yaml` (bench/lib/kubectl-export.mjs: per namespace a Deployment, 2 ReplicaSets, 4 Pods, a
// Service and an Ingress, with kubectl's managedFields and status) of about the size asked for,
// runs `node dist/cli.js import` on it and prints the wall and CPU time and the peak RSS
// (from /usr/bin/time when installed, else the child's resource usage).
// Run: npx tsc -p tsconfig.json && node bench/import-large.mjs [megabytes=50] [dist dir=dist]
// (compare two builds by passing the other one's dist directory). Bench only: writes a temp file.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { kubectlExport } from './lib/kubectl-export.mjs'

const megabytes = Number(process.argv[2] ?? 50)
const dist = path.resolve(process.argv[3] ?? 'dist')
const perApp = kubectlExport({ apps: 10 }).length / 10
const apps = Math.max(1, Math.round((megabytes * 1e6) / perApp))
const text = kubectlExport({ apps, pods: 4, stickyEvery: 0, clientIpEvery: 0 })
const dir = mkdtempSync(path.join(tmpdir(), 'tether-import-bench-'))
const file = path.join(dir, 'export.yaml')
writeFileSync(file, text)
try {
  const timed = existsSync('/usr/bin/time')
  const cmd = timed ? '/usr/bin/time' : process.execPath
  const args = [...(timed ? ['-f', 'TIME %e %U %S %M', process.execPath] : []), path.join(dist, 'cli.js'), 'import', file]
  const started = performance.now()
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 30 })
  const wall = (performance.now() - started) / 1000
  if (r.status !== 0) throw new Error(`tether import exited ${r.status}: ${r.stderr.split('\n').slice(0, 5).join('\n')}`)
  const m = /TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(r.stderr)
  const objects = apps * 9
  console.log(`input: ${(text.length / 1e6).toFixed(1)} MB, ${text.split('\n').length} lines, ${objects} objects (${apps} namespaces: Deployment, 2 ReplicaSets, 4 Pods, Service, Ingress)`)
  if (m !== null) console.log(`tether import (${dist}): ${m[1]} s wall, ${m[2]} s user + ${m[3]} s sys CPU, ${Math.round(Number(m[4]) / 1024)} MB peak RSS`)
  else console.log(`tether import (${dist}): ${wall.toFixed(2)} s wall`)
} finally {
  rmSync(dir, { recursive: true, force: true })
}
