"""Batches (Faktory Enterprise) in Redis: each change one script (scripts/batch_*.lua; a job's
own counts are kept by push, ack, fail and the other job moves, see batch_count() in
lib_batches.lua). In split mode those counts change after the job's script, from its outbox,
and the tallies a queue keeps are made again by the batches loop (sweep()), once each; so are
the ends of dependencies a queue sends to dependants in other queues (lib_workflows.lua).
"""

import json
from typing import Any

from hopper_broker.store import keys
from hopper_broker.store.base import Redis, Script, text
from hopper_broker.store.keys import (
    BATCH_PREFIX,
    BATCHES_DUE,
    BATCHES_EXPIRY,
    DUE_TALLIES,
    WF_DUE,
    QueueKeys,
)
from hopper_broker.store.pushes import TALLY_SWEEP

NEW = Script("batch_new")
COMMIT = Script("batch_commit")
PURGE = Script("batch_purge")

KINDS = ("complete", "success")
SWEEP_STEP = 500  # tallies made per call by the batches loop
STEPS = "jpfocw"  # the tallies of a job in the order they happen: join, pushed, fail, ok,
# acked; then a workflow's end (marked due in wf:due, whenever)


class BatchStore:
    """Typed batch operations for the batches room (broker/batches.py)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def create(
        self,
        bid: str,
        created_at: str,
        expires_at: float,
        keep: float,
        parent: str,
        description: str,
        callbacks: tuple[bytes, bytes],
    ) -> int:
        """Create a batch with its (complete, success) callback jobs (b'' for none): 1 done,
        0 the parent does not exist, -1 the bid is taken."""
        record = keys.batch(bid)
        parent_record = keys.batch(parent) if parent else record
        args = (bid, created_at, repr(expires_at), repr(keep), parent, description, *callbacks)
        result: int = await self.redis.run(NEW, (record, BATCHES_EXPIRY, parent_record), args)
        return result

    async def commit(self, bid: str, now: float, purge_at: float) -> int | None:
        """Commit a batch: how many callbacks came due (None: no such batch)."""
        due: int = await self.redis.run(
            COMMIT, (keys.batch(bid), BATCHES_DUE, BATCHES_EXPIRY), (bid, now, repr(purge_at))
        )
        return None if due < 0 else due

    async def exists(self, bid: str) -> bool:
        return bool(await self.redis.execute("EXISTS", keys.batch(bid)))

    async def record(self, bid: str) -> dict[str, Any] | None:
        """A batch's record as stored (bytes values), None when there is none."""
        flat = await self.redis.execute("HGETALL", keys.batch(bid))
        if not flat:
            return None
        return {text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}

    async def due(self, most: int) -> list[tuple[str, str]]:
        """Callbacks marked due, (kind, bid), the earliest first."""
        found = await self.redis.execute("ZRANGE", BATCHES_DUE, 0, most - 1)
        return [tuple(text(m).split(" ", 1)) for m in found]  # type: ignore[misc]

    async def drop_due(self, kind: str, bid: str) -> None:
        """Forget a due callback of a batch that is gone (nothing can mark it again)."""
        await self.redis.execute("ZREM", BATCHES_DUE, f"{kind} {bid}")

    async def purge(self, now: float, most: int) -> int:
        """Delete up to `most` batch records whose time is up; how many went."""
        removed: int = await self.redis.run(PURGE, (BATCHES_EXPIRY, BATCHES_DUE), (now, most))
        return removed

    async def sweep(self, now: float, most: int) -> int:
        """Split mode: the tallies of the queues due in due:tallies made on their batches (those
        their outboxes made already are skipped there) or in wf:due, then taken from the
        queues; a queue is looked at again TALLY_SWEEP seconds later while it holds jobs of
        batches or jobs others wait for. Returns how many tallies were looked at."""
        if not self.redis.split:
            return 0
        found = await self.redis.execute(
            "ZRANGEBYSCORE", DUE_TALLIES, "-inf", now, "LIMIT", 0, most
        )
        return sum([await self._sweep(text(queue), now) for queue in found])

    async def _sweep(self, queue: str, now: float) -> int:
        k = QueueKeys(queue)
        visit = await self.redis.read_due([DUE_TALLIES], queue)
        tallies: dict[str, bytes] = {}
        async for flat in self.redis.steps("HSCAN", k.tallies):
            tallies.update((text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2))
        ids = sorted(tallies, key=lambda id_: STEPS.find(id_[-1]))  # a job joins first
        for start in range(0, len(ids), SWEEP_STEP):
            chunk = ids[start : start + SWEEP_STEP]
            await self.redis.apply([_tally(id_, tallies[id_]) for id_ in chunk], "")
            await self.redis.execute("HDEL", k.tallies, *chunk)
        counts = [("HLEN", k.batched), ("HLEN", k.dependants), ("HLEN", k.tallies)]
        again = repr(now + TALLY_SWEEP) if any(await self.redis.execute_many(counts)) else ""
        settle = json.dumps(["settle_due", DUE_TALLIES, queue, again]).encode()
        await self.redis.apply([settle], json.dumps(visit))
        return len(ids)

    async def recent(self, most: int) -> list[str]:
        """Up to `most` bids, those kept longest first (the newest, for batches of one TTL)."""
        return [text(b) for b in await self.redis.execute("ZREVRANGE", BATCHES_EXPIRY, 0, most - 1)]

    async def next_purge(self) -> float | None:
        found = await self.redis.execute("ZRANGE", BATCHES_EXPIRY, 0, 0, "WITHSCORES")
        return float(found[1]) if found else None

    async def flush(self) -> None:
        """Delete every batch (FLUSH). The workflows' ends due stay: a dependant pushed while
        FLUSH ran may wait for one (settling an end whose dependant is gone changes nothing)."""
        async for key in self.redis.keys(f"{BATCH_PREFIX}*"):
            await self.redis.execute("DEL", key)
        await self.redis.execute("DEL", BATCHES_DUE, BATCHES_EXPIRY)


def _tally(id_: str, kept: bytes) -> bytes:
    """The outbox entry that makes a tally a queue kept: JSON [bid, op, kind, now] of a batch,
    or [wf:due entry, now] of a workflow's end (its id ends in /w)."""
    if id_.endswith("/w"):
        return json.dumps(["wf_due", WF_DUE, *json.loads(kept)]).encode()
    bid, op, kind, now = json.loads(kept)
    return json.dumps(
        ["batch_tally", BATCHES_DUE, BATCHES_EXPIRY, bid, id_, op, kind, now]
    ).encode()
