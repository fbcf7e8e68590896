// A closed HTTP/2 connection is freed at once: Node arms each session's idle timer with a
// function bound to the session and does not clear it at destroy, so every closed connection
// (session, socket, buffers) stayed in memory until that timer fired, 61 s at the defaults
// (found by this stop's review: 200 connections opened and closed, all 200 sessions alive after
// gc). A child process (the built dist/, --expose-gc) opens and closes 30 h2c connections and
// counts the server sessions still alive after gc. Runs in the Node 24 pass too (test/h2-*).
import t from 'tap'
import { execFile } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

t.test('h2c: 30 connections opened, answered and closed: no server session is left after gc', async (t) => {
  const out = await new Promise<string>((resolve, reject) => execFile(process.execPath, ['--expose-gc', path.join(root, 'test/fixtures/h2-session-retention.mjs'), path.join(root, 'dist'), '30'],
    { timeout: 60_000 }, (err, stdout, stderr) => (err === null ? resolve(stdout) : reject(new Error(`${err.message}\n${stderr}`)))))
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as { sessions: number; alive: number }
  t.equal(r.sessions, 30, 'every server session seen')
  t.equal(r.alive, 0, 'none alive after gc (before: all 30, held by their idle timer)')
})

// Found by the s55 leak hunt (test/fixtures/leak-probe.mjs, scenario h2-conn-churn): a client that
// drops its connection while an answer is still streaming closes the session from Node's socket
// 'close' handler, which marks it destroyed before it tries to clear the idle timer (a no-op
// then) and never calls session.destroy(): every such session stayed alive for 61 s
// (1000 connections: 1000 sessions alive after gc, 3.8 kB a connection).
t.test('h2c: 30 connections dropped by the client mid-answer: no server session is left after gc', async (t) => {
  const out = await new Promise<string>((resolve, reject) => execFile(process.execPath, ['--expose-gc', path.join(root, 'test/fixtures/h2-session-retention.mjs'), path.join(root, 'dist'), '30', 'destroy'],
    { timeout: 60_000 }, (err, stdout, stderr) => (err === null ? resolve(stdout) : reject(new Error(`${err.message}\n${stderr}`)))))
  const r = JSON.parse(out.trim().split('\n').at(-1)!) as { sessions: number; alive: number }
  t.equal(r.sessions, 30, 'every server session seen')
  t.equal(r.alive, 0, 'none alive after gc (before: all 30, held by their idle timer)')
})
