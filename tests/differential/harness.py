"""Processes, ports, raw HTTP and the wire tap of the differential suite.

Everything listens on 127.0.0.1 on ephemeral ports. Requests are sent as raw
bytes over a socket (the point is to send what a client library refuses to
send) and answers are parsed by http.client, never by hand.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGET = ROOT / "target"


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def portcullis_bin() -> Path:
    p = os.environ.get("PORTCULLIS_BIN") or str(TARGET / "release" / "portcullis")
    return Path(p).resolve()


# --------------------------------------------------------------------------
# ports and processes
# --------------------------------------------------------------------------

_USED_PORTS: set[int] = set()
_PORT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (never twice)."""
    with _PORT_LOCK:
        for _ in range(200):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _USED_PORTS:
                _USED_PORTS.add(port)
                return port
    raise RuntimeError("no free port")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def poll(pred, timeout: float, what: str, every: float = 0.05, proc: "Proc | None" = None):
    """Calls pred() until it returns a true value or the deadline passes."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if proc is not None and proc.exited():
            raise RuntimeError(f"{proc.name} exited ({proc.returncode()}) while waiting for {what}\n{proc.tail()}")
        if time.monotonic() >= deadline:
            extra = f"\n{proc.tail()}" if proc is not None else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(every)


def _die_with_parent():
    # The child gets SIGKILL when the test process dies (Linux prctl).
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Proc:
    """A server process started by the suite, in its own process group (so
    that its workers are stopped with it), output to a log file."""

    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None, cwd: Path | None = None):
        self.name = name
        self.log = log
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith("PORTCULLIS_") or k == "RUST_LOG":
                del full_env[k]
        full_env.update(env or {})
        self._out = open(log, "ab")
        self.p = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def exited(self) -> bool:
        return self.p.poll() is not None

    def returncode(self):
        return self.p.poll()

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return f"--- {self.name} log ({self.log}) ---\n" + "\n".join(text[-lines:])

    def stop(self, timeout: float = 10):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.p.wait(5)
        self._out.close()


def which(*names: str) -> str | None:
    for n in names:
        p = shutil.which(n)
        if p:
            return p
        if os.path.isabs(n) and os.access(n, os.X_OK):
            return n
    return None


# --------------------------------------------------------------------------
# raw HTTP
# --------------------------------------------------------------------------


@dataclass
class Answer:
    """One answer to a raw request, parsed by http.client."""

    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    dropped: str | None = None  # why no answer could be read

    def header(self, name: str) -> str | None:
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def header_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def describe(self) -> str:
        if self.dropped:
            return f"no answer ({self.dropped})"
        body = self.body[:400].decode("utf-8", "replace")
        hs = "; ".join(f"{k}: {v}" for k, v in self.headers)
        return f"{self.status} {self.reason} [{hs}] {body!r}"


def send_raw(port: int, data: bytes, timeout: float = 15, head: bool = False) -> Answer:
    """Sends bytes as they are and reads one HTTP answer with http.client."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    except OSError as e:
        return Answer(dropped=f"connect: {e}")
    try:
        try:
            sock.sendall(data)
        except OSError as e:
            # the server may answer and close before reading everything
            pass_error = e
        else:
            pass_error = None
        resp = http.client.HTTPResponse(sock, method="HEAD" if head else "GET")
        try:
            resp.begin()
            body = resp.read()
        except (http.client.HTTPException, OSError) as e:
            why = f"{type(e).__name__}: {e}"
            if pass_error:
                why += f" (send: {pass_error})"
            return Answer(dropped=why)
        return Answer(
            status=resp.status,
            reason=resp.reason,
            headers=[(k, v) for k, v in resp.getheaders()],
            body=body,
        )
    finally:
        sock.close()


def http_json(port: int, method: str, path: str, body=None, headers: dict | None = None, timeout: float = 30, tls=None):
    """A plain, well-formed request (setup calls: register, login, keys);
    over TLS with `tls` (an `ssl.SSLContext`)."""
    if tls is None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
    try:
        hs = {"Content-Type": "application/json"} if body is not None else {}
        hs.update(headers or {})
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=hs)
        r = conn.getresponse()
        data = r.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = None
        return r.status, parsed, data, r.getheaders()
    finally:
        conn.close()


# --------------------------------------------------------------------------
# the wire tap: what the sidecar actually sent to the upstream
# --------------------------------------------------------------------------

_MARK = re.compile(rb"\r\nx-diff-case:[ \t]*([^\r\n]*)")
_REQLINE = re.compile(rb"(?:^|\n)([!-~]+) (\S+) HTTP/(\d\.\d)\r\n")


@dataclass
class WireRequest:
    """One request head as it reached the upstream's socket."""

    method: str
    target: str
    head: bytes  # request line and header lines, CRLF-separated

    def headers(self) -> list[tuple[str, str]]:
        out = []
        for line in self.head.split(b"\r\n")[1:]:
            if not line:
                continue
            name, _, value = line.partition(b":")
            out.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return out


class Tap:
    """A TCP relay between the sidecar and an upstream that keeps every byte
    the sidecar sent, so the suite knows what reached the upstream even when
    the upstream server itself refused it (and that nothing reached it when
    the sidecar refused)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._lock = threading.Lock()
        self._buffers: list[bytearray] = []
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", 0))
        self._lsock.listen(128)
        self.port = self._lsock.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                c, _ = self._lsock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, client: socket.socket):
        try:
            up = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=30)
        except OSError:
            client.close()
            return
        buf = bytearray()
        with self._lock:
            self._buffers.append(buf)

        def pump(src, dst, record):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if record is not None:
                        with self._lock:
                            record.extend(data)
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t = threading.Thread(target=pump, args=(up, client, None), daemon=True)
        t.start()
        pump(client, up, buf)
        t.join(60)
        client.close()
        up.close()

    def total(self) -> int:
        with self._lock:
            return sum(len(b) for b in self._buffers)

    def index(self) -> dict[str, list[WireRequest]]:
        """Every request head that carried an X-Diff-Case marker, by marker."""
        with self._lock:
            bufs = [bytes(b) for b in self._buffers]
        out: dict[str, list[WireRequest]] = {}
        for raw in bufs:
            low = raw.lower()
            for m in _MARK.finditer(low):
                case = raw[m.start(1) : m.end(1)].decode("latin-1").strip()
                # the request line that starts this head: the last one before the marker
                start = 0
                end = raw.find(b"\r\n\r\n", m.start())
                end = len(raw) if end < 0 else end
                last = None
                for rl in _REQLINE.finditer(raw, max(0, m.start() - 1048576), m.start() + 2):
                    last = rl
                if last is not None:
                    start = last.start(1)
                    method = last.group(1).decode("latin-1")
                    target = last.group(2).decode("latin-1")
                else:
                    method, target = "?", "?"
                out.setdefault(case, []).append(WireRequest(method, target, raw[start:end]))
        return out

    def close(self):
        self._closed = True
        try:
            self._lsock.close()
        except OSError:
            pass


# --------------------------------------------------------------------------
# portcullis
# --------------------------------------------------------------------------

# The route policy of the suite (globs in lower case, as SPEC §15 asks).
ROUTES_TOML = """
[[routes]]
name = "public"
path = "/public/**"
auth = "public"

[[routes]]
name = "admin_area"
path = "/admin-area/**"
auth = "authenticated"
roles = ["admin"]

[[routes]]
name = "member_area"
path = "/member-area/**"
auth = "authenticated"
permissions = ["profile:read"]
"""


def toml_str(s: str) -> str:
    return json.dumps(s)


class Sidecar:
    """One portcullis process: SQLite in its own folder, proxy and admin
    listeners on ephemeral ports, the route policy above."""

    def __init__(
        self,
        workdir: Path,
        upstream: str,
        trusted_proxies: list[str] | None = None,
        name: str = "portcullis",
        upstream_protocol: str = "http1",
        extra_routes: str = "",
        proxy_extra: str = "",
        upstream_extra: str = "",
        tls=None,
    ):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.bin = portcullis_bin()
        self.name = name
        # the client side of a TLS proxy listener (`proxy_extra` sets its files)
        self.tls = tls
        self.proxy_port = free_port()
        self.admin_port = free_port()
        self.config = workdir / "portcullis.toml"
        tp = ", ".join(toml_str(t) for t in (trusted_proxies or []))
        self.config.write_text(
            f"""[server]
threads = 2
grace_period_seconds = 1
graceful_shutdown_timeout_seconds = 1

[proxy]
listen = {toml_str(f"127.0.0.1:{self.proxy_port}")}
default_policy = "authenticated"
trusted_proxies = [{tp}]
{proxy_extra}

[admin]
listen = {toml_str(f"127.0.0.1:{self.admin_port}")}

[upstream]
address = {toml_str(upstream)}
protocol = {toml_str(upstream_protocol)}
connect_timeout_ms = 2000
read_timeout_ms = 10000
{upstream_extra}

[database]
url = {toml_str("sqlite://" + str(workdir / "portcullis.db"))}

[rate_limit]
per_ip_per_minute = 0
login_per_account_per_minute = 0

[log]
format = "json"
level = "info"
{extra_routes}{ROUTES_TOML}"""
        )
        self.proc: Proc | None = None

    def start(self):
        if not self.bin.is_file():
            raise FileNotFoundError(f"portcullis binary {self.bin} not found (cargo build --release --locked, or set PORTCULLIS_BIN)")
        self.proc = Proc(self.name, [str(self.bin), "serve", "--config", str(self.config)], self.workdir / "portcullis.log", cwd=self.workdir)

        def ready():
            try:
                st, _, _, _ = http_json(self.admin_port, "GET", "/readyz", timeout=2)
            except OSError:
                return False
            return st == 200 and port_open(self.proxy_port)

        poll(ready, 30, f"{self.name} /readyz", proc=self.proc)
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()

    def cli(self, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_") and k != "RUST_LOG"}
        return subprocess.run(
            [str(self.bin), *args, "--config", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.workdir,
            timeout=60,
        )

    def register(self, email: str, password: str) -> dict:
        st, body, raw, _ = http_json(self.proxy_port, "POST", "/auth/register", {"email": email, "password": password}, tls=self.tls)
        if st != 201 or not body or "accessToken" not in body:
            raise RuntimeError(f"register {email}: {st} {raw[:300]!r}")
        return body

    def login(self, email: str, password: str) -> dict:
        st, body, raw, _ = http_json(self.proxy_port, "POST", "/auth/login", {"email": email, "password": password}, tls=self.tls)
        if st != 200 or not body or "accessToken" not in body:
            raise RuntimeError(f"login {email}: {st} {raw[:300]!r}")
        return body

    def create_admin(self, email: str, password: str) -> dict:
        r = self.cli(["user", "create", "--tenant", "default", "--email", email, "--role", "admin"], stdin=password + "\n")
        if r.returncode != 0:
            raise RuntimeError(f"portcullis user create: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return self.login(email, password)

    def api_key(self, token: str) -> str:
        st, body, raw, _ = http_json(
            self.proxy_port, "POST", "/auth/api-keys", {"name": "differential"}, {"Authorization": f"Bearer {token}"}, tls=self.tls
        )
        if st != 201 or not body or "key" not in body:
            raise RuntimeError(f"api key: {st} {raw[:300]!r}")
        return body["key"]


@dataclass
class Credentials:
    member_token: str
    member_id: str
    admin_token: str
    admin_id: str
    member_key: str

    def token(self, cred: str) -> str | None:
        return {"member": self.member_token, "admin": self.admin_token}.get(cred)

    def principal_of(self, text: str) -> set[str]:
        """Which principals' secrets appear in a header value."""
        found = set()
        if self.member_token in text or self.member_key in text:
            found.add("member")
        if self.admin_token in text:
            found.add("admin")
        return found


def make_credentials(sc: Sidecar, tag: str) -> Credentials:
    n = f"{tag}-{os.getpid()}-{int(time.time() * 1000) % 10**8}"
    password = "Differential-" + os.urandom(6).hex() + "!9"
    member = sc.register(f"member-{n}@example.com", password)
    admin = sc.create_admin(f"admin-{n}@example.com", password)
    if "admin" not in admin["user"]["roles"]:
        raise RuntimeError(f"admin lacks role admin: {admin['user']}")
    key = sc.api_key(member["accessToken"])
    return Credentials(
        member_token=member["accessToken"],
        member_id=member["user"]["id"],
        admin_token=admin["accessToken"],
        admin_id=admin["user"]["id"],
        member_key=key,
    )


class JsonNginx:
    """nginx on 127.0.0.1 answering every request with a JSON object of
    nginx variables (`fields`: name -> `$variable`), i.e. with what it saw.
    `listen_flags` and `server_extra` add TLS (`ssl http2`, certificates)."""

    def __init__(self, workdir: Path, fields: dict[str, str], name: str = "nginx-json", listen_flags: str = "", server_extra: str = ""):
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        body = ",".join(f'"{k}":"{v}"' for k, v in fields.items())
        (workdir / "nginx.conf").write_text(
            f"""worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  proxy_temp_path {workdir}/proxy;
  fastcgi_temp_path {workdir}/fastcgi;
  uwsgi_temp_path {workdir}/uwsgi;
  scgi_temp_path {workdir}/scgi;
  server {{
    listen 127.0.0.1:{self.port} {listen_flags};
    {server_extra}
    location / {{ default_type application/json; return 200 '{{{body}}}'; }}
  }}
}}
"""
        )
        self.proc = Proc(name, [which("nginx", "/usr/sbin/nginx"), "-e", str(workdir / "error.log"), "-p", str(workdir), "-c", str(workdir / "nginx.conf")], workdir / "nginx.out")
        poll(lambda: port_open(self.port), 15, name, proc=self.proc)

    def stop(self):
        self.proc.stop()
