"""TLS on both sides of the sidecar, against things we did not write.

The proxy listener with `proxy.tls_cert_file`/`tls_key_file`: curl over
HTTP/2 (ALPN h2) and HTTP/1.1, TLS 1.2 and 1.3 only, a grpcio client over
TLS, and the certificate swapped on SIGHUP while an open connection keeps
working. The upstream with `upstream.tls`: nginx serving HTTPS over HTTP/1.1
and HTTP/2, and a grpcio server over TLS, verified against
`upstream.ca_file` and `upstream.sni`; a certificate from another CA or for
another name is a 502. Every certificate is made here by Debian's `openssl`
from a CA made for the test.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import warnings
from concurrent import futures
from pathlib import Path

import pytest

from harness import JsonNginx, Proc, Sidecar, free_port, http_json, poll, which

try:  # the counterpart; when missing the tests fail under CI, never skip silently
    import grpc
except ImportError:  # pragma: no cover
    grpc = None


# --------------------------------------------------------------------------
# a CA and certificates, made by openssl
# --------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)}: {r.stderr}")


class CA:
    def __init__(self, folder: Path, name: str):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.key = folder / f"{name}.key"
        self.pem = folder / f"{name}.pem"
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(self.key), "-out", str(self.pem), "-days", "2", "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=folder,
        )

    def issue(self, cn: str, sans: str = "DNS:localhost,IP:127.0.0.1") -> tuple[Path, Path]:
        """A server certificate and its key (PKCS#8 PEM)."""
        key = self.folder / f"{cn}.key"
        csr = self.folder / f"{cn}.csr"
        crt = self.folder / f"{cn}.crt"
        ext = self.folder / f"{cn}.ext"
        ext.write_text(
            f"subjectAltName={sans}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={cn}", cwd=self.folder,
        )
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(self.pem), "-CAkey", str(self.key), "-CAcreateserial",
            "-days", "2", "-out", str(crt), "-extfile", str(ext), cwd=self.folder,
        )
        return crt, key

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pem))
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory, counterpart_missing):
    if not which("openssl"):
        counterpart_missing("openssl (Debian package openssl) is not installed")
    folder = tmp_path_factory.mktemp("pki")
    ca = CA(folder, "portcullis-test-ca")
    other = CA(folder / "other", "another-ca")
    return ca, other


def _toml(s: str) -> str:
    return json.dumps(s)


def _tls_proxy(crt: Path, key: Path) -> str:
    return f"tls_cert_file = {_toml(str(crt))}\ntls_key_file = {_toml(str(key))}\n"


def _curl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "15", *args], capture_output=True, text=True, timeout=30)


def _metric(sc: Sidecar, name: str, labels: str) -> float:
    _, _, raw, _ = http_json(sc.admin_port, "GET", "/metrics")
    total = 0.0
    for line in raw.decode().splitlines():
        if line.startswith(name + "{") and all(part in line for part in labels.split(",")):
            total += float(line.rsplit(" ", 1)[1])
    return total


# --------------------------------------------------------------------------
# the proxy listener over TLS
# --------------------------------------------------------------------------


def Upstream(workdir: Path, tls: tuple[Path, Path] | None = None) -> JsonNginx:
    """nginx as the upstream, answering with what it saw."""
    fields = {"protocol": "$server_protocol", "tls": "$ssl_protocol", "user": "$http_x_auth_user_id", "proto": "$http_x_forwarded_proto", "sni": "$ssl_server_name"}
    if tls:
        return JsonNginx(workdir, fields, "nginx-tls", "ssl http2", f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]};")
    return JsonNginx(workdir, fields, "nginx-tls")


@pytest.fixture(scope="module")
def nginx_bin(counterpart_missing):
    if not which("nginx", "/usr/sbin/nginx"):
        counterpart_missing("nginx (Debian package nginx-light) is not installed")


@pytest.fixture(scope="module")
def tls_edge(tmp_path_factory, require_binary, pki, nginx_bin):
    """A sidecar whose proxy listener speaks TLS, in front of plain nginx."""
    ca, _ = pki
    work = tmp_path_factory.mktemp("tls-edge")
    crt, key = ca.issue("portcullis-edge-1")
    # the files the sidecar reads; the test overwrites them before a SIGHUP
    live_crt, live_key = work / "live.crt", work / "live.key"
    live_crt.write_bytes(crt.read_bytes())
    live_key.write_bytes(key.read_bytes())
    up = Upstream(work / "nginx")
    sc = Sidecar(work, f"127.0.0.1:{up.port}", proxy_extra=_tls_proxy(live_crt, live_key), tls=ca.context(), name="portcullis-tls").start()
    user = sc.register(f"tls-{os.getpid()}@example.com", "Tls-Edge-" + os.urandom(4).hex() + "!7")
    yield sc, ca, user, (live_crt, live_key), up
    sc.stop()
    up.stop()


def _url(sc: Sidecar, path: str) -> str:
    return f"https://localhost:{sc.proxy_port}{path}"


def test_curl_http2_over_tls_reaches_the_upstream_with_the_identity(tls_edge):
    sc, ca, user, _, _ = tls_edge
    r = _curl("--http2", "--cacert", str(ca.pem), "-H", f"Authorization: Bearer {user['accessToken']}", "-w", "\n%{http_version} %{http_code}", _url(sc, "/api/whoami"))
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    assert tail == "2 200", r.stdout
    seen = json.loads(body)
    assert seen["user"] == user["user"]["id"]
    # the client spoke https to the sidecar: the upstream is told so
    assert seen["proto"] == "https"
    assert _metric(sc, "portcullis_requests_total", 'protocol="h2",status="200"') >= 1


def test_curl_http1_over_tls_on_the_same_port(tls_edge):
    sc, ca, user, _, _ = tls_edge
    r = _curl("--http1.1", "--cacert", str(ca.pem), "-H", f"Authorization: Bearer {user['accessToken']}", "-w", "\n%{http_version} %{http_code}", _url(sc, "/api/whoami"))
    assert r.returncode == 0, r.stderr
    body, _, tail = r.stdout.rpartition("\n")
    assert tail == "1.1 200", r.stdout
    assert json.loads(body)["user"] == user["user"]["id"]


def test_a_refusal_over_tls_is_spec_json(tls_edge):
    sc, ca, _, _, _ = tls_edge
    r = _curl("--http2", "--cacert", str(ca.pem), "-w", "\n%{http_version} %{http_code}", _url(sc, "/api/whoami"))
    body, _, tail = r.stdout.rpartition("\n")
    assert tail == "2 401", r.stdout
    assert json.loads(body)["error"]["code"] == "UNAUTHENTICATED"


def test_tls_1_2_and_1_3_are_accepted_and_older_versions_refused(tls_edge):
    sc, ca, _, _, _ = tls_edge
    for flags, version in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"), (["--tlsv1.3"], "TLSv1.3")):
        ctx = ssl.create_default_context(cafile=str(ca.pem))
        ctx.minimum_version = ctx.maximum_version = getattr(ssl.TLSVersion, version.replace(".", "_"))
        with socket.create_connection(("127.0.0.1", sc.proxy_port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == version
        r = _curl(*flags, "--cacert", str(ca.pem), "-o", "/dev/null", "-w", "%{http_code}", _url(sc, "/public/ping"))
        assert r.returncode == 0, (flags, r.stderr)
    # curl offering at most TLS 1.1 (its OpenSSL told to allow it): the
    # sidecar ends the handshake with an alert (rustls: handshake_failure)
    r = _curl("--tlsv1.0", "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0", "--cacert", str(ca.pem), _url(sc, "/public/ping"))
    assert r.returncode == 35, (r.returncode, r.stderr)
    assert "alert" in r.stderr, r.stderr
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(ca.pem))
    ctx.set_ciphers("DEFAULT@SECLEVEL=0")
    with warnings.catch_warnings():  # TLS 1.0/1.1 are deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", sc.proxy_port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError) as refused:
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert "ALERT" in str(refused.value).upper(), refused.value


def test_clear_text_http_on_the_tls_port_is_not_served(tls_edge):
    sc, _, user, _, _ = tls_edge
    with socket.create_connection(("127.0.0.1", sc.proxy_port), timeout=10) as s:
        s.sendall(f"GET /api/whoami HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {user['accessToken']}\r\n\r\n".encode())
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except (ConnectionResetError, socket.timeout):
            pass
    assert b"whoami" not in got and user["user"]["id"].encode() not in got and not got.startswith(b"HTTP/1.1 200")


def _peer_cn(sc: Sidecar, ca: CA) -> str:
    with socket.create_connection(("127.0.0.1", sc.proxy_port), timeout=10) as raw:
        with ca.context().wrap_socket(raw, server_hostname="localhost") as tls:
            return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]


def test_sighup_swaps_the_certificate_for_new_connections_and_keeps_open_ones(tls_edge):
    sc, ca, user, (live_crt, live_key), _ = tls_edge
    import http.client

    assert _peer_cn(sc, ca) == "portcullis-edge-1"
    conn = http.client.HTTPSConnection("localhost", sc.proxy_port, context=ca.context(), timeout=10)
    auth = {"Authorization": f"Bearer {user['accessToken']}"}
    conn.request("GET", "/api/before", headers=auth)
    first = conn.getresponse()
    first.read()
    assert first.status == 200
    opened_at = conn.sock.getsockname()
    cn_before = dict(x[0] for x in conn.sock.getpeercert()["subject"])["commonName"]

    crt2, key2 = ca.issue("portcullis-edge-2")
    live_crt.write_bytes(crt2.read_bytes())
    live_key.write_bytes(key2.read_bytes())
    os.kill(sc.proc.p.pid, signal.SIGHUP)
    poll(lambda: _peer_cn(sc, ca) == "portcullis-edge-2", 15, "the new certificate on new connections")

    # the connection opened before the reload is still the same and still served
    conn.request("GET", "/api/after", headers=auth)
    second = conn.getresponse()
    second.read()
    assert second.status == 200
    assert conn.sock.getsockname() == opened_at
    assert cn_before == "portcullis-edge-1"
    conn.close()

    # a broken pair on the next SIGHUP: the certificate in use stays, the log says why
    live_key.write_text("not a key\n")
    os.kill(sc.proc.p.pid, signal.SIGHUP)
    poll(lambda: "TLS certificate not reloaded" in (sc.workdir / "portcullis.log").read_text(), 15, "the reload error in the log")
    assert _peer_cn(sc, ca) == "portcullis-edge-2"
    live_key.write_bytes(key2.read_bytes())


def _serve_expecting_exit(tmp: Path, proxy_extra: str = "", upstream_extra: str = "") -> str:
    sc = Sidecar(tmp, "127.0.0.1:9", proxy_extra=proxy_extra, upstream_extra=upstream_extra, name="portcullis-bad-tls")
    proc = Proc("portcullis-bad-tls", [str(sc.bin), "serve", "--config", str(sc.config)], tmp / "out.log", cwd=tmp)
    poll(proc.exited, 30, "portcullis to refuse to start")
    assert proc.returncode() != 0
    out = (tmp / "out.log").read_text()
    proc.stop()
    return out


def test_a_missing_or_mismatched_certificate_stops_the_start_naming_the_key(tmp_path, require_binary, pki):
    ca, _ = pki
    out = _serve_expecting_exit(tmp_path / "missing", _tls_proxy(tmp_path / "nope.crt", tmp_path / "nope.key"))
    assert "proxy.tls_cert_file" in out and "nope.crt" in out, out
    crt_a, _ = ca.issue("pair-a")
    _, key_b = ca.issue("pair-b")
    out = _serve_expecting_exit(tmp_path / "mismatch", _tls_proxy(crt_a, key_b))
    assert "proxy.tls_key_file" in out and "does not fit" in out, out
    out = _serve_expecting_exit(tmp_path / "badca", upstream_extra=f"tls = true\nca_file = {_toml(str(crt_a) + '.missing')}\n")
    assert "upstream.ca_file" in out, out


# --------------------------------------------------------------------------
# gRPC over TLS at the edge
# --------------------------------------------------------------------------


def _grpc_server(port: int, creds=None):
    def unary(request: bytes, context) -> bytes:
        md = dict(context.invocation_metadata())
        return md.get("x-auth-user-id", "-").encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("demo.Echo", {"Unary": grpc.unary_unary_rpc_method_handler(unary)}),))
    if creds is None:
        server.add_insecure_port(f"127.0.0.1:{port}")
    else:
        server.add_secure_port(f"127.0.0.1:{port}", creds)
    server.start()
    return server


def _unary(channel, token: str | None) -> bytes:
    md = (("authorization", f"Bearer {token}"),) if token else ()
    return channel.unary_unary("/demo.Echo/Unary")(b"hi", metadata=md, timeout=10)


def test_grpc_over_tls_to_the_sidecar(tmp_path, require_binary, pki, counterpart_missing):
    if grpc is None:
        counterpart_missing("grpcio (PyPI) is not installed")
    ca, _ = pki
    port = free_port()
    server = _grpc_server(port)
    crt, key = ca.issue("portcullis-grpc-edge")
    sc = Sidecar(tmp_path, f"127.0.0.1:{port}", upstream_protocol="h2c", proxy_extra=_tls_proxy(crt, key), tls=ca.context(), name="portcullis-grpc-tls").start()
    try:
        user = sc.register(f"grpc-tls-{os.getpid()}@example.com", "Grpc-Tls-" + os.urandom(4).hex() + "!7")
        creds = grpc.ssl_channel_credentials(root_certificates=ca.pem.read_bytes())
        with grpc.secure_channel(f"localhost:{sc.proxy_port}", creds) as channel:
            assert _unary(channel, user["accessToken"]) == user["user"]["id"].encode()
            with pytest.raises(grpc.RpcError) as refused:
                _unary(channel, None)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert (refused.value.details() or "").startswith("UNAUTHENTICATED")
    finally:
        sc.stop()
        server.stop(0)


# --------------------------------------------------------------------------
# TLS to the upstream
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_upstream(tmp_path_factory, pki, nginx_bin):
    ca, _ = pki
    crt, key = ca.issue("upstream.internal", "DNS:upstream.internal,IP:127.0.0.1")
    up = Upstream(tmp_path_factory.mktemp("nginx-tls"), tls=(crt, key))
    yield up
    up.stop()


def _through(sc: Sidecar, token: str) -> tuple[int, dict]:
    st, body, raw, _ = http_json(sc.proxy_port, "GET", "/api/upstream-tls", headers={"Authorization": f"Bearer {token}"})
    return st, body if body is not None else {"raw": raw.decode(errors="replace")}


@pytest.mark.parametrize(
    "protocol,sni,expect",
    [("http1", "upstream.internal", "HTTP/1.1"), ("h2", "upstream.internal", "HTTP/2.0"), ("http1", "", "HTTP/1.1")],
)
def test_upstream_tls_verified_against_ca_file(tmp_path, require_binary, pki, tls_upstream, protocol, sni, expect):
    ca, _ = pki
    extra = f"tls = true\nca_file = {_toml(str(ca.pem))}\nsni = {_toml(sni)}\n"
    sc = Sidecar(tmp_path, f"127.0.0.1:{tls_upstream.port}", upstream_protocol=protocol, upstream_extra=extra, name="portcullis-up-tls").start()
    try:
        user = sc.register(f"up-{protocol}-{os.getpid()}@example.com", "Upstream-Tls-" + os.urandom(4).hex() + "!7")
        st, seen = _through(sc, user["accessToken"])
        assert st == 200, seen
        assert seen["protocol"] == expect
        assert seen["tls"] in ("TLSv1.2", "TLSv1.3")
        assert seen["user"] == user["user"]["id"]
        # the name sent is upstream.sni, or the host of upstream.address
        assert seen["sni"] == (sni or "")  # an IP address is verified but never sent as SNI
    finally:
        sc.stop()


@pytest.mark.parametrize("case", ["other_ca", "wrong_name", "system_roots"])
def test_an_upstream_certificate_that_does_not_verify_is_a_502(tmp_path, require_binary, pki, tls_upstream, case):
    ca, other = pki
    extra = {
        "other_ca": f"tls = true\nca_file = {_toml(str(other.pem))}\nsni = \"upstream.internal\"\n",
        "wrong_name": f"tls = true\nca_file = {_toml(str(ca.pem))}\nsni = \"elsewhere.internal\"\n",
        "system_roots": "tls = true\nsni = \"upstream.internal\"\n",
    }[case]
    sc = Sidecar(tmp_path, f"127.0.0.1:{tls_upstream.port}", upstream_extra=extra, name="portcullis-up-bad").start()
    try:
        user = sc.register(f"up-{case}-{os.getpid()}@example.com", "Upstream-Bad-" + os.urandom(4).hex() + "!7")
        st, body = _through(sc, user["accessToken"])
        assert st == 502, body
        assert body["error"]["code"] == "UPSTREAM_UNAVAILABLE"
        assert _metric(sc, "portcullis_upstream_errors_total", 'kind="tls"') >= 1
    finally:
        sc.stop()


def test_grpc_to_an_upstream_over_tls_h2(tmp_path, require_binary, pki, counterpart_missing):
    if grpc is None:
        counterpart_missing("grpcio (PyPI) is not installed")
    ca, _ = pki
    crt, key = ca.issue("grpc.internal", "DNS:grpc.internal")
    port = free_port()
    server = _grpc_server(port, grpc.ssl_server_credentials([(key.read_bytes(), crt.read_bytes())]))
    extra = f"tls = true\nca_file = {_toml(str(ca.pem))}\nsni = \"grpc.internal\"\n"
    sc = Sidecar(tmp_path, f"127.0.0.1:{port}", upstream_protocol="h2", upstream_extra=extra, name="portcullis-grpc-up-tls").start()
    try:
        user = sc.register(f"grpc-up-{os.getpid()}@example.com", "Grpc-Up-" + os.urandom(4).hex() + "!7")
        with grpc.insecure_channel(f"127.0.0.1:{sc.proxy_port}") as channel:
            assert _unary(channel, user["accessToken"]) == user["user"]["id"].encode()
    finally:
        sc.stop()
        server.stop(0)
