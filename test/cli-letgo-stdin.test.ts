// Review s60 r1: `tether check -` (and `import -`) blocked reading stdin. Before d49c1ef no
// listener was installed for these commands, so ^C / SIGTERM / SIGHUP ended them at once (Node's
// default). EarlySignals.letGo() kept its JS listeners installed, so the signal was only
// caught by libuv while the synchronous stdin read blocked the event loop: nothing ended the
// command, and once stdin closed it ran to its answer and exited 0, the signal lost. letGo now
// removes them after one turn of the event loop, which the command awaits before it reads.
import t from 'tap'
import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { CLI, plainNode, ROOT } from './fixtures/cli.js'
import { waitFor, within } from './fixtures/wait.js'

/** True while `pid`'s main thread is in read(0, ...) (Linux: /proc/<pid>/syscall). */
function readingStdin(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/syscall`, 'utf8').startsWith('0 0x0 ')
  } catch {
    return false
  }
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  t.test(`check -: a ${signal} while it waits for stdin ends it (killed by the signal), as before`, async (t) => {
    const p = spawn(...plainNode([CLI, 'check', '-']), { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] })
    let out = ''
    p.stdout.on('data', (c) => (out += c))
    p.stderr.on('data', (c) => (out += c))
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => p.on('close', (code, sig) => r({ code, signal: sig })))
    t.teardown(() => { if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL') })
    await waitFor(() => readingStdin(p.pid!), 30_000, 'check - to block reading stdin')
    p.kill(signal)
    // then its input comes (a default disposition has ended the process in kill() already)
    p.stdin.on('error', () => undefined)
    p.stdin.end('upstreams:\n  - { id: a, url: "http://127.0.0.1:9" }\n')
    const exit = await within(exited, 30_000, 'check to end')
    t.same(exit, { code: null, signal }, `killed by ${signal}`)
    t.notMatch(out, /: ok/, 'not carried on to its answer')
  })
}
