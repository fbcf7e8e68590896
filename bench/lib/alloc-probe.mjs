// Preloaded into the Tether under bench/alloc-per-request.mjs (`node --import`). It does
// nothing until told on stdin, so the proxy's own paths are untouched. Commands, one a line:
//   mark <tag>           -> stderr: ALLOC-PROBE {"mark":tag,"t":<ms since process start>}
//   sites-start <bytes>  -> start V8's sampling heap profiler at that interval, keeping the
//                           samples of objects a scavenge or a full GC has freed (all allocations)
//   sites-stop <file>    -> write the profile (.heapprofile JSON) to <file>, then `mark sites`
// The marks' times are on performance.now()'s scale, a few ms from the timestamps that
// --trace-gc-nvp prints (ms since the isolate started): close enough for windows of seconds.
import inspector from 'node:inspector'
import { writeFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'

let session = null
const post = (method, params) =>
  new Promise((resolve, reject) => session.post(method, params, (err, res) => (err ? reject(err) : resolve(res))))
const mark = (tag) => process.stderr.write(`ALLOC-PROBE ${JSON.stringify({ mark: tag, t: performance.now() })}\n`)

let buf = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', async (chunk) => {
  buf += chunk
  let nl
  while ((nl = buf.indexOf('\n')) >= 0) {
    const [cmd, arg] = buf.slice(0, nl).trim().split(/\s+/, 2)
    buf = buf.slice(nl + 1)
    try {
      if (cmd === 'mark') mark(arg)
      else if (cmd === 'sites-start') {
        session ??= new inspector.Session()
        session.connect()
        await post('HeapProfiler.enable')
        await post('HeapProfiler.startSampling', {
          samplingInterval: Number(arg) || 1024,
          includeObjectsCollectedByMajorGC: true,
          includeObjectsCollectedByMinorGC: true,
        })
        mark('sites-started')
      } else if (cmd === 'sites-stop') {
        const { profile } = await post('HeapProfiler.stopSampling')
        writeFileSync(arg, JSON.stringify(profile))
        mark('sites')
      }
    } catch (err) {
      process.stderr.write(`ALLOC-PROBE-ERROR ${err?.message ?? err}\n`)
    }
  }
})
// Never keep Tether alive on its own account (it stops on SIGTERM as usual).
process.stdin.unref?.()
