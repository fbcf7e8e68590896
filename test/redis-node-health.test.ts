// The per-node health verdict of the Redis connection, table-driven on a given time line: the
// 5 s outcome window, when a node turns failing (a timed streak, or half of its calls), when it
// recovers, the summary people read, and slot ranges. Pure: no Redis, no timers.
import t from 'tap'
import { REFUSED_QUIET_MS, NODE_MIN_FAILURES, NODE_STREAK_MS, NodeHealth, OutcomeWindow, slotRanges } from '../src/redis/node-health.js'

/** A reachable shard node fed `outcomes` ('+' ok, '-' failed) one every `stepMs` from `start`. */
function fed(outcomes: string, stepMs: number, start = 0): { node: NodeHealth; now: number } {
  const node = new NodeHealth('127.0.0.1:7001', 'shard')
  node.slots = '0-5460'
  node.connected()
  let now = start
  for (const c of outcomes) {
    node.record(c === '+', now, c === '-' ? 'no reply within 50 ms' : undefined)
    now += stepMs
  }
  return { node, now: now - stepMs }
}

t.test('the window counts the last 5 s in 1 s buckets and forgets older outcomes', async (t) => {
  const w = new OutcomeWindow()
  w.record(true, 0)
  w.record(false, 1_200)
  w.record(false, 4_900)
  t.equal(w.calls(4_900), 3)
  t.equal(w.failed(4_900), 2)
  t.equal(w.calls(5_100), 2, 'the bucket of t=0 left the window')
  t.equal(w.failed(6_100), 1, 'the failure at 1.2 s left with its bucket')
  t.equal(w.calls(60_000), 0, 'a long silence empties it')
  w.record(true, 59_000)
  t.equal(w.calls(60_000), 1, 'a time that went backwards counts in the current bucket')
})

t.test('a node turns failing on a streak of failures that lasts, not on a burst at one instant', async (t) => {
  const cases: [string, string, number, boolean][] = [
    ['5 failures in a row over 400 ms after 200 successes', '+'.repeat(200) + '-----', 100, true],
    ['5 failures at one instant (an event-loop stall) after 200 successes', '+'.repeat(200) + '-----', 0, false],
    ['4 failures in a row over a second', '+'.repeat(200) + '----', 300, false],
    ['failures broken by successes, under half', '+-+-++-++-++-++'.repeat(4), 10, false],
  ]
  for (const [name, outcomes, step, failing] of cases) {
    const { node } = fed(outcomes, step)
    t.equal(node.failing, failing, name)
  }
  t.equal(NODE_MIN_FAILURES, 5)
  t.equal(NODE_STREAK_MS, 250)
})

t.test('a node turns failing when at least 5 and at least half of its calls in 5 s failed, even without a streak', async (t) => {
  t.equal(fed('+-+-+-+-+-', 10).node.failing, true, '5 of 10, alternating')
  t.equal(fed('+-+-+-+-', 10).node.failing, false, '4 of 8: too few')
  t.equal(fed('++-++-++-++-++-', 10).node.failing, false, '5 of 15: under half')
})

t.test('a failing node recovers on a success once under a quarter of the window failed, or fewer than 5', async (t) => {
  const { node, now } = fed('+-+-+-+-+-', 10) // 5 of 10 failed
  t.equal(node.status, 'down')
  let at = now
  for (let i = 0; i < 10; i++) node.record(true, (at += 10))
  t.equal(node.status, 'down', '5 of 20 failed: still a quarter')
  node.record(true, (at += 10))
  t.equal(node.status, 'up', '5 of 21 failed: under a quarter')

  const dead = fed('-'.repeat(30), 100).node // 3 s of failures only
  dead.record(true, 3_100)
  t.equal(dead.status, 'down', 'one success after 30 failures is not enough')
  dead.record(true, 9_000)
  t.equal(dead.status, 'up', 'once the failures have left the window, a success brings it up')
  t.equal(dead.streak, 0)
})

t.test('a node is down while unreachable whatever its calls say, and a reconnect forgets old outcomes', async (t) => {
  const node = new NodeHealth('127.0.0.1:6379', 'standalone')
  t.equal(node.status, 'down', 'not reachable before the first connect')
  node.connected()
  t.equal(node.status, 'up')
  node.reachable = false
  node.noteError('connect ECONNREFUSED 127.0.0.1:6379', 1_000)
  t.equal(node.status, 'down')
  t.equal(node.snapshot(1_000).summary, 'redis 127.0.0.1:6379 unreachable: connect ECONNREFUSED 127.0.0.1:6379')
  for (let i = 0; i < 10; i++) node.record(false, 1_000 + i * 100, "Stream isn't writeable")
  t.equal(node.snapshot(5_000).lastError, 'connect ECONNREFUSED 127.0.0.1:6379', 'while unreachable, the connection\'s error, however old, over the calls it failed')
  node.connected()
  t.same([node.status, node.snapshot(2_100).calls], ['up', 0], 'outcomes from before the reconnect are gone')
})

t.test('the summary names the node, its slots and what its calls did', async (t) => {
  const { node, now } = fed('+'.repeat(8) + '-'.repeat(12), 50)
  t.same(node.snapshot(now), {
    address: '127.0.0.1:7001', role: 'shard', slots: '0-5460', status: 'down', calls: 20, failed: 12,
    lastError: 'no reply within 50 ms', writesRefused: null, writesRefusedError: null, full: false,
    summary: 'redis shard 127.0.0.1:7001 (slots 0-5460) failing: 12 of 20 calls in the last 5 s failed, the last 12 in a row (last error: no reply within 50 ms)',
  })
  t.ok(Object.isFrozen(node.snapshot(now)))
  node.noteError('connect ECONNREFUSED 127.0.0.1:7001', now)
  t.equal(node.snapshot(now).lastError, 'connect ECONNREFUSED 127.0.0.1:7001', 'a recent connection error says more than a timeout')
  t.equal(node.snapshot(now + 1_500).lastError, 'no reply within 50 ms', 'one over a second old gives way to the last failed call')
  const up = fed('+++', 10)
  t.equal(up.node.snapshot(up.now).summary, 'redis shard 127.0.0.1:7001 (slots 0-5460) up: 0 of 3 calls in the last 5 s failed')
  t.equal(new NodeHealth('mymaster', 'sentinel').snapshot(0).summary, 'redis master mymaster (Sentinel) unreachable: not connected')
  t.equal(new NodeHealth('10.0.0.1:7000', 'seed').snapshot(0).summary, 'redis seed node 10.0.0.1:7000 unreachable: not connected')
})

t.test('slot ranges list each owner\'s runs of slots', async (t) => {
  t.same([...slotRanges(['a', 'a', 'b', undefined, 'a'])], [['a', '0-1,4'], ['b', '2']])
  t.same([...slotRanges([])], [])
  const owners = Array.from({ length: 16384 }, (_, i) => (i <= 5460 ? 'x:1' : i <= 10922 ? 'y:2' : 'z:3'))
  t.same([...slotRanges(owners)], [['x:1', '0-5460'], ['y:2', '5461-10922'], ['z:3', '10923-16383']])
})

t.test('OOM replies are answers: a node that refuses every write for want of memory stays up, is full, and has room again only when asked', async (t) => {
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  const node = new NodeHealth('127.0.0.1:6379', 'standalone')
  node.connected()
  for (let i = 0; i <= 50; i++) node.refusedWrites('oom', oom, i * 20) // 51 refusals over a second, the last at 1000
  t.match(node.snapshot(1_000), { status: 'up', full: true, failed: 0, calls: 51, lastError: oom })
  t.equal(node.snapshot(1_000).summary, `redis 127.0.0.1:6379 full: it refuses writes (${oom})`)
  node.writesProbed('unknown', 1_000 + REFUSED_QUIET_MS - 1)
  t.equal(node.full, true, 'a probe that tells nothing (Redis < 7) ends it only after REFUSED_QUIET_MS without an OOM')
  node.writesProbed('oom', 2_000, oom)
  node.writesProbed('unknown', 2_000 + REFUSED_QUIET_MS - 1)
  t.equal(node.full, true, 'an OOM to the probe starts that wait again')
  node.writesProbed('unknown', 2_000 + REFUSED_QUIET_MS)
  t.equal(node.full, false)
  node.refusedWrites('oom', oom, 10_000)
  node.writesProbed('taken', 10_001)
  t.equal(node.full, false, 'a probe the node ran: room at once')
})

t.test('MISCONF and NOREPLICAS replies are answers too: the node stays up, refuses writes for that reason (told with what to do), the reason follows the refusals', async (t) => {
  const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
  const node = new NodeHealth('127.0.0.1:6379', 'standalone')
  node.connected()
  for (let i = 0; i <= 50; i++) node.refusedWrites('misconf', misconf, i * 20)
  t.match(node.snapshot(1_000), { status: 'up', writesRefused: 'misconf', full: false, failed: 0, calls: 51, lastError: misconf })
  t.equal(node.snapshot(1_000).summary, 'redis 127.0.0.1:6379 refuses writes (MISCONF: the last RDB save failed; fix the disk (free space, the permissions of its dir: see its log) or set stop-writes-on-bgsave-error no)')
  // (the probe finds another reason once MISCONF was not seen for REFUSED_QUIET_MS: while both are
  // seen, MISCONF, the one that refuses more, is told; see the test below)
  const later = 1_000 + REFUSED_QUIET_MS
  node.writesProbed('noreplicas', later, 'NOREPLICAS Not enough good replicas to write.')
  t.match(node.snapshot(later), { writesRefused: 'noreplicas', summary: /refuses writes \(NOREPLICAS: .*min-replicas-to-write\)$/ }, 'the probe found another reason')
  node.writesProbed('unknown', later + REFUSED_QUIET_MS - 1)
  t.equal(node.writesRefused, 'noreplicas', 'a probe that tells nothing ends it only after REFUSED_QUIET_MS')
  node.writesProbed('taken', later + 1 + REFUSED_QUIET_MS)
  t.match(node.snapshot(later + 1 + REFUSED_QUIET_MS), { writesRefused: null, full: false, summary: /up: / })
})

t.test('a node that refuses writes for several reasons at once is told by the one that refuses more, until it is not seen for REFUSED_QUIET_MS', (t) => {
  const node = new NodeHealth('127.0.0.1:6379', 'standalone')
  node.reachable = true
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
  // full and MISCONF: puts (scripts) get MISCONF, the writes probe gets OOM, at every turn
  for (let now = 0; now < 3_000; now += 250) {
    node.refusedWrites('misconf', misconf, now)
    t.equal(node.writesRefused, 'misconf')
    node.writesProbed('oom', now + 100, oom)
    t.equal(node.writesRefused, 'misconf', 'an OOM meanwhile does not hide the MISCONF (it refuses renewals too)')
  }
  t.match(node.snapshot(3_000).summary, /refuses writes \(MISCONF: the last RDB save failed/)
  t.equal(node.full, false)
  // the disk fixed: only OOM is seen from then on
  node.writesProbed('oom', 2_750 + REFUSED_QUIET_MS - 1, oom)
  t.equal(node.writesRefused, 'misconf', 'MISCONF held until not seen for REFUSED_QUIET_MS')
  node.writesProbed('oom', 2_750 + REFUSED_QUIET_MS, oom)
  t.equal(node.writesRefused, 'oom', 'then the node is full only')
  t.equal(node.full, true)
  t.match(node.snapshot(9_000).summary, /full: it refuses writes \(OOM command/)
  node.refusedWrites('noreplicas', 'NOREPLICAS Not enough good replicas to write.', 9_000)
  node.refusedWrites('misconf', misconf, 9_001)
  t.equal(node.writesRefused, 'misconf', 'MISCONF outranks NOREPLICAS')
  node.writesProbed('taken', 9_002)
  t.equal(node.writesRefused, null, 'a taken write ends every reason')
  node.refusedWrites('oom', oom, 9_003)
  t.equal(node.writesRefused, 'oom', 'none of the earlier reasons comes back with a new spell')
  t.end()
})

t.test('the reply told with a reason is that reason\'s, not the last call\'s (full and MISCONF: the other reason\'s)', (t) => {
  const node = new NodeHealth('127.0.0.1:6379', 'standalone')
  node.connected()
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
  node.refusedWrites('misconf', misconf, 0)
  node.refusedWrites('oom', oom, 100)
  t.match(node.snapshot(100), { writesRefused: 'misconf', lastError: oom, writesRefusedError: misconf }, 'the last call got OOM; MISCONF is told with its own reply')
  node.writesProbed('oom', REFUSED_QUIET_MS, oom)
  node.refusedWrites('misconf', misconf, REFUSED_QUIET_MS + 1)
  node.writesProbed('oom', 2 * REFUSED_QUIET_MS + 1, oom)
  t.match(node.snapshot(2 * REFUSED_QUIET_MS + 1), { writesRefused: 'oom', lastError: misconf, writesRefusedError: oom }, 'full only, told with the OOM reply although the last call got MISCONF')
  node.writesProbed('taken', 2 * REFUSED_QUIET_MS + 2)
  t.equal(node.snapshot(2 * REFUSED_QUIET_MS + 2).writesRefusedError, null, 'none while writes are taken')
  t.end()
})

t.test('the renewals probe (a PEXPIRE, which a full node takes) keeps a full node\'s MISCONF seen, and ends it at once when taken', (t) => {
  const node = new NodeHealth('127.0.0.1:6379', 'standalone')
  node.connected()
  const oom = "OOM command not allowed when used memory > 'maxmemory'."
  const misconf = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk."
  node.refusedWrites('misconf', misconf, 0)
  // no traffic: every 500 ms the script gets OOM, the PEXPIRE MISCONF
  for (let now = 500; now <= 3 * REFUSED_QUIET_MS; now += 500) {
    node.writesProbed('oom', now, oom)
    node.renewalsProbed('misconf', now, misconf)
  }
  t.match(node.snapshot(3 * REFUSED_QUIET_MS), { writesRefused: 'misconf', writesRefusedError: misconf }, 'MISCONF stays past REFUSED_QUIET_MS')
  // the disk fixed: the PEXPIRE is taken (0), the script still OOM
  node.writesProbed('oom', 3 * REFUSED_QUIET_MS + 500, oom)
  node.renewalsProbed('taken', 3 * REFUSED_QUIET_MS + 500)
  t.match(node.snapshot(3 * REFUSED_QUIET_MS + 500), { writesRefused: 'oom', full: true, writesRefusedError: oom }, 'full only, at once')
  node.renewalsProbed('unknown', 3 * REFUSED_QUIET_MS + 600, 'NOPERM No permissions to access a key')
  t.equal(node.writesRefused, 'oom', 'a reply that tells nothing changes nothing')
  node.renewalsProbed('taken', 3 * REFUSED_QUIET_MS + 700)
  t.equal(node.writesRefused, 'oom', 'a taken PEXPIRE does not end OOM (a full node takes it)')
  node.refusedWrites('noreplicas', 'NOREPLICAS Not enough good replicas to write.', 3 * REFUSED_QUIET_MS + 800)
  node.renewalsProbed('taken', 3 * REFUSED_QUIET_MS + 900)
  t.equal(node.writesRefused, 'oom', 'nor NOREPLICAS survives one')
  t.end()
})
