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
"""

from __future__ import annotations

import base64
import copy

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
