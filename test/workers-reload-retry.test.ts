// With workers, the primary reads the config file and tells the workers (src/workers/primary.ts
// reload): a reload refused because a file the config names is not there yet (a CA in a Secret
// the kubelet updates after the ConfigMap) is offered again by the watch and applied once that
// file is there (the file it names is not watched: the watch offers a refused content again),
// with its refusal logged once, as one process does (test/reload.test.ts). Real processes.
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startPrimary, workersYaml } from './fixtures/primary-process.js'
import { startChildUpstream } from './fixtures/child-upstream.js'
import { makeCertificates } from './fixtures/tls.js'
import { waitFor } from './fixtures/wait.js'

const count = (text: string, what: string): number => text.split(what).length - 1

t.test('a reload refused for a missing CA file is applied by the watch once the file is there; the refusal logged once', async (t) => {
  const app = await startChildUpstream('app-0')
  t.teardown(() => app.kill())
  const [port, adminPort] = await freePorts(2)
  const base = workersYaml({ listen: port!, adminPort: adminPort!, workers: 2, upstreams: [{ id: 'app-0', url: app.url }] })
  const file = tempFile('workers-reload-retry.yaml', base)
  const { out } = await startPrimary(t, file)
  // an upstream whose CA file is not there yet
  // an upstream whose CA file is not there yet: the watch sees the edit and it is refused
  writeFileSync(file, `${base}  - { id: app-1, url: "https://127.0.0.1:9", tls: { ca: ca.pem } }\n`)
  await waitFor(() => out().includes('config reload rejected'), 30_000, 'the reload refused (no ca.pem)')
  writeFileSync(join(dirname(file), 'ca.pem'), makeCertificates().ca) // the Secret's update lands
  await waitFor(() => count(out(), '"config reloaded"') >= 2, 30_000, 'both workers to apply it at the watch\'s next try')
  t.equal(count(out(), 'config reload rejected'), 1, 'the same refusal logged once, whatever the tries')
})
