// Composition root: builds every part from a validated Config, wires them together and
// owns their lifecycle (start, graceful stop). Nothing else starts servers or timers.
import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import type { Config } from './config/schema.js'
import { ERRORS, type ErrorCode } from './errors.js'
import { createLogger, effectiveLevel, type Logger } from './observability/logger.js'
import { systemClock, type Clock } from './clock.js'
import { Router } from './routing/router.js'
import { Forwarder } from './proxy/forward.js'
import { createRequestHandler } from './proxy/request-path.js'

export interface TetherOptions {
  /** Logger to use; default: pino on stdout at config/LOG_LEVEL level. */
  readonly logger?: Logger
  /** Environment for LOG_LEVEL; default process.env. */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Time source for affinity expiry; default the system clock (tests inject a fake one). */
  readonly clock?: Clock
}

export interface Tether {
  /** http://host:port the proxy listens on (the real port when configured with 0). */
  readonly url: string
  readonly port: number
  readonly logger: Logger
  /** The routing decision maker (affinity table, placement), for tests and the admin API. */
  readonly router: Router
  /**
   * Replace the upstream set at runtime (reload, discovery): pools and placement follow; users
   * keep their upstream by id where it still exists (see affinity.on_scale_up).
   */
  setUpstreams(upstreams: Config['upstreams']): void
  /**
   * Graceful stop: stop accepting, let in-flight requests finish (answers during the drain
   * carry `Connection: close`), then force-close whatever is left after `graceMs`.
   */
  close(graceMs?: number): Promise<void>
}

/** Start the proxy described by `config`; resolves once it listens. */
export async function startTether(config: Config, options: TetherOptions = {}): Promise<Tether> {
  const env = options.env ?? process.env
  const logger = options.logger ?? createLogger(effectiveLevel(config.log.level, env['LOG_LEVEL']))
  const t = config.timeouts
  const forwarder = new Forwarder(config.upstreams, {
    connect: t.connect,
    responseHeaders: t.response_headers,
    bodyIdle: t.body_idle,
  })
  const router = new Router(config.affinity, config.upstreams, {
    clock: options.clock ?? systemClock,
    upstreamHeader: config.forwarding.upstream_header,
    warn: (message) => logger.warn(message),
  })
  let hosts = hostsOf(config.upstreams)
  const setUpstreams = (upstreams: Config['upstreams']): void => {
    forwarder.setUpstreams(upstreams)
    router.setUpstreams(upstreams)
    hosts = hostsOf(upstreams)
    logger.info({ upstreams: upstreams.map((u) => u.id) }, 'upstreams updated')
  }
  let draining = false
  const handler = createRequestHandler({
    config,
    forwarder,
    router,
    hosts: () => hosts,
    logger,
    draining: () => draining,
  })

  const server = http.createServer(
    {
      maxHeaderSize: config.limits.max_header_bytes,
      headersTimeout: t.client_headers,
      requestTimeout: 0, // long uploads and streams are bounded by idle timeouts instead
      keepAliveTimeout: t.client_keep_alive,
      noDelay: true,
    },
    handler,
  )
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => answerClientError(err, socket, logger))

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(config.listen.port, config.listen.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    await forwarder.destroy()
    throw err
  }
  // expired affinity entries are also dropped lazily on lookup; this keeps the table lean
  const sweeper = setInterval(() => router.sweep(10_000), 1_000)
  sweeper.unref()
  server.on('error', (err) => logger.error({ err }, 'proxy listener error'))
  const port = (server.address() as AddressInfo).port
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host
  const url = `http://${host}:${port}`
  logger.info({ url, upstreams: config.upstreams.map((u) => u.id) }, 'tether listening')

  let closing: Promise<void> | null = null
  const close = (graceMs = 10_000): Promise<void> => {
    closing ??= (async () => {
      draining = true
      logger.info({ grace_ms: graceMs }, 'tether shutting down')
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      // connections that finish their request while draining become idle: close them too
      const sweep = setInterval(() => server.closeIdleConnections(), 50)
      server.closeIdleConnections()
      let timer: NodeJS.Timeout | undefined
      const deadline = new Promise<void>((resolve) => { timer = setTimeout(resolve, graceMs) })
      await Promise.race([closed, deadline])
      clearInterval(sweep)
      clearInterval(sweeper)
      clearTimeout(timer)
      server.closeAllConnections()
      await closed
      await forwarder.destroy()
      logger.info('tether stopped')
    })()
    return closing
  }

  return { url, port, logger, router, setUpstreams, close }
}

function hostsOf(upstreams: Config['upstreams']): ReadonlyMap<string, string> {
  return new Map(upstreams.map((u) => [u.id, new URL(u.url).host]))
}

const REASONS: Partial<Record<ErrorCode, string>> = {
  TETHER_BAD_REQUEST: 'Bad Request',
  TETHER_HEADERS_TOO_LARGE: 'Request Header Fields Too Large',
  TETHER_CLIENT_TIMEOUT: 'Request Timeout',
}

/** Malformed request heads are answered here (Node's parser rejected them), then closed. */
function answerClientError(err: NodeJS.ErrnoException, socket: Socket, logger: Logger): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy()
    return
  }
  const code: ErrorCode =
    err.code === 'HPE_HEADER_OVERFLOW' ? 'TETHER_HEADERS_TOO_LARGE'
    : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' || err.code === 'HPE_HEADERS_TIMEOUT' ? 'TETHER_CLIENT_TIMEOUT'
    : 'TETHER_BAD_REQUEST'
  logger.debug({ code: err.code }, 'rejected malformed request')
  const { status, message } = ERRORS[code]
  const body = `${message}\n`
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[code]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  )
}
