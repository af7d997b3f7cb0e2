#!/usr/bin/env bash
# Store comparison: register, login and proxied-request throughput of one
# portcullis on SQLite vs. on PostgreSQL, same machine, same run (wrk).
#
#   bench/store_compare.sh            # 5 s per measurement
#   DURATION=10s CONNS=16 bench/store_compare.sh
#
# Needs: target/release/portcullis (cargo build --release), wrk, psql and a
# PostgreSQL on $PG_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres);
# a fresh database portcullis_bench_<pid> is created and dropped.
# register/login are bound by argon2 (one hash per spare core), so they differ
# little between stores; the proxied path with a cached JWT touches no store.
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BIN=${PORTCULLIS_BIN:-target/release/portcullis}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-16}
PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}
PG_DB="portcullis_bench_$$"
PG_URL="${PG_ADMIN_URL%/*}/$PG_DB"
WORK=$(mktemp -d)
PIDS=()

cleanup() {
  # SIGINT: pingora's fast shutdown (SIGTERM would drain for the grace period)
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

command -v wrk >/dev/null || { echo "wrk missing: apt-get install -y wrk" >&2; exit 1; }
psql -q "$PG_ADMIN_URL" -c "CREATE DATABASE $PG_DB" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ECHO_PORT=$(free_port)
"$BIN" echo --listen "127.0.0.1:$ECHO_PORT" >"$WORK/echo.log" 2>&1 &
PIDS+=($!)

cat >"$WORK/register.lua" <<'LUA'
local n = 0
local tag = tostring(math.random(1, 1e9))
request = function()
  n = n + 1
  local body = string.format('{"email":"bench%s_%d@example.com","password":"Vx-bench-%d-Qz9!"}', tag, n, n)
  return wrk.format("POST", "/auth/register", {["Content-Type"] = "application/json"}, body)
end
LUA

PASSWORD="Vx-bench-fixed-Qz9!"
results=()

run_backend() {
  local name=$1 url=$2
  local proxy admin
  proxy=$(free_port); admin=$(free_port)
  cat >"$WORK/$name.toml" <<TOML
[server]
threads = 1
grace_period_seconds = 1
[proxy]
listen = "127.0.0.1:$proxy"
[admin]
listen = "127.0.0.1:$admin"
[upstream]
address = "127.0.0.1:$ECHO_PORT"
[database]
url = "$url"
[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = 0
[lockout]
max_failures = 0
[log]
level = "warn"
TOML
  "$BIN" serve --config "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$admin/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local base="http://127.0.0.1:$proxy"
  curl -fs -X POST "$base/auth/register" -H 'Content-Type: application/json' \
    -d "{\"email\":\"fixed@example.com\",\"password\":\"$PASSWORD\"}" >/dev/null
  local token
  token=$(curl -fs -X POST "$base/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\":\"fixed@example.com\",\"password\":\"$PASSWORD\"}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["accessToken"])')
  cat >"$WORK/login.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"fixed@example.com","password":"$PASSWORD"}'
LUA
  rps() { awk '/Requests\/sec/ {print $2}'; }
  local reg login proxied
  reg=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$WORK/register.lua" "$base" | rps)
  login=$(wrk -t1 -c"$CONNS" -d"$DURATION" -s "$WORK/login.lua" "$base/auth/login" | rps)
  proxied=$(wrk -t1 -c64 -d"$DURATION" -H "Authorization: Bearer $token" "$base/api/bench" | rps)
  results+=("$(printf '| %-10s | %12s | %12s | %14s |' "$name" "$reg" "$login" "$proxied")")
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
}

run_backend sqlite "sqlite://$WORK/bench.db"
run_backend postgres "$PG_URL"

echo
echo "wrk -t1, register/login -c$CONNS, proxied -c64, $DURATION each; requests/s"
echo "| store      |     register |        login | proxied (JWT) |"
echo "|------------|--------------|--------------|---------------|"
printf '%s\n' "${results[@]}"
