#!/usr/bin/env bash
# All tests: brings the local stack up (reusing services already running), then
# cargo fmt --check, cargo clippy -D warnings, cfn-lint and sam validate --lint on template.yaml,
# and every test
# (unit, the compile-fail doctest of zx_app::http_function!, the repository contract suite on DynamoDB and Postgres, end-to-end through the local
# gateway, the short fault set under load on both backends) with cargo-nextest, then the API contract (scripts/api-check.py: the OpenAPI
# description validated, the docs page in headless Chromium, Schemathesis over every operation).
# Prints "N passed, M failed" and exits non-zero on any failure. Stops what it started.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STATE=${ZX_STATE_DIR:-$ROOT/.local}
started_before=$(cat "$STATE/started" 2>/dev/null || true)
t0=$SECONDS

stop_if_started_here() {
  if [ -z "$started_before" ] && [ -s "$STATE/started" ] && [ -z "${ZX_KEEP_STACK:-}" ]; then
    scripts/stack.sh down
  fi
}
trap stop_if_started_here EXIT

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "[test] installing cargo-nextest from crates.io"
  cargo install cargo-nextest --locked || { echo "0 passed, 1 failed (cannot install cargo-nextest)"; exit 1; }
fi

scripts/stack.sh up || { echo "0 passed, 1 failed (local stack did not start)"; exit 1; }
eval "$(scripts/stack.sh env)"

failed_checks=()
echo "[test] cargo fmt --check"
cargo fmt --all -- --check || failed_checks+=(fmt)
echo "[test] cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings || failed_checks+=(clippy)
# The functions' own build (no Postgres adapter) compiles only without the workspace's tests.
cargo clippy -p zx-app --no-default-features --lib --locked -- -D warnings || failed_checks+=(clippy)

echo "[test] cfn-lint template.yaml, sam validate --lint"
CHECK_TOOLS=$(scripts/venv.sh check) || { echo "cannot install cfn-lint and aws-sam-cli from PyPI"; CHECK_TOOLS=/nonexistent; }
AWS_DEFAULT_REGION=us-east-1 "$CHECK_TOOLS/cfn-lint" template.yaml || failed_checks+=(template)
AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 "$CHECK_TOOLS/sam" validate --lint -t template.yaml || failed_checks+=(template)

echo "[test] cargo nextest run (unit, contract, end-to-end)"
log=$(mktemp)
cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$log"
nextest_status=${PIPESTATUS[0]}
summary=$(grep -E '^\s*Summary \[' "$log" | tail -n 1)
passed=$(grep -oE '[0-9]+ passed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
failed=$(grep -oE '[0-9]+ failed' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
timed_out=$(grep -oE '[0-9]+ timed out' <<<"$summary" | grep -oE '[0-9]+' || echo 0)
failed=$((failed + timed_out))
if [ "$nextest_status" -ne 0 ] && [ "$failed" -eq 0 ]; then failed=1; fi  # build failure
# The short fault set's lines (one per scenario and backend: answers, invariants, recovery).
fault_lines=$(grep -E '^\s*\[faults\] (dynamodb|postgres) \|' "$log" | sed -E 's/^\s+//' | sort -u)
rm -f "$log"

echo "[test] compile-fail: a handler calling what its function's ports lack does not compile"
# The doctest of zx_app::http_function! must fail with E0599 (no such method on the port);
# stable rustdoc ignores the error code, so it runs through a rustdoc that checks it.
RUSTDOC="$ROOT/scripts/rustdoc-checking-error-codes.sh" cargo test -p zx-app --doc --locked \
  || failed_checks+=(compile-fail)

echo "[test] API contract: OpenAPI 3.1 description, docs page in Chromium, Schemathesis"
api_log=$(mktemp)
python3 scripts/api-check.py 2>&1 | tee "$api_log"
[ "${PIPESTATUS[0]}" -eq 0 ] || failed_checks+=(api)
api_summary=$(grep -oE '^api-check: [0-9]+ cases, [0-9]+ failures.*fuzzing [0-9]+ s' "$api_log" | tail -n 1)
rm -f "$api_log"

check() { [[ " ${failed_checks[*]} " == *" $1 "* ]] && echo "$1 FAILED" || echo "$1 ok"; }
checks="$(check fmt), $(check clippy), $(check template), $(check compile-fail), $(check api)${api_summary:+ (${api_summary#api-check: })}"
echo
[ -n "$fault_lines" ] && echo "$fault_lines"
echo "$passed passed, $failed failed ($checks; $((SECONDS - t0)) s)"
[ "$failed" -eq 0 ] && [ ${#failed_checks[@]} -eq 0 ]
