"""The invariant of the differential suite, checked for every (payload,
credential, upstream):

either the sidecar refused the request -- a 4xx/5xx answer with SPEC §5's
JSON error shape and an X-Request-Id header equal to error.requestId (a
dropped connection or a non-JSON error is a failure) -- and nothing of it
reached the upstream;

or the upstream served it, and
  (a) the area the upstream resolved by its own rules needs no more than the
      credential holds (public: anyone; member-area: member or admin;
      admin-area: admin; anything else: any credential),
  (b) the identity the upstream sees, under every spelling its framework
      folds together, is exactly the sidecar's for that credential (none: no
      X-Auth-* at all), and the credential it can read (Authorization) is
      the same principal's; no API key reaches it,
  (c) forwarding headers are the sidecar's own: X-Forwarded-For is the peer
      (127.0.0.1), X-Forwarded-Proto is http, X-Forwarded-Host (if sent) is
      the request's host, and no other X-Forwarded-* or Forwarded from the
      client reaches it; exactly one Host and one X-Request-Id.

A request that reached the upstream server but that the server refused
itself (its own 400 page) is neither: it is counted as "upstream refused".

Separately, `spec` compares the sidecar's answer with what SPEC §14/§15 asks
for (oracle.py): 400 / 401 / 403 / forwarded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import oracle
from corpus import Payload
from harness import Answer, Credentials, WireRequest

PEER = "127.0.0.1"
OWN_FORWARDING = {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}


def norm(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


@dataclass
class Baseline:
    """What an upstream sees of one credential on a clean request."""

    identity: dict  # app view: {x-auth-name: [values]}
    wire_identity: list  # sorted (name, value) X-Auth-* lines on the wire


@dataclass
class Verdict:
    upstream: str
    payload: str
    group: str
    cred: str
    outcome: str  # refused | served | upstream-refused | dropped
    status: int | None
    violations: list[str] = field(default_factory=list)
    spec: str | None = None  # why the sidecar's answer is not SPEC's
    differs: bool = False  # the upstream resolved another area than the sidecar's reading as sent
    unforeseen: bool = False  # ... and one that none of SPEC §15's four readings selects
    upstream_area: str | None = None
    sidecar_area: str | None = None
    raw: bytes = b""
    answer: str = ""
    wire_target: str | None = None


def identity_view(headers: dict) -> dict:
    return {k: list(v) for k, v in headers.items() if k.startswith("x-auth-")}


def wire_identity(wire: WireRequest) -> list:
    return sorted((norm(n), v) for n, v in wire.headers() if norm(n).startswith("x-auth-"))


def is_sidecar_error(a: Answer) -> str | None:
    """None when the answer is a SPEC §5 error, else what is wrong with it."""
    if a.status is None or a.status < 400:
        return f"status {a.status}"
    body = a.json()
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return "body is not {\"error\": {...}}"
    err = body["error"]
    for k in ("code", "message", "requestId"):
        if not isinstance(err.get(k), str) or not err.get(k):
            return f"error.{k} missing"
    rid = a.header_all("x-request-id")
    if rid != [err["requestId"]]:
        return f"X-Request-Id {rid} != error.requestId {err['requestId']!r}"
    return None


def request_hosts(p: Payload, values: dict) -> set[str]:
    hosts = {values["HOST"]} if p.hosts is None else {h.replace("{HOST}", values["HOST"]) for h in p.hosts}
    authority, _ = oracle.split_target(p.target.replace("{HOST}", values["HOST"]))
    if authority:
        hosts.add(authority)
    return hosts


def check(
    upstream: str,
    p: Payload,
    cred: str,
    raw: bytes,
    answer: Answer,
    wire: list[WireRequest],
    apps: list[dict],
    baselines: dict[str, Baseline],
    creds: Credentials,
    values: dict,
) -> Verdict:
    v = Verdict(upstream, p.id, p.group, cred, "?", answer.status, raw=raw, answer=answer.describe())
    served = [r for r in apps if r.get("served", True)]
    if wire:
        v.wire_target = wire[0].target

    # ---- what happened
    if answer.dropped:
        v.outcome = "dropped"
        v.violations.append(f"no answer: {answer.dropped}")
    elif served:
        v.outcome = "served"
    elif wire:
        shape = is_sidecar_error(answer)
        if shape is None and answer.status not in (502, 504):
            v.outcome = "refused"
            v.violations.append(f"the sidecar answered {answer.status} after forwarding the request: the upstream saw {wire[0].head[:200]!r}")
        else:
            v.outcome = "upstream-refused"
    else:
        v.outcome = "refused"
        shape = is_sidecar_error(answer)
        if shape is not None:
            v.violations.append(f"refusal without SPEC's error shape ({shape}): {answer.describe()}")

    # ---- SPEC §14/§15: what the sidecar should have answered
    exp = p.expected(cred)
    if exp is not None:
        actual = 200 if (wire or served) else (answer.status if not answer.dropped else "dropped")
        ok = actual in exp if isinstance(exp, (set, frozenset)) else actual == exp
        if not ok:
            want = "/".join("forwarded" if e == 200 else str(e) for e in sorted(exp)) if isinstance(exp, (set, frozenset)) else ("forwarded" if exp == 200 else str(exp))
            got = "forwarded" if actual == 200 else str(actual)
            v.spec = f"SPEC: {want}, sidecar: {got}"

    if v.outcome != "served":
        return v

    # ---- served: (a) area, (b) identity and credential, (c) forwarding
    rec = served[0]
    if len(served) > 1:
        v.violations.append(f"the upstream served the request {len(served)} times")
    headers = rec.get("headers", {})
    area = rec.get("area") or "other"
    v.upstream_area = area
    if wire:
        v.sidecar_area = oracle.sidecar_area(wire[0].target)
        v.differs = v.sidecar_area is not None and v.sidecar_area != area
        enforced = oracle.readings_areas(wire[0].target)
        v.unforeseen = enforced is not None and area not in enforced

    allowed = set(p.principals(cred)) or {"none"}
    if p.may_drop_credential or p.group == "credential":
        # several credentials (one of them garbage) may leave it anonymous:
        # less than it holds, still judged by the area below
        allowed.add("none")
    seen = identity_view(headers)
    # a member may be authenticated by token or by API key (another X-Auth-Method)
    variants = {"none": ["none"], "member": ["member", "member-key"], "admin": ["admin"]}
    matched = [c for c in ("none", "member", "admin") if c in allowed and any(baselines[b].identity == seen for b in variants[c])]
    if not matched:
        v.violations.append(f"identity seen by {upstream} is not the sidecar's for {'/'.join(sorted(allowed))}: {seen}")
        # judge the area by the strongest credential actually held
        who = "admin" if "admin" in allowed else ("member" if "member" in allowed else "none")
    else:
        who = matched[0]
    if who not in oracle.ALLOWED.get(area, oracle.ALLOWED["other"]):
        v.violations.append(f"{upstream} served area {area!r} (path {rec.get('path')!r}) to credential {who!r}")

    readable = " ".join(headers.get("authorization", []))
    owners = creds.principal_of(readable)
    if owners - {who}:
        v.violations.append(f"{upstream} reads the credential of {sorted(owners)} (Authorization {readable[:40]!r}…) while the identity is {who!r}")
    if headers.get("x-api-key") or creds.member_key in readable:
        v.violations.append("an API key reached the upstream")
    for name, vals in headers.items():
        if name in ("x-forwarded-for",):
            if vals != [PEER]:
                v.violations.append(f"X-Forwarded-For seen by {upstream}: {vals} (want [{PEER!r}])")
        elif name == "x-forwarded-proto":
            if vals != ["http"]:
                v.violations.append(f"X-Forwarded-Proto seen by {upstream}: {vals}")
        elif name == "x-forwarded-host":
            if len(vals) != 1 or vals[0] not in request_hosts(p, values):
                v.violations.append(f"X-Forwarded-Host seen by {upstream}: {vals}")
        elif name.startswith("x-forwarded-") or name == "forwarded":
            v.violations.append(f"client's {name}: {vals} reached {upstream}")
    if "x-forwarded-for" not in headers:
        v.violations.append(f"{upstream} got no X-Forwarded-For")
    if len(headers.get("host", [])) != 1:
        v.violations.append(f"Host seen by {upstream}: {headers.get('host')}")

    # ---- the wire: what reached the upstream's socket, whatever it exposes
    if wire:
        w = wire[0]
        whs = [(norm(n), val) for n, val in w.headers()]
        wid = wire_identity(w)
        if not any(baselines[b].wire_identity == wid for c in (matched or allowed) for b in variants[c]):
            v.violations.append(f"identity headers on the wire are not the sidecar's: {wid}")
        names = [n for n, _ in whs]
        for n, val in whs:
            if (n.startswith("x-forwarded-") and n not in OWN_FORWARDING) or n == "forwarded":
                v.violations.append(f"client's {n}: {val!r} on the wire")
        xff = [val for n, val in whs if n == "x-forwarded-for"]
        if xff != [PEER]:
            v.violations.append(f"X-Forwarded-For on the wire: {xff}")
        xfh = [val for n, val in whs if n == "x-forwarded-host"]
        if len(xfh) > 1 or (xfh and xfh[0] not in request_hosts(p, values)):
            v.violations.append(f"X-Forwarded-Host on the wire: {xfh}")
        if names.count("host") != 1:
            v.violations.append(f"{names.count('host')} Host headers on the wire")
        if names.count("x-request-id") != 1:
            v.violations.append(f"{names.count('x-request-id')} X-Request-Id headers on the wire")
        if len(wire) > 1:
            v.violations.append(f"the request reached the upstream {len(wire)} times")
    return v
