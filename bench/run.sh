#!/usr/bin/env bash
# Side-by-side benchmark of portcullis against nginx (issue 8).
#
#   bench/run.sh                      # build must exist: cargo build --release
#   ROUNDS=3 DURATION=5 CONNECTIONS=64 MEMORY=1 THREADS=1 bench/run.sh
#   ONLY='^(2|4|5)_' MEMORY=0 bench/run.sh   # a quick look at some cases, no report
#   H2=0 bench/run.sh                 # without bench/h2.sh (HTTP/2 and gRPC, issue 17)
#
# Starts, on loopback, an nginx `return 200` upstream, an nginx proxy_pass
# (upstream keep-alive), an nginx auth_request -> portcullis /auth/verify
# front, and portcullis itself (SQLite in a temp dir, rate limits off, log
# level warn), then measures the eight cases of issue 8 in interleaved rounds
# (each case once per round, the median of the rounds is reported), all with
# `wrk -t1 -c$CONNECTIONS -d$DURATION`. Server CPU per request is the
# utime+stime (from /proc) of the proxy layer's processes (not the shared
# upstream, not wrk) divided by the requests served. Writes BENCHMARKS.md
# (results + bench/PROFILE.md) and prints the ratios. Installs wrk and nginx
# from Debian when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_DIR="$ROOT/bench"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
LOGIN_CONNECTIONS=${LOGIN_CONNECTIONS:-4}
MISS_TOKENS=${MISS_TOKENS:-3000}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
# portcullis' server.threads; 1 matches nginx's one worker (see BENCHMARKS.md)
THREADS=${THREADS:-1}
ONLY=${ONLY:-}
BASE_PORT=${BENCH_BASE_PORT:-18100}
UP=$((BASE_PORT + 1)) NGX=$((BASE_PORT + 2)) NGXAUTH=$((BASE_PORT + 3))
PC=$((BASE_PORT + 10)) PCADMIN=$((BASE_PORT + 11)) PLAIN_PORT=$((BASE_PORT + 12))

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
command -v wrk >/dev/null || missing+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release first" >&2; exit 2; }
# case 9's reference proxy (bench/plain_pingora.rs), built here when missing
PLAIN=${PLAIN_PINGORA_BIN:-$ROOT/target/release/examples/plain_pingora}
[ -x "$PLAIN" ] || (cd "$ROOT" && cargo build --release --example plain_pingora)

TMP=$(mktemp -d /tmp/portcullis-bench.XXXXXX)
PIDS=()
trap cleanup EXIT

# ---- servers ---------------------------------------------------------------
# nginx_conf (bench/lib.sh), the proxies with their upstream blocks
UPSTREAMS="    upstream application { server 127.0.0.1:$UP; keepalive 64; keepalive_requests 1000000; }
    upstream portcullis { server 127.0.0.1:$PC; keepalive 64; keepalive_requests 1000000; }"

nginx_conf upstream "127.0.0.1:$UP" '        location / { default_type text/plain; return 200 "hello from upstream\n"; }'
nginx_conf proxy "127.0.0.1:$NGX" '        location / {
            proxy_pass http://application;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }' "$UPSTREAMS"
nginx_conf authreq "127.0.0.1:$NGXAUTH" '        location / {
            auth_request /_portcullis_verify;
            auth_request_set $auth_user_id $upstream_http_x_auth_user_id;
            auth_request_set $auth_roles $upstream_http_x_auth_roles;
            proxy_set_header X-Auth-User-Id $auth_user_id;
            proxy_set_header X-Auth-Roles $auth_roles;
            proxy_pass http://application;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
        location = /_portcullis_verify {
            internal;
            proxy_pass http://portcullis/auth/verify;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-Method $request_method;
            proxy_set_header X-Original-URI $request_uri;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
        }' "$UPSTREAMS"

portcullis_config "$TMP/portcullis.toml" "$PC" "$PCADMIN" "$UP" "$TMP/portcullis.db" "$THREADS" \
    "[cache]
# smaller than the $MISS_TOKENS distinct tokens of case 7, so they miss
max_entries = 1000"
"$BIN" --config "$TMP/portcullis.toml" serve >"$TMP/portcullis.log" 2>&1 &
PC_PID=$!
PIDS+=("$PC_PID")
"$PLAIN" "127.0.0.1:$PLAIN_PORT" "127.0.0.1:$UP" >"$TMP/plain.log" 2>&1 &
PLAIN_PID=$!
PIDS+=("$PLAIN_PID")

for p in $UP $NGX $NGXAUTH $PC $PCADMIN $PLAIN_PORT; do
    wait_port "$p" || {
        cat "$TMP"/*/error.log "$TMP/portcullis.log" "$TMP/plain.log" >&2 || true
        exit 1
    }
done

echo "fixtures: a user, an API key, $MISS_TOKENS distinct access tokens"
python3 "$BENCH_DIR/setup_tokens.py" "$PC" "$TMP" "$MISS_TOKENS"
JWT=$(cat "$TMP/jwt")
API_KEY=$(cat "$TMP/api_key")
export TOKENS="$TMP/tokens.txt"
export LOGIN_EMAIL LOGIN_PASSWORD
{ read -r LOGIN_EMAIL; read -r LOGIN_PASSWORD; } <"$TMP/login"

# ---- measurement -----------------------------------------------------------
TICK=$(getconf CLK_TCK)
pids_of() { # the processes of a server: portcullis, or an nginx master and its workers
    case "$1" in
        portcullis) echo "$PC_PID" ;;
        plain) echo "$PLAIN_PID" ;;
        *)
            local m
            m=$(cat "$TMP/$1/master")
            echo "$m $(pgrep -P "$m" | tr '\n' ' ')"
            ;;
    esac
}
cpu_ticks() { # utime+stime of the given servers' processes, in clock ticks
    local total=0 s p
    for s in "$@"; do
        for p in $(pids_of "$s"); do
            total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
        done
    done
    echo "$total"
}
wrk_run() { # duration, url, extra wrk args...
    local d=$1 url=$2
    shift 2
    wrk -t1 -c"$CONNECTIONS" -d"${d}s" --timeout 5s "$@" "$url"
}

# case id | servers whose CPU counts | url | wrk args
CASES=(
    "1_upstream|upstream|http://127.0.0.1:$UP/api/bench|"
    "2_nginx_proxy|proxy|http://127.0.0.1:$NGX/api/bench|"
    "3_nginx_auth_request|authreq portcullis|http://127.0.0.1:$NGXAUTH/api/bench|-H|Authorization: Bearer $JWT"
    "4_portcullis_public|portcullis|http://127.0.0.1:$PC/public/bench|"
    "5_portcullis_jwt|portcullis|http://127.0.0.1:$PC/api/bench|-H|Authorization: Bearer $JWT"
    "6_portcullis_api_key|portcullis|http://127.0.0.1:$PC/api/bench|-H|X-API-Key: $API_KEY"
    "7_portcullis_jwt_miss|portcullis|http://127.0.0.1:$PC/api/bench|-s|$BENCH_DIR/wrk/tokens.lua"
    "8_login_storm|portcullis|http://127.0.0.1:$PC/api/bench|-H|Authorization: Bearer $JWT"
    "9_pingora_plain|plain|http://127.0.0.1:$PLAIN_PORT/api/bench|"
)

if [ -n "$ONLY" ]; then
    selected=()
    for spec in "${CASES[@]}"; do [[ $spec =~ $ONLY ]] && selected+=("$spec"); done
    CASES=("${selected[@]}")
fi

RESULTS="$TMP/results.tsv"
printf 'case\tround\trequests\tseconds\tnon2xx\terrors\tp50\tp99\tp999\tcpu_us\tlogins\n' >"$RESULTS"

run_case() { # spec, round, duration
    local spec=$1 round=$2 d=$3 name servers url
    IFS='|' read -r name servers url rest <<<"$spec"
    local args=()
    [ -n "$rest" ] && IFS='|' read -r -a args <<<"$rest"
    [[ " ${args[*]-} " == *" -s "* ]] || args+=(-s "$BENCH_DIR/wrk/summary.lua")
    # shellcheck disable=SC2086
    local before after out login_out="" logins=0
    before=$(cpu_ticks $servers)
    if [ "$name" = 8_login_storm ]; then
        wrk -t1 -c"$LOGIN_CONNECTIONS" -d"${d}s" --timeout 10s -s "$BENCH_DIR/wrk/login.lua" \
            "http://127.0.0.1:$PC/auth/login" >"$TMP/login.out" 2>&1 &
        local lpid=$!
        out=$(wrk_run "$d" "$url" "${args[@]}")
        wait "$lpid" || true
        login_out=$(grep '^RESULT' "$TMP/login.out" || true)
    else
        out=$(wrk_run "$d" "$url" "${args[@]}")
    fi
    # shellcheck disable=SC2086
    after=$(cpu_ticks $servers)
    [ "$round" = warmup ] && return 0
    local line
    line=$(grep '^RESULT' <<<"$out") || { echo "$out" >&2; exit 1; }
    eval "$(sed 's/^RESULT //' <<<"$line")" # requests duration_us non2xx errors p50 p99 p999
    if [ -n "$login_out" ]; then
        local r=$requests d_us=$duration_us n=$non2xx e=$errors a=$p50 b=$p99 c=$p999
        eval "$(sed 's/^RESULT //' <<<"$login_out")"
        logins=$(awk -v r="$requests" -v n="$non2xx" -v d="$duration_us" 'BEGIN{printf "%.1f", (r-n)/(d/1e6)}')
        requests=$r duration_us=$d_us non2xx=$n errors=$e p50=$a p99=$b p999=$c
    fi
    local cpu_us
    cpu_us=$(awk -v t=$((after - before)) -v k="$TICK" -v r="$requests" 'BEGIN{printf "%.2f", t*1e6/k/r}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$requests" \
        "$(awk -v d="$duration_us" 'BEGIN{printf "%.3f", d/1e6}')" "$non2xx" "$errors" \
        "$p50" "$p99" "$p999" "$cpu_us" "$logins" >>"$RESULTS"
    printf '  %-22s %8.0f req/s  p99 %6s us  cpu %7s us/req%s\n' "$name" \
        "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN{print r/(d/1e6)}')" "$p99" "$cpu_us" \
        "$([ "$logins" != 0 ] && echo "  logins $logins/s")"
}

miss_ratio() {
    curl -s "http://127.0.0.1:$PCADMIN/metrics" |
        awk '/^portcullis_auth_cache_requests_total\{cache="jwt",result="(hit|miss)"\}/ {
               if ($1 ~ /hit/) h=$2; else m=$2 } END { printf "%d %d", h, m }'
}

START=$(date +%s)
echo "warm-up (1 s per case)"
for spec in "${CASES[@]}"; do run_case "$spec" warmup 1; done
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS (${DURATION} s per case, -c$CONNECTIONS)"
    for spec in "${CASES[@]}"; do
        if [[ $spec == 7_* ]]; then read -r h0 m0 <<<"$(miss_ratio)"; fi
        run_case "$spec" "$round" "$DURATION"
        if [[ $spec == 7_* ]]; then
            read -r h1 m1 <<<"$(miss_ratio)"
            echo "$(((m1 - m0) * 1000 / (h1 - h0 + m1 - m0 + 1)))" >>"$TMP/miss_permille"
        fi
    done
done
MEMORY_ARGS=()
if [ "${MEMORY:-1}" = 1 ]; then
    echo "memory: 100,000 cached credentials"
    PORTCULLIS_BIN="$BIN" bash "$BENCH_DIR/memory.sh" "$UP" "$TMP/memory" &&
        MEMORY_ARGS=(--memory "$TMP/memory")
fi
ELAPSED=$(($(date +%s) - START))
# HTTP/2 and gRPC (issue 17): bench/h2.sh, its own servers, writes bench/H2.md
# (report.py appends it); H2=0 skips it, and so does an ONLY none of its cases match
if [ "${H2:-1}" != 0 ]; then
    ROUNDS=$ROUNDS DURATION=$DURATION THREADS=$THREADS ONLY=$ONLY PORTCULLIS_BIN=$BIN BENCH_OUT=$OUT \
        bash "$BENCH_DIR/h2.sh" || echo "bench/h2.sh failed: the report keeps the last bench/H2.md" >&2
fi
if [ -n "$ONLY" ]; then
    echo "ONLY=$ONLY: no report written"
    exit 0
fi

# kept so that the report can be re-made (e.g. after editing bench/PROFILE.md)
mkdir -p "$ROOT/target" && cp "$RESULTS" "$ROOT/target/bench-results.tsv"
[ -f "$TMP/memory" ] && cp "$TMP/memory" "$ROOT/target/bench-memory.txt"
python3 "$BENCH_DIR/report.py" "$RESULTS" "$OUT" \
    --cores "$(nproc)" --rounds "$ROUNDS" --duration "$DURATION" --connections "$CONNECTIONS" \
    --login-connections "$LOGIN_CONNECTIONS" --miss-tokens "$MISS_TOKENS" --elapsed "$ELAPSED" \
    --miss-permille "$(paste -sd, "$TMP/miss_permille")" \
    --threads "$THREADS" --binary "${BIN#"$ROOT"/}" \
    --nginx "$("$NGINX" -v 2>&1 | sed 's/.*: //')" --wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')" \
    --profile "$BENCH_DIR/PROFILE.md" "${MEMORY_ARGS[@]}"
