// PEM files of TLS: reading a certificate chain, a private key or a CA bundle from disk and
// saying precisely why one cannot be used. Layer 3 adapter (the filesystem, node:crypto): the
// config check (config/load.ts), the listener's certificates and upstream TLS all read through
// it. It never decides which certificate serves what.
import { readFileSync } from 'node:fs'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import type { ConfigFiles, PemKind } from '../config/validate.js'

/** A PEM file that cannot serve as what the config says; the message names the problem. */
export class PemError extends Error {
  readonly code = 'TETHER_TLS_FILE'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = 'PemError'
  }
}

const CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g
const PRIVATE_KEY = /-----BEGIN ((?:RSA |EC |ENCRYPTED )?PRIVATE KEY)-----/

/**
 * The bytes of PEM file `path` once they are known to hold a `kind`; throws PemError saying
 * why not (unreadable, no such PEM block, a block that does not parse, an encrypted key).
 * Example: readPem('/etc/tether/tls/tls.crt', 'certificate') -> <Buffer 2d 2d ...>.
 */
export function readPem(path: string, kind: PemKind): Buffer {
  let bytes: Buffer
  try {
    bytes = readFileSync(path)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new PemError(`cannot read the ${kind} file (${e.code ?? e.message})`, { cause: err })
  }
  checkPem(bytes.toString('latin1'), kind)
  return bytes
}

/** Throws PemError when `text` does not hold a `kind`. */
function checkPem(text: string, kind: PemKind): void {
  if (kind === 'private key') {
    const m = PRIVATE_KEY.exec(text)
    if (m === null) throw new PemError('no PEM private key in it (expected -----BEGIN PRIVATE KEY-----)')
    if (m[1] === 'ENCRYPTED PRIVATE KEY') throw new PemError('the private key is encrypted (Tether takes unencrypted keys, as a Kubernetes TLS Secret holds them)')
    try {
      createPrivateKey(text)
    } catch (err) {
      throw new PemError(`the private key cannot be read (${(err as Error).message})`, { cause: err })
    }
    return
  }
  const blocks = text.match(CERTIFICATE) ?? []
  if (blocks.length === 0) throw new PemError('no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)')
  blocks.forEach((block, i) => {
    try {
      new X509Certificate(block)
    } catch (err) {
      throw new PemError(`certificate ${i + 1} of ${blocks.length} cannot be read (${(err as Error).message})`, { cause: err })
    }
  })
}

/**
 * Why `key` is not the private key of the first certificate in `cert`, or null.
 * Example: pairProblem(certOfA, keyOfB) -> 'the private key does not belong to the certificate'.
 */
export function pairProblem(cert: Buffer, key: Buffer): string | null {
  try {
    return new X509Certificate(cert).checkPrivateKey(createPrivateKey(key)) ? null : 'the private key does not belong to the certificate'
  } catch (err) {
    return `the certificate and key cannot be compared (${(err as Error).message})`
  }
}

/**
 * The filesystem checks of the config (see {@link ConfigFiles}): what `tether check`, start-up
 * and a reload report, each at the key that names the file.
 */
export const pemFiles: ConfigFiles = Object.freeze({
  pem(path: string, kind: PemKind): string | null {
    try {
      readPem(path, kind)
      return null
    } catch (err) {
      return (err as Error).message
    }
  },
  pair(cert: string, key: string): string | null {
    try {
      return pairProblem(readPem(cert, 'certificate'), readPem(key, 'private key'))
    } catch {
      return null // each file's own problem is reported at its key
    }
  },
})
