"""Calling Redis: Lua scripts by SHA1, plain commands, and their error replies as exceptions."""

import hashlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
from importlib import resources
from typing import Any

import trio

from hopper_broker.store.address import ReplyError
from hopper_broker.store.connection import Connection
from hopper_broker.store.keys import JIDS, QueueKeys, queue_of_key, stand_in, touched

SCAN_COUNT = 1000  # keys or entries asked for per SCAN-family step
# helpers every script shares
LIBRARIES = (
    "lib_outbox",
    "lib_history",
    "lib",
    "lib_lanes",
    "lib_workflows",
    "lib_batches",
    "lib_push",
)
# the scripts that also run in split mode (lib_outbox.lua): their global writes deferred
SPLIT_READY = frozenset(
    {"push", "fetch", "ack", "fail", "release", "cancel"}  # jobs
    | {"due", "enqueue", "remove", "move", "history_purge"}  # the loops' visits, MUTATE
    | {"drain", "flush"}  # QUEUE REMOVE, FLUSH
    | {"inspect", "queue_check", "history_check", "rename"}  # hopper check
    | {"settle"}  # workflows' ends across queues
)
SPLIT_SUFFIX = "_s"  # a script's function in split mode
WF_DUE_ENTRY = b'["wf_due",'  # how an outbox entry of a workflow's end begins (wf_mark)
Visit = dict[str, tuple[str, str]] | None  # due key -> its entry's score, touch count as read


class Library:
    """Every script of scripts/ as one Redis function library (Redis 7): the helpers of
    LIBRARIES are defined once, when Redis loads it, not at each call as an EVAL prelude would
    be. Each script becomes a function `<name>_<digest>` of the library `hopper_<digest>`
    (digest: of the whole source), so brokers of different versions sharing a Redis each call
    their own. Each call begins by clearing the helpers' per-call state (begin_call). A script
    of SPLIT_READY also has a split-mode function (`<function>_s`), which returns {its reply,
    its outbox}."""

    def __init__(self) -> None:
        folder = resources.files("hopper_broker.store").joinpath("scripts")
        read = {f.name.removesuffix(".lua"): f.read_text() for f in folder.iterdir()}
        helpers = "".join(read[name] for name in LIBRARIES)
        bodies = {name: body for name, body in sorted(read.items()) if name not in LIBRARIES}
        self.digest = hashlib.sha1((helpers + "".join(bodies.values())).encode()).hexdigest()[:12]
        functions = "".join(self._register(name, body) for name, body in bodies.items())
        prelude = f"#!lua name=hopper_{self.digest}\nlocal SCRIPTS = {{}}\n"
        self.source = f"{prelude}{helpers}{functions}"

    def function(self, script: str) -> str:
        return f"{script}_{self.digest}"

    def _register(self, name: str, body: str) -> str:
        """The Lua that registers the script's function(s); its body is SCRIPTS[name]."""
        function = self.function(name)
        run = f"SCRIPTS['{name}'] = function(KEYS, ARGV)\n{body}\nend\n"
        one = (
            f"redis.register_function('{function}', function(KEYS, ARGV)\n"
            f"begin_call(false)\nreturn SCRIPTS['{name}'](KEYS, ARGV)\nend)\n"
        )
        split = (
            f"redis.register_function('{function}{SPLIT_SUFFIX}', function(KEYS, ARGV)\n"
            f"begin_call(true)\nlocal reply = SCRIPTS['{name}'](KEYS, ARGV)\n"
            f"if reply == nil then reply = false end\nreturn {{reply, outbox}}\nend)\n"
        )
        return run + one + (split if name in SPLIT_READY else "")


LIBRARY = Library()


class Script:
    """A Lua script of scripts/, called as its function in LIBRARY."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.function = LIBRARY.function(name)
        self.split = name in SPLIT_READY


APPLY = Script("apply")


def text(value: bytes) -> str:
    return value.decode()


class Redis:
    """The store's access to Redis over one auto-pipelining connection. In split mode (a Redis
    Cluster, or `redis_split` on one Redis) the scripts of SPLIT_READY touch only their queue's
    keys and hand back their global writes, applied next on the global keys (run())."""

    def __init__(self, pipeline: Connection, split: bool = False) -> None:
        self.pipeline = pipeline
        self.split = split
        self.on_batch_due: Callable[[], None] = lambda: None  # a script made a callback due

    def whole(self) -> trio.CancelScope:
        """Keeps the steps of one split-mode move together: a caller cancelled meanwhile (its
        connection closed, a loop stopping) waits for the last step, so that only a crash cuts
        a move between its steps (what `hopper check --repair` mends). On one Redis a move is
        one call and nothing is shielded."""
        return trio.CancelScope(shield=self.split)

    async def execute(self, *args: Any) -> Any:
        """One command; an error reply raises ReplyError."""
        reply = await self.pipeline.execute(*args)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def execute_many(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Several commands in one round trip; an error reply raises ReplyError."""
        replies = await self.pipeline.execute_many(commands) if commands else []
        for reply in replies:
            if isinstance(reply, ReplyError):
                raise reply
        return replies

    async def run(
        self, script: Script, keys: Sequence[str], args: Sequence[Any], visit: Visit = None
    ) -> Any:
        """Call a script; loads the library when Redis does not have it (a new Redis, say). In
        split mode a script of SPLIT_READY gets its global keys as stand-ins in the slot of
        its first key's queue, and its outbox is applied after it; `visit`: what a loop read
        of the due entry the call makes exact, before the call (read_due())."""
        if not (self.split and script.split):
            return await self._call(script.function, keys, args)
        queue = queue_of_key(keys[0])
        local = [stand_in(queue, key) for key in keys] if queue is not None else list(keys)
        with self.whole():
            reply, outbox = await self._call(script.function + SPLIT_SUFFIX, local, args)
            if outbox:
                await self.apply(outbox, "" if visit is None else json.dumps(visit), queue)
        return reply

    async def apply(self, outbox: list[bytes], visit: str, queue: str | None = None) -> None:
        """Split mode's second step: a script's global writes, made on the global keys. The
        ends of dependencies it marked due in wf:due then leave the tallies of `queue` (the
        script's; lib_workflows.lua: wf_mark), so that the batches loop does not mark them again
        later, when a job of the same jid may wait for another end (a batch's tallies are made
        once by its told set instead)."""
        _, due = await self._call(APPLY.function, (JIDS,), (visit, *outbox))
        if due:
            self.on_batch_due()
        made = [json.loads(e)[2] + "/w" for e in outbox if e.startswith(WF_DUE_ENTRY)]
        if made and queue is not None:
            await self.execute("HDEL", QueueKeys(queue).tallies, *made)

    async def announce_due(self, due: str, score: float, queue: str) -> None:
        """Split mode's first step for a call that adds an entry to a queue's set: the queue's
        due entry at or before `score`, its touch count raised (due_add of lib_outbox.lua)."""
        await self.global_step("due_add", due, repr(score), queue)

    async def global_step(self, helper: str, *args: str) -> Any:
        """One helper of an outbox (lib_outbox.lua: AFTER) run on the global keys by apply.lua,
        outside any queue's call; returns what it returns."""
        result, _ = await self._call(APPLY.function, (JIDS,), ("", json.dumps([helper, *args])))
        return result

    async def read_first(self, commands: Sequence[tuple[Any, ...]]) -> str:
        """Split mode: the replies of reads of global keys a script makes (read_global of
        lib_outbox.lua), read now, as the JSON it takes; '' on one Redis (it reads them)."""
        if not self.split:
            return ""
        found = await self.execute_many(list(commands))
        return json.dumps(
            [False if r is None else text(r) if isinstance(r, bytes) else r for r in found]
        )

    async def read_due(self, dues: Sequence[str], queue: str) -> Visit:
        """Split mode: a queue's entries in due indexes and their touch counts ('' for none),
        as a visit reads them before its call (scripts/lib.lua: settle_due); None on one
        Redis."""
        if not self.split:
            return None
        commands: list[tuple[Any, ...]] = []
        for due in dues:
            commands += (("ZSCORE", due, queue), ("HGET", touched(due), queue))
        found = [text(value) if value else "" for value in await self.execute_many(commands)]
        return {due: (found[2 * i], found[2 * i + 1]) for i, due in enumerate(dues)}

    async def _call(self, function: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        call = ("FCALL", function, len(keys), *keys, *args)
        reply = await self.pipeline.execute(*call)
        if isinstance(reply, ReplyError) and "Function not found" in reply.reply:
            loaded = await self.pipeline.execute("FUNCTION", "LOAD", LIBRARY.source)
            if isinstance(loaded, ReplyError) and "already exists" not in loaded.reply:
                raise loaded
            reply = await self.pipeline.execute(*call)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    async def keys(self, pattern: str) -> AsyncIterator[bytes]:
        """Every key matching a glob, by SCAN in steps of SCAN_COUNT."""
        async for found in self.pipeline.scan(pattern, SCAN_COUNT):
            for key in found:
                yield key

    async def steps(self, verb: str, key: str) -> AsyncIterator[list[Any]]:
        """The replies of HSCAN or ZSCAN over `key`, one step of SCAN_COUNT at a time: flat
        [field, value, ...] lists."""
        cursor = 0
        while True:
            next_cursor, found = await self.execute(verb, key, cursor, "COUNT", SCAN_COUNT)
            yield found
            cursor = int(next_cursor)
            if cursor == 0:
                return
