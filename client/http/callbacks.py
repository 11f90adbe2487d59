"""The callback endpoint of accepted jobs: `POST /jobs/<jid>/done` or `/jobs/<jid>/failed`,
with `Authorization: Bearer <secret>`; the body is the job's result (done, JSON) or what went
wrong (failed). A small HTTP/1.1 server (h11 on trio) for the jobs this worker waits for.

Answers: 204 taken, 401 wrong secret, 404 no such job waiting here (unknown, already
settled, or given up), 405/400 for anything else, 413 for a body over MAX_BODY.
"""

import hmac
import logging
import re
import urllib.parse
from collections.abc import Iterable

import h11
import trio

log = logging.getLogger("hopper_client.http")

MAX_BODY = 1 << 20  # bytes of a callback's body at most
READ_TIMEOUT = 10.0  # seconds a client may take to send one request
PATH = re.compile(r"/jobs/([^/]+)/(done|failed)")


class Outcome:
    """What a downstream said about one accepted job; `arrived` is set once it has."""

    __slots__ = ("arrived", "body", "status")

    def __init__(self) -> None:
        self.arrived = trio.Event()
        self.status = ""  # done or failed
        self.body = b""


class Callbacks:
    """The jobs awaiting a callback, and the server that hears them."""

    def __init__(self, secret: str) -> None:
        self._expected = f"Bearer {secret}".encode()
        self.waiting: dict[str, Outcome] = {}
        self.port = 0

    def expect(self, jid: str) -> Outcome:
        """Be ready for the callback of `jid` (before the request goes out: it may come early)."""
        outcome = self.waiting[jid] = Outcome()
        return outcome

    def forget(self, jid: str) -> None:
        self.waiting.pop(jid, None)

    async def listen(self, host: str, port: int) -> list[trio.SocketListener]:
        """Bind host:port (0: a free port; OSError if taken); sets `port`."""
        listeners = await trio.open_tcp_listeners(port, host=host or None)
        self.port = listeners[0].socket.getsockname()[1]
        return listeners

    async def serve(self, listeners: list[trio.SocketListener]) -> None:
        """Answer callbacks until cancelled."""
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            async with stream:
                while conn.our_state is h11.IDLE or conn.our_state is h11.DONE:
                    if conn.our_state is h11.DONE:
                        if conn.their_state is not h11.DONE:
                            return
                        conn.start_next_cycle()
                    with trio.move_on_after(READ_TIMEOUT) as waited:
                        status = await self._request(conn, stream)
                    if waited.cancelled_caught or status is None:
                        return
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("callback connection dropped: %s", exc)

    async def _request(self, conn: h11.Connection, stream: trio.SocketStream) -> int | None:
        """Read one request and answer it; None when the client went away."""
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data and conn.their_state is h11.IDLE:
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_BODY:
                    await _answer(conn, stream, 413, close=True)
                    return None
            elif isinstance(event, h11.EndOfMessage):
                break
            else:  # ConnectionClosed
                return None
        assert request is not None
        status = self._take(request, bytes(body))
        await _answer(conn, stream, status)
        return status

    def _take(self, request: h11.Request, body: bytes) -> int:
        match = PATH.fullmatch(request.target.decode("ascii", "replace"))
        if match is None:
            return 404
        if request.method != b"POST":
            return 405
        if not hmac.compare_digest(_header(request.headers, b"authorization"), self._expected):
            return 401
        key, status = match.groups()
        outcome = self.waiting.pop(
            urllib.parse.unquote(key), None
        )  # the jid, as deliver.py quoted it
        if outcome is None:
            return 404
        outcome.status, outcome.body = status, body
        outcome.arrived.set()
        return 204


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> bytes:
    return next((value for key, value in headers if key.lower() == name), b"")


async def _answer(
    conn: h11.Connection, stream: trio.SocketStream, status: int, close: bool = False
) -> None:
    headers = [] if status == 204 else [(b"content-length", b"0")]
    headers += [(b"connection", b"close")] if close else []
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data = (data or b"") + (conn.send(h11.EndOfMessage()) or b"")
    await stream.send_all(data)
