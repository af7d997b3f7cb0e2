#!/usr/bin/env bash
# HTTP/2 and gRPC unary through portcullis against the upstream direct (issue 17).
#
#   bench/h2.sh                               # build must exist: cargo build --release
#   ROUNDS=3 DURATION=5 bench/h2.sh           # what bench/run.sh runs at its end
#   ONLY='^h[12]_portcullis' ROUNDS=1 DURATION=2 bench/h2.sh   # a quick look, no report
#
# Starts, on loopback: an nginx `return 200` upstream over HTTP/1.1 and
# another on an h2c listener (`listen … http2`, prior knowledge), a grpcio
# server (bench/grpc_load.py: /bench.Echo/Unary echoes the request), and two
# portcullis (SQLite in a temp dir, rate limits off, log level warn,
# server.threads = $THREADS): one in front of the HTTP/1.1 nginx, one in front
# of the grpcio server with `upstream.protocol = "h2c"`. Then, in interleaved
# rounds (a 1 s warm-up of every case, then every case once per round, the
# median of the rounds reported):
#   h1_upstream_direct   h2load --h1 at the HTTP/1.1 nginx (reference)
#   h2_upstream_direct   h2load (h2c) at the h2c nginx
#   h1_portcullis_jwt    h2load --h1, cached JWT, through portcullis
#   h2_portcullis_jwt    h2load (h2c), cached JWT, through portcullis
#   h2_portcullis_jwt_m1 the same, one stream per connection, as many connections as h1
#   grpc_direct          grpc_load.py client at the grpcio server
#   grpc_portcullis      grpc_load.py client, cached JWT, through portcullis
# h2load runs `-t1 -D$DURATION`, over h2 `-c$H2_CLIENTS -m$H2_STREAMS`, over
# HTTP/1.1 `-c$((H2_CLIENTS * H2_STREAMS)) -m1`: the same requests in flight
# (pingora's HTTP/1.1 server does not answer pipelined requests: with `--h1
# -m10` the first of each connection is answered, the rest get 502 or
# nothing); latencies come from its --log-file. CPU per request
# as in run.sh: utime+stime from /proc of the measured server (portcullis; an
# nginx master and its workers; the grpcio server), divided by the requests
# answered; the upstream's CPU per request is reported beside it.
# Writes bench/H2.md (which bench/report.py appends to BENCHMARKS.md) and
# puts it in $BENCH_OUT (default BENCHMARKS.md) in place of the section it
# replaces. Installs nghttp2-client (h2load) and nginx from Debian, and
# grpcio into target/bench-venv, when missing.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export BENCH_DIR="$ROOT/bench"
# shellcheck source=bench/lib.sh
source "$BENCH_DIR/lib.sh"
BIN=${PORTCULLIS_BIN:-$ROOT/target/release/portcullis}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
THREADS=${THREADS:-1}
ONLY=${ONLY:-}
H2_CLIENTS=${H2_CLIENTS:-16}
H2_STREAMS=${H2_STREAMS:-10}
GRPC_CONCURRENCY=${GRPC_CONCURRENCY:-64}
OUT=${BENCH_OUT:-$ROOT/BENCHMARKS.md}
OUT_MD=${H2_MD:-$BENCH_DIR/H2.md}
# 200 above run.sh's ports: run.sh's servers are still up when it calls this
BASE_PORT=$((${BENCH_BASE_PORT:-18100} + 200))
UP=$((BASE_PORT + 1)) UPH2=$((BASE_PORT + 2)) GRPC_PORT=$((BASE_PORT + 3))
PC=$((BASE_PORT + 10)) PCADMIN=$((BASE_PORT + 11)) PCG=$((BASE_PORT + 12)) PCGADMIN=$((BASE_PORT + 13))

# case id | servers whose CPU counts | upstream servers (CPU reported beside) | load | target
# load: h1 (h2load --h1, C×M connections, 1 request each in flight), h2 (C
# connections, M streams each), h2m1 (h2, C×M connections, 1 stream each), grpc
CASES=(
    "h1_upstream_direct|upstream||h1|http://127.0.0.1:$UP/api/bench"
    "h2_upstream_direct|upstream_h2||h2|http://127.0.0.1:$UPH2/api/bench"
    "h1_portcullis_jwt|portcullis|upstream|h1|http://127.0.0.1:$PC/api/bench"
    "h2_portcullis_jwt|portcullis|upstream|h2|http://127.0.0.1:$PC/api/bench"
    "h2_portcullis_jwt_m1|portcullis|upstream|h2m1|http://127.0.0.1:$PC/api/bench"
    "grpc_direct|grpc_server||grpc|127.0.0.1:$GRPC_PORT"
    "grpc_portcullis|portcullis_grpc|grpc_server|grpc|127.0.0.1:$PCG"
)
if [ -n "$ONLY" ]; then
    selected=()
    for spec in "${CASES[@]}"; do [[ ${spec%%|*} =~ $ONLY ]] && selected+=("$spec"); done
    if [ ${#selected[@]} -eq 0 ]; then
        echo "bench/h2.sh: ONLY=$ONLY selects none of its cases"
        exit 0
    fi
    CASES=("${selected[@]}")
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
missing=()
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$BIN" ] || { echo "no $BIN: run cargo build --release first" >&2; exit 2; }
GRPC_VERSION=1.85.3 # as tests/differential/requirements.txt
PY=${GRPC_PYTHON:-}
if [ -z "$PY" ]; then
    for v in "$ROOT/target/diff-venv" "$ROOT/target/bench-venv"; do
        if [ -x "$v/bin/python" ] && "$v/bin/python" -c 'import grpc' 2>/dev/null; then
            PY=$v/bin/python
            break
        fi
    done
fi
if [ -z "$PY" ]; then
    echo "installing grpcio $GRPC_VERSION into target/bench-venv"
    python3 -m venv "$ROOT/target/bench-venv"
    "$ROOT/target/bench-venv/bin/pip" install -q "grpcio==$GRPC_VERSION"
    PY=$ROOT/target/bench-venv/bin/python
fi

TMP=$(mktemp -d /tmp/portcullis-h2.XXXXXX)
PIDS=()
trap cleanup EXIT

# ---- servers ---------------------------------------------------------------
# nginx_conf (bench/lib.sh): name, listen address and flags, server-block body

HELLO='        location / { default_type text/plain; return 200 "hello from upstream\n"; }'
nginx_conf upstream "127.0.0.1:$UP" "$HELLO"
nginx_conf upstream_h2 "127.0.0.1:$UPH2 http2" "$HELLO"
"$PY" "$BENCH_DIR/grpc_load.py" server "$GRPC_PORT" >"$TMP/grpc_server.log" 2>&1 &
GRPC_PID=$!
PIDS+=("$GRPC_PID")

portcullis_config "$TMP/portcullis.toml" "$PC" "$PCADMIN" "$UP" "$TMP/portcullis.db" "$THREADS"
"$BIN" --config "$TMP/portcullis.toml" serve >"$TMP/portcullis.log" 2>&1 &
PC_PID=$!
PIDS+=("$PC_PID")
portcullis_config "$TMP/portcullis_grpc.toml" "$PCG" "$PCGADMIN" "$GRPC_PORT" "$TMP/portcullis_grpc.db" "$THREADS"
sed -i 's/^\[upstream\]$/&\nprotocol = "h2c"/' "$TMP/portcullis_grpc.toml"
"$BIN" --config "$TMP/portcullis_grpc.toml" serve >"$TMP/portcullis_grpc.log" 2>&1 &
PCG_PID=$!
PIDS+=("$PCG_PID")

for p in $UP $UPH2 $GRPC_PORT $PC $PCADMIN $PCG $PCGADMIN; do
    wait_port "$p" || {
        cat "$TMP"/*/error.log "$TMP"/*.log >&2 || true
        exit 1
    }
done

echo "fixtures: a user and its access token on each portcullis"
mkdir -p "$TMP/fx" "$TMP/fx_grpc"
python3 "$BENCH_DIR/setup_tokens.py" "$PC" "$TMP/fx" 0
python3 "$BENCH_DIR/setup_tokens.py" "$PCG" "$TMP/fx_grpc" 0
JWT=$(cat "$TMP/fx/jwt")
JWT_GRPC=$(cat "$TMP/fx_grpc/jwt")

# ---- measurement -----------------------------------------------------------
TICK=$(getconf CLK_TCK)
pids_of() { # the processes of a server: a portcullis, the grpcio server, or an nginx master and its workers
    case "$1" in
        portcullis) echo "$PC_PID" ;;
        portcullis_grpc) echo "$PCG_PID" ;;
        grpc_server) echo "$GRPC_PID" ;;
        *)
            local m
            m=$(cat "$TMP/$1/master")
            echo "$m $(pgrep -P "$m" | tr '\n' ' ')"
            ;;
    esac
}
cpu_ticks() { # utime+stime of the given servers' processes (all threads), in clock ticks
    local total=0 s p
    for s in "$@"; do
        for p in $(pids_of "$s"); do
            total=$((total + $(sed 's/^.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
        done
    done
    echo "$total"
}

h2load_flags() { # LOAD: h2load's flags for it
    case "$1" in
        h1) echo "--h1 -c$((H2_CLIENTS * H2_STREAMS)) -m1" ;;
        h2) echo "-c$H2_CLIENTS -m$H2_STREAMS" ;;
        h2m1) echo "-c$((H2_CLIENTS * H2_STREAMS)) -m1" ;;
    esac
}
# h2load_run LOAD URL SECONDS AUTH: prints a RESULT line like bench/wrk/summary.lua's
h2load_run() {
    local load=$1 url=$2 d=$3 auth=$4 log="$TMP/h2load.log" out flags
    read -r -a flags <<<"$(h2load_flags "$load")"
    local args=(-t1 "${flags[@]}" -D"$d" --log-file="$log")
    [ -n "$auth" ] && args+=(-H "authorization: Bearer $auth")
    rm -f "$log"
    # h2load waits for every answer after -D: a server that never answers would hang it
    out=$(timeout $((d + 30)) h2load "${args[@]}" "$url" 2>&1) || { echo "$out" >&2; return 1; }
    local secs
    secs=$(awk '/^finished in/ { v = $3; sub(/,$/, "", v);
                 if (v ~ /ms$/) { sub(/ms$/, "", v); v /= 1000 } else sub(/s$/, "", v); print v }' <<<"$out")
    [ -n "$secs" ] || { echo "$out" >&2; return 1; }
    # log rows: start (µs since epoch), status (-1: stream failed), µs to the end of the response
    awk -F'\t' -v lat="$TMP/lat" '$2 == -1 { e++; next } { if ($2 < 200 || $2 > 299) n++; print $3 >lat }
                END { printf "%d %d\n", e, n }' "$log" >"$TMP/counts"
    local errors non2xx
    read -r errors non2xx <"$TMP/counts"
    sort -n "$TMP/lat" | awk -v secs="$secs" -v e="$errors" -v n="$non2xx" '{ a[NR] = $1 }
        function p(q,  i) { i = int(NR * q / 100) + 1; if (i > NR) i = NR; return NR ? a[i] : 0 }
        END { printf "RESULT requests=%d duration_us=%d non2xx=%d errors=%d p50=%d p99=%d p999=%d\n",
              NR + e, secs * 1e6, n, e, p(50), p(99), p(99.9) }'
}

RESULTS="$TMP/results.tsv"
printf 'case\tround\trequests\tseconds\tnon2xx\terrors\tp50\tp99\tp999\tcpu_us\tupstream_cpu_us\tload\n' >"$RESULTS"

run_case() { # spec, round, duration
    local spec=$1 round=$2 d=$3 name servers upstreams load target
    IFS='|' read -r name servers upstreams load target <<<"$spec"
    local before after ubefore=0 uafter=0 out
    # shellcheck disable=SC2086
    before=$(cpu_ticks $servers)
    # shellcheck disable=SC2086
    [ -n "$upstreams" ] && ubefore=$(cpu_ticks $upstreams)
    case "$load" in
        grpc)
            local token=""
            [ "$servers" = portcullis_grpc ] && token=$JWT_GRPC
            out=$("$PY" "$BENCH_DIR/grpc_load.py" client "$target" "$d" \
                --concurrency "$GRPC_CONCURRENCY" --token "$token")
            ;;
        *)
            local token=""
            [ "$servers" = portcullis ] && token=$JWT
            out=$(h2load_run "$load" "$target" "$d" "$token")
            ;;
    esac
    # shellcheck disable=SC2086
    after=$(cpu_ticks $servers)
    # shellcheck disable=SC2086
    [ -n "$upstreams" ] && uafter=$(cpu_ticks $upstreams)
    [ "$round" = warmup ] && return 0
    local line requests duration_us non2xx errors p50 p99 p999
    line=$(grep '^RESULT' <<<"$out") || { echo "$out" >&2; exit 1; }
    eval "${line#RESULT }"
    [ "$requests" -gt 0 ] || { echo "$name: no requests answered" >&2; exit 1; }
    local cpu_us up_us=""
    cpu_us=$(awk -v t=$((after - before)) -v k="$TICK" -v r="$requests" 'BEGIN{printf "%.2f", t*1e6/k/r}')
    [ -n "$upstreams" ] &&
        up_us=$(awk -v t=$((uafter - ubefore)) -v k="$TICK" -v r="$requests" 'BEGIN{printf "%.2f", t*1e6/k/r}')
    local how="$GRPC_CONCURRENCY calls in flight, 1 channel"
    [ "$load" = grpc ] || how="h2load $(h2load_flags "$load")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$requests" \
        "$(awk -v d="$duration_us" 'BEGIN{printf "%.3f", d/1e6}')" "$non2xx" "$errors" \
        "$p50" "$p99" "$p999" "$cpu_us" "$up_us" "$how" >>"$RESULTS"
    printf '  %-20s %8.0f req/s  p99 %6s us  cpu %7s us/req%s%s\n' "$name" \
        "$(awk -v r="$requests" -v d="$duration_us" 'BEGIN{print r/(d/1e6)}')" "$p99" "$cpu_us" \
        "${up_us:+  (upstream $up_us)}" "$([ $((non2xx + errors)) -gt 0 ] && echo "  non-2xx $non2xx, errors $errors")"
}

START=$(date +%s)
echo "warm-up (1 s per case)"
for spec in "${CASES[@]}"; do run_case "$spec" warmup 1; done
for round in $(seq "$ROUNDS"); do
    echo "round $round/$ROUNDS (${DURATION} s per case)"
    for spec in "${CASES[@]}"; do run_case "$spec" "$round" "$DURATION"; done
done
ELAPSED=$(($(date +%s) - START))
mkdir -p "$ROOT/target" && cp "$RESULTS" "$ROOT/target/bench-h2-results.tsv"
if [ -n "$ONLY" ]; then
    echo "ONLY=$ONLY: no report written"
    exit 0
fi

# ---- report ----------------------------------------------------------------
COMMAND="ROUNDS=$ROUNDS DURATION=$DURATION bench/h2.sh"
[ "$H2_CLIENTS/$H2_STREAMS/$GRPC_CONCURRENCY/$THREADS" = 16/10/64/1 ] ||
    COMMAND="H2_CLIENTS=$H2_CLIENTS H2_STREAMS=$H2_STREAMS GRPC_CONCURRENCY=$GRPC_CONCURRENCY THREADS=$THREADS $COMMAND"
export H2_COMMAND="$COMMAND" H2_THREADS=$THREADS H2_ROUNDS=$ROUNDS H2_DURATION=$DURATION H2_ELAPSED=$ELAPSED \
    H2_CLIENTS H2_STREAMS GRPC_CONCURRENCY
H2_DATE=$(date -u +%Y-%m-%d) H2_CORES=$(nproc) H2_BINARY=${BIN#"$ROOT"/} \
    H2_H2LOAD=$(h2load --version | head -1) H2_NGINX=$("$NGINX" -v 2>&1 | sed 's/.*: //') \
    H2_GRPCIO=$("$PY" -c 'import grpc; print(grpc.__version__)') \
    python3 - "$RESULTS" "$OUT_MD" "$OUT" <<'PY'
import csv, os, re, statistics, sys

results, out_md, out = sys.argv[1:4]
E = os.environ
rows = {}
with open(results) as f:
    for r in csv.DictReader(f, delimiter="\t"):
        rows.setdefault(r["case"], []).append(r)
LABELS = {
    "h1_upstream_direct": ("nginx `return 200`, HTTP/1.1, direct (`h2load --h1`)", "nginx"),
    "h2_upstream_direct": ("nginx `return 200`, h2c, direct (`h2load`)", "nginx"),
    "h1_portcullis_jwt": ("portcullis, JWT (cache hit), HTTP/1.1 (`h2load --h1`) → HTTP/1.1 nginx", "portcullis"),
    "h2_portcullis_jwt": ("portcullis, JWT (cache hit), h2c (`h2load`) → HTTP/1.1 nginx", "portcullis"),
    "h2_portcullis_jwt_m1": ("the same, one stream per connection (as many connections as HTTP/1.1)", "portcullis"),
    "grpc_direct": ("gRPC unary, grpcio client → grpcio server, direct", "grpcio server"),
    "grpc_portcullis": ("gRPC unary, JWT (cache hit), through portcullis → grpcio server (h2c)", "portcullis"),
}
med = lambda c, k: statistics.median(float(r[k]) for r in rows[c])
rps = lambda c: statistics.median(float(r["requests"]) / float(r["seconds"]) for r in rows[c])
us = lambda v: f"{v / 1000:.2f} ms" if v >= 10000 else f"{v:.0f} µs"
lines = ["| case | load | requests/s | p50 | p99 | CPU µs/request | of | upstream's CPU µs/request |",
         "|---|---|---:|---:|---:|---:|---|---:|"]
errors = {}
for case, (label, who) in LABELS.items():
    if case not in rows:
        continue
    up = f"{med(case, 'upstream_cpu_us'):.1f}" if rows[case][0]["upstream_cpu_us"] else "—"
    load = rows[case][0]["load"]
    load = f"`{load}`" if load.startswith("h2load") else load
    lines.append(f"| `{case}`: {label} | {load} | {rps(case):,.0f} | {us(med(case, 'p50'))} | {us(med(case, 'p99'))} "
                 f"| {med(case, 'cpu_us'):.1f} | {who} | {up} |")
    e = sum(int(r["non2xx"]) + int(r["errors"]) for r in rows[case])
    if e:
        errors[case] = e
table = "\n".join(lines)


def paired(a, b, key):
    """a / b within each round, so that the machine's drift cancels."""
    ra, rb = ({r["round"]: float(r[key]) for r in rows[c]} for c in (a, b))
    return [ra[k] / rb[k] for k in ra if k in rb]


verdict = ""
if "h1_portcullis_jwt" in rows and "h2_portcullis_jwt" in rows:
    r = paired("h2_portcullis_jwt", "h1_portcullis_jwt", "cpu_us")
    h2, h1 = med("h2_portcullis_jwt", "cpu_us"), med("h1_portcullis_jwt", "cpu_us")
    ratio = statistics.median(r)
    verdict = (f"Target (issue 17), with a cached JWT a request over h2 through the sidecar costs no more "
               f"CPU than over HTTP/1.1 through it: **{'met' if ratio <= 1.0 else 'missed'}**: "
               f"{h2:.1f} µs over h2 against {h1:.1f} µs over HTTP/1.1 (medians, the same requests "
               f"in flight from the same h2load), h2/h1 = **{ratio:.2f}×** paired per round "
               f"(rounds {min(r):.2f}–{max(r):.2f}).")
    if "h2_portcullis_jwt_m1" in rows:
        r1 = paired("h2_portcullis_jwt_m1", "h1_portcullis_jwt", "cpu_us")
        verdict += (f" Without multiplexing (one stream per connection, the same connections as "
                    f"HTTP/1.1): {med('h2_portcullis_jwt_m1', 'cpu_us'):.1f} µs, "
                    f"**{statistics.median(r1):.2f}×** HTTP/1.1's (rounds {min(r1):.2f}–{max(r1):.2f}).")
C, S, G = E["H2_CLIENTS"], E["H2_STREAMS"], E["GRPC_CONCURRENCY"]
md = f"""## HTTP/2 and gRPC (issue 17)

Generated by `bench/h2.sh` (which `bench/run.sh` runs at its end; `H2=0`
skips it) on {E['H2_DATE']}: **{E['H2_CORES']} cores** shared by the servers, the load
generators and whatever else runs there, loopback only. Command:
`{E['H2_COMMAND']}` (`{E['H2_BINARY']}`, `server.threads = {E['H2_THREADS']}`).

- Load: {E['H2_H2LOAD']}, `h2load -t1 -D{E['H2_DURATION']}` and the flags in the
  table: h2c with prior knowledge on {C} connections of {S} streams, or
  `--h1` on {int(C) * int(S)} connections, the same {int(C) * int(S)} requests in flight.
  (Not `--h1 -m{S}`, pipelining, on {C} connections: portcullis, like pingora's
  HTTP/1.1 server, answers only the first request of a pipeline; the rest
  get 502 `Sent data after end of body` or no answer.) gRPC:
  `bench/grpc_load.py client` (grpcio {E['H2_GRPCIO']}, asyncio, {G} unary calls of
  16 bytes in flight on one channel; metadata `authorization: Bearer <JWT>`
  through portcullis) against `bench/grpc_load.py server` (grpcio asyncio
  server, a generic handler `/bench.Echo/Unary` echoing the request).
- Servers: nginx {E['H2_NGINX']} `return 200` (1 worker) on an HTTP/1.1
  listener and on `listen … http2` (h2c); two portcullis (SQLite, rate limits
  off, log level warn), one in front of the HTTP/1.1 nginx, one in front of
  the grpcio server with `upstream.protocol = "h2c"`.
- A 1 s warm-up of every case, then {E['H2_ROUNDS']} interleaved rounds of {E['H2_DURATION']} s;
  medians of the rounds. Latencies: h2load's `--log-file` (time to the end of
  each response), the gRPC client's timer around each call.
- CPU µs/request: utime+stime from `/proc/<pid>/stat` (all threads) of the
  measured server ("of": portcullis; the nginx master and worker; in
  `grpc_direct` the grpcio server, for reference) divided by the requests
  answered; beside it the upstream's CPU per request behind portcullis.
  Whole run: {E['H2_ELAPSED']} s.

{table}

{verdict}
"""
if errors:
    md += f"\nNon-2xx answers, failed gRPC calls or stream errors (summed over rounds): {errors}\n"
with open(out_md, "w") as f:
    f.write(md)
print()
print(md)
# BENCHMARKS.md: this section replaced in place, or appended
try:
    with open(out) as f:
        text = f.read()
except FileNotFoundError:
    text = ""
m = re.search(r"^## HTTP/2 and gRPC \(issue 17\)\n.*?(?=^## |\Z)", text, re.S | re.M)
if m:
    text = text[:m.start()] + md + ("\n" if m.end() < len(text) else "") + text[m.end():]
elif text:
    text = text.rstrip("\n") + "\n\n" + md
if text:
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out_md} and its section of {out}")
else:
    print(f"wrote {out_md}")
PY
