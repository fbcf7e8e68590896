// Usage errors a new user meets, each run as a real CLI process: what is wrong and what to
// write instead (a command spelt as another tool's, a second file or id, an empty --config=,
// the other admin command's option, a manifest named twice, an admin address where nothing
// listens). Split from cli-errors.test.ts to keep each file quick on a loaded host.
import t from 'tap'
import { freePort, runCli } from './fixtures/cli.js'

t.test('usage errors a new user meets say what is wrong and what to write instead', async (t) => {
  const closed = await freePort()
  const cases: [string[], string, number][] = [
    [['help'], 'unknown argument "help", did you mean "--help"?', 2],
    [['version'], 'unknown argument "version", did you mean "--version"?', 2],
    [['-V'], 'unknown argument "-V", did you mean "--version"?', 2],
    [['frobnicate'], 'unknown argument "frobnicate" (commands: run, check, import, session, drain)', 2],
    [['check', '--config='], '--config needs a file path (--config=<file>)', 2],
    [['--config', ''], '--config needs a file path', 2],
    [['check', ''], 'check needs a config file (an empty argument was given)', 2],
    [['check', 'a.yaml', 'b.yaml'], 'check takes one config file: "b.yaml" is a second (check each on its own)', 2],
    [['drain', 'app-1', 'app-2'], 'drain takes one upstream id: "app-2" is a second (drain each on its own)', 2],
    [['session', 'k', 'k2'], 'session takes one session key: "k2" is a second', 2],
    [['session', 'k', '--migrate'], '--migrate is an option of tether drain, not of tether session', 2],
    [['drain', 'app-1', '--json'], '--json is an option of tether session, not of tether drain', 2],
    [['import', 'a.yaml', 'b.yaml', 'a.yaml'], 'import: "a.yaml" is named twice', 2],
    [['import', '-', '-'], 'import: stdin (-) is named twice', 2],
    [['import', ''], 'import: a manifest file argument is empty', 2],
    [['drain', 'app-1', '--admin', `http://127.0.0.1:${closed}`], `drain: cannot reach the admin API at http://127.0.0.1:${closed}: ECONNREFUSED (is Tether running with admin.listen at this address? --admin or TETHER_ADMIN names another)`, 1],
  ]
  const runs = await Promise.all(cases.map(([args]) => runCli(args)))
  // the admin address from the environment: named as such
  const fromEnv = await runCli(['drain', 'app-1'], { TETHER_ADMIN: '127.0.0.1:9901' })
  t.equal(fromEnv.code, 2)
  t.equal(fromEnv.stderr.split('\n')[0], 'tether: TETHER_ADMIN: expected a URL like http://127.0.0.1:9901, got "127.0.0.1:9901" (--admin <url> overrides it)')
  const fromFlag = await runCli(['drain', 'app-1', '--admin', '127.0.0.1:9901'], { TETHER_ADMIN: 'http://127.0.0.1:9901' })
  t.equal(fromFlag.stderr.split('\n')[0], 'tether: --admin: expected a URL like http://127.0.0.1:9901, got "127.0.0.1:9901"')
  cases.forEach(([args, message, code], i) => {
    t.equal(runs[i]!.code, code, args.join(' '))
    t.equal(runs[i]!.stderr.split('\n')[0], `tether ${message}`.replace(/^tether (?!drain:)/, 'tether: '), args.join(' '))
  })
})
