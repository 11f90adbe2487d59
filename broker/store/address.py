"""Where Redis is and how to open a logged-in connection to it: redis://, rediss:// (TLS) and
unix:// URLs, TCP keepalive, the TLS handshake, and one reply read from a stream."""

import socket
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import trio
from redis.connection import parse_url

from hopper_broker.config import REDIS_TIMEOUT
from hopper_broker.sockets import RawStream
from hopper_broker.tls import redis_context
from hopper_client.schema.errors import BrokerError

READ_SIZE = 256 * 1024
# TCP keepalive, the kernel's own check beneath the timeout: it keeps the NAT and firewall
# entries of a quiet path alive, and resets a connection whose peer stopped answering probes
# (here after 30 + 3 x 10 s) whether or not this process is looking. Linux defaults: 2 hours.
KEEPALIVE_IDLE = 30  # seconds of silence before the first probe
KEEPALIVE_INTERVAL = 10  # seconds between probes
KEEPALIVE_PROBES = 3  # unanswered probes before the kernel resets the connection


class ReplyError(BrokerError):
    """Redis answered a command with an error reply."""

    def __init__(self, message: str) -> None:
        super().__init__(f"redis: {message}")
        self.reply = message


class Address:
    """Where Redis is and how to log in, parsed from a redis://, rediss:// (TLS) or unix:// URL."""

    def __init__(self, url: str) -> None:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        self.url = url
        self.display = redacted(url)
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.db: int = int(options.get("db", 0))
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")
        tls = urlsplit(url).scheme == "rediss"
        self.tls: ssl.SSLContext | None = redis_context(options) if tls else None

    async def open(self, timeout: float = REDIS_TIMEOUT) -> trio.abc.Stream:
        """Open a stream to Redis and log in within `timeout` seconds; raises OSError or
        ReplyError."""
        with trio.move_on_after(timeout):
            return await self._open()
        raise OSError(self.silent(timeout))

    async def ask(self, *command: Any, timeout: float = REDIS_TIMEOUT) -> Any:
        """One command on a connection of its own, closed after the reply (an error reply is
        returned as ReplyError); raises OSError (silence included) or ReplyError (login)."""
        with trio.move_on_after(timeout):
            stream = await self._open()
            try:
                await stream.send_all(hiredis.pack_command(command))
                reply = await read_reply(stream, hiredis.Reader())
            except trio.BrokenResourceError as exc:
                raise self._broken(exc) from None
            finally:
                await stream.aclose()
            return ReplyError(str(reply)) if isinstance(reply, hiredis.ReplyError) else reply
        raise OSError(self.silent(timeout))

    def silent(self, timeout: float) -> str:
        """The reason given when Redis does not answer in time."""
        return f"no reply from {self.display} within {timeout:g}s"

    async def _open(self) -> trio.abc.Stream:
        stream: trio.abc.Stream
        if self.path:
            stream = RawStream.from_trio(await trio.open_unix_socket(self.path))
        else:
            raw = RawStream.from_trio(await trio.open_tcp_stream(self.host, self.port))
            _keep_alive(raw.socket)
            stream = raw
            if self.tls is not None:
                stream = trio.SSLStream(raw, self.tls, server_hostname=self.host)
        try:
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
            hello: list[tuple[Any, ...]] = []
            if self.password:
                auth = (self.username, self.password) if self.username else (self.password,)
                hello.append(("AUTH", *auth))
            if self.db:
                hello.append(("SELECT", self.db))
            if hello:
                await stream.send_all(b"".join(hiredis.pack_command(c) for c in hello))
                reader = hiredis.Reader()
                for _ in hello:
                    reply = await read_reply(stream, reader)
                    if isinstance(reply, hiredis.ReplyError):
                        raise ReplyError(str(reply))
        except trio.BrokenResourceError as exc:
            await stream.aclose()
            raise self._broken(exc) from None
        except BaseException:
            await stream.aclose()
            raise
        return stream

    def _broken(self, exc: trio.BrokenResourceError) -> OSError:
        """A TLS stream's failure (an unverified certificate, a login broken off: TLS 1.3
        checks a client certificate after the handshake) as one OSError."""
        return OSError(f"TLS with {self.display}: {exc.__cause__ or 'closed'}")


def _keep_alive(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)


def redacted(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def read_reply(stream: trio.abc.Stream, reader: Any) -> Any:
    while (reply := reader.gets()) is False:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise OSError("redis closed the connection")
        reader.feed(data)
    return reply


def unread(stream: trio.abc.Stream) -> bool:
    """Whether bytes from Redis wait in the socket, not yet read (a busy process, not a silent
    Redis)."""
    raw = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
    if not isinstance(raw, RawStream):
        return False
    try:
        return bool(raw.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:  # nothing waiting (BlockingIOError), or the connection broke
        return False
