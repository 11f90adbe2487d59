"""The only module with client sockets: listeners, one task per connection, deadlines.

recv -> protocol.LineReader -> Commands.run -> send: every command received together is run in
order and their replies go out in one write. Framing violations close the connection; an
unexpected error closes only its own connection.
"""

import contextlib
import logging
import socket
import ssl
from collections.abc import Callable

import msgspec
import trio

from hopper_broker import protocol
from hopper_broker.commands import Commands
from hopper_broker.config import MAX_HELLO_BYTES, Config
from hopper_broker.errors import ProtocolError
from hopper_broker.events import EventHub
from hopper_broker.manager import Manager
from hopper_broker.protocol import Command, LineReader
from hopper_broker.session import Session
from hopper_broker.sockets import RawStream, accept_forever, listen
from hopper_client.schema.errors import SHUTTING_DOWN, BrokerError

log = logging.getLogger(__name__)

READ_SIZE = 64 * 1024
SHUTDOWN_REPLY = protocol.error(f"ERR {SHUTTING_DOWN}")


class Connection:
    """What the server tracks of an open client connection."""

    __slots__ = (
        "busy",
        "last_active",
        "line_started",
        "read_scope",
        "scope",
        "send_started",
        "sock",
        "stopped",
        "tls",
        "wid",
    )

    def __init__(self, sock: socket.socket, tls: bool = False) -> None:
        self.sock = sock
        self.tls = tls  # a TLS stream cannot be half-closed under it: its reads are cancelled
        self.stopped = False  # TLS: stop_reading() was called
        self.read_scope: trio.CancelScope | None = None  # TLS: around the read under way
        self.scope = trio.CancelScope()  # the whole connection
        self.busy = True  # False only while waiting for the next command
        self.last_active = trio.current_time()
        self.line_started: float | None = None  # when the unfinished line received began
        self.send_started: float | None = None  # when the reply being sent began
        self.wid = ""

    def stop_reading(self) -> None:
        """End the connection between commands: its next read sees end-of-file.

        A command already received still runs and gets its reply; nothing is cancelled.
        """
        if self.tls:
            self.stopped = True
            if self.read_scope is not None:
                self.read_scope.cancel()
            return
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)


async def _receive(stream: trio.abc.Stream, conn: Connection) -> bytes | bytearray:
    """The next bytes of a connection, or b'' (as end-of-file) once stop_reading() asks."""
    if not conn.tls:
        return await stream.receive_some(READ_SIZE)
    if not conn.stopped:
        with trio.CancelScope() as conn.read_scope:
            return await stream.receive_some(READ_SIZE)
    return b""


class Server:
    """Accepts Faktory-protocol connections and runs their commands."""

    def __init__(
        self,
        manager: Manager,
        config: Callable[[], Config],
        events: EventHub,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.manager = manager
        self.events = events
        self.commands = Commands(manager)
        self.stats = manager.stats
        self.config = config
        self.ssl_context = ssl_context
        self.connections: set[Connection] = set()
        self.closing = False
        self._accepting = trio.CancelScope()
        self._listeners: list[socket.socket] = []
        self._hashing = trio.CapacityLimiter(1)  # password checks: one thread, the loop free

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until begin_shutdown(); then give open connections the grace period to finish.

        Reports the bound port once listening.
        """
        config = self.config()
        listeners = self._listeners = listen(config.host, config.port, reuse_port=config.reuse_port)
        try:
            async with trio.open_nursery() as connections:
                task_status.started(listeners[0].getsockname()[1])
                with self._accepting:
                    async with trio.open_nursery() as accepting:
                        accepting.start_soon(self._close_idle)
                        for listener in listeners:
                            accepting.start_soon(
                                accept_forever, listener, self._handle, connections
                            )
                deadline = trio.current_time() + self.config().shutdown_grace
                connections.cancel_scope.deadline = deadline
        finally:
            for listener in listeners:
                listener.close()

    def close_worker(self, wid: str) -> None:
        """Close every connection of a worker (it stopped beating)."""
        for conn in list(self.connections):
            if conn.wid == wid:
                conn.scope.cancel()

    def _stream(self, sock: socket.socket) -> trio.abc.Stream:
        if self.ssl_context is None:
            return RawStream(sock)
        plain = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
        return trio.SSLStream(plain, self.ssl_context, server_side=True)

    async def _handle(self, sock: socket.socket) -> None:
        stream = self._stream(sock)
        conn = Connection(sock, tls=self.ssl_context is not None)
        session = Session(self.config().password)
        reader = LineReader(MAX_HELLO_BYTES)
        joined = False
        try:
            with conn.scope:
                if not await self._handshake(stream, reader, session):
                    return
                config = self.config()
                reader.max_line = config.max_line_bytes
                if len(self.connections) >= config.max_connections:
                    await stream.send_all(
                        protocol.error(f"ERR too many connections: {len(self.connections)}")
                    )
                    return
                self.connections.add(conn)
                self.stats.connections += 1
                if session.wid:
                    conn.wid = session.wid
                    info = msgspec.json.encode(session.hello)
                    await self.manager.workers.join(session.wid, self.manager.clock(), info)
                    joined = True
                await stream.send_all(protocol.OK)
                await self._serve(stream, reader, session, conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the client went away
        except ProtocolError as exc:
            log.info("closing connection: %s", exc)
            if exc.reply:
                with trio.move_on_after(1):
                    await _send_quietly(stream, protocol.error(exc.reply))
        except BrokerError as exc:  # the worker could not be registered (Redis away)
            log.warning("closing connection: %s", exc)
            with trio.move_on_after(1):
                await _send_quietly(stream, protocol.error(exc.render()))
        except Exception:  # a bug: this connection closes, the others carry on
            log.exception("closing connection after an unexpected error")
        finally:
            if conn in self.connections:
                self.connections.discard(conn)
                self.stats.connections -= 1
            with trio.CancelScope(shield=True):
                if joined:
                    with trio.move_on_after(2):
                        try:
                            await self.manager.workers.leave(session.wid)
                        except BrokerError as exc:
                            log.warning("could not unregister worker %s: %s", session.wid, exc)
                await trio.aclose_forcefully(stream)

    async def _handshake(
        self, stream: trio.abc.Stream, reader: LineReader, session: Session
    ) -> bool:
        """Greet, then read and check HELLO within the deadline (a TLS handshake included);
        False means close without a word."""
        with trio.move_on_after(self.config().handshake_timeout):
            await stream.send_all(session.greeting())
            while (command := reader.next_command()) is None:
                data = await stream.receive_some(READ_SIZE)
                if not data:
                    return False
                reader.feed(data)
            try:
                if session.password:  # thousands of hash rounds: keep them off the event loop
                    await trio.to_thread.run_sync(session.handshake, command, limiter=self._hashing)
                else:
                    session.handshake(command)
            except ProtocolError as exc:
                log.debug("handshake refused: %s", exc)
                return False
            except BrokerError as exc:
                await stream.send_all(protocol.error(exc.render()))
                return False
            return True
        return False

    async def _serve(
        self, stream: trio.abc.Stream, reader: LineReader, session: Session, conn: Connection
    ) -> None:
        replies: list[bytes] = []
        batch: list[Command] = []
        while True:
            if not batch and reader.pending:  # nothing received since the last look: skip it
                batch = reader.commands()
                self.stats.commands += len(batch)
            if batch:
                conn.line_started = None
                if self.closing:  # one refusal for each command not run
                    await _send(stream, conn, b"".join([*replies, SHUTDOWN_REPLY * len(batch)]))
                    return
                more, done, ended = await self.commands.run(session, batch)
                replies += more
                batch = batch[done:]
                if ended:
                    if replies:
                        await _send(stream, conn, b"".join(replies))
                    if batch[0].verb == "EVENTS":
                        await self._stream_events(stream, conn, batch[0].arg)
                    return
                if batch and replies:  # what is left would wait: answer what is done first
                    await _send(stream, conn, b"".join(replies))
                    replies.clear()
                continue
            if replies:
                await _send(stream, conn, b"".join(replies))
                replies.clear()
            if self.closing:
                return
            if reader.pending and conn.line_started is None:
                conn.line_started = trio.current_time()
            conn.busy = False
            if conn.tls:
                data = await _receive(stream, conn)
            else:  # the plain path, without a call of its own
                data = await stream.receive_some(READ_SIZE)
            conn.busy = True
            if not data:  # closed by the client, idle too long, stalled, or shutting down
                limit = self.config().line_timeout
                if (
                    conn.line_started is not None
                    and trio.current_time() - conn.line_started >= limit
                ):
                    reply = f"ERR line not completed within {limit:g}s"
                    raise ProtocolError("line not completed in time", reply)
                return
            conn.last_active = trio.current_time()
            reader.feed(data)

    async def _stream_events(self, stream: trio.abc.Stream, conn: Connection, arg: bytes) -> None:
        """EVENTS: `+OK`, then the events the filter `arg` asks for, each as a bulk string,
        until the client sends anything (END) or goes; the connection then closes."""
        try:
            async with self.events.subscribe(arg) as subscription:
                await _send(stream, conn, protocol.OK)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_cancel_on_input, stream, conn, nursery.cancel_scope)
                    while True:
                        lines = await subscription.take()
                        await _send(stream, conn, b"".join(map(protocol.bulk, lines)))
        except BrokerError as exc:
            await _send(stream, conn, protocol.error(exc.render()))

    def begin_shutdown(self) -> None:
        """Answer every further command with an error, and close connections between commands."""
        self.closing = True
        self._accepting.cancel()
        for listener in self._listeners:  # new clients go to brokers still serving, or refused
            trio.lowlevel.notify_closing(listener)
            listener.close()
        self.manager.close()
        for conn in self.connections:
            conn.stop_reading()

    async def _close_idle(self) -> None:
        """Every so often, close connections idle for idle_timeout, and those stuck for
        line_timeout in the middle of a command line (slowloris) or of a reply (not read)."""
        while True:
            config = self.config()
            limit = min(config.idle_timeout, config.line_timeout)
            await trio.sleep(min(max(limit / 4, 0.01), 1.0))
            now = trio.current_time()
            idle, stuck = now - config.idle_timeout, now - config.line_timeout
            for conn in list(self.connections):
                if conn.busy:
                    if conn.send_started is not None and conn.send_started < stuck:
                        log.info(
                            "closing a connection that took no reply for %gs", config.line_timeout
                        )
                        conn.scope.cancel()
                elif conn.line_started is not None and conn.line_started < stuck:
                    log.info("closing a connection stuck in a line for %gs", config.line_timeout)
                    conn.stop_reading()
                elif conn.last_active < idle:
                    log.info("closing a connection idle for %.0fs", config.idle_timeout)
                    conn.stop_reading()


async def _send(stream: trio.abc.Stream, conn: Connection, data: bytes) -> None:
    """Send a reply, noting when it began so a client that reads nothing can be found."""
    conn.send_started = trio.current_time()
    await stream.send_all(data)
    conn.send_started = None


async def _cancel_on_input(
    stream: trio.abc.Stream, conn: Connection, scope: trio.CancelScope
) -> None:
    """Cancel `scope` once the client sends anything or closes (or shutdown stops reading)."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await _receive(stream, conn)
    scope.cancel()


async def _send_quietly(stream: trio.abc.Stream, data: bytes) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        await stream.send_all(data)
