"""Calling Redis: Lua scripts by SHA1, plain commands, and their error replies as exceptions."""

import hashlib
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from hopper_broker.store.address import ReplyError
from hopper_broker.store.connection import Pipeline

SCAN_COUNT = 1000  # keys or entries asked for per SCAN-family step
# helpers every script shares
LIBRARIES = ("lib_history", "lib", "lib_lanes", "lib_workflows", "lib_batches", "lib_push")


class Library:
    """Every script of scripts/ as one Redis function library (Redis 7): the helpers of
    LIBRARIES are defined once, when Redis loads it, not at each call as an EVAL prelude would
    be. Each script becomes a function `<name>_<digest>` of the library `hopper_<digest>`
    (digest: of the whole source), so brokers of different versions sharing a Redis each call
    their own. Each call begins by clearing the helpers' per-call state (begin_call)."""

    def __init__(self) -> None:
        folder = resources.files("hopper_broker.store").joinpath("scripts")
        read = {f.name.removesuffix(".lua"): f.read_text() for f in folder.iterdir()}
        helpers = "".join(read[name] for name in LIBRARIES)
        bodies = {name: body for name, body in sorted(read.items()) if name not in LIBRARIES}
        self.digest = hashlib.sha1((helpers + "".join(bodies.values())).encode()).hexdigest()[:12]
        functions = "".join(
            f"redis.register_function('{self.function(name)}', function(KEYS, ARGV)\n"
            f"begin_call()\n{body}\nend)\n"
            for name, body in bodies.items()
        )
        self.source = f"#!lua name=hopper_{self.digest}\n{helpers}{functions}"

    def function(self, script: str) -> str:
        return f"{script}_{self.digest}"


LIBRARY = Library()


class Script:
    """A Lua script of scripts/, called as its function in LIBRARY."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.function = LIBRARY.function(name)


def text(value: bytes) -> str:
    return value.decode()


class Redis:
    """The store's access to Redis over one auto-pipelining connection."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

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

    async def run(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        """Call a script; loads the library when Redis does not have it (a new Redis, say)."""
        call = ("FCALL", script.function, len(keys), *keys, *args)
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
        async for found in self.steps("SCAN", pattern=pattern):
            for key in found:
                yield key

    async def steps(self, verb: str, *key: str, pattern: str = "") -> AsyncIterator[list[Any]]:
        """The replies of a SCAN-family command (SCAN, HSCAN or ZSCAN over `key`), one step of
        SCAN_COUNT at a time: key names, or flat [field, value, ...] lists."""
        match = ("MATCH", pattern) if pattern else ()
        cursor = 0
        while True:
            next_cursor, found = await self.execute(verb, *key, cursor, *match, "COUNT", SCAN_COUNT)
            yield found
            cursor = int(next_cursor)
            if cursor == 0:
                return
