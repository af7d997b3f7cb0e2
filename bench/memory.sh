#!/usr/bin/env bash
# Memory target of issue 8: resident memory of portcullis with 100,000
# cached credentials. Starts portcullis (HS256 so tokens can be minted
# without logins; default cache: 100,000 entries, 60 s TTL) against the
# upstream on port $1, presents $N distinct valid JWTs once each, and writes
# "<description> <MiB>" to $2. Called by bench/run.sh.
set -euo pipefail
UP_PORT=$1 OUT=$2
N=${MEMORY_CREDENTIALS:-100000}
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "$0")" && pwd)}
BIN=${PORTCULLIS_BIN:-$BENCH_DIR/../target/release/portcullis}
PORT=${MEMORY_PORT:-18120}
TMP=$(mktemp -d /tmp/portcullis-memory.XXXXXX)
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$TMP"' EXIT
head -c 48 /dev/urandom | base64 | tr -d '\n' >"$TMP/hs256"
cat >"$TMP/portcullis.toml" <<TOML
[proxy]
listen = "127.0.0.1:$PORT"
[admin]
listen = "127.0.0.1:$((PORT + 1))"
[upstream]
address = "127.0.0.1:$UP_PORT"
[database]
url = "sqlite://$TMP/portcullis.db"
[jwt]
algorithm = "HS256"
hs256_secret_file = "$TMP/hs256"
[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = 0
[log]
level = "warn"
TOML
"$BIN" --config "$TMP/portcullis.toml" serve >"$TMP/log" 2>&1 &
PID=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
python3 "$BENCH_DIR/mint_tokens.py" "$PORT" "$TMP/hs256" "$N" "$TMP/tokens.txt"
rss() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
misses() {
    curl -s "http://127.0.0.1:$((PORT + 1))/metrics" |
        awk '/^portcullis_auth_cache_requests_total\{cache="jwt",result="miss"\}/ {n = $2} END {print n + 0}'
}
idle=$(rss)
# wrk presents each token once (bench/wrk/tokens_once.lua); stop it when all were verified
TOKENS="$TMP/tokens.txt" wrk -t1 -c16 -d120s -s "$BENCH_DIR/wrk/tokens_once.lua" \
    "http://127.0.0.1:$PORT/api/bench" >"$TMP/wrk.out" 2>&1 &
WRK=$!
while kill -0 "$WRK" 2>/dev/null && [ "$(misses)" -lt "$N" ]; do sleep 0.5; done
kill "$WRK" 2>/dev/null || true
wait "$WRK" 2>/dev/null || true
cached=$(misses)
sleep 1
after=$(rss)
mib=$(awk -v k="$after" 'BEGIN{printf "%.1f", k/1024}')
idle_mib=$(awk -v k="$idle" 'BEGIN{printf "%.1f", k/1024}')
desc="$mib MiB resident with $cached distinct JWTs verified and cached ($idle_mib MiB before)"
echo "$desc $mib" >"$OUT"
echo "memory: $desc"
