"""Byte streams for the async client on trio and on asyncio, chosen by the running loop.

Each stream turns its library's errors and timeouts into ConnectionLost, so the async client
(aio.py) is written once for both.
"""

import asyncio
import ssl
from typing import Protocol

import trio

from hopper_client.errors import ConnectionLost
from hopper_client.wire import READ_SIZE


class Stream(Protocol):
    async def send(self, data: bytes) -> None: ...

    async def receive(self, timeout: float) -> bytes:
        """Some bytes, b"" at end of stream; ConnectionLost after `timeout` seconds."""
        ...

    def close(self) -> None: ...


class TrioStream:
    """A trio TCP (or TLS) stream."""

    def __init__(self, tcp: trio.SocketStream, stream: trio.abc.Stream) -> None:
        self._tcp = tcp
        self._stream = stream

    @classmethod
    async def open(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float
    ) -> "TrioStream":
        try:
            with trio.fail_after(timeout):
                tcp = await trio.open_tcp_stream(host, port)  # sets TCP_NODELAY
                if ssl_context is None:
                    return cls(tcp, tcp)
                tls = trio.SSLStream(tcp, ssl_context, server_hostname=host)
                try:
                    await tls.do_handshake()
                except BaseException:
                    tcp.socket.close()
                    raise
                return cls(tcp, tls)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError) as exc:
            raise _refused(host, port, exc) from exc

    async def send(self, data: bytes) -> None:
        try:
            await self._stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLost(f"cannot send to the broker: {exc!r}") from exc

    async def receive(self, timeout: float) -> bytes:
        try:
            with trio.CancelScope(relative_deadline=timeout) as scope:
                return bytes(await self._stream.receive_some(READ_SIZE))
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise ConnectionLost(f"no reply from the broker: {exc!r}") from exc
        assert scope.cancelled_caught
        raise ConnectionLost(f"no reply from the broker within {timeout:g} s")

    def close(self) -> None:
        self._tcp.socket.close()


class AsyncioStream:
    """An asyncio TCP (or TLS) stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(
        cls, host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float
    ) -> "AsyncioStream":
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(  # sets TCP_NODELAY
                    host, port, ssl=ssl_context, server_hostname=host if ssl_context else None
                )
        except OSError as exc:
            raise _refused(host, port, exc) from exc
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except OSError as exc:
            raise ConnectionLost(f"cannot send to the broker: {exc!r}") from exc

    async def receive(self, timeout: float) -> bytes:
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(READ_SIZE)
        except OSError as exc:
            raise ConnectionLost(f"no reply from the broker: {exc!r}") from exc

    def close(self) -> None:
        self._writer.close()


async def open_stream(
    host: str, port: int, ssl_context: ssl.SSLContext | None, timeout: float
) -> Stream:
    """A stream for the running event loop: asyncio's if one runs in this thread, else trio's."""
    if _asyncio_running():
        return await AsyncioStream.open(host, port, ssl_context, timeout)
    return await TrioStream.open(host, port, ssl_context, timeout)


class Event(Protocol):
    def set(self) -> None: ...

    async def wait(self) -> object: ...


def new_event() -> Event:
    """An event of the running event loop (asyncio's or trio's)."""
    return asyncio.Event() if _asyncio_running() else trio.Event()


async def sleep(seconds: float) -> None:
    """Sleep on the running event loop."""
    if _asyncio_running():
        await asyncio.sleep(seconds)
    else:
        await trio.sleep(seconds)


def _refused(host: str, port: int, exc: BaseException) -> BaseException:
    """What to raise when a connection cannot be opened: a bad certificate is not retried."""
    cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) else exc
    if isinstance(cause, ssl.SSLCertVerificationError):
        return cause
    return ConnectionLost(f"cannot connect to {host}:{port}: {exc!r}")


def _asyncio_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
