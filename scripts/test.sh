#!/usr/bin/env bash
# `npm test`: builds and type-checks (tap runs TypeScript without type checking), then runs
# every tap test. The last line is "N passed, N failed" from tap's own tally; the exit code
# is tap's. Extra arguments go to tap (e.g. `npm test -- test/proxy-semantics.test.ts`).
set -u
cd "$(dirname "$0")/.."

stop() { echo "tether tests: $1" >&2; echo "0 passed, 1 failed"; exit 1; }

[ -x node_modules/.bin/tap ] || stop "dependencies are missing: run npm ci first"
node_modules/.bin/tsc -p tsconfig.json || stop "build failed (tsc -p tsconfig.json)"
node_modules/.bin/tsc -p tsconfig.test.json || stop "type check failed (tsc -p tsconfig.test.json)"

exec node_modules/.bin/tap --reporter=./scripts/tap-summary-reporter.mjs "$@"
