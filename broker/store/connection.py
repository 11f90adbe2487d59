"""A small trio-native Redis client on hiredis's packer and parser.

`Pipeline` is one auto-pipelining connection: every caller's commands are queued, sent together
in one write, and a reader task hands the replies back in order. Concurrent callers therefore
share round trips without knowing about each other. While an earlier write awaits its reply (a
busy broker), a writer task sends what accumulated when it gets its turn, one pass of trio's
scheduler later, so the commands of the tasks woken meanwhile join the write. A command with
nothing else in flight (a lone client) is sent when the pass that queued it ends (a hook of
loop_idle.py, run before the loop sleeps), without waking the writer or waiting for another
pass. If the connection drops, every waiting caller gets `RedisUnavailable` and the connection
is re-opened in the background; nothing is ever re-sent silently, because a command already
written may or may not have run (the store only sends idempotent scripts and reconciles in
reapers).

A connection can also go silent without closing (a NAT or proxy that stops forwarding, a host
gone without a reset). Each connection therefore has a deadline, `redis_timeout`: Redis silent
that long while a reply is owed means the connection is dead, and it is handled as if it had
dropped. A quiet connection is probed with a PING after the same silence, so a dead one is
found within twice the timeout, before a command needs it.

`Subscriber` is a dedicated connection for SUBSCRIBE, which blocks on the server.
"""

import contextlib
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

import hiredis
import outcome
import trio

from hopper_broker.config import REDIS_TIMEOUT
from hopper_broker.errors import RedisUnavailable
from hopper_broker.loop_idle import LoopIdle
from hopper_broker.sockets import RawStream
from hopper_broker.store.address import READ_SIZE, Address, ReplyError, read_reply, unread

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 10_000  # commands written but not answered; callers past it wait their turn
RECONNECT_DELAYS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # seconds; the last repeats
PING = hiredis.pack_command(("PING",))
# What a Redis connection raises when it breaks (or Redis closes it, or sends garbage).
CONNECTION_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    hiredis.ProtocolError,
)


class _Waiter:
    """Replies owed to one caller: the task to wake, how many replies, and those received."""

    __slots__ = ("count", "replies", "task")

    def __init__(self, task: trio.lowlevel.Task | None, count: int) -> None:
        self.task = task
        self.count = count
        self.replies: list[Any] = []

    def abort(self, _: Any) -> trio.lowlevel.Abort:
        """The caller was cancelled: its replies will still come, and are dropped."""
        self.task = None
        return trio.lowlevel.Abort.SUCCEEDED


class Connection(Protocol):
    """What the store needs of its way to Redis: one node's Pipeline, or a whole cluster's
    (store/cluster.py: ClusterPipeline)."""

    @property
    def connections(self) -> int:
        """A number that changes when a connection is made again."""

    async def execute(self, *args: Any) -> Any:
        """One command's reply (an error reply as a ReplyError value)."""

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands' replies, in order."""

    async def wait_replicas(self, replicas: int, timeout_ms: int, keys: Sequence[str]) -> int:
        """How many replicas have every write sent so far (WAIT), on the nodes of `keys`."""

    async def on_every_master(self, *args: Any) -> list[Any]:
        """One command on every node that holds data (one Redis: itself): their replies."""

    def node_address(self) -> Address:
        """A node to subscribe to (pub/sub)."""

    def master_addresses(self) -> list[Address]:
        """Every node that runs scripts (one Redis: itself; a cluster: its masters)."""

    def scan(self, pattern: str, count: int) -> AsyncIterator[list[bytes]]:
        """The keys matching a glob, one SCAN step (of about `count`) at a time."""


class Pipeline:
    """One auto-pipelining Redis connection shared by every concurrent caller.

    `timeout()` gives `redis_timeout` in seconds; it is read at each use, so it may change.
    """

    connections = 0  # connections made so far (a reconnect is a new one)

    def __init__(self, address: Address, timeout: Callable[[], float] = lambda: REDIS_TIMEOUT):
        self.address = address
        self.timeout = timeout
        self._stream: trio.abc.Stream | None = None
        self._out: list[bytes] = []
        self._socket: socket.socket | None = None  # a plain connection's socket, sent on directly
        self._writer_busy = False  # the writer task is woken or writing: _out is its to send
        self.last_error: Exception | None = None  # why the last attempt to connect failed
        self._waiters: deque[_Waiter] = deque()
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._room_lot = trio.lowlevel.ParkingLot()
        # trio time when Redis was last heard from, or when a reply became owed after a quiet
        # spell (the silence that counts starts then); the watchdog's only input.
        self._heard = 0.0
        self._lost = ""  # why the watchdog gave the connection up

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; raises ReplyError or RedisUnavailable."""
        return (await self._call([hiredis.pack_command(args)]))[0]

    async def wait_replicas(self, replicas: int, timeout_ms: int, keys: Sequence[str]) -> int:
        """How many replicas have every write sent so far on this connection (WAIT); `keys`
        name the writes (all on this node)."""
        acked = await self.execute("WAIT", replicas, timeout_ms)
        if isinstance(acked, ReplyError):
            raise acked
        return int(acked)

    def node_address(self) -> Address:
        return self.address

    async def on_every_master(self, *args: Any) -> list[Any]:
        return [await self.execute(*args)]

    def master_addresses(self) -> list[Address]:
        return [self.address]

    async def scan(self, pattern: str, count: int) -> AsyncIterator[list[bytes]]:
        cursor = 0
        while True:
            reply = await self.execute("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            if isinstance(reply, ReplyError):
                raise reply
            yield reply[1]
            cursor = int(reply[0])
            if cursor == 0:
                return

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands back to back and return their replies in order.

        Error replies come back as ReplyError values, not raised, so the caller sees each
        command's outcome.
        """
        return await self._call([hiredis.pack_command(c) for c in commands])

    async def _call(self, packed: list[bytes]) -> list[Any]:
        """Send packed commands and wait for their replies."""
        while len(self._waiters) >= MAX_IN_FLIGHT:
            await self._room_lot.park()
        if self._stream is None:
            raise RedisUnavailable(f"not connected to {self.address.display}")
        waiter = _Waiter(trio.lowlevel.current_task(), len(packed))
        self._send(packed, waiter)
        replies: list[Any] = await trio.lowlevel.wait_task_rescheduled(waiter.abort)
        return replies

    def post(self, *args: Any) -> None:
        """Send a command without waiting for its reply (idempotent clean-ups only).

        Its reply is dropped (an error reply is logged); if Redis is not connected, the command
        is not sent at all.
        """
        if self._stream is None:
            log.warning("redis not connected; dropped %s", args[0])
            return
        self._send([hiredis.pack_command(args)], _Waiter(None, 1))

    def _send(self, packed: list[bytes], waiter: _Waiter) -> None:
        if not self._waiters:
            self._heard = trio.current_time()
        # Outside the writer's turn, every command sent so far is out of _out: with _out empty,
        # a caller already waiting means an earlier write awaits its reply.
        owed = bool(self._waiters) and not self._out
        self._out.extend(packed)
        self._waiters.append(waiter)
        if (owed or self._socket is None) and not self._writer_busy:
            self._writer_busy = True
            self._writer_lot.unpark()

    def pass_ended(self) -> bool:
        """Send what the tasks of the scheduler pass just ended queued, in one write, unless
        the writer task has it; what the kernel does not take at once (or a failure) is left
        to the writer task (then True: the loop has work)."""
        if not self._out or self._writer_busy or self._socket is None:
            return False
        data = b"".join(self._out)
        self._out.clear()
        try:
            sent = self._socket.send(data)
        except (OSError, ValueError):  # full, broken or closed: the writer finds out which
            sent = 0
        if sent < len(data):
            self._out.append(data[sent:])
            self._writer_busy = True
            # The loop timed its wait before this hook ran: a task merely rescheduled here
            # would wait with it, so the writer is woken through the loop's wake-up channel.
            trio.lowlevel.current_trio_token().run_sync_soon(self._writer_lot.unpark)
            return True
        return False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the connection open until cancelled; reports started after the first connect."""
        attempt = 0
        started = False
        while True:
            try:
                self._stream = await self.address.open(self.timeout())
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
            self.connections += 1  # WAIT counts the writes of this connection only
            if not started:
                task_status.started()
                started = True
            self._heard = trio.current_time()
            self._lost = ""
            self._writer_busy = False
            idle = LoopIdle.current()
            if isinstance(self._stream, RawStream):
                self._socket = self._stream.socket
                idle.add_hook(self.pass_ended)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, nursery.cancel_scope)
                    nursery.start_soon(self._read_loop, nursery.cancel_scope)
                    nursery.start_soon(self._watch, nursery.cancel_scope)
            finally:
                if self._socket is not None:
                    self._socket = None
                    idle.remove_hook(self.pass_ended)
                stream, self._stream = self._stream, None
                lost = self._lost or f"connection to {self.address.display} lost"
                self._fail_all(RedisUnavailable(lost))
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
                    self._writer_busy = False
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
                self._heard = trio.current_time()
                reader.feed(data)  # type: ignore[arg-type]  # TLS reads bytearrays: hiredis takes any buffer
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

    async def _watch(self, scope: trio.CancelScope) -> None:
        """Give the connection up when a reply is owed and Redis has been silent for the
        timeout; probe a quiet connection with a PING after the same silence.

        One task looking at one timestamp, so commands carry no timer of their own. The PING
        (at most one per timeout, nothing for Redis) finds a dead idle connection within twice
        the timeout and replaces it, instead of leaving the next command to wait the timeout
        out and fail.
        """
        while True:
            timeout = self.timeout()
            deadline = self._heard + timeout
            if trio.current_time() < deadline:
                await trio.sleep_until(deadline)
            elif not self._waiters:
                self.post("PING")  # owes a reply now: the silence counts from here
            elif self._stream is not None and unread(self._stream):
                self._heard = trio.current_time()  # Redis spoke; this process was too busy to read
            else:
                self._lost = self.address.silent(timeout)
                log.warning("redis: %s", self._lost)
                scope.cancel()
                return


class Subscriber:
    """A dedicated connection subscribed to some channels; yields each message as (channel,
    data).

    A broken connection raises one of CONNECTION_ERRORS (from `open()` or the iteration), and
    so does a silent one: after `timeout()` seconds without a reply the connection is
    probed with a PING (allowed while subscribed; the reply is ["pong", ""]), and no reply
    within `timeout()` more raises OSError.
    """

    def __init__(
        self,
        address: Address,
        channels: Sequence[str],
        timeout: Callable[[], float] = lambda: REDIS_TIMEOUT,
    ) -> None:
        self.address = address
        self.channels = channels
        self.timeout = timeout

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[tuple[bytes, bytes]]]:
        stream = await self.address.open(self.timeout())
        try:
            subscribe: tuple[Any, ...] = ("SUBSCRIBE", *self.channels)
            await stream.send_all(hiredis.pack_command(subscribe))
            reader = hiredis.Reader()
            for _ in self.channels:
                await self._reply(stream, reader)  # the subscribe confirmations
            yield self._messages(stream, reader)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _messages(
        self, stream: trio.abc.Stream, reader: Any
    ) -> AsyncIterator[tuple[bytes, bytes]]:
        while True:
            with trio.move_on_after(self.timeout()) as quiet:
                reply = await read_reply(stream, reader)
            if quiet.cancelled_caught:
                await stream.send_all(PING)
                reply = await self._reply(stream, reader)  # the pong, or any message
            if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
                yield reply[1], reply[2]

    async def _reply(self, stream: trio.abc.Stream, reader: Any) -> Any:
        """The next reply; OSError if none comes within the timeout."""
        timeout = self.timeout()
        with trio.move_on_after(timeout):
            return await read_reply(stream, reader)
        raise OSError(self.address.silent(timeout))
