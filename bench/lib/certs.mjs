// The benchmark's TLS certificate: one self-signed EC P-256 certificate for 127.0.0.1, made
// with the openssl CLI at bench start, shared by every TLS contestant (Tether, nginx, HAProxy).
import { execFileSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'

/**
 * Writes `bench.crt`, `bench.key` and `bench.pem` (certificate then key, HAProxy's `crt`
 * format) into `dir` and returns their paths. Throws with openssl's message if it fails.
 */
export function makeBenchCertificate(dir) {
  const certFile = path.join(dir, 'bench.crt')
  const keyFile = path.join(dir, 'bench.key')
  const pemFile = path.join(dir, 'bench.pem')
  try {
    execFileSync(
      'openssl',
      [
        'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
        '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=127.0.0.1',
        '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
  } catch (err) {
    throw new Error(`openssl could not make the bench certificate: ${err.stderr?.toString().trim() || err.message}`)
  }
  writeFileSync(pemFile, readFileSync(certFile, 'utf8') + readFileSync(keyFile, 'utf8'), { mode: 0o644 })
  return { certFile, keyFile, pemFile }
}
