"""`SharedConnection`: one connection that a client's threads share for their pushes
(`AsyncSharedConnection`: the same for an AsyncClient's tasks).

Each thread's command is written as soon as it comes, with every other command waiting to be
written at that moment (one write), and the thread waits for its own reply; the replies come
back in the order the commands were written, so whichever waiting thread holds the read turn
reads them and hands each to its owner. Ten threads pushing at once therefore put ten
PUSH lines on one connection together, which the broker stores with one call and answers with
one write, instead of ten connections each waiting for its own round trip. Every push still
returns only once the broker has answered it.

The reading thread stops when its own reply has come and wakes the thread whose reply is owed
next to take over (a thread interrupted while it waits leaves its reply to be read and
dropped; one interrupted while it writes breaks the connection). A connection that breaks (or
stays silent past the client's timeout) fails every command waiting on it with
ConnectionLost, and is not used again.
"""

import threading
from collections import deque
from typing import TYPE_CHECKING, Generic, TypeVar

from hopper_client.base import Closable
from hopper_client.connection import Connection
from hopper_client.errors import ConnectionLost
from hopper_client.transports import Event, new_event
from hopper_client.wire import Reply

if TYPE_CHECKING:
    from hopper_client.aio_connection import AsyncConnection


class _Owed:
    """A command written whose reply is owed: the reply once read, or the error that ended
    it; `wake()` tells its caller."""

    __slots__ = ("abandoned", "done", "error", "reply")

    def __init__(self) -> None:
        self.done = False
        self.reply: Reply = None
        self.error: ConnectionLost | None = None
        self.abandoned = False  # its caller stopped waiting (interrupted): its reply is dropped

    def settle(self, reply: Reply, error: ConnectionLost | None = None) -> None:
        self.reply, self.error, self.done = reply, error, True
        self.wake()

    def wake(self) -> None:
        raise NotImplementedError


W = TypeVar("W", bound=_Owed)
C = TypeVar("C", bound=Closable)


class _InOrder(Generic[W, C]):
    """What both shared connections keep: the commands owed in the order written, the lines
    not yet written, and why the connection broke. The sync one calls these with its lock
    held."""

    def __init__(self, conn: C) -> None:
        self._conn = conn
        self._owed: deque[W] = deque()  # in the order written, reply not yet read
        self._unsent: list[bytes] = []  # lines of `_owed`'s last waiters, not yet written
        self.broken: ConnectionLost | None = None

    def _add(self, waiter: W, line: bytes) -> None:
        """Owe `waiter` a reply to `line`, to be written next; raises why it broke, if so."""
        if self.broken is not None:
            raise self.broken
        self._owed.append(waiter)
        self._unsent.append(line)

    def _take_unsent(self) -> bytes:
        data = b"".join(self._unsent)
        self._unsent.clear()
        return data

    def _answer(self, reply: Reply) -> bool:
        """Hand a reply to the first command owed; False (and broken) when none is."""
        if not self._owed:  # a reply nobody asked for: the stream is out of step
            self._break(ConnectionLost("the broker sent a reply nobody asked for"))
            return False
        self._owed.popleft().settle(reply)
        return True

    def _next_reader(self) -> W | None:
        """The first command owed whose caller still waits: it reads next."""
        return next((waiter for waiter in self._owed if not waiter.abandoned), None)

    def _break(self, error: ConnectionLost) -> None:
        """Fail every command owed and close the connection."""
        self.broken = error
        self._unsent.clear()
        while self._owed:
            self._owed.popleft().settle(None, error)
        self._conn.close()


class _Waiter(_Owed):
    """A thread's command: it waits at a gate (a bare lock, held until the thread is to
    wake: the cheapest wait CPython has)."""

    __slots__ = ("gate", "open")

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Lock()
        self.gate.acquire()
        self.open = False  # the gate was released and not yet passed (under the shared lock)

    def wake(self) -> None:
        """Let the thread through: it was answered, or it is its turn to read (the shared
        lock held)."""
        if not self.open:
            self.open = True
            self.gate.release()


class SharedConnection(_InOrder[_Waiter, Connection]):
    """A connection several threads send commands on at once, each waiting for its reply."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._writing = threading.Lock()  # one thread writes at a time
        self._lock = threading.Lock()  # `_owed`, `_unsent`, `broken` (never held while blocking)
        self._reading = threading.Lock()  # held by the thread reading replies

    def request(self, line: bytes) -> Reply:
        """Send one command line and return its reply; ConnectionLost if the connection
        breaks first (the command may or may not have run)."""
        waiter = _Waiter()
        with self._lock:
            self._add(waiter, line)
        with self._writing:  # whoever writes first sends every line waiting, in order
            with self._lock:
                data = self._take_unsent()
            if data:
                self._send(data)
        try:
            while not waiter.done:
                if self._reading.acquire(blocking=False):
                    try:
                        self._read_until(waiter)
                    finally:
                        self._reading.release()
                        self._pass_turn()
                    break
                waiter.gate.acquire()
                with self._lock:
                    waiter.open = False
        except BaseException:  # interrupted (KeyboardInterrupt): the others read on
            with self._lock:
                waiter.abandoned = True
            self._pass_turn()
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.reply

    def _send(self, data: bytes) -> None:
        """Write lines; a write cut short breaks the connection (a line may be half sent),
        so that the commands owed are sent again on a new one."""
        try:
            self._conn.send(data)
        except ConnectionLost as exc:
            with self._lock:
                self._break(exc)
        except BaseException:
            with self._lock:
                self._break(ConnectionLost("a push was interrupted while it was being sent"))
            raise

    def _read_until(self, waiter: _Waiter) -> None:
        """Read replies and hand each to its owner until `waiter` has its own."""
        while not waiter.done:
            try:
                reply = self._conn.read()
            except ConnectionLost as exc:
                with self._lock:
                    self._break(exc)
                return
            except BaseException:  # interrupted, perhaps with a reply half read: not used again
                with self._lock:
                    self._break(ConnectionLost("a read of replies was interrupted"))
                raise
            with self._lock:
                if not self._answer(reply):
                    return

    def _pass_turn(self) -> None:
        """Wake the first thread still waiting for a reply: it reads from here on."""
        with self._lock:
            if (waiter := self._next_reader()) is not None:
                waiter.wake()

    def close(self) -> None:
        """Close the connection (saying END when no reply is owed); commands still owed fail
        with ConnectionLost."""
        with self._lock:
            if self.broken is not None:
                return
            if not self._owed:
                self.broken = ConnectionLost("the client was closed")
                self._conn.close(polite=True)
                return
            self._break(ConnectionLost("the client was closed"))


class _TaskWaiter(_Owed):
    """A task's command: the event the task waits on (a new one each time it waits: trio's
    events cannot be cleared)."""

    __slots__ = ("event",)

    def __init__(self) -> None:
        super().__init__()
        self.event: Event | None = None

    def wake(self) -> None:
        if self.event is not None:
            self.event.set()


class AsyncSharedConnection(_InOrder[_TaskWaiter, "AsyncConnection"]):
    """SharedConnection for the tasks of one event loop (asyncio or trio): the same order of
    writes and replies, without locks. A task cancelled while it waits leaves its reply to be
    read and dropped; one cancelled while it writes breaks the connection (a line may be half
    sent), so the others' pushes are sent again on a new one."""

    def __init__(self, conn: "AsyncConnection") -> None:
        super().__init__(conn)
        self._writing = False
        self._reading = False

    async def request(self, line: bytes) -> Reply:
        """Send one command line and return its reply; ConnectionLost if the connection
        breaks first (the command may or may not have run)."""
        waiter = _TaskWaiter()
        self._add(waiter, line)
        if not self._writing:
            await self._write()
        try:
            while not waiter.done:
                if not self._reading:
                    await self._read_until(waiter)
                    break
                waiter.event = new_event()
                await waiter.event.wait()
        except BaseException:
            waiter.abandoned = True
            self._pass_turn()
            raise
        if waiter.error is not None:
            raise waiter.error
        return waiter.reply

    async def _write(self) -> None:
        """Send every line waiting, and those that come meanwhile, in order."""
        self._writing = True
        try:
            while data := self._take_unsent():
                await self._conn.send(data)
        except ConnectionLost as exc:
            self._break(exc)
        except BaseException:
            self._break(ConnectionLost("a push was cancelled while it was being sent"))
            raise
        finally:
            self._writing = False

    async def _read_until(self, waiter: _TaskWaiter) -> None:
        """Read replies and hand each to its owner until `waiter` has its own."""
        self._reading = True
        try:
            while not waiter.done:
                if not self._answer(await self._conn.read()):
                    break
        except ConnectionLost as exc:
            self._break(exc)
        finally:
            self._reading = False
            self._pass_turn()

    def _pass_turn(self) -> None:
        """Wake the first task still waiting for a reply: it reads from here on."""
        if not self._reading and (waiter := self._next_reader()) is not None:
            waiter.wake()

    def close(self) -> None:
        """Close the connection; commands still owed fail with ConnectionLost."""
        if self.broken is None:
            self._break(ConnectionLost("the client was closed"))
