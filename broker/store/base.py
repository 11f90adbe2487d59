"""Calling Redis: Lua scripts by SHA1, plain commands, and their error replies as exceptions."""

import hashlib
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from broker.store.connection import Pipeline, ReplyError

SCAN_COUNT = 1000  # keys or entries asked for per SCAN-family step
# helpers prepended to every script, in order
LIBRARIES = ("lib", "lib_lanes", "lib_workflows", "lib_batches")
_LIB = "".join(
    resources.files("broker.store").joinpath(f"scripts/{name}.lua").read_text()
    for name in LIBRARIES
)


class Script:
    """A Lua script from scripts/ (the helpers of LIBRARIES prepended), called by its SHA1."""

    def __init__(self, name: str) -> None:
        self.name = name
        body = resources.files("broker.store").joinpath(f"scripts/{name}.lua").read_text()
        self.source = _LIB + body
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()


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
        """Call a script; loads it when Redis does not know it (after a restart, say)."""
        reply = await self.pipeline.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        if isinstance(reply, ReplyError) and reply.reply.startswith("NOSCRIPT"):
            reply = await self.pipeline.execute("EVAL", script.source, len(keys), *keys, *args)
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
