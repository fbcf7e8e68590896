// Cost of EndpointSlice watch events at scale (src/upstream/endpoint-slices.ts): a Service of
// P pods (10,000) in S slices (100), then E (1,000) events that each replace one slice with a
// new object in which one pod changed (its readiness flipped, or it was re-created at a new
// address), each followed by what KubernetesDiscovery does on an event: recompute the set
// from every slice (previous = the set in use), compare it with the last one. Prints CPU ms per
// event (process.cpuUsage, best of 3 rounds, each in-process) and checks that the last set is
// the one a fresh full computation gives. Bench only: reads the built code, writes nothing.
// Run: npx tsc -p tsconfig.json && node bench/slice-events.mjs [dist dir=dist] [pods=10000] [slices=100] [events=1000]
// (compare two builds by passing the other one's dist directory)
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { prng } from './lib/prng.mjs'

const dist = path.resolve(process.argv[2] ?? 'dist')
const P = Number(process.argv[3] ?? 10_000)
const S = Number(process.argv[4] ?? 100)
const E = Number(process.argv[5] ?? 1_000)
const mod = await import(pathToFileURL(path.join(dist, 'upstream/endpoint-slices.js')).href)
const { upstreamsFromSlices, sameUpstreams, EQUAL_WEIGHTS } = mod

const ip = (n) => `10.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
const endpoint = (pod, addr, ready) => ({ addresses: [addr], conditions: { ready, serving: ready, terminating: false }, targetRef: { kind: 'Pod', name: `web-${pod}`, uid: `uid-${pod}-${addr}` } })
const slice = (s, endpoints) => ({ metadata: { name: `web-${s.toString(36).padStart(5, '0')}` }, addressType: 'IPv4', endpoints, ports: [{ name: 'http', port: 8080, protocol: 'TCP' }] })

/** How the code under test is driven, as KubernetesDiscovery drives it. */
function driver() {
  if (typeof mod.SliceMerge === 'function') {
    const merge = new mod.SliceMerge()
    return (slices, previous) => merge.upstreams(slices, 'http', EQUAL_WEIGHTS, previous)
  }
  const reads = typeof mod.SliceReads === 'function' ? new mod.SliceReads() : null
  return (slices, previous) => upstreamsFromSlices(slices, 'http', EQUAL_WEIGHTS, previous, reads)
}

function round(seed) {
  const next = prng(seed)
  const per = Math.ceil(P / S)
  const slices = new Map()
  let addr = 1
  for (let s = 0; s < S; s++) {
    const eps = []
    for (let p = s * per; p < Math.min(P, (s + 1) * per); p++) eps.push(endpoint(p, ip(addr++), true))
    slices.set(s, slice(s, eps))
  }
  const compute = driver()
  let current = compute(slices.values(), []).upstreams
  let changes = 0
  const cpu0 = process.cpuUsage()
  const t0 = process.hrtime.bigint()
  for (let e = 0; e < E; e++) {
    const s = next() % S
    const old = slices.get(s)
    const i = next() % old.endpoints.length
    const eps = old.endpoints.slice()
    const was = eps[i]
    const pod = Number(was.targetRef.name.slice(4))
    eps[i] = next() % 4 === 0 ? endpoint(pod, ip(addr++), false) : endpoint(pod, was.addresses[0], !was.conditions.ready)
    slices.set(s, slice(s, eps))
    const { upstreams } = compute(slices.values(), current)
    if (!sameUpstreams(upstreams, current)) { current = upstreams; changes++ }
  }
  const cpu = process.cpuUsage(cpu0)
  const wall = Number(process.hrtime.bigint() - t0) / 1e6
  const full = upstreamsFromSlices(slices.values(), 'http', EQUAL_WEIGHTS, [])
  // the urls kept from the set in use may differ from a fresh computation only for pods listed at
  // several addresses, which this bench does not make: the sets must be the same
  if (!sameUpstreams(full.upstreams, current)) throw new Error('the last set differs from a full computation')
  return { cpuMs: (cpu.user + cpu.system) / 1000 / E, wallMs: wall / E, changes }
}

const rounds = [round(1), round(2), round(3)]
const best = rounds.reduce((a, b) => (b.cpuMs < a.cpuMs ? b : a))
console.log(`${dist}: ${P} pods in ${S} slices, ${E} one-slice events: ${best.cpuMs.toFixed(2)} ms CPU per event (wall ${best.wallMs.toFixed(2)} ms), best of 3 (${rounds.map((r) => r.cpuMs.toFixed(2)).join(', ')}); ${best.changes} set changes`)
