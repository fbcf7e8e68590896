// The primary's hub keeps, per discovery source, what left its listing and since when, and
// sends it (`leaving`) with the last lists to a worker that starts: the other workers drain
// those upstreams for drain_timeout, so must it. Pure: the hub in this process, a fake now.
import t from 'tap'
import { Hub } from '../src/workers/hub.js'
import type { ToWorker, WireDiscovered } from '../src/workers/messages.js'

const DRAIN = 10_000
const up = (id: string): WireDiscovered => ({ id, url: `http://${id}.test:8080`, weight: 1 })

function setup() {
  const sent = new Map<number, ToWorker[]>()
  let now = 1_000_000
  const hub = new Hub({
    ids: () => [1, 2, 3],
    donor: () => null,
    send: (id, m) => void sent.set(id, [...(sent.get(id) ?? []), m]),
    lead: () => 1,
  }, null, { now: () => now, drainTimeout: () => DRAIN })
  /** What worker 3, starting, is sent as discovery lists when it asks for its snapshot. */
  const starting = (): ToWorker[] => {
    sent.delete(3)
    hub.receive(3, { tether: 'call', call: 1, op: 'snapshot', args: [] })
    return (sent.get(3) ?? []).filter((m) => m.tether === 'discovered')
  }
  return { hub, starting, sent, advance: (ms: number) => { now += ms } }
}

t.test('a starting worker gets what left each listing with since when, until drain_timeout has passed; what is listed again is not leaving', async (t) => {
  const { hub, starting, sent, advance } = setup()
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('b'), up('c')] })
  t.same(starting(), [{ tether: 'discovered', source: 'dns', upstreams: [up('a'), up('b'), up('c')] }], 'nothing left yet: no `leaving` (as an older primary sends)')
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('c')] })
  t.same(sent.get(2)?.at(-1), { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('c')] }, 'the running workers get the list as before (they saw b leave)')
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a')] })
  t.same(starting(), [{ tether: 'discovered', source: 'dns', upstreams: [up('a')], leaving: [{ ...up('b'), since: 1_001_000 }, { ...up('c'), since: 1_002_000 }] }],
    'b and c left, each since the list that lacked it first')
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('c')] })
  t.same(starting()[0], { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('c')], leaving: [{ ...up('b'), since: 1_001_000 }] }, 'c is listed again: no longer leaving')
  advance(DRAIN - 2_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('c')] })
  t.same(starting()[0], { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('c')] }, "b's drain_timeout has passed: forgotten")
})

t.test('two sources: an upstream still listed by one is not leaving; one that left both drains from the later departure (the siblings drain it from then)', async (t) => {
  const { hub, starting, advance } = setup()
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('b')] })
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), up('b')] })
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a')] }) // b left dns; kubernetes lists it: the siblings do not drain it
  const first = starting()
  t.same(first.map((m) => m.tether === 'discovered' ? m.leaving ?? [] : null), [[], []], 'b, still listed by kubernetes, is given as leaving by no source')
  advance(3_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a')] }) // b left the last listing: the siblings drain it from now
  const second = starting()
  t.same(second.flatMap((m) => m.tether === 'discovered' ? m.leaving ?? [] : []), [{ ...up('b'), since: 1_004_000 }],
    'b once, since it left the last source listing it (a starting worker takes the first entry it gets for an id)')
})

t.test("a leaving upstream whose address a listed upstream took is forgotten (the siblings dropped it then), even once that one leaves too", async (t) => {
  const { hub, starting, advance } = setup()
  const at = (id: string, ip: string): WireDiscovered => ({ id, url: `http://${ip}:8080`, weight: 1 })
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1'), at('b', '10.0.0.2')] })
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1')] }) // b drains on the siblings
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1'), at('c', '10.0.0.2')] }) // b's address is c's: the siblings drop b now
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1')] }) // c leaves: 10.0.0.2 is no longer taken
  t.same(starting()[0], { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1')], leaving: [{ ...at('c', '10.0.0.2'), since: 1_003_000 }] },
    'c drains; b, which no sibling has any more, is not given')
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1')], unready: [{ ...at('web-0', '10.0.0.2') }] })
  t.same(starting()[0], { tether: 'discovered', source: 'dns', upstreams: [at('a', '10.0.0.1')], unready: [at('web-0', '10.0.0.2')] },
    "c's address listed for another pod not ready: c's pod is gone (the siblings drop it), forgotten")
})
