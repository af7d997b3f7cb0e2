"""Login with an external OpenID Provider (`/auth/oidc/...`), against a real
one: panva's oidc-provider, its login and consent pages driven by a scripted
browser that keeps cookies and follows redirects one by one.

Covered: the whole login for a new user (created) and for an existing one
(linked by verified email), our own tokens at the end (usable on `/auth/me`,
refreshable), the linked identity in the admin API and its unlinking; an
unverified email neither links nor creates; the application's redirect URI
matched exactly; `state` unknown, replayed or used by another browser; a
code of another login (PKCE refuses it); the one-time code reused or
presented for another redirect URI; the provider down during the login
(a clean 503).
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse

import pytest

import oidc_provider as oidc
from harness import Proc, Sidecar, free_port, http_json, poll

APP = "http://127.0.0.1:9/app/callback"


def _get(port: int, path: str, cookie: str | None = None) -> tuple[int, dict, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request("GET", path, headers={"Cookie": cookie} if cookie else {})
        r = conn.getresponse()
        raw = r.read()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {"raw": raw.decode(errors="replace")}
        return r.status, {k.lower(): v for k, v in r.getheaders()}, body
    finally:
        conn.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, require_binary, counterpart_missing):
    oidc.require(counterpart_missing)
    work = tmp_path_factory.mktemp("oidc-login")
    op_port = free_port()
    issuer = f"http://127.0.0.1:{op_port}"
    secret = work / "client-secret"
    secret.write_text(oidc.RP_SECRET + "\n")
    sc = Sidecar(work / "sc", "127.0.0.1:9", name="portcullis-oidc-login")
    callback = f"http://127.0.0.1:{sc.proxy_port}/auth/oidc/testidp/callback"
    sc.config.write_text(
        sc.config.read_text()
        + f"""
[[issuers]]
name = "testidp"
issuer = {json.dumps(issuer)}
audiences = [{json.dumps(oidc.RESOURCE)}]
client_id = {json.dumps(oidc.RP_CLIENT_ID)}
client_secret_file = {json.dumps(str(secret))}
callback_url = {json.dumps(callback)}
redirect_uris = [{json.dumps(APP)}]

[[issuers]]
name = "acmeidp"
issuer = {json.dumps(issuer)}
audiences = [{json.dumps(oidc.RESOURCE)}]
client_id = {json.dumps(oidc.RP_CLIENT_ID)}
client_secret_file = {json.dumps(str(secret))}
callback_url = {json.dumps(callback.replace("testidp", "acmeidp"))}
redirect_uris = [{json.dumps(APP)}]
tenant = "acme"
"""
    )
    accounts = oidc.DEFAULT_ACCOUNTS + [
        {"sub": "carol", "email": "carol@example.com", "email_verified": True, "name": "Carol", "roles": [], "groups": []}
    ]
    op = oidc.OpenIdProvider(work / "op", port=op_port, accounts=accounts, redirect_uris=[callback]).start()
    sc.start()
    r = sc.cli(["tenant", "create", "acme"])
    assert r.returncode == 0, r.stderr
    yield sc, op
    sc.stop()
    op.stop()


class Login:
    """One browser's login: start at the sidecar, the provider's pages, back."""

    def __init__(self, sc: Sidecar, op: oidc.OpenIdProvider, app_state: str = "app-state-1"):
        self.sc, self.op = sc, op
        q = urllib.parse.urlencode({"redirect_uri": APP, "state": app_state})
        st, headers, body = _get(sc.proxy_port, f"/auth/oidc/testidp/start?{q}")
        assert st == 302, (st, body)
        self.authorize = headers["location"]
        assert self.authorize.startswith(op.issuer + "/")
        assert body["location"] == self.authorize
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
        self.cookie = cookie.split(";", 1)[0]
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.authorize).query))
        assert params["code_challenge_method"] == "S256" and params["nonce"] and params["state"]
        self.state = params["state"]

    def at_provider(self, login: str) -> str:
        """The provider's redirect back to the sidecar's callback (path and query)."""
        back = oidc.Browser(self.op.issuer).authorize(self.authorize, login, "any")
        parts = urllib.parse.urlsplit(back)
        assert parts.path == "/auth/oidc/testidp/callback", back
        return f"{parts.path}?{parts.query}"

    def callback(self, path: str, cookie: str | None = "same") -> tuple[int, dict, dict]:
        return _get(self.sc.proxy_port, path, self.cookie if cookie == "same" else cookie)


def logins(sc: Sidecar, outcome: str) -> float:
    _, _, raw, _ = http_json(sc.admin_port, "GET", "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in raw.decode().splitlines()
        if line.startswith("portcullis_oidc_logins_total{") and f'outcome="{outcome}"' in line
    )


def finish(sc: Sidecar, op: oidc.OpenIdProvider, login: str) -> dict:
    flow = Login(sc, op)
    st, headers, body = flow.callback(flow.at_provider(login))
    assert st == 302, (st, body)
    back = urllib.parse.urlsplit(headers["location"])
    assert f"{back.scheme}://{back.netloc}{back.path}" == APP
    q = dict(urllib.parse.parse_qsl(back.query))
    assert q["state"] == "app-state-1"
    st, tokens, raw, _ = http_json(sc.proxy_port, "POST", "/auth/oidc/token", {"code": q["code"], "redirectUri": APP})
    assert st == 200, raw
    tokens["code"] = q["code"]
    return tokens


def test_a_new_user_logs_in_and_gets_our_own_tokens(stack):
    sc, op = stack
    tokens = finish(sc, op, "alice")
    assert tokens["tokenType"] == "Bearer" and tokens["refreshToken"]
    assert tokens["user"]["email"] == "alice@example.com"
    assert tokens["user"]["emailVerified"] is True
    assert tokens["user"]["roles"] == ["member"]
    st, me, _, _ = http_json(sc.proxy_port, "GET", "/auth/me", headers={"Authorization": f"Bearer {tokens['accessToken']}"})
    assert st == 200 and me["id"] == tokens["user"]["id"]
    # a session like any other: it refreshes
    st, again, _, _ = http_json(sc.proxy_port, "POST", "/auth/refresh", {"refreshToken": tokens["refreshToken"]})
    assert st == 200 and again["user"]["id"] == tokens["user"]["id"]
    # the second login is the same user, through the link
    assert finish(sc, op, "alice")["user"]["id"] == tokens["user"]["id"]
    assert logins(sc, "success") >= 2


def test_an_existing_account_is_linked_by_verified_email_and_admins_see_it(stack):
    sc, op = stack
    password = "Carol-Local-" + os.urandom(4).hex() + "!7"
    local = sc.register("carol@example.com", password)
    tokens = finish(sc, op, "carol")
    assert tokens["user"]["id"] == local["user"]["id"]
    admin = sc.create_admin(f"admin-{os.getpid()}@example.com", "Admin-" + os.urandom(4).hex() + "!7")
    auth = {"Authorization": f"Bearer {admin['accessToken']}"}
    st, body, raw, _ = http_json(sc.proxy_port, "GET", f"/auth/admin/users/{local['user']['id']}/identities", headers=auth)
    assert st == 200, raw
    [ident] = body["identities"]
    assert ident["provider"] == "testidp" and ident["subject"] == "carol" and ident["email"] == "carol@example.com"
    # a member may not read them
    st, body, _, _ = http_json(sc.proxy_port, "GET", f"/auth/admin/users/{local['user']['id']}/identities", headers={"Authorization": f"Bearer {local['accessToken']}"})
    assert st == 403 and body["error"]["code"] == "FORBIDDEN"
    st, _, raw, _ = http_json(sc.proxy_port, "DELETE", f"/auth/admin/identities/{ident['id']}", headers=auth)
    assert st == 200, raw
    st, body, _, _ = http_json(sc.proxy_port, "GET", f"/auth/admin/users/{local['user']['id']}/identities", headers=auth)
    assert body["identities"] == []
    st, body, _, _ = http_json(sc.proxy_port, "DELETE", f"/auth/admin/identities/{ident['id']}", headers=auth)
    assert st == 404 and body["error"]["code"] == "NOT_FOUND"


def test_an_unverified_email_neither_links_nor_creates(stack):
    sc, op = stack
    flow = Login(sc, op)
    st, _, body = flow.callback(flow.at_provider("bob"))
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED", body
    assert "verified" in body["error"]["message"]
    assert logins(sc, "failed") >= 1
    # no account was made for bob@example.com: he can still register
    assert sc.register("bob@example.com", "Bob-Local-" + os.urandom(4).hex() + "!7")["user"]["email"] == "bob@example.com"


def test_the_redirect_uri_must_be_listed_exactly(stack):
    sc, _ = stack
    for uri in (APP + "/x", APP + "?next=https://evil.example", "https://evil.example/cb", ""):
        q = urllib.parse.urlencode({"redirect_uri": uri})
        st, headers, body = _get(sc.proxy_port, f"/auth/oidc/testidp/start?{q}")
        assert st == 400 and body["error"]["code"] == "INVALID_REQUEST", (uri, st, body)
        assert "location" not in headers
    st, _, body = _get(sc.proxy_port, "/auth/oidc/nosuch/start?" + urllib.parse.urlencode({"redirect_uri": APP}))
    assert st == 400 and body["error"]["code"] == "INVALID_REQUEST"


def test_state_is_single_use_and_bound_to_the_browser(stack):
    sc, op = stack
    flow = Login(sc, op)
    back = flow.at_provider("alice")
    # another browser (no cookie, or someone else's) cannot finish it ...
    st, _, body = flow.callback(back, cookie=None)
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED"
    # ... and the attempt used the login up
    st, _, body = flow.callback(back)
    assert st == 401 and "state" in body["error"]["message"]
    # a state nobody issued
    flow2 = Login(sc, op)
    back2 = flow2.at_provider("alice")
    forged = back2.replace(f"state={urllib.parse.quote(flow2.state)}", "state=forged")
    assert forged != back2
    st, _, body = flow2.callback(forged)
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED"
    # the genuine one still finishes once, and only once
    st, _, _ = flow2.callback(back2)
    assert st == 302
    st, _, body = flow2.callback(back2)
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED"


def test_a_code_of_another_login_is_refused_by_pkce(stack):
    sc, op = stack
    first, second = Login(sc, op), Login(sc, op)
    code_of_first = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(first.at_provider("alice")).query))["code"]
    q = urllib.parse.urlencode({"code": code_of_first, "state": second.state})
    st, _, body = second.callback(f"/auth/oidc/testidp/callback?{q}")
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED", body
    assert "refused the code" in body["error"]["message"]


def test_the_one_time_code_is_single_use_and_bound_to_its_redirect_uri(stack):
    sc, op = stack
    flow = Login(sc, op)
    st, headers, _ = flow.callback(flow.at_provider("alice"))
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(headers["location"]).query))["code"]
    st, body, _, _ = http_json(sc.proxy_port, "POST", "/auth/oidc/token", {"code": code, "redirectUri": "https://evil.example/cb"})
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED"
    # the wrong redirect URI did not burn it; the right one works once
    st, body, _, _ = http_json(sc.proxy_port, "POST", "/auth/oidc/token", {"code": code, "redirectUri": APP})
    assert st == 200 and body["accessToken"]
    st, body, _, _ = http_json(sc.proxy_port, "POST", "/auth/oidc/token", {"code": code, "redirectUri": APP})
    assert st == 401 and body["error"]["code"] == "EXTERNAL_LOGIN_FAILED"
    st, body, _, _ = http_json(sc.proxy_port, "POST", "/auth/oidc/token", {"redirectUri": APP})
    assert st == 400 and body["error"]["code"] == "INVALID_REQUEST"


def test_the_provider_down_during_the_login_is_a_503(stack):
    sc, op = stack
    flow = Login(sc, op)
    back = flow.at_provider("alice")
    op.stop()
    try:
        st, _, body = flow.callback(back)
        assert st == 503 and body["error"]["code"] == "PROVIDER_UNAVAILABLE", body
        assert logins(sc, "provider_unavailable") >= 1
    finally:
        op.start()
    # the provider back: a new login works again
    assert finish(sc, op, "alice")["accessToken"]


def test_the_tenant_of_a_login(stack):
    sc, _ = stack
    start = lambda provider, **q: _get(sc.proxy_port, f"/auth/oidc/{provider}/start?" + urllib.parse.urlencode({"redirect_uri": APP, **q}))
    st, _, body = start("testidp", tenant="nosuch")
    assert st == 404 and body["error"]["code"] == "TENANT_NOT_FOUND"
    assert start("testidp", tenant="acme")[0] == 302
    # a provider of one tenant logs into that tenant only
    st, _, body = start("acmeidp", tenant="default")
    assert st == 403 and body["error"]["code"] == "TENANT_MISMATCH"
    assert start("acmeidp")[0] == 302
    assert start("acmeidp", tenant="acme")[0] == 302


def test_an_unreadable_client_secret_file_stops_the_start(tmp_path, require_binary):
    sc = Sidecar(tmp_path, "127.0.0.1:9", name="portcullis-oidc-nosecret")
    sc.config.write_text(
        sc.config.read_text()
        + f"""
[[issuers]]
name = "testidp"
issuer = "http://127.0.0.1:9"
audiences = ["api"]
client_id = "rp"
client_secret_file = {json.dumps(str(tmp_path / "missing-secret"))}
callback_url = "http://127.0.0.1/auth/oidc/testidp/callback"
redirect_uris = [{json.dumps(APP)}]
"""
    )
    proc = Proc("portcullis-oidc-nosecret", [str(sc.bin), "serve", "--config", str(sc.config)], tmp_path / "out.log", cwd=tmp_path)
    poll(proc.exited, 30, "portcullis to refuse to start")
    out = (tmp_path / "out.log").read_text()
    proc.stop()
    assert proc.returncode() != 0
    assert "client_secret_file" in out and "missing-secret" in out, out
