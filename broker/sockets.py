"""Lean trio streams over non-blocking stdlib sockets, for the hot path.

trio's SocketStream tries every recv before waiting (one wasted EAGAIN syscall per command on
a request/reply connection) and adds a scheduling checkpoint to every successful send. Here a
read waits for readiness first and then makes one recv; a write sends at once and waits only
when the kernel buffer is full. Reads still go through trio's I/O wait, so every connection
yields to the others once per read.
"""

import errno
import logging
import socket
from collections.abc import Awaitable, Callable

import trio

from hopper_broker.errors import StartError
from hopper_broker.loop_idle import LoopIdle

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
LISTEN_BACKLOG = 4096
ACCEPT_RETRY_DELAY = 0.1  # seconds to wait when the process is out of file descriptors
_BROKEN = (OSError, ValueError)  # ValueError: the socket was closed under us


class RawStream(trio.abc.Stream):
    """A trio Stream over a connected non-blocking socket; its bytes end the loop's busy poll
    (loop_idle.py)."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.socket = sock
        self._idle = LoopIdle.current()
        self._idle.watch(sock)

    @classmethod
    def from_trio(cls, stream: trio.SocketStream) -> "RawStream":
        """Take over the socket of a connected trio SocketStream."""
        return cls(socket.socket(fileno=stream.socket.detach()))

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            try:
                await trio.lowlevel.wait_readable(self.socket)
                return self.socket.recv(max_bytes or READ_SIZE)
            except BlockingIOError:
                continue
            except trio.ClosedResourceError:
                raise
            except _BROKEN as exc:
                raise trio.BrokenResourceError(str(exc)) from exc

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.socket.send(view)
            except BlockingIOError:
                await self.wait_send_all_might_not_block()
                continue
            except _BROKEN as exc:
                raise trio.BrokenResourceError(str(exc)) from exc
            view = view[sent:]

    async def wait_send_all_might_not_block(self) -> None:
        try:
            await trio.lowlevel.wait_writable(self.socket)
        except _BROKEN as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def aclose(self) -> None:
        if self.socket.fileno() != -1:
            self._idle.unwatch(self.socket)
            trio.lowlevel.notify_closing(self.socket)
            self.socket.close()
        await trio.lowlevel.checkpoint()


def listen(host: str, port: int, *, reuse_port: bool = False) -> list[socket.socket]:
    """Non-blocking listening sockets on every address of `host` (one port for all); with
    `reuse_port`, bound with SO_REUSEPORT so that other processes doing the same share the port
    (the kernel spreads new connections over them). StartError when it cannot listen (address in
    use, unknown host)."""
    return _bind(host, port, reuse_port=reuse_port, listening=True)


def reserve(host: str, port: int) -> list[socket.socket]:
    """Sockets bound with SO_REUSEPORT that do not listen: they hold the port (port 0: a free
    one) for processes that listen on it with `reuse_port`, and take no connection."""
    return _bind(host, port, reuse_port=True, listening=False)


def _bind(host: str, port: int, *, reuse_port: bool, listening: bool) -> list[socket.socket]:
    sockets: list[socket.socket] = []
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    try:
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(sockets) > 1:
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock.bind(address)
            if listening:
                sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
    except BaseException as exc:
        for sock in sockets:
            sock.close()
        if isinstance(exc, OSError):
            raise StartError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        raise
    return sockets


async def accept_forever(
    listener: socket.socket,
    handle: Callable[[socket.socket], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Accept connections on `listener` and run `handle(sock)` for each in `nursery`."""
    while True:
        try:
            await trio.lowlevel.wait_readable(listener)
        except trio.ClosedResourceError:
            return  # closed: the server is shutting down
        if listener.fileno() == -1:  # closed after it became readable, before this task ran
            return
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            continue
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                log.error("cannot accept a connection: %s", exc)
                await trio.sleep(ACCEPT_RETRY_DELAY)
                continue
            if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                continue
            raise
        nursery.start_soon(handle, sock)
