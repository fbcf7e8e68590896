// A worker process of `workers` > 1: the whole proxy (the composition root) with its sharing
// ports connected to the primary, its log lines tagged with its index, and the primary's
// orders (reload, stop) and disappearance handled. Layer 5 wiring.
import type { Config } from '../config/schema.js'
import type { Logger } from '../observability/logger.js'
import type { Tether } from '../tether.js'
import { isTetherMessage, WORKER_ENV, type WorkerEnv } from './messages.js'
import { processChannel, WorkerLink } from './worker-link.js'

/** This process's worker identity, or null when it is not a Tether worker. */
export function workerEnv(env: Readonly<Record<string, string | undefined>>): WorkerEnv | null {
  const raw = env[WORKER_ENV]
  if (raw === undefined) return null
  return JSON.parse(raw) as WorkerEnv
}

/**
 * The config every worker runs: a secret left unset is the one the primary made for all of
 * them (a cookie signed by one worker is read by the others; the logged session form is the
 * same), and the `admin` section is the primary's (see WorkerEnv.admin).
 */
export function withSharedSecrets(config: Config, w: WorkerEnv): Config {
  return {
    ...config,
    admin: w.admin ?? config.admin,
    affinity: config.affinity.cookie.secret === null ? { ...config.affinity, cookie: { ...config.affinity.cookie, secret: [w.cookieSecret] } } : config.affinity,
    log: config.log.session_secret === null ? { ...config.log, session_secret: w.sessionSecret } : config.log,
  }
}

/** Run this worker until the primary stops it or goes away; resolves with the exit code. */
export async function runWorker(config: Config, configPath: string, w: WorkerEnv, logger: Logger): Promise<number> {
  const link = new WorkerLink(processChannel, (c) => withSharedSecrets(c, w))
  const { startTether } = await import('../app.js')
  let tether: Tether
  try {
    tether = await startTether(link.adjust(config), { configPath, logger, worker: link })
  } catch (err) {
    logger.error({ err }, 'worker failed to start')
    return 1
  }
  link.ready(tether.adminUrl)
  return new Promise<number>((resolve) => {
    const stop = (why: string): void => {
      tether.logger.info({ why }, 'worker stopping')
      // exit only once connections handed over during the close went back to the primary
      tether.close().then(() => link.settled()).then(() => resolve(0), () => resolve(1))
    }
    process.on('message', (m: unknown) => {
      if (!isTetherMessage(m)) return
      if (m.tether === 'stop') stop('asked by the primary')
      else if (m.tether === 'reload') tether.reloadFile()
    })
    // the primary is gone (killed): nobody supervises this worker any more
    process.on('disconnect', () => stop('the primary went away'))
    // a terminal's ^C reaches the whole process group: the primary stops the workers
    process.on('SIGINT', () => undefined)
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGHUP', () => undefined)
  })
}
