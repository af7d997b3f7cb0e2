"""WebSocket through the sidecar, with the `websockets` library (PyPI) as
both the upstream server and the client: the upgrade is authenticated like
any request (401 without a credential, the identity headers on the upgrade
request), the tunnel then carries frames both ways, and a session revoked
while its tunnel is open does not close the tunnel: the check happens at the
upgrade, as with oauth2-proxy and Oathkeeper (README, "Design choices").
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from harness import Sidecar, free_port, http_json, make_credentials

try:  # the counterpart; when missing the tests fail under CI, never skip silently
    import websockets
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve
except ImportError:  # pragma: no cover
    websockets = None


class Upstream:
    """An echo WebSocket server on its own event loop; it remembers the
    user id each upgrade request carried."""

    def __init__(self):
        self.port = free_port()
        self.seen: list[str | None] = []
        self.loop = asyncio.new_event_loop()
        started = threading.Event()

        async def echo(ws):
            self.seen.append(ws.request.headers.get("X-Auth-User-Id"))
            async for message in ws:
                await ws.send(f"echo:{message}")

        async def main():
            async with serve(echo, "127.0.0.1", self.port):
                started.set()
                await asyncio.Future()

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        started.wait(10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, require_binary, counterpart_missing):
    if websockets is None:
        counterpart_missing("websockets (PyPI) is not installed")
    up = Upstream()
    sc = Sidecar(tmp_path_factory.mktemp("ws"), f"127.0.0.1:{up.port}", name="portcullis-ws").start()
    creds = make_credentials(sc, "ws")
    yield sc, creds, up
    sc.stop()


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_an_authenticated_upgrade_tunnels_frames_both_ways(stack):
    sc, creds, up = stack

    async def go():
        async with connect(f"ws://127.0.0.1:{sc.proxy_port}/member-area/ws", additional_headers={"Authorization": f"Bearer {creds.member_token}"}) as ws:
            await ws.send("one")
            first = await ws.recv()
            await ws.send("two")
            return first, await ws.recv()

    assert run(go()) == ("echo:one", "echo:two")
    assert up.seen[-1] == creds.member_id


def test_an_upgrade_without_a_credential_is_refused_with_401(stack):
    sc, _, up = stack
    before = len(up.seen)

    async def go():
        async with connect(f"ws://127.0.0.1:{sc.proxy_port}/member-area/ws"):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as e:
        run(go())
    assert e.value.response.status_code == 401
    assert len(up.seen) == before, "the upstream saw a refused upgrade"


def test_an_open_tunnel_outlives_its_revoked_session(stack):
    sc, creds, up = stack
    # a user and session of its own, so the other tests' tokens stay valid
    import os

    token = sc.register(f"ws-revoke-{os.getpid()}@example.com", "Websocket-" + os.urandom(6).hex() + "!9")["accessToken"]

    async def go():
        async with connect(f"ws://127.0.0.1:{sc.proxy_port}/member-area/ws", additional_headers={"Authorization": f"Bearer {token}"}) as ws:
            await ws.send("before")
            before = await ws.recv()
            st, _, _, _ = await asyncio.to_thread(http_json, sc.proxy_port, "POST", "/auth/logout", {}, {"Authorization": f"Bearer {token}"})
            assert st in (200, 204)
            await ws.send("after")
            return before, await ws.recv()

    assert run(go()) == ("echo:before", "echo:after")
    # a new upgrade with the revoked token is refused
    async def again():
        async with connect(f"ws://127.0.0.1:{sc.proxy_port}/member-area/ws", additional_headers={"Authorization": f"Bearer {token}"}):
            pass

    with pytest.raises(websockets.exceptions.InvalidStatus) as e:
        run(again())
    assert e.value.response.status_code == 401
