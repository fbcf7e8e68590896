// A slow upload does not make a healthy upstream look stuck. The watch has an upstream probed at
// once when a request has waited on its answer head longer than the probe timeout, and a probe
// timeout then takes it out at once (two signals agree). A request whose body is still arriving
// from the client is not waiting on the upstream (as `timeouts.response_headers` counts): one
// probe lost during an upload (a short GC pause) must do no more than it does without the upload
// (one failure of unhealthy_threshold 2), and the upload is answered. Real upstreams and a real
// client on loopback; the upstream loses exactly one probe, on cue.
import t from 'tap'
import http from 'node:http'
import { proxyFor, startUpstream, type Handler } from './fixtures/upstream.js'
import { waitFor, within } from './fixtures/wait.js'

t.test('one lost probe while a client uploads slowly to the upstream: it stays healthy and the upload is answered there', async (t) => {
  let loseNext = false
  let lost: http.ServerResponse | null = null
  let probesAfterLoss = 0
  const app = (id: string): Handler => (req, res) => {
    if (req.url === '/healthz') {
      if (id === 'up' && loseNext) { loseNext = false; lost = res; return } // never answered: the probe times out
      if (id === 'up' && lost !== null) probesAfterLoss++
      res.end('ok\n')
      return
    }
    let bytes = 0
    req.on('data', (c: Buffer) => { bytes += c.length })
    req.on('end', () => res.end(`${id} ${bytes}\n`))
  }
  const ups = await Promise.all([startUpstream('up', app('up')), startUpstream('other', app('other'))])
  t.teardown(async () => { lost?.destroy(); await Promise.all(ups.map((u) => u.close())) })
  const tt = await proxyFor(t, ups, {
    affinity: { key: 'header', header: { name: 'X-Tenant' } },
    health: { active: { path: '/healthz', interval: 300, timeout: 200 } },
  })
  // a tenant placed on `up`
  let tenant = ''
  for (let i = 0; tenant === ''; i++) {
    const body = await new Promise<string>((resolve, reject) => {
      http.get(tt.url, { headers: { 'x-tenant': `t${i}` } }, (res) => { let b = ''; res.on('data', (c) => { b += c }); res.on('end', () => resolve(b)) }).on('error', reject)
    })
    if (body.startsWith('up ')) tenant = `t${i}`
  }
  await waitFor(() => tt.health.snapshot().every((e) => e.activeSuccesses > 0), 5_000, 'both upstreams to pass a probe')
  const states: string[] = []
  tt.health.onTransition((e) => { if (e.id === 'up' && e.to !== null) states.push(e.to) })

  // the upload: a chunk every 20 ms, until the lost probe has timed out and a later probe passed
  const req = http.request(tt.url, { method: 'POST', headers: { 'x-tenant': tenant, 'transfer-encoding': 'chunked' } })
  const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
    req.on('response', (res) => { let b = ''; res.on('data', (c) => { b += c }); res.on('end', () => resolve({ status: res.statusCode!, body: b })) })
    req.on('error', reject)
  })
  let sent = 0
  const pump = setInterval(() => { req.write('x'.repeat(100)); sent += 100 }, 20)
  t.teardown(() => clearInterval(pump))
  await waitFor(() => sent >= 1_000, 5_000, 'the upload to be under way for a while (longer than the probe timeout)')
  loseNext = true
  await waitFor(() => lost !== null, 5_000, 'a probe to be lost')
  await waitFor(() => probesAfterLoss >= 1 || states.length > 0, 5_000, 'the next probe after the lost one')
  clearInterval(pump)
  req.end()
  const r = await within(answer, 5_000, 'the upload to be answered')
  t.same(states, [], 'one lost probe did not take the upstream out')
  t.equal(tt.health.state('up'), 'healthy')
  t.same([r.status, r.body.trim()], [200, `up ${sent}`], 'the upload was answered by its upstream, whole')
})
