// Addresses that passed `tether check` and then failed at start (or misbehaved): DNS servers
// that are names or have a port out of range (port 0 aborts Node's resolver), Redis host:port
// with port 0 or above 65535, an upstream URL with port 0 or 70000, and a kubeconfig that cannot
// be read. Each is one line naming the key and its line.
import t from 'tap'
import { FILE, issuesOf, yaml } from './fixtures/config-issues.js'
import { parseConfig } from '../src/config/index.js'
import { runCli, tempFile } from './fixtures/cli.js'



const dns = (server: string): string => yaml('discovery:', '  dns:', '    name: app.local', '    port: 8080', `    servers: [${JSON.stringify(server)}]`)

t.test('discovery.dns.servers: addresses with an optional port 1..65535, never a name', async (t) => {
  for (const ok of ['10.0.0.10', '10.0.0.10:53', '::1', '[::1]', '[fd00::a]:5353', '1.2.3.4:65535']) {
    t.strictSame(parseConfig(dns(ok), FILE).discovery.dns?.servers, [ok], ok)
  }
  const kind = 'an IP address, ip:port or [ipv6]:port (a DNS server is an address, not a name)'
  t.strictSame(issuesOf(dns('not a host')), [`${FILE}:5:15 discovery.dns.servers[0]: expected ${kind}, got "not a host"`])
  t.strictSame(issuesOf(dns('kube-dns.kube-system:53')), [`${FILE}:5:15 discovery.dns.servers[0]: expected ${kind}, got "kube-dns.kube-system:53"`])
  t.strictSame(issuesOf(dns('1.2.3.4:99999')), [`${FILE}:5:15 discovery.dns.servers[0]: expected a port between 1 and 65535, got 99999`])
  t.strictSame(issuesOf(dns('1.2.3.4:0')), [`${FILE}:5:15 discovery.dns.servers[0]: expected a port between 1 and 65535, got 0`])
  t.strictSame(issuesOf(dns('[::1]:0')), [`${FILE}:5:15 discovery.dns.servers[0]: expected a port between 1 and 65535, got 0`])
})

t.test('state.redis.nodes and sentinels: host:port with a port 1..65535', async (t) => {
  const redis = (key: string, item: string): string =>
    yaml('upstreams: [{ id: a, url: "http://127.0.0.1:9001" }]', 'state:', '  store: redis', '  redis:', '    name: mymaster', `    ${key}: [${JSON.stringify(item)}]`)
  t.strictSame(parseConfig(redis('nodes', 'redis-0.redis:6379'), FILE).state.redis.nodes, ['redis-0.redis:6379'])
  t.strictSame(parseConfig(redis('sentinels', '[fd00::1]:26379'), FILE).state.redis.sentinels, ['[fd00::1]:26379'])
  t.strictSame(issuesOf(redis('nodes', 'redis-0:0')), [`${FILE}:6:13 state.redis.nodes[0]: expected a port between 1 and 65535, got 0`])
  t.strictSame(issuesOf(redis('nodes', 'redis-0:99999')), [`${FILE}:6:13 state.redis.nodes[0]: expected a port between 1 and 65535, got 99999`])
  t.strictSame(issuesOf(redis('sentinels', 'sentinel:70000')), [`${FILE}:6:17 state.redis.sentinels[0]: expected a port between 1 and 65535, got 70000`])
  t.strictSame(issuesOf(redis('nodes', 'redis-0')), [`${FILE}:6:13 state.redis.nodes[0]: expected host:port, got a value of 7 characters that is no address (not shown: it may hold a password)`])
  // a password written into the address is never shown (the issues are also logged on a rejected reload)
  t.strictSame(issuesOf(redis('nodes', 'redis://u:s3cret@redis-0:6379')), [`${FILE}:6:13 state.redis.nodes[0]: expected host:port, got "redis://***@redis-0:6379"`])
  t.strictSame(issuesOf(redis('sentinels', 'u:p@ss@sentinel:26379')), [`${FILE}:6:17 state.redis.sentinels[0]: expected host:port, got "***@sentinel:26379"`])
  // (review s65 r1) nor one that is no host:port: a password in its place, after a host, in a URL without its @host
  for (const item of ['s3cret', 'sentinel-0:s3cret', 'redis://:s3cret']) {
    t.strictSame(issuesOf(redis('sentinels', item)), [`${FILE}:6:17 state.redis.sentinels[0]: expected host:port, got a value of ${item.length} characters that is no address (not shown: it may hold a password)`], item)
  }
})

t.test('upstreams[].url: a port 0 or above 65535 is named as the problem', async (t) => {
  const up = (url: string): string => yaml('upstreams:', '  - id: a', `    url: ${JSON.stringify(url)}`)
  t.strictSame(issuesOf(up('http://127.0.0.1:0')), [`${FILE}:3:10 upstreams[0].url: expected a port between 1 and 65535, got 0 (in "http://127.0.0.1:0")`])
  t.strictSame(issuesOf(up('http://127.0.0.1:70000')), [`${FILE}:3:10 upstreams[0].url: expected a port between 1 and 65535, got 70000 (in "http://127.0.0.1:70000")`])
  t.strictSame(issuesOf(up('https://[::1]:0/')), [`${FILE}:3:10 upstreams[0].url: expected a port between 1 and 65535, got 0 (in "https://[::1]:0/")`])
  t.equal(parseConfig(up('http://127.0.0.1:65535'), FILE).upstreams[0]?.url, 'http://127.0.0.1:65535')
  t.equal(parseConfig(up('http://app:80'), FILE).upstreams[0]?.url, 'http://app')
})

t.test('tether check reads the kubeconfig as discovery will: a missing or unusable one is one located line', async (t) => {
  const config = (kubeconfig: string): string =>
    tempFile('proxy.yaml', yaml('discovery:', '  kubernetes:', '    service: web', '    port: http', `    kubeconfig: ${kubeconfig}`))
  const good = tempFile('kubeconfig', yaml(
    'apiVersion: v1',
    'kind: Config',
    'current-context: dev',
    'contexts: [{ name: dev, context: { cluster: local } }]',
    'clusters: [{ name: local, cluster: { server: "http://127.0.0.1:8001" } }]',
  ))
  const noContext = tempFile('kubeconfig', yaml('apiVersion: v1', 'kind: Config'))
  const files = [config('/nonexistent/kubeconfig'), config(noContext), config(good)]
  const [missing, unusable, ok] = await Promise.all(files.map((f) => runCli(['check', f])))
  t.equal(missing?.code, 1)
  t.equal(missing?.stderr, `${files[0]}:5:17 discovery.kubernetes.kubeconfig: cannot read the kubeconfig /nonexistent/kubeconfig: ENOENT\n`)
  t.equal(unusable?.code, 1)
  t.equal(unusable?.stderr, `${files[1]}:5:17 discovery.kubernetes.kubeconfig: kubeconfig ${noContext}: no current-context\n`)
  t.equal(ok?.code, 0, ok?.stderr)
  t.match(ok?.stdout, `through kubeconfig ${good}`)
})
