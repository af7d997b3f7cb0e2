#!/usr/bin/env bash
# `promtool check metrics` (Debian package prometheus) on a live /metrics of
# a sidecar that has answered a few requests, so every family has samples.
#
#   bash .ci/promtool.sh                # after `cargo build --release`
set -Eeuo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v promtool >/dev/null 2>&1; then
  echo "promtool: not installed (apt-get install prometheus); skipped" >&2
  [ -n "${CI_REQUIRE_PROMTOOL:-}${CI:-}" ] && exit 1
  bash .ci/components note promtool "skipped: promtool not installed (apt-get install prometheus)"
  exit 0
fi

# shellcheck source=.ci/lib-serve.sh
. .ci/lib-serve.sh
serve_start

# Traffic: a login (success and failure), a refresh, a proxied request
# (upstream down -> upstream error), a public route, an unknown credential.
curl -sS -o /dev/null -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"wrong-password"}' "$PROXY_URL/auth/login"
refresh="$(curl -fsS -H 'content-type: application/json' \
  -d '{"email":"admin@example.com","password":"ci-Admin-passw0rd!"}' "$PROXY_URL/auth/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["refreshToken"])')"
curl -sS -o /dev/null -H 'content-type: application/json' \
  -d "{\"refreshToken\":\"$refresh\"}" "$PROXY_URL/auth/refresh"
curl -sS -o /dev/null "$PROXY_URL/public/x"
curl -sS -o /dev/null -H 'X-API-Key: sk_live_nope' "$PROXY_URL/api/x"
curl -sS -o /dev/null "$PROXY_URL/.well-known/jwks.json"

metrics="$SERVE_DIR/metrics.txt"
curl -fsS "$ADMIN_URL/metrics" >"$metrics"
echo "promtool: $(promtool --version 2>&1 | head -n 1)"
echo "promtool: checking $(grep -c '^# TYPE' "$metrics") metric families"
promtool check metrics <"$metrics"
echo "promtool: clean"
bash .ci/components note promtool ran
