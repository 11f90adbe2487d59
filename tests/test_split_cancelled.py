"""Split mode (docs/cluster.md): a move is several calls (a push's claim, its script, the
script's global writes). A caller cancelled between them (a worker's connection closed by the
worker reaper, a broker stopping) waits for the move's last step: nothing is left for
`hopper check` to mend, unlike a crash between the steps (tests/test_split.py)."""

from collections.abc import Sequence
from typing import Any

import redis
import trio

from hopper_broker.manager import Manager
from hopper_broker.store import keys
from hopper_broker.store.audit import Auditor
from hopper_broker.store.base import Redis, Script, Visit
from tests.test_manager import NOW, new
from tests.test_split import K, split_manager


class Paused(Redis):
    """A store that stops once, before the call named `at` ('push': a push's script, after its
    claim; 'apply': a script's global writes), until `go` is set; `reached` tells it stopped."""

    at = ""
    reached = trio.Event()
    go = trio.Event()

    async def _pause(self, name: str) -> None:
        if name == self.at:
            self.at = ""
            self.reached.set()
            await self.go.wait()

    async def run(
        self, script: Script, keys_: Sequence[str], args: Sequence[Any], visit: Visit = None
    ) -> Any:
        await self._pause(script.name)
        return await super().run(script, keys_, args, visit)

    async def apply(self, outbox: list[bytes], visit: str, queue: str | None = None) -> None:
        await self._pause("apply")
        await super().apply(outbox, visit, queue)


async def cancelled_at(manager: Manager, at: str, nursery: trio.Nursery, move: Any) -> None:
    """Run `move` and cancel it once the store stopped at `at`; then let the store go on."""
    store = manager.store.redis
    assert isinstance(store, Paused)
    store.at, store.reached, store.go = at, trio.Event(), trio.Event()
    with trio.CancelScope() as scope:

        async def cancel() -> None:
            await store.reached.wait()
            scope.cancel()
            store.go.set()

        nursery.start_soon(cancel)
        with trio.fail_after(10):
            await move()
    assert store.reached.is_set()


async def test_a_push_cancelled_after_its_claim_is_stored_whole(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    manager = await split_manager(nursery, redis_url, rdb, Paused)
    await cancelled_at(manager, "push", nursery, lambda: manager.push(new("jid-0001"), NOW))
    assert rdb.lrange(K.queue, 0, -1) == ["jid-0001"]
    assert rdb.hget(keys.JIDS, "jid-0001") == "default"
    assert (await Auditor(manager.store).run()).problems == []


async def test_an_ack_cancelled_after_its_script_makes_its_global_writes(
    nursery: trio.Nursery, redis_url: str, rdb: redis.Redis
) -> None:
    manager = await split_manager(nursery, redis_url, rdb, Paused)
    await manager.push(new("jid-0001"), NOW)
    assert await manager.fetch(["default"], "w1", NOW) is not None
    await cancelled_at(manager, "apply", nursery, lambda: manager.ack("jid-0001", "default", NOW))
    assert rdb.hget(keys.JIDS, "jid-0001") == "~default"  # the ACK's second step
    assert (await Auditor(manager.store).run()).problems == []
