"""What SPEC §14 and §15 say the sidecar does with a request: a small
reference reading of the path and of the policy, used to tell what the
sidecar should answer (400 / 401 / 403 / forwarded) and to compare the area
each upstream resolved with the area the sidecar enforced.

Only rules SPEC states are modelled; where SPEC is silent the oracle answers
None ("no expectation") and only the invariant applies.
"""

from __future__ import annotations

import re

UNRESERVED = set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
AREAS = ("public", "admin-area", "member-area")
_PCT = re.compile(r"%([0-9A-Fa-f]{2})")


class Bad(Exception):
    """The sidecar must answer 400."""


class Unsure(Exception):
    """SPEC does not say."""


def split_target(target: str) -> tuple[str | None, str]:
    """(authority or None, path) of a request target; query dropped."""
    authority = None
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", target):
        rest = target.split("://", 1)[1]
        slash = rest.find("/")
        if slash < 0:
            authority, path = rest, "/"
        else:
            authority, path = rest[:slash], rest[slash:]
    else:
        path = target
    path = path.split("?", 1)[0]
    return authority, path


def normalise(path: str) -> str:
    """SPEC §14 + §15 path normalisation; raises Bad for a 400."""
    if not path.startswith("/"):
        raise Unsure(path)
    raw = path.encode("latin-1")
    if any(b >= 0x80 or b < 0x21 for b in raw):
        raise Unsure("raw byte outside visible ASCII")
    if b"\\" in raw:
        raise Bad("backslash")
    if re.search(rb"%(?![0-9A-Fa-f]{2})", raw):
        raise Unsure("stray %")
    # the full decoding must be valid UTF-8 and hold no '/', '\' or NUL
    full = _PCT.sub(lambda m: chr(int(m.group(1), 16)), path).encode("latin-1")
    for m in _PCT.finditer(path):
        b = int(m.group(1), 16)
        if b in (0x2F, 0x5C, 0x00):
            raise Bad("encoded / \\ or NUL")
    try:
        full.decode("utf-8")
    except UnicodeDecodeError:
        raise Bad("percent-decoding is not UTF-8")
    # unreserved characters decoded
    s = _PCT.sub(lambda m: chr(int(m.group(1), 16)) if int(m.group(1), 16) in UNRESERVED else "%" + m.group(1).upper(), path)
    segs = s.split("/")[1:]
    for seg in segs:
        if ";" in seg and seg.split(";", 1)[0] in ("", ".", ".."):
            raise Bad("empty, . or .. before ;")
    out: list[str] = []
    trailing = False
    for i, seg in enumerate(segs):
        last = i == len(segs) - 1
        if seg == "" or seg == ".":
            trailing = last
            continue
        if seg == "..":
            if not out:
                raise Bad("escapes the root")
            out.pop()
            trailing = last
            continue
        out.append(seg)
        trailing = False
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def strip_params(path: str) -> str:
    return "/".join(seg.split(";", 1)[0] for seg in path.split("/"))


def route_of(path: str) -> str:
    """The [[routes]] entry a reading selects (globs /area/**, case-sensitive)."""
    for area in AREAS:
        prefix = f"/{area}/"
        if path.startswith(prefix):
            if path == prefix:
                raise Unsure("does /x/** match /x/ ?")
            return area
    return "other"


def readings(path: str) -> list[str]:
    stripped = strip_params(path)
    return [path, stripped, path.lower(), stripped.lower()]


def areas_enforced(path: str) -> set[str]:
    return {route_of(r) for r in readings(path)}


ALLOWED = {
    # what each area asks of the credential (SPEC §7 + the suite's routes)
    "public": {"none", "member", "admin"},
    "member-area": {"member", "admin"},  # permissions = ["profile:read"]
    "admin-area": {"admin"},  # roles = ["admin"]
    "other": {"member", "admin"},  # default_policy = authenticated
}


def decision(areas: set[str], cred: str) -> int:
    """200 (forwarded), 401 or 403 for a credential under these areas."""
    if all(a == "public" for a in areas):
        return 200
    if cred not in ("member", "admin"):
        return 401
    if all(cred in ALLOWED[a] for a in areas):
        return 200
    return 403


def expected_for_path(target: str, cred: str) -> int | None:
    """The sidecar's answer to a clean request for `target` with `cred`."""
    try:
        _, path = split_target(target)
        norm = normalise(path)
        return decision(areas_enforced(norm), cred)
    except Bad:
        return 400
    except Unsure:
        return None


def sidecar_area(forwarded_target: str) -> str | None:
    """The route the sidecar selected for the path it forwarded, as sent (the
    reading that is also its metrics label)."""
    try:
        _, path = split_target(forwarded_target)
        return route_of(path)
    except Unsure:
        return None


def readings_areas(forwarded_target: str) -> set[str] | None:
    """The areas SPEC §15's four readings of the forwarded path select."""
    try:
        _, path = split_target(forwarded_target)
        return {route_of(r) for r in readings(path)}
    except Unsure:
        return None
