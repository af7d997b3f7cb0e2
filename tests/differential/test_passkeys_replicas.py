"""Passkeys (WebAuthn, `/auth/passkeys/...`) across replicas: two sidecars
sharing one PostgreSQL database, driven by the same software authenticator
as test_passkeys.py (PyPI's soft-webauthn, through passkeys.py). A ceremony's
challenge is kept in the store, so either replica may finish what the other
began, and only once.

The database is a fresh one per module on the PostgreSQL server
`PORTCULLIS_TEST_POSTGRES_URL` names (an admin URL, default
`postgres://postgres@127.0.0.1:5432/postgres`), made and dropped with `psql`;
without a reachable server (or without `psql`) the module fails when CI is
set and is skipped loudly otherwise (the suite's `counterpart_missing`). The
signing keys need nothing: generated at the first start and kept in the
store, both replicas sign and verify with the same ones.

Both replicas run with `rp_id = "localhost"` and BOTH origins,
`http://localhost:<port of A>` and `http://localhost:<port of B>`: the device
is told the origin of the replica that began the ceremony, and the other
replica must accept it when it finishes the ceremony. (A real deployment has
one origin, the load balancer's, in front of every replica; here each
replica is reached on its own port, hence two origins.)

Covered: registration begun on A, finished on B (201, the passkey listed on
both); a login begun on B, finished on A (200, a token whose `amr` says
`hwk` and that B's JWKS verifies, accepted by `/auth/me` on A and on B); a
challenge consumed on one replica refused on the other (the identical
answer replayed, another credential's answer to the same challenge, at
registration and at login, and two replicas finishing one challenge at the
same moment: exactly one wins); logout on A revoking the passkey session on
B (its cached access token refused with TOKEN_REVOKED within a deadline,
revocations travel by LISTEN/NOTIFY; the refresh token dead on B).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import pytest

import passkeys as pk
from harness import Sidecar, free_port, toml_str
from passkeys import (
    add_passkey, assert_tokens, asserted, call, claims, created, login_begin, login_finish,
    new_user, ok, origin, passkey_login, refused, register_begin, register_finish,
)

RP_ID = "localhost"
ADMIN_URL_DEFAULT = "postgres://postgres@127.0.0.1:5432/postgres"
REFRESH_DEAD = ("INVALID_TOKEN", "TOKEN_REVOKED", "REFRESH_TOKEN_REUSED")
# how long B may take to learn of a logout on A (the Rust replicas test
# expects a second; the margin is for a loaded CI machine)
REVOCATION_DEADLINE = 5.0


# --------------------------------------------------------------------------
# PostgreSQL: one fresh database per module, through psql
# --------------------------------------------------------------------------


def _admin_url() -> str:
    return os.environ.get("PORTCULLIS_TEST_POSTGRES_URL") or ADMIN_URL_DEFAULT


def _psql(psql: str, url: str, sql: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PGCONNECT_TIMEOUT="3")
    return subprocess.run(
        [psql, "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def _database_url(admin_url: str, name: str) -> str:
    """The admin URL with its database replaced by `name` (query kept)."""
    parts = urlsplit(admin_url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture(scope="module")
def pg_url(counterpart_missing):
    admin = _admin_url()
    psql = shutil.which("psql")
    if psql is None:
        counterpart_missing(f"PostgreSQL: psql not found (apt-get install postgresql-client), needed for {admin}")
    try:
        probe = _psql(psql, admin, "SELECT 1")
    except subprocess.TimeoutExpired:
        counterpart_missing(f"PostgreSQL at {admin}: no answer within 30 s")
    if probe.returncode != 0 or probe.stdout.strip() != "1":
        counterpart_missing(f"PostgreSQL at {admin}: {(probe.stderr or probe.stdout).strip()}")

    name = f"portcullis_diff_passkeys_{os.getpid()}_{os.urandom(6).hex()}"
    made = _psql(psql, admin, f"CREATE DATABASE {name}")
    assert made.returncode == 0, f"CREATE DATABASE {name}: {made.stderr.strip()}"
    try:
        yield _database_url(admin, name)
    finally:
        dropped = _psql(psql, admin, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        assert dropped.returncode == 0, f"DROP DATABASE {name}: {dropped.stderr.strip()}"


# --------------------------------------------------------------------------
# two replicas
# --------------------------------------------------------------------------


@dataclass
class Replicas:
    a: Sidecar
    b: Sidecar


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, require_binary, counterpart_missing, pg_url):
    pk.require(counterpart_missing)
    # no route of this module is proxied: the upstream is a port nobody listens on
    upstream = f"127.0.0.1:{free_port()}"
    work = tmp_path_factory.mktemp("passkeys-replicas")
    a = Sidecar(work / "a", upstream, name="portcullis-passkeys-replica-a")
    b = Sidecar(work / "b", upstream, name="portcullis-passkeys-replica-b")
    # A real deployment lists one origin, the load balancer's, in front of
    # every replica. Here the device is told the origin of the replica that
    # began the ceremony (each is reached on its own port), so both replicas
    # accept both origins.
    origins = ", ".join(json.dumps(origin(sc)) for sc in (a, b))
    for sc in (a, b):
        text = sc.config.read_text()
        sqlite = f"url = {toml_str('sqlite://' + str(sc.workdir / 'portcullis.db'))}"
        assert text.count(sqlite) == 1, text
        sc.config.write_text(
            text.replace(sqlite, f"url = {toml_str(pg_url)}")
            + f"""
[passkeys]
rp_id = {json.dumps(RP_ID)}
origins = [{origins}]
challenge_ttl_seconds = 120
"""
        )
    started = []
    try:
        # one after the other: A runs the migrations and makes the signing key
        for sc in (a, b):
            sc.start()
            started.append(sc)
        yield Replicas(a, b)
    finally:
        for sc in reversed(started):
            sc.stop()


# --------------------------------------------------------------------------
# users and ceremonies
# --------------------------------------------------------------------------


def passkey_ids(sc: Sidecar, token: str) -> list[str]:
    return [p["id"] for p in ok(call(sc, "GET", "/auth/passkeys", token=token))["passkeys"]]


# --------------------------------------------------------------------------
# ceremonies across replicas
# --------------------------------------------------------------------------


def test_register_begun_on_a_finishes_on_b(replicas):
    a, b = replicas.a, replicas.b
    user = new_user(a, "register")
    device = pk.new_device()

    begin = ok(register_begin(a, user.token))
    assert begin["publicKey"]["rp"]["id"] == RP_ID, begin
    # the device is on the page A served: A's origin
    passkey = ok(register_finish(b, user.token, created(a, user.token, device, at=origin(a), begin=begin)), 201)
    assert passkey["name"] == "Passkey", passkey
    uuid.UUID(passkey["id"])
    assert passkey_ids(a, user.token) == [passkey["id"]]
    assert passkey_ids(b, user.token) == [passkey["id"]]

    # a registration begun on B excludes the passkey, finished on A it is the second
    again = ok(register_begin(b, user.token))
    assert [c["id"] for c in again["publicKey"]["excludeCredentials"]] == [pk.credential_id(device)], again
    second = ok(register_finish(a, user.token, created(b, user.token, pk.new_device(), at=origin(b), begin=again)), 201)
    assert passkey_ids(b, user.token) == [passkey["id"], second["id"]]


def test_login_begun_on_b_finishes_on_a_and_the_token_works_on_both(replicas):
    a, b = replicas.a, replicas.b
    user = new_user(a, "login")
    device = pk.new_device()
    add_passkey(a, user, device)

    # discoverable (no email) ...
    begin = ok(login_begin(b))
    assert begin["publicKey"]["rpId"] == RP_ID, begin
    tokens = assert_tokens(ok(login_finish(a, asserted(begin, device, origin(b)))), user.id)
    for sc in (a, b, a, b):
        me = ok(call(sc, "GET", "/auth/me", token=tokens["accessToken"]))
        assert me["id"] == user.id and me["email"] == user.email, me
    # one signing key in the store: B's JWKS verifies what A signed
    for sc in (a, b):
        c = claims(sc, tokens["accessToken"])
        assert c["sub"] == user.id and {"hwk", "pop"} <= set(c["amr"]), c

    # ... and with an email (allowCredentials read from the store by B)
    begin = ok(login_begin(b, user.email))
    assert [x["id"] for x in begin["publicKey"]["allowCredentials"]] == [pk.credential_id(device)], begin
    tokens = assert_tokens(ok(login_finish(a, asserted(begin, device, origin(b)))), user.id)
    ok(call(b, "GET", "/auth/me", token=tokens["accessToken"]))
    ok(call(a, "GET", "/auth/me", token=tokens["accessToken"]))


def test_a_login_challenge_finished_on_a_cannot_be_replayed_on_b(replicas):
    a, b = replicas.a, replicas.b
    user, other = new_user(a, "replay"), new_user(b, "replay-other")
    device, others = pk.new_device(), pk.new_device()
    add_passkey(a, user, device)
    add_passkey(b, other, others)

    begin = ok(login_begin(a))
    assertion = asserted(begin, device, origin(a))
    # a second answer to the same (discoverable) challenge, from another
    # user's device: refused for the challenge alone, not for a counter
    foreign = asserted(begin, others, origin(a))
    assert_tokens(ok(login_finish(a, assertion)), user.id)
    refused(login_finish(b, assertion), 400, "PASSKEY_REJECTED")
    refused(login_finish(b, foreign), 400, "PASSKEY_REJECTED")
    refused(login_finish(a, foreign), 400, "PASSKEY_REJECTED")
    # the other device logs in with a challenge of its own, on either replica
    assert_tokens(passkey_login(b, others), other.id)
    assert_tokens(passkey_login(a, others), other.id)


def test_a_registration_challenge_finished_on_a_cannot_be_replayed_on_b(replicas):
    a, b = replicas.a, replicas.b
    user = new_user(a, "replay-reg")
    begin = ok(register_begin(a, user.token))
    first = created(a, user.token, pk.new_device(), at=origin(a), begin=begin)
    # another authenticator answering the same challenge: a credential never
    # registered, refused for the challenge alone
    second = created(a, user.token, pk.new_device(), at=origin(a), begin=begin)
    kept = ok(register_finish(a, user.token, first), 201)
    refused(register_finish(b, user.token, first), 400, "PASSKEY_REJECTED")
    refused(register_finish(b, user.token, second), 400, "PASSKEY_REJECTED")
    assert passkey_ids(a, user.token) == [kept["id"]]
    assert passkey_ids(b, user.token) == [kept["id"]]


def test_two_replicas_finishing_one_challenge_at_once_only_one_wins(replicas):
    a, b = replicas.a, replicas.b
    rounds = 5
    users = [new_user(a, "race") for _ in range(2)]
    devices = [pk.new_device() for _ in users]
    for user, device in zip(users, devices):
        add_passkey(a, user, device)

    for n in range(rounds):
        begin = ok(login_begin(a if n % 2 else b))
        # the two users' devices answer the one discoverable challenge
        answers = [asserted(begin, d, origin(a if n % 2 else b)) for d in devices]
        results: list = [None, None]
        go = threading.Barrier(2)

        def finish(i: int, sc: Sidecar):
            go.wait()
            results[i] = login_finish(sc, answers[i])

        threads = [threading.Thread(target=finish, args=(i, sc)) for i, sc in enumerate((a, b))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        statuses = sorted(st for st, _ in results)
        assert statuses == [200, 400], f"round {n}: both replicas finished one challenge, expected one 200 and one 400: {results}"
        [(_, lost)] = [r for r in results if r[0] == 400]
        assert lost.get("error", {}).get("code") == "PASSKEY_REJECTED", results
        [(_, won)] = [r for r in results if r[0] == 200]
        assert won["user"]["id"] in {u.id for u in users}, won


# --------------------------------------------------------------------------
# revocation across replicas
# --------------------------------------------------------------------------


def test_logout_on_a_revokes_the_passkey_session_on_b(replicas):
    a, b = replicas.a, replicas.b
    user = new_user(b, "logout")
    device = pk.new_device()
    add_passkey(b, user, device)
    tokens = assert_tokens(passkey_login(b, device), user.id)
    access = tokens["accessToken"]
    # B has seen (and may have cached) the token
    for sc in (b, b, a):
        ok(call(sc, "GET", "/auth/me", token=access))

    out = ok(call(a, "POST", "/auth/logout", {"refreshToken": tokens["refreshToken"]}, access))
    assert out["message"] == "Logged out successfully", out
    refused(call(a, "GET", "/auth/me", token=access), 401, "TOKEN_REVOKED")

    # revocations reach the other replica by LISTEN/NOTIFY: B refuses the
    # token once it heard, within the deadline
    start = time.monotonic()
    last = None
    while True:
        last = call(b, "GET", "/auth/me", token=access)
        if last[0] == 401:
            break
        assert last[0] == 200, f"B answered /auth/me with {last}"
        assert time.monotonic() - start < REVOCATION_DEADLINE, (
            f"B still accepts a passkey session logged out on A after {REVOCATION_DEADLINE} s: {last}"
        )
        time.sleep(0.02)
    refused(last, 401, "TOKEN_REVOKED")
    refused(call(b, "GET", "/auth/me", token=access), 401, "TOKEN_REVOKED")
    refused(call(b, "POST", "/auth/refresh", {"refreshToken": tokens["refreshToken"]}), 401, *REFRESH_DEAD)

    # the passkey itself stays: a new login on B is a new session, good on A
    again = assert_tokens(passkey_login(b, device), user.id)
    ok(call(a, "GET", "/auth/me", token=again["accessToken"]))
