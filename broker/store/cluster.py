"""A Redis Cluster connection with the interface of `Pipeline`: one auto-pipelining `Pipeline`
per master, each command sent to the master of its keys' slot.

The slot map comes from `CLUSTER SHARDS`, asked of any node that answers. Redirections are
followed, since the command did not run: `MOVED` reloads the map (one reload serves every
command that was routed by the old one) and sends again to the new owner; `ASK` sends `ASKING`
and the command back to back to the node named, map unchanged; `TRYAGAIN` waits a moment. A
"Function not found" (a master that never got the library) loads the libraries this connection
sent once (`FUNCTION LOAD` goes to every master) and sends again. Each command is followed
MAX_REDIRECTS times at most. What is never resent: a command written to a connection that then
drops (it may have run): its callers get `RedisUnavailable`, as with `Pipeline`, and the map is
reloaded in the background so that the next command goes to a promoted replica; a node that
answers `CLUSTERDOWN` (a failover under way) also gives `RedisUnavailable`.

Keys of different slots in one command are refused before anything is sent (RoutingError).
"""

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import trio

from hopper_broker.config import CLUSTER_SCHEMES, REDIS_TIMEOUT
from hopper_broker.errors import RedisUnavailable
from hopper_broker.store.address import Address, ReplyError
from hopper_broker.store.cluster_map import ClusterAddress, SlotMap, parse_node_name
from hopper_broker.store.connection import RECONNECT_DELAYS, Pipeline
from hopper_broker.store.slots import SLOTS, CommandKeys, key_slot, one_slot

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5  # MOVED, ASK, TRYAGAIN or a library load followed per command, at most
TRYAGAIN_DELAY = 0.05  # seconds before a command refused during a slot's move is sent again
REFRESH_GAP = 0.1  # seconds at least between map reloads caused by failures
ANY = -1  # the slot of a command without keys: any master answers it
ALL = -2  # the slot of a command every master must run
BROADCAST = frozenset(
    {"function|load", "function|delete", "function|flush", "function|restore", "flushall",
     "flushdb", "script|load", "script|flush"}
)  # fmt: skip
REDIRECTS = ("MOVED ", "ASK ", "TRYAGAIN ", "CLUSTERDOWN ")
NOT_FOUND = "Function not found"
_UNSET = object()


class _Node:
    """A master's auto-pipelining connection, run in a cancel scope of its own."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.scope = trio.CancelScope()
        self.ready = trio.Event()  # set once it first connected

    async def run(self) -> None:
        with self.scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.pipeline.run)
                self.ready.set()


class ClusterPipeline:
    """Every master of a Redis Cluster behind the interface of one `Pipeline` (`execute`,
    `execute_many`, `run`). `timeout()` gives `redis_timeout`, as for Pipeline."""

    def __init__(
        self, address: ClusterAddress, timeout: Callable[[], float] = lambda: REDIS_TIMEOUT
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.map = SlotMap([""] * SLOTS, [], [])
        self.refreshes = 0  # slot maps loaded so far
        self.asked = 0  # commands sent to a slot's importing node (ASK) so far
        self.last_error: Exception | None = None  # why the last attempt to start failed
        self._nodes: dict[str, _Node] = {}  # by node name, host:port
        self._commands = CommandKeys([])
        self._generation = 0  # the number of the map in use; commands remember it
        self._refreshing: trio.Event | None = None
        self._soon = False  # a reload after a failure is scheduled
        self._loaded_at = -math.inf
        self._libraries: list[tuple[Any, ...]] = []  # FUNCTION LOAD arguments sent
        self._nursery: trio.Nursery | None = None
        self._turn = 0  # node_address()'s last pick

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection to every master until cancelled; reports started once the slot
        map and the command table are read (retrying until a node answers). Once stopped,
        a call fails as when no node answers (a connection's last words at shutdown)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                await self._connect()
                task_status.started()
                await trio.sleep_forever()
            finally:  # before the nursery closes: its children may still be finishing
                self._nursery = None

    async def _connect(self) -> None:
        """Read the slot map and the command table, retrying until a node answers."""
        attempt = 0
        while True:
            try:
                await self._refresh(self._generation)
                self._commands = CommandKeys(await self._ask_any("COMMAND"))
                return
            except RedisUnavailable as exc:
                self.last_error = exc
                delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
                log.warning("%s; retrying in %.2fs", exc, delay)
                attempt += 1
                await trio.sleep(delay)

    @property
    def connections(self) -> int:
        """A number that changes when any master's connection is made again, the slot map is
        reloaded, or a command went to a slot's importing node (ASK: a write there is not on
        the map's owner, whose WAIT would not vouch for it), as Pipeline.connections for one
        Redis."""
        made = sum(node.pipeline.connections for node in self._nodes.values())
        return self.refreshes + self.asked + made

    async def wait_replicas(self, replicas: int, timeout_ms: int, keys: Sequence[str]) -> int:
        """How many replicas have every write sent so far, on the masters of `keys` (WAIT on
        each one's connection at once): the fewest of them. A slot that moved since the
        writes counts for nothing: the caller sees the map reloaded (connections)."""
        owners = {self.map.owners[key_slot(key)] for key in keys}
        written = [name for name in self.map.masters if name in owners]
        counts = await self._on_masters(written, "WAIT", replicas, timeout_ms)
        for count in counts:
            if isinstance(count, ReplyError):
                raise count
        return min((int(c) for c in counts), default=0)

    async def on_every_master(self, *args: Any) -> list[Any]:
        """One command on every master it is connected to, at once: their replies."""
        return await self._on_masters(self.map.masters, *args)

    async def _on_masters(self, names: Sequence[str], *args: Any) -> list[Any]:
        """One command on each of the masters `names` it is connected to, at once."""
        connected = [name for name in names if name in self._nodes]
        found = await self._gather({name: [0] for name in connected}, [args], self._generation)
        return [replies[0] for replies in found.values()]

    def node_address(self) -> Address:
        """A master's address, another at each call (the seeds before the map is known)."""
        addresses = self.master_addresses()
        self._turn = (self._turn + 1) % len(addresses)
        return addresses[self._turn]

    def master_addresses(self) -> list[Address]:
        """Every master's address, as the slot map last read names them (the seeds before)."""
        names = self.map.masters or [f"{h}:{p}" for h, p in self.address.seeds]
        return [self.address.node(*parse_node_name(name)) for name in names]

    async def scan(self, pattern: str, count: int) -> AsyncIterator[list[bytes]]:
        """The keys matching a glob on every master, one master after the other (a slot
        that moves meanwhile may be missed or seen twice)."""
        for name in list(self.map.masters):
            async for found in (await self._pipeline(name)).scan(pattern, count):
                yield found

    async def execute(self, *args: Any) -> Any:
        """Send one command to its slot's master and return its reply (an error reply as a
        ReplyError value); raises RoutingError, RedisUnavailable."""
        return (await self.execute_many([args]))[0]

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Send several commands, each to its slot's master (those of one master back to back,
        the masters at once), and return their replies in the callers' order; error replies
        come back as ReplyError values. RoutingError for any command refuses them all before
        anything is sent."""
        slots = [await self._slot(command) for command in commands]
        seen = self._generation
        groups: dict[str, list[int]] = {}
        for index, slot in enumerate(slots):
            for name in self.map.masters if slot == ALL else (self._owner(slot),):
                groups.setdefault(name, []).append(index)
        answers = await self._gather(groups, commands, seen)
        replies: list[Any] = [_UNSET] * len(commands)
        sources = [""] * len(commands)
        for name, indexes in groups.items():
            for index, reply in zip(indexes, answers[name], strict=True):
                if replies[index] is _UNSET or isinstance(reply, ReplyError):
                    replies[index], sources[index] = reply, name
        for index, reply in enumerate(replies):
            if slots[index] != ALL and _redirected(reply):
                replies[index] = await self._follow(commands[index], sources[index], reply, seen)
        return replies

    async def _slot(self, command: Sequence[Any]) -> int:
        """The command's slot, ANY or ALL; RoutingError when it cannot be routed."""
        name = self._commands.name(command)
        if name in BROADCAST:
            if name == "function|load":
                self._remember(tuple(command[2:]))
            return ALL
        keys = self._commands.keys(name, command)
        if keys is None:  # keys only Redis can find
            found = await (await self._pipeline(self._owner(ANY))).execute(
                "COMMAND", "GETKEYS", *command
            )
            keys = () if isinstance(found, ReplyError) else found
        slot = one_slot(name, keys)
        return ANY if slot is None else slot

    def _owner(self, slot: int) -> str:
        name = self.map.owners[slot] if slot >= 0 else next(iter(self.map.masters), "")
        if not name:  # the map was read mid-failover: read it again, or the hole stays
            self._refresh_soon(self._generation)
            raise RedisUnavailable(f"no master of {self.address.display} owns slot {slot}")
        return name

    def _remember(self, library: tuple[Any, ...]) -> None:
        if library not in self._libraries:
            self._libraries.append(library)

    async def _gather(
        self, groups: dict[str, list[int]], commands: list[tuple[Any, ...]], seen: int
    ) -> dict[str, list[Any]]:
        """Each master's replies to its commands, the masters asked at once."""
        if len(groups) == 1:
            ((name, indexes),) = groups.items()
            return {name: await self._send(name, [commands[i] for i in indexes], seen)}
        results: dict[str, list[Any]] = {}
        failed: list[RedisUnavailable] = []

        async def one(name: str, indexes: list[int]) -> None:
            try:
                results[name] = await self._send(name, [commands[i] for i in indexes], seen)
            except RedisUnavailable as exc:
                failed.append(exc)

        async with trio.open_nursery() as nursery:
            for name, indexes in groups.items():
                nursery.start_soon(one, name, indexes)
        if failed:
            raise failed[0]
        return results

    async def _send(self, name: str, commands: list[tuple[Any, ...]], seen: int) -> list[Any]:
        """Commands back to back to one node; a dropped connection reloads the map soon."""
        try:
            return await (await self._pipeline(name)).execute_many(commands)
        except RedisUnavailable:
            self._refresh_soon(seen)
            raise

    async def _follow(self, command: tuple[Any, ...], name: str, reply: Any, seen: int) -> Any:
        """The reply of a command sent again after a redirection (see the module's notes)."""
        loaded = False
        for _ in range(MAX_REDIRECTS):
            if not _redirected(reply):
                return reply
            if NOT_FOUND in reply.reply and (loaded or not self._libraries):
                return reply
            word, _, rest = reply.reply.partition(" ")
            if word in ("MOVED", "ASK"):
                name = rest.partition(" ")[2]
                if word == "MOVED":
                    await self._refresh(seen)
                    seen = self._generation
                    reply = (await self._send(name, [command], seen))[0]
                else:
                    self.asked += 1
                    reply = (await self._send(name, [("ASKING",), command], seen))[1]
            elif word == "TRYAGAIN":
                await trio.sleep(TRYAGAIN_DELAY)
                reply = (await self._send(name, [command], seen))[0]
            elif word == "CLUSTERDOWN":
                self._refresh_soon(seen)
                raise RedisUnavailable(f"{self.address.display}: {reply.reply}")
            else:  # NOT_FOUND: the libraries this connection loaded, once
                loaded = True
                await self._load_libraries(name, seen)
                reply = (await self._send(name, [command], seen))[0]
        return reply

    async def _load_libraries(self, name: str, seen: int) -> None:
        loads = [("FUNCTION", "LOAD", *library) for library in self._libraries]
        for loaded in await self._send(name, loads, seen):
            if isinstance(loaded, ReplyError) and "already exists" not in loaded.reply:
                log.warning("redis %s: function library not loaded: %s", name, loaded.reply)

    async def _pipeline(self, name: str) -> Pipeline:
        """A node's connection; a node not met yet is connected first (bounded by the
        timeout: past it, sending to it raises RedisUnavailable)."""
        node = self._nodes.get(name) or self._start(name)
        if not node.ready.is_set():
            with trio.move_on_after(self.timeout()):
                await node.ready.wait()
        return node.pipeline

    def _start(self, name: str) -> _Node:
        if self._nursery is None:
            raise RedisUnavailable(f"{self.address.display}: not running")
        node = _Node(Pipeline(self.address.node(*parse_node_name(name)), self.timeout))
        self._nodes[name] = node
        self._nursery.start_soon(node.run)
        return node

    async def _refresh(self, seen: int) -> None:
        """Reload the slot map, unless it was reloaded since map number `seen`: concurrent
        callers share one reload."""
        if seen != self._generation:
            return
        if self._refreshing is not None:
            await self._refreshing.wait()
            return
        self._refreshing = done = trio.Event()
        try:
            await self._load_map()
            self._generation += 1
            self.refreshes += 1
        finally:
            self._refreshing = None
            done.set()

    def _refresh_soon(self, seen: int) -> None:
        """Reload the map in the background (a node failed), REFRESH_GAP after the last."""
        if self._soon or seen != self._generation or self._nursery is None:
            return
        self._soon = True
        self._nursery.start_soon(self._refresh_later)

    async def _refresh_later(self) -> None:
        try:
            await trio.sleep_until(self._loaded_at + REFRESH_GAP)
            await self._refresh(self._generation)
        except RedisUnavailable as exc:
            log.warning("%s", exc)
        finally:
            self._soon = False

    async def _load_map(self) -> None:
        found = SlotMap.parse(await self._ask_any("CLUSTER", "SHARDS"), self.address.tls)
        if not found.masters:
            raise RedisUnavailable(f"{self.address.display}: no master owns a slot")
        self.map = found
        self._loaded_at = trio.current_time()
        for name in set(self._nodes) - set(found.masters):
            self._nodes.pop(name).scope.cancel()
        fresh = [self._start(name) for name in found.masters if name not in self._nodes]
        with trio.move_on_after(self.timeout()):
            for node in fresh:
                await node.ready.wait()

    async def _ask_any(self, *command: Any) -> Any:
        """The reply of the first node that answers without an error: the connected masters
        first, then the other nodes and the seeds, each on a connection of its own."""
        errors: list[Exception] = []
        for name in self.map.masters:
            node = self._nodes.get(name)
            if node is not None and node.ready.is_set():
                try:
                    reply = await node.pipeline.execute(*command)
                except RedisUnavailable as exc:
                    errors.append(exc)
                    continue
                if not isinstance(reply, ReplyError):
                    return reply
                errors.append(reply)
        others = [parse_node_name(n) for n in self.map.nodes if n not in self._nodes]
        for host, port in [*others, *self.address.seeds]:
            try:
                reply = await self.address.node(host, port).ask(*command, timeout=self.timeout())
            except (OSError, ReplyError) as exc:
                errors.append(exc)
                continue
            if not isinstance(reply, ReplyError):
                return reply
            errors.append(reply)
        why = errors[-1] if errors else "no node known"
        raise RedisUnavailable(f"no node of {self.address.display} answered: {why}")


def _redirected(reply: Any) -> bool:
    """Whether a reply says the command did not run there (see the module's notes)."""
    return isinstance(reply, ReplyError) and (
        reply.reply.startswith(REDIRECTS) or NOT_FOUND in reply.reply
    )


def connection_for(url: str, timeout: Callable[[], float]) -> Pipeline | ClusterPipeline:
    """The connection for a Redis URL: a cluster's (redis+cluster://, rediss+cluster://) or one
    node's; not started yet (run())."""
    if url.startswith(CLUSTER_SCHEMES):
        return ClusterPipeline(ClusterAddress(url), timeout)
    return Pipeline(Address(url), timeout)
