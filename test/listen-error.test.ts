// A listener that cannot start says which config key to change and, once known, in which file:
// the port for a taken or forbidden port, the host for an address that is not this machine's.
import t from 'tap'
import net from 'node:net'
import { listen, ListenError } from '../src/listen.js'

const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`listen ${code}`), { code })

t.test('a taken port names <section>.port, then the file', async (t) => {
  const blocker = net.createServer()
  await listen(blocker, { port: 0, host: '127.0.0.1' }, () => undefined)
  t.teardown(() => blocker.close())
  const port = (blocker.address() as net.AddressInfo).port
  const err = await listen(net.createServer(), { port, host: '127.0.0.1' }, () => undefined).then(() => null, (e: NodeJS.ErrnoException) => new ListenError('127.0.0.1', port, 'listen.redirect', e))
  t.equal(err?.message, `cannot listen on 127.0.0.1:${port} (listen.redirect.port): address already in use (EADDRINUSE)`)
  t.equal(err?.code, 'EADDRINUSE')
  t.equal(err?.key, 'listen.redirect.port')
  t.equal(err?.inFile('config/proxy.yaml').message, `cannot listen on 127.0.0.1:${port} (listen.redirect.port in config/proxy.yaml): address already in use (EADDRINUSE)`)
})

t.test('an address not on this machine names the host; IPv6 in brackets; other codes as they are', async (t) => {
  t.equal(new ListenError('10.9.9.9', 8080, 'listen', errno('EADDRNOTAVAIL')).message, 'cannot listen on 10.9.9.9:8080 (listen.host): address not available on this machine (EADDRNOTAVAIL)')
  t.equal(new ListenError('::1', 80, 'admin.listen', errno('EACCES')).message, 'cannot listen on [::1]:80 (admin.listen.port): permission denied (EACCES)')
  t.equal(new ListenError('0.0.0.0', 8080, 'listen', errno('EMFILE')).message, 'cannot listen on 0.0.0.0:8080 (listen.port): EMFILE')
  t.equal(new ListenError('127.0.0.1', 0, null, errno('EMFILE')).inFile('proxy.yaml').message, 'cannot listen on 127.0.0.1:0: EMFILE', 'no key: an address no key sets')
})
