"""`hopper check` for batches (store/audit.py runs it): every batch record and due callback,
each looked at by one script (batch_check.lua), and in split mode the queues' tallies
(lib_batches.lua), each queue holding some in due:tallies so that the batches loop makes them."""

from collections.abc import Sequence

from hopper_broker.store import keys
from hopper_broker.store.audit_part import AuditPart
from hopper_broker.store.base import Script, text

BATCH_CHECK = Script("batch_check")
BATCH_REPAIR_AGE = 30 * 86_400.0  # seconds from now a batch found without expiry is kept


class BatchAuditor(AuditPart):
    """Checks (and with `repair`, mends) every batch, and the tallies of the given queues."""

    async def run(self, queues: Sequence[str]) -> None:
        bids: set[str] = set()
        async for key in self.redis.keys(f"{keys.BATCH_PREFIX}*"):
            bid = text(key)[len(keys.BATCH_PREFIX) :]
            if ":" not in bid:  # not a batch's told set (split mode)
                bids.add(bid)
        for member in await self.redis.execute("ZRANGE", keys.BATCHES_DUE, 0, -1):
            bids.add(text(member).partition(" ")[2])
        now = await self.store.time()
        for bid in sorted(bids):
            found = await self.redis.run(
                BATCH_CHECK,
                (keys.BATCHES_DUE, keys.BATCHES_EXPIRY),
                (bid, "1" if self.repair else "0", now + BATCH_REPAIR_AGE),
            )
            for i in range(0, len(found), 2):
                kind = text(found[i])
                repaired = self.repair and kind != "batch counts"
                self.note(kind, "", bid, text(found[i + 1]), repaired)
        for queue in queues:
            await self._tallies_due(queue, now)

    async def _tallies_due(self, queue: str, now: float) -> None:
        """A queue's tallies are due in due:tallies (read in this order: the batches loop
        takes the tallies before it drops the entry, and only when the queue has no job of a
        batch left, whose tallies a push announces first)."""
        due = await self.redis.execute("ZSCORE", keys.DUE_TALLIES, queue)
        if due is None and await self.redis.execute("HLEN", keys.QueueKeys(queue).tallies):
            self.note("tallies not due", queue, "")
            if self.repair:
                await self.redis.global_step("due_add", keys.DUE_TALLIES, repr(now), queue)
