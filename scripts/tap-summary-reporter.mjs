// tap reporter: passes tap's raw TAP stream through unchanged and appends one
// closing line "N passed, N failed" computed from tap's own final tally
// ("# { total: N, pass: N, fail: N, ... }"). Being a reporter (not a pipe),
// it leaves tap's exit code untouched. If the tally is missing (the runner
// died), top-level test points are counted instead.
import { Transform } from 'node:stream'

export default class SummaryReporter extends Transform {
  #buf = ''
  #tally = null
  #top = { pass: 0, fail: 0 }

  _transform(chunk, _enc, cb) {
    const text = chunk.toString()
    this.#buf += text
    let nl
    while ((nl = this.#buf.indexOf('\n')) !== -1) {
      this.#line(this.#buf.slice(0, nl))
      this.#buf = this.#buf.slice(nl + 1)
    }
    cb(null, chunk)
  }

  _flush(cb) {
    if (this.#buf) this.#line(this.#buf)
    let pass, fail
    if (this.#tally) {
      pass = this.#tally.pass ?? 0
      fail = (this.#tally.fail ?? 0)
      // anything counted but neither passing, skipped nor todo is a failure
      const other = (this.#tally.total ?? 0) - pass - fail - (this.#tally.skip ?? 0) - (this.#tally.todo ?? 0)
      if (other > 0) fail += other
    } else {
      pass = this.#top.pass
      fail = this.#top.fail || 1
    }
    cb(null, `${pass} passed, ${fail} failed\n`)
  }

  #line(line) {
    const m = /^# \{ (total: .*) \}\s*$/.exec(line)
    if (m) {
      const tally = {}
      for (const part of m[1].split(',')) {
        const [k, v] = part.split(':').map((s) => s.trim())
        if (k && v !== undefined) tally[k] = Number(v)
      }
      this.#tally = tally
      return
    }
    if (/^ok \d+/.test(line)) this.#top.pass++
    else if (/^not ok \d+/.test(line)) this.#top.fail++
  }
}
