// Discovery of an SRV name with worker processes (`workers: 2`): an SRV target family kept
// while it answers empty goes on being kept by the next lead from the same first empty answer
// (the lead SIGKILLed meanwhile), so its grace is not started again. Split from
// workers-discovery.test.ts.
import t, { type Test } from 'tap'
import { request } from './fixtures/primary-process.js'
import { waitFor } from './fixtures/wait.js'
import { killEachWorker, srvWorkers } from './fixtures/dns-workers.js'

const INTERVAL = 100

/**
 * One run with the kept family's grace (affinity.drain_timeout) `graceMs`. Both workers must be
 * killed and replaced well within the grace for the run to show anything: when that took more
 * than half of it on the test's clock (decided before any assertion on what the new lead did),
 * the run stops without asserting and returns false, and the caller runs again with a longer
 * grace. Kills took 2.7 s on a quiet 2-core machine, 4 to 7 s loaded, 18.8 s once at load 21.
 */
async function run(t: Test, graceMs: number): Promise<boolean> {
  const { appPort, dns, adminPort, publish: publishBoth, start } = await srvWorkers(t, { file: 'workers-discovery-kept-empty.yaml', family: 'any', interval: INTERVAL, extra: [`affinity: { drain_timeout: ${graceMs}ms }`] })
  const publish = (aaaa: string[]): void => publishBoth(['127.0.0.2'], aaaa)
  publish(['fd00::2'])
  const { proc, out: output } = await start()
  const stop = async (): Promise<void> => {
    proc.kill('SIGTERM')
    await waitFor(() => proc.exitCode !== null, 60_000, 'the primary to stop')
  }
  const row = async (): Promise<{ url: string; addresses?: string[] } | undefined> =>
    (JSON.parse((await request(`http://127.0.0.1:${adminPort}/upstreams`, null)).body) as { id: string; url: string; addresses?: string[] }[]).find((u) => u.id === 'web-0')
  const both = [`http://127.0.0.2:${appPort}`, `http://[fd00::2]:${appPort}`]
  await waitFor(async () => (await row())?.addresses?.length === 2, 60_000, 'web-0 at both addresses')
  const notes = (re: RegExp): number => output().split('\n').filter((l) => l.includes('DNS discovery: an empty family of an SRV target') && re.test(l)).length
  const keeping = /AAAA of web-0\.web\.tether\.test answered empty while its A is unchanged: keeping its last addresses/

  publish([]) // a stale NODATA for AAAA from here on
  await waitFor(() => notes(keeping) === 1, 60_000, 'the lead to keep AAAA (noted)')
  const keptAt = Date.now()
  await killEachWorker({ proc, out: output }, async () => {
    const from = dns.queries
    await waitFor(() => dns.queries >= from + 9, 60_000, 'three resolutions by the lead after the crash')
  })
  // what the new lead did, read before the clock decides whether the run counts
  const afterKills = { addresses: (await row())?.addresses, kept: notes(keeping) }
  const replacedIn = Date.now() - keptAt
  t.comment(`grace ${graceMs} ms: both workers replaced ${replacedIn} ms after the lead kept AAAA`)
  if (replacedIn > graceMs / 2) {
    t.comment(`more than half the grace: this run shows nothing (the grace may have ended meanwhile); again with a longer one`)
    await stop()
    return false
  }
  t.same(afterKills.addresses, both, 'the new lead keeps AAAA: web-0 still listed at both addresses')
  t.equal(afterKills.kept, 1, 'the new lead noted no family newly kept: it took the time its predecessor kept AAAA since (without it: a second note, and the grace started again)')

  await waitFor(() => notes(/answered empty for \d+ ms: its addresses \(fd00::2\) go/) === 1, graceMs + 60_000, 'AAAA to go after the grace')
  // the test's own clock is no proof under load (only the figure is printed): the note count
  // above is what tells a restarted grace
  t.comment(`AAAA went ${Date.now() - keptAt} ms after the first lead kept it (grace ${graceMs} ms, counted from there)`)
  t.same((await row())?.addresses, undefined, 'web-0 at its A address only')
  t.equal((await row())?.url, `http://127.0.0.2:${appPort}`)
  t.notMatch(output(), /upstreams replaced \(a new address or a new pod\)/, 'no worker took web-0 for a replaced replica')
  await stop()
  return true
}

t.test('with two workers, an SRV target family kept while it answers empty is carried on by the next lead from the same first empty answer (the lead SIGKILLed meanwhile)', async (t) => {
  // a 20 s grace first (the file's time is about the grace); 60 s, as the safety nets, when the
  // kills were too slow for it (a heavily loaded machine)
  for (const graceMs of [20_000, 60_000]) {
    if (await run(t, graceMs)) return
  }
  t.fail('both workers took more than half of even a 60 s grace to be killed and replaced')
})
