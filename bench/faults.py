#!/usr/bin/env python3
"""Fault injection under load, bounded in time (issue 15).

    python3 bench/faults.py                 # after cargo build --release (make faults)
    python3 bench/faults.py --out report.md --steady 8 --outage 3

Starts, on loopback ports:
  - a private PostgreSQL server (initdb into a temp folder, run as the
    `postgres` user when root), so restarting it disturbs nothing else;
  - two portcullis replicas A and B sharing it (database.timeout_ms default);
  - the echo upstream (`portcullis echo`) as its own process;
and a load of clients on both replicas: session workers that rotate their
refresh token and make proxied requests with their access token, a writer
that registers users, and a reader that makes proxied requests with one
cached token. Then, one after the other, with steady load in between:

  1. SIGKILL replica A, restart it after --outage seconds;
  2. restart PostgreSQL (stopped for --outage seconds);
  3. SIGKILL the upstream, restart it after --outage seconds.

Counted per phase: requests answered 2xx, refused (by status and code), and
without an answer (connection refused or reset); seconds from the repair to
the first success of the affected kind. At the end every acknowledged write
is checked: each registered user logs in, and each session's last
acknowledged refresh token (rotations answered 200, or refused with 503:
then the previous token must still be the live one) still rotates. A refresh
that got no answer at all (the replica died under it) is ambiguous: the
worker drops that session and logs in again; those are counted apart.
Prints a Markdown report (and writes it to --out).
"""

import argparse
import glob
import http.client
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# exit status when the run cannot happen here (no PostgreSQL server binaries)
SKIP = 77


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what, timeout, check, interval=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise SystemExit(f"faults: {what} not within {timeout}s")


def rand(n=10):
    return "".join(random.choice(string.ascii_lowercase + string.digits) for _ in range(n))


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class Answer:
    def __init__(self, status, body, code=None):
        self.status = status  # None: no answer (refused, reset, timed out)
        self.body = body
        self.code = code

    def ok(self):
        return self.status is not None and 200 <= self.status < 300

    def label(self):
        if self.status is None:
            return "no answer"
        if self.code:
            return f"{self.status} {self.code}"
        return str(self.status)


def call(port, method, path, body=None, token=None, timeout=10, xff=None):
    headers = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if token:
        headers["authorization"] = f"Bearer {token}"
    if xff:
        headers["x-forwarded-for"] = xff
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        code = None
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            code = parsed["error"].get("code")
        return Answer(r.status, parsed, code)
    except (OSError, http.client.HTTPException):
        return Answer(None, None)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

class Postgres:
    """A private PostgreSQL server in a temp folder."""

    def __init__(self, workdir):
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
        if not bins:
            print("faults: no PostgreSQL server binaries (apt-get install postgresql)",
                  file=sys.stderr)
            sys.exit(SKIP)
        self.bin = bins[-1]
        self.dir = os.path.join(workdir, "pg")
        self.port = free_port()
        os.makedirs(self.dir)
        self.as_user = []
        if os.geteuid() == 0:
            shutil.chown(workdir, "postgres")
            shutil.chown(self.dir, "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.run("initdb", "-D", self.dir, "-A", "trust", "-U", "postgres", "--no-sync")
        self.opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=on"

    def run(self, tool, *args):
        subprocess.run(self.as_user + [f"{self.bin}/{tool}", *args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ctl(self, *args):
        self.run("pg_ctl", "-D", self.dir, "-l", os.path.join(self.dir, "log"), "-o", self.opts,
                 "-w", *args)

    def start(self):
        self.ctl("start")

    def stop(self):
        self.ctl("-m", "fast", "stop")

    def psql(self, sql):
        subprocess.run([f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U",
                        "postgres", "-Atqc", sql], check=True, stdout=subprocess.DEVNULL)

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"


class Process:
    def __init__(self, name, argv, env=None, log=None):
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc = None

    def start(self):
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out,
                                     stdin=subprocess.DEVNULL)

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def terminate(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


class Replica(Process):
    def __init__(self, name, binary, workdir, db_url, upstream):
        self.port, self.admin = free_port(), free_port()
        conf = os.path.join(workdir, f"{name}.toml")
        with open(conf, "w") as f:
            f.write(f"""[server]
grace_period_seconds = 2
threads = 1
[proxy]
listen = "127.0.0.1:{self.port}"
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
login_per_account_per_minute = 0
[log]
level = "warn"
""")
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
        super().__init__(name, [binary, "serve", "--config", conf], env,
                         os.path.join(workdir, f"{name}.log"))

    def ready(self):
        return call(self.admin, "GET", "/readyz", timeout=2).status == 200


# --------------------------------------------------------------------------
# load
# --------------------------------------------------------------------------

class Ledger:
    """Everything the clients did, timestamped, and what they were told."""

    def __init__(self):
        self.lock = threading.Lock()
        self.events = []  # (t, replica, kind, label, ok)
        self.registered = []  # (email, password) answered 201
        self.ambiguous_refresh = 0
        self.violations = []  # acknowledged state found broken during the run

    def note(self, replica, kind, answer):
        with self.lock:
            self.events.append((time.monotonic(), replica, kind, answer.label(), answer.ok()))


class Session:
    def __init__(self, email, password, access, refresh):
        self.email, self.password = email, password
        self.access, self.refresh = access, refresh


def session_worker(replicas, ledger, stop, sessions, index):
    """Rotates its refresh token and makes proxied calls, on a random replica."""
    rng = random.Random(index)
    email, password = f"s{index}-{rand()}@example.com", f"Fault-{rand(14)}-9!"
    session = None
    while not stop.is_set():
        r = rng.choice(replicas)
        if session is None:
            a = call(r.port, "POST", "/auth/register", {"email": email, "password": password})
            if a.status == 409:
                a = call(r.port, "POST", "/auth/login", {"email": email, "password": password})
            ledger.note(r.name, "login", a)
            if a.ok():
                session = Session(email, password, a.body["accessToken"], a.body["refreshToken"])
                sessions[index] = session
            else:
                time.sleep(0.1)
            continue
        a = call(r.port, "GET", f"/api/s{index}", token=session.access)
        ledger.note(r.name, "proxied", a)
        a = call(r.port, "POST", "/auth/refresh", {"refreshToken": session.refresh})
        ledger.note(r.name, "refresh", a)
        if a.ok():
            session.access, session.refresh = a.body["accessToken"], a.body["refreshToken"]
        elif a.status is None:
            # no answer: the rotation may or may not have happened
            with ledger.lock:
                ledger.ambiguous_refresh += 1
            session = None
            sessions.pop(index, None)
        elif a.status != 503:
            # a token the client was never told is dead: a lost write
            with ledger.lock:
                ledger.violations.append(f"session {index}: refresh answered {a.label()}")
            session = None
            sessions.pop(index, None)
        time.sleep(0.05)


def writer(replicas, ledger, stop):
    """Registers users; every 201 is an acknowledged write."""
    while not stop.is_set():
        r = random.choice(replicas)
        email, password = f"w-{rand()}@example.com", f"Fault-{rand(14)}-9!"
        a = call(r.port, "POST", "/auth/register", {"email": email, "password": password})
        ledger.note(r.name, "register", a)
        if a.status == 201:
            with ledger.lock:
                ledger.registered.append((email, password))
        time.sleep(0.2)


def reader(replica, token, ledger, stop):
    """Proxied calls with one token the replica has cached."""
    while not stop.is_set():
        a = call(replica.port, "GET", "/api/cached", token=token)
        ledger.note(replica.name, "cached", a)
        time.sleep(0.01)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.environ.get(
        "PORTCULLIS_BIN", os.path.join(ROOT, "target/release/portcullis")))
    ap.add_argument("--steady", type=float, default=8, help="seconds of load between faults")
    ap.add_argument("--outage", type=float, default=3, help="seconds each fault lasts")
    ap.add_argument("--sessions", type=int, default=6)
    ap.add_argument("--out", help="also write the report here")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="portcullis-faults-")
    pg = Postgres(work)
    pg.start()
    pg.psql("CREATE DATABASE faults")
    up_port = free_port()
    upstream = Process("upstream", [args.binary, "echo", "--listen", f"127.0.0.1:{up_port}"],
                       log=os.path.join(work, "upstream.log"))
    upstream.start()
    a = Replica("A", args.binary, work, pg.url("faults"), f"127.0.0.1:{up_port}")
    b = Replica("B", args.binary, work, pg.url("faults"), f"127.0.0.1:{up_port}")
    replicas = [a, b]
    everything = [upstream, a, b]
    started = time.monotonic()
    try:
        for r in replicas:
            r.start()
        for r in replicas:
            wait_until(f"replica {r.name} ready", 60, r.ready)

        ledger = Ledger()
        stop = threading.Event()
        sessions = {}
        threads = [threading.Thread(target=session_worker, args=(replicas, ledger, stop, sessions, i))
                   for i in range(args.sessions)]
        threads.append(threading.Thread(target=writer, args=(replicas, ledger, stop)))
        # one cached token per replica for the reader
        email, password = f"reader-{rand()}@example.com", f"Fault-{rand(14)}-9!"
        tok = call(a.port, "POST", "/auth/register", {"email": email, "password": password})
        assert tok.ok(), tok.body
        for r in replicas:
            assert call(r.port, "GET", "/api/warm", token=tok.body["accessToken"]).ok()
            threads.append(threading.Thread(target=reader,
                                            args=(r, tok.body["accessToken"], ledger, stop)))
        for t in threads:
            t.daemon = True
            t.start()

        phases = []  # (name, start, fault_end, end, affected replica names, kinds)

        def steady():
            time.sleep(args.steady)

        steady()
        # 1. SIGKILL replica A, restart it
        t0 = time.monotonic()
        a.kill()
        time.sleep(args.outage)
        t1 = time.monotonic()
        a.start()
        wait_until("replica A ready again", 60, a.ready)
        steady()
        phases.append(("SIGKILL replica A, restart", t0, t1, time.monotonic(), {"A"},
                       {"login", "refresh", "register", "proxied", "cached"}))

        # 2. PostgreSQL stopped, then started again
        t0 = time.monotonic()
        pg.stop()
        time.sleep(args.outage)
        pg.start()
        t1 = time.monotonic()
        steady()
        phases.append(("PostgreSQL restarted", t0, t1, time.monotonic(), {"A", "B"},
                       {"login", "refresh", "register"}))

        # 3. SIGKILL the upstream, restart it
        t0 = time.monotonic()
        upstream.kill()
        time.sleep(args.outage)
        upstream.start()
        t1 = time.monotonic()
        steady()
        phases.append(("SIGKILL upstream, restart", t0, t1, time.monotonic(), {"A", "B"},
                       {"proxied", "cached"}))

        stop.set()
        for t in threads:
            t.join(timeout=15)
        lost = verify(replicas, ledger, sessions)
        report = render(args, ledger, phases, lost, sessions, time.monotonic() - started)
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
    if sum(lost.values()):
        sys.exit(1)


def verify(replicas, ledger, sessions):
    """Every acknowledged write is still there."""
    r = replicas[-1]
    lost = Counter()
    for v in ledger.violations:
        lost["refresh rotations"] += 1
        print(f"LOST: {v}", file=sys.stderr)
    for email, password in ledger.registered:
        a = call(r.port, "POST", "/auth/login", {"email": email, "password": password})
        if not a.ok():
            lost["registered users"] += 1
            print(f"LOST: registered {email}: login answered {a.label()}", file=sys.stderr)
    for index, s in sorted(sessions.items()):
        a = call(r.port, "POST", "/auth/refresh", {"refreshToken": s.refresh})
        if not a.ok():
            lost["refresh rotations"] += 1
            print(f"LOST: session {index}: last acknowledged refresh token answered {a.label()}",
                  file=sys.stderr)
    return lost


def render(args, ledger, phases, lost, sessions, took):
    lines = []
    w = lines.append
    w(f"Run: {took:.0f} s in all; {args.sessions} session workers (refresh + proxied call, "
      f"random replica), 1 writer (register every 0.2 s), 1 cached-token reader per replica; "
      f"each fault lasts {args.outage:g} s, {args.steady:g} s of load between faults; "
      f"database.timeout_ms = 3000 (default).")
    w("")
    w("| fault | requests in the window | 2xx | refused (status code) | no answer | "
      "first success after the repair |")
    w("|---|---|---|---|---|---|")
    for name, t0, t1, t_end, names, kinds in phases:
        window = [e for e in ledger.events if t0 <= e[0] < t_end]
        refused = Counter(e[3] for e in window if not e[4] and e[3] != "no answer")
        no_answer = sum(1 for e in window if e[3] == "no answer")
        ok = sum(1 for e in window if e[4])
        # recovery: per kind affected, first success at or after the repair
        firsts = []
        for kind in sorted(kinds):
            after = [e[0] for e in window if e[2] == kind and e[1] in names and e[4] and e[0] >= t1]
            failed = [e for e in window if e[2] == kind and e[1] in names and not e[4]]
            if failed and after:
                firsts.append(f"{kind} {after[0] - t1:.2f} s")
            elif failed:
                firsts.append(f"{kind}: none")
        ref = ", ".join(f"{v}× {k}" for k, v in refused.most_common()) or "none"
        w(f"| {name} | {len(window)} | {ok} | {ref} | {no_answer} | "
          f"{'; '.join(firsts) or 'nothing failed'} |")
    w("")
    by_kind = defaultdict(Counter)
    for _, _, kind, label, ok in ledger.events:
        by_kind[kind]["ok" if ok else label] += 1
    w("Totals by kind of request: " + "; ".join(
        f"{k}: " + ", ".join(f"{v} {lab}" for lab, v in c.most_common())
        for k, c in sorted(by_kind.items())) + ".")
    w("")
    w(f"Acknowledged writes checked afterwards: {len(ledger.registered)} registered users "
      f"(each logs in), {len(sessions)} sessions' last acknowledged refresh tokens (each "
      f"rotates). Lost: {sum(lost.values())}"
      + (f" ({dict(lost)})" if lost else "") + f". Refreshes that got no answer (ambiguous, "
      f"the session was dropped and logged in again): {ledger.ambiguous_refresh}.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
