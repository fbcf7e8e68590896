#!/usr/bin/env bash
# `npm test`: builds and type-checks (tap runs TypeScript without type checking), then runs
# every tap test. The last line is "N passed, N failed" from tap's own tally; the exit code
# is tap's. Extra arguments go to tap (e.g. `npm test -- test/proxy-semantics.test.ts`).
#
# Output (scripts/tap-summary-reporter.mjs): by default one line per test file, then every
# failure with its test path, diagnostics and the file's last stdout lines, then totals.
#   npm test -- --tap                 tap's full raw TAP instead (as does TETHER_TEST_OUTPUT=tap)
#   npm test -- --coverage-report=text  the coverage table (coverage is off unless asked for)
# A test file's stderr is not part of tap's stream: it is printed as it comes, in both modes.
#
# Speed: the build (dist/) and the type check run side by side; the type check also emits
# every src/ and test/ file into .test-build/, which the test processes run instead of
# transpiling them again (scripts/ts-loader.mjs, registered by package.json's "tap" section).
set -u
cd "$(dirname "$0")/.."

stop() { echo "tether tests: $1" >&2; echo "0 passed, 1 failed"; exit 1; }

args=()
coverage_asked=no
jobs_asked=no
for arg in "$@"; do
  case "$arg" in
    --tap) export TETHER_TEST_OUTPUT=tap ;;
    --coverage-report*|--show-full-coverage|--disable-coverage) coverage_asked=yes; args+=("$arg") ;;
    --jobs*|-j*) jobs_asked=yes; args+=("$arg") ;;
    *) args+=("$arg") ;;
  esac
done
case "${TETHER_TEST_OUTPUT:=summary}" in
  summary|tap) export TETHER_TEST_OUTPUT ;;
  *) stop "TETHER_TEST_OUTPUT must be summary or tap (got \"$TETHER_TEST_OUTPUT\")" ;;
esac
# coverage only when asked for (a --coverage-report or --show-full-coverage argument): it
# slows every test process down (about 10-20% on CPU-bound files) and nobody reads it by default
if [ "$coverage_asked" = no ]; then
  args+=(--disable-coverage)
fi
# two test files at a time at least (`--jobs N` overrides): tap's own default leaves a core
# free, which is one file at a time on a 2-core machine, and most files spend their time
# waiting on processes, timeouts and the network rather than on the CPU. On more cores:
# tap's default (cores - 1, at most 16).
if [ "$jobs_asked" = no ]; then
  args+=("--jobs=$(node -p 'Math.min(16, Math.max(2, require("os").availableParallelism() - 1))')")
fi

[ -x node_modules/.bin/tap ] || stop "dependencies are missing: run npm ci first"

# System servers the tests run for real: provision what is missing (as root, with apt-get),
# or stop at once with the one-line instruction. Tests are never skipped for lack of them.
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
command -v php >/dev/null 2>&1 || need+=(php-cli)
# TLS and HTTP/2 tests: certificates made with openssl, real clients with curl (--http2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v curl >/dev/null 2>&1 || need+=(curl)
# the Laravel example runs on Debian's Laravel 8 (its autoloader; no Composer, no network)
[ -f /usr/share/php/Illuminate/autoload.php ] || need+=(php-laravel-framework)
# nginx as a real upstream with its stock header limits (test/state-header-400.test.ts)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
# the admin status page is tested in headless Chromium (playwright-core drives Debian's build)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "tether tests: installing ${need[*]} (apt-get)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } >&2 \
      || stop "could not install ${need[*]}: run: sudo apt-get install -y ${need[*]}"
  else
    stop "the tests need ${need[*]}: run: sudo apt-get install -y ${need[*]}"
  fi
fi
# the build and the type check in parallel (one core each); their output after both end
logs=$(mktemp -d) || stop "mktemp failed"
trap 'rm -rf "$logs"' EXIT
node_modules/.bin/tsc -p tsconfig.json >"$logs/build" 2>&1 &
build=$!
node_modules/.bin/tsc -p tsconfig.test.json >"$logs/check" 2>&1 &
check=$!
wait "$build"; build_rc=$?
wait "$check"; check_rc=$?
if [ "$build_rc" != 0 ]; then cat "$logs/build"; stop "build failed (tsc -p tsconfig.json)"; fi
if [ "$check_rc" != 0 ]; then cat "$logs/check"; stop "type check failed (tsc -p tsconfig.test.json)"; fi

rm -rf "$logs"; trap - EXIT
exec node_modules/.bin/tap --reporter=./scripts/tap-summary-reporter.mjs "${args[@]}"
