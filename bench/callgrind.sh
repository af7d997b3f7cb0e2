#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: unlike CPU time
# they do not move with what else the machine is doing, so small changes
# to the hot path show up here when bench/run.sh's noise hides them.
#
#   bench/callgrind.sh            # release build and plain_pingora must exist
#   SECONDS_PER_CASE=10 bench/callgrind.sh
#
# Runs the plain pingora proxy (bench/plain_pingora.rs, the engine's floor)
# and portcullis (public route, JWT cache hit, API key cache hit) under
# callgrind behind the same nginx `return 200` upstream; for each case it
# zeroes the counters after a warm-up, drives `wrk -t1 -c4` for
# SECONDS_PER_CASE, dumps, and divides the user-space instructions (Ir) by the
# requests wrk completed. The kernel's share (loopback TCP, the same syscalls
# for every case) is not counted. valgrind hides the CPU's SHA extensions,
# so SHA-256 of the token (the cache key) runs the sha2 crate's software
# rounds here, ~40,000 instructions for a 400-byte JWT where SHA-NI needs a
# few hundred: the "w/o soft SHA" column and the ratios leave those out.
# Keeps the dumps in target/callgrind/ for `callgrind_annotate`.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR="$ROOT/bench"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
PLAIN=${PLAIN_PINGORA_BIN:-$ROOT/target/release/examples/plain_pingora}
SECS=${SECONDS_PER_CASE:-8}
BASE_PORT=${BENCH_BASE_PORT:-18300}
UP=$((BASE_PORT + 1)) PLAIN_PORT=$((BASE_PORT + 2)) PC=$((BASE_PORT + 3)) PCADMIN=$((BASE_PORT + 4))
OUT="$ROOT/target/callgrind"

for tool in valgrind callgrind_control wrk nginx; do
    command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
        echo "missing $tool (bench/run.sh installs wrk and nginx; valgrind: apt-get install valgrind)" >&2
        exit 2
    }
done
[ -x "$BIN" ] || { echo "no $BIN: cargo build --release" >&2; exit 2; }
[ -x "$PLAIN" ] || (cd "$ROOT" && cargo build --release --example plain_pingora)
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

TMP=$(mktemp -d /tmp/portcullis-callgrind.XXXXXX)
PIDS=()
trap cleanup EXIT
rm -rf "$OUT" && mkdir -p "$OUT"


cat >"$TMP/upstream.conf" <<EOF
daemon off;
master_process off;
pid $TMP/nginx.pid;
error_log $TMP/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $TMP/body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$UP;
        location / { default_type text/plain; return 200 "hello from upstream\n"; }
    }
}
EOF
"$NGINX" -p "$TMP" -c "$TMP/upstream.conf" &
PIDS+=($!)

portcullis_config "$TMP/portcullis.toml" "$PC" "$PCADMIN" "$UP" "$TMP/portcullis.db" 1

# case name | pid | url | wrk args...
measure() {
    local name=$1 pid=$2 url=$3
    shift 3
    wrk -t1 -c4 -d2s "$@" "$url" >/dev/null # warm-up: connections, caches
    callgrind_control -z "$pid" >/dev/null 2>&1
    local requests
    requests=$(wrk -t1 -c4 -d"${SECS}s" "$@" "$url" | awk '/requests in/ {print $1}')
    callgrind_control --dump="$name" "$pid" >/dev/null 2>&1
    local file ir sha
    file=$(ls -t "$OUT"/*.out.* | head -1)
    mv "$file" "$OUT/$name.callgrind"
    file="$OUT/$name.callgrind"
    ir=$(awk '/^summary:/ {print $2}' "$file")
    sha=$(callgrind_annotate --threshold=100 --auto=no "$file" |
        awk '/sha2::sha256::soft/ { gsub(",", "", $1); s += $1 } END { print s + 0 }')
    printf '%-22s %7d requests  %8.0f instructions/request  %8.0f w/o soft SHA\n' \
        "$name" "$requests" "$(awk -v i="$ir" -v r="$requests" 'BEGIN{print i/r}')" \
        "$(awk -v i="$ir" -v s="$sha" -v r="$requests" 'BEGIN{print (i-s)/r}')"
    echo "$name $((ir - sha)) $requests" >>"$TMP/results"
}

valgrind --tool=callgrind --callgrind-out-file="$OUT/plain.out" \
    "$PLAIN" "127.0.0.1:$PLAIN_PORT" "127.0.0.1:$UP" >"$TMP/plain.log" 2>&1 &
PLAIN_PID=$!
PIDS+=("$PLAIN_PID")
wait_port "$UP"
wait_port "$PLAIN_PORT" 300
measure 9_pingora_plain "$PLAIN_PID" "http://127.0.0.1:$PLAIN_PORT/api/bench"
kill "$PLAIN_PID" && wait "$PLAIN_PID" 2>/dev/null || true
rm -f "$OUT/plain.out"*

valgrind --tool=callgrind --callgrind-out-file="$OUT/portcullis.out" \
    "$BIN" --config "$TMP/portcullis.toml" serve >"$TMP/portcullis.log" 2>&1 &
PC_PID=$!
PIDS+=("$PC_PID")
wait_port "$PC" 300
python3 "$BENCH_DIR/setup_tokens.py" "$PC" "$TMP" 1
JWT=$(cat "$TMP/jwt")
API_KEY=$(cat "$TMP/api_key")
measure 4_portcullis_public "$PC_PID" "http://127.0.0.1:$PC/public/bench"
measure 5_portcullis_jwt "$PC_PID" "http://127.0.0.1:$PC/api/bench" -H "Authorization: Bearer $JWT"
measure 6_portcullis_api_key "$PC_PID" "http://127.0.0.1:$PC/api/bench" -H "X-API-Key: $API_KEY"
kill "$PC_PID" && wait "$PC_PID" 2>/dev/null || true
rm -f "$OUT/portcullis.out"*

awk '{ ipr[$1] = $2 / $3 } END {
    printf "\nportcullis over the plain pingora proxy (instructions/request w/o soft SHA):\n"
    printf "  public route %.2fx, JWT %.2fx, API key %.2fx\n",
        ipr["4_portcullis_public"] / ipr["9_pingora_plain"],
        ipr["5_portcullis_jwt"] / ipr["9_pingora_plain"],
        ipr["6_portcullis_api_key"] / ipr["9_pingora_plain"]
    printf "auth over the public route: JWT %.2fx, API key %.2fx\n",
        ipr["5_portcullis_jwt"] / ipr["4_portcullis_public"],
        ipr["6_portcullis_api_key"] / ipr["4_portcullis_public"]
}' "$TMP/results"
echo "dumps: $OUT/*.callgrind (callgrind_annotate --inclusive=yes <file>)"
