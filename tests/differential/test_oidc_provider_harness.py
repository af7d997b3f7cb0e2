"""The OpenID Provider harness itself (oidc_provider.py, oidc/provider.mjs):
a real oidc-provider answers discovery, runs the authorization code flow with
PKCE for a scripted browser, signs ID tokens and RFC 9068 access tokens that
verify against its own JWKS, rotates keys across a restart, and counts JWKS
fetches. No portcullis here: this proves the counterpart the OIDC tests use.
"""

from __future__ import annotations

import urllib.parse

import jwt
import pytest

import oidc_provider as oidc
from harness import free_port

CALLBACK = f"http://127.0.0.1:{free_port()}/oidc/callback"
ES_CLIENT = "es256-rp"


@pytest.fixture(scope="module")
def op(tmp_path_factory, counterpart_missing):
    oidc.require(counterpart_missing)
    clients = oidc.default_clients([CALLBACK]) + [
        {
            "client_id": ES_CLIENT,
            "client_secret": "es256-secret-0123456789abcdef",
            "redirect_uris": [CALLBACK],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_post",
            "id_token_signed_response_alg": "ES256",
        }
    ]
    p = oidc.OpenIdProvider(tmp_path_factory.mktemp("oidc-op"), clients=clients)
    p.start()
    yield p
    p.stop()


def _jwk(op, kid):
    return next(k for k in op.public_jwks()["keys"] if k["kid"] == kid)


def verify(op, token: str, audience: str, jwks: dict | None = None) -> dict:
    """Signature against the served JWKS, iss, aud, exp (PyJWT)."""
    jwks = jwks or op.jwks()
    header = jwt.get_unverified_header(token)
    key = jwt.PyJWK(next(k for k in jwks["keys"] if k["kid"] == header["kid"]))
    return jwt.decode(token, key, algorithms=[header["alg"]], audience=audience, issuer=op.issuer)


def test_discovery(op):
    d = op.discovery()
    assert d["issuer"] == op.issuer and not d["issuer"].endswith("/")
    assert d["jwks_uri"] == f"{op.issuer}/jwks"
    assert d["authorization_endpoint"] == f"{op.issuer}/auth"
    assert d["token_endpoint"] == f"{op.issuer}/token"
    assert d["code_challenge_methods_supported"] == ["S256"]
    assert {"RS256", "ES256"} <= set(d["id_token_signing_alg_values_supported"])
    assert {"authorization_code", "client_credentials", "refresh_token"} <= set(d["grant_types_supported"])
    assert d["authorization_response_iss_parameter_supported"] is True
    jwks = op.jwks()
    assert {k["kty"] for k in jwks["keys"]} == {"RSA", "EC"}
    assert all("d" not in k for k in jwks["keys"]), "private parts served"


def test_code_flow_id_token(op):
    t = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, "alice@example.com")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(t["callback"]).query))
    assert t["callback"].startswith(CALLBACK + "?")
    assert q["state"] == t["state"] and q["iss"] == op.issuer
    assert jwt.get_unverified_header(t["id_token"])["kid"] == op.current_kid
    claims = verify(op, t["id_token"], op.rp_client_id)
    assert claims["nonce"] == t["nonce"]
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.com" and claims["email_verified"] is True
    assert claims["name"] == "Alice Example"
    assert t["token_type"] == "Bearer"
    # without a resource the access token is opaque, for userinfo only
    assert t["access_token"].count(".") != 2
    st, info = op.userinfo(t["access_token"])
    assert st == 200 and info["email"] == "alice@example.com", info


def test_login_by_account_id_and_unverified_email(op):
    t = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, "bob")
    claims = verify(op, t["id_token"], op.rp_client_id)
    assert claims["sub"] == "bob" and claims["email_verified"] is False


def test_jwt_access_token_for_resource(op):
    t = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, "alice", scope="openid email profile read", resource=op.resource)
    h = jwt.get_unverified_header(t["access_token"])
    assert h["typ"] == "at+jwt" and h["alg"] == "RS256" and h["kid"] == op.current_kid
    at = verify(op, t["access_token"], op.resource)
    assert at["aud"] == op.resource and at["sub"] == "alice" and at["client_id"] == op.rp_client_id
    assert at["scope"] == "read"
    assert at["roles"] == ["admin"] and at["groups"] == ["ops"] and at["realm_access"] == {"roles": ["admin"]}
    assert t["scope"] == "read"
    assert t.get("refresh_token")
    # the resource from the authorization request alone is enough (use_granted_resource)
    t2 = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, "bob", scope="openid read write", resource=op.resource, token_resource="")
    at2 = verify(op, t2["access_token"], op.resource)
    assert at2["sub"] == "bob" and at2["roles"] == ["viewer"] and set(at2["scope"].split()) == {"read", "write"}


def test_public_client_and_es256(op):
    t = op.code_flow_tokens(op.public_client_id, None, CALLBACK, "alice")
    assert verify(op, t["id_token"], op.public_client_id)["nonce"] == t["nonce"]
    st, body = op.token_request(op.public_client_id, None, {"grant_type": "authorization_code", "code": "nope", "redirect_uri": CALLBACK})
    assert st == 400 and body["error"] == "invalid_grant"
    verifier, challenge = oidc.pkce_pair()
    url = op.authorize_url(ES_CLIENT, CALLBACK, "openid email", "s1", "n1", challenge)
    loc = op.login(url, "alice")
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))["code"]
    st, body = op.token_request(
        ES_CLIENT,
        "es256-secret-0123456789abcdef",
        {"grant_type": "authorization_code", "code": code, "redirect_uri": CALLBACK, "code_verifier": verifier},
        auth="post",
    )
    assert st == 200, body
    assert jwt.get_unverified_header(body["id_token"])["alg"] == "ES256"
    assert verify(op, body["id_token"], ES_CLIENT)["nonce"] == "n1"


def test_pkce_required_and_bad_login(op):
    url = op.authorize_url(op.rp_client_id, CALLBACK, "openid", "s2", "n2", "x")
    url = url.replace("&code_challenge=x&code_challenge_method=S256", "")
    loc = op.login(url, "alice")
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    assert q["error"] == "invalid_request" and "PKCE" in q["error_description"] and q["state"] == "s2"
    _, challenge = oidc.pkce_pair()
    with pytest.raises(RuntimeError, match="401"):
        op.login(op.authorize_url(op.rp_client_id, CALLBACK, "openid", "s3", "n3", challenge), "mallory")


def test_client_credentials(op):
    tok = op.client_credentials_token(op.machine_client_id, op.machine_secret, op.resource, "read write")
    assert jwt.get_unverified_header(tok)["typ"] == "at+jwt"
    at = verify(op, tok, op.resource)
    assert at["sub"] == op.machine_client_id == at["client_id"]
    assert set(at["scope"].split()) == {"read", "write"} and at["roles"] == ["service"]
    st, body = op.token_request(op.machine_client_id, op.machine_secret, {"grant_type": "client_credentials", "resource": "https://other.test", "scope": "read"})
    assert st == 400 and body["error"] == "invalid_target"


def test_jwks_fetches(op):
    op.reset_jwks_fetches()
    assert op.jwks_fetches() == 0
    client = jwt.PyJWKClient(f"{op.issuer}/jwks", cache_keys=False, cache_jwk_set=False)
    tok = op.client_credentials_token(op.machine_client_id, op.machine_secret, op.resource)
    key = client.get_signing_key_from_jwt(tok)
    jwt.decode(tok, key, algorithms=["RS256"], audience=op.resource)
    op.jwks()
    assert op.jwks_fetches() == 2
    op.discovery()
    assert op.jwks_fetches() == 2
    op.reset_jwks_fetches()
    assert op.jwks_fetches() == 0


def test_restart_rotates_key(op):
    old = op.current_kid
    old_token = op.client_credentials_token(op.machine_client_id, op.machine_secret, op.resource)
    port = op.port
    op.restart(rotate_key=True)
    assert op.port == port and op.current_kid != old
    assert op.jwks_fetches() == 0  # a new process
    jwks = op.jwks()
    kids = [k["kid"] for k in jwks["keys"]]
    assert kids[0] == op.current_kid and old in kids
    verify(op, old_token, op.resource, jwks)  # still verifies after rotation
    t = op.code_flow_tokens(op.rp_client_id, op.rp_secret, CALLBACK, "alice", scope="openid read", resource=op.resource)
    assert jwt.get_unverified_header(t["id_token"])["kid"] == op.current_kid
    assert jwt.get_unverified_header(t["access_token"])["kid"] == op.current_kid
    verify(op, t["access_token"], op.resource, jwks)
    op.restart()
    assert [k["kid"] for k in op.jwks()["keys"]] == kids
