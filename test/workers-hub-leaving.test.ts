// The primary's hub keeps, per discovery source, what left its listing and since when, and
// sends it (`leaving`) with the last lists to a worker that starts: the other workers drain
// those upstreams for drain_timeout, so must it; and whatever order a worker gets the lists in,
// it holds what the lead holds. Pure: the hub in this process, a fake now.
import t from 'tap'
import { Hub } from '../src/workers/hub.js'
import type { ToWorker, WireDiscovered } from '../src/workers/messages.js'
import { Membership } from '../src/upstream/membership.js'
import { isReplacement } from '../src/upstream/upstream-set.js'
import { FakeTimers } from './fixtures/timers.js'

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

t.test('an upstream listed terminating: a starting worker gets since when the others drain it (drainingSince), while listed and once it has left', async (t) => {
  const { hub, starting, advance } = setup()
  const terminating = (id: string): WireDiscovered => ({ ...up(id), draining: true })
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), up('b'), up('c')] })
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), terminating('b'), up('c')] }) // the others drain b from now
  advance(2_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), terminating('b'), up('c')] })
  t.same(starting(), [{ tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), { ...terminating('b'), drainingSince: 1_001_000 }, up('c')] }],
    'b, still listed, drains since the list that first said it terminates (not since this start)')
  advance(2_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), up('c')] })
  t.same(starting(), [{ tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), up('c')], leaving: [{ ...terminating('b'), since: 1_005_000, drainingSince: 1_001_000 }] }],
    'b left: removed drain_timeout after it left (since), drained since it began to terminate (drainingSince)')
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), terminating('b'), up('c')] })
  t.same(starting()[0], { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), { ...terminating('b'), drainingSince: 1_001_000 }, up('c')] },
    'listed terminating again while it drains: the same drain goes on (the others never undrained it)')
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), up('b'), up('c')] })
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), terminating('b'), up('c')] })
  t.same(starting()[0], { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), { ...terminating('b'), drainingSince: 1_007_000 }, up('c')] },
    'serving again, then terminating: a new drain, since then')
})

t.test('an upstream terminating in one source and serving in another is not draining (as the workers merge them): no drainingSince', async (t) => {
  const { hub, starting } = setup()
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('b')] })
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [{ ...up('b'), draining: true }] })
  t.same(starting().map((m) => m.tether === 'discovered' ? m.upstreams : null), [[{ ...up('b'), draining: true }], [up('b')]], 'kubernetes first (precedence), then dns')
})

t.test('what left a listing longer than drain_timeout ago is dropped when a worker starts, with no new list since', async (t) => {
  const { hub, starting, advance } = setup()
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a'), up('b')] })
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('c')] })
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [up('a')] })
  advance(DRAIN - 1)
  t.same(starting()[1], { tether: 'discovered', source: 'dns', upstreams: [up('a')], leaving: [{ ...up('b'), since: 1_001_000 }] }, 'b drains 1 ms more')
  advance(1)
  t.same(starting()[1], { tether: 'discovered', source: 'dns', upstreams: [up('a')] }, 'b is no longer given (nor kept)')
  advance(1)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('c'), up('d')] })
  t.same(starting()[1], { tether: 'discovered', source: 'dns', upstreams: [up('a')] }, "another source's list drops it too")
})

t.test('an upstream left one source terminating, then another lists it serving (its drain ends on the workers): terminating there later, a starting worker drains it from then', async (t) => {
  const { hub, starting, advance } = setup()
  const terminating = (id: string): WireDiscovered => ({ ...up(id), draining: true })
  const other: WireDiscovered = { ...up('b'), url: 'http://b.test:9090' } // the same id at another port (the other source's)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a'), terminating('b')] }) // b drains from 1_000_000
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: [up('a')] }) // b leaves, still draining
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [other] }) // listed serving: the workers undrain it
  advance(1_000)
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: [{ ...other, draining: true }] }) // a new drain, from 1_003_000
  t.same(starting(), [
    { tether: 'discovered', source: 'kubernetes', upstreams: [up('a')] },
    { tether: 'discovered', source: 'dns', upstreams: [{ ...other, draining: true, drainingSince: 1_003_000 }] },
  ], "since the new drain began, not the first one's start; b's leaving kubernetes ended when dns listed it (as on the workers)")
})

t.test('a starting worker that gets the lists in another order than the lead applied them holds the same url for an id both sources list', async (t) => {
  const { hub, sent } = setup()
  const membership = (): Membership => new Membership([], DRAIN, { onChange: () => {}, drain: () => {}, undrain: () => {} }, new FakeTimers())
  const apply = (m: Membership, messages: readonly ToWorker[]): void => {
    for (const x of messages) if (x.tether === 'discovered') m.setDiscovered([...x.upstreams, ...(x.unready ?? []).map((u) => ({ ...u, unready: true }))], x.source, [...x.leaving ?? []].map(({ since, ...upstream }) => ({ upstream, since, remaining: DRAIN })))
  }
  const lead = membership()
  const dns: WireDiscovered[] = [{ id: 'web-0', url: 'http://10.0.1.5:8080', weight: 1 }]
  const kube: WireDiscovered[] = [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'u-5' }]
  lead.setDiscovered(dns, 'dns')
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: dns })
  // worker 3 is connecting: the lead's next list reaches it before it asks for its snapshot
  sent.delete(3)
  lead.setDiscovered(kube, 'kubernetes')
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: kube })
  const starting = membership()
  apply(starting, sent.get(3) ?? [])
  sent.delete(3)
  hub.receive(3, { tether: 'call', call: 1, op: 'snapshot', args: [] })
  const snapshot = (sent.get(3) ?? []).filter((m) => m.tether === 'discovered')
  t.same(snapshot.map((m) => m.tether === 'discovered' && m.source), ['kubernetes', 'dns'], "the hub resends the lists in Membership's precedence, not the order they first came")
  apply(starting, snapshot)
  t.same(starting.current().get('web-0'), lead.current().get('web-0'), 'kubernetes then dns here, dns then kubernetes on the lead: the same entry')
  t.equal(starting.current().get('web-0')?.url, 'http://10.0.0.5:8080')
})

t.test('a worker that starts takes the entry the lead holds from the first list on: no url change, so no false replacement, while it applies the lists', async (t) => {
  const { hub, starting } = setup()
  const dns: WireDiscovered[] = [{ id: 'web-0', url: 'http://[fd00::5]:8080', weight: 1 }, up('a')]
  const kube: WireDiscovered[] = [{ id: 'web-0', url: 'http://10.0.0.5:8080', weight: 1, uid: 'u-5' }, up('b')]
  hub.receive(1, { tether: 'discovered', source: 'dns', upstreams: dns }) // DNS answered before the API server
  hub.receive(1, { tether: 'discovered', source: 'kubernetes', upstreams: kube })
  // as app.ts does on each change of the set: an id kept at another url is a replaced replica
  const replaced: string[] = []
  const urls: string[] = []
  let before = new Map<string, { url: string; uid?: string }>()
  const membership = new Membership([], DRAIN, {
    onChange: (set) => {
      for (const u of set.list) { const b = before.get(u.id); if (b !== undefined && isReplacement(b, u)) replaced.push(`${u.id} ${b.url} -> ${u.url}`) }
      before = new Map(set.list.map((u) => [u.id, { url: u.url, ...(u.uid === undefined ? {} : { uid: u.uid }) }]))
      const web0 = set.get('web-0')?.url
      if (web0 !== undefined && urls.at(-1) !== web0) urls.push(web0)
    },
    drain: () => {}, undrain: () => {},
  }, new FakeTimers())
  t.teardown(() => membership.stop())
  for (const m of starting()) if (m.tether === 'discovered') membership.setDiscovered(m.upstreams, m.source)
  t.same(urls, ['http://10.0.0.5:8080'], "web-0 had the pod's url (Kubernetes's entry, as on the lead) from the first list it got")
  t.same(replaced, [], 'nothing taken for a replaced replica (its health reset, `upstreams replaced` logged)')
  t.same(membership.current().ids, ['a', 'b', 'web-0'])
})
