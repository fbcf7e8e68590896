// The in-flight counts per upstream and their time average (what affinity.spill reads), on an
// injected clock: a sustained count shows in full, a short burst barely, and an ended one
// decays with the 1 s time constant; averages of idle upstreams are swept.
import t from 'tap'
import { InFlight, IN_FLIGHT_AVERAGE_MS } from '../src/proxy/in-flight.js'
import type { Attempt } from '../src/proxy/exchange.js'

/** An attempt as InFlight sees it: only its identity and whether it was answered matter here. */
const attempt = (): Attempt => ({ answered: false, stop: () => undefined }) as unknown as Attempt

function counts(): { inFlight: InFlight; advance: (ms: number) => void } {
  let now = 1_000
  return { inFlight: new InFlight(() => now), advance: (ms) => { now += ms } }
}

t.test('a count held for many time constants averages to itself; after it ends, the average decays by e each time constant', async (t) => {
  const { inFlight, advance } = counts()
  const ten = Array.from({ length: 10 }, attempt)
  for (const a of ten) inFlight.add(a, 'app-0')
  inFlight.add(attempt(), 'app-1')
  advance(20 * IN_FLIGHT_AVERAGE_MS)
  t.equal(inFlight.count('app-0'), 10)
  t.ok(Math.abs(inFlight.loadOf('app-0') - 10) < 1e-6, `app-0 averages 10: ${inFlight.loadOf('app-0')}`)
  t.ok(Math.abs(inFlight.totalLoad - 11) < 1e-6, `all average 11: ${inFlight.totalLoad}`)
  for (const a of ten) inFlight.remove(a, 'app-0')
  t.equal(inFlight.count('app-0'), 0)
  advance(IN_FLIGHT_AVERAGE_MS)
  t.ok(Math.abs(inFlight.loadOf('app-0') - 10 / Math.E) < 1e-6, `one time constant later: 10/e = ${inFlight.loadOf('app-0').toFixed(3)}`)
  t.ok(Math.abs(inFlight.totalLoad - (1 + 10 / Math.E)) < 1e-6, 'the total decays the same way')
})

t.test('a burst much shorter than the time constant barely shows', async (t) => {
  const { inFlight, advance } = counts()
  const burst = Array.from({ length: 6 }, attempt)
  for (const a of burst) inFlight.add(a, 'app-0')
  advance(50)
  for (const a of burst) inFlight.remove(a, 'app-0')
  t.ok(inFlight.loadOf('app-0') < 0.3, `6 requests for 50 ms average ${inFlight.loadOf('app-0').toFixed(3)}`)
  t.equal(inFlight.loadOf('nobody'), 0, 'an upstream never used averages 0')
})

t.test('removing an attempt twice, or one never added, changes nothing; sweep forgets only decayed idle averages', async (t) => {
  const { inFlight, advance } = counts()
  const a = attempt()
  inFlight.add(a, 'app-0')
  inFlight.add(a, 'app-0')
  t.equal(inFlight.count('app-0'), 1, 'the same attempt counts once')
  advance(100)
  inFlight.remove(a, 'app-0')
  inFlight.remove(a, 'app-0')
  inFlight.remove(attempt(), 'app-1')
  t.ok(inFlight.totalLoad > 0 && inFlight.totalLoad < 1, `the total counted it once: ${inFlight.totalLoad.toFixed(3)}`)
  const busy = attempt()
  inFlight.add(busy, 'app-2')
  inFlight.sweep()
  t.ok(inFlight.loadOf('app-0') > 0, 'a recent average is kept')
  advance(10 * IN_FLIGHT_AVERAGE_MS)
  inFlight.sweep()
  t.equal(inFlight.loadOf('app-0'), 0, 'a decayed idle average is forgotten')
  t.ok(inFlight.loadOf('app-2') > 0.99, 'an upstream with a request in flight keeps its average')
})
