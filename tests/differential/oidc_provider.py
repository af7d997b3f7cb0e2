"""A real OpenID Provider for the suite: panva's oidc-provider (OpenID
Certified, npm) on 127.0.0.1, started by tests/differential/oidc/provider.mjs
from a JSON config this module writes, and client-side helpers that drive it
over HTTP as a browser and a relying party would (stdlib only, redirects
never followed behind the caller's back).

    op = OpenIdProvider(tmp_path, redirect_uris=[cb]).start()
    tokens = op.code_flow_tokens("portcullis-rp", op.rp_secret, cb, "alice",
                                 resource=op.resource)
    op.restart(rotate_key=True)     # new signing key first, old ones kept
    op.stop()

The provider's node_modules come from target/diff-oidc (DIFF_OIDC_DIR),
installed from tests/differential/oidc/package-lock.json with `npm ci`;
node_dir() raises OidcMissing when they are not there (tests turn that into
the suite's counterpart_missing).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html.parser
import http.client
import http.cookiejar
import json
import os
import secrets
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from harness import HERE, TARGET, Proc, free_port, poll, which

PROVIDER_JS = HERE / "oidc" / "provider.mjs"

RP_CLIENT_ID = "portcullis-rp"
RP_SECRET = "portcullis-rp-secret-0123456789abcdef"
PUBLIC_CLIENT_ID = "public-rp"
MACHINE_CLIENT_ID = "machine"
MACHINE_SECRET = "machine-secret-0123456789abcdef"
RESOURCE = "https://api.example.test"

DEFAULT_ACCOUNTS = [
    {
        "sub": "alice",
        "email": "alice@example.com",
        "email_verified": True,
        "name": "Alice Example",
        "roles": ["admin"],
        "groups": ["ops"],
    },
    {
        "sub": "bob",
        "email": "bob@example.com",
        "email_verified": False,
        "name": "Bob Example",
        "roles": ["viewer"],
        "groups": [],
    },
]


class OidcMissing(RuntimeError):
    """node or the installed oidc-provider is not there."""


def node_dir() -> Path:
    """The folder holding node_modules/oidc-provider (DIFF_OIDC_DIR, default
    target/diff-oidc); OidcMissing when it is not installed."""
    d = Path(os.environ.get("DIFF_OIDC_DIR") or str(TARGET / "diff-oidc")).resolve()
    if not (d / "node_modules" / "oidc-provider" / "package.json").is_file():
        raise OidcMissing(
            f"oidc-provider not installed in {d} (make differential installs it: "
            f"cp tests/differential/oidc/package*.json {d}/ && cd {d} && npm ci)"
        )
    return d


def require(counterpart_missing) -> None:
    """Fails (CI) or skips through the suite's `counterpart_missing` when
    node or the installed oidc-provider is not there."""
    try:
        node_bin()
        node_dir()
    except OidcMissing as e:
        counterpart_missing(f"oidc-provider: {e}")


def node_bin() -> str:
    n = which("node", "nodejs")
    if not n:
        raise OidcMissing("node not found (needed to run oidc-provider)")
    return n


def default_clients(redirect_uris: list[str]) -> list[dict]:
    """portcullis-rp (confidential, code + refresh, PKCE S256), public-rp
    (public, code, PKCE S256), machine (client_credentials)."""
    return [
        {
            "client_id": RP_CLIENT_ID,
            "client_secret": RP_SECRET,
            "redirect_uris": list(redirect_uris),
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
            "id_token_signed_response_alg": "RS256",
        },
        {
            "client_id": PUBLIC_CLIENT_ID,
            "redirect_uris": list(redirect_uris),
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        },
        {
            "client_id": MACHINE_CLIENT_ID,
            "client_secret": MACHINE_SECRET,
            "redirect_uris": [],
            "grant_types": ["client_credentials"],
            "response_types": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "extra_claims": {"roles": ["service"]},
        },
    ]


# --------------------------------------------------------------------------
# keys
# --------------------------------------------------------------------------


def _b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def _int(n: int, length: int | None = None) -> str:
    length = length or max(1, (n.bit_length() + 7) // 8)
    return _b64u(n.to_bytes(length, "big"))


def rsa_jwk(kid: str | None = None, bits: int = 2048) -> dict:
    """A private RSA JWK for RS256."""
    k = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pr = k.private_numbers()
    pu = pr.public_numbers
    return {
        "kty": "RSA",
        "kid": kid or "rsa-" + secrets.token_hex(6),
        "use": "sig",
        "alg": "RS256",
        "n": _int(pu.n),
        "e": _int(pu.e),
        "d": _int(pr.d),
        "p": _int(pr.p),
        "q": _int(pr.q),
        "dp": _int(pr.dmp1),
        "dq": _int(pr.dmq1),
        "qi": _int(pr.iqmp),
    }


def ec_jwk(kid: str | None = None) -> dict:
    """A private P-256 JWK for ES256."""
    k = ec.generate_private_key(ec.SECP256R1())
    pr = k.private_numbers()
    return {
        "kty": "EC",
        "kid": kid or "ec-" + secrets.token_hex(6),
        "use": "sig",
        "alg": "ES256",
        "crv": "P-256",
        "x": _int(pr.public_numbers.x, 32),
        "y": _int(pr.public_numbers.y, 32),
        "d": _int(pr.private_value, 32),
    }


def public_jwk(jwk: dict) -> dict:
    return {k: v for k, v in jwk.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}


# --------------------------------------------------------------------------
# the provider
# --------------------------------------------------------------------------


class OpenIdProvider:
    """One oidc-provider process on 127.0.0.1:port, issuer
    http://127.0.0.1:port (no trailing slash). Its keys live in
    workdir/keys.json: RS256 keys first (the first one signs), then one
    ES256 key (signs for clients/resources that ask for ES256)."""

    rp_client_id = RP_CLIENT_ID
    rp_secret = RP_SECRET
    public_client_id = PUBLIC_CLIENT_ID
    machine_client_id = MACHINE_CLIENT_ID
    machine_secret = MACHINE_SECRET
    resource = RESOURCE

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        accounts: list[dict] | None = None,
        clients: list[dict] | None = None,
        access_ttl: int = 300,
        id_token_ttl: int = 300,
        *,
        redirect_uris: list[str] | None = None,
        resource_servers: list[dict] | None = None,
        use_granted_resource: bool = True,
        conform_id_token_claims: bool = False,
        name: str = "oidc-provider",
    ):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.name = name
        self.accounts = copy.deepcopy(accounts if accounts is not None else DEFAULT_ACCOUNTS)
        self.clients = copy.deepcopy(clients if clients is not None else default_clients(redirect_uris or ["http://127.0.0.1/callback"]))
        self.access_ttl = access_ttl
        self.id_token_ttl = id_token_ttl
        self.resource_servers = copy.deepcopy(
            resource_servers if resource_servers is not None else [{"resource": RESOURCE, "scope": "read write", "alg": "RS256"}]
        )
        self.use_granted_resource = use_granted_resource
        self.conform_id_token_claims = conform_id_token_claims
        self.keys_file = self.workdir / "keys.json"
        self.config_file = self.workdir / "oidc-provider.json"
        self.log = self.workdir / "oidc-provider.log"
        self.proc: Proc | None = None
        self._cookie_keys = [secrets.token_hex(32)]
        if self.keys_file.is_file():
            self.keys = json.loads(self.keys_file.read_text())
        else:
            self.keys = [rsa_jwk(), ec_jwk()]
            self._save_keys()

    # ---- lifecycle

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def current_kid(self) -> str:
        """The kid of the key that signs RS256 ID and access tokens."""
        return next(k["kid"] for k in self.keys if k.get("alg") == "RS256")

    def public_jwks(self) -> dict:
        return {"keys": [public_jwk(k) for k in self.keys]}

    def _save_keys(self):
        self.keys_file.write_text(json.dumps(self.keys, indent=1))

    def _write_config(self):
        cfg = {
            "port": self.port,
            "issuer": self.issuer,
            "node_modules": str(node_dir() / "node_modules"),
            "keys": self.keys,
            "cookie_keys": self._cookie_keys,
            "clients": self.clients,
            "accounts": self.accounts,
            "ttl": {
                "AccessToken": self.access_ttl,
                "ClientCredentials": self.access_ttl,
                "IdToken": self.id_token_ttl,
            },
            "resource_servers": [{"access_ttl": self.access_ttl, **rs} for rs in self.resource_servers],
            "use_granted_resource": self.use_granted_resource,
            "conform_id_token_claims": self.conform_id_token_claims,
            "pkce_required": True,
        }
        self.config_file.write_text(json.dumps(cfg, indent=1))

    def start(self, timeout: float = 20) -> "OpenIdProvider":
        node = node_bin()
        self._write_config()
        self.proc = Proc(
            self.name,
            [node, str(PROVIDER_JS), str(self.config_file)],
            self.log,
            env={"NODE_ENV": "production", "DEBUG": ""},
            cwd=self.workdir,
        )

        def ready():
            try:
                st, body = self._get_json("/.well-known/openid-configuration", timeout=2)
            except OSError:
                return False
            return st == 200 and body.get("issuer") == self.issuer

        poll(ready, timeout, f"{self.name} discovery", proc=self.proc)
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def restart(self, rotate_key: bool = False) -> "OpenIdProvider":
        """Stops and starts again on the same port. rotate_key: a new RS256
        key signs from now on; the previous keys stay in the JWKS."""
        self.stop()
        if rotate_key:
            self.keys.insert(0, rsa_jwk())
            self._save_keys()
        poll(lambda: _port_free(self.port), 10, f"port {self.port} free after stop")
        return self.start()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ---- plain HTTP to the provider

    def _conn(self, timeout: float = 10) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def _get_json(self, path: str, timeout: float = 10):
        c = self._conn(timeout)
        try:
            c.request("GET", path)
            r = c.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data else None)
        finally:
            c.close()

    def discovery(self) -> dict:
        st, body = self._get_json("/.well-known/openid-configuration")
        if st != 200:
            raise RuntimeError(f"discovery: {st} {body}")
        return body

    def jwks(self) -> dict:
        """The JWKS as served (counts as a fetch)."""
        st, body = self._get_json("/jwks")
        if st != 200:
            raise RuntimeError(f"jwks: {st} {body}")
        return body

    def jwks_fetches(self) -> int:
        st, body = self._get_json("/__test/jwks_fetches")
        if st != 200:
            raise RuntimeError(f"jwks_fetches: {st} {body}")
        return int(body["count"])

    def reset_jwks_fetches(self):
        c = self._conn()
        try:
            c.request("POST", "/__test/jwks_fetches/reset", body=b"")
            r = c.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"reset_jwks_fetches: {r.status}")
        finally:
            c.close()

    # ---- client side

    def authorize_url(
        self,
        client_id: str,
        redirect_uri: str,
        scope: str,
        state: str,
        nonce: str,
        code_challenge: str,
        resource: str | None = None,
        **extra: str,
    ) -> str:
        params = {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if resource:
            params["resource"] = resource
        params.update(extra)
        return f"{self.issuer}/auth?{urllib.parse.urlencode(params)}"

    def login(self, authorize_url: str, login: str, password: str = "any", max_steps: int = 20) -> str:
        """Plays the browser: GET the authorization URL, sign in as `login`
        (account id or email), consent, and back through the authorization
        endpoint with the provider's cookies. Returns the final redirect
        Location (the client's redirect_uri with code, state and iss, or
        error)."""
        return Browser(self.issuer).authorize(authorize_url, login, password, max_steps)

    def code_flow_tokens(
        self,
        client_id: str,
        client_secret: str | None,
        redirect_uri: str,
        login: str,
        scope: str = "openid email profile",
        resource: str | None = None,
        token_resource: str | None = None,
    ) -> dict:
        """The authorization code flow end to end (PKCE S256, state, nonce).
        `resource` goes into the authorization request; the token request
        sends `token_resource` (default: the same resource). Returns the
        token response plus nonce, state, code_verifier and callback."""
        verifier, challenge = pkce_pair()
        state = secrets.token_urlsafe(16)
        nonce = secrets.token_urlsafe(16)
        url = self.authorize_url(client_id, redirect_uri, scope, state, nonce, challenge, resource)
        location = self.login(url, login)
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))
        if "error" in q:
            raise RuntimeError(f"authorization error: {q}")
        if q.get("state") != state:
            raise RuntimeError(f"state mismatch: sent {state}, got {q.get('state')}")
        form = {
            "grant_type": "authorization_code",
            "code": q["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        }
        res = token_resource if token_resource is not None else resource
        if res:
            form["resource"] = res
        st, body = self.token_request(client_id, client_secret, form)
        if st != 200:
            raise RuntimeError(f"token endpoint: {st} {body}")
        body.update(nonce=nonce, state=state, code_verifier=verifier, callback=location)
        return body

    def refresh(self, client_id: str, client_secret: str | None, refresh_token: str, resource: str | None = None) -> dict:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource:
            form["resource"] = resource
        st, body = self.token_request(client_id, client_secret, form)
        if st != 200:
            raise RuntimeError(f"refresh: {st} {body}")
        return body

    def client_credentials_token(self, client_id: str, secret: str, resource: str, scope: str = "read") -> str:
        form = {"grant_type": "client_credentials", "resource": resource, "scope": scope}
        st, body = self.token_request(client_id, secret, form)
        if st != 200 or "access_token" not in (body or {}):
            raise RuntimeError(f"client_credentials: {st} {body}")
        return body["access_token"]

    def token_request(self, client_id: str, client_secret: str | None, form: dict, auth: str = "basic"):
        """POST /token. With a secret: client_secret_basic (auth="basic") or
        client_secret_post (auth="post"); without: client_id in the body."""
        form = dict(form)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if client_secret is None or auth == "post":
            form["client_id"] = client_id
            if client_secret is not None:
                form["client_secret"] = client_secret
        else:
            cred = f"{urllib.parse.quote(client_id, safe='')}:{urllib.parse.quote(client_secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(cred.encode()).decode()
        c = self._conn()
        try:
            c.request("POST", "/token", body=urllib.parse.urlencode(form), headers=headers)
            r = c.getresponse()
            data = r.read()
            try:
                body = json.loads(data)
            except ValueError:
                body = {"raw": data.decode("utf-8", "replace")}
            return r.status, body
        finally:
            c.close()

    def userinfo(self, access_token: str):
        c = self._conn()
        try:
            c.request("GET", "/me", headers={"Authorization": f"Bearer {access_token}"})
            r = c.getresponse()
            data = r.read()
            try:
                return r.status, json.loads(data)
            except ValueError:
                return r.status, None
        finally:
            c.close()


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        # node listens with SO_REUSEADDR: TIME_WAIT leftovers do not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = _b64u(hashlib.sha256(verifier.encode()).digest())
    return verifier, challenge


# --------------------------------------------------------------------------
# a scripted browser
# --------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


class _Forms(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self._cur: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self._cur = {"id": a.get("id"), "action": a.get("action") or "", "method": (a.get("method") or "get").lower(), "fields": {}}
            self.forms.append(self._cur)
        elif tag == "input" and self._cur is not None and a.get("name"):
            self._cur["fields"][a["name"]] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self._cur = None


class Browser:
    """Cookies kept, redirects seen one by one; stops at the first redirect
    that leaves the issuer (the client's redirect_uri)."""

    def __init__(self, issuer: str):
        self.issuer = issuer.rstrip("/")
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect())
        self.opener.addheaders = [("User-Agent", "portcullis-differential/1"), ("Accept", "text/html")]
        self.trail: list[str] = []

    def _open(self, url: str, data: dict | None = None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(url, data=body, method="POST" if data is not None else "GET")
        try:
            r = self.opener.open(req, timeout=15)
            return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def authorize(self, url: str, login: str, password: str, max_steps: int = 20) -> str:
        data = None
        for _ in range(max_steps):
            self.trail.append(("POST " if data is not None else "GET ") + url)
            status, headers, body = self._open(url, data)
            data = None
            if status in (301, 302, 303, 307, 308):
                loc = urllib.parse.urljoin(url, headers["Location"])
                if not loc.startswith(self.issuer + "/"):
                    return loc
                url = loc
                continue
            text = body.decode("utf-8", "replace")
            if status != 200:
                raise RuntimeError(f"{url}: {status} {text[:500]}\ntrail: {self.trail}")
            p = _Forms()
            p.feed(text)
            form = next((f for f in p.forms if f["id"] in ("login", "consent")), None)
            if form is None:
                raise RuntimeError(f"{url}: no login or consent form in {text[:500]}\ntrail: {self.trail}")
            fields = dict(form["fields"])
            if form["id"] == "login":
                fields.update(login=login, password=password)
            url = urllib.parse.urljoin(url, form["action"])
            data = fields
        raise RuntimeError(f"no redirect to the client after {max_steps} steps\ntrail: {self.trail}")
