#!/usr/bin/env bash
# A session's life through portcullis, with curl:
#   register -> login -> proxied GET /api/hello -> GET /auth/me
#   -> refresh (rotation) -> logout -> the revoked access token is refused.
#
# Start a sidecar first, e.g. `portcullis demo` (built-in echo upstream and a
# temporary SQLite store), then run:
#   examples/curl-walkthrough.sh
# Environment:
#   PORTCULLIS_URL     proxy listener (default http://127.0.0.1:8080)
#   PORTCULLIS_TENANT  optional X-Tenant-ID (tenant UUID or slug)
# Needs curl and python3 (or jq). Exits non-zero when a step does not answer
# as SPEC.md says.
set -euo pipefail

BASE="${PORTCULLIS_URL:-http://127.0.0.1:8080}"
BASE="${BASE%/}"
TENANT="${PORTCULLIS_TENANT:-}"

command -v curl >/dev/null 2>&1 || { echo "curl is required" >&2; exit 1; }
if command -v jq >/dev/null 2>&1; then
  HAVE_JQ=1
elif command -v python3 >/dev/null 2>&1; then
  HAVE_JQ=0
else
  echo "python3 or jq is required" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# json_get FIELD[.SUB...] < json: prints the field ("" when absent).
json_get() {
  if [ "$HAVE_JQ" = 1 ]; then
    jq -r --arg p "$1" 'getpath($p | split(".")) // empty | tostring'
  else
    python3 -c '
import json, sys
v = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    v = v.get(k) if isinstance(v, dict) else None
print("" if v is None else (json.dumps(v) if isinstance(v, (dict, list)) else str(v).lower() if isinstance(v, bool) else v))
' "$1"
  fi
}

# pretty < json: indented JSON, or the text as it came when it is not JSON.
pretty() {
  local body
  body="$(cat)"
  if [ -z "$body" ]; then
    echo "(empty body)"
  elif [ "$HAVE_JQ" = 1 ]; then
    printf '%s' "$body" | jq . 2>/dev/null || printf '%s\n' "$body"
  else
    printf '%s' "$body" | python3 -m json.tool 2>/dev/null || printf '%s\n' "$body"
  fi
}

short() { printf '%s…' "${1:0:24}"; }

step=0
# call EXPECTED_STATUS METHOD PATH [BODY] [TOKEN_NAME]
#   TOKEN_NAME names a shell variable holding a bearer token; the command is
#   printed with "$TOKEN_NAME" in place of the token. The answer is left in
#   $BODY and $STATUS.
call() {
  local expected="$1" method="$2" path="$3" data="${4:-}" token_name="${5:-}"
  local -a args=(-sS -X "$method" -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}')
  local shown="curl -sS -X $method"
  if [ -n "$TENANT" ]; then
    args+=(-H "X-Tenant-ID: $TENANT")
    shown+=" -H 'X-Tenant-ID: $TENANT'"
  fi
  if [ -n "$token_name" ]; then
    args+=(-H "Authorization: Bearer ${!token_name}")
    shown+=" -H \"Authorization: Bearer \$$token_name\""
  fi
  if [ -n "$data" ]; then
    args+=(-H 'Content-Type: application/json' --data "$data")
    shown+=" -H 'Content-Type: application/json' -d '$data'"
  fi
  shown+=" $BASE$path"

  printf '$ %s\n' "$shown"
  STATUS="$(curl "${args[@]}" "$BASE$path")"
  BODY="$(cat "$tmp/body")"
  printf '< HTTP %s' "$STATUS"
  local rid
  rid="$(grep -i '^x-request-id:' "$tmp/headers" | head -n1 | cut -d' ' -f2- | tr -d '\r' || true)"
  [ -n "$rid" ] && printf '   (X-Request-Id: %s)' "$rid"
  printf '\n'
  printf '%s' "$BODY" | pretty
  if [ "$STATUS" != "$expected" ]; then
    echo "!! expected HTTP $expected, got $STATUS" >&2
    exit 1
  fi
}

if [ -t 1 ]; then bold=$'\033[1m' plain=$'\033[0m'; else bold='' plain=''; fi
heading() {
  step=$((step + 1))
  printf '\n%s== %d. %s%s\n' "$bold" "$step" "$1" "$plain"
}

if ! curl -sS -o /dev/null "$BASE/.well-known/jwks.json"; then
  echo "portcullis does not answer at $BASE (start it with: portcullis demo)" >&2
  exit 1
fi

suffix="$(date +%s)-$RANDOM"
EMAIL="walkthrough-$suffix@example.com"
PASSWORD="Walk-through-$RANDOM-$RANDOM-pass"

heading "Register $EMAIL (POST /auth/register)"
call 201 POST /auth/register \
  "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"firstName\":\"Jane\",\"familyName\":\"Doe\"}"
if [ "$(printf '%s' "$BODY" | json_get verificationRequired)" = "true" ]; then
  echo "This sidecar requires email verification (accounts.require_email_verification);" \
    "verify the address first, then log in. Stopping here."
  exit 0
fi

heading "Log in (POST /auth/login)"
call 200 POST /auth/login "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}"
ACCESS_TOKEN="$(printf '%s' "$BODY" | json_get accessToken)"
REFRESH_TOKEN="$(printf '%s' "$BODY" | json_get refreshToken)"
echo "ACCESS_TOKEN=$(short "$ACCESS_TOKEN")"
echo "REFRESH_TOKEN=$(short "$REFRESH_TOKEN")"
[ -n "$ACCESS_TOKEN" ] && [ -n "$REFRESH_TOKEN" ] || { echo "!! no tokens in the login answer" >&2; exit 1; }

heading "Proxied request (GET /api/hello): the upstream sees X-Auth-* identity headers"
call 200 GET /api/hello "" ACCESS_TOKEN

heading "Who am I (GET /auth/me)"
call 200 GET /auth/me "" ACCESS_TOKEN

heading "Refresh (POST /auth/refresh): a new refresh token, the old one is dead"
call 200 POST /auth/refresh "{\"refreshToken\":\"$REFRESH_TOKEN\"}"
OLD_ACCESS_TOKEN="$ACCESS_TOKEN"
ACCESS_TOKEN="$(printf '%s' "$BODY" | json_get accessToken)"
NEW_REFRESH_TOKEN="$(printf '%s' "$BODY" | json_get refreshToken)"
echo "ACCESS_TOKEN=$(short "$ACCESS_TOKEN")"
echo "REFRESH_TOKEN=$(short "$NEW_REFRESH_TOKEN")  (rotated: differs from the one sent)"
[ "$NEW_REFRESH_TOKEN" != "$REFRESH_TOKEN" ] || { echo "!! refresh token was not rotated" >&2; exit 1; }
REFRESH_TOKEN="$NEW_REFRESH_TOKEN"

heading "Log out (POST /auth/logout): the session is revoked"
call 200 POST /auth/logout "{\"refreshToken\":\"$REFRESH_TOKEN\"}" ACCESS_TOKEN

heading "The revoked access token is refused at once (401 TOKEN_REVOKED)"
call 401 GET /api/hello "" ACCESS_TOKEN
code="$(printf '%s' "$BODY" | json_get error.code)"
[ "$code" = "TOKEN_REVOKED" ] || { echo "!! expected TOKEN_REVOKED, got '$code'" >&2; exit 1; }

heading "So is the access token from before the refresh (same session)"
call 401 GET /api/hello "" OLD_ACCESS_TOKEN
code="$(printf '%s' "$BODY" | json_get error.code)"
[ "$code" = "TOKEN_REVOKED" ] || { echo "!! expected TOKEN_REVOKED, got '$code'" >&2; exit 1; }

printf '\nDone: register, login, proxy, me, refresh, logout and revocation all behaved as SPEC.md says.\n'
