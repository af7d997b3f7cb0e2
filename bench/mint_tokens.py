"""Memory target fixture: registers a user on an HS256 portcullis, then mints
N distinct access tokens for its session (same claims, new jti) with the
HS256 secret, so filling the credential cache costs no logins.
Usage: mint_tokens.py PORT SECRET_FILE N OUT"""
import base64
import hashlib
import hmac
import http.client
import json
import sys
import uuid

port, secret_file, n, out = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
secret = open(secret_file, "rb").read().rstrip(b"\n")
conn = http.client.HTTPConnection("127.0.0.1", port)
body = json.dumps({"email": "memory@example.com", "password": "bench-password-7f3a"})
for path in ("/auth/register", "/auth/login"):
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{path}: {r.status} {data[:200]!r}")
token = json.loads(data)["accessToken"]


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


header, claims = (json.loads(b64d(p)) for p in token.split(".")[:2])
h = b64e(json.dumps(header, separators=(",", ":")).encode())
with open(out, "w") as f:
    for _ in range(n):
        claims["jti"] = str(uuid.uuid4())
        signing_input = h + "." + b64e(json.dumps(claims, separators=(",", ":")).encode())
        sig = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        f.write(signing_input + "." + b64e(sig) + "\n")
