#!/usr/bin/env python3
"""Multi-replica soak, bounded in time (issue 21 item 3).

    python3 bench/soak.py                   # after cargo build --release
    python3 bench/soak.py --out soak.md --load 90 --limit 60

Starts, on loopback ports:
  - a private PostgreSQL server (bench/faults.py's, initdb into a temp folder);
  - one private redis-server (no persistence);
  - the echo upstream (`portcullis echo`);
  - three portcullis replicas A, B, C sharing both, each with
    rate_limit.redis_url set, per_ip_per_minute = 0 (off),
    login_per_account_per_minute = --limit, lockout off and
    proxy.trusted_proxies = ["127.0.0.1/32"];
  - nginx (temp prefix), round-robin over the three.
Load, through nginx unless said otherwise, for --load seconds:
  - a login flood: workers log in to a handful of accounts, right and wrong
    passwords, each request from a random X-Forwarded-For 10.x.y.z, far
    above the per-account limit;
  - a refresh/logout churn: sessions rotate their refresh token, make a
    proxied call, and every few rounds log out; the access token is then
    polled on every replica directly (GET /auth/me) until 401 TOKEN_REVOKED,
    which gives the revocation propagation time;
  - proxied GETs with valid tokens.
Faults, in the middle: Redis SIGKILLed, down --outage seconds, started again
on the same port; later PostgreSQL stopped --outage seconds and started.

Reported: per account, login attempts let through the limiter (200 or 401)
per minute against the limit, counted by the time each was sent, from each
account's first 429 on in the fault-free stretches (the buckets start full); revocation propagation
p50/p99; answers by status and code; for each fault the requests it cost,
the Redis fallbacks (portcullis_rate_limit_redis_fallbacks_total) and the
time to recovery. Prints a Markdown report (and writes it to --out).
"""

import argparse
import http.client
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import faults  # noqa: E402  (bench/faults.py: Postgres, Process, free_port, ...)
from faults import Answer, Postgres, Process, free_port, rand, wait_until  # noqa: E402

ROOT = faults.ROOT
FALLBACKS = "portcullis_rate_limit_redis_fallbacks_total"
REDIS_UP = "portcullis_rate_limit_redis_up"


def call(port, method, path, body=None, token=None, xff=None, timeout=10):
    """bench/faults.py's request, with an X-Forwarded-For."""
    return faults.call(port, method, path, body, token, timeout=timeout, xff=xff)


def metrics(port):
    """{(name, labels): value} of one replica's /metrics, for the names we use."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3)
    out = {}
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    except (OSError, http.client.HTTPException):
        return out
    finally:
        conn.close()
    for line in text.splitlines():
        if line.startswith(FALLBACKS) or line.startswith(REDIS_UP):
            key, _, value = line.rpartition(" ")
            try:
                out[key] = float(value)
            except ValueError:
                pass
    return out


def fallbacks(replicas):
    """Redis fallbacks so far, summed over the replicas, by reason."""
    total = Counter()
    for r in replicas:
        for key, v in metrics(r.admin).items():
            if key.startswith(FALLBACKS):
                reason = key.split('reason="')[1].split('"')[0] if 'reason="' in key else "?"
                total[reason] += int(v)
    return total


def redis_up(r):
    m = metrics(r.admin)
    return any(k.startswith(REDIS_UP) and v == 1 for k, v in m.items())


def pct(values, p):
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

class Replica(Process):
    def __init__(self, name, binary, workdir, db_url, upstream, redis_port, limit, redis_ms):
        self.port, self.admin = free_port(), free_port()
        conf = os.path.join(workdir, f"{name}.toml")
        with open(conf, "w") as f:
            f.write(f"""[server]
grace_period_seconds = 2
threads = 2
[proxy]
listen = "127.0.0.1:{self.port}"
trusted_proxies = ["127.0.0.1/32"]
[admin]
listen = "127.0.0.1:{self.admin}"
[upstream]
address = "{upstream}"
connect_timeout_ms = 1000
read_timeout_ms = 5000
[database]
url = "{db_url}"
[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = {limit}
redis_url = "redis://127.0.0.1:{redis_port}"
redis_timeout_ms = {redis_ms}
[lockout]
max_failures = 0
[log]
level = "warn"
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        super().__init__(name, [binary, "serve", "--config", conf], env,
                         os.path.join(workdir, f"{name}.log"))

    def ready(self):
        return call(self.admin, "GET", "/readyz", timeout=2).status == 200


def start_nginx(work, port, replicas):
    d = os.path.join(work, "nginx")
    os.makedirs(d)
    servers = "\n".join(f"        server 127.0.0.1:{r.port};" for r in replicas)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream replicas {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://replicas;
            proxy_next_upstream off;
        }}
    }}
}}
""")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    p = Process("nginx", [nginx, "-p", d, "-c", conf], log=os.path.join(d, "out.log"))
    p.start()
    return p


# --------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------

class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # (t, kind, label, ok)
        self.logins = defaultdict(list)  # account -> [(t, label)] of flood attempts
        self.propagation = []  # seconds from logout answered to refused on every replica
        self.propagation_lost = 0  # still accepted somewhere after the poll deadline
        self.poll_answers = Counter()  # other answers seen while polling

    def note(self, kind, answer):
        with self.lock:
            self.events.append((time.monotonic(), kind, answer.label(), answer.ok()))


def xff(rng):
    return f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def flood(lb, accounts, ledger, stop, index):
    rng = random.Random(1000 + index)
    while not stop.is_set():
        email, password = rng.choice(accounts)
        pw = password if rng.random() < 0.3 else f"Wrong-{rand(8)}-1!"
        sent = time.monotonic()  # the limiter decides on arrival, not when a hash ends
        a = call(lb, "POST", "/auth/login", {"email": email, "password": pw}, xff=xff(rng))
        ledger.note("login flood", a)
        with ledger.lock:
            ledger.logins[email].append((sent, a.label(), a.status))
        if a.status is None:
            time.sleep(0.05)


def churn(lb, replicas, ledger, stop, index):
    rng = random.Random(index)
    email, password = f"c{index}-{rand()}@example.com", f"Soak-{rand(14)}-9!"
    a = call(lb, "POST", "/auth/register", {"email": email, "password": password})
    ledger.note("register", a)
    session = None
    rounds = 0
    while not stop.is_set():
        if session is None:
            a = call(lb, "POST", "/auth/login", {"email": email, "password": password},
                     xff=xff(rng))
            ledger.note("churn login", a)
            if a.ok():
                session = [a.body["accessToken"], a.body["refreshToken"]]
                rounds = 0
            else:
                time.sleep(0.2)
            continue
        a = call(lb, "GET", f"/api/c{index}", token=session[0])
        ledger.note("proxied", a)
        a = call(lb, "POST", "/auth/refresh", {"refreshToken": session[1]})
        ledger.note("refresh", a)
        if a.ok():
            session = [a.body["accessToken"], a.body["refreshToken"]]
        elif a.status != 503 and a.status is not None:
            session = None
            continue
        rounds += 1
        if rounds >= 4 and a.ok():
            revoke(lb, replicas, ledger, session, stop)
            session = None
        time.sleep(0.05)


def revoke(lb, replicas, ledger, session, stop):
    access, refresh = session
    # every replica has verified (and cached) the token
    for r in replicas:
        call(r.port, "GET", "/auth/me", token=access)
    a = call(lb, "POST", "/auth/logout", {"refreshToken": refresh}, token=access)
    ledger.note("logout", a)
    if not a.ok():
        return
    t0 = time.monotonic()
    pending = set(range(len(replicas)))
    while pending and time.monotonic() - t0 < 10:
        for i in list(pending):
            b = call(replicas[i].port, "GET", "/auth/me", token=access, timeout=3)
            if b.status == 401 and b.code == "TOKEN_REVOKED":
                pending.discard(i)
            elif b.status != 200:
                with ledger.lock:
                    ledger.poll_answers[b.label()] += 1
        if pending:
            time.sleep(0.005)
    with ledger.lock:
        if pending:
            ledger.propagation_lost += 1
        else:
            ledger.propagation.append(time.monotonic() - t0)


def proxied(lb, token, ledger, stop):
    while not stop.is_set():
        a = call(lb, "GET", "/api/soak", token=token)
        ledger.note("proxied (cached)", a)
        time.sleep(0.01)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.environ.get(
        "PORTCULLIS_BIN", os.path.join(ROOT, "target/release/portcullis")))
    ap.add_argument("--load", type=float, default=90, help="seconds of load in all")
    ap.add_argument("--outage", type=float, default=2, help="seconds each fault lasts")
    ap.add_argument("--limit", type=int, default=60, help="login_per_account_per_minute")
    ap.add_argument("--accounts", type=int, default=4, help="accounts under the login flood")
    ap.add_argument("--flooders", type=int, default=8)
    ap.add_argument("--churners", type=int, default=4)
    ap.add_argument("--redis", default="/usr/bin/redis-server")
    ap.add_argument("--redis-timeout-ms", type=int, default=5, help="rate_limit.redis_timeout_ms")
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="portcullis-soak-")
    pg = Postgres(work)
    pg.start()
    pg.psql("CREATE DATABASE soak")
    redis_port = free_port()
    redis = Process("redis", [args.redis, "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no"],
                    log=os.path.join(work, "redis.log"))
    redis.start()
    up_port = free_port()
    upstream = Process("upstream", [args.binary, "echo", "--listen", f"127.0.0.1:{up_port}"],
                       log=os.path.join(work, "upstream.log"))
    upstream.start()
    replicas = [Replica(n, args.binary, work, pg.url("soak"), f"127.0.0.1:{up_port}",
                        redis_port, args.limit, args.redis_timeout_ms) for n in "ABC"]
    lb_port = free_port()
    everything = [upstream, *replicas, redis]
    started = time.monotonic()
    report = None
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_until(f"replica {r.name} ready", 60, r.ready)
        nginx = start_nginx(work, lb_port, replicas)
        everything.insert(0, nginx)
        wait_until("nginx", 10, lambda: call(lb_port, "GET", "/api/x").status is not None)

        ledger = Ledger()
        accounts = []
        for i in range(args.accounts):
            email, password = f"flood{i}-{rand()}@example.com", f"Soak-{rand(14)}-9!"
            a = call(lb_port, "POST", "/auth/register", {"email": email, "password": password})
            assert a.status == 201, a.label()
            accounts.append((email, password))
        email, password = f"reader-{rand()}@example.com", f"Soak-{rand(14)}-9!"
        tok = call(lb_port, "POST", "/auth/register", {"email": email, "password": password})
        assert tok.ok(), tok.label()

        stop = threading.Event()
        threads = [threading.Thread(target=flood, args=(lb_port, accounts, ledger, stop, i))
                   for i in range(args.flooders)]
        threads += [threading.Thread(target=churn, args=(lb_port, replicas, ledger, stop, i))
                    for i in range(args.churners)]
        threads += [threading.Thread(target=proxied,
                                     args=(lb_port, tok.body["accessToken"], ledger, stop))
                    for _ in range(2)]
        t_start = time.monotonic()
        for t in threads:
            t.daemon = True
            t.start()
        end = t_start + args.load

        # Redis restart at ~40 % of the load
        time.sleep(max(0, t_start + 0.4 * args.load - time.monotonic()))
        fb0 = fallbacks(replicas)
        r_kill = time.monotonic()
        redis.kill()
        time.sleep(args.outage)
        redis.start()
        r_back = time.monotonic()
        wait_until("Redis answering", 10, lambda: _redis_ping(redis_port))
        pending = set(r.name for r in replicas)
        r_recovered = {}
        while pending and time.monotonic() - r_back < 20:
            for r in replicas:
                if r.name in pending and redis_up(r):
                    pending.discard(r.name)
                    r_recovered[r.name] = time.monotonic() - r_back
            time.sleep(0.05)
        time.sleep(1)
        fb1 = fallbacks(replicas)
        r_end = time.monotonic()

        # PostgreSQL restart at ~70 % of the load
        time.sleep(max(0, t_start + 0.7 * args.load - time.monotonic()))
        fb2 = fallbacks(replicas)
        p_stop = time.monotonic()
        pg.stop()
        time.sleep(args.outage)
        pg.start()
        p_back = time.monotonic()
        time.sleep(1)
        fb_pback = fallbacks(replicas)
        time.sleep(max(0, end - time.monotonic()))
        fb3 = fallbacks(replicas)
        t_end = time.monotonic()
        stop.set()
        for t in threads:
            t.join(timeout=15)
        report = render(args, ledger, accounts, dict(
            t_start=t_start, t_end=t_end, r_kill=r_kill, r_back=r_back, r_end=r_end,
            r_recovered=r_recovered, p_stop=p_stop, p_back=p_back,
            fb_redis=fb1 - fb0, fb_pg=fb_pback - fb2, fb_all=fb3,
            fb_stretch=[fb0, fb2 - fb1, fb3 - fb_pback]), time.monotonic() - started)
    finally:
        for p in everything:
            p.terminate()
        try:
            pg.stop()
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(work, ignore_errors=True)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report)


def _redis_ping(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def allowed(label_status):
    # through the limiter: a login answered (right or wrong password)
    return label_status in (200, 401)


def rate_after_first_429(events, t0, t1):
    """Attempts let through per minute from the first 429 in [t0, t1) to t1."""
    window = [(t, s) for t, _, s in events if t0 <= t < t1]
    firsts = [t for t, s in window if s == 429]
    if not firsts or t1 - firsts[0] < 5:
        return None, 0, 0
    f = firsts[0]
    n = sum(1 for t, s in window if t > f and allowed(s))
    return n / (t1 - f) * 60, n, t1 - f


def render(args, ledger, accounts, tl, took):
    L = args.limit
    lines = []
    w = lines.append
    t0 = tl["t_start"]
    rel = lambda t: t - t0  # noqa: E731
    attempts = sum(len(v) for v in ledger.logins.values())
    w(f"Run: {took:.0f} s in all, {rel(tl['t_end']):.0f} s of load; 3 replicas (threads = 2) "
      f"on one PostgreSQL and one Redis behind nginx round-robin; "
      f"login_per_account_per_minute = {L}, per_ip_per_minute = 0, "
      f"redis_timeout_ms = {args.redis_timeout_ms}, lockout off; "
      f"{args.flooders} flood workers over {args.accounts} accounts (30 % right passwords, "
      f"random X-Forwarded-For 10.x.y.z): {attempts} login attempts, "
      f"{attempts / max(1, rel(tl['t_end'])) * 60 / args.accounts:.0f} per account per minute; "
      f"{args.churners} refresh/logout churn sessions, 2 proxied readers. "
      f"Redis SIGKILLed at {rel(tl['r_kill']):.0f} s for {args.outage:g} s; PostgreSQL "
      f"stopped at {rel(tl['p_stop']):.0f} s for {args.outage:g} s.")
    w("")
    # enforced limit, in the fault-free stretches
    stretches = [("before the Redis restart", t0, tl["r_kill"]),
                 ("after the Redis restart", tl["r_end"], tl["p_stop"]),
                 ("after the PostgreSQL restart", tl["p_back"] + 1, tl["t_end"])]
    w(f"**Enforced login limit** (attempts let through, 200 or 401, per account per minute, "
      f"summed over the three replicas, counted by the time each attempt was sent, from the "
      f"account's first 429 on; configured {L}):")
    w("")
    w("| account | " + " | ".join(s[0] for s in stretches) + " | first 60 s of load |")
    w("|---|" + "---|" * (len(stretches) + 1))
    totals = defaultdict(lambda: [0, 0.0])
    for i, (email, _) in enumerate(accounts):
        ev = ledger.logins[email]
        cells = []
        for name, a, b in stretches:
            rate, n, span = rate_after_first_429(ev, a, b)
            if rate is None:
                cells.append("–")
            else:
                cells.append(f"{rate:.1f} ({n} in {span:.0f} s)")
                totals[name][0] += n
                totals[name][1] += span
        first = sum(1 for t, _, s in ev if t0 <= t < t0 + 60 and allowed(s))
        cells.append(f"{first}")
        w(f"| flood{i} | " + " | ".join(cells) + " |")
    agg = []
    for name, _, _ in stretches:
        n, span = totals[name]
        if span:
            rate = n / span * 60
            agg.append(f"{rate:.1f}/min ({(rate - L) / L * 100:+.1f} % vs {L})")
        else:
            agg.append("–")
    w("| all accounts | " + " | ".join(agg) + " | (bucket starts full: up to 2 × L) |")
    w("| Redis fallbacks (all requests, 3 replicas) | " + " | ".join(
        f"{sum(c.values())} {dict(c) or ''}" for c in tl["fb_stretch"]) + " | |")
    w("")
    # Redis outage
    during = defaultdict(int)
    for email, _ in accounts:
        for t, _, s in ledger.logins[email]:
            if tl["r_kill"] <= t < tl["r_end"] and allowed(s):
                during[email] += 1
    span = tl["r_end"] - tl["r_kill"]
    rec = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(tl["r_recovered"].items())) or "none"
    w(f"**Redis restart** ({args.outage:g} s down): fallbacks to the local limiter "
      f"{sum(tl['fb_redis'].values())} ({dict(tl['fb_redis']) or 'none'}); "
      f"`{REDIS_UP}` back to 1 after the restart: {rec}; "
      f"logins let through per account from the kill to 1 s after recovery "
      f"({span:.1f} s): {', '.join(str(during[e]) for e, _ in accounts)} "
      f"(the restarted Redis starts with full buckets: up to L more each).")
    w("")
    w("| fault | requests in the window | 2xx | refused or errors (status code) | no answer | "
      "first success after the repair |")
    w("|---|---|---|---|---|---|")
    for name, a, b, repair, kinds in [
            ("Redis SIGKILL, restart", tl["r_kill"], tl["r_end"], tl["r_back"],
             {"login flood", "churn login"}),
            ("PostgreSQL restart", tl["p_stop"], tl["p_back"] + 5, tl["p_back"],
             {"churn login", "login flood", "refresh", "register", "logout"})]:
        window = [e for e in ledger.events if a <= e[0] < b]
        bad = Counter(e[2] for e in window if not e[3] and e[2] not in ("no answer",)
                      and not (e[1] == "login flood" and e[2].startswith(("401", "429"))))
        no_answer = sum(1 for e in window if e[2] == "no answer")
        firsts = []
        for kind in sorted(kinds):
            after = [e[0] for e in window if e[1] == kind and e[3] and e[0] >= repair]
            failed = [e for e in window if e[1] == kind and not e[3]
                      and not (kind == "login flood" and e[2].startswith(("401", "429")))]
            if failed and after:
                firsts.append(f"{kind} {after[0] - repair:.2f} s")
            elif failed:
                firsts.append(f"{kind}: none")
        w(f"| {name} | {len(window)} | {sum(1 for e in window if e[3])} | "
          f"{', '.join(f'{v}× {k}' for k, v in bad.most_common()) or 'none'} | {no_answer} | "
          f"{'; '.join(firsts) or 'nothing failed'} |")
    w("")
    p = ledger.propagation
    w(f"**Revocation propagation** (logout answered through nginx → 401 TOKEN_REVOKED on all "
      f"three replicas, polled directly every 5 ms): {len(p)} logouts, "
      f"p50 {pct(p, 50) * 1000:.1f} ms, p99 {pct(p, 99) * 1000:.1f} ms, "
      f"max {max(p) * 1000 if p else float('nan'):.1f} ms; still accepted after 10 s: "
      f"{ledger.propagation_lost}; other answers while polling: "
      f"{dict(ledger.poll_answers) or 'none'}.")
    w("")
    by_kind = defaultdict(Counter)
    for _, kind, label, ok in ledger.events:
        by_kind[kind]["ok" if ok else label] += 1
    w("Answers by kind of request (whole run): " + "; ".join(
        f"{k}: " + ", ".join(f"{v} {lab}" for lab, v in c.most_common())
        for k, c in sorted(by_kind.items())) + ".")
    w("")
    w(f"Redis fallbacks in the whole run: {dict(tl['fb_all']) or 'none'}; during the "
      f"PostgreSQL restart: {dict(tl['fb_pg']) or 'none'}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
