// Signals held while Tether starts (src/early-signals.ts), driven with process.emit: the first
// stop or a reload is applied once started; a second stop before then exits at once.
import t, { type Test } from 'tap'
import { EarlySignals, type SignalName } from '../src/early-signals.js'

/** Handlers that record what they were called with; and the listeners they add, removed at the end. */
function recorder(t: Test): { calls: string[]; handlers: Record<SignalName, (s: SignalName) => void> } {
  const before = new Map((['SIGTERM', 'SIGINT', 'SIGHUP'] as const).map((n) => [n, process.listeners(n)]))
  t.teardown(() => {
    for (const [n, kept] of before) for (const l of process.listeners(n)) if (!kept.includes(l)) process.removeListener(n, l)
  })
  const calls: string[] = []
  const h = (s: SignalName): void => { calls.push(s) }
  return { calls, handlers: { SIGTERM: h, SIGINT: h, SIGHUP: h } }
}

t.test('held signals are applied at release: a stop wins over reloads; a reload alone is applied once', async (t) => {
  const { calls, handlers } = recorder(t)
  const early = new EarlySignals(() => t.fail('no exit'))
  process.emit('SIGHUP')
  process.emit('SIGINT')
  process.emit('SIGHUP')
  early.release(handlers)
  t.same(calls, ['SIGINT'], 'the stop, once')
  process.emit('SIGHUP')
  t.same(calls, ['SIGINT', 'SIGHUP'], 'then the real handlers run')
  const reloads = recorder(t)
  const again = new EarlySignals(() => t.fail('no exit'))
  process.emit('SIGHUP')
  process.emit('SIGHUP')
  again.release(reloads.handlers)
  t.same(reloads.calls, ['SIGHUP'], 'two reloads held: one reload')
})

t.test('a second stop signal while the start has not ended exits at once', async (t) => {
  const { handlers } = recorder(t)
  const exits: number[] = []
  const early = new EarlySignals((code) => { exits.push(code) })
  process.emit('SIGTERM')
  t.same(exits, [], 'the first is held')
  process.emit('SIGINT')
  t.same(exits, [1], 'the second ends the process (exit 1)')
  early.release(handlers)
})

t.test('a signal caught just before release, not yet dispatched, reaches the real handler', async (t) => {
  // process.kill to itself runs libuv's handler at once (it queues the signal for the event
  // loop); release() runs before the loop turns. A SIGHUP sent after release comes through the
  // same queue, so once its handler ran, the SIGTERM before it was dispatched, or dropped.
  const { calls, handlers } = recorder(t)
  const heard = new Promise<void>((resolve) => {
    handlers.SIGHUP = (s) => { calls.push(s); resolve() }
  })
  // as in tether's own process, the holding listeners are the only ones (tap has its own, which
  // keep Node's watcher open whatever release does): the others are put back at the end
  const others = (['SIGTERM', 'SIGINT', 'SIGHUP'] as const).map((n) => [n, process.listeners(n)] as const)
  for (const [n, listeners] of others) for (const l of listeners) process.removeListener(n, l)
  t.teardown(() => { for (const [n, listeners] of others) for (const l of listeners) process.on(n, l) })
  // signal watchers are unref'd: this handle keeps the loop turning until the SIGHUP comes
  const alive = setInterval(() => undefined, 60_000)
  t.teardown(() => clearInterval(alive))
  const early = new EarlySignals(() => t.fail('no exit'))
  process.kill(process.pid, 'SIGTERM')
  early.release(handlers)
  process.kill(process.pid, 'SIGHUP')
  await heard
  t.same(calls, ['SIGTERM', 'SIGHUP'], 'the SIGTERM caught before release is handled, then the SIGHUP')
})

t.test('let go (a command that is no server): a held signal ends the process now, a later one when it comes, by the signal itself', async (t) => {
  recorder(t) // (the listeners left are removed at the end)
  const raised: string[] = []
  const listeners = (): number => (['SIGTERM', 'SIGINT', 'SIGHUP'] as const).reduce((n, s) => n + process.listenerCount(s), 0)
  const before = listeners()
  const held = new EarlySignals(() => t.fail('no exit'), (s) => { raised.push(s) })
  process.emit('SIGHUP')
  process.emit('SIGTERM')
  void held.letGo()
  t.same(raised, ['SIGTERM'], 'the stop held is sent again (not the reload before it)')
  t.equal(listeners(), before, 'without the holding listeners: Node\'s default applies to it')
  const quiet = new EarlySignals(() => t.fail('no exit'), (s) => { raised.push(s) })
  const gone = quiet.letGo()
  t.same(raised, ['SIGTERM'], 'nothing held: nothing sent')
  process.emit('SIGHUP')
  t.same(raised, ['SIGTERM', 'SIGHUP'], 'a signal dispatched after letGo is sent again, without the listeners')
  t.equal(listeners(), before, 'which are gone')
  await gone
  const idle = new EarlySignals(() => t.fail('no exit'), (s) => { raised.push(s) })
  const idleGone = idle.letGo()
  t.ok(listeners() > before, 'nothing came: the holders stay for a turn of the event loop (a signal caught, not yet dispatched)')
  await idleGone
  t.equal(listeners(), before, 'then go, before the command runs (check - blocks reading stdin: Node\'s default must apply)')
  t.same(raised, ['SIGTERM', 'SIGHUP'], 'nothing sent')
})
