// The only file that imports pino. JSON lines on stdout; the level comes from config
// `log.level`, overridden by the LOG_LEVEL environment variable (read by the caller).
import { pino, type Logger } from 'pino'
import type { LogLevel } from '../config/schema.js'

export type { Logger }

const LEVELS: readonly string[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

/** Resolve the effective level: a valid LOG_LEVEL wins over the config value. */
export function effectiveLevel(configured: LogLevel, envLevel: string | undefined): LogLevel {
  const l = envLevel?.trim().toLowerCase()
  return l !== undefined && LEVELS.includes(l) ? (l as LogLevel) : configured
}

/** A logger writing JSON lines to `destination` (default stdout). */
export function createLogger(level: LogLevel, destination?: NodeJS.WritableStream): Logger {
  const opts = { level, base: { name: 'tether' }, timestamp: pino.stdTimeFunctions.isoTime }
  return destination ? pino(opts, destination) : pino(opts)
}
