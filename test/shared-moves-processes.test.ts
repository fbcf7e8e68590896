// Two Tether processes (dist/cli.js) sharing one redis-server (`affinity.shared: redis`,
// `health.shared: redis`, checkpoints in Redis) in front of four counter apps (child processes),
// users keyed by an X-Tenant header and spread over both Tethers, each request on a new
// connection. An app is SIGKILLed; afterwards both Tethers send each of its users to one same
// upstream (never two): a forced move goes to the next upstream in the key's hash order, the
// same on every replica, also for two Tethers that decide it at the same instant. A Tether that
// reads the move back from Redis (`#movedBefore` in src/proxy/request-path.ts) before deciding
// it again does not announce it again. (`state.store: none` cannot share affinity at all:
// `affinity.shared: redis` needs `state.store: redis`, test/config-load.test.ts.) The same with
// `balance_factor`: test/shared-moves-processes-bounded.test.ts.
import t from 'tap'
import { sharedMovesScenario } from './fixtures/shared-moves.js'

t.test('two Tether processes, an upstream SIGKILLed: every moved user is routed the same by both', (t) => sharedMovesScenario(t, null))
