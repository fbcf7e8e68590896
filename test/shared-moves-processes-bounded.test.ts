// test/shared-moves-processes.test.ts with `affinity.balance_factor: 1`, the two Tethers' load
// views made to differ (some users only ever reach one Tether, which counts them; the other
// does not): a new user's placement follows the local load, so a move that did too could send
// one user of the SIGKILLed app to two upstreams. A forced move takes the next upstream in the
// key's hash order instead (never by load), so both Tethers agree, also when they decide the
// move at the same instant.
import t from 'tap'
import { sharedMovesScenario } from './fixtures/shared-moves.js'

t.test('balance_factor 1 and differing load views: every moved user is routed the same by both Tethers', (t) => sharedMovesScenario(t, 1))
