#!/usr/bin/env python3
"""portcullis from Python (requests + pyotp):

    register -> MFA enable/confirm -> login with an OTP -> create an API key
    -> proxied call with the API key -> the key is revoked and refused.

Start a sidecar first, e.g. `portcullis demo` (built-in echo upstream that
answers every proxied path with the X-Auth-* headers it received), then:

    python3 -m venv .venv && .venv/bin/pip install requests pyotp
    .venv/bin/python examples/walkthrough.py

Environment: PORTCULLIS_URL (default http://127.0.0.1:8080), optionally
PORTCULLIS_TENANT (sent as X-Tenant-ID). Exits non-zero when an answer
differs from SPEC.md.
"""
import os
import sys
import time
import uuid

import pyotp
import requests

BASE = os.environ.get("PORTCULLIS_URL", "http://127.0.0.1:8080").rstrip("/")
TENANT = os.environ.get("PORTCULLIS_TENANT")
s = requests.Session()
if TENANT:
    s.headers["X-Tenant-ID"] = TENANT


def call(method, path, expect, token=None, **kw):
    headers = kw.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    r = s.request(method, BASE + path, headers=headers, timeout=10, **kw)
    print(f"{method} {path} -> {r.status_code}")
    if r.status_code != expect:
        sys.exit(f"expected {expect}, got {r.status_code}: {r.text}")
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


def fresh_code(totp, used):
    """A TOTP code not used yet (portcullis refuses a replayed code)."""
    while True:
        code = totp.now()
        if code not in used:
            used.add(code)
            return code
        time.sleep(1)


email = f"py-{uuid.uuid4().hex[:10]}@example.com"
password = f"walk-{uuid.uuid4().hex}"

# 1. register (logs in at once unless email verification is required)
tokens = call("POST", "/auth/register", 201, json={"email": email, "password": password, "name": "Py Walker"})
access = tokens["accessToken"]
print(f"   registered {tokens['user']['email']} (id {tokens['user']['id']})")

# 2. MFA: enable gives the secret, confirm with a current code turns it on
enrol = call("POST", "/auth/mfa/enable", 200, token=access)
totp = pyotp.TOTP(enrol["secret"])
print(f"   otpauth URL: {enrol['otpauthUrl'][:60]}...  ({len(enrol['backupCodes'])} backup codes)")
used = set()
call("POST", "/auth/mfa/confirm", 200, token=access, json={"code": fresh_code(totp, used)})

# 3. login: without a code -> mfaRequired; with `otp` -> tokens in one step
challenge = call("POST", "/auth/login", 200, json={"email": email, "password": password})
assert challenge.get("mfaRequired") is True, challenge
print(f"   MFA challenge: {challenge['mfaToken'][:12]}... (or send the code to /auth/mfa/verify)")
tokens = call("POST", "/auth/login", 200, json={"email": email, "password": password, "otp": fresh_code(totp, used)})
access = tokens["accessToken"]
assert tokens["tokenType"] == "Bearer"

# 4. an API key for a script or a service; `key` is shown only once
key = call("POST", "/auth/api-keys", 201, token=access, json={"name": "walkthrough", "expiresInDays": 1})
print(f"   API key {key['keyPrefix']}... (id {key['id']})")

# 5. a proxied call with the API key: the upstream gets the identity headers
echo = call("GET", "/api/hello", 200, headers={"X-API-Key": key["key"]})
print(f"   upstream answered: {str(echo)[:160]}")

# 6. revoke the key: it stops working at once
call("DELETE", f"/auth/api-keys/{key['id']}", 200, token=access)
err = call("GET", "/api/hello", 401, headers={"X-API-Key": key["key"]})
print(f"   refused: {err['error']['code']}")
print("walkthrough: ok")
