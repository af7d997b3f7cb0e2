"""A software authenticator for the passkey tests: PyPI's soft-webauthn
(SoftWebauthnDevice: one ES256 credential per device, "none" attestation,
flags UP (+AT at creation), never UV, a `sign_count` it raises by one before
each assertion), and the conversions between the W3C JSON forms the sidecar
speaks (base64url without padding) and the bytes-based dicts the device
takes and gives.

    device = new_device()
    options = creation_options_from_json(begin["publicKey"])
    credential = registration_response_json(device.create(options, origin))
    ...
    options = request_options_from_json(begin["publicKey"])
    credential = authentication_response_json(device.get(options, origin))

require() turns a missing soft-webauthn (or fido2) into the suite's
counterpart_missing: a failure when CI is set, a loud skip otherwise.

The client side the passkey test modules share (test_passkeys.py,
test_passkeys_replicas.py, test_passkeys_browser.py): users registered with
a password (new_user), calls to the sidecar's API answering `(status, body)`
(call, register_begin, register_finish, login_begin, login_finish), the
checks of an answer (ok, refused, assert_tokens), the device's answers to a
ceremony (created, asserted, login_assertion), whole ceremonies
(add_passkey, passkey_login), the access token's verified claims and the
ceremony metrics.

    user = new_user(sc, "tag")
    add_passkey(sc, user, device)
    tokens = assert_tokens(passkey_login(sc, device), user.id)
"""

from __future__ import annotations

import base64
import copy
import os
from dataclasses import dataclass

import jwt

from harness import Sidecar, http_json

try:
    from soft_webauthn import SoftWebauthnDevice
except ImportError as e:  # reported by require()
    SoftWebauthnDevice = None
    _IMPORT_ERROR: Exception | None = e
else:
    _IMPORT_ERROR = None


def require(counterpart_missing) -> None:
    """Fails (CI) or skips through the suite's `counterpart_missing` when
    soft-webauthn cannot be imported."""
    if SoftWebauthnDevice is None:
        counterpart_missing(
            f"soft-webauthn: not importable ({_IMPORT_ERROR}); "
            "pip install -r tests/differential/requirements.txt into target/diff-venv"
        )


def new_device():
    """A fresh authenticator holding no credential yet."""
    if SoftWebauthnDevice is None:
        raise RuntimeError(f"soft-webauthn is not importable: {_IMPORT_ERROR}")
    return SoftWebauthnDevice()


def b64url(data: bytes) -> str:
    """base64url without padding (the W3C JSON forms)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Reads base64url with or without padding."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _descriptors(items) -> list[dict]:
    out = []
    for d in items or []:
        d = dict(d)
        d["id"] = b64url_decode(d["id"])
        out.append(d)
    return out


def creation_options_from_json(public_key: dict) -> dict:
    """PublicKeyCredentialCreationOptionsJSON (the `publicKey` of
    register/begin) -> what SoftWebauthnDevice.create takes:
    `{"publicKey": {...}}` with challenge, user.id and the
    excludeCredentials ids as bytes."""
    pk = copy.deepcopy(public_key)
    pk["challenge"] = b64url_decode(pk["challenge"])
    pk["user"]["id"] = b64url_decode(pk["user"]["id"])
    # the device compares each entry with {'alg': -7, 'type': 'public-key'}
    pk["pubKeyCredParams"] = [{"alg": p["alg"], "type": p["type"]} for p in pk.get("pubKeyCredParams", [])]
    if "excludeCredentials" in pk:
        pk["excludeCredentials"] = _descriptors(pk["excludeCredentials"])
    return {"publicKey": pk}


def request_options_from_json(public_key: dict) -> dict:
    """PublicKeyCredentialRequestOptionsJSON (the `publicKey` of
    login/begin and mfa/begin) -> what SoftWebauthnDevice.get takes."""
    pk = copy.deepcopy(public_key)
    pk["challenge"] = b64url_decode(pk["challenge"])
    if "allowCredentials" in pk:
        pk["allowCredentials"] = _descriptors(pk["allowCredentials"])
    return {"publicKey": pk}


def registration_response_json(cred: dict, transports: list[str] | None = None, attachment: str | None = None) -> dict:
    """SoftWebauthnDevice.create's answer -> RegistrationResponseJSON (what
    PublicKeyCredential.toJSON() gives in a browser)."""
    response = {
        "clientDataJSON": b64url(cred["response"]["clientDataJSON"]),
        "attestationObject": b64url(cred["response"]["attestationObject"]),
    }
    if transports is not None:
        response["transports"] = list(transports)
    out = {
        "id": b64url(cred["rawId"]),
        "rawId": b64url(cred["rawId"]),
        "type": cred["type"],
        "response": response,
        "clientExtensionResults": {},
    }
    if attachment is not None:
        out["authenticatorAttachment"] = attachment
    return out


def authentication_response_json(assertion: dict) -> dict:
    """SoftWebauthnDevice.get's answer -> AuthenticationResponseJSON."""
    r = assertion["response"]
    response = {
        "clientDataJSON": b64url(r["clientDataJSON"]),
        "authenticatorData": b64url(r["authenticatorData"]),
        "signature": b64url(r["signature"]),
    }
    if r.get("userHandle") is not None:
        response["userHandle"] = b64url(r["userHandle"])
    return {
        "id": b64url(assertion["rawId"]),
        "rawId": b64url(assertion["rawId"]),
        "type": assertion["type"],
        "response": response,
        "clientExtensionResults": {},
    }


def credential_id(device) -> str:
    """The device's credential id as the sidecar lists it (base64url)."""
    return b64url(device.credential_id)


def for_rp(device, rp_id: str):
    """A copy of `device` that signs for another RP id (its rpIdHash then
    names `rp_id`); the original device is left as it was."""
    other = copy.copy(device)
    other.rp_id = rp_id
    return other


# --------------------------------------------------------------------------
# users and calls
# --------------------------------------------------------------------------


def origin(sc: Sidecar) -> str:
    return f"http://localhost:{sc.proxy_port}"


@dataclass
class User:
    email: str
    password: str
    id: str
    token: str  # access token of a password session
    refresh: str


_SEQ = [0]


def new_user(sc: Sidecar, tag: str) -> User:
    _SEQ[0] += 1
    email = f"{tag}-{os.getpid()}-{_SEQ[0]}@example.com"
    password = "Passkey-" + os.urandom(6).hex() + "!9"
    body = sc.register(email, password)
    return User(email, password, body["user"]["id"], body["accessToken"], body["refreshToken"])


def call(sc: Sidecar, method: str, path: str, body=None, token: str | None = None, headers: dict | None = None):
    hs = dict(headers or {})
    if token:
        hs["Authorization"] = f"Bearer {token}"
    st, parsed, raw, _ = http_json(sc.proxy_port, method, path, body, hs)
    return st, parsed if parsed is not None else raw


def ok(answer, status: int = 200):
    st, body = answer
    assert st == status, f"expected {status}, got {st} {body}"
    return body


def refused(answer, status: int, *codes: str):
    st, body = answer
    code = body.get("error", {}).get("code") if isinstance(body, dict) else None
    assert st == status and code in codes, f"expected {status} {'/'.join(codes)}, got {st} {body}"
    return body


# --------------------------------------------------------------------------
# ceremonies
# --------------------------------------------------------------------------


def register_begin(sc: Sidecar, token: str | None):
    return call(sc, "POST", "/auth/passkeys/register/begin", {}, token)


def register_finish(sc: Sidecar, token: str | None, credential: dict | None, name: str | None = None):
    body = {} if credential is None else {"credential": credential}
    if name is not None:
        body["name"] = name
    return call(sc, "POST", "/auth/passkeys/register/finish", body, token)


def created(sc: Sidecar, token: str, device, at: str | None = None, transports=None, options_hook=None, begin: dict | None = None) -> dict:
    """register/begin, then the device makes the credential: its
    RegistrationResponseJSON (`options_hook` may alter the options first).
    With `begin`, the body of a register/begin already made (perhaps on
    another replica), the device answers that one instead. `at` is the
    origin the device is told, `sc`'s by default."""
    if begin is None:
        begin = ok(register_begin(sc, token))
    options = creation_options_from_json(begin["publicKey"])
    if options_hook:
        options_hook(options["publicKey"])
    return registration_response_json(device.create(options, at or origin(sc)), transports=transports)


def add_passkey(sc: Sidecar, user: User, device, name: str | None = None, transports=None) -> dict:
    return ok(register_finish(sc, user.token, created(sc, user.token, device, transports=transports), name), 201)


def login_begin(sc: Sidecar, email: str | None = None):
    return call(sc, "POST", "/auth/passkeys/login/begin", {} if email is None else {"email": email})


def login_finish(sc: Sidecar, credential: dict):
    return call(sc, "POST", "/auth/passkeys/login/finish", {"credential": credential})


def asserted(begin_body: dict, device, at: str) -> dict:
    """The device's AuthenticationResponseJSON for the options of a begin."""
    return authentication_response_json(device.get(request_options_from_json(begin_body["publicKey"]), at))


def login_assertion(sc: Sidecar, device, email: str | None = None, at: str | None = None) -> dict:
    return asserted(ok(login_begin(sc, email)), device, at or origin(sc))


def passkey_login(sc: Sidecar, device, email: str | None = None) -> dict:
    return ok(login_finish(sc, login_assertion(sc, device, email)))


# --------------------------------------------------------------------------
# tokens and metrics
# --------------------------------------------------------------------------


def claims(sc: Sidecar, token: str) -> dict:
    """The access token's claims, verified against the sidecar's JWKS."""
    jwks = ok(call(sc, "GET", "/.well-known/jwks.json"))
    header = jwt.get_unverified_header(token)
    [key] = [k for k in jwt.PyJWKSet.from_dict(jwks).keys if k.key_id == header["kid"]]
    return jwt.decode(token, key.key, algorithms=[header["alg"]], audience="portcullis", issuer="portcullis")


def assert_tokens(body: dict, user_id: str) -> dict:
    assert body.get("tokenType") == "Bearer", body
    assert body["accessToken"] and body["refreshToken"].startswith("rt_"), body
    assert isinstance(body["expiresIn"], int) and isinstance(body["refreshTokenExpiresIn"], int), body
    assert body["user"]["id"] == user_id, body
    return body


def ceremonies(sc: Sidecar, ceremony: str, outcome: str) -> float:
    _, _, raw, _ = http_json(sc.admin_port, "GET", "/metrics")
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in raw.decode().splitlines()
        if line.startswith("portcullis_passkey_ceremonies_total{")
        and f'ceremony="{ceremony}"' in line
        and f'outcome="{outcome}"' in line
    )
