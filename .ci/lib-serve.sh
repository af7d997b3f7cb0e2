# Sourced by the CI checks: start `portcullis serve` on free ports with a
# temporary config and SQLite file, wait for /readyz, stop it on exit.
#   serve_start   -> sets PROXY_URL, ADMIN_URL, SERVE_DIR, SERVE_PID
# The binary is $PORTCULLIS_BIN, else ./target/release/portcullis.

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

serve_start() {
  local bin="${PORTCULLIS_BIN:-./target/release/portcullis}"
  SERVE_DIR="$(mktemp -d -t portcullis-ci-XXXXXX)"
  local proxy admin
  proxy="$(free_port)"
  admin="$(free_port)"
  cat >"$SERVE_DIR/portcullis.toml" <<TOML
[server]
grace_period_seconds = 1
[proxy]
listen = "127.0.0.1:$proxy"
[admin]
listen = "127.0.0.1:$admin"
[upstream]
address = "127.0.0.1:9"
[database]
url = "sqlite://$SERVE_DIR/portcullis.db"
[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = 0
[log]
level = "warn"
[[routes]]
name = "public"
path = "/public/**"
auth = "public"
TOML
  PORTCULLIS_BOOTSTRAP_ADMIN_EMAIL="${CI_ADMIN_EMAIL:-admin@example.com}" \
    PORTCULLIS_BOOTSTRAP_ADMIN_PASSWORD="${CI_ADMIN_PASSWORD:-ci-Admin-passw0rd!}" \
    "$bin" serve --config "$SERVE_DIR/portcullis.toml" >"$SERVE_DIR/stdout.log" 2>"$SERVE_DIR/stderr.log" &
  SERVE_PID=$!
  trap serve_stop EXIT
  PROXY_URL="http://127.0.0.1:$proxy"
  ADMIN_URL="http://127.0.0.1:$admin"
  for _ in $(seq 1 100); do
    if curl -fsS -o /dev/null "$ADMIN_URL/readyz" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$SERVE_PID" 2>/dev/null; then
      echo "portcullis exited early:" >&2
      tail -n 20 "$SERVE_DIR/stderr.log" "$SERVE_DIR/stdout.log" >&2 || true
      return 1
    fi
    sleep 0.2
  done
  echo "portcullis did not become ready" >&2
  return 1
}

serve_stop() {
  if [ -n "${SERVE_PID:-}" ] && kill -0 "$SERVE_PID" 2>/dev/null; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
  fi
  if [ -n "${SERVE_DIR:-}" ]; then
    rm -rf "$SERVE_DIR"
  fi
}
