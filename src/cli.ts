#!/usr/bin/env node
// Process entry (package.json's bin, the image's ENTRYPOINT): holds SIGTERM, SIGINT and SIGHUP
// first of all (early-signals.ts), then loads the commands (cli-commands.ts) with import() and
// runs the one argv names. An ES module's static imports are all loaded and evaluated before its
// body runs: with the commands imported here, for the 0.1-0.6 s they took to load (the config
// module, yaml, the importer, the admin client...), a pod's SIGTERM or a reload's SIGHUP ended
// the process by Node's default, killed by the signal, nothing logged. So this module imports
// early-signals.js only, which imports nothing (test/cli-early-signals.test.ts checks both).
// Layer 5 wiring.
import { EarlySignals } from './early-signals.js'

const early = new EarlySignals()

import('./cli-commands.js').then(
  (cli) => cli.runCommand(early),
  (err: unknown) => {
    // a module missing from dist/ (a broken install): one line, exit 1 as Node's own failure to
    // load, whose message names the module and who imports it
    if ((err as NodeJS.ErrnoException | null)?.code === 'ERR_MODULE_NOT_FOUND') {
      process.stderr.write(`tether: cannot load its modules: ${err instanceof Error ? err.message : String(err)}\n`)
      process.exit(1)
    }
    // one that does not load (a syntax error, a throw while it is evaluated: a broken build):
    // the message alone named no file, and a SyntaxError's stack names none either (Node keeps
    // the file, line and caret where no JavaScript can read them). Thrown again, unhandled, it
    // is reported by Node as before the entry loaded the commands with import(): the file and
    // line, the source line with a caret, the stack. Exit 1 (exitCode: also where NODE_OPTIONS
    // makes an unhandled rejection a warning).
    process.stderr.write('tether: cannot load its modules (a broken install or build):\n')
    process.exitCode = 1
    throw err
  },
)
