// `tether import` on input as migrating operators have it, beyond the tidy fixtures: an Ingress
// of the old extensions/v1beta1 shape (serviceName/servicePort), null list entries, annotation
// values with the whitespace ingress-nginx trims and the booleans Go's ParseBool reads, the
// cookie Path ingress-nginx gives by default (the matched Ingress path), and a file PowerShell
// wrote as UTF-16.
import t from 'tap'
import { gzipSync } from 'node:zlib'
import { readFileSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { ingressYaml } from './fixtures/ingress.js'
import { ConfigError, parseConfig, readConfigText, type Config } from '../src/config/index.js'
import { convertManifests, ImportError, manifestText, type ImportResult } from '../src/import/convert.js'
import { CLI, runCli, tempFile } from './fixtures/cli.js'

const ENV = { TETHER_SECRET: 'x'.repeat(32), TETHER_ADMIN_TOKEN: 'admin' }
const convert = (text: string, file = 'in.yaml'): ImportResult => convertManifests([{ file, text }], { manifests: false })
const configOf = (r: ImportResult): Config => parseConfig(r.proxyYaml, 'imported proxy.yaml', ENV)
const whats = (r: ImportResult): string[] => r.findings.map((f) => f.what.replace(/: .*$/s, ''))

t.test('an Ingress of the old shape (extensions/v1beta1, networking.k8s.io/v1beta1: serviceName/servicePort) names its backend', async (t) => {
  for (const apiVersion of ['extensions/v1beta1', 'networking.k8s.io/v1beta1']) {
    const text = `apiVersion: ${apiVersion}
kind: Ingress
metadata:
  name: web
  namespace: shop
  annotations:
    nginx.ingress.kubernetes.io/affinity: cookie
spec:
  rules:
    - host: shop.example.com
      http:
        paths:
          - path: /
            backend:
              serviceName: web
              servicePort: http
          - path: /api
            backend:
              serviceName: api
              servicePort: 8080
`
    const r = convert(text)
    t.same(configOf(r).discovery.kubernetes, { service: 'web', namespace: 'shop', port: 'http', kubeconfig: null, weight_annotation: null }, apiVersion)
    t.ok(whats(r).includes('backend Service api port 8080'), `${apiVersion}: the second backend is listed`)
  }
  const old = convert('apiVersion: extensions/v1beta1\nkind: Ingress\nmetadata: { name: web }\nspec:\n  backend: { serviceName: legacy, servicePort: 80 }\n')
  t.equal(configOf(old).discovery.kubernetes?.service, 'legacy', 'the old spec.backend (the default backend)')
})

t.test('null entries in lists (ports, rules, paths, backendRefs) are skipped, not a crash', async (t) => {
  const service = 'apiVersion: v1\nkind: Service\nmetadata: { name: game }\nspec:\n  sessionAffinity: ClientIP\n  ports:\n    -\n    - { name: ws, port: 80 }\n'
  t.equal(configOf(convert(service)).discovery.kubernetes?.port, 'ws')
  t.throws(() => convert('apiVersion: v1\nkind: Service\nmetadata: { name: game }\nspec:\n  sessionAffinity: ClientIP\n  ports: [~]\n'), ImportError)
  const ingress = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: { name: web }
spec:
  rules: [~, { http: { paths: [~, { path: /, backend: { service: { name: web, port: { number: 80 } } } }] } }]
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { ports: [~, { name: http, port: 80 }] }
`
  t.equal(configOf(convert(ingress)).discovery.kubernetes?.port, 'http')
  const route = 'apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: { name: r }\nspec:\n  rules:\n    - sessionPersistence: { type: Cookie }\n      backendRefs: [~, { name: web, port: 80 }]\n'
  t.equal(configOf(convert(route)).discovery.kubernetes?.service, 'web')
  // the CLI: a clear exit, never "fatal"
  const cli = await runCli(['import', tempFile('svc.yaml', 'apiVersion: v1\nkind: Service\nmetadata: { name: game }\nspec:\n  sessionAffinity: ClientIP\n  ports:\n    -\n')])
  t.equal(cli.code, 1, cli.stderr)
  t.match(cli.stderr, /^tether import: Service game \(.*svc\.yaml:1\) names no backend Service/)
})

t.test('tether import: a YAML syntax error is printed as check prints it, its excerpt and caret on lines of their own (not one line with literal \\n), control bytes still escaped', async (t) => {
  const file = tempFile('broken.yaml', 'kind: [\x1b[31mred\n')
  const [imp, check] = await Promise.all([runCli(['import', file]), runCli(['check', file])])
  t.equal(imp.code, 1, imp.stderr)
  t.notOk(imp.stderr.includes('\\n'), 'no literal \\n')
  t.notOk(imp.stderr.includes('\x1b'), 'no raw ESC')
  t.equal(imp.stderr, `tether import: ${check.stderr}`, 'the lines check prints')
})

t.test('annotation values are trimmed as ingress-nginx trims them; booleans read as Go ParseBool reads them', async (t) => {
  const text = ingressYaml({ affinity: 'cookie\n', 'affinity-mode': ' persistent ', 'session-cookie-name': ' route ', 'session-cookie-max-age': '3600 ', 'session-cookie-secure': 'True', 'session-cookie-change-on-failure': '1', 'upstream-hash-by': ' $remote_addr' })
  const r = convert(text)
  const c = configOf(r)
  t.match(c.affinity, { key: 'cookie', on_scale_up: 'persistent', idle_timeout: 3_600_000, cookie: { name: 'route', max_age: 3_600_000, secure: true }, strict: false })
  t.notOk(whats(r).some((w) => /affinity$|affinity-mode|session-cookie-(name|max-age|secure|change-on-failure)/.test(w)), `all converted: ${whats(r).join(', ')}`)
  t.equal(configOf(convert(ingressYaml({ affinity: 'cookie', 'session-cookie-secure': 'F' }))).affinity.cookie.secure, false)
  // numbers are not trimmed by ingress-nginx (strconv.Atoi): " 120" was its default 60s, not 120s
  const spaced = convert(ingressYaml({ 'proxy-read-timeout': ' 120' }))
  t.equal(configOf(spaced).timeouts.response_headers, 60_000)
  t.ok(whats(spaced).includes('nginx.ingress.kubernetes.io/proxy-read-timeout'))
  // what ingress-nginx rejects stays listed: "Cookie" is not its affinity type (case-sensitive)
  const upper = convert(ingressYaml({ affinity: 'Cookie', 'session-cookie-name': 'route' }))
  t.ok(whats(upper).includes('nginx.ingress.kubernetes.io/affinity'))
})

t.test("an affinity-mode ingress-nginx does not know is its default balanced (on_scale_up: rebalance), and listed", async (t) => {
  const r = convert(ingressYaml({ affinity: 'cookie', 'affinity-mode': 'Persistent' }))
  t.equal(configOf(r).affinity.on_scale_up, 'rebalance', 'ingress-nginx uses balanced for any value but "persistent"')
  t.match(r.findings.find((f) => f.what.includes('affinity-mode'))?.why, /balanced/)
})

t.test("without session-cookie-path, ingress-nginx's cookie Path is the matched Ingress path: carried over", async (t) => {
  const ingress = (paths: string[], extra = '') => `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  annotations:
    nginx.ingress.kubernetes.io/affinity: cookie${extra}
spec:
  rules:
    - host: example.com
      http:
        paths:
${paths.map((p) => `          - { path: ${p}, pathType: Prefix, backend: { service: { name: shop, port: { name: web } } } }`).join('\n')}
`
  const one = convert(ingress(['/shop']))
  t.equal(configOf(one).affinity.cookie.path, '/shop')
  t.match(one.proxyYaml.replace(/\n\s*# {3}/g, ' '), /ingress-nginx's default cookie Path: the matched Ingress path/)
  t.equal(configOf(convert(ingress(['/']))).affinity.cookie.path, '/')
  t.equal(configOf(convert(ingress(['/shop'], '\n    nginx.ingress.kubernetes.io/session-cookie-path: /'))).affinity.cookie.path, '/', 'the annotation wins')
  const two = convert(ingress(['/shop', '/cart']))
  t.equal(configOf(two).affinity.cookie.path, '/')
  t.match(two.findings.find((f) => f.what.includes('cookie Path'))?.why, /\/shop, \/cart/)
})

t.test('a file PowerShell wrote as UTF-16 (with a BOM) converts as its UTF-8 twin; UTF-16 without a BOM is a clear error, not "nothing to import"', async (t) => {
  const yaml = 'apiVersion: v1\nkind: Service\nmetadata: { name: a }\nspec: { sessionAffinity: ClientIP, ports: [{ name: http, port: 80 }] }\n'
  const utf8 = await runCli(['import', tempFile('current.yaml', yaml)], ENV)
  t.equal(utf8.code, 0, utf8.stderr)
  const utf16be = (s: string): Buffer => Buffer.from(s, 'utf16le').swap16()
  const withBom: [string, Buffer][] = [
    ['UTF-16LE with a BOM, CRLF (kubectl get -o yaml > file in Windows PowerShell 5)', Buffer.from(`\ufeff${yaml.replace(/\n/g, '\r\n')}`, 'utf16le')],
    ['UTF-16BE with a BOM', utf16be(`\ufeff${yaml}`)],
  ]
  const withoutBom: [string, Buffer][] = [['UTF-16LE', Buffer.from(yaml, 'utf16le')], ['UTF-16BE', utf16be(yaml)]]
  const run = (bytes: Buffer): Promise<[string, Awaited<ReturnType<typeof runCli>>]> => {
    const file = tempFile('current.yaml', '')
    writeFileSync(file, bytes)
    return runCli(['import', file], ENV).then((r) => [file, r])
  }
  const [read, refused] = await Promise.all([Promise.all(withBom.map(([, b]) => run(b))), Promise.all(withoutBom.map(([, b]) => run(b)))])
  withBom.forEach(([name], i) => {
    const [file, r] = read[i]!
    t.equal(r.code, 0, `${name}: ${r.stderr}`)
    t.equal(r.stdout, utf8.stdout.replaceAll(utf8.stdout.match(/\/tmp\/[^\s:]*current\.yaml/)![0], file), `${name}: the proxy.yaml of the UTF-8 file`)
  })
  withoutBom.forEach(([name], i) => {
    const [, r] = refused[i]!
    t.equal(r.code, 1, `${name} without a BOM: refused`)
    t.match(r.stderr, /^tether import: .*current\.yaml is not UTF-8 text \(UTF-16 without a byte order mark\?\): convert it first/)
  })
  t.throws(() => convert(Buffer.from(yaml, 'utf16le').toString('utf8')), { message: /^in\.yaml is not UTF-8 text/ })
  // a UTF-8 file whose second byte is NUL is no UTF-16 (and YAML allows no NUL); a binary or
  // compressed file is not "nothing to import"
  const nul = tempFile('current.yaml', '')
  writeFileSync(nul, Buffer.from(`#\u0000 exported\n${yaml}`, 'utf8'))
  const gz = tempFile('current.yaml.gz', '')
  writeFileSync(gz, gzipSync(yaml))
  const [r, z] = await Promise.all([runCli(['import', nul], ENV), runCli(['import', gz], ENV)])
  t.same([r.code, r.stderr], [1, `tether import: ${nul}:1:2 holds a NUL byte, which YAML text cannot: not a manifest file (binary?)\n`], 'a NUL second: not called UTF-16')
  t.same([z.code, z.stderr], [1, `tether import: ${gz}: gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (gunzip -k ${gz})\n`])
  const piped = spawn(process.execPath, [CLI, 'import', '-'], { stdio: ['pipe', 'pipe', 'pipe'] })
  let stderr = ''
  piped.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
  piped.stdin.end(gzipSync(yaml))
  const code = await new Promise((resolve) => piped.on('close', resolve))
  t.same([code, stderr], [1, 'tether import: <stdin>: gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (pipe it through gzip -dc)\n'], 'stdin')
  t.throws(() => convert(`kind: Service\nmetadata: { name: "a\u0000" }\n`), { message: 'in.yaml:2:21 holds a NUL byte, which YAML text cannot: not a manifest file (binary?)' })
})

t.test('a manifest that is not text (compressed, an archive, an executable, binary data) is told as a config file is: the same line, from the same check', async (t) => {
  const yaml = ingressYaml({ affinity: 'cookie' })
  const cases: [string, Buffer][] = [
    ['current.yaml.gz', gzipSync(yaml)],
    // without the .gz suffix gunzip -k refuses the file: the hint that works (gzip -dc ... > ...)
    ['current.yaml', gzipSync(yaml)],
    ['current.zip', Buffer.concat([Buffer.from('PK\x03\x04', 'latin1'), Buffer.from(yaml)])],
    ['tether', Buffer.from('\x7fELF\x02\x01\x01\x00\x00\x00', 'latin1')],
    ['current.xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0, 0])],
    ['dump.bin', Buffer.concat([Buffer.from(yaml), Buffer.from([0, 0, 0, 1, 2, 3, 0, 0, 0, 9, 5, 0, 0])])],
  ]
  for (const [name, bytes] of cases) {
    const file = tempFile(name, '')
    writeFileSync(file, bytes)
    const config = (() => { try { readConfigText(file) } catch (e) { return (e as ConfigError).issues } return [] })()
    t.equal(config.length, 1, `${name}: refused as a config`)
    t.throws(() => manifestText(file, bytes), new ImportError(config[0]!), `${name}: refused as a manifest with the config's line`)
  }
  t.throws(() => manifestText('-', gzipSync(yaml)), { message: '<stdin>: gzip-compressed data (it starts with 1f 8b), not YAML text: decompress it first (pipe it through gzip -dc)' })
})

t.test('--image must be an image reference Kubernetes can pull: an empty or malformed one is an error, not a Deployment that never starts', async (t) => {
  const text = ingressYaml({ affinity: 'cookie' })
  const withImage = (image: string) => convertManifests([{ file: 'in.yaml', text }], { manifests: true, image })
  for (const image of ['ghcr.io/example/tether:0.1.0', 'tether', 'registry.example.com:5000/team/tether@sha256:' + 'a'.repeat(64), 'localhost/tether:dev_1', 'docker.io/library/tether:1.2.3-rc.1']) {
    t.match(withImage(image).manifests, `image: ${image}\n`, image)
  }
  for (const image of ['', ' ', 'ghcr.io/Example/tether:1', 'tether:', 'tether:1 2', 'https://ghcr.io/tether', 'ghcr.io/example/tether:1\nx']) {
    t.throws(() => withImage(image), { message: /^--image: expected an image reference like ghcr\.io\/example\/tether:0\.1\.0/ }, JSON.stringify(image))
  }
  // (an empty --image= is a usage error, exit 2, before any file is read: cli-usage-errors.test.ts)
  const cli = await runCli(['import', '--manifests', '--image=ghcr.io/Example/tether:1', tempFile('in.yaml', text)])
  t.equal(cli.code, 1, cli.stderr)
  t.equal(cli.stdout, '')
  t.match(cli.stderr, /^tether import: --image: expected an image reference/)
})

t.test('a session-cookie-max-age ingress-nginx ignores (not seconds) leaves a browser-session cookie: idle_timeout 24h as without one', async (t) => {
  const r = convert(ingressYaml({ affinity: 'cookie', 'session-cookie-max-age': '48h' }))
  t.equal(configOf(r).affinity.idle_timeout, 86_400_000)
  t.equal(configOf(r).affinity.cookie.max_age, null)
  t.ok(whats(r).includes('nginx.ingress.kubernetes.io/session-cookie-max-age'))
})

t.test('values the config checker would reject are converted within its bounds or listed, never a refusal to print', async (t) => {
  // a __Host- cookie must have Path=/: the Ingress path is not carried over to it (browsers
  // rejected ingress-nginx's __Host- cookie with Path=/shop: there was no stickiness to keep)
  const host = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  annotations: { nginx.ingress.kubernetes.io/affinity: cookie, nginx.ingress.kubernetes.io/session-cookie-name: __Host-route }
spec:
  rules: [{ http: { paths: [{ path: /shop, pathType: Prefix, backend: { service: { name: shop, port: { name: web } } } }] } }]
`
  const h = convert(host)
  t.equal(configOf(h).affinity.cookie.path, '/')
  t.match(h.findings.find((f) => f.what.startsWith('cookie Path'))?.why, /__Host-/)
  // a __Secure- cookie is Secure whatever session-cookie-secure says (browsers drop it otherwise)
  const secure = convert(ingressYaml({ affinity: 'cookie', 'session-cookie-name': '__Secure-route', 'session-cookie-secure': 'false' }))
  t.equal(configOf(secure).affinity.cookie.secure, true)
  t.ok(whats(secure).includes('nginx.ingress.kubernetes.io/session-cookie-secure'))
  // timeouts beyond Tether's longest duration are lowered to it, and said so
  const slow = convert(ingressYaml({ 'proxy-read-timeout': '99999999', 'proxy-next-upstream-timeout': '99999999' }))
  t.equal(configOf(slow).timeouts.response_headers, 596 * 3_600_000)
  t.equal(configOf(slow).retries.try_duration, 596 * 3_600_000)
  t.match(slow.proxyYaml.replace(/\n\s*# {3}/g, ' '), /lowered to 596h, the longest Tether allows/)
  // a body size past 2^53 bytes is no limit in practice: listed, not printed as a rounded number
  const big = convert(ingressYaml({ 'proxy-body-size': '99999999g' }))
  t.equal(configOf(big).limits.max_body_bytes, null)
  t.ok(whats(big).includes('nginx.ingress.kubernetes.io/proxy-body-size'))
})

t.test("proxy-send-timeout is listed with what bounds an upload to the pod in Tether: timeouts.body_idle", async (t) => {
  const r = convert(ingressYaml({ 'proxy-send-timeout': '120', 'proxy-read-timeout': '30' }))
  const why = r.findings.find((f) => f.what.includes('proxy-send-timeout'))?.why
  t.match(why, /timeouts\.body_idle/)
  t.match(why, /30s here/)
  t.notMatch(why, /has no timeout on sending the request body/)
})

t.test('an annotation name in the wrong case is listed as ingress-nginx reads it: ignored (names are case-sensitive)', async (t) => {
  const r = convert(ingressYaml({ Affinity: 'cookie', 'Session-Cookie-Name': 'route' }))
  t.equal(configOf(r).affinity.cookie.name, 'tether', 'not converted: ingress-nginx had no cookie affinity')
  const why = r.findings.find((f) => f.what.startsWith('nginx.ingress.kubernetes.io/Affinity'))?.why
  t.match(why, /ingress-nginx ignores it too: annotation names are case-sensitive \(nginx\.ingress\.kubernetes\.io\/affinity\?\)/)
})

t.test('sessionPersistence on a GRPCRoute or a BackendLBPolicy is listed, never dropped silently', async (t) => {
  const policy = `apiVersion: gateway.networking.k8s.io/v1alpha2
kind: BackendLBPolicy
metadata: { name: sticky, namespace: shop }
spec:
  targetRefs: [{ group: '', kind: Service, name: shop }]
  sessionPersistence: { sessionName: shop-session, type: Cookie }
`
  const grpc = `apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: { name: rpc, namespace: shop }
spec:
  rules: [{ backendRefs: [{ name: rpc, port: 9000 }], sessionPersistence: { type: Header, sessionName: x-session } }]
`
  t.throws(() => convert(`${policy}---\n${grpc}`), { message: /^nothing to import: .*; not converted: BackendLBPolicy shop\/sticky \(in\.yaml:1\) sessionPersistence: .*; GRPCRoute shop\/rpc \(in\.yaml:\d+\) sessionPersistence: .*gRPC/ })
  const r = convert(`${ingressYaml({ affinity: 'cookie' })}---\n${policy}`)
  t.ok(whats(r).includes('BackendLBPolicy shop/sticky (in.yaml:12) sessionPersistence'), whats(r).join(', '))
})

t.test('a backend port is looked up in the core Service only, and a port the Service lacks is said so', async (t) => {
  const ingress = 'apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: { name: shop, namespace: shop }\nspec:\n  defaultBackend: { service: { name: shop, port: { number: 80 } } }\n'
  const knative = 'apiVersion: serving.knative.dev/v1\nkind: Service\nmetadata: { name: shop, namespace: shop }\nspec: { template: { spec: { containers: [{ image: x }] } } }\n'
  const k = convert(`${ingress}---\n${knative}`)
  t.match(k.findings.find((f) => f.what === 'the port of Service shop')?.why, /Service shop is not among the input files/)
  const core = 'apiVersion: v1\nkind: Service\nmetadata: { name: shop, namespace: shop }\nspec: { ports: [{ name: web, port: 8080 }] }\n'
  const c = convert(`${ingress}---\n${core}`)
  t.match(c.findings.find((f) => f.what === 'the port of Service shop')?.why, /^Service shop has no port 80 \(its ports: 8080\)/)
})

t.test('a ClientIP Service of the same name in another namespace is not called the one behind the Ingress', async (t) => {
  const other = 'apiVersion: v1\nkind: Service\nmetadata: { name: shop, namespace: other }\nspec: { sessionAffinity: ClientIP, ports: [{ name: web, port: 80 }] }\n'
  const same = other.replace('namespace: other', 'namespace: shop')
  const why = (text: string) => convert(`${ingressYaml({ affinity: 'cookie' })}---\n${text}`).findings.find((f) => f.what.startsWith('Service '))?.why
  t.match(why(same), /did not apply behind the Ingress; remove it once Tether is in front/)
  t.match(why(other), /^not converted: one Tether replaces one source of stickiness/)
})

t.test('values with control characters and bidi controls (ESC, U+202E) are escaped in the findings and the header of the output', async (t) => {
  const text = readFileSync(new URL('./fixtures/import/ingress-nginx-cookie.yaml', import.meta.url), 'utf8')
    .replace('affinity-mode: "balanced"', 'affinity-mode: "bal\\e[31manced"')
    .replace('proxy-next-upstream: "error timeout http_502"', 'proxy-next-upstream: "error \\u202Etimeout http_502"')
  const r = convert(text, 'in\u202e.yaml')
  const raw = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]/
  t.ok(r.findings.length > 0)
  for (const f of r.findings) t.notMatch(`${f.at} ${f.what}: ${f.why}`, raw, `${f.at} ${f.what}`)
  t.match(r.findings.map((f) => f.what).join('\n'), /\\u001b\[31m|\\u202e/, 'the characters shown escaped')
  t.notMatch(r.proxyYaml, raw, 'the output')
})

t.test('an annotation not converted is listed without a secret value: a secret-named one, a snippet (review s65 r1)', async (t) => {
  const SECRET = 'hunter2xyzzy'
  const text = ingressYaml({
    affinity: 'cookie',
    'configuration-snippet': `proxy_set_header Authorization "Bearer ${SECRET}";\nmore_set_headers "X-A: b";`,
    'auth-tokn': SECRET, // a misspelt secret name too
    'auth-url': `https://u:${SECRET}@auth.example.com/check`,
    'ssl-redirect': 'false',
  }).replace('  annotations:\n', `  annotations:\n    example.com/api-token: "${SECRET}"\n`)
  const r = convert(text)
  const what = (key: string): string | undefined => r.findings.find((f) => f.what.startsWith(`${key}: `))?.what
  t.equal(what('nginx.ingress.kubernetes.io/configuration-snippet'), 'nginx.ingress.kubernetes.io/configuration-snippet: (2 lines of nginx configuration, not shown)')
  t.equal(what('nginx.ingress.kubernetes.io/auth-tokn'), "nginx.ingress.kubernetes.io/auth-tokn: (12 characters, not shown: a secret's name)")
  t.equal(what('example.com/api-token'), "example.com/api-token: (12 characters, not shown: a secret's name)")
  // (as before: a URL's password masked, a harmless value quoted)
  t.equal(what('nginx.ingress.kubernetes.io/auth-url'), 'nginx.ingress.kubernetes.io/auth-url: "https://u:***@auth.example.com/check"')
  t.equal(what('nginx.ingress.kubernetes.io/ssl-redirect'), 'nginx.ingress.kubernetes.io/ssl-redirect: "false"')
  t.notOk(r.proxyYaml.includes(SECRET) || r.findings.some((f) => f.what.includes(SECRET) || f.why.includes(SECRET)), 'the secret is in neither the output nor a finding')
})
