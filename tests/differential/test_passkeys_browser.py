"""Passkeys (`/auth/passkeys/...`) in a real browser: Debian's chromium,
headless, driven by playwright-core (tests/differential/browser/), with
Chromium's own WebAuthn virtual authenticator (CTAP2, internal transport,
resident keys, user verification) added over CDP. The page
(browser/passkey.html) is served by a small upstream behind portcullis on a
public route, so it has portcullis' origin and calls the API with plain
same-origin fetch(), `PublicKeyCredential.parse*OptionsFromJSON` and
`toJSON()`, as an application would.

Covered: a user signed in with a password adds a passkey in the browser
(201, the name kept, the credential resident on the authenticator with the
user's UUID as user handle), then signs in with it without an email (a
discoverable credential: login/begin with `{}`, no allowCredentials), gets
our own tokens (usable on `/auth/me`; the access token's amr holds hwk, pop,
uv and mfa, not pwd) and the passkey shows as used; the same page opened at
`http://127.0.0.1:<port>` (an origin that is not the RP's) is refused by the
browser itself (SecurityError "This is an invalid domain.": an IP origin
cannot use rpId "localhost"), so nothing reaches the finish routes and no
passkey is added; the browser's genuine answers from an origin missing from
`passkeys.origins` (the same sidecar through a TCP relay on another port)
are refused by the server (400 PASSKEY_REJECTED, counted as rejected
ceremonies), while the same passkey signs in from the configured origin
right after.

The screenshot of the signed-in page is taken in the test's tmp folder and,
once the login passed, copied to $PASSKEY_SCREENSHOT when that is set
(docs/passkey-login.png). playwright-core comes from target/diff-browser
(DIFF_BROWSER_DIR), installed from tests/differential/browser/package-lock.json
with `npm ci`; chromium is /usr/bin/chromium (CHROMIUM_BIN). Without either
the tests skip, and fail when CI is set.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

import passkeys as pk
from harness import HERE, TARGET, Sidecar, Tap, http_json, which
from passkeys import ceremonies

BROWSER_PKG = HERE / "browser"
FLOW_JS = BROWSER_PKG / "passkey_flow.mjs"
PAGE = BROWSER_PKG / "passkey.html"
PASSKEY_NAME = "Chromium virtual authenticator"


class BrowserMissing(RuntimeError):
    """chromium, node or the installed playwright-core is not there."""


def chromium_bin() -> str:
    named = os.environ.get("CHROMIUM_BIN")
    c = which(named) if named else which("/usr/bin/chromium", "chromium")
    if not c:
        raise BrowserMissing(f"chromium not found at {named or '/usr/bin/chromium'} (Debian package `chromium`, or set CHROMIUM_BIN)")
    return c


def node_bin() -> str:
    n = which("node", "nodejs")
    if not n:
        raise BrowserMissing("node not found (needed to run playwright-core)")
    return n


def browser_dir() -> Path:
    """The folder holding node_modules/playwright-core (DIFF_BROWSER_DIR,
    default target/diff-browser)."""
    d = Path(os.environ.get("DIFF_BROWSER_DIR") or str(TARGET / "diff-browser")).resolve()
    if not (d / "node_modules" / "playwright-core" / "package.json").is_file():
        raise BrowserMissing(
            f"playwright-core not installed in {d} (make differential installs it: "
            f"cp tests/differential/browser/package*.json {d}/ && cd {d} && npm ci)"
        )
    return d


@pytest.fixture(scope="module")
def browser(counterpart_missing):
    try:
        return chromium_bin(), node_bin(), browser_dir()
    except BrowserMissing as e:
        missing = str(e)
    counterpart_missing(f"browser: {missing}")


# --------------------------------------------------------------------------
# the application: one page, behind portcullis
# --------------------------------------------------------------------------


class _PageHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.split("?", 1)[0] in ("/", "/passkey.html"):
            data, status, ctype = PAGE.read_bytes(), 200, "text/html; charset=utf-8"
        else:
            data, status, ctype = b"not found\n", 404, "text/plain"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def app_upstream():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


PAGE_ROUTES = """
[[routes]]
name = "passkey_page"
path = "/passkey.html"
methods = ["GET"]
auth = "public"

[[routes]]
name = "root"
path = "/"
methods = ["GET"]
auth = "public"
"""


def passkey_sidecar(workdir: Path, upstream: str, name: str) -> Sidecar:
    """A sidecar with the page's public routes and `[passkeys]` for
    rp_id "localhost" and the origin http://localhost:<proxy port> only."""
    sc = Sidecar(workdir, upstream, name=name, extra_routes=PAGE_ROUTES)
    origins = [f"http://localhost:{sc.proxy_port}"]
    sc.config.write_text(
        sc.config.read_text()
        + f"""
[passkeys]
rp_id = "localhost"
rp_name = "portcullis"
origins = {json.dumps(origins)}
challenge_ttl_seconds = 120
user_verification = "preferred"
"""
    )
    return sc


@pytest.fixture(scope="module")
def stack(tmp_path_factory, require_binary, browser, app_upstream):
    sc = passkey_sidecar(tmp_path_factory.mktemp("passkeys-browser"), app_upstream, "portcullis-passkeys-browser")
    sc.start()
    yield sc
    sc.stop()


def new_user(sc: Sidecar, tag: str) -> dict:
    """A user registered by HTTP, then signed in with the password."""
    email = f"{tag}-{os.getpid()}-{os.urandom(3).hex()}@example.com"
    password = "Passkey-" + os.urandom(6).hex() + "!9"
    registered = sc.register(email, password)
    tokens = sc.login(email, password)
    return {"email": email, "id": registered["user"]["id"], "token": tokens["accessToken"]}


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def claims(jwt: str) -> dict:
    return json.loads(pk.b64url_decode(jwt.split(".")[1]))


def run_flow(browser, url: str, token: str, steps: str = "register,login", screenshot: Path | None = None, sc: Sidecar | None = None) -> dict:
    """passkey_flow.mjs against `url`: its JSON result (see the script)."""
    chromium, node, pkg = browser
    argv = [node, str(FLOW_JS), "--url", url, "--steps", steps, "--chromium", chromium, "--node-modules", str(pkg / "node_modules")]
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--screenshot", str(screenshot)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PORTCULLIS_")}
    env.update(PASSKEY_TOKEN=token, DIFF_BROWSER_DIR=str(pkg))
    p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=180)
    if p.returncode != 0 or not p.stdout.strip():
        tail = sc.proc.tail() if sc is not None and sc.proc is not None else ""
        raise AssertionError(f"passkey_flow.mjs exited {p.returncode}\nstdout: {p.stdout[-2000:]}\nstderr: {p.stderr[-4000:]}\n{tail}")
    return json.loads(p.stdout)


def explain(result: dict, sc: Sidecar | None = None) -> str:
    """The flow's result (and the sidecar's log) for an assertion message."""
    slim = {k: v for k, v in result.items() if k not in ("credentials",)}
    tail = sc.proc.tail(15) if sc is not None and sc.proc is not None else ""
    return json.dumps(slim, indent=1)[:6000] + "\n" + tail


def passkeys_of(sc: Sidecar, token: str) -> list[dict]:
    st, body, raw, _ = http_json(sc.proxy_port, "GET", "/auth/passkeys", headers={"Authorization": f"Bearer {token}"})
    assert st == 200, raw
    return body["passkeys"]


def publish_screenshot(shot: Path) -> Path:
    """Copies the screenshot of a successful login to $PASSKEY_SCREENSHOT
    (docs/passkey-login.png) when set; a failed run never overwrites it."""
    named = os.environ.get("PASSKEY_SCREENSHOT")
    if not named:
        return shot
    dest = Path(named).resolve()
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, dest)
    return dest


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


def test_the_page_is_served_by_portcullis_on_a_public_route(stack):
    st, _, raw, _ = http_json(stack.proxy_port, "GET", "/passkey.html")
    assert st == 200 and b"navigator.credentials.create" in raw, raw[:300]
    st, _, raw, _ = http_json(stack.proxy_port, "GET", "/")
    assert st == 200 and b"<title>portcullis: passkeys</title>" in raw


def test_a_passkey_added_in_chromium_signs_in_without_an_email(stack, browser, tmp_path):
    sc = stack
    user = new_user(sc, "alice")
    origin = f"http://localhost:{sc.proxy_port}"
    shot = tmp_path / "passkey-login.png"
    result = run_flow(browser, f"{origin}/passkey.html", user["token"], screenshot=shot, sc=sc)
    why = explain(result, sc)
    assert result["pageStatus"] == 200, why
    assert not result["pageErrors"], why
    user_handle = pk.b64url(uuid.UUID(user["id"]).bytes)

    # registration: begin, navigator.credentials.create, finish
    reg, login = result["steps"]
    assert reg["step"] == "register" and login["step"] == "login", why
    assert reg.get("error") is None, why
    assert reg["begin"]["status"] == 200, why
    options = reg["begin"]["body"]["publicKey"]
    assert options["rp"]["id"] == "localhost", options
    assert options["user"]["id"] == user_handle and options["user"]["name"] == user["email"], options
    assert options["attestation"] == "none", options
    assert options["authenticatorSelection"]["residentKey"] == "preferred", options
    assert reg["begin"]["body"]["expiresIn"] == 120, reg["begin"]["body"]
    client_data = json.loads(pk.b64url_decode(reg["credential"]["response"]["clientDataJSON"]))
    assert client_data["type"] == "webauthn.create" and client_data["origin"] == origin, client_data
    assert client_data["challenge"] == options["challenge"]
    assert reg["finish"]["status"] == 201, why
    passkey = reg["finish"]["body"]
    assert passkey["name"] == PASSKEY_NAME and passkey["lastUsedAt"] is None, passkey
    assert "internal" in passkey["transports"], passkey

    # the authenticator holds one discoverable credential, for this user
    [cred] = result["credentials"]
    assert cred["rpId"] == "localhost" and cred["isResidentCredential"] is True, cred
    assert base64.b64decode(cred["userHandle"]) == uuid.UUID(user["id"]).bytes, cred

    # login without an email: no allowCredentials, the credential found by the browser
    assert login.get("error") is None, why
    assert login["begin"]["status"] == 200, why
    req = login["begin"]["body"]["publicKey"]
    assert req["rpId"] == "localhost" and not req.get("allowCredentials"), req
    response = login["credential"]["response"]
    assert response["userHandle"] == user_handle, response
    assert login["credential"]["id"] == reg["credential"]["id"]
    flags = pk.b64url_decode(response["authenticatorData"])[32]
    assert flags & 0x01 and flags & 0x04, f"UP and UV expected, flags {flags:#04x}"
    assert login["finish"]["status"] == 200, why
    tokens = login["finish"]["body"]
    assert tokens["tokenType"] == "Bearer" and tokens["refreshToken"], tokens
    assert tokens["user"]["id"] == user["id"] and tokens["user"]["email"] == user["email"], tokens

    # our own tokens: the page's /auth/me, and ours
    assert login["me"]["status"] == 200 and login["me"]["body"]["id"] == user["id"], why
    st, me, raw, _ = http_json(sc.proxy_port, "GET", "/auth/me", headers={"Authorization": f"Bearer {tokens['accessToken']}"})
    assert st == 200 and me["id"] == user["id"] and me["email"] == user["email"], raw
    amr = claims(tokens["accessToken"])["amr"]
    for m in ("hwk", "pop", "uv", "mfa"):
        assert m in amr, amr
    assert "pwd" not in amr, amr
    assert login["amr"] == amr

    # the passkey shows as used; the page says so
    [listed] = passkeys_of(sc, user["token"])
    assert listed["id"] == passkey["id"] and listed["name"] == PASSKEY_NAME, listed
    assert listed["lastUsedAt"], listed
    assert login["passkeyName"] == PASSKEY_NAME, why
    assert f"Signed in with a passkey as {user['email']}" in result["resultText"], why
    assert PASSKEY_NAME in result["resultText"] and '"hwk"' in result["resultText"], why
    assert result["screenshot"] == str(shot) and shot.is_file() and shot.stat().st_size > 10_000, shot
    assert ceremonies(sc, "register", "success") >= 1 and ceremonies(sc, "login", "success") >= 1
    publish_screenshot(shot)


def test_a_page_on_another_origin_is_refused_by_the_browser(stack, browser):
    """The page at http://127.0.0.1:<port> is the same sidecar, but not the
    RP's origin: what happens is that Chromium itself refuses rpId
    "localhost" there (an IP origin has no registrable domain: SecurityError
    "This is an invalid domain."), for create() and for get() alike, so no
    credential is made and the finish routes never hear of it."""
    sc = stack
    user = new_user(sc, "passkey-other-origin")
    before = ceremonies(sc, "register", "rejected") + ceremonies(sc, "login", "rejected")
    result = run_flow(browser, f"http://127.0.0.1:{sc.proxy_port}/passkey.html", user["token"], sc=sc)
    why = explain(result, sc)
    assert result["pageStatus"] == 200, why
    assert [s["step"] for s in result["steps"]] == ["register", "login"], why
    for out, call in zip(result["steps"], ("navigator.credentials.create", "navigator.credentials.get")):
        assert out["begin"]["status"] == 200, why
        assert out.get("error"), f"{out['step']}: the browser did not refuse\n{why}"
        assert out["error"]["stage"] == call and out["error"]["name"] == "SecurityError", why
        assert "finish" not in out, why
    assert result["credentials"] == [], why
    assert passkeys_of(sc, user["token"]) == []
    assert ceremonies(sc, "register", "rejected") + ceremonies(sc, "login", "rejected") == before
    assert "Passkey sign-in failed" in result["resultText"], why


def test_a_browser_answer_from_an_origin_not_configured_is_refused_by_the_server(stack, browser):
    """http://localhost:<relay port> is the same sidecar through a TCP relay:
    Chromium is content there (rpId "localhost" is valid on any localhost
    origin) and signs what it is asked to, but that origin is not in
    passkeys.origins: the server refuses the genuine registration and the
    genuine assertion (400 PASSKEY_REJECTED), while the same passkey, from
    the configured origin, signs in right after."""
    sc = stack
    relay = Tap(sc.proxy_port)
    try:
        home = f"http://localhost:{sc.proxy_port}"
        other = f"http://localhost:{relay.port}"
        user = new_user(sc, "passkey-wrong-origin")
        rejected = {c: ceremonies(sc, c, "rejected") for c in ("register", "login")}

        # a registration from the other origin
        result = run_flow(browser, f"{other}/passkey.html", user["token"], steps="register", sc=sc)
        why = explain(result, sc)
        [reg] = result["steps"]
        assert reg.get("error") is None, why
        assert json.loads(pk.b64url_decode(reg["credential"]["response"]["clientDataJSON"]))["origin"] == other
        assert reg["finish"]["status"] == 400 and reg["finish"]["body"]["error"]["code"] == "PASSKEY_REJECTED", why
        assert len(result["credentials"]) == 1, why  # the authenticator made one; the server kept nothing
        assert passkeys_of(sc, user["token"]) == []

        # a passkey added at home, used from the other origin, then at home
        result = run_flow(browser, f"{home}/passkey.html", user["token"], steps=f"register,login@{other}/passkey.html,login@{home}/passkey.html", sc=sc)
        why = explain(result, sc)
        reg, away, back = result["steps"]
        assert reg["finish"]["status"] == 201, why
        assert away.get("error") is None, why
        assert json.loads(pk.b64url_decode(away["credential"]["response"]["clientDataJSON"]))["origin"] == other
        assert away["credential"]["id"] == reg["credential"]["id"], why
        assert away["finish"]["status"] == 400 and away["finish"]["body"]["error"]["code"] == "PASSKEY_REJECTED", why
        assert back.get("error") is None and back["finish"]["status"] == 200, why
        assert back["finish"]["body"]["user"]["id"] == user["id"], why
        assert ceremonies(sc, "register", "rejected") == rejected["register"] + 1
        assert ceremonies(sc, "login", "rejected") == rejected["login"] + 1
    finally:
        relay.close()
