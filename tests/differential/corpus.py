"""The corpus: path, header and framing payloads, named ones (issue 14) and
generated cross products. Each payload is sent three times (no credential,
a member's token, an admin's token) to every upstream.

Header values may hold placeholders filled in per run: {MEMBER} / {ADMIN}
(access tokens), {KEY} (the member's API key), {MEMBER_ID} / {ADMIN_ID}
(user ids), {HOST} (the sidecar's host:port).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import oracle

CREDS = ("none", "member", "admin")
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "x-tenant-id", "x-otp", "otp")


@dataclass
class Payload:
    id: str
    group: str
    target: str = "/public/x"
    method: str = "GET"
    headers: list[tuple[str, str]] = field(default_factory=list)
    # Host header values; None = one Host with the sidecar's address
    hosts: list[str] | None = None
    body: bytes = b""
    # add Content-Length for the body (off when the payload frames it itself)
    auto_length: bool = True
    version: str = "HTTP/1.1"
    # expectation of the sidecar's answer: "path" = SPEC's reading of the
    # target (plus the duplicate-credential and Host rules), an int or a set of
    # ints (200 = forwarded upstream), a {cred: ...} dict, or None (only the
    # invariant applies)
    expect: object = "path"
    # principals whose credential the payload itself adds
    extra_principals: tuple[str, ...] = ()
    # the sidecar may forward it without the credential (a Connection header
    # nominating Authorization): no identity is then also correct
    may_drop_credential: bool = False
    note: str = ""

    def build(self, cred: str, marker: str, values: dict) -> bytes:
        def fill(s: str) -> str:
            for k, v in values.items():
                s = s.replace("{" + k + "}", v)
            return s

        lines = [f"{self.method} {fill(self.target)} {self.version}"]
        hosts = [values["HOST"]] if self.hosts is None else [fill(h) for h in self.hosts]
        lines += [f"Host: {h}" for h in hosts]
        token = {"member": values["MEMBER"], "admin": values["ADMIN"]}.get(cred)
        if token:
            lines.append(f"Authorization: Bearer {token}")
        for name, value in self.headers:
            if name == "__raw__":
                lines.append(fill(value))
            else:
                lines.append(f"{name}: {fill(value)}")
        lines.append(f"X-Diff-Case: {marker}")
        if self.body and self.auto_length:
            lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("latin-1") + self.body

    def credential_count(self, cred: str) -> dict[str, int]:
        # X-OTP and its alias otp are both "OTP headers" (SPEC §7, §15)
        kind = {"authorization": "authorization", "x-api-key": "x-api-key", "x-tenant-id": "x-tenant-id", "x-otp": "otp", "otp": "otp"}
        counts = {k: 0 for k in set(kind.values())}
        if cred in ("member", "admin"):
            counts["authorization"] += 1
        for name, _ in self.headers:
            n = name.lower()
            if n in kind:
                counts[kind[n]] += 1
        return counts

    def principals(self, cred: str) -> set[str]:
        """Whose credentials the request carries."""
        p = set(self.extra_principals)
        if cred in ("member", "admin"):
            p.add(cred)
        return p

    def expected(self, cred: str):
        """The sidecar's answer SPEC asks for: an int, a set of ints, or None."""
        e = self.expect
        if isinstance(e, dict):
            e = e.get(cred, "path")
        if e is None or isinstance(e, (int, set, frozenset)):
            return e
        # "path"
        if any(n >= 2 for n in self.credential_count(cred).values()):
            return 400
        authority, _ = oracle.split_target(self.target)
        hosts = 1 if self.hosts is None else len(self.hosts)
        if hosts >= 2:
            return 400
        if hosts == 0 and authority is None and self.version == "HTTP/1.1":
            return 400
        if hosts == 0:
            return None
        principals = self.principals(cred)
        if len(principals) > 1:
            return None
        eff = next(iter(principals)) if principals else "none"
        return oracle.expected_for_path(self.target, eff)


def _dedupe(payloads: list[Payload]) -> list[Payload]:
    seen = set()
    out = []
    for p in payloads:
        if p.id in seen:
            continue
        seen.add(p.id)
        out.append(p)
    return out


def named() -> list[Payload]:
    """The cases of issue 14, by name, and plain ones for reference."""
    P = Payload
    out = [
        # reference requests: every area, plainly
        P("plain /public/x", "path", "/public/x"),
        P("plain /member-area/x", "path", "/member-area/x"),
        P("plain /admin-area/x", "path", "/admin-area/x"),
        P("plain /other/x", "path", "/other/x"),
        P("plain /", "path", "/"),
        P("plain /public (no slash)", "path", "/public"),
        P("plain /public/a/b/c?q=1", "path", "/public/a/b/c?q=1"),
        P("query hides a path", "path", "/public/x?/../../admin-area/x"),
        # issue 14: ';' parameters
        P("issue14 /public/..;/admin-area/x", "path", "/public/..;/admin-area/x"),
        P("issue14 /public/.;/x", "path", "/public/.;/x"),
        P("issue14 /admin-area;x/y", "path", "/admin-area;x/y"),
        P("issue14 /a/;x/b", "path", "/a/;x/b"),
        P("issue14 /public/..;x=1/member-area/x", "path", "/public/..;x=1/member-area/x"),
        P("issue14 /public/;/admin-area/x", "path", "/public/;/admin-area/x"),
        # issue 14: case and encoded letters
        P("issue14 /ADMIN-AREA/x", "path", "/ADMIN-AREA/x"),
        P("issue14 /Admin-Area/x", "path", "/Admin-Area/x"),
        P("issue14 /PUBLIC/x", "path", "/PUBLIC/x"),
        P("issue14 /%41dmin-area/x", "path", "/%41dmin-area/x"),
        P("issue14 /%61dmin-area/x", "path", "/%61dmin-area/x"),
        P("issue14 /Member-Area/x", "path", "/Member-Area/x"),
        # dots, encoded dots, double encoding, overlong UTF-8, invalid UTF-8
        P("issue14 /public/../admin-area/x", "path", "/public/../admin-area/x"),
        P("issue14 /public/%2e%2e/admin-area/x", "path", "/public/%2e%2e/admin-area/x"),
        P("issue14 /public/%2E%2E/admin-area/x", "path", "/public/%2E%2E/admin-area/x"),
        P("issue14 /public/%252e%252e/admin-area/x", "path", "/public/%252e%252e/admin-area/x"),
        P("issue14 /public/%C0%AE%C0%AE/admin-area/x", "path", "/public/%C0%AE%C0%AE/admin-area/x"),
        P("issue14 /public/%c0%ae/x", "path", "/public/%c0%ae/x"),
        P("issue14 /public/%FF/x", "path", "/public/%FF/x"),
        P("issue14 /public/%ff%fe/x", "path", "/public/%ff%fe/x"),
        P("issue14 /public/%E0%80%AE%E0%80%AE/admin-area/x", "path", "/public/%E0%80%AE%E0%80%AE/admin-area/x"),
        # slashes and backslashes
        P("issue14 //admin-area/x", "path", "//admin-area/x"),
        P("issue14 /public//../admin-area/x", "path", "/public//../admin-area/x"),
        P("issue14 /public/..\\admin-area\\x (raw backslash)", "path", "/public/..\\admin-area\\x"),
        P("issue14 /public/..%5Cadmin-area%5Cx", "path", "/public/..%5Cadmin-area%5Cx"),
        P("issue14 /public/..%5cadmin-area/x", "path", "/public/..%5cadmin-area/x"),
        P("issue14 /public/..%2Fadmin-area/x", "path", "/public/..%2Fadmin-area/x"),
        P("issue14 /public/%2e%2e%2fadmin-area/x", "path", "/public/%2e%2e%2fadmin-area/x"),
        P("issue14 /public/x%00", "path", "/public/x%00"),
        P("issue14 /public/%00/../admin-area/x", "path", "/public/%00/../admin-area/x"),
        P("escape root /..", "path", "/.."),
        P("escape root /public/../../x", "path", "/public/../../x"),
        P("escape root /%2e%2e/admin-area/x", "path", "/%2e%2e/admin-area/x"),
        # raw non-ASCII bytes in the target (SPEC silent: invariant only)
        P("raw UTF-8 /public/\xc3\xa9", "path", "/public/\xc3\xa9"),
        P("raw 0xFF /public/\xff/../admin-area/x", "path", "/public/\xff/../admin-area/x"),
        # absolute-form targets (RFC 9112 §3.2.2): accepted, path rules apply
        P("absolute-form /public/x", "framing", "http://{HOST}/public/x"),
        P("absolute-form /admin-area/x", "framing", "http://{HOST}/admin-area/x"),
        P("absolute-form /ADMIN-AREA/x", "framing", "http://{HOST}/ADMIN-AREA/x"),
        P("absolute-form /public/..;/admin-area/x", "framing", "http://{HOST}/public/..;/admin-area/x"),
        # a Host that differs from the target's authority can be read two ways:
        # refused (pingora's rule, kept; RFC 9112 would take the authority)
        P("absolute-form evil authority", "framing", "http://evil.example/member-area/x", expect=400),
        P("absolute-form without Host", "framing", "http://{HOST}/public/x", hosts=[]),
        # Host
        P("missing Host", "framing", "/public/x", hosts=[]),
        P("missing Host, protected", "framing", "/admin-area/x", hosts=[]),
        P("duplicate Host (same)", "framing", "/public/x", hosts=["{HOST}", "{HOST}"]),
        P("duplicate Host (evil second)", "framing", "/public/x", hosts=["{HOST}", "evil.example"]),
        P("duplicate Host (evil first)", "framing", "/member-area/x", hosts=["evil.example", "{HOST}"]),
        # HTTP/1.0 does not require Host; without one the upstream gets no host: refused
        P("HTTP/1.0 without Host", "framing", "/public/x", hosts=[], version="HTTP/1.0", expect=400),
        # framing
        P(
            "malformed chunk size",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"zz\r\nhello\r\n0\r\n\r\n",
            auto_length=False,
            expect=400,
        ),
        P(
            "malformed chunk size (protected)",
            "framing",
            "/member-area/x",
            method="POST",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"5;\r\nhello\r\nxyz\r\n\r\n",
            auto_length=False,
            expect={"none": {400, 401}, "member": 400, "admin": 400},
        ),
        P(
            "malformed second chunk size",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"5\r\nhello\r\nxyz\r\n\r\n",
            auto_length=False,
            expect=400,
        ),
        P(
            "chunk size overflow",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            auto_length=False,
            expect=400,
        ),
        P(
            "chunk size with a sign",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Transfer-Encoding", "chunked")],
            body=b"+5\r\nhello\r\n0\r\n\r\n",
            auto_length=False,
            expect=400,
        ),
        P(
            "Content-Length and Transfer-Encoding (CL.TE smuggling)",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
            body=b"0\r\n\r\nGET /admin-area/x HTTP/1.1\r\nHost: {HOST}\r\nX-Diff-Case: smuggled\r\n\r\n",
            auto_length=False,
            expect=400,
        ),
        P(
            "two different Content-Length",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Content-Length", "5"), ("Content-Length", "6")],
            body=b"hello!",
            auto_length=False,
            expect=400,
        ),
        P(
            "Content-Length list",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Content-Length", "5, 6")],
            body=b"hello!",
            auto_length=False,
            expect=400,
        ),
        P(
            "negative Content-Length",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Content-Length", "-1")],
            auto_length=False,
            expect=400,
        ),
        P(
            "Transfer-Encoding: xchunked",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Transfer-Encoding", "xchunked")],
            body=b"5\r\nhello\r\n0\r\n\r\n",
            auto_length=False,
            expect={400, 501},
        ),
        P(
            "Transfer-Encoding: chunked, identity",
            "framing",
            "/public/x",
            method="POST",
            headers=[("Transfer-Encoding", "chunked, identity")],
            body=b"5\r\nhello\r\n0\r\n\r\n",
            auto_length=False,
            expect={400, 501},
        ),
        P(
            "space before colon (Transfer-Encoding : chunked)",
            "framing",
            "/public/x",
            method="POST",
            headers=[("__raw__", "Transfer-Encoding : chunked")],
            body=b"5\r\nhello\r\n0\r\n\r\n",
            auto_length=False,
            expect=400,
        ),
        P(
            "smuggled request in a Content-Length body (not a request)",
            "framing",
            "/public/x",
            method="POST",
            body=b"GET /admin-area/x HTTP/1.1\r\nHost: {HOST}\r\nX-Diff-Case: smuggled\r\n\r\n",
            expect="path",
        ),
        P("chunked body, well-formed", "framing", "/public/x", method="POST", headers=[("Transfer-Encoding", "chunked")], body=b"5\r\nhello\r\n0\r\n\r\n", auto_length=False),
        P("header with obs-fold", "framing", "/public/x", headers=[("X-Auth-User-Id", "{ADMIN_ID}\r\n folded")], expect={200, 400}),
        P("header name with space", "framing", "/public/x", headers=[("__raw__", "X-Auth-User-Id : {ADMIN_ID}")], expect=400),
        P("header value with NUL", "framing", "/public/x", headers=[("X-Note", "a\x00b")], expect=400),
        # a 64 KiB header is within the sidecar's limit (SPEC sets none); 300
        # headers are past pingora's 256: an edge error, in the JSON shape
        P("one 64 KiB header", "framing", "/public/x", headers=[("X-Big", "a" * 65536)], expect=None),
        P("300 headers", "framing", "/public/x", headers=[(f"X-Many-{i}", "a") for i in range(300)], expect={400, 431}),
        P("Expect: 100-continue", "framing", "/public/x", method="POST", headers=[("Expect", "100-continue")], body=b"hello"),
    ]
    return out


def identity_headers() -> list[Payload]:
    """Forged identity headers in every spelling (SPEC §7, §15)."""
    spellings = [
        ("X-Auth-User-Id", "{ADMIN_ID}"),
        ("X_Auth_User_Id", "{ADMIN_ID}"),
        ("X.Auth.User.Id", "{ADMIN_ID}"),
        ("x-auth-user-id", "{ADMIN_ID}"),
        ("X-AUTH-USER-ID", "{ADMIN_ID}"),
        ("x_auth_user_id", "{ADMIN_ID}"),
        ("X-Auth_User.Id", "{ADMIN_ID}"),
        ("X-Auth-Roles", "admin"),
        ("X_Auth_Roles", "admin"),
        ("X.Auth.Roles", "admin"),
        ("X-Auth-Permissions", "*"),
        ("X-Auth-Email", "evil@example.com"),
        ("X_Auth_Email", "evil@example.com"),
        ("X-Auth-Tenant-Id", "00000000-0000-0000-0000-000000000000"),
        ("X-Auth-Method", "api_key"),
        ("X-Auth-MFA", "true"),
        ("X_Auth_MFA", "true"),
        ("X-Auth-Assertion", "eyJhbGciOiJub25lIn0.e30."),
        ("X-Auth-Whatever", "evil"),
    ]
    out = []
    for target in ("/public/x", "/member-area/x", "/admin-area/x"):
        for name, value in spellings:
            out.append(Payload(f"identity {name} on {target}", "identity", target, headers=[(name, value)]))
    # all at once, in front of and behind the credential
    every = [(n, v) for n, v in spellings]
    out.append(Payload("identity: every spelling at once", "identity", "/public/x", headers=every))
    out.append(Payload("identity: every spelling at once (admin-area)", "identity", "/admin-area/x", headers=every))
    return out


def credentials() -> list[Payload]:
    """Two credentials on one request: SPEC §15 says 400, never first-wins."""
    P = Payload
    out = []
    for target in ("/public/x", "/member-area/x", "/admin-area/x"):
        out += [
            P(f"dup Authorization: +member on {target}", "credential", target, headers=[("Authorization", "Bearer {MEMBER}")], extra_principals=("member",)),
            P(f"dup Authorization: +admin on {target}", "credential", target, headers=[("Authorization", "Bearer {ADMIN}")], extra_principals=("admin",)),
            P(f"dup Authorization: +garbage on {target}", "credential", target, headers=[("Authorization", "Bearer garbage")], expect={"none": None}),
            P(
                f"dup Authorization: member then admin on {target}",
                "credential",
                target,
                headers=[("Authorization", "Bearer {MEMBER}"), ("Authorization", "Bearer {ADMIN}")],
                extra_principals=("member", "admin"),
            ),
            P(
                f"dup Authorization: admin then member on {target}",
                "credential",
                target,
                headers=[("Authorization", "Bearer {ADMIN}"), ("Authorization", "Bearer {MEMBER}")],
                extra_principals=("member", "admin"),
            ),
            P(f"dup X-API-Key: key twice on {target}", "credential", target, headers=[("X-API-Key", "{KEY}"), ("X-API-Key", "{KEY}")], extra_principals=("member",)),
            P(f"dup X-API-Key: key then garbage on {target}", "credential", target, headers=[("X-API-Key", "{KEY}"), ("X-API-Key", "sk_live_garbage")], extra_principals=("member",)),
            P(f"dup X-API-Key: garbage then key on {target}", "credential", target, headers=[("X-API-Key", "sk_live_garbage"), ("X-API-Key", "{KEY}")], extra_principals=("member",)),
            P(f"dup X-Tenant-ID on {target}", "credential", target, headers=[("X-Tenant-ID", "default"), ("X-Tenant-ID", "default")]),
            P(f"dup X-Tenant-ID (other second) on {target}", "credential", target, headers=[("X-Tenant-ID", "default"), ("X-Tenant-ID", "evil-tenant")]),
            P(f"dup X-OTP on {target}", "credential", target, headers=[("X-OTP", "123456"), ("X-OTP", "654321")]),
            P(f"dup X-OTP and otp on {target}", "credential", target, headers=[("X-OTP", "123456"), ("otp", "654321")]),
        ]
    return out


def forwarding() -> list[Payload]:
    """Forwarding headers from an untrusted client (SPEC §7, §15)."""
    forged = [
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-Port", "6666"),
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Forwarded-Server", "evil.example"),
        ("X-Forwarded-Ssl", "on"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-For", "203.0.113.66"),
        ("X-Forwarded-Uri", "/evil"),
        ("Forwarded", "for=203.0.113.66;host=evil.example;proto=https"),
        ("X_Forwarded_Host", "evil.example"),
        ("X.Forwarded.Host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("X-FORWARDED-FOR", "203.0.113.66"),
        ("X_Forwarded_For", "203.0.113.66"),
    ]
    out = []
    for target in ("/public/x", "/member-area/x"):
        for name, value in forged:
            out.append(Payload(f"forwarding {name} on {target}", "forwarding", target, headers=[(name, value)]))
        out.append(Payload(f"forwarding: all at once on {target}", "forwarding", target, headers=list(forged)))
    return out


def connection() -> list[Payload]:
    """Connection nominations (RFC 9110 §7.6.1, SPEC §15): never a dropped
    connection; headers the sidecar sets still reach the upstream."""
    many = ", ".join(f"x-hop-{i}" for i in range(12))
    noms = [
        ("X-Forwarded-For", [("X-Forwarded-For", "203.0.113.66")]),
        ("X-Forwarded-Proto", [("X-Forwarded-Proto", "https")]),
        ("X-Forwarded-Host", [("X-Forwarded-Host", "evil.example")]),
        ("Host", []),
        ("X-Auth-User-Id", [("X-Auth-User-Id", "{ADMIN_ID}")]),
        ("X_Auth_User_Id", [("X_Auth_User_Id", "{ADMIN_ID}")]),
        ("X-Request-Id", [("X-Request-Id", "diff-forged-request-id")]),
        ('"X-Forwarded-For"', [("X-Forwarded-For", "203.0.113.66")]),
        ("keep-alive, X-Forwarded-For", [("X-Forwarded-For", "203.0.113.66")]),
        (many + ", X-Forwarded-For", [("X-Forwarded-For", "203.0.113.66")]),
        (", ".join(f"x-hop-{i}" for i in range(30)), []),
        ("close", []),
        ("keep-alive", []),
        ("Upgrade", []),
        ("X-Diff-Nothing", []),
        ("Forwarded", [("Forwarded", "for=203.0.113.66;host=evil.example")]),
        ("te", [("TE", "trailers")]),
        ("x-forwarded-for;q=1", [("X-Forwarded-For", "203.0.113.66")]),
    ]
    out = []
    for target in ("/public/x", "/member-area/x"):
        for value, extra in noms:
            out.append(
                Payload(
                    f"Connection: {value[:60]} on {target}",
                    "connection",
                    target,
                    headers=[("Connection", value)] + extra,
                    expect={c: _connection_expect(target, c) for c in CREDS},
                )
            )
        out.append(
            Payload(
                f"Connection: Authorization on {target}",
                "connection",
                target,
                headers=[("Connection", "Authorization")],
                expect=None,
                may_drop_credential=True,
            )
        )
    return out


def _connection_expect(target: str, cred: str):
    # a Connection header the sidecar will not honour may be a 400 (SPEC §15),
    # before or after the policy
    return {oracle.expected_for_path(target, cred), 400}


def generated() -> list[Payload]:
    """Cross products of areas, spellings and tricks."""
    out: list[Payload] = []
    areas = ["public", "admin-area", "member-area", "other"]

    def case_variants(a: str) -> list[tuple[str, str]]:
        first = a[0]
        return [
            ("upper", a.upper()),
            ("title", "-".join(p.capitalize() for p in a.split("-"))),
            ("enc-first", f"%{ord(first):02x}" + a[1:]),
            ("enc-first-upper", f"%{ord(first.upper()):02X}" + a[1:]),
            ("enc-all", "".join(f"%{ord(c):02X}" for c in a)),
            ("last-upper", a[:-1] + a[-1].upper()),
        ]

    for a in areas:
        for tag, v in case_variants(a):
            out.append(Payload(f"gen case {tag} /{v}/x", "path", f"/{v}/x"))

    dots = [
        "..",
        "%2e%2e",
        "%2E%2E",
        ".%2e",
        "%2e.",
        "%252e%252e",
        "..;",
        "..;x",
        "%2e%2e;",
        ".;/..",
        "..%2f..",
        "..%5c",
        "..\\",
        "%c0%ae%c0%ae",
        "%e0%80%ae%e0%80%ae",
        "..%00",
        "...",
        "..%3b",
        "%2e%2e%3b",
    ]
    for d in dots:
        for t in ("admin-area", "member-area", "other"):
            out.append(Payload(f"gen traversal /public/{d}/{t}/x", "path", f"/public/{d}/{t}/x"))
    for d in ("..", "%2e%2e", "..;", "%252e%252e"):
        out.append(Payload(f"gen traversal /admin-area/{d}/public/x", "path", f"/admin-area/{d}/public/x"))

    params = [";", ";x", ";jsessionid=1", ";a=b;c=d", "%3b", "%3Bx", ";/"]
    for a in ("public", "admin-area", "member-area"):
        for prm in params:
            out.append(Payload(f"gen param /{a}{prm}/x", "path", f"/{a}{prm}/x"))
        out.append(Payload(f"gen param /{a}/x;y", "path", f"/{a}/x;y"))
        out.append(Payload(f"gen param /{a}/;x", "path", f"/{a}/;x"))
        out.append(Payload(f"gen param /{a.upper()};x/y", "path", f"/{a.upper()};x/y"))
        out.append(Payload(f"gen param /{a.title()};x/y", "path", f"/{a.title()};x/y"))

    for a in areas:
        for fmt in ("//{a}/x", "/{a}//x", "///{a}/x", "/./{a}/x", "/{a}/./x", "/x/../{a}/y"):
            t = fmt.format(a=a)
            out.append(Payload(f"gen slashes {t}", "path", t))

    for a in ("public", "admin-area", "member-area"):
        for fmt in ("/{a}\\x", "/{a}%5Cx", "/{a}%5cx", "\\{a}/x", "/{a}/x%2F..%2F..%2Fadmin-area"):
            t = fmt.format(a=a)
            out.append(Payload(f"gen slash-like {t}", "path", t))

    for a in ("public", "admin-area", "member-area"):
        for tag, enc in (("valid é", "%C3%A9"), ("valid RLO", "%E2%80%AE"), ("bad %ff", "%ff"), ("truncated %c3", "%c3"), ("surrogate", "%ED%A0%80"), ("overlong /", "%C0%AF"), ("space", "%20")):
            out.append(Payload(f"gen utf8 {tag} /{a}/{enc}", "path", f"/{a}/{enc}"))
    return out


def corpus() -> list[Payload]:
    return _dedupe(named() + identity_headers() + credentials() + forwarding() + connection() + generated())


if __name__ == "__main__":
    import collections

    c = corpus()
    print(len(c), "payloads")
    print(collections.Counter(p.group for p in c))
