// Which peer messages, named by their sender and sequence number, were applied already, in a
// bounded space that forgets no message it was told of but by refusing it: per sender a
// low-water mark (every seq at or below it counts as applied) and the applied seqs above it.
// Layer 2: plain state, no clock, no I/O; the sender's seqs are its own (1, 2, 3, ...).

/** Applied seqs kept above a sender's mark: one more moves the mark up to the lowest of them. */
export const SEQS_KEPT = 100
/** Senders kept: one more drops the one applied from least recently (with its mark). */
export const SENDERS_KEPT = 256

/**
 * The applied messages of each sender: `has(from, seq)` is true for a seq `add`ed before, and
 * for any seq at or below the sender's mark, which rises to the lowest kept seq each time more
 * than `seqsKept` are kept above it. So a late copy of an old message is refused however many
 * newer ones came since (a list of the last N ids forgot it, and applied it again); the cost is
 * that a message never applied whose first copy comes after `seqsKept` newer ones of its sender
 * is refused too (it is that old). A sender dropped for a newer one (`sendersKept`, least
 * recently applied first) is forgotten with its mark.
 * Example: with seqsKept 2, add('a', 1), add('a', 2), add('a', 5) -> mark 1, kept [2, 5];
 * has('a', 1) -> true (at the mark), has('a', 3) -> false, has('a', 5) -> true.
 */
export class ReplayWindow {
  readonly #senders = new Map<string, { mark: number; readonly above: number[] }>()
  readonly #seqsKept: number
  readonly #sendersKept: number

  constructor(seqsKept = SEQS_KEPT, sendersKept = SENDERS_KEPT) {
    this.#seqsKept = seqsKept
    this.#sendersKept = sendersKept
  }

  /** Was `from`'s message `seq` applied (or is it at or below its mark)? */
  has(from: string, seq: number): boolean {
    const s = this.#senders.get(from)
    return s !== undefined && (seq <= s.mark || s.above.includes(seq))
  }

  /** `from`'s message `seq` was applied. */
  add(from: string, seq: number): void {
    let s = this.#senders.get(from)
    if (s === undefined) s = { mark: 0, above: [] }
    else this.#senders.delete(from) // re-inserted below: the most recently applied sender last
    this.#senders.set(from, s)
    if (this.#senders.size > this.#sendersKept) this.#senders.delete(this.#senders.keys().next().value!)
    if (seq <= s.mark) return
    // kept in order; seqs come mostly in order, so the place is found from the end
    let at = s.above.length
    while (at > 0 && s.above[at - 1]! > seq) at--
    if (s.above[at - 1] === seq) return
    s.above.splice(at, 0, seq)
    if (s.above.length > this.#seqsKept) s.mark = s.above.shift()!
  }

  /** How many senders are kept, and of `from` its mark and how many seqs above it (undefined: not kept). */
  size(from?: string): { readonly senders: number; readonly mark?: number; readonly above?: number } {
    const s = from === undefined ? undefined : this.#senders.get(from)
    return { senders: this.#senders.size, ...(s === undefined ? {} : { mark: s.mark, above: s.above.length }) }
  }
}
