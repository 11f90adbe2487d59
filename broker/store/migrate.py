"""Bring Redis to the current storage schema when a broker starts.

Schema 1 (Hopper before the storage model of schema 2) kept a queue's keys under
`hopper:{<queue>}:...`, the queue list in `hopper:queues`, a jid index in `hopper:index` that
one jid could hold for only one of two queues, and worker records under `hopper:{workers}`.
A broker that finds such data migrates it before it serves, one queue at a time, each queue in
one script (its keys renamed, its paused flag, listing, counters, due index and jid index
entries made), then rewrites each stored payload in the current field order (see jobs.py) and
gives a new jid, `<jid>-<queue>`, to a job whose jid schema 1 had also given to a job of
another queue. Worker records are dropped: workers register again with their next connection.
Every step can be run again, so a broker killed mid-way finishes the work at its next start.

Stop every broker of the older version before starting this one: they would write schema 1
keys that no loop of this version reads. Several new brokers starting together take turns: one
migrates while the others wait for it.
"""

import logging
import os
import secrets
import socket
from typing import Any

import msgspec
import trio

from hopper_broker.errors import StartError
from hopper_broker.store import keys
from hopper_broker.store.base import Script, text
from hopper_broker.store.keys import (
    DUE,
    HISTORY_COUNT,
    JIDS,
    MIGRATING,
    QUEUES,
    SCHEMA,
    SCHEMA_KEY,
    SPLIT_MARK,
    STATS,
)
from hopper_broker.store.redis import Store
from hopper_client.schema.jobs import encode, job_decoder

log = logging.getLogger(__name__)

MIGRATE = Script("migrate")
LEASE_RENEW = Script("lease_renew")
LEASE_END = Script("lease_end")

OLD_QUEUES = f"{keys.PREFIX}:queues"
OLD_INDEX = f"{keys.PREFIX}:index"
OLD_WORKERS = f"{keys.PREFIX}:{{workers}}"
OLD_QUEUE_KEYS = ("jobs", "queue", "working", "scheduled", "retries", "dead", "paused", "stats")
UNLINK_BATCH = 1000  # keys per UNLINK
LOCK_SECONDS = 30  # a migrating broker that died frees the lock after this long (renewed)
WAIT_STEP = 0.5  # seconds between looks while another broker migrates


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return "?"


# This machine and process-id namespace: where a lock holder's pid can be looked up.
HOST = f"{socket.gethostname()}/{_pid_namespace()}"


class SchemaError(StartError):
    """Redis holds data this broker cannot use (written by a newer Hopper), or cannot run it:
    the broker does not start (one line, exit status 1)."""


MIN_REDIS = (7, 0)  # Redis functions (FUNCTION LOAD, FCALL)


async def migrate(store: Store) -> None:
    """Make sure Redis can run Hopper's function library (7.0 or later) and holds the current
    schema; migrate an older one (see the module doc)."""
    version = await store.redis_version()
    if version < MIN_REDIS:
        raise SchemaError(
            f"Redis {'.'.join(map(str, version))} is too old: Hopper needs Redis "
            f"{'.'.join(map(str, MIN_REDIS))} or later (its job moves are a function library)"
        )
    token = f"{HOST} {os.getpid()} {secrets.token_hex(8)}"  # who holds the lock (see _gone)
    while True:
        schema = await store.schema()
        if schema == SCHEMA:
            await _agree_on_split(store)
            return
        if schema is not None and schema > SCHEMA:
            raise SchemaError(
                f"Redis holds storage schema {schema}, written by a newer Hopper; this broker "
                f"knows schema {SCHEMA}"
            )
        if await store.redis.execute("SET", MIGRATING, token, "NX", "EX", LOCK_SECONDS):
            break
        holder = await store.redis.execute("GET", MIGRATING)
        if holder is not None and _gone(text(holder)):
            log.warning("the broker that was migrating (%s) is gone: taking over", text(holder))
            await store.redis.run(LEASE_END, (MIGRATING,), (text(holder),))
            continue
        log.info("another broker is migrating the storage schema; waiting")
        await trio.sleep(WAIT_STEP)
    lease = Lease(store, token)
    try:
        await _migrate(store, lease)
        await store.redis.execute("SET", SCHEMA_KEY, SCHEMA)
    finally:
        with trio.CancelScope(shield=True):
            await store.redis.run(LEASE_END, (MIGRATING,), (token,))
    await _agree_on_split(store)


def _gone(holder: str) -> bool:
    """Whether the lock's holder is a process of this machine and pid namespace that no longer
    runs (a broker killed mid-way: the next one need not wait for its lock to expire)."""
    host, _, rest = holder.partition(" ")
    pid = rest.partition(" ")[0]
    if host != HOST or "?" in host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # some other user's process
        return False
    return False


class Lease:
    """The migration lock of this broker: LOCK_SECONDS long, renewed as the work goes on, so
    that one left by a broker killed mid-way keeps the next from starting only that long."""

    def __init__(self, store: Store, token: str) -> None:
        self.store = store
        self.token = token
        self.renewed = trio.current_time()

    async def renew(self) -> None:
        """Renew the lock if a third of its time went by since; StartError if it was lost (the
        broker stalled past it: another may be migrating now)."""
        if trio.current_time() - self.renewed > LOCK_SECONDS / 3:
            kept = await self.store.redis.run(
                LEASE_RENEW, (MIGRATING,), (self.token, LOCK_SECONDS * 1000)
            )
            if not kept:
                raise StartError("lost the migration lock (stalled too long); start again")
            self.renewed = trio.current_time()


async def _agree_on_split(store: Store) -> None:
    """A store written in split mode (docs/cluster.md) is marked so, and keeps no history
    count: a broker in split mode marks it (dropping a count left from one-Redis mode); one
    that is not refuses to start on a marked store, whose count it would get wrong."""
    marked = await store.written_split()
    if store.redis.split and not marked:
        await store.redis.execute("SET", SPLIT_MARK, 1)
        await store.redis.execute("DEL", HISTORY_COUNT)
    elif marked and not store.redis.split:
        raise SchemaError(
            "this Redis holds a store written in split mode (a Redis Cluster's, or with "
            "redis_split); start with redis_split = true"
        )


async def _migrate(store: Store, lease: Lease) -> None:
    names = await _old_queues(store, lease)
    old = await store.redis.execute_many([("EXISTS", OLD_QUEUES), ("EXISTS", OLD_INDEX)])
    if not names and not any(old):  # (one key per command: they may be on two cluster nodes)
        return  # a new, empty store (or schema 2 data without its schema key)
    log.warning("migrating %d queues from storage schema 1 to schema %d", len(names), SCHEMA)
    for name in names:
        await lease.renew()
        taken = await _migrate_queue(store, name)
        rewritten = await _rewrite_payloads(store, name, lease)
        for jid in taken:
            await lease.renew()
            await _rename(store, name, jid)
        log.warning(
            "migrated queue %s: %d jobs%s",
            name,
            rewritten,
            f", {len(taken)} given new jids" if taken else "",
        )
    await _drop_old_globals(store, lease)


async def _old_queues(store: Store, lease: Lease) -> list[str]:
    """The queues schema 1 knew or holds keys of (the worker registry's tag excluded unless
    a queue of that name exists)."""
    names = {text(n) for n in await store.redis.execute("SMEMBERS", OLD_QUEUES)}
    suffixes = {f":{s}".encode() for s in OLD_QUEUE_KEYS}
    async for key in store.redis.keys(f"{keys.PREFIX}:{{*}}:*"):
        await lease.renew()
        tag_end = key.find(b"}:")
        name = key[len(keys.PREFIX) + 2 : tag_end].decode()
        if key[tag_end + 1 :] in suffixes and name != "workers":
            names.add(name)
    if await store.redis.execute("TYPE", f"{OLD_WORKERS}:queue") == b"list":
        names.add("workers")
    return sorted(names)


async def _migrate_queue(store: Store, name: str) -> list[str]:
    old = [f"{keys.PREFIX}:{{{name}}}:{suffix}" for suffix in OLD_QUEUE_KEYS]
    k = store.jobs.keys(name)
    new = (k.jobs, k.queue, k.working, k.scheduled, k.retries, k.dead, k.meta, STATS, QUEUES)
    due = (DUE["working"], DUE["scheduled"], DUE["retries"], DUE["dead"])
    taken = await store.redis.run(MIGRATE, (*old, OLD_QUEUES, *new, JIDS, *due), (name,))
    return [text(jid) for jid in taken]


async def _rewrite_payloads(store: Store, name: str, lease: Lease) -> int:
    """Re-encode every payload of the queue in the current field order; returns how many."""
    jobs_key = store.jobs.keys(name).jobs
    count = 0
    async for flat in store.redis.steps("HSCAN", jobs_key):
        await lease.renew()
        updates: list[Any] = []
        for jid, payload in zip(flat[::2], flat[1::2], strict=True):
            rewritten = _reencode(payload)
            if rewritten != payload:
                updates += (jid, rewritten)
        if updates:
            await store.redis.execute("HSET", jobs_key, *updates)
        count += len(flat) // 2
    return count


def _reencode(payload: bytes) -> bytes:
    try:
        return encode(job_decoder.decode(payload))
    except msgspec.DecodeError:  # not a job Hopper wrote: left as it is, for `hopper check`
        return payload


async def _rename(store: Store, name: str, jid: str) -> None:
    new = await store.jobs.rename(name, jid)
    if new is not None:
        log.warning(
            "jid %s was live in queue %s and in another queue; the job in %s is now %s",
            jid,
            name,
            name,
            new,
        )


async def _drop_old_globals(store: Store, lease: Lease) -> None:
    doomed = [OLD_QUEUES, OLD_INDEX, OLD_WORKERS]
    async for key in store.redis.keys(f"{OLD_WORKERS}:*"):
        await lease.renew()
        doomed.append(key.decode())
    for start in range(0, len(doomed), UNLINK_BATCH):
        await store.redis.execute("UNLINK", *doomed[start : start + UNLINK_BATCH])
