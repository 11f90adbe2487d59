"""What the sync and async clients share: settings, identity and the pool of idle connections."""

import os
import ssl
import threading
import weakref
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any, Generic, Protocol, TypeVar

from hopper_client.url import Endpoint, parse_urls
from hopper_client.wire import Identity

DEFAULT_TIMEOUT = 10.0  # seconds to wait for a reply; must exceed the broker's FETCH wait (2 s)
CONNECT_TIMEOUT = 5.0  # seconds to open a connection and finish the handshake
RETRY_FOR = 10.0  # seconds a command keeps reconnecting after losing its connection
MAX_IDLE = 16  # idle connections kept open per client
FULL_POLL = 0.05  # seconds between pushes to a full queue while `push(wait=)` waits for room


class Closable(Protocol):
    def close(self) -> None: ...


class Shared(Closable, Protocol):
    @property
    def broken(self) -> Exception | None:
        """Why the connection broke (None while it works)."""


C = TypeVar("C", bound=Closable)
S = TypeVar("S", bound=Shared)
_clients: "weakref.WeakSet[ClientBase[Any, Any]]" = weakref.WeakSet()


class ClientBase(Generic[C, S]):
    """Settings, pooled connections (C) and the connection shared for pushes (S: see
    client/shared.py); subclasses open connections and run commands."""

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        password: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = CONNECT_TIMEOUT,
        retry_for: float = RETRY_FOR,
        wid: str = "",
        labels: Iterable[str] = ("python",),
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = MAX_IDLE,
    ) -> None:
        self.endpoints = parse_urls(url, password)
        self._current = 0  # the endpoint new connections go to; the next one after a failure
        self.identity = Identity(wid=wid, labels=tuple(labels))
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retry_for = retry_for
        self.max_idle = max_idle
        if ssl_context is None and any(e.tls for e in self.endpoints):
            ssl_context = ssl.create_default_context()
        self.ssl_context = ssl_context
        self._idle: deque[C] = deque()
        self._shared: S | None = None  # the connection pushes share
        self._sharing = threading.Lock()  # held while the sync client opens a new one
        _clients.add(self)

    @property
    def endpoint(self) -> Endpoint:
        """The broker new connections go to (one of several that share a Redis)."""
        return self.endpoints[self._current]

    def _in_turn(self) -> list[Endpoint]:
        """The brokers a new connection tries, in order: the one that answered last, then the
        others of the list (several brokers on one Redis serve the same jobs)."""
        first = self._current
        return [*self.endpoints[first:], *self.endpoints[:first]]

    def _answered(self, endpoint: Endpoint) -> None:
        """`endpoint` took a connection: the next ones try it first."""
        self._current = self.endpoints.index(endpoint)

    @property
    def wid(self) -> str:
        return self.identity.wid

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.endpoint!r}, wid={self.wid!r})"

    def _take_idle(self) -> C | None:
        """An idle connection, most recently used first (deque ops are atomic: thread-safe)."""
        try:
            return self._idle.pop()
        except IndexError:
            return None

    def _give(self, conn: C) -> None:
        """Return a healthy connection to the pool, or close it when the pool is full."""
        if len(self._idle) < self.max_idle:
            self._idle.append(conn)
        else:
            conn.close()

    def _drop_idle(self) -> None:
        """Close every idle connection (after one broke, the others are likely dead too)."""
        while (conn := self._take_idle()) is not None:
            conn.close()


def _forget_inherited() -> None:
    """In a forked child, drop the parent's sockets unused: they belong to the parent."""
    for client in list(_clients):
        client._idle = deque()
        client._shared = None
        client._sharing = threading.Lock()


os.register_at_fork(after_in_child=_forget_inherited)
