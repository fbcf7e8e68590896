// How the Redis connection and its parts tell their listeners: each one's failure contained.
// Pure: no I/O.

/** Tells `event` to each listener: one that throws breaks neither the connection nor the other listeners. */
export function tellAll<T>(listeners: ReadonlySet<(event: T) => void>, event: T): void {
  for (const fn of [...listeners]) {
    try {
      fn(event)
    } catch {
      // the listener's own failure
    }
  }
}
