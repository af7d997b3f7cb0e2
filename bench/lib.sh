# Shared by bench/run.sh and bench/callgrind.sh (sourced, not run).

# cleanup: the EXIT trap; kills the servers in PIDS, removes $TMP.
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}

# portcullis_config FILE PROXY_PORT ADMIN_PORT UPSTREAM_PORT DB_PATH THREADS [EXTRA_TOML]
# The benchmarks' portcullis: SQLite, rate limits off, log level warn, and a
# public route under /public/.
portcullis_config() {
    cat >"$1" <<TOML
[server]
threads = $6
[proxy]
listen = "127.0.0.1:$2"
[admin]
listen = "127.0.0.1:$3"
[upstream]
address = "127.0.0.1:$4"
[database]
url = "sqlite://$5"
[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = 0
[log]
level = "warn"
${7:-}
[[routes]]
name = "public"
path = "/public/**"
auth = "public"
TOML
}

# wait_port PORT [TRIES]: waits TRIES × 0.1 s (default 100) for a listener.
wait_port() {
    for _ in $(seq "${2:-100}"); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
