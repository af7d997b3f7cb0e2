# Paced measurement (issue 20), sourced by bench/run.sh after its saturated
# rounds (PACED=0 skips it): the same servers, every relevant case again at
# fixed request rates, the server CPU per request split into user and
# kernel time.
#
#   PACED_RATES="1000 3000 8000"  the rates every case runs at (requests/s)
#   PACED_LATENCY_RATE=1000       the rate of the operator's latency figures
#                                 (also runs the upstream-direct and
#                                 Traefik-alone baselines)
#   PACED_SCALING_RATE=8000       the rate of the scaling cases (12-14)
#   PACED_DURATION=5 PACED_ROUNDS=2 PACED_CLIENTS=32
#   PACED_LATENCY_CLIENTS=4       a second pass at PACED_LATENCY_RATE for the
#                                 latency figures, with fewer workers (0: none)
#
# Load: Debian's hey, `hey -z $PACED_DURATION s -c $PACED_CLIENTS -q
# <rate / clients>` (keep-alive; -q is per worker, so the workers tick
# together: a burst of $PACED_CLIENTS requests every $PACED_CLIENTS/rate s, and
# the latency of the last of a burst includes the queue of the others: so
# the latency cases run once more at PACED_LATENCY_RATE with
# PACED_LATENCY_CLIENTS workers, bursts of that many), CSV output
# summarised by bench/hey_stats.py: answered requests, the rate achieved
# (answered / duration; a warning when below 95 % of the rate asked), the
# p50/p90/p99 response time. CPU: utime and stime of each server's
# processes (/proc/<pid>/stat, all threads) before and after, per answered
# request, for each server separately (forward-auth: the ingress and
# portcullis); RSS: VmRSS of each server's processes after the run. Rounds
# are interleaved as run.sh's are: each round runs every rate, and at each
# rate every case once, so cases at one rate are measured side by side.
#
# Needs from run.sh: the servers, pids_of, times_of, cpu_split,
# passive_opens, $ONLY, $TMP, the fixtures. Sets PACED_RESULTS, PACED_META.

PACED_RATES=${PACED_RATES:-1000 3000 8000}
PACED_LATENCY_RATE=${PACED_LATENCY_RATE:-1000}
PACED_SCALING_RATE=${PACED_SCALING_RATE:-8000}
PACED_DURATION=${PACED_DURATION:-5}
PACED_ROUNDS=${PACED_ROUNDS:-2}
PACED_CLIENTS=${PACED_CLIENTS:-32}
PACED_LATENCY_CLIENTS=${PACED_LATENCY_CLIENTS:-4}
PACED_RESULTS="$TMP/paced.tsv"
PACED_META="$TMP/paced-meta.txt"

# case id (as run.sh's) | servers whose CPU counts | url | request header | rates:
# all (PACED_RATES), latency (PACED_LATENCY_RATE) or scaling (PACED_SCALING_RATE);
# +latency: also in the second latency pass
PACED_CASES=(
    "1_upstream|upstream|http://127.0.0.1:$UP/api/bench||latency+latency"
    "2_nginx_proxy|proxy|http://127.0.0.1:$NGX/api/bench||all+latency"
    "9_pingora_plain|plain|http://127.0.0.1:$PLAIN_PORT/api/bench||all+latency"
    "4_portcullis_public|portcullis|http://127.0.0.1:$PC/public/bench||all+latency"
    "5_portcullis_jwt|portcullis|http://127.0.0.1:$PC/api/bench|Authorization: Bearer $JWT|all+latency"
    "6_portcullis_api_key|portcullis|http://127.0.0.1:$PC/api/bench|X-API-Key: $API_KEY|all+latency"
    "3_nginx_auth_request|authreq portcullis|http://127.0.0.1:$NGXAUTH/api/bench|Authorization: Bearer $JWT|all+latency"
    "10_traefik_forward_auth|traefik portcullis|http://127.0.0.1:$TRF/api/bench|Authorization: Bearer $JWT|all+latency"
    "11_traefik_proxy|traefik|http://127.0.0.1:$TRF/direct/bench||latency+latency"
    "12_nginx_proxy_w2|proxy2|http://127.0.0.1:$NGX2/api/bench||scaling"
    "13_portcullis_jwt_t2|portcullis2|http://127.0.0.1:$PC2/api/bench|Authorization: Bearer $JWT2|scaling"
    "14_portcullis_jwt_t0|portcullis0|http://127.0.0.1:$PC0/api/bench|Authorization: Bearer $JWT0|scaling"
)
paced_selected=()
for spec in "${PACED_CASES[@]}"; do
    name=${spec%%|*}
    [ "$TRAEFIK" = 0 ] && [[ $name == 1[01]_* ]] && continue
    [ -n "$ONLY" ] && ! [[ $name =~ $ONLY ]] && continue
    paced_selected+=("$spec")
done

paced_rates_of() { # the rates of one case's rate keyword
    case "${1%+latency}" in
        all) echo "$PACED_RATES" ;;
        latency) echo "$PACED_LATENCY_RATE" ;;
        scaling) echo "$PACED_SCALING_RATE" ;;
    esac
}
# every rate of the run, ascending
PACED_ALL_RATES=$(for r in $PACED_RATES $PACED_LATENCY_RATE $PACED_SCALING_RATE; do echo "$r"; done | sort -nu | tr '\n' ' ')

printf 'case\trate\tclients\tround\trequests\tseconds\tnon2xx\trps\tp50\tp90\tp99\tuser_us\tsys_us\tparts\trss_kb\tnew_conns\n' >"$PACED_RESULTS"

# paced_run SPEC RATE ROUND CLIENTS
paced_run() {
    local spec=$1 rate=$2 round=$3 clients=$4 name servers url header rates
    IFS='|' read -r name servers url header rates <<<"$spec"
    local q args=()
    q=$(awk -v r="$rate" -v c="$clients" 'BEGIN { printf "%.4f", r / c }')
    args=(-z "${PACED_DURATION}s" -c "$clients" -q "$q" -t 5 -o csv)
    [ -n "$header" ] && args+=(-H "$header")
    local before after opens0 opens1
    # shellcheck disable=SC2086
    before=$(times_of $servers)
    opens0=$(passive_opens)
    hey "${args[@]}" "$url" >"$TMP/hey.csv" 2>"$TMP/hey.err" || {
        echo "hey failed for $name at $rate/s:" >&2
        cat "$TMP/hey.err" >&2
        exit 1
    }
    # shellcheck disable=SC2086
    after=$(times_of $servers)
    opens1=$(passive_opens)
    local line requests ok non2xx rps p50 p90 p99
    line=$(python3 "$BENCH_DIR/hey_stats.py" "$TMP/hey.csv" "$PACED_DURATION")
    eval "${line#RESULT }"
    [ "$requests" -gt 0 ] || { echo "$name at $rate/s: no answers" >&2; cat "$TMP/hey.err" >&2; exit 1; }
    local user_us sys_us parts rss
    read -r user_us sys_us parts rss <<<"$(cpu_split "$before" "$after" "$requests")"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rate" "$clients" "$round" \
        "$requests" "$PACED_DURATION" "$non2xx" "$rps" "$p50" "$p90" "$p99" "$user_us" "$sys_us" \
        "$parts" "$rss" "$((opens1 - opens0))" >>"$PACED_RESULTS"
    local warn=""
    awk -v a="$rps" -v r="$rate" 'BEGIN { exit !(a < 0.95 * r) }' && warn="  below the rate asked"
    [ "$non2xx" -gt 0 ] && warn+="  non-2xx $non2xx"
    printf '  %-24s %5s/s -c%-2s → %7.0f  user %6.1f  sys %6.1f µs/req  p50 %5s p90 %5s µs  new conns %s%s\n' \
        "$name" "$rate" "$clients" "$rps" "$user_us" "$sys_us" "$p50" "$p90" "$((opens1 - opens0))" "$warn"
}

PACED_START=$(date +%s)
if [ ${#paced_selected[@]} -gt 0 ]; then
    for round in $(seq "$PACED_ROUNDS"); do
        echo "paced round $round/$PACED_ROUNDS (hey -c$PACED_CLIENTS -q rate/$PACED_CLIENTS -z ${PACED_DURATION}s)"
        for rate in $PACED_ALL_RATES; do
            for spec in "${paced_selected[@]}"; do
                rates=${spec##*|}
                [[ " $(paced_rates_of "$rates") " == *" $rate "* ]] || continue
                paced_run "$spec" "$rate" "$round" "$PACED_CLIENTS"
            done
        done
        [ "$PACED_LATENCY_CLIENTS" -gt 0 ] || continue
        for spec in "${paced_selected[@]}"; do
            if [[ ${spec##*|} == *+latency ]]; then
                paced_run "$spec" "$PACED_LATENCY_RATE" "$round" "$PACED_LATENCY_CLIENTS"
            fi
        done
    done
fi
{
    echo "rounds=$PACED_ROUNDS"
    echo "duration=$PACED_DURATION"
    echo "clients=$PACED_CLIENTS"
    echo "latency_clients=$PACED_LATENCY_CLIENTS"
    echo "rates=$PACED_RATES"
    echo "latency_rate=$PACED_LATENCY_RATE"
    echo "scaling_rate=$PACED_SCALING_RATE"
    echo "elapsed=$(($(date +%s) - PACED_START))"
    echo "hey=$(dpkg-query -W -f '${Version}' hey 2>/dev/null || echo '?')"
} >"$PACED_META"
