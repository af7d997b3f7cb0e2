"""External access tokens on the proxy path (`[[issuers]]`), against a real
OpenID Provider: panva's oidc-provider (OpenID Certified), its users logged
in through the authorization code flow with PKCE by a scripted browser, its
RFC 9068 access tokens (`typ: at+jwt`) presented to the sidecar.

Covered: the identity the upstream receives (subject, issuer name as
`X-Auth-Method`, roles from a claim path, scopes as permissions), role and
permission policies, a wrong `aud`, an ID token presented as an access
token, an expired token, a forged signature, the provider down while
proxying (the cached key set keeps working), key rotation at the provider
(the new `kid` picked up), a flood of unknown `kid`s (bounded fetches), and
linking to a local user by verified email only.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

import oidc_provider as oidc
from harness import JsonNginx, Sidecar, free_port, http_json, poll, which

try:
    import jwt  # PyJWT: only to mint the edge cases a provider will not issue
except ImportError:  # pragma: no cover
    jwt = None

CALLBACK = f"http://127.0.0.1:{free_port()}/app/callback"
OTHER_RESOURCE = "https://other.example.test"
ROUTES = """
[[routes]]
name = "ops"
path = "/ops/**"
auth = "authenticated"
roles = ["admin"]

[[routes]]
name = "writes"
path = "/writes/**"
auth = "authenticated"
permissions = ["write"]

[[routes]]
name = "local_only"
path = "/local-only/**"
auth = "authenticated"
credentials = ["jwt", "api_key"]
"""

ACCOUNTS = oidc.DEFAULT_ACCOUNTS + [
    {
        "sub": "carol",
        "email": "carol@example.com",
        "email_verified": True,
        "name": "Carol Example",
        "roles": ["viewer"],
        "groups": [],
        "token_claims": {"email_verified": True},
    },
    {
        "sub": "dave",
        "email": "dave@example.com",
        "email_verified": False,
        "name": "Dave Example",
        "roles": [],
        "groups": [],
        "token_claims": {"email_verified": False},
    },
]


def Echo(workdir: Path) -> JsonNginx:
    """nginx answering with the identity headers it received."""
    fields = ("user_id", "method", "roles", "permissions", "tenant_id", "email")
    return JsonNginx(workdir, {f: f"$http_x_auth_{f}" for f in fields}, "nginx-echo")


def _issuer_toml(op: oidc.OpenIdProvider, **extra) -> str:
    lines = [
        "[[issuers]]",
        'name = "testidp"',
        f"issuer = {json.dumps(op.issuer)}",
        f"audiences = [{json.dumps(oidc.RESOURCE)}]",
        'roles_claim = "realm_access.roles"',
        "jwks_refresh_interval_seconds = 2",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def stack(tmp_path_factory, require_binary, counterpart_missing):
    oidc.require(counterpart_missing)
    if jwt is None:
        counterpart_missing("PyJWT (PyPI) is not installed")
    if not which("nginx", "/usr/sbin/nginx"):
        counterpart_missing("nginx (Debian package nginx-light) is not installed")
    op = oidc.OpenIdProvider(
        tmp_path_factory.mktemp("op"),
        accounts=ACCOUNTS,
        redirect_uris=[CALLBACK],
        resource_servers=[
            {"resource": oidc.RESOURCE, "scope": "read write", "alg": "RS256"},
            {"resource": OTHER_RESOURCE, "scope": "read", "alg": "RS256"},
        ],
    ).start()
    echo = Echo(tmp_path_factory.mktemp("echo"))
    sc = Sidecar(tmp_path_factory.mktemp("sidecar"), f"127.0.0.1:{echo.port}", extra_routes=_issuer_toml(op) + ROUTES, name="portcullis-oidc").start()
    yield op, sc
    sc.stop()
    echo.stop()
    op.stop()


def access_token(op: oidc.OpenIdProvider, login: str, scope: str = "openid read", resource: str = oidc.RESOURCE) -> str:
    tokens = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, login, scope=scope, resource=resource)
    return tokens["access_token"]


def call(sc: Sidecar, path: str, token: str | None) -> tuple[int, dict]:
    st, body, raw, _ = http_json(sc.proxy_port, "GET", path, headers={"Authorization": f"Bearer {token}"} if token else None)
    return st, body if body is not None else {"raw": raw.decode(errors="replace")}


_SIGNING: dict[str, "jwt.PyJWK"] = {}


def mint(op: oidc.OpenIdProvider, claims: dict, kid: str | None = None, typ: str = "at+jwt", key: dict | None = None) -> str:
    """A token signed with the provider's own current key (or `key`), for
    the cases the provider will not issue (expired, wrong claims)."""
    jwk = key or next(k for k in op.keys if k["kty"] == "RSA")
    cache_key = json.dumps(jwk, sort_keys=True)
    if cache_key not in _SIGNING:  # loading an RSA key from a JWK checks it: slow
        _SIGNING[cache_key] = jwt.PyJWK(jwk, algorithm="RS256")
    signing = _SIGNING[cache_key]
    now = int(time.time())
    body = {"iss": op.issuer, "sub": "alice", "aud": oidc.RESOURCE, "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, signing.key, algorithm="RS256", headers={"kid": kid or jwk["kid"], "typ": typ})


def metric(sc: Sidecar, name: str, labels: str) -> float:
    _, _, raw, _ = http_json(sc.admin_port, "GET", "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in raw.decode().splitlines()
        if line.startswith(name + "{") and all(p in line for p in labels.split(","))
    )


def test_an_external_token_reaches_the_upstream_as_its_subject(stack):
    op, sc = stack
    token = access_token(op, "alice", scope="openid read write")
    header = jwt.get_unverified_header(token)
    assert header["typ"].lower() == "at+jwt"
    st, seen = call(sc, "/api/orders", token)
    assert st == 200, seen
    assert seen["user_id"] == "testidp:alice"
    assert seen["method"] == "testidp"
    assert seen["roles"] == "admin"
    assert set(seen["permissions"].split(",")) == {"read", "write"}
    assert seen["email"] == "alice@example.com"
    # the default tenant, by id
    assert len(seen["tenant_id"]) == 36
    # a second use is a cache hit: the same answer, no new verification
    before = metric(sc, "portcullis_oidc_token_verifications_total", 'result="valid"')
    assert call(sc, "/api/orders", token)[0] == 200
    assert metric(sc, "portcullis_oidc_token_verifications_total", 'result="valid"') == before


def test_roles_and_scopes_from_the_provider_meet_route_policies(stack):
    op, sc = stack
    alice = access_token(op, "alice", scope="openid read")
    bob = access_token(op, "bob", scope="openid read write")
    assert call(sc, "/ops/x", alice)[0] == 200
    st, body = call(sc, "/ops/x", bob)
    assert st == 403 and body["error"]["code"] == "FORBIDDEN"
    # permissions are the token's scopes
    assert call(sc, "/writes/x", bob)[0] == 200
    st, body = call(sc, "/writes/x", alice)
    assert st == 403 and body["error"]["code"] == "FORBIDDEN"
    # a route that accepts only the sidecar's own credentials
    st, body = call(sc, "/local-only/x", alice)
    assert st == 403 and body["error"]["code"] == "FORBIDDEN"


def test_a_token_for_another_audience_is_refused(stack):
    op, sc = stack
    other = access_token(op, "alice", resource=OTHER_RESOURCE)
    assert jwt.decode(other, options={"verify_signature": False})["aud"] == OTHER_RESOURCE
    st, body = call(sc, "/api/x", other)
    assert st == 401 and body["error"]["code"] == "INVALID_TOKEN"


def test_an_id_token_is_not_an_access_token(stack):
    op, sc = stack
    tokens = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, "alice", resource=oidc.RESOURCE)
    st, body = call(sc, "/api/x", tokens["id_token"])
    assert st == 401 and body["error"]["code"] == "INVALID_TOKEN"
    # nor is an ID token minted with the resource as audience: typ JWT, not at+jwt
    st, body = call(sc, "/api/x", mint(op, {}, typ="JWT"))
    assert st == 401 and body["error"]["code"] == "INVALID_TOKEN"


def test_expired_and_forged_tokens_are_refused(stack):
    op, sc = stack
    past = int(time.time()) - 3600
    st, body = call(sc, "/api/x", mint(op, {"iat": past - 300, "exp": past}))
    assert st == 401 and body["error"]["code"] == "TOKEN_EXPIRED"
    # the provider's kid, someone else's key
    forged = mint(op, {"sub": "mallory"}, kid=op.current_kid, key=oidc.rsa_jwk(kid=op.current_kid))
    st, body = call(sc, "/api/x", forged)
    assert st == 401 and body["error"]["code"] == "INVALID_TOKEN"
    # a valid token's payload under another token's signature
    good = access_token(op, "bob")
    admin = mint(op, {"sub": "bob", "realm_access": {"roles": ["admin"]}}, key=oidc.rsa_jwk(kid=op.current_kid))
    h, _, s = good.split(".")
    st, _ = call(sc, "/ops/x", ".".join([h, admin.split(".")[1], s]))
    assert st == 401


def test_a_flood_of_unknown_kids_is_a_bounded_number_of_fetches(stack):
    op, sc = stack
    # the key set is known (a token was verified above), and the interval is 2 s
    assert call(sc, "/api/x", access_token(op, "alice"))[0] == 200
    op.reset_jwks_fetches()
    started = time.monotonic()
    stranger = oidc.rsa_jwk()
    sent = 0
    # five refresh intervals of tokens, each with a kid nobody has
    while time.monotonic() - started < 10 or sent < 300:
        st, body = call(sc, "/api/x", mint(op, {}, kid=secrets.token_hex(8), key=stranger))
        assert st == 401 and body["error"]["code"] == "INVALID_TOKEN"
        sent += 1
    elapsed = time.monotonic() - started
    fetches = op.jwks_fetches()
    # one fetch per refresh interval at most (2 s), plus the one in flight
    assert 1 <= fetches <= elapsed / 2 + 1, (fetches, elapsed)
    print(f"\nkid flood: {sent} tokens with random kids in {elapsed:.1f} s -> {fetches} JWKS fetches")
    assert metric(sc, "portcullis_oidc_token_verifications_total", 'result="unknown_key"') >= sent


def test_the_provider_down_while_proxying_keeps_the_cached_keys(stack):
    op, sc = stack
    # keys known; a token minted before the provider stops, never seen by the sidecar
    assert call(sc, "/api/x", access_token(op, "alice"))[0] == 200
    fresh = access_token(op, "bob")
    op.stop()
    try:
        st, seen = call(sc, "/api/x", fresh)
        assert st == 200 and seen["user_id"] == "testidp:bob", seen
        # an unknown kid now fails to fetch: refused, and counted
        time.sleep(0)  # the refresh interval may not have passed: poll below
        unknown = mint(op, {}, kid="not-a-kid", key=oidc.rsa_jwk())

        def fetch_failed():
            call(sc, "/api/x", unknown)
            return metric(sc, "portcullis_oidc_jwks_fetches_total", 'result="error"') >= 1

        poll(fetch_failed, 15, "a failed key-set fetch while the provider is down", every=0.5)
        st, seen = call(sc, "/api/x", fresh)
        assert st == 200, seen
    finally:
        op.start()


def test_a_rotated_key_at_the_provider_is_picked_up(stack):
    op, sc = stack
    old_kid = op.current_kid
    op.restart(rotate_key=True)
    assert op.current_kid != old_kid
    token = access_token(op, "alice")
    assert jwt.get_unverified_header(token)["kid"] == op.current_kid

    def accepted():
        return call(sc, "/api/x", token)[0] == 200

    # within one refresh interval (2 s) of the first unknown-kid fetch
    poll(accepted, 15, "the rotated key accepted", every=0.25)


def test_link_by_email_only_with_a_verified_email(tmp_path, stack):
    op, _ = stack
    echo = Echo(tmp_path / "echo")
    sc = Sidecar(tmp_path / "sc", f"127.0.0.1:{echo.port}", extra_routes=_issuer_toml(op, link_by_email=True) + ROUTES, name="portcullis-oidc-link").start()
    try:
        carol = sc.register("carol@example.com", "Carol-Local-" + os.urandom(4).hex() + "!7")
        dave = sc.register("dave@example.com", "Dave-Local-" + os.urandom(4).hex() + "!7")
        st, seen = call(sc, "/api/x", access_token(op, "carol"))
        assert st == 200, seen
        # the local account speaks: its id, its roles
        assert seen["user_id"] == carol["user"]["id"]
        assert seen["roles"] == ",".join(carol["user"]["roles"])
        assert seen["method"] == "testidp"
        # dave's provider says his email is not verified: never linked
        st, seen = call(sc, "/api/x", access_token(op, "dave"))
        assert st == 200, seen
        assert seen["user_id"] == "testidp:dave" and seen["user_id"] != dave["user"]["id"]
        # an external token has no account here to describe
        st, body = call(sc, "/auth/me", access_token(op, "carol"))
        assert st == 403 and body["error"]["code"] == "FORBIDDEN"
    finally:
        sc.stop()
        echo.stop()
