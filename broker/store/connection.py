"""A small trio-native Redis client on hiredis's packer and parser.

`Pipeline` is one auto-pipelining connection: every caller's commands are queued, a writer
task sends whatever has accumulated in one write, and a reader task hands the replies back in
order. Concurrent callers therefore share round trips without knowing about each other. If the
connection drops, every waiting caller gets `RedisUnavailable` and the connection is re-opened
in the background; nothing is ever re-sent silently, because a command already written may or
may not have run (the store only sends idempotent scripts and reconciles in reapers).

`Subscriber` is a dedicated connection for SUBSCRIBE, which blocks on the server.
"""

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import hiredis
import outcome
import trio
from redis.connection import parse_url

from broker.errors import BrokerError, RedisUnavailable
from broker.sockets import RawStream

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
MAX_IN_FLIGHT = 10_000  # commands written but not answered; callers past it wait their turn
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # seconds; the last repeats
# What a Redis connection raises when it breaks (or Redis closes it, or sends garbage).
CONNECTION_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    hiredis.ProtocolError,
)


class ReplyError(BrokerError):
    """Redis answered a command with an error reply."""

    def __init__(self, message: str) -> None:
        super().__init__(f"redis: {message}")
        self.reply = message


class Address:
    """Where Redis is and how to log in, parsed from a redis:// or unix:// URL."""

    def __init__(self, url: str) -> None:
        options = parse_url(url)  # type: ignore[no-untyped-call]
        self.url = url
        self.display = _redacted(url)
        self.path: str | None = options.get("path")
        self.host: str = options.get("host", "localhost")
        self.port: int = int(options.get("port", 6379))
        self.db: int = int(options.get("db", 0))
        self.username: str | None = options.get("username")
        self.password: str | None = options.get("password")

    async def open(self) -> RawStream:
        """Open a stream to Redis and log in; raises OSError or ReplyError."""
        if self.path:
            stream = RawStream.from_trio(await trio.open_unix_socket(self.path))
        else:
            stream = RawStream.from_trio(await trio.open_tcp_stream(self.host, self.port))
        try:
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
                    reply = await _read_reply(stream, reader)
                    if isinstance(reply, hiredis.ReplyError):
                        raise ReplyError(str(reply))
        except BaseException:
            await stream.aclose()
            raise
        return stream


def _redacted(url: str) -> str:
    """The URL with any password replaced, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def _read_reply(stream: RawStream, reader: Any) -> Any:
    while (reply := reader.gets()) is False:
        data = await stream.receive_some(READ_SIZE)
        if not data:
            raise OSError("redis closed the connection")
        reader.feed(data)
    return reply


class _Waiter:
    """Replies owed to one caller: the task to wake, how many replies, and those received."""

    __slots__ = ("count", "replies", "task")

    def __init__(self, task: trio.lowlevel.Task | None, count: int) -> None:
        self.task = task
        self.count = count
        self.replies: list[Any] = []


class Pipeline:
    """One auto-pipelining Redis connection shared by every concurrent caller."""

    def __init__(self, address: Address) -> None:
        self.address = address
        self._stream: RawStream | None = None
        self._out: list[bytes] = []
        self.last_error: Exception | None = None  # why the last attempt to connect failed
        self._waiters: deque[_Waiter] = deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._room_lot = trio.lowlevel.ParkingLot()

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; raises ReplyError or RedisUnavailable."""
        return (await self.execute_many([args]))[0]

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands back to back and return their replies in order.

        Error replies come back as ReplyError values, not raised, so the caller sees each
        command's outcome.
        """
        while len(self._waiters) >= MAX_IN_FLIGHT:
            await self._room_lot.park()
        if self._stream is None:
            raise RedisUnavailable(f"not connected to {self.address.display}")
        waiter = _Waiter(trio.lowlevel.current_task(), len(commands))
        self._out.extend(hiredis.pack_command(c) for c in commands)
        self._waiters.append(waiter)
        self._writer_lot.unpark()

        def abort(_: Any) -> trio.lowlevel.Abort:
            waiter.task = None  # the replies will still come; they are dropped
            return trio.lowlevel.Abort.SUCCEEDED

        replies: list[Any] = await trio.lowlevel.wait_task_rescheduled(abort)
        return replies

    def post(self, *args: Any) -> None:
        """Send a command without waiting for its reply (idempotent clean-ups only).

        Its reply is dropped (an error reply is logged); if Redis is not connected, the command
        is not sent at all.
        """
        if self._stream is None:
            log.warning("redis not connected; dropped %s", args[0])
            return
        self._out.append(hiredis.pack_command(args))
        self._waiters.append(_Waiter(None, 1))
        self._writer_lot.unpark()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection open until cancelled; reports started after the first connect."""
        attempt = 0
        started = False
        while True:
            try:
                self._stream = await self.address.open()
            except (OSError, ReplyError) as exc:
                self.last_error = exc
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                log.warning(
                    "redis %s unreachable (%s); retrying in %.2fs", self.address.display, exc, delay
                )
                attempt += 1
                await trio.sleep(delay)
                continue
            attempt = 0
            if not started:
                task_status.started()
                started = True
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, nursery.cancel_scope)
                    nursery.start_soon(self._read_loop, nursery.cancel_scope)
            finally:
                stream, self._stream = self._stream, None
                self._fail_all(RedisUnavailable(f"connection to {self.address.display} lost"))
                with trio.CancelScope(shield=True):
                    await stream.aclose()
            log.warning("redis connection %s lost; reconnecting", self.address.display)

    def _fail_all(self, error: Exception) -> None:
        self._out.clear()
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if waiter.task is not None:
                trio.lowlevel.reschedule(waiter.task, outcome.Error(error))
        self._room_lot.unpark_all()

    async def _write_loop(self, scope: trio.CancelScope) -> None:
        assert self._stream is not None
        try:
            while True:
                if not self._out:
                    await self._writer_lot.park()
                    continue
                data = b"".join(self._out)
                self._out.clear()
                await self._stream.send_all(data)
        except CONNECTION_ERRORS as exc:
            log.warning("redis write failed: %s", exc)
            scope.cancel()

    async def _read_loop(self, scope: trio.CancelScope) -> None:
        assert self._stream is not None
        reader = hiredis.Reader()
        waiters = self._waiters
        try:
            while True:
                data = await self._stream.receive_some(READ_SIZE)
                if not data:
                    raise OSError("redis closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    waiter = waiters[0]
                    if isinstance(reply, hiredis.ReplyError):
                        reply = ReplyError(str(reply))
                        if waiter.task is None:
                            log.warning("redis error for a posted command: %s", reply.reply)
                    waiter.replies.append(reply)
                    if len(waiter.replies) == waiter.count:
                        waiters.popleft()
                        if waiter.task is not None:
                            trio.lowlevel.reschedule(waiter.task, outcome.Value(waiter.replies))
                if self._room_lot:
                    self._room_lot.unpark_all()
        except CONNECTION_ERRORS as exc:
            log.warning("redis read failed: %s", exc)
            scope.cancel()


class Subscriber:
    """A dedicated connection subscribed to one channel; yields each message's data.

    A broken connection raises one of CONNECTION_ERRORS (from `open()` or the iteration).
    """

    def __init__(self, address: Address, channel: str) -> None:
        self.address = address
        self.channel = channel

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[bytes]]:
        stream = await self.address.open()
        try:
            subscribe: tuple[Any, ...] = ("SUBSCRIBE", self.channel)
            await stream.send_all(hiredis.pack_command(subscribe))
            reader = hiredis.Reader()
            await _read_reply(stream, reader)  # the subscribe confirmation
            yield self._messages(stream, reader)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    @staticmethod
    async def _messages(stream: RawStream, reader: Any) -> AsyncIterator[bytes]:
        while True:
            reply = await _read_reply(stream, reader)
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                yield reply[2]
