// tap's node-arg for every test process (package.json "tap"): runs the project's TypeScript
// through scripts/ts-loader-hooks.mjs (tsc's already emitted .test-build/, else a transpile)
// instead of ts-node, which costs 1-6 s of start-up per test file. It acts only when tap's
// TypeScript plugin left ts-node out (TAP_TYPE_STRIP_ONLY=1, set by package.json's test-env);
// with ts-node loaded it does nothing, so `--test-env=TAP_TYPE_STRIP_ONLY=0` is the old way.
import { register } from 'node:module'

if (process.env.TAP_TYPE_STRIP_ONLY === '1') {
  register(new URL('./ts-loader-hooks.mjs', import.meta.url))
  // processes the test spawns (e.g. src/cli.ts through tap's loader) get ts-node as before
  delete process.env.TAP_TYPE_STRIP_ONLY
}
