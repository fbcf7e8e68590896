// Workers' bindings converge whatever order their writes cross in: real WorkerLinks and their
// session tables joined through a real Hub over in-memory FIFO channels whose deliveries this
// test interleaves (each channel stays in order, as Node's IPC channel does). A worker's pin,
// unpin, rotation and renewal, a binding lost for room and placed afresh, an answer decided
// before a move it did not see, a worker that starts and copies a sibling meanwhile: once every
// message is delivered, every worker must hold the same binding and rotation grace for every
// user. A seeded fuzz prints its figures; the named cases are the races the closing notes of
// earlier stops listed.
import t, { type Test } from 'tap'
import { Hub } from '../src/workers/hub.js'
import type { ToPrimary, ToWorker } from '../src/workers/messages.js'
import { SessionTable } from '../src/affinity/session-table.js'
import { SessionRecords } from '../src/affinity/session-records.js'
import { WorkerLink } from '../src/workers/worker-link.js'

const NOW = 50_000

interface Node {
  readonly id: number
  /** Its snapshot is in (it serves requests). */
  attached: boolean
  readonly link: WorkerLink
  readonly sessions: SessionTable
  /** Messages this worker sent, not yet received by the hub. */
  readonly up: ToPrimary[]
  /** Messages the hub sent it, not yet delivered. */
  readonly down: ToWorker[]
  deliver(m: ToWorker): void
}

/** `n` attached workers and their hub; nothing is delivered until the test says so. */
async function mesh(n = 3) {
  const nodes: Node[] = []
  /** How many times a starting worker was told a sibling copies for it (twice: taken over). */
  const stats = { dumping: 0 }
  const hub = new Hub({
    ids: () => nodes.map((w) => w.id),
    donor: (except) => nodes.find((w) => w.id !== except && w.attached)?.id ?? null,
    send: (id, m) => {
      if (m.tether === 'dumping') stats.dumping++
      nodes.find((w) => w.id === id)?.down.push(m)
    },
    lead: () => 1,
  }, null)
  /** A worker that starts: it asks the hub for a sibling's copy (delivered as the rest is). */
  const start = (id: number): { node: Node; attached: Promise<void> } => {
    const up: ToPrimary[] = []
    let receive: (m: unknown) => void = () => undefined
    const link = new WorkerLink({ send: (m) => void up.push(m), onMessage: (fn) => { receive = fn } })
    const sessions = new SessionTable({ maxEntries: 100, idleTimeout: 600_000, absoluteTimeout: null, sink: link.bindings.sink() })
    const records = new SessionRecords({ maxEntries: 100, idleTimeout: 600_000, secret: null, pins: sessions.table })
    const node: Node = { id, attached: false, link, sessions, up, down: [], deliver: (m) => receive(m) }
    nodes.push(node)
    const attached = link.attach({ sessions, records, applyProbe: () => undefined, becomeLead: () => undefined, discovered: () => undefined, probeSoon: () => undefined, now: () => NOW, metrics: () => Promise.resolve([]) })
      .then(() => { node.attached = true })
    return { node, attached }
  }
  /** Let the links send what they batched this turn (writes go out on setImmediate, re-sends after a microtask). */
  const turn = (): Promise<void> => new Promise((r) => setImmediate(r))
  /** The hub receives the next message of `w`. */
  const toHub = (w: Node): boolean => {
    const m = w.up.shift()
    if (m === undefined) return false
    hub.receive(w.id, m)
    return true
  }
  /** `w` receives the next message the hub sent it. */
  const toWorker = (w: Node): boolean => {
    const m = w.down.shift()
    if (m === undefined) return false
    w.deliver(m)
    return true
  }
  /** Deliver everything, re-sends included, until nothing moves. */
  const settle = async (): Promise<void> => {
    for (let rounds = 0; rounds < 1_000; rounds++) {
      await turn()
      let moved = false
      for (const w of nodes) while (toHub(w)) moved = true
      for (const w of nodes) while (toWorker(w)) moved = true
      await turn()
      if (!moved && nodes.every((w) => w.up.length === 0 && w.down.length === 0)) return
    }
    throw new Error('messages still moving after 1,000 rounds')
  }
  for (let id = 1; id <= n; id++) {
    const { attached } = start(id)
    await settle()
    await attached
  }
  /** Users whose binding or rotation grace differs between workers. */
  const disagreements = (keys: readonly string[]): string[] => keys.filter((k) => {
    const seen = new Set(nodes.map((w) => {
      const b = w.sessions.peek(k, NOW)
      const g = w.sessions.rotated(k, NOW)
      return JSON.stringify([b === null ? null : [b.upstream, b.epoch], g === null ? null : [g.upstream, g.epoch]])
    }))
    return seen.size > 1
  })
  /**
   * Worker `id` dies (SIGKILL): the primary reads the first `read` of the messages it had sent,
   * then its exit (a copy it was sending is asked of another sibling).
   */
  const kill = (id: number, read: number): void => {
    const at = nodes.findIndex((w) => w.id === id)
    const w = nodes[at]!
    for (let i = 0; i < read && toHub(w); i++);
    nodes.splice(at, 1)
    hub.gone(id)
  }
  return { nodes, stats, start, kill, turn, toHub, toWorker, settle, disagreements }
}

t.test("an unpin crossing another worker's renewal in the primary: every worker ends the same, in either order", async (t) => {
  for (const unpinFirst of [true, false]) {
    const m = await mesh()
    const [a, b] = m.nodes as [Node, Node, Node]
    a.sessions.pin('k', 'app-1', 0, NOW)
    await m.settle()
    // a renews its binding (a sync period's first use) while b unpins the user (its cookie was deleted)
    a.sessions.sync('k', null, NOW)
    b.sessions.unpin('k')
    await m.turn()
    if (unpinFirst) { m.toHub(b); m.toHub(a) } else { m.toHub(a); m.toHub(b) }
    await m.settle()
    t.same(m.disagreements(['k']), [], `${unpinFirst ? 'unpin' : 'renewal'} ordered first: one binding on every worker`)
    t.equal(m.nodes[2]!.sessions.peek('k', NOW) === null, !unpinFirst, unpinFirst ? 'the renewal, ordered last, stands' : 'the unpin, ordered last, stands')
  }
})

t.test("a binding told again (a worker placed the user afresh) crossing another worker's unpin: every worker ends the same", async (t) => {
  const m = await mesh()
  const [a, b, c] = m.nodes as [Node, Node, Node]
  a.sessions.pin('k', 'app-1', 0, NOW)
  await m.settle()
  a.sessions.pin('k', 'app-2', 1, NOW) // a move
  await m.settle()
  // c lost the binding (evicted for room) and places the user afresh at epoch 0
  c.sessions.table.delete('k')
  c.sessions.pin('k', 'app-0', 0, NOW)
  await m.turn()
  m.toHub(c)
  m.toWorker(a) // a refuses the stale pin and tells app-2 again...
  await m.turn()
  await m.turn()
  b.sessions.unpin('k') // ...while b unpins the user, before a's binding reaches it
  await m.turn()
  m.toHub(b)
  await m.settle()
  t.same(m.disagreements(['k']), [], 'one binding (or none) on every worker')
})

/**
 * `runs` seeded runs of `steps` random steps over `workers` workers (and, with `starting`, one
 * more that starts at a random step and copies a sibling meanwhile; with `dying`, the sibling
 * it copies dies at a later random step); the runs whose workers disagree once every message
 * is delivered.
 */
async function fuzz(t: Test, label: string, o: { workers: number; runs: number; steps: number; starting: boolean; dying?: boolean }): Promise<void> {
  const keys = ['k0', 'k1', 'k2', 'k3']
  const ups = ['app-0', 'app-1', 'app-2']
  let bad = 0
  let steps = 0
  let takenOver = 0
  for (let seed = 1; seed <= o.runs; seed++) {
    // mulberry32: small, and no correlation between successive draws (an LCG's low bits have some)
    let s = (seed * 2_654_435_761 + o.workers) >>> 0
    const rand = (n: number): number => {
      s = (s + 0x6d2b79f5) >>> 0
      let z = Math.imul(s ^ (s >>> 15), s | 1)
      z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
      return ((z ^ (z >>> 14)) >>> 0) % n
    }
    const m = await mesh(o.workers)
    const startAt = o.starting ? rand(o.steps / 2) : -1
    const dieAt = o.dying === true ? startAt + 1 + rand(o.steps / 2) : -1
    let started: Promise<void> | null = null
    for (let i = 0; i < o.steps; i++) {
      if (i === startAt) started = m.start(100).attached
      if (i === dieAt) m.kill(1, rand(3)) // the first sibling: the one asked for the copy
      const w = m.nodes[rand(m.nodes.length)]!
      const k = keys[rand(keys.length)]!
      const op = rand(10)
      if (!w.attached && op < 6) continue // a starting worker serves no request yet
      steps++
      switch (op) {
        case 0: { // a placement, or a move of a user held here (the router's epochs)
          const held = w.sessions.peek(k, NOW)
          w.sessions.pin(k, ups[rand(3)]!, held === null ? 0 : held.epoch + 1, NOW)
          break
        }
        case 1: w.sessions.unpin(k); break
        case 2: w.sessions.retire(k, rand(2) === 0 ? null : { upstream: ups[rand(3)]!, epoch: rand(3) }, NOW); break
        case 3: w.sessions.sync(k, null, NOW); break // a renewal, when held here
        case 4: // lost for room, told nobody, and placed afresh at the user's next request here
          w.sessions.table.delete(k)
          w.sessions.pin(k, ups[rand(3)]!, 0, NOW)
          break
        case 5: { // an answer decided before a move it did not see: pinned at an epoch up to the one held
          const held = w.sessions.peek(k, NOW)
          w.sessions.pin(k, ups[rand(3)]!, held === null ? 0 : rand(held.epoch + 1), NOW)
          break
        }
        case 6: await m.turn(); break
        case 7: m.toHub(w); break
        default: m.toWorker(w)
      }
    }
    await m.settle()
    await started
    if (m.stats.dumping > o.workers - 1 + 1) takenOver++
    const off = m.disagreements(keys)
    if (off.length > 0) {
      bad++
      if (bad <= 3) t.comment(`${label}, seed ${seed}: ${off.join(', ')} differ`)
    }
  }
  const over = o.dying === true ? ` (in ${takenOver} a copy cut short and taken over)` : ''
  t.comment(`write order fuzz, ${label}: ${o.runs} runs${over}, ${steps} steps, ${bad} runs with workers that disagree`)
  t.equal(bad, 0, `${label}: every run converges`)
}

const RUNS = Number(process.env.WRITE_ORDER_RUNS ?? 200)
t.test('fuzz: pins, moves, unpins, rotations, renewals, lost bindings and stale answers crossing in the primary converge on every worker', async (t) => {
  await fuzz(t, '3 workers', { workers: 3, runs: RUNS, steps: 60, starting: false })
  await fuzz(t, '5 workers', { workers: 5, runs: RUNS / 2, steps: 100, starting: false })
  await fuzz(t, '3 workers and one that starts meanwhile', { workers: 3, runs: RUNS, steps: 100, starting: true })
  await fuzz(t, '3 workers, one that starts, and the sibling it copies dies', { workers: 3, runs: RUNS, steps: 100, starting: true, dying: true })
})

t.test("a worker's own later decision about a user stands on it while the primary acknowledges an earlier one", async (t) => {
  const m = await mesh()
  const [a] = m.nodes as [Node, Node, Node]
  a.sessions.pin('k', 'app-1', 0, NOW)
  await m.turn()
  a.sessions.unpin('k') // the next turn: a second message
  await m.turn()
  m.toHub(a)
  m.toWorker(a) // the pin's ack
  t.equal(a.sessions.peek('k', NOW), null, 'unpinned here still (the unpin is not acknowledged yet)')
  await m.settle()
  t.same(m.disagreements(['k']), [], 'and unpinned on every worker in the end')
  t.equal(m.nodes[1]!.sessions.peek('k', NOW), null)
  a.sessions.pin('k3', 'app-2', 0, NOW)
  await m.settle()
  a.sessions.unpin('k3')
  await m.turn()
  a.sessions.pin('k3', 'app-1', 0, NOW)
  await m.turn()
  m.toHub(a)
  m.toWorker(a) // the unpin's ack
  t.match(a.sessions.peek('k3', NOW), { upstream: 'app-1' }, 'a pin made after an unpin stands here at the unpin\'s ack')
  await m.settle()
  t.same(m.disagreements(['k3']), [], 'the same on every worker in the end')
  // a move, then an unpin and a placement afresh (a lower epoch) in the next turn: at the
  // move's ack the placement stands, not the move
  a.sessions.pin('k4', 'app-2', 1, NOW)
  await m.turn()
  a.sessions.unpin('k4')
  a.sessions.pin('k4', 'app-1', 0, NOW)
  await m.turn()
  m.toHub(a)
  m.toWorker(a) // the move's ack
  t.match(a.sessions.peek('k4', NOW), { upstream: 'app-1', epoch: 0 }, 'the placement made after the unpin stands here at the move\'s ack')
  await m.settle()
  t.same(m.disagreements(['k4']), [], 'the same on every worker in the end')
  t.match(m.nodes[2]!.sessions.peek('k4', NOW), { upstream: 'app-1', epoch: 0 })
})

t.test("another worker's move that reaches a worker between its own writes about that user stands there through their acks", async (t) => {
  const m = await mesh()
  const [a, b] = m.nodes as [Node, Node, Node]
  a.sessions.pin('k', 'app-1', 0, NOW)
  await m.settle()
  // b moves the user (a drain's migration, say), and the primary takes that first
  b.sessions.pin('k', 'app-2', 1, NOW)
  await m.turn()
  m.toHub(b)
  // a, before the move reaches it, writes about the user in two turns: two answers decided
  // before the move
  a.sessions.pin('k', 'app-1', 0, NOW)
  await m.turn()
  a.sessions.pin('k', 'app-0', 0, NOW)
  await m.turn()
  m.toHub(a)
  m.toHub(a)
  t.same(a.down.map((x) => x.tether), ['written', 'ack', 'ack'], 'the move, then its two acks')
  m.toWorker(a)
  t.match(a.sessions.peek('k', NOW), { upstream: 'app-2', epoch: 1 }, 'the move is applied')
  m.toWorker(a)
  t.match(a.sessions.peek('k', NOW), { upstream: 'app-2', epoch: 1 }, 'and stands at the first ack')
  m.toWorker(a)
  t.match(a.sessions.peek('k', NOW), { upstream: 'app-2', epoch: 1 }, 'and at the last')
  await m.settle()
  t.same(m.disagreements(['k']), [], 'the same on every worker in the end')
})

t.test('a worker that lost a binding and placed the user afresh elsewhere at the same epoch (an upstream added since) takes the binding the others hold', async (t) => {
  const m = await mesh()
  const [a, b] = m.nodes as [Node, Node, Node]
  a.sessions.pin('k', 'app-0', 0, NOW)
  await m.settle()
  // app-1 was added; b lost the binding for room and the hash now places the user on app-1
  b.sessions.table.delete('k')
  b.sessions.pin('k', 'app-1', 0, NOW)
  await m.settle()
  t.same(m.disagreements(['k']), [], 'one binding on every worker')
  t.match(b.sessions.peek('k', NOW), { upstream: 'app-0', epoch: 0 }, 'the one the others hold')
})

t.test('two workers that place a new user at once on different upstreams agree, and the one whose pin wins tells it once', async (t) => {
  const m = await mesh()
  const [a, b] = m.nodes as [Node, Node, Node]
  const writes = (w: Node): number => w.up.filter((x) => x.tether === 'writes').length
  a.sessions.pin('k', 'app-1', 0, NOW)
  b.sessions.pin('k', 'app-2', 0, NOW)
  await m.turn()
  m.toHub(b) // the primary takes b's first: a refuses it (the smaller id stays) before its own ack
  m.toHub(a)
  m.toWorker(a)
  await m.turn()
  await m.turn()
  t.equal(writes(a), 0, 'a tells nothing again: its own pin, relayed after, tells it')
  await m.settle()
  t.same(m.disagreements(['k']), [], 'one binding on every worker')
  t.match(b.sessions.peek('k', NOW), { upstream: 'app-1', epoch: 0 })
})
