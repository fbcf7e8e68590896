// listen.proxy_protocol with `workers: 2` (the real CLI, a primary and its workers as child
// processes): each worker's listener reads the PROXY header of the connections node:cluster
// hands it, so every declared client reaches the upstream as itself, whichever worker took it.
import t from 'tap'
import net from 'node:net'
import { startUpstream } from './fixtures/upstream.js'
import { tempFile } from './fixtures/cli.js'
import { freePorts } from './fixtures/ports.js'
import { startPrimary } from './fixtures/primary-process.js'
import { once } from './fixtures/wait.js'

t.test('two workers: each connection\'s declared client is the one the upstream sees; one without a header is closed', async (t) => {
  const up = await startUpstream('app-0', (req, res) => res.end(`${String(req.headers['x-forwarded-for'])}\n`))
  t.teardown(() => up.close())
  const [port, adminPort] = await freePorts(2)
  const file = tempFile('proxy.yaml', [
    `listen: { host: 127.0.0.1, port: ${port}, proxy_protocol: true }`,
    `admin: { listen: { host: 127.0.0.1, port: ${adminPort} } }`,
    'workers: 2',
    'log: { level: info, access: false }',
    'upstreams:',
    `  - { id: app-0, url: "${up.url}" }`,
    '',
  ].join('\n'))
  await startPrimary(t, file)
  const exchange = async (bytes: string): Promise<string> => {
    const socket = net.connect(port!, '127.0.0.1')
    let got = ''
    socket.on('data', (c: Buffer) => { got += c.toString('latin1') })
    socket.on('error', () => undefined)
    const closed = once(socket, 'close', 10_000)
    socket.write(bytes)
    await closed
    return got
  }
  const seen: string[] = []
  for (let i = 1; i <= 8; i++) {
    const answer = await exchange(`PROXY TCP4 203.0.113.${i} 10.0.0.1 4000 443\r\nGET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)
    seen.push(answer.split('\r\n\r\n')[1]?.trim() ?? '')
  }
  t.same(seen, Array.from({ length: 8 }, (_, i) => `203.0.113.${i + 1}`))
  t.equal(await exchange('GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), '', 'no header: closed unanswered')
})
