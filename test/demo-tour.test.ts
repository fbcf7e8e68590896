// `npm run tour` end to end: the scripted failover story (one user, their replica killed,
// the count continuing elsewhere, the restart, a drain, the stop) checks each step itself
// and exits 0 only when all held; here it runs for real, on free ports, through npm.
import t from 'tap'
import { alive, demoPorts, spawnDemo } from './fixtures/demo-process.js'

t.test('npm run tour shows the failover, the restart and a drain, then stops every process', async (t) => {
  const tour = spawnDemo('npm', ['run', 'tour'], await demoPorts())
  t.teardown(tour.teardown)
  const code = await tour.exited
  const out = tour.lines.join('\n')
  t.equal(code, 0, 'every step held')
  if (code !== 0) t.comment(out)

  t.match(out, /^1\. One user, three visits/m)
  const home = /^2\. Kill (\S+), the user's replica/m.exec(out)?.[1]
  t.ok(home, 'names the replica it kills')
  t.match(out, new RegExp(`^  kill -9 \\d+ {4}\\(GET /pid through Tether answered with ${home}'s pid\\)$`, 'm'))
  t.match(out, new RegExp(`^  \\| \\* ${home} \\(pid \\d+\\) was killed by SIGKILL\\.$`, 'm'), "echoes the demo's event")
  t.match(out, new RegExp(`^  GET /  replica (\\S+) served you; your visit count: 4 \\(moved from ${home}, which is down; count restored\\)$`, 'm'))
  t.match(out, /^ {2}\| \[tether\] GET \/ -> \S+ 200 \S+ \(user moved here; state rehydrated\)$/m)
  t.match(out, new RegExp(`^  \\| \\* ${home} is back \\(pid \\d+\\)`, 'm'))
  t.match(out, /^ {2}GET \/ {2}replica \S+ served you; your visit count: 8$/m, 'the user stayed after the restart')
  t.match(out, /^5\. Drain (\S+): new users avoid it/m)
  t.match(out, /^ {2}six new users went to: /m)
  t.match(out, /^Tour done\./m)

  const pids = /every process is gone \(pids ([\d, ]+)\)/.exec(out)?.[1]?.split(', ').map(Number) ?? []
  t.equal(pids.length, 4, 'the tour lists Tether and the three replicas')
  t.same(pids.filter(alive), [], 'and none of them runs')
})
