// Client IP resolution: trusted-proxy CIDRs (IPv4, IPv6, IPv4-mapped), the right-most-untrusted
// X-Forwarded-For walk, normalisation, and precise errors for invalid CIDRs. Pure; table-driven.
import t from 'tap'
import { BlockList } from 'node:net'
import { clientIp, normalizeForwardedAddress, parseTrustedProxies } from '../src/affinity/client-ip.js'

const trusted = parseTrustedProxies(['10.0.0.0/8', '192.168.1.1', 'fd00::/8', '2001:db8:1::/48'])
const nobody = parseTrustedProxies([])

t.test('CIDR membership covers IPv4, IPv6, bare addresses and IPv4-mapped IPv6', async (t) => {
  const cases: [string, boolean][] = [
    ['10.0.0.1', true],
    ['10.255.255.255', true],
    ['11.0.0.1', false],
    ['192.168.1.1', true],
    ['192.168.1.2', false],
    ['::ffff:10.1.2.3', true],
    ['::FFFF:10.1.2.3', true],
    ['::ffff:a01:203', true],
    ['::ffff:11.1.2.3', false],
    ['fd12:3456::1', true],
    ['fe80::1', false],
    ['2001:db8:1:ffff::1', true],
    ['2001:db8:2::1', false],
    ['not an ip', false],
    ['', false],
    ['10.0.0.1:80', false],
  ]
  for (const [address, want] of cases) t.equal(trusted.contains(address), want, `${address || '(empty)'} is ${want ? '' : 'not '}trusted`)
  t.same(trusted.cidrs, ['10.0.0.0/8', '192.168.1.1', 'fd00::/8', '2001:db8:1::/48'])
  t.ok(Object.isFrozen(trusted.cidrs))
})

t.test('IPv6 networks that cover mapped addresses also match the plain IPv4 ones', async (t) => {
  const cases: [string, string, boolean][] = [
    ['::ffff:10.0.0.0/104', '10.9.9.9', true],
    ['::ffff:10.0.0.0/104', '::ffff:10.9.9.9', true],
    ['::ffff:10.0.0.0/104', '11.0.0.1', false],
    ['::FFFF:a00:0/104', '10.9.9.9', true],
    ['0:0:0:0:0:ffff:c633:6400/120', '198.51.100.7', true],
    ['0:0:0:0:0:ffff:c633:6400/120', '198.51.101.7', false],
    ['::ffff:0:0/96', '203.0.113.9', true],
    ['::/0', '203.0.113.9', true],
    ['::/64', '203.0.113.9', true],
    ['::ffff:0:0/97', '203.0.113.9', false], // /97 = 0.0.0.0/1
    ['::ffff:0:0/97', '10.0.0.1', true],
    ['::1/128', '0.0.0.1', false],
    ['fd00::/8', '203.0.113.9', false],
    ['2001:db8::/32', '10.0.0.1', false],
  ]
  for (const [cidr, address, want] of cases) {
    t.equal(parseTrustedProxies([cidr]).contains(address), want, `${cidr} ${want ? 'contains' : 'does not contain'} ${address}`)
  }
})

t.test('the IPv4 fast path agrees with node:net BlockList on 20,000 seeded addresses', async (t) => {
  const cidrs = ['10.0.0.0/8', '172.16.0.0/12', '192.168.1.128/25', '100.64.0.1/32', '203.0.113.0/24', '::ffff:198.51.100.0/120']
  const ours = parseTrustedProxies(cidrs)
  const reference = new BlockList()
  for (const c of cidrs) {
    const [a, p] = c.split('/') as [string, string]
    reference.addSubnet(a, Number(p), a.includes(':') ? 'ipv6' : 'ipv4')
  }
  let seed = 7
  const next = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0)
  let disagreements = 0
  let inside = 0
  for (let i = 0; i < 20_000; i++) {
    const n = i % 2 === 0 ? next() : ([0x0a000000, 0xac100000, 0xc0a80180, 0xcb007100, 0xc6336400][i % 5]! | (next() & 0x1ff)) >>> 0
    const address = `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
    const want = reference.check(address, 'ipv4')
    if (want) inside++
    if (ours.contains(address) !== want || ours.contains(`::ffff:${address}`) !== want) disagreements++
  }
  t.equal(disagreements, 0)
  t.ok(inside > 5000, `both sides of the boundaries were tried (${inside} inside)`)
})

t.test('invalid CIDRs are rejected with a message naming the entry', async (t) => {
  const cases: [unknown, RegExp][] = [
    ['10.0.0.0/33', /^invalid CIDR "10\.0\.0\.0\/33": prefix length must be 0-32 for an IPv4 network$/],
    ['fd00::/129', /^invalid CIDR "fd00::\/129": prefix length must be 0-128 for an IPv6 network$/],
    ['10.0.0.0/-1', /^invalid CIDR "10\.0\.0\.0\/-1": prefix length/],
    ['10.0.0.0/', /^invalid CIDR "10\.0\.0\.0\/": prefix length/],
    ['10.0.0.0/8/8', /^invalid CIDR "10\.0\.0\.0\/8\/8": prefix length/],
    ['10.0.0.0/ 8', /^invalid CIDR "10\.0\.0\.0\/ 8": prefix length/],
    ['10.0.0.0/0x8', /^invalid CIDR "10\.0\.0\.0\/0x8": prefix length/],
    ['10.0.0/8', /^invalid CIDR "10\.0\.0\/8": "10\.0\.0" is not an IPv4 or IPv6 address$/],
    ['256.0.0.0/8', /^invalid CIDR "256\.0\.0\.0\/8": "256\.0\.0\.0" is not/],
    ['localhost', /^invalid CIDR "localhost": "localhost" is not/],
    ['', /^invalid CIDR "": "" is not/],
    ['fe80::1%eth0/64', /^invalid CIDR "fe80::1%eth0\/64": "fe80::1%eth0" is not/],
    [' 10.0.0.0/8', /^invalid CIDR " 10\.0\.0\.0\/8": " 10\.0\.0\.0" is not/],
    [42, /^invalid CIDR 42: expected a string$/],
  ]
  for (const [cidr, message] of cases) {
    t.throws(() => parseTrustedProxies(['10.0.0.0/8', cidr as string]), { name: 'TypeError', message }, String(cidr))
  }
})

t.test('edge prefixes: /0 trusts everything of its family, /32 and /128 one address', async (t) => {
  const all4 = parseTrustedProxies(['0.0.0.0/0'])
  t.equal(all4.contains('203.0.113.9'), true)
  t.equal(all4.contains('2001:db8::1'), false)
  const one = parseTrustedProxies(['203.0.113.9/32', '2001:db8::1/128'])
  t.equal(one.contains('203.0.113.9'), true)
  t.equal(one.contains('203.0.113.10'), false)
  t.equal(one.contains('2001:db8::1'), true)
  t.equal(one.contains('2001:db8::2'), false)
})

t.test('the client address follows X-Forwarded-For only through trusted proxies', async (t) => {
  const cases: [string, string, string | string[] | undefined, string][] = [
    // [name, peer, X-Forwarded-For, expected client]
    ['no header: the peer', '203.0.113.9', undefined, '203.0.113.9'],
    ['an untrusted peer: its header is ignored', '203.0.113.9', '1.1.1.1', '203.0.113.9'],
    ['an untrusted peer cannot spoof a trusted chain', '203.0.113.9', '1.1.1.1, 10.0.0.1', '203.0.113.9'],
    ['a trusted peer: the address it saw', '10.0.0.2', '198.51.100.7', '198.51.100.7'],
    ['a chain of trusted proxies is skipped', '10.0.0.2', '198.51.100.7, 10.0.0.9, 192.168.1.1', '198.51.100.7'],
    ['the right-most untrusted wins over spoofed entries to its left', '10.0.0.2', '6.6.6.6, 7.7.7.7, 198.51.100.7, 10.0.0.9', '198.51.100.7'],
    ['all trusted: the left-most', '10.0.0.2', '10.0.0.7, 10.0.0.8', '10.0.0.7'],
    ['an empty header: the peer', '10.0.0.2', '', '10.0.0.2'],
    ['empty entries are skipped', '10.0.0.2', '198.51.100.7,, ,10.0.0.9,', '198.51.100.7'],
    ['no spaces', '10.0.0.2', '198.51.100.7,10.0.0.9', '198.51.100.7'],
    ['tabs and spaces', '10.0.0.2', ' \t198.51.100.7\t , 10.0.0.9 ', '198.51.100.7'],
    ['several headers read as one list', '10.0.0.2', ['6.6.6.6, 198.51.100.7', '10.0.0.9'], '198.51.100.7'],
    ['IPv4 with a port', '10.0.0.2', '198.51.100.7:51234', '198.51.100.7'],
    ['a garbage hop stops the walk at the last good hop', '10.0.0.2', '198.51.100.7, unknown, 10.0.0.9', '10.0.0.9'],
    ['a garbage hop next to the peer gives the peer', '10.0.0.2', '198.51.100.7, unknown', '10.0.0.2'],
    ['an injected comma-free blob gives the peer', '10.0.0.2', '<script>', '10.0.0.2'],
  ]
  for (const [name, peer, xff, want] of cases) t.equal(clientIp(peer, xff, trusted), want, name)
})

t.test('IPv6 and IPv4-mapped addresses are matched and normalised', async (t) => {
  const cases: [string, string, string | undefined, string][] = [
    ['a mapped untrusted peer is reported as IPv4', '::ffff:203.0.113.9', undefined, '203.0.113.9'],
    ['a mapped trusted peer (dual-stack socket) is trusted', '::ffff:10.0.0.2', '198.51.100.7', '198.51.100.7'],
    ['an IPv6 trusted peer', 'fd00::2', '2001:db8:9::1', '2001:db8:9::1'],
    ['an IPv6 entry is canonicalised', 'fd00::2', '2001:DB8:9:0:0:0:0:1', '2001:db8:9::1'],
    ['a bracketed IPv6 entry with a port', 'fd00::2', '[2001:db8:9::1]:443', '2001:db8:9::1'],
    ['a mapped entry in hex form becomes IPv4', 'fd00::2', '::ffff:c633:6407', '198.51.100.7'],
    ['a mapped trusted entry is skipped', '10.0.0.2', '198.51.100.7, ::ffff:10.0.0.9', '198.51.100.7'],
    ['a trusted IPv6 hop in a mixed chain', '10.0.0.2', '198.51.100.7, fd00::1', '198.51.100.7'],
    ['an untrusted IPv6 peer', '2001:db8:9::1', '198.51.100.7', '2001:db8:9::1'],
  ]
  for (const [name, peer, xff, want] of cases) t.equal(clientIp(peer, xff, trusted), want, name)
})

t.test('with no trusted proxies the peer is always the client', async (t) => {
  for (const xff of [undefined, '1.1.1.1', '10.0.0.1, 1.1.1.1']) t.equal(clientIp('10.0.0.2', xff, nobody), '10.0.0.2')
})

t.test('forwarded entries normalise to one canonical address or null', async (t) => {
  const cases: [string, string | null][] = [
    ['198.51.100.7', '198.51.100.7'],
    ['198.51.100.7:80', '198.51.100.7'],
    ['198.51.100.7:', null],
    ['198.51.100.7:http', null],
    ['[2001:db8::1]', '2001:db8::1'],
    ['[2001:db8::1]:8080', '2001:db8::1'],
    ['[2001:db8::1', null],
    ['[2001:db8::1]x', null],
    ['[198.51.100.7]', null],
    ['::FFFF:198.51.100.7', '198.51.100.7'],
    ['0:0:0:0:0:ffff:c633:6407', '198.51.100.7'],
    ['FE80::1%eth0', 'fe80::1%eth0'],
    ['unknown', null],
    ['_hidden', null],
    ['1.2.3', null],
    ['', null],
  ]
  for (const [entry, want] of cases) t.equal(normalizeForwardedAddress(entry), want, JSON.stringify(entry))
})

t.test('an IPv6 zone id gives one key however it is spelt: %eth0, [..%25eth0] (RFC 6874 URI form), any case, any zero compression', async (t) => {
  // a zone id reaches the key from the socket (Node names a link-local peer's interface:
  // 'fe80::fc:ff:fe00:1%eth0') and from X-Forwarded-For written by a trusted proxy (PROXY
  // protocol: Tether reads none)
  const cases: [string, string | null][] = [
    ['fe80::1%eth0', 'fe80::1%eth0'],
    ['fe80::1%25eth0', 'fe80::1%25eth0'], // an address, not a URI: interface "25eth0"
    ['[fe80::1%25eth0]', 'fe80::1%eth0'],
    ['[fe80::1%25eth0]:443', 'fe80::1%eth0'],
    ['[fe80::1%eth0]:443', 'fe80::1%eth0'],
    ['FE80:0:0:0:0:0:0:1%ETH0', 'fe80::1%eth0'],
    ['[fe80:0000::0001%25Eth0]', 'fe80::1%eth0'],
    ['fe80::1%2', 'fe80::1%2'], // a numeric zone (an interface index)
    ['fe80::1%25', 'fe80::1%25'], // interface 25: nothing after "%25" to be its escape
    ['::ffff:198.51.100.7%eth0', '198.51.100.7'], // IPv4 has no zones
    ['fe80::1%', null],
  ]
  for (const [entry, want] of cases) t.equal(normalizeForwardedAddress(entry), want, JSON.stringify(entry))
  const zoned = parseTrustedProxies(['fe80::/10'])
  t.equal(clientIp('fe80::2%eth0', '[FE80:0:0:0:0:0:0:1%25eth0]', zoned), 'fe80::1%eth0', 'through a trusted link-local proxy (its zone id too)')
  t.equal(clientIp('fe80::2%eth0', 'fe80::1%eth0', zoned), 'fe80::1%eth0')
  t.equal(clientIp('fe80::1%eth0', undefined, nobody), 'fe80::1%eth0', 'a link-local peer, as Node names it')
  t.equal(clientIp('FE80::1%25eth0', undefined, nobody), 'fe80::1%25eth0', 'the same rule for a peer address')
})

t.test('a zone id: "%" of a bare address is the delimiter (RFC 4007), "%25" its escape only in brackets (RFC 6874): different zones, different keys', async (t) => {
  // X-Forwarded-For carries addresses, not URIs (RFC 7239's Forwarded takes a bracketed
  // IPv6address without any zone): a bare entry's zone is what follows its "%" as written;
  // a bracketed entry ([v6]:port) is a URI's IP-literal, where "%25" is the escaped "%" and
  // the zone is percent-decoded; a lone "%" in brackets is read as the delimiter (RFC 6874
  // section 4 asks browsers to accept it)
  const cases: [string, string | null][] = [
    ['fe80::1%251', 'fe80::1%251'], // interface 251, not interface 1
    ['fe80::1%1', 'fe80::1%1'],
    ['[fe80::1%251]', 'fe80::1%1'], // the URI spelling of interface 1
    ['[fe80::1%251]:443', 'fe80::1%1'],
    ['[fe80::1%1]', 'fe80::1%1'],
    ['[fe80::1%25251]', 'fe80::1%251'], // the URI spelling of interface 251
    ['[fe80::1%12]', 'fe80::1%12'], // a lone "%": "12" is the zone, not an escape
    ['[fe80::1%2512]', 'fe80::1%12'],
    ['[fe80::1%25]', 'fe80::1%25'], // nothing after "%25": interface 25
    ['[fe80::1%2525]', 'fe80::1%25'],
    ['[fe80::1%25en%30]', 'fe80::1%en0'],
    ['[fe80::1%25en%zz]', null],
    ['[fe80::1%]', null],
    ['fe80::1%', null],
  ]
  for (const [entry, want] of cases) t.equal(normalizeForwardedAddress(entry), want, JSON.stringify(entry))
  const zoned = parseTrustedProxies(['fe80::/10'])
  t.not(clientIp('fe80::2%eth0', 'fe80::1%251', zoned), clientIp('fe80::2%eth0', 'fe80::1%1', zoned), 'interfaces 251 and 1: two keys')
  t.equal(clientIp('fe80::2%eth0', 'fe80::1%251', zoned), clientIp('fe80::2%eth0', '[fe80::1%25251]:80', zoned), 'interface 251 spelt two ways: one key')
  t.equal(clientIp('fe80::2%eth0', 'fe80::1%1', zoned), clientIp('fe80::2%eth0', '[fe80::1%251]:80', zoned), 'interface 1 spelt two ways: one key')
})

t.test('a long chain of trusted hops is walked without trouble', async (t) => {
  const chain = ['198.51.100.7', ...Array.from({ length: 2000 }, (_, i) => `10.0.${i >> 8}.${i & 255}`)].join(', ')
  t.equal(clientIp('10.0.0.2', chain, trusted), '198.51.100.7')
})
