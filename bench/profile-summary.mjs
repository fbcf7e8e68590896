#!/usr/bin/env node
// Summarise a V8 .cpuprofile (from `node --cpu-prof`) by self time: the top functions and the
// share of each group (native/GC, undici, node's http server and streams, Tether's own code,
// other packages). Plain ESM, no dependencies. See bench/README.md ("Profiling Tether").
//
// Usage: node bench/profile-summary.mjs <file.cpuprofile> [--top N] [--inclusive GROUP] [--skip S]
//          [--tree PCT] [--folded FILE] [--json]
//   --skip S: leave out the first S seconds of the profile (start-up and JIT warm-up).
//   --inclusive tether: also list that group's functions by inclusive time (self + callees),
//   each sample counted once per function on its stack.
//   --tree PCT: a text flame graph: the call tree top-down (same-function paths merged), every
//   frame with at least PCT % of busy time inclusive, with its inclusive and self shares.
//   --folded FILE: write folded stacks (`a;b;c <microseconds>` per line) for flamegraph.pl,
//   inferno or speedscope, to draw the flame graph.
import { readFileSync, writeFileSync } from 'node:fs'

const args = process.argv.slice(2)
const opt = (name) => {
  const i = args.indexOf(name)
  return i >= 0 ? args[i + 1] : undefined
}
const TOP = Number(opt('--top') ?? 15)
const TREE = opt('--tree') === undefined ? null : Number(opt('--tree'))
const FOLDED = opt('--folded')
const INCLUSIVE = opt('--inclusive')
const SKIP_US = Number(opt('--skip') ?? 0) * 1e6
const file = args.find((a, i) => !a.startsWith('--') && !['--top', '--inclusive', '--skip', '--tree', '--folded'].includes(args[i - 1]))
if (!file || !Number.isInteger(TOP) || TOP < 1 || (TREE !== null && !(TREE > 0))) {
  console.error('usage: node bench/profile-summary.mjs <file.cpuprofile> [--top N] [--inclusive GROUP] [--skip S] [--tree PCT] [--folded FILE] [--json]')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(file, 'utf8'))

/** Which part of the stack a frame belongs to, from its script URL and name. */
export function group({ url, functionName }) {
  if (functionName === '(idle)') return 'idle'
  if (functionName === '(garbage collector)') return 'native: GC'
  if (functionName === '(program)') return 'native: V8/libuv (program)'
  if (url.startsWith('wasm://')) return 'undici' // llhttp as WebAssembly: undici's parser (node's own is C++)
  if (!url) return 'native: builtins and bindings (syscalls, parsers)'
  if (url.includes('/node_modules/undici/')) return 'undici'
  if (url.includes('/node_modules/')) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
    return `package: ${m ? m[1] : '?'}`
  }
  if (/^node:(_http|http|internal\/http)/.test(url)) return 'node: http server/client'
  if (/^node:(net|stream|internal\/streams|internal\/stream_base|_stream)/.test(url)) return 'node: net and streams'
  if (url.startsWith('node:')) return 'node: other core'
  if (/\/(dist|src)\//.test(url)) return 'tether'
  return 'other scripts'
}

// Self time per node: the samples that landed on it, weighted by their time deltas.
const nodes = new Map(profile.nodes.map((n) => [n.id, n]))
// A gap far above the sampling interval (1 ms by default) is time the process did not run:
// the bench's isolation freezes idle contestants with SIGSTOP, and V8 charges the whole frozen
// stretch to the next sample's frame. It is counted apart ("stopped"), not as busy time.
const STOPPED_GAP_US = 100_000
let stopped = 0
const selfUs = new Map()
if (profile.samples && profile.timeDeltas) {
  let at = 0
  for (let i = 0; i < profile.samples.length; i++) {
    const d = Math.max(0, profile.timeDeltas[i] ?? 0)
    at += d
    if (at < SKIP_US) continue
    if (d > STOPPED_GAP_US) {
      stopped += d
      continue
    }
    const id = profile.samples[i]
    selfUs.set(id, (selfUs.get(id) ?? 0) + d)
  }
} else {
  if (SKIP_US > 0) throw new Error('--skip needs a profile with samples and timeDeltas')
  const per = (profile.endTime - profile.startTime) / profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0)
  for (const n of profile.nodes) selfUs.set(n.id, (n.hitCount ?? 0) * per)
}

function whereOf(cf) {
  return cf.url ? `${cf.url.replace(/^file:\/\/.*?\/(node_modules|dist|src)\//, '$1/')}:${cf.lineNumber + 1}` : ''
}
function keyOf(cf) {
  return `${cf.functionName || '(anonymous)'}\u0000${whereOf(cf)}`
}

const byFunction = new Map()
const byGroup = new Map()
let total = 0
let idle = 0
for (const [id, us] of selfUs) {
  const cf = nodes.get(id).callFrame
  const g = group(cf)
  if (g === 'idle') {
    idle += us
    continue
  }
  total += us
  const key = keyOf(cf)
  const f = byFunction.get(key) ?? { name: cf.functionName || '(anonymous)', where: whereOf(cf), group: g, us: 0 }
  f.us += us
  byFunction.set(key, f)
  byGroup.set(g, (byGroup.get(g) ?? 0) + us)
}

const pct = (us) => (total ? (100 * us) / total : 0)
const top = [...byFunction.values()].sort((a, b) => b.us - a.us).slice(0, TOP)
const groups = [...byGroup.entries()].sort((a, b) => b[1] - a[1])
const wallS = (profile.endTime - profile.startTime - SKIP_US) / 1e6

// Inclusive time of one group's functions: walk each sampled node's stack to the root.
let inclusive = null
if (INCLUSIVE) {
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const incl = new Map()
  for (const [id, us] of selfUs) {
    if (group(nodes.get(id).callFrame) === 'idle') continue
    const seen = new Set()
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const cf = nodes.get(at).callFrame
      if (group(cf) !== INCLUSIVE) continue
      const key = keyOf(cf)
      if (seen.has(key)) continue
      seen.add(key)
      const f = incl.get(key) ?? { name: cf.functionName || '(anonymous)', where: whereOf(cf), us: 0 }
      f.us += us
      incl.set(key, f)
    }
  }
  inclusive = [...incl.values()].sort((a, b) => b.us - a.us).slice(0, TOP)
}

// The stacks of the busy samples, root first ("(root)" left out), merged by function.
if (TREE !== null || FOLDED) {
  const parent = new Map()
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)
  const label = (cf) => `${cf.functionName || '(anonymous)'}${whereOf(cf) ? ` ${whereOf(cf)}` : ''}`
  const root = { children: new Map(), us: 0, self: 0 }
  const folded = new Map()
  for (const [id, us] of selfUs) {
    if (group(nodes.get(id).callFrame) === 'idle') continue
    const stack = []
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const cf = nodes.get(at).callFrame
      if (cf.functionName !== '(root)') stack.push(label(cf))
    }
    stack.reverse()
    let node = root
    root.us += us
    for (const frame of stack) {
      let child = node.children.get(frame)
      if (child === undefined) node.children.set(frame, (child = { children: new Map(), us: 0, self: 0 }))
      child.us += us
      node = child
    }
    node.self += us
    const line = stack.map((f) => f.replaceAll(';', ',')).join(';')
    folded.set(line, (folded.get(line) ?? 0) + us)
  }
  if (FOLDED) {
    writeFileSync(FOLDED, [...folded].map(([line, us]) => `${line} ${Math.round(us)}`).join('\n') + '\n')
    console.error(`folded stacks: ${FOLDED} (${folded.size} stacks)`)
  }
  if (TREE !== null) {
    console.log(`call tree, frames with >= ${TREE} % of busy time (incl % / self %):`)
    const walk = (node, depth) => {
      for (const [frame, child] of [...node.children].sort((a, b) => b[1].us - a[1].us)) {
        if (pct(child.us) < TREE) continue
        console.log(`${pct(child.us).toFixed(1).padStart(5)} ${pct(child.self).toFixed(1).padStart(5)}  ${'  '.repeat(depth)}${frame}`)
        walk(child, depth + 1)
      }
    }
    walk(root, 0)
    console.log()
  }
}

if (args.includes('--json')) {
  console.log(
    JSON.stringify(
      {
        file,
        wallSeconds: wallS,
        busySeconds: total / 1e6,
        idleSeconds: idle / 1e6,
        stoppedSeconds: stopped / 1e6,
        groups: Object.fromEntries(groups.map(([g, us]) => [g, Math.round(pct(us) * 10) / 10])),
        top: top.map((f) => ({ ...f, selfPercent: Math.round(pct(f.us) * 10) / 10 })),
        ...(inclusive ? { inclusive: inclusive.map((f) => ({ ...f, inclusivePercent: Math.round(pct(f.us) * 10) / 10 })) } : {}),
      },
      null,
      2,
    ),
  )
} else {
  console.log(`${file}: ${wallS.toFixed(1)} s profiled, ${(total / 1e6).toFixed(1)} s busy, ${(idle / 1e6).toFixed(1)} s idle${stopped > 0 ? `, ${(stopped / 1e6).toFixed(1)} s stopped (frozen by BENCH_ISOLATE)` : ''}; shares are of busy time\n`)
  console.log('self %  group')
  for (const [g, us] of groups) console.log(`${pct(us).toFixed(1).padStart(6)}  ${g}`)
  console.log(`\ntop ${TOP} functions by self time`)
  console.log('self %  function  [group]  where')
  for (const f of top) console.log(`${pct(f.us).toFixed(1).padStart(6)}  ${f.name}  [${f.group}]  ${f.where}`)
  if (inclusive) {
    console.log(`\ntop ${TOP} ${INCLUSIVE} functions by inclusive time (self + callees)`)
    console.log(' incl %  function  where')
    for (const f of inclusive) console.log(`${pct(f.us).toFixed(1).padStart(6)}  ${f.name}  ${f.where}`)
  }
}
