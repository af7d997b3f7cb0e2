"""Bench fixtures: registers a user, creates an API key and mints N distinct
access tokens by rotating the refresh token (no argon2 per token).
Writes jwt, api_key and tokens.txt into the directory given."""
import http.client
import json
import sys

port, out, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
conn = http.client.HTTPConnection("127.0.0.1", port)


def call(method, path, body=None, token=None, ok=(200, 201)):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = conn.getresponse()
    data = r.read()
    if r.status not in ok:
        sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
    return json.loads(data) if data else {}


email, password = "bench@example.com", "bench-password-7f3a"
call("POST", "/auth/register", {"email": email, "password": password})
login = call("POST", "/auth/login", {"email": email, "password": password})
access, refresh = login["accessToken"], login["refreshToken"]
key = call("POST", "/auth/api-keys", {"name": "bench"}, token=access)["key"]
tokens = []
for _ in range(n):
    r = call("POST", "/auth/refresh", {"refreshToken": refresh})
    tokens.append(r["accessToken"])
    refresh = r["refreshToken"]
with open(f"{out}/jwt", "w") as f:
    f.write(access)
with open(f"{out}/api_key", "w") as f:
    f.write(key)
with open(f"{out}/tokens.txt", "w") as f:
    f.write("\n".join(tokens) + "\n")
with open(f"{out}/login", "w") as f:
    f.write(f"{email}\n{password}\n")
