"""Passkeys (WebAuthn, `/auth/passkeys/...`) against a real software
authenticator nobody here wrote: PyPI's soft-webauthn (passkeys.py converts
between its bytes-based dicts and the W3C JSON forms the sidecar speaks).
The sidecar runs with `rp_id = "localhost"` and the origin
`http://localhost:<proxy port>`, which is what the tests tell the device.

Covered: registering a passkey (the creation options, 201 and the listed
passkey, `excludeCredentials` on the next registration); logging in without
an email (discoverable) and with one (`allowCredentials` for a user's
passkeys, the same answer without it for an unknown email or a user without
passkeys); the access token's `amr` (`hwk`, `pop`, verified against the
JWKS) and its use on `/auth/me`; several passkeys for one user, listed
oldest first, renamed, another user's passkey a 404; a wrong origin and a
wrong RP id (rpIdHash) refused at registration and at login; a bad
signature, another user's userHandle and an unregistered credential refused;
a challenge replayed, finished by another session, or expired; the signature
counter going back (refused and audited); a deleted passkey (the password,
or a recent passkey login, to delete it) that no longer logs in; a disabled
account; a passkey as the MFA step after a password (single-use `mfaToken`)
and the TOTP step after a passkey without UV; a `require_passkey` route (a
password session and an API key refused, a passkey session proxied, also
after a refresh); logout revoking a passkey session; passkeys off (400 on
every route); the ceremony metrics.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyotp
import pytest

import passkeys as pk
from harness import Sidecar
from passkeys import (
    User, add_passkey, assert_tokens, asserted, call, ceremonies, claims, created, login_assertion, login_begin,
    login_finish, new_user, ok, origin, passkey_login, refused, register_begin, register_finish,
)

RP_ID = "localhost"
EVIL_RP_ID = "evil.example"
REFRESH_DEAD = ("INVALID_TOKEN", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED")

PK_ROUTES = """
[[routes]]
name = "pk_only"
path = "/pk-only/**"
auth = "authenticated"
require_passkey = true
"""


# --------------------------------------------------------------------------
# the upstream: answers every request with the headers it received
# --------------------------------------------------------------------------


class Echo:
    """A tiny HTTP/1.1 server on 127.0.0.1 answering 200 with
    `{"path", "headers": {lower-cased name: value}}`."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                body = json.dumps({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# sidecars
# --------------------------------------------------------------------------


def _sidecar(work, upstream_port: int, name: str, ttl: int | None, extra_routes: str = "") -> Sidecar:
    sc = Sidecar(work, f"127.0.0.1:{upstream_port}", name=name, extra_routes=extra_routes)
    if ttl is not None:
        sc.config.write_text(
            sc.config.read_text()
            + f"""
[passkeys]
rp_id = {json.dumps(RP_ID)}
origins = [{json.dumps(origin(sc))}]
challenge_ttl_seconds = {ttl}
"""
        )
    return sc.start()


@pytest.fixture(scope="module")
def echo():
    e = Echo()
    yield e
    e.stop()


@pytest.fixture(scope="module")
def sc(tmp_path_factory, require_binary, counterpart_missing, echo):
    pk.require(counterpart_missing)
    s = _sidecar(tmp_path_factory.mktemp("passkeys"), echo.port, "portcullis-passkeys", 120, PK_ROUTES)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def short_ttl(tmp_path_factory, require_binary, counterpart_missing, echo):
    pk.require(counterpart_missing)
    s = _sidecar(tmp_path_factory.mktemp("passkeys-ttl"), echo.port, "portcullis-passkeys-ttl", 2)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def passkeys_off(tmp_path_factory, require_binary, echo):
    s = _sidecar(tmp_path_factory.mktemp("passkeys-off"), echo.port, "portcullis-passkeys-off", None)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def admin(sc):
    return sc.create_admin(f"admin-{os.getpid()}@example.com", "Admin-" + os.urandom(4).hex() + "!7")


# --------------------------------------------------------------------------
# users and ceremonies
# --------------------------------------------------------------------------


def passkey_list(sc: Sidecar, token: str) -> list[dict]:
    body = ok(call(sc, "GET", "/auth/passkeys", token=token))
    assert set(body) == {"passkeys"}, body
    return body["passkeys"]


def assert_passkey_object(p: dict, name: str, transports: list[str]):
    assert set(p) == {"id", "name", "createdAt", "lastUsedAt", "transports"}, p
    uuid.UUID(p["id"])
    assert p["name"] == name, p
    datetime.fromisoformat(p["createdAt"].replace("Z", "+00:00"))
    assert sorted(p["transports"]) == sorted(transports), p


def enable_totp(sc: Sidecar, user: User) -> dict:
    enabled = ok(call(sc, "POST", "/auth/mfa/enable", {}, user.token))
    ok(call(sc, "POST", "/auth/mfa/confirm", {"code": pyotp.TOTP(enabled["secret"]).now()}, user.token))
    return enabled


# --------------------------------------------------------------------------
# registration and login
# --------------------------------------------------------------------------


def test_register_a_passkey_and_list_it(sc):
    user = new_user(sc, "reg")
    refused(register_begin(sc, None), 401, "UNAUTHENTICATED")
    assert passkey_list(sc, user.token) == []

    begin = ok(register_begin(sc, user.token))
    assert begin["expiresIn"] == 120, begin
    opts = begin["publicKey"]
    assert opts["rp"]["id"] == RP_ID, opts
    assert pk.b64url_decode(opts["user"]["id"]) == uuid.UUID(user.id).bytes, opts
    assert opts["user"]["name"] == user.email, opts
    assert len(pk.b64url_decode(opts["challenge"])) >= 16 and "=" not in opts["challenge"], opts
    assert {"type": "public-key", "alg": -7} in [{"type": p["type"], "alg": p["alg"]} for p in opts["pubKeyCredParams"]], opts
    assert opts["authenticatorSelection"]["residentKey"] == "preferred", opts
    assert opts["authenticatorSelection"]["userVerification"] == "preferred", opts
    assert opts.get("attestation", "none") == "none", opts
    assert not opts.get("excludeCredentials"), opts

    device = pk.new_device()
    credential = pk.registration_response_json(device.create(pk.creation_options_from_json(opts), origin(sc)), transports=["usb", "nfc"])
    refused(register_finish(sc, None, credential), 401, "UNAUTHENTICATED")
    refused(register_finish(sc, user.token, None), 400, "INVALID_REQUEST")
    passkey = ok(register_finish(sc, user.token, credential), 201)
    assert_passkey_object(passkey, "Passkey", ["usb", "nfc"])
    assert passkey["lastUsedAt"] is None, passkey
    assert passkey_list(sc, user.token) == [passkey]

    # the next registration excludes the passkey the user holds
    again = ok(register_begin(sc, user.token))["publicKey"]
    assert [c["id"] for c in again["excludeCredentials"]] == [pk.credential_id(device)], again
    assert all(c["type"] == "public-key" for c in again["excludeCredentials"]), again
    assert again["challenge"] != opts["challenge"]

    # a second authenticator, named, without transports
    second = pk.new_device()
    named = add_passkey(sc, user, second, name="Laptop")
    assert_passkey_object(named, "Laptop", [])
    assert {p["id"] for p in passkey_list(sc, user.token)} == {passkey["id"], named["id"]}
    third = ok(register_begin(sc, user.token))["publicKey"]
    assert sorted(c["id"] for c in third["excludeCredentials"]) == sorted([pk.credential_id(device), pk.credential_id(second)])


def test_login_without_an_email_discoverable(sc):
    user = new_user(sc, "disc")
    device = pk.new_device()
    passkey = add_passkey(sc, user, device)

    begin = ok(login_begin(sc))
    assert begin["expiresIn"] == 120, begin
    assert begin["publicKey"]["rpId"] == RP_ID, begin
    assert not begin["publicKey"].get("allowCredentials"), begin
    tokens = assert_tokens(ok(login_finish(sc, asserted(begin, device, origin(sc)))), user.id)

    c = claims(sc, tokens["accessToken"])
    assert c["sub"] == user.id
    assert "hwk" in c["amr"] and "pop" in c["amr"], c["amr"]
    # soft-webauthn never sets UV: neither "uv" nor "mfa", and no password
    assert not {"uv", "mfa", "pwd"} & set(c["amr"]), c["amr"]
    me = ok(call(sc, "GET", "/auth/me", token=tokens["accessToken"]))
    assert me["id"] == user.id and me["email"] == user.email

    [listed] = passkey_list(sc, user.token)
    assert listed["id"] == passkey["id"] and listed["lastUsedAt"] is not None, listed
    datetime.fromisoformat(listed["lastUsedAt"].replace("Z", "+00:00"))


def test_login_with_an_email_lists_the_users_passkeys_and_nothing_else(sc):
    user = new_user(sc, "email")
    device = pk.new_device()
    add_passkey(sc, user, device)

    begin = ok(login_begin(sc, user.email))
    allowed = begin["publicKey"]["allowCredentials"]
    assert [a["id"] for a in allowed] == [pk.credential_id(device)], allowed
    assert all(a["type"] == "public-key" for a in allowed), allowed
    assert_tokens(ok(login_finish(sc, asserted(begin, device, origin(sc)))), user.id)

    # an unknown email, or a user without passkeys: the answer of no email
    nobody = ok(login_begin(sc))
    without = new_user(sc, "nopk")
    for email in (f"nobody-{os.getpid()}@example.com", without.email):
        body = ok(login_begin(sc, email))
        assert not body["publicKey"].get("allowCredentials"), (email, body)
        assert set(body) == set(nobody) and set(body["publicKey"]) == set(nobody["publicKey"]), (email, body, nobody)
        assert body["expiresIn"] == nobody["expiresIn"]


def test_several_passkeys_for_one_user(sc):
    user = new_user(sc, "multi")
    phone, key = pk.new_device(), pk.new_device()
    p1 = add_passkey(sc, user, phone, name="Phone")
    p2 = add_passkey(sc, user, key, name="Key")
    other = new_user(sc, "other")
    add_passkey(sc, other, pk.new_device())

    for device in (phone, key):
        assert_tokens(passkey_login(sc, device), user.id)
    listed = passkey_list(sc, user.token)
    assert {(p["id"], p["name"]) for p in listed} == {(p1["id"], "Phone"), (p2["id"], "Key")}, listed
    assert all(p["lastUsedAt"] is not None for p in listed), listed
    allowed = ok(login_begin(sc, user.email))["publicKey"]["allowCredentials"]
    assert sorted(a["id"] for a in allowed) == sorted([pk.credential_id(phone), pk.credential_id(key)])

    renamed = ok(call(sc, "PATCH", f"/auth/passkeys/{p1['id']}", {"name": "Work phone"}, user.token))
    assert renamed["id"] == p1["id"] and renamed["name"] == "Work phone", renamed
    assert {p["name"] for p in passkey_list(sc, user.token)} == {"Work phone", "Key"}
    for bad in ({"name": ""}, {"name": "x" * 65}, {}):
        refused(call(sc, "PATCH", f"/auth/passkeys/{p1['id']}", bad, user.token), 400, "INVALID_REQUEST")
    assert ok(call(sc, "PATCH", f"/auth/passkeys/{p1['id']}", {"name": "y" * 64}, user.token))["name"] == "y" * 64

    # another user's passkey, or none at all
    refused(call(sc, "PATCH", f"/auth/passkeys/{p1['id']}", {"name": "mine"}, other.token), 404, "NOT_FOUND")
    refused(call(sc, "DELETE", f"/auth/passkeys/{p1['id']}", {"password": other.password}, other.token), 404, "NOT_FOUND")
    refused(call(sc, "PATCH", f"/auth/passkeys/{uuid.uuid4()}", {"name": "x"}, user.token), 404, "NOT_FOUND")
    assert {p["id"] for p in passkey_list(sc, user.token)} == {p1["id"], p2["id"]}
    assert len(passkey_list(sc, other.token)) == 1


def test_passkeys_are_listed_oldest_first(sc):
    user = new_user(sc, "order")
    # registered one after the other, most of them within the same second
    made = [add_passkey(sc, user, pk.new_device(), name=f"key {i}")["id"] for i in range(5)]
    assert [p["id"] for p in passkey_list(sc, user.token)] == made, [p["name"] for p in passkey_list(sc, user.token)]


# --------------------------------------------------------------------------
# what the ceremony checks
# --------------------------------------------------------------------------


def test_a_wrong_origin_is_rejected(sc):
    user = new_user(sc, "origin")
    for wrong in (f"http://evil.example:{sc.proxy_port}", f"https://localhost:{sc.proxy_port}", f"http://localhost:{sc.admin_port}"):
        refused(register_finish(sc, user.token, created(sc, user.token, pk.new_device(), at=wrong)), 400, "PASSKEY_REJECTED")
    assert passkey_list(sc, user.token) == []

    device = pk.new_device()
    add_passkey(sc, user, device)
    refused(login_finish(sc, login_assertion(sc, device, at=f"http://evil.example:{sc.proxy_port}")), 400, "PASSKEY_REJECTED")
    refused(login_finish(sc, login_assertion(sc, device, user.email, at=f"http://localhost:{sc.admin_port}")), 400, "PASSKEY_REJECTED")
    assert_tokens(passkey_login(sc, device), user.id)


def test_a_wrong_rp_id_is_rejected(sc):
    user = new_user(sc, "rpid")

    def other_rp(options):
        options["rp"]["id"] = EVIL_RP_ID

    # the device makes its credential for another RP: its rpIdHash says so
    refused(register_finish(sc, user.token, created(sc, user.token, pk.new_device(), options_hook=other_rp)), 400, "PASSKEY_REJECTED")
    assert passkey_list(sc, user.token) == []

    device = pk.new_device()
    add_passkey(sc, user, device)
    begin = ok(login_begin(sc))
    options = pk.request_options_from_json(begin["publicKey"])
    options["publicKey"]["rpId"] = EVIL_RP_ID
    wrong = pk.authentication_response_json(pk.for_rp(device, EVIL_RP_ID).get(options, origin(sc)))
    refused(login_finish(sc, wrong), 400, "PASSKEY_REJECTED")
    assert_tokens(passkey_login(sc, device), user.id)


def test_a_tampered_or_foreign_assertion_is_rejected(sc):
    user, other = new_user(sc, "tamper"), new_user(sc, "tamper-other")
    device = pk.new_device()
    add_passkey(sc, user, device)
    add_passkey(sc, other, pk.new_device())

    # a signature that does not verify
    cred = login_assertion(sc, device)
    sig = bytearray(pk.b64url_decode(cred["response"]["signature"]))
    sig[len(sig) // 2] ^= 0x01
    cred["response"]["signature"] = pk.b64url(bytes(sig))
    refused(login_finish(sc, cred), 400, "PASSKEY_REJECTED")

    # a userHandle naming another user than the credential's
    cred = login_assertion(sc, device)
    cred["response"]["userHandle"] = pk.b64url(uuid.UUID(other.id).bytes)
    refused(login_finish(sc, cred), 400, "PASSKEY_REJECTED")

    # a credential that was made but never registered
    stranger = pk.new_device()
    stranger.cred_init(RP_ID, uuid.UUID(user.id).bytes)
    refused(login_finish(sc, login_assertion(sc, stranger)), 400, "PASSKEY_REJECTED")

    # the genuine assertion still logs in
    assert_tokens(passkey_login(sc, device), user.id)


def test_a_replayed_challenge_is_rejected(sc):
    user = new_user(sc, "replay")
    device = pk.new_device()
    credential = created(sc, user.token, device)
    ok(register_finish(sc, user.token, credential), 201)
    refused(register_finish(sc, user.token, credential), 400, "PASSKEY_REJECTED")
    assert len(passkey_list(sc, user.token)) == 1

    assertion = login_assertion(sc, device)
    assert_tokens(ok(login_finish(sc, assertion)), user.id)
    refused(login_finish(sc, assertion), 400, "PASSKEY_REJECTED")


def test_a_challenge_is_bound_to_the_session_that_began_it(sc):
    alice, mallory = new_user(sc, "alice"), new_user(sc, "mallory")
    # alice's registration challenge, answered by a device, finished by mallory
    credential = created(sc, alice.token, pk.new_device())
    refused(register_finish(sc, mallory.token, credential), 400, "PASSKEY_REJECTED")
    assert passkey_list(sc, mallory.token) == []
    # ... or by another session of alice herself
    second = sc.login(alice.email, alice.password)
    credential = created(sc, alice.token, pk.new_device())
    refused(register_finish(sc, second["accessToken"], credential), 400, "PASSKEY_REJECTED")
    assert passkey_list(sc, alice.token) == []


def test_an_expired_challenge_is_rejected(short_ttl):
    sc = short_ttl
    user = new_user(sc, "expiry")
    begin = ok(register_begin(sc, user.token))
    assert begin["expiresIn"] == 2, begin
    device = pk.new_device()
    credential = pk.registration_response_json(device.create(pk.creation_options_from_json(begin["publicKey"]), origin(sc)))
    # The sidecar's own clock is what is under test, and nothing outside it can
    # move that clock: real time has to pass beyond the 2 s challenge TTL
    # (kept in whole seconds: a challenge lives at least 2 s, less than 3 s).
    time.sleep(3.5)
    refused(register_finish(sc, user.token, credential), 400, "PASSKEY_REJECTED")
    assert passkey_list(sc, user.token) == []

    # within the TTL it works (a begin and a finish take milliseconds) ...
    add_passkey(sc, user, device)
    # ... and a login challenge expires the same way (real time again)
    assertion = login_assertion(sc, device)
    time.sleep(3.5)
    refused(login_finish(sc, assertion), 400, "PASSKEY_REJECTED")
    assert_tokens(passkey_login(sc, device), user.id)


def test_a_counter_going_backwards_is_rejected_and_audited(sc, admin):
    user = new_user(sc, "counter")
    device = pk.new_device()
    add_passkey(sc, user, device)
    passkey_login(sc, device)
    passkey_login(sc, device)
    assert device.sign_count == 2  # the sidecar stored 2

    device.sign_count = 1  # the next assertion carries 2: not greater
    refused(login_finish(sc, login_assertion(sc, device)), 400, "PASSKEY_REJECTED")
    device.sign_count = 0  # the next assertion carries 1: lower (a clone)
    refused(login_finish(sc, login_assertion(sc, device)), 400, "PASSKEY_REJECTED")

    audit = ok(call(sc, "GET", f"/auth/admin/audit?limit=100&userId={user.id}", token=admin["accessToken"]))
    types = [item["type"] for item in audit["items"]]
    assert "passkey.counter_regressed" in types, types
    assert "passkey.registered" in types, types


def test_a_deleted_passkey_no_longer_logs_in(sc):
    user = new_user(sc, "delete")
    first, second = pk.new_device(), pk.new_device()
    p1 = add_passkey(sc, user, first)
    p2 = add_passkey(sc, user, second)
    path = f"/auth/passkeys/{p1['id']}"

    refused(call(sc, "DELETE", path, {"password": "not-" + user.password}, user.token), 401, "INVALID_CREDENTIALS")
    # no password, and the session was begun with a password, not a passkey
    refused(call(sc, "DELETE", path, {}, user.token), 400, "INVALID_REQUEST")
    assert ok(call(sc, "DELETE", path, {"password": user.password}, user.token))["message"] == "Passkey deleted"
    refused(call(sc, "DELETE", path, {"password": user.password}, user.token), 404, "NOT_FOUND")
    assert [p["id"] for p in passkey_list(sc, user.token)] == [p2["id"]]
    refused(login_finish(sc, login_assertion(sc, first)), 400, "PASSKEY_REJECTED")

    # a session begun with a passkey a moment ago deletes without the password
    fresh = passkey_login(sc, second)["accessToken"]
    assert ok(call(sc, "DELETE", f"/auth/passkeys/{p2['id']}", {}, fresh))["message"] == "Passkey deleted"
    assert passkey_list(sc, user.token) == []
    refused(login_finish(sc, login_assertion(sc, second)), 400, "PASSKEY_REJECTED")
    refused(login_finish(sc, login_assertion(sc, second, user.email)), 400, "PASSKEY_REJECTED")


def test_a_disabled_account_cannot_log_in_with_a_passkey(sc, admin):
    user = new_user(sc, "disabled")
    device = pk.new_device()
    add_passkey(sc, user, device)
    ok(call(sc, "PATCH", f"/auth/admin/users/{user.id}", {"status": "disabled"}, admin["accessToken"]))
    refused(login_finish(sc, login_assertion(sc, device)), 403, "ACCOUNT_DISABLED")
    ok(call(sc, "PATCH", f"/auth/admin/users/{user.id}", {"status": "active"}, admin["accessToken"]))
    assert_tokens(passkey_login(sc, device), user.id)


# --------------------------------------------------------------------------
# MFA, route policy, revocation
# --------------------------------------------------------------------------


def test_a_passkey_as_the_mfa_step(sc):
    user = new_user(sc, "mfa")
    enable_totp(sc, user)

    # no passkey yet: TOTP only, and no passkey step to begin
    challenge = ok(call(sc, "POST", "/auth/login", {"email": user.email, "password": user.password}))
    assert challenge["mfaRequired"] is True and challenge["methods"] == ["totp"], challenge
    refused(call(sc, "POST", "/auth/passkeys/mfa/begin", {"mfaToken": challenge["mfaToken"]}), 400, "INVALID_REQUEST")

    device = pk.new_device()
    add_passkey(sc, user, device)
    challenge = ok(call(sc, "POST", "/auth/login", {"email": user.email, "password": user.password}))
    assert challenge["mfaRequired"] is True and challenge["mfaToken"].startswith("mfa_"), challenge
    assert "passkey" in challenge["methods"] and "totp" in challenge["methods"], challenge
    mfa_token = challenge["mfaToken"]

    refused(call(sc, "POST", "/auth/passkeys/mfa/begin", {"mfaToken": "mfa_" + "A" * 43}), 401, "INVALID_TOKEN")
    begin = ok(call(sc, "POST", "/auth/passkeys/mfa/begin", {"mfaToken": mfa_token}))
    assert [a["id"] for a in begin["publicKey"]["allowCredentials"]] == [pk.credential_id(device)], begin
    assert begin["publicKey"]["rpId"] == RP_ID and begin["expiresIn"] == 120, begin

    finish = {"mfaToken": mfa_token, "credential": asserted(begin, device, origin(sc))}
    tokens = assert_tokens(ok(call(sc, "POST", "/auth/passkeys/mfa/finish", finish)), user.id)
    amr = claims(sc, tokens["accessToken"])["amr"]
    assert {"pwd", "hwk", "pop", "mfa"} <= set(amr), amr

    # the mfaToken is single use
    refused(call(sc, "POST", "/auth/passkeys/mfa/finish", finish), 401, "INVALID_TOKEN")
    refused(call(sc, "POST", "/auth/passkeys/mfa/begin", {"mfaToken": mfa_token}), 401, "INVALID_TOKEN")

    # a session begun with a password and a passkey passes a require_passkey
    # route, and the upstream learns MFA was done
    seen = ok(call(sc, "GET", "/pk-only/mfa", token=tokens["accessToken"]))
    assert seen["headers"]["x-auth-user-id"] == user.id and seen["headers"].get("x-auth-mfa") == "true", seen


def test_a_passkey_without_uv_leaves_the_totp_step_to_a_user_with_mfa(sc):
    user = new_user(sc, "mfa-pk")
    enabled = enable_totp(sc, user)
    device = pk.new_device()
    add_passkey(sc, user, device)
    # soft-webauthn does not set UV: the passkey is one factor, TOTP follows
    challenge = ok(login_finish(sc, login_assertion(sc, device)))
    assert "accessToken" not in challenge, challenge
    assert challenge["mfaRequired"] is True and challenge["mfaToken"].startswith("mfa_"), challenge
    assert challenge["expiresIn"] == 300 and challenge["methods"] == ["totp", "passkey"], challenge
    tokens = ok(call(sc, "POST", "/auth/mfa/verify", {"mfaToken": challenge["mfaToken"], "code": enabled["backupCodes"][0]}))
    assert_tokens(tokens, user.id)


def test_a_route_that_requires_a_passkey(sc):
    user = new_user(sc, "route")
    device = pk.new_device()
    add_passkey(sc, user, device)
    key = sc.api_key(user.token)

    refused(call(sc, "GET", "/pk-only/x"), 401, "UNAUTHENTICATED")
    refused(call(sc, "GET", "/pk-only/x", token=user.token), 401, "PASSKEY_REQUIRED")
    refused(call(sc, "GET", "/pk-only/x", headers={"X-API-Key": key}), 401, "PASSKEY_REQUIRED")
    # the same credentials pass a route without the requirement
    assert ok(call(sc, "GET", "/elsewhere", token=user.token))["headers"]["x-auth-user-id"] == user.id
    assert ok(call(sc, "GET", "/elsewhere", headers={"X-API-Key": key}))["headers"]["x-auth-user-id"] == user.id

    tokens = passkey_login(sc, device)
    seen = ok(call(sc, "GET", "/pk-only/x", token=tokens["accessToken"]))
    assert seen["path"] == "/pk-only/x", seen
    assert seen["headers"]["x-auth-user-id"] == user.id and seen["headers"]["x-auth-method"] == "jwt", seen
    assert "x-auth-mfa" not in seen["headers"], seen  # amr hwk, pop: neither otp nor mfa
    # still a session begun with a passkey after a refresh
    again = ok(call(sc, "POST", "/auth/refresh", {"refreshToken": tokens["refreshToken"]}))
    assert ok(call(sc, "GET", "/pk-only/y", token=again["accessToken"]))["headers"]["x-auth-user-id"] == user.id


def test_logout_revokes_a_passkey_session(sc):
    user = new_user(sc, "logout")
    device = pk.new_device()
    add_passkey(sc, user, device)
    tokens = passkey_login(sc, device)
    ok(call(sc, "GET", "/auth/me", token=tokens["accessToken"]))
    out = ok(call(sc, "POST", "/auth/logout", {"refreshToken": tokens["refreshToken"]}, tokens["accessToken"]))
    assert out["message"] == "Logged out successfully", out
    refused(call(sc, "GET", "/auth/me", token=tokens["accessToken"]), 401, "TOKEN_REVOKED")
    refused(call(sc, "GET", "/pk-only/x", token=tokens["accessToken"]), 401, "TOKEN_REVOKED")
    refused(call(sc, "POST", "/auth/refresh", {"refreshToken": tokens["refreshToken"]}), 401, *REFRESH_DEAD)
    # the passkey itself stays: a new login is a new session
    assert_tokens(passkey_login(sc, device), user.id)


# --------------------------------------------------------------------------
# passkeys off, metrics
# --------------------------------------------------------------------------


def test_passkeys_off_answer_400_on_every_route(passkeys_off):
    sc = passkeys_off
    user = new_user(sc, "off")
    some = str(uuid.uuid4())
    wrong = []
    for method, path, body, token in (
        ("POST", "/auth/passkeys/login/begin", {}, None),
        ("POST", "/auth/passkeys/login/finish", {"credential": {}}, None),
        ("POST", "/auth/passkeys/mfa/begin", {"mfaToken": "mfa_x"}, None),
        ("POST", "/auth/passkeys/mfa/finish", {"mfaToken": "mfa_x", "credential": {}}, None),
        ("POST", "/auth/passkeys/register/begin", {}, user.token),
        ("POST", "/auth/passkeys/register/finish", {"credential": {}}, user.token),
        ("GET", "/auth/passkeys", None, user.token),
        ("PATCH", f"/auth/passkeys/{some}", {"name": "x"}, user.token),
        ("DELETE", f"/auth/passkeys/{some}", {"password": user.password}, user.token),
    ):
        st, answer = call(sc, method, path, body, token)
        if st != 400 or not isinstance(answer, dict) or answer.get("error", {}).get("code") != "INVALID_REQUEST":
            wrong.append(f"{method} {path}: {st} {answer}")
    assert not wrong, "expected 400 INVALID_REQUEST on every route:\n" + "\n".join(wrong)


def test_ceremonies_are_counted(sc):
    before = {k: ceremonies(sc, *k) for k in (("register", "success"), ("login", "success"), ("login", "rejected"))}
    user = new_user(sc, "metrics")
    device = pk.new_device()
    add_passkey(sc, user, device)
    passkey_login(sc, device)
    refused(login_finish(sc, login_assertion(sc, device, at="http://evil.example")), 400, "PASSKEY_REJECTED")
    after = {k: ceremonies(sc, *k) for k in before}
    assert after[("login", "success")] > 0 and after[("login", "success")] >= before[("login", "success")] + 1, after
    assert after[("register", "success")] >= before[("register", "success")] + 1, after
    assert after[("login", "rejected")] >= before[("login", "rejected")] + 1, after
