#!/usr/bin/env bash
# Runs the whole system locally: the local stack (LocalStack, Redis, Postgres), the Postgres
# migrations, a demo admin account, a demo catalogue, and the local gateway serving
# template.yaml's API.
# Prints the gateway URL and the admin's credentials; Ctrl-C stops what it started.
#
#   STORE=postgres scripts/run.sh     same, with the Postgres repositories
#   GATEWAY_PORT=8080 scripts/run.sh  another port (default 3000)
#   scripts/run.sh --release          the gateway, and so every function it runs in-process
#                                     (the same builders as the deployed binaries), from a
#                                     release build (fat LTO: ~10 min the first time), for
#                                     measuring locally
set -euo pipefail
profile=debug
build_flags=()
for arg in "$@"; do
  case $arg in
    --release) profile=release; build_flags=(--release) ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
STATE=${ZX_STATE_DIR:-$ROOT/.local}
mkdir -p "$STATE"
started_before=$(cat "$STATE/started" 2>/dev/null || true)
gateway_pid=

cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  if [ -z "$started_before" ] && [ -s "$STATE/started" ]; then scripts/stack.sh down; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/stack.sh up
eval "$(scripts/stack.sh env)"

echo "[run] building the local gateway and zx-admin ($profile; the first build takes a few minutes)"
cargo build --locked -q "${build_flags[@]}" -p zx-local-gateway -p zx-app --bins
bin=./target/$profile

# Tokens are signed in KMS, as deployed: LocalStack's KMS holds the key (alias
# zhixuan-jwt, made on first use); the gateway gets its id and public key, never the key.
# The admin password is local-only, generated once per checkout into .local/ (git-ignored).
keys=$($bin/zx-admin jwt-kms-key zhixuan-jwt)
JWT_SIGNING_KEY_ID=$(sed -n 1p <<<"$keys")
JWT_PUBLIC_KEYS=$(sed -n 2p <<<"$keys")
export JWT_SIGNING_KEY_ID JWT_PUBLIC_KEYS
unset JWT_PRIVATE_KEY
[ -s "$STATE/admin-password" ] || { printf 'Zx-'; head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 14; } > "$STATE/admin-password"
export STORE=${STORE:-dynamodb}
export GATEWAY_PORT=${GATEWAY_PORT:-3000}
export BCRYPT_COST=${BCRYPT_COST:-10}
export RUST_LOG=${RUST_LOG:-info}
# The template names no CORS origins; a local front end on port 3001 may call the gateway.
export CORS_ALLOWED_ORIGINS=${CORS_ALLOWED_ORIGINS:-http://localhost:3001}
ADMIN_EMAIL=${ADMIN_EMAIL:-admin@zhixuan.local}

$bin/zx-admin migrate
ADMIN_PASSWORD=$(cat "$STATE/admin-password") $bin/zx-admin ensure-admin "$ADMIN_EMAIL" admin
$bin/zx-admin seed-catalogue "${DEMO_PRODUCTS:-300}"

$bin/local-gateway > "$STATE/gateway.log" 2>&1 &
gateway_pid=$!
deadline=$((SECONDS + 30))
until curl -sf "http://127.0.0.1:$GATEWAY_PORT/health" >/dev/null; do
  kill -0 "$gateway_pid" 2>/dev/null || { tail -n 20 "$STATE/gateway.log"; echo "[run] the gateway exited"; exit 1; }
  [ $SECONDS -lt $deadline ] || { echo "[run] the gateway did not answer within 30 s"; exit 1; }
  sleep 0.3
done

cat <<EOF

  Zhixuan (智选) is running ($STORE store, $profile build).

  Gateway:        http://127.0.0.1:$GATEWAY_PORT   (logs: $STATE/gateway.log)
  Demo admin:     $ADMIN_EMAIL
  Admin password: $(cat "$STATE/admin-password")

  Try:  curl http://127.0.0.1:$GATEWAY_PORT/health
        curl 'http://127.0.0.1:$GATEWAY_PORT/api/v1/products?category=phones&limit=3'
        Orders: see README.md, "Place an order" (queues polled, relay every minute)
  Stop: Ctrl-C

EOF
wait "$gateway_pid"
