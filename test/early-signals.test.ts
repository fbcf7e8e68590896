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
