"""`Client.events()` / `AsyncClient.events()`: the broker's event stream (EVENTS, a Hopper
extension) as an iterator of `JobEvent`, on a connection of its own.

Delivery is at most once. When the connection breaks, the stream connects again (for up to
the client's `retry_for`) and yields `JobEvent("missed")` with no count: events of the gap are
lost. The broker says the same, with a count, when this reader was too slow to keep up.
"""

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from hopper_client.backoff import Backoff
from hopper_client.commands import data, value
from hopper_client.errors import ConnectionLost, ServerError
from hopper_client.schema.jobs import JobEvent, encode, job_event_decoder
from hopper_client.transports import sleep
from hopper_client.wire import CRLF, Reply

if TYPE_CHECKING:
    from hopper_client.aio import AsyncClient
    from hopper_client.aio_connection import AsyncConnection
    from hopper_client.client import Client
    from hopper_client.connection import Connection

QUIET = 365 * 86_400.0  # seconds a stream waits for its next event: as long as it takes
GAP = JobEvent("missed")  # what a reconnected stream yields first


def events_line(
    queues: Iterable[str] | None,
    jobtypes: Iterable[str] | None,
    jids: Iterable[str] | None,
    events: Iterable[str] | None,
) -> bytes:
    """The EVENTS command for a filter (None: not filtered on that)."""
    lists = {"queues": queues, "jobtypes": jobtypes, "jids": jids, "events": events}
    wanted = {name: list(values) for name, values in lists.items() if values is not None}
    return b"EVENTS " + encode(wanted) + CRLF


def _event(reply: Reply) -> JobEvent:
    return job_event_decoder.decode(data(reply))


def _subscribed(reply: Reply) -> None:
    if value(reply) != b"OK":
        raise ServerError("ERR", f"EVENTS answered {reply!r}")


class EventStream(Iterator[JobEvent]):
    """The events a filter asks for, as they happen: `for event in client.events(...)`; use it
    as a context manager (or call `close()`) to end it."""

    def __init__(self, client: "Client", line: bytes) -> None:
        self._client = client
        self._line = line
        self._conn: Connection | None = self._open()

    def _open(self) -> "Connection":
        conn = self._client._open()
        try:
            _subscribed(conn.request(self._line))
        except BaseException:
            conn.close()
            raise
        conn.settimeout(QUIET)
        return conn

    def __next__(self) -> JobEvent:
        if self._conn is None:
            raise StopIteration
        try:
            return _event(self._conn.read())
        except ConnectionLost as exc:
            self._conn.close()
            self._conn = None
            backoff = Backoff(self._client.retry_for)
            while self._conn is None:
                time.sleep(backoff.delay(exc))
                try:
                    self._conn = self._open()
                except ConnectionLost as again:
                    exc = again
            return GAP

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close(polite=True)
            self._conn = None

    def __enter__(self) -> "EventStream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class AsyncEventStream:
    """`EventStream` for async code: `async with client.events(...) as stream:` then
    `async for event in stream`."""

    def __init__(self, client: "AsyncClient", line: bytes) -> None:
        self._client = client
        self._line = line
        self._conn: AsyncConnection | None = None

    async def _open(self) -> "AsyncConnection":
        conn = await self._client._open()
        try:
            _subscribed(await conn.request(self._line))
        except BaseException:
            conn.close()
            raise
        conn.settimeout(QUIET)
        return conn

    def __aiter__(self) -> "AsyncEventStream":
        return self

    async def __anext__(self) -> JobEvent:
        if self._conn is None:
            self._conn = await self._open()
        try:
            return _event(await self._conn.read())
        except ConnectionLost as exc:
            self._conn.close()
            self._conn = None
            backoff = Backoff(self._client.retry_for)
            while self._conn is None:
                await sleep(backoff.delay(exc))
                try:
                    self._conn = await self._open()
                except ConnectionLost as again:
                    exc = again
            return GAP

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    async def __aenter__(self) -> "AsyncEventStream":
        self._conn = await self._open()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose()
