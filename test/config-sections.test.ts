// Sections and keys YAML writes in ways the validator must read kindly: a section whose keys are
// all commented out (YAML null) takes its defaults, a merge key `<<:` is said to be unsupported
// (not an unknown key), and the example errors in docs/configuration.md are the real ones.
import t from 'tap'
import { FILE, issuesOf, yaml } from './fixtures/config-issues.js'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { DEFAULTS, parseConfig } from '../src/config/index.js'
import { ROOT } from './fixtures/cli.js'

const UPSTREAMS = ['upstreams:', '  - { id: a, url: "http://127.0.0.1:9001" }']


t.test('a section with every key commented out takes its defaults', async (t) => {
  const c = parseConfig(yaml(
    ...UPSTREAMS,
    'health:',
    '  # active:',
    '  #   path: /healthz',
    'affinity:',
    '  cookie:',
    '    # secret: ${TETHER_SECRET}',
    'timeouts:',
    'state:',
    '  redis:',
  ), FILE)
  t.strictSame(c.health, DEFAULTS.health)
  t.strictSame(c.affinity.cookie, DEFAULTS.affinity.cookie)
  t.strictSame(c.timeouts, DEFAULTS.timeouts)
  t.strictSame(c.state, DEFAULTS.state)
  const off = parseConfig(yaml(...UPSTREAMS, 'listen:', '  tls:', 'affinity:', '  spill:'), FILE)
  t.equal(off.listen.tls, null, 'a map-or-null section left empty is null (off)')
  t.equal(off.affinity.spill, null)
  t.strictSame(issuesOf(yaml(...UPSTREAMS, 'health: 3')), [`${FILE}:3:9 health: expected a map, got 3`], 'other scalars are still errors')
})

t.test('a YAML merge key is said to be unsupported, at its line', async (t) => {
  const text = yaml(
    ...UPSTREAMS,
    'x-timeouts: &defaults { connect: 2s }',
    'timeouts:',
    '  <<: *defaults',
    '  response_headers: 30s',
  )
  const issues = issuesOf(text)
  t.equal(issues.length, 2)
  t.equal(issues[1], `${FILE}:5:3 timeouts.<<: merge keys (<<: *anchor) are not supported (YAML 1.2): write the keys out, or use an anchor for a whole value`)
  t.match(issues[0], /^proxy\.yaml:3:1 x-timeouts: unknown key/)
})

t.test("docs/configuration.md's example errors are what tether check says", async (t) => {
  const doc = readFileSync(join(ROOT, 'docs', 'configuration.md'), 'utf8')
  const shown = /\$ npx tether check proxy\.yaml\n([\s\S]*?)```/.exec(doc)?.[1]?.trimEnd().split('\n')
  t.ok(shown !== undefined && shown.length === 3, 'the example is there')
  const text = yaml(
    'listen: { port: 8080 }',
    'upstreams:',
    '  - { id: a, url: "http://127.0.0.1:9001" }',
    '  - {id: b, url: foo}',
    'timeouts:',
    '  conect: 2s',
    'affinity: {key: cookies}',
  )
  t.strictSame(issuesOf(text), shown)
})
