"""The event stream (EVENTS): what happens to jobs, as it happens, for subscribers on any
broker sharing the Redis.

The scripts publish events on one Redis channel, but only while some broker listens on it
(they ask Redis, PUBSUB NUMSUB), so without subscribers an event costs nothing. This process
listens while it has subscribers of its own, and hands each event line to those whose filter
matches. Delivery is at most once: each subscriber has a buffer of `event_buffer` events; a
subscriber that reads too slowly loses the events that do not fit, and the next event it gets
is preceded by `{"event":"missed","count":N}` (no count when the loss is unknown: the broker's
link to Redis broke). One job's events arrive in the order they happened: the scripts that
make them run one at a time in Redis, and Redis delivers a channel's messages in order.

On a Redis Cluster, PUBSUB NUMSUB counts one node's subscribers while a PUBLISH reaches every
node: this process listens on one master and holds a gate channel (never published on) on
each of the others, so that the scripts of every master publish, and it hears each event once.
"""

import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable

import msgspec
import trio

from hopper_broker.store.address import Address
from hopper_broker.store.connection import CONNECTION_ERRORS, Subscriber
from hopper_broker.store.keys import EVENTS_CHANNEL, EVENTS_GATE
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import decode_input, encode

log = logging.getLogger(__name__)

MAX_FILTER = 1000  # names one filter list may hold
RESUBSCRIBE_DELAY = 1.0  # seconds before listening again after the link to Redis broke
GATES_CHECKED = 5.0  # seconds between looks at a cluster's masters, for the gates they need
UNKNOWN_LOSS = b'{"event":"missed"}'


class Filter(msgspec.Struct, forbid_unknown_fields=True):
    """The argument of EVENTS: each given list must contain the event's value (any-of within
    a list, all of the lists together); none given: every event."""

    queues: list[str] | None = None
    jobtypes: list[str] | None = None
    jids: list[str] | None = None
    events: list[str] | None = None


class Event(msgspec.Struct):
    """What a filter looks at in an event line (the line itself is passed on as it is)."""

    event: str
    jid: str = ""
    queue: str = ""
    jobtype: str = ""


filter_decoder = msgspec.json.Decoder(Filter)
event_decoder = msgspec.json.Decoder(Event)


class Subscription:
    """One subscriber: its filter and its bounded buffer of event lines."""

    def __init__(self, wanted: Filter, size: int) -> None:
        self.sets = [
            (name, frozenset(values))
            for name in ("queues", "jobtypes", "jids", "events")
            if (values := getattr(wanted, name)) is not None
        ]
        self.size = size
        self.lines: deque[bytes] = deque()
        self.missed = 0
        self.unknown_loss = False
        self._ready = trio.Event()

    def matches(self, event: Event) -> bool:
        values = {"queues": event.queue, "jobtypes": event.jobtype, "jids": event.jid}
        return all(values.get(name, event.event) in wanted for name, wanted in self.sets)

    def offer(self, line: bytes) -> None:
        """Keep `line` if the buffer has room; else count it as missed."""
        if len(self.lines) >= self.size:
            self.missed += 1
            return
        if self.missed or self.unknown_loss:
            notice = encode({"event": "missed", "count": self.missed}) if self.missed else None
            self.lines.append(notice or UNKNOWN_LOSS)
            self.missed, self.unknown_loss = 0, False
        self.lines.append(line)
        self._ready.set()

    def lost_track(self) -> None:
        """Events may have been lost without being counted (the link to Redis broke)."""
        self.unknown_loss = True

    async def take(self) -> list[bytes]:
        """The event lines waiting (at least one), oldest first."""
        while not self.lines:
            await self._ready.wait()
            self._ready = trio.Event()
        taken = list(self.lines)
        self.lines.clear()
        return taken


class EventHub:
    """This process's subscribers, and its listening on the events channel while there are
    any."""

    def __init__(
        self,
        address: Callable[[], Address],
        masters: Callable[[], list[Address]],
        buffer: Callable[[], int],
        timeout: Callable[[], float],
    ) -> None:
        self.address = address
        self.masters = masters
        self.buffer = buffer
        self.timeout = timeout
        self.subscriptions: set[Subscription] = set()
        self._listener: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the nursery the listening task runs in."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @contextlib.asynccontextmanager
    async def subscribe(self, arg: bytes) -> AsyncIterator[Subscription]:
        """A subscription for the filter `arg` (JSON, or empty for all events); events are
        collected for it from when this returns until the block ends."""
        subscription = Subscription(parse_filter(arg), self.buffer())
        self.subscriptions.add(subscription)
        try:
            if self._listener is None:
                assert self._nursery is not None, "EventHub.run is not running"
                self._listener = await self._nursery.start(self._listen)
            yield subscription
        finally:
            self.subscriptions.discard(subscription)
            if not self.subscriptions and self._listener is not None:
                self._listener.cancel()
                self._listener = None

    async def _listen(self, *, task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        """Listen on the events channel until cancelled; reports once listening."""
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:  # the gates (see the module's note)
                started = False
                while True:
                    gates = await self._listen_once(nursery, scope, started, task_status)
                    started = True
                    gates.cancel()
                    for subscription in self.subscriptions:
                        subscription.lost_track()
                    await trio.sleep(RESUBSCRIBE_DELAY)

    async def _listen_once(
        self,
        nursery: trio.Nursery,
        scope: trio.CancelScope,
        started: bool,
        task_status: trio.TaskStatus[trio.CancelScope],
    ) -> trio.CancelScope:
        """Listen on one master until the link breaks, the other masters' gates held from
        `nursery`; reports `scope` once listening unless `started`. Returns the gates' scope."""
        gates = trio.CancelScope()
        try:
            address = self.address()
            subscriber = Subscriber(address, (EVENTS_CHANNEL,), self.timeout)
            async with subscriber.open() as messages:
                gates = await nursery.start(self._hold_gates, address)
                if not started:
                    task_status.started(scope)
                    started = True
                async for _, data in messages:
                    self.deliver(data)
        except CONNECTION_ERRORS as exc:
            if not started:
                raise CommandError(f"cannot listen for events: {exc}") from None
            log.warning("event stream lost (%s); listening again", exc)
        except Exception:  # a bug must not stop the broker: log it and listen again
            if not started:
                raise
            log.exception("event stream failed; listening again")
        return gates

    async def _hold_gates(
        self, listening_on: Address, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Hold the gate channel on every master but the one listened on, following the
        cluster's masters as they change; reports (its cancel scope) once each has been tried.
        A master gated later may have published nothing meanwhile: subscribers are told."""
        held: dict[str, trio.CancelScope] = {}
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                while True:
                    wanted = {a.url: a for a in self.masters() if a.url != listening_on.url}
                    for url in held.keys() - wanted.keys():
                        held.pop(url).cancel()
                    for url in wanted.keys() - held.keys():
                        held[url] = await nursery.start(self._hold_gate, wanted[url])
                        if task_status is trio.TASK_STATUS_IGNORED:  # not in the first round
                            for subscription in self.subscriptions:
                                subscription.lost_track()
                    task_status.started(scope)
                    task_status = trio.TASK_STATUS_IGNORED
                    await trio.sleep(GATES_CHECKED)

    async def _hold_gate(
        self, address: Address, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Hold the gate on one master until cancelled; reports after the first attempt. While
        it is not held, that master's events are lost, which each subscriber is told."""
        with trio.CancelScope() as scope:
            while True:
                try:
                    async with Subscriber(address, (EVENTS_GATE,), self.timeout).open() as held:
                        task_status.started(scope)
                        task_status = trio.TASK_STATUS_IGNORED
                        async for _ in held:
                            pass
                except CONNECTION_ERRORS as exc:
                    log.warning("event gate on %s lost (%s); again", address.display, exc)
                except Exception:  # a bug must not stop the broker: log it and hold it again
                    log.exception("event gate on %s failed; again", address.display)
                task_status.started(scope)
                task_status = trio.TASK_STATUS_IGNORED
                for subscription in self.subscriptions:
                    subscription.lost_track()
                await trio.sleep(RESUBSCRIBE_DELAY)

    def deliver(self, data: bytes) -> None:
        """Hand each event line of one published message to the subscribers it matches."""
        for line in data.split(b"\n"):
            try:
                event = event_decoder.decode(line)
            except msgspec.DecodeError:
                log.warning("unreadable event: %r", line[:200])
                continue
            for subscription in self.subscriptions:
                if subscription.matches(event):
                    subscription.offer(line)


def parse_filter(arg: bytes) -> Filter:
    """The EVENTS argument, checked."""
    if not arg.strip():
        return Filter()
    try:
        wanted = decode_input(filter_decoder, arg)
    except msgspec.DecodeError as exc:
        raise CommandError(f"invalid EVENTS filter: {exc}") from None
    for name in ("queues", "jobtypes", "jids", "events"):
        values = getattr(wanted, name)
        if values is not None and len(values) > MAX_FILTER:
            raise CommandError(f"EVENTS: at most {MAX_FILTER} {name}")
    return wanted
