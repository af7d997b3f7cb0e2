"""SPEC §15 over HTTP/2: requests built frame by frame with the `h2`
protocol library (PyPI), sent with prior knowledge to the proxy listener.
The rules the HTTP/1 edge tests prove hold here too: `:authority` stands for
`Host` and may not disagree with it, one credential per request, the path
rules, and a refusal never reaches the upstream. And RFC 9113's own: an
upper-case field name or a connection-specific field (`connection`,
`keep-alive`, `proxy-connection`, `transfer-encoding`, `upgrade`, `te` other
than `trailers`) is a PROTOCOL_ERROR (h2spec is not packaged here).
"""

from __future__ import annotations

import json
import socket

import pytest

from harness import Sidecar, free_port, make_credentials

try:  # the counterpart; when missing the tests fail under CI, never skip silently
    import h2.config
    import h2.connection
    import h2.events
except ImportError:  # pragma: no cover
    h2 = None


class Answer:
    def __init__(self):
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.body = b""
        self.reset = False
        # the HTTP/2 error code of the RST_STREAM or GOAWAY that ended it
        self.reset_code: int | None = None


def send(port: int, headers: list[tuple[str, str]], body: bytes = b"") -> Answer:
    """One request on a new h2c connection; the answer, or `reset` when the
    sidecar refused the stream or the connection."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False, normalize_outbound_headers=False))
    conn.initiate_connection()
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, headers, end_stream=not body)
    if body:
        conn.send_data(sid, body, end_stream=True)
    sock.sendall(conn.data_to_send())
    answer = Answer()
    done = False
    try:
        while not done:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                answer.reset = answer.status is None
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    for k, v in ev.headers:
                        if k == ":status":
                            answer.status = int(v)
                        else:
                            answer.headers[k] = v
                elif isinstance(ev, h2.events.DataReceived):
                    answer.body += ev.data
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded,)):
                    done = True
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    answer.reset = answer.status is None
                    answer.reset_code = int(ev.error_code)
                    done = True
            try:
                sock.sendall(conn.data_to_send())
            except (BrokenPipeError, ConnectionResetError):
                # the sidecar closed the connection (after a GOAWAY): nothing more to say
                done = True
    finally:
        sock.close()
    return answer


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory, require_binary, counterpart_missing):
    if h2 is None:
        counterpart_missing("h2 (PyPI) is not installed")
    # nothing listens upstream: a request that got past the edge would be a 502
    sc = Sidecar(tmp_path_factory.mktemp("h2edge"), f"127.0.0.1:{free_port()}", name="portcullis-h2").start()
    creds = make_credentials(sc, "h2edge")
    yield sc, creds
    sc.stop()


def base(port: int, path: str = "/member-area/x", authority: str | None = None) -> list[tuple[str, str]]:
    return [(":method", "GET"), (":scheme", "http"), (":authority", authority or f"127.0.0.1:{port}"), (":path", path)]


def error_code(a: Answer) -> str:
    return json.loads(a.body)["error"]["code"]


def test_a_verified_h2_request_gets_past_the_edge(sidecar):
    sc, creds = sidecar
    a = send(sc.proxy_port, base(sc.proxy_port) + [("authorization", f"Bearer {creds.member_token}")])
    # authenticated and authorized: it went on to the (absent) upstream
    assert a.status == 502 and error_code(a) == "UPSTREAM_UNAVAILABLE"


def test_no_credential_is_401_over_h2(sidecar):
    sc, _ = sidecar
    a = send(sc.proxy_port, base(sc.proxy_port))
    assert a.status == 401 and error_code(a) == "UNAUTHENTICATED"
    assert a.headers.get("x-request-id")


def test_a_host_that_disagrees_with_the_authority_is_refused(sidecar):
    sc, creds = sidecar
    a = send(
        sc.proxy_port,
        base(sc.proxy_port) + [("host", "other.example"), ("authorization", f"Bearer {creds.member_token}")],
    )
    assert a.reset or a.status == 400, (a.status, a.body)


def test_two_credentials_in_one_h2_request_are_refused(sidecar):
    sc, creds = sidecar
    for extra in (
        [("authorization", f"Bearer {creds.member_token}"), ("authorization", f"Bearer {creds.admin_token}")],
        [("x-api-key", creds.member_key), ("x-api-key", "sk_live_other")],
        [("x_api_key", creds.member_key)],
    ):
        a = send(sc.proxy_port, base(sc.proxy_port) + extra)
        assert a.status == 400 and error_code(a) == "INVALID_REQUEST", (extra[0][0], a.status, a.body)


@pytest.mark.parametrize("path", ["/public/..;/member-area/x", "/public/%c0%ae%c0%ae/member-area/x", "/public\\..\\member-area/x"])
def test_the_path_rules_hold_over_h2(sidecar, path):
    sc, _ = sidecar
    a = send(sc.proxy_port, base(sc.proxy_port, path=path))
    assert a.status == 400 and error_code(a) == "INVALID_REQUEST", (path, a.status, a.body)


def test_a_route_policy_is_chosen_under_every_reading_over_h2(sidecar):
    sc, creds = sidecar
    # a member may not use the admin area in any spelling of its path
    for path in ("/admin-area/x", "/ADMIN-AREA/x", "/public/../admin-area/x"):
        a = send(sc.proxy_port, base(sc.proxy_port, path=path) + [("authorization", f"Bearer {creds.member_token}")])
        assert a.status in (400, 403), (path, a.status, a.body)


PROTOCOL_ERROR = 0x1


@pytest.mark.parametrize("name", ["Authorization", "X-Forged"])
def test_an_upper_case_header_name_is_a_protocol_error(sidecar, name):
    """RFC 9113 §8.2.1: field names are lower case; one that is not makes the
    request malformed (the sidecar ends the connection with PROTOCOL_ERROR)."""
    sc, creds = sidecar
    value = f"Bearer {creds.member_token}" if name == "Authorization" else "1"
    extra = [(name, value)] if name == "Authorization" else [("authorization", f"Bearer {creds.member_token}"), (name, value)]
    a = send(sc.proxy_port, base(sc.proxy_port) + extra)
    assert a.reset and a.reset_code == PROTOCOL_ERROR, (name, a.status, a.reset_code)


@pytest.mark.parametrize(
    "header",
    [("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("proxy-connection", "keep-alive"), ("transfer-encoding", "chunked"), ("upgrade", "websocket"), ("te", "gzip")],
)
def test_a_connection_specific_header_is_a_protocol_error(sidecar, header):
    """RFC 9113 §8.2.2: connection-specific fields (and `te` other than
    `trailers`) make an h2 request malformed: the stream is reset with
    PROTOCOL_ERROR and nothing is answered or forwarded."""
    sc, creds = sidecar
    a = send(sc.proxy_port, base(sc.proxy_port) + [("authorization", f"Bearer {creds.member_token}"), header])
    assert a.reset and a.reset_code == PROTOCOL_ERROR, (header, a.status, a.reset_code)


def test_te_trailers_is_allowed(sidecar):
    sc, creds = sidecar
    a = send(sc.proxy_port, base(sc.proxy_port) + [("authorization", f"Bearer {creds.member_token}"), ("te", "trailers")])
    # past the edge, on to the (absent) upstream
    assert a.status == 502 and error_code(a) == "UPSTREAM_UNAVAILABLE"
