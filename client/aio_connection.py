"""One async stream to the broker, handshake done (asyncio or trio); used by one task at a
time, or by AsyncSharedConnection for many."""

from typing import TYPE_CHECKING

from hopper_client.errors import ConnectionLost
from hopper_client.transports import Stream, open_stream
from hopper_client.url import Endpoint
from hopper_client.wire import Identity, Reply, ReplyReader, check_welcome, hello_line

if TYPE_CHECKING:
    from hopper_client.aio import AsyncClient


class AsyncConnection:
    """A connected, identified stream: `await request(line)` sends a command, reads its reply."""

    def __init__(self, stream: Stream, timeout: float) -> None:
        self._stream = stream
        self._timeout = timeout
        self._replies = ReplyReader()

    @classmethod
    async def open(
        cls, client: "AsyncClient", endpoint: Endpoint, identity: Identity
    ) -> "AsyncConnection":
        """Connect, say HELLO and wait for OK."""
        stream = await open_stream(
            endpoint.host, endpoint.port, client.ssl_context, client.connect_timeout
        )
        conn = cls(stream, client.connect_timeout)
        try:
            greeting = await conn.read()
            check_welcome(await conn.request(hello_line(greeting, endpoint, identity)))
        except BaseException:
            conn.close()
            raise
        conn._timeout = client.timeout
        return conn

    async def request(self, line: bytes) -> Reply:
        await self._stream.send(line)
        return await self.read()

    async def send(self, data: bytes) -> None:
        """Send command lines; their replies are read with `read()` or `replies()`."""
        await self._stream.send(data)

    async def read(self) -> Reply:
        while (reply := self._replies.next_reply()) is False:
            await self._receive()
        return reply

    async def replies(self) -> list[Reply]:
        """The replies received so far, waiting for one if there is none."""
        while (reply := self._replies.next_reply()) is False:
            await self._receive()
        found = [reply]
        while (reply := self._replies.next_reply()) is not False:
            found.append(reply)
        return found

    async def _receive(self) -> None:
        received = await self._stream.receive(self._timeout)
        if not received:
            raise ConnectionLost("the broker closed the connection")
        self._replies.feed(received)

    def settimeout(self, seconds: float) -> None:
        """How long `read()` waits for a reply from now on."""
        self._timeout = seconds

    def close(self) -> None:
        self._stream.close()
