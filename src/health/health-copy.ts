// What a starting worker copies of a sibling's health (HealthTable.copies, HealthTable.copy), as
// it travels between workers. Layer 0 vocabulary: a type only.

/**
 * One upstream's health as a starting worker copies it from a sibling (HealthTable.copies,
 * HealthTable.copy): its active check state, its ejection and when it last became
 * ready. Times are ms since the epoch (the workers share one machine's clock); null: never
 * (-Infinity: ready since start-up, never ejected). Plain JSON.
 */
export interface HealthCopy {
  readonly id: string
  readonly activeFailed: boolean
  readonly activeSuccesses: number
  readonly activeFailures: number
  /** The end of the ejection in force, or null. */
  readonly ejectedUntil: number | null
  /** That ejection also ends at the next passed active check (see HealthTable.reportPassive); absent: false (an older worker's). */
  readonly untilPass?: boolean
  /** With `untilPass`: timesEjected and lastEjectionEnd before that ejection began (put back if a passed check ends it); absent: unknown (an older worker's). */
  readonly countBefore?: number
  readonly endBefore?: number | null
  /** That ejection is for a refused connection: it also ends once `healthy_threshold` active checks in a row passed since it began (see HealthTable.reportPassive); absent: false (an older worker's: timed). */
  readonly refused?: boolean
  /** With `refused`: the checks passed in a row since it began. */
  readonly upPasses?: number
  /** Why that ejection is (an EjectionReason); absent: what `untilPass` and `refused` say (an older worker's). */
  readonly reason?: string
  readonly timesEjected: number
  readonly lastEjectionEnd: number | null
  readonly readySince: number | null
}
