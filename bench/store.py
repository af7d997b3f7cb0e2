"""Latency of the /auth routes that go to the store (no argon2), on SQLite or
PostgreSQL: POST /auth/refresh (rotation: a transaction of several statements)
and GET /auth/me (a user lookup with its roles), one client, one keep-alive
connection, N sequential calls each.

  python3 bench/store.py [--binary target/release/portcullis] [--n 500] \\
      [--database postgres://postgres@127.0.0.1:5432/postgres]

With a postgres:// URL it creates a fresh database beside the one named and
drops it afterwards (needs `psql`). Prints median and p90 per route.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(admin_url, sql):
    subprocess.run(["psql", admin_url, "-qc", sql], check=True, stdout=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default="target/release/portcullis")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--database", default="sqlite")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="portcullis-store-bench-")
    dropdb = None
    if args.database.startswith("postgres://"):
        name = "portcullis_bench_" + uuid.uuid4().hex[:8]
        psql(args.database, f"CREATE DATABASE {name}")
        dropdb = name
        url = args.database.rsplit("/", 1)[0] + "/" + name
    else:
        url = f"sqlite://{tmp}/portcullis.db"
    port, admin = free_port(), free_port()
    with open(f"{tmp}/portcullis.toml", "w") as f:
        f.write(
            f"""[proxy]
listen = "127.0.0.1:{port}"
[admin]
listen = "127.0.0.1:{admin}"
[upstream]
address = "127.0.0.1:9"
[database]
url = "{url}"
[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = 0
[log]
level = "warn"
"""
        )
    proc = subprocess.Popen(
        [args.binary, "--config", f"{tmp}/portcullis.toml", "serve"],
        stdout=subprocess.DEVNULL,
        stderr=open(f"{tmp}/portcullis.log", "w"),
    )
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port)

        def call(method, path, body=None, token=None):
            headers = {"Content-Type": "application/json"}
            if token:
                headers["Authorization"] = "Bearer " + token
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            r = conn.getresponse()
            data = r.read()
            if r.status not in (200, 201):
                sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
            return json.loads(data)

        email, password = "store-bench@example.com", "store-bench-password-7f3a"
        call("POST", "/auth/register", {"email": email, "password": password})
        login = call("POST", "/auth/login", {"email": email, "password": password})
        access, refresh = login["accessToken"], login["refreshToken"]

        def timed(f):
            out = []
            for _ in range(args.n):
                t = time.perf_counter()
                f()
                out.append((time.perf_counter() - t) * 1e6)
            return out

        def rotate():
            nonlocal refresh
            refresh = call("POST", "/auth/refresh", {"refreshToken": refresh})["refreshToken"]

        results = {
            "POST /auth/refresh": timed(rotate),
            "GET /auth/me": timed(lambda: call("GET", "/auth/me", token=access)),
        }
        store = "postgres" if dropdb else "sqlite"
        for route, us in results.items():
            q = statistics.quantiles(us, n=10)
            print(
                f"{store:8} {route:20} median {statistics.median(us):7.0f} us"
                f"   p90 {q[8]:7.0f} us   (n={len(us)})"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if dropdb:
            psql(args.database, f"DROP DATABASE {dropdb}")


if __name__ == "__main__":
    main()
