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
  // a broken install (a module missing from dist/): one line, exit 1 as Node's own failure to load
  (err: unknown) => {
    process.stderr.write(`tether: cannot load its modules: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  },
)
