"""Which hash slot a command belongs to on Redis Cluster: the slot of a key (CRC16/XMODEM of the
key, or of its hash tag, mod 16384) and the keys of a command, read from Redis's own command
table (`COMMAND`), so every command is routed by the same rule Redis applies to it."""

import binascii
from collections.abc import Sequence
from typing import Any

from hopper_client.schema.errors import BrokerError

SLOTS = 16384
# Commands whose keys follow a key count at argument 2 (the scripts and functions).
NUMKEYS_AT_2 = frozenset({"fcall", "fcall_ro", "eval", "evalsha", "eval_ro", "evalsha_ro"})
# Commands that only make sense on one connection (a transaction, a subscription, a database
# or a redirection of its own): a cluster connection refuses them.
UNROUTED = frozenset(
    {"multi", "exec", "discard", "watch", "unwatch", "select", "asking", "readonly",
     "readwrite", "subscribe", "psubscribe", "ssubscribe", "unsubscribe", "punsubscribe",
     "sunsubscribe", "monitor", "sync", "psync", "reset", "quit"}
)  # fmt: skip


def encoded(value: Any) -> bytes:
    """An argument as Redis receives it (str as UTF-8, numbers as their decimal text)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()


def key_slot(key: Any) -> int:
    """The hash slot of a key: of its hash tag (what lies between the first `{` and the first
    `}` after it) when that tag is not empty, else of the whole key."""
    data = encoded(key)
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS  # CRC16/XMODEM: polynomial 0x1021, initial 0


class RoutingError(BrokerError):
    """A command a cluster connection cannot send: its keys lie in different hash slots, or
    it belongs to one connection (MULTI, SUBSCRIBE, ...). Raised before anything is sent."""


def one_slot(name: str, keys: Sequence[Any]) -> int | None:
    """The one slot of `keys` (None: no key); RoutingError naming them if they differ."""
    if len(keys) == 1:
        return key_slot(keys[0])
    slots = [key_slot(key) for key in keys]
    if len(set(slots)) > 1:
        named = ", ".join(f"{encoded(k).decode(errors='replace')!r} (slot {s})"
                          for k, s in zip(keys, slots, strict=True))  # fmt: skip
        raise RoutingError(
            f"keys of different hash slots in one {name.upper()} on Redis Cluster: {named}; "
            "give them one hash tag, {tag}"
        )
    return slots[0] if slots else None


class KeySpec:
    """Where a command's keys are: arguments first..last (negative: from the end) every
    step; `movable` when only Redis can tell (COMMAND GETKEYS), except NUMKEYS_AT_2."""

    __slots__ = ("first", "last", "movable", "step")

    def __init__(self, first: int, last: int, step: int, movable: bool) -> None:
        self.first, self.last, self.step, self.movable = first, last, step, movable


class CommandKeys:
    """The key positions of every command a Redis server knows, from its `COMMAND` reply."""

    def __init__(self, reply: list[Any]) -> None:
        self.specs: dict[str, KeySpec] = {}
        self._containers: set[str] = set()  # commands with subcommands
        self._names: dict[Any, str] = {}  # a first argument as given -> its known name
        self._add(reply)

    def _add(self, entries: list[Any]) -> None:
        for entry in entries:
            name, _, flags, first, last, step = entry[:6]
            name = name.decode().lower()
            self.specs[name] = KeySpec(first, last, step, b"movablekeys" in flags)
            if len(entry) > 9 and entry[9]:
                self._containers.add(name)
                self._add(entry[9])  # subcommands, named "container|sub"

    def name(self, command: Sequence[Any]) -> str:
        """The command's name as the table knows it (with its subcommand, if it has some)."""
        verb = self._names.get(command[0])
        if verb is None:
            verb = encoded(command[0]).decode(errors="replace").lower()
            if verb in self.specs:
                self._names[command[0]] = verb  # as many entries as spellings of known names
        if verb in self._containers and len(command) > 1:
            sub = f"{verb}|{encoded(command[1]).decode(errors='replace').lower()}"
            if sub in self.specs:
                return sub
        return verb

    def keys(self, name: str, command: Sequence[Any]) -> Sequence[Any] | None:
        """The keys of a command named `name` (by `name()`); None when only Redis can tell
        (COMMAND GETKEYS); RoutingError for the commands of one connection (UNROUTED)."""
        verb = name.split("|", 1)[0]
        if verb in UNROUTED:
            raise RoutingError(f"{verb.upper()} cannot be sent over a Redis Cluster connection")
        if verb in NUMKEYS_AT_2:
            return command[3 : 3 + int(command[2])] if len(command) > 2 else ()
        spec = self.specs.get(name)
        if spec is None:
            return ()  # unknown to Redis: any node answers that it is unknown
        if spec.movable:
            return None
        if spec.first <= 0:
            return ()
        last = spec.last if spec.last >= 0 else len(command) + spec.last
        return command[spec.first : last + 1 : spec.step]
