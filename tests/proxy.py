"""A TCP proxy to the test Redis that can turn into a black hole, as a NAT or a network path
that stops forwarding does: sockets stay open, bytes vanish, no close or reset ever comes."""

import trio


class _Link:
    """One proxied connection; once cut, it drops everything for good (the bytes it lost
    broke its stream)."""

    __slots__ = ("cut",)

    def __init__(self) -> None:
        self.cut = False


class BlackholeProxy:
    """Listens on 127.0.0.1 (port 0) and forwards each connection to a unix socket.

    `blackhole()` cuts every open connection and holds new ones (accepted, nothing forwarded);
    `resume()` forwards the held ones and any new ones normally. `run` in a nursery.
    """

    def __init__(self, unix_path: str) -> None:
        self.unix_path = unix_path
        self.port = 0
        self.connections = 0  # accepted so far
        self._links: list[_Link] = []
        self._forwarding = trio.Event()
        self._forwarding.set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        for link in self._links:
            link.cut = True
        self._forwarding = trio.Event()

    def resume(self) -> None:
        self._forwarding.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, client: trio.SocketStream) -> None:
        self.connections += 1
        async with client:
            await self._forwarding.wait()
            link = _Link()
            self._links.append(link)
            upstream = await trio.open_unix_socket(self.unix_path)
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(_pump, client, upstream, link, nursery.cancel_scope)
                nursery.start_soon(_pump, upstream, client, link, nursery.cancel_scope)


async def _pump(
    source: trio.SocketStream, sink: trio.SocketStream, link: _Link, scope: trio.CancelScope
) -> None:
    """Copy until the source closes, then close both sides; a cut link reads and drops, and
    lets no close through."""
    try:
        while data := await source.receive_some():
            if not link.cut:
                await sink.send_all(data)
    except trio.BrokenResourceError:
        pass
    if not link.cut:
        scope.cancel()
