// Hostile input, framing and smuggling: exact client bytes (lengths, transfer codings, chunk
// syntax, bare CR/LF, obs-fold, control bytes) against Tether in front of a raw upstream that
// records every byte. Each case checks the client's answer AND what the upstream received.
import t from 'tap'
import { FRAMING } from './fixtures/raw-cases.js'
import { caseTest, startHarness, type Harness } from './fixtures/raw-tether.js'

let h: Harness
t.before(async () => { h = await startHarness({ retries: { attempts: 0 } }) })
t.teardown(() => h.close())

for (const c of FRAMING) caseTest(t, () => h, c)

t.test('nothing Tether logged along the way is an unhandled error', async (t) => {
  t.same(h.unhandled(), [])
})
