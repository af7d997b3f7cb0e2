# Shared by bench/run.sh, bench/h2.sh and bench/callgrind.sh (sourced, not run).

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

# nginx_conf NAME LISTEN SERVER_BODY [HTTP_EXTRA]
# Starts one nginx ($NGINX_WORKERS workers, default 1; access log off) in $TMP/NAME listening on
# LISTEN (`127.0.0.1:PORT`, with flags such as `http2`), with SERVER_BODY in
# its server block and HTTP_EXTRA (upstream blocks) in its http block; its
# master's pid goes to PIDS and to $TMP/NAME/master. Needs $NGINX and $TMP.
nginx_conf() {
    mkdir -p "$TMP/$1"
    cat >"$TMP/$1/nginx.conf" <<EOF
daemon off;
master_process on;
worker_processes ${NGINX_WORKERS:-1};
pid $TMP/$1/nginx.pid;
error_log $TMP/$1/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $TMP/$1/body;
    proxy_temp_path $TMP/$1/proxy;
    fastcgi_temp_path $TMP/$1/fastcgi;
    uwsgi_temp_path $TMP/$1/uwsgi;
    scgi_temp_path $TMP/$1/scgi;
    keepalive_requests 1000000;
${4:-}
    server {
        listen $2;
$3
    }
}
EOF
    "$NGINX" -p "$TMP/$1" -c "$TMP/$1/nginx.conf" &
    PIDS+=($!)
    echo $! >"$TMP/$1/master"
}

# bench_venv SPEC...: target/bench-venv (a python3 venv) with the pinned
# packages given (`name==version`), installed when missing or at another
# version; prints the venv's python.
bench_venv() {
    local v=${BENCH_VENV:-$ROOT/target/bench-venv}
    [ -x "$v/bin/python" ] || python3 -m venv "$v" >&2
    if ! "$v/bin/python" - "$@" <<'PY' 2>/dev/null; then
import importlib.metadata as m, sys
for spec in sys.argv[1:]:
    name, version = spec.split("==")
    if m.version(name) != version:
        sys.exit(1)
PY
        echo "installing $* into ${v#"$ROOT"/}" >&2
        "$v/bin/pip" install -q "$@" >&2
    fi
    echo "$v/bin/python"
}
