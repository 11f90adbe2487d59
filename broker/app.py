"""Composition root: Redis (embedded or external), store, manager, server and loops, all in
one root nursery."""

import logging
import time

import trio

from broker.config import Config
from broker.doorbell import Doorbell
from broker.errors import StartError
from broker.manager import Manager
from broker.middleware import Chains
from broker.reapers import run_reapers
from broker.redis_server import EmbeddedRedis
from broker.server import Server
from broker.stats import Stats
from broker.store.connection import CONNECTION_ERRORS, Address, Pipeline, Subscriber
from broker.store.keys import PUSHED_CHANNEL
from broker.store.redis import Store
from broker.tls import server_context

log = logging.getLogger(__name__)

RESUBSCRIBE_DELAY = 1.0  # seconds before re-opening the push-notification subscription


class App:
    """One broker process. `await app.run()` serves until `app.stop()` (or cancellation); it
    raises StartError when it cannot start."""

    def __init__(
        self,
        config: Config,
        *,
        chains: Chains | None = None,
    ) -> None:
        self.config = config
        self.chains = chains or Chains()
        self.ssl_context = server_context(config)
        self.redis_url = config.redis_url
        self.port = 0
        self.manager: Manager | None = None
        self.server: Server | None = None
        self._stop = trio.Event()
        self._starting = trio.CancelScope()  # around the start: stop() then ends it at once

    def stop(self) -> None:
        """Stop: at once while starting (e.g. waiting for Redis), gracefully once serving."""
        self._stop.set()
        self._starting.cancel()

    def reload(self, config: Config) -> None:
        """Take the settings that can change while running (password, limits, timeouts)."""
        self.config = config
        if self.manager is not None:
            self.manager.config = config

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as root:
            with self._starting:
                redis = await self._reach_redis(root)
            if self._starting.cancelled_caught:
                log.info("stopped while starting")
                root.cancel_scope.cancel()
                return
            address = redis.address
            doorbell = Doorbell()
            self.manager = manager = Manager(
                Store(redis),
                self.config,
                chains=self.chains,
                stats=Stats(),
                doorbell=doorbell,
                clock=time.time,
            )
            self.server = server = Server(manager, lambda: self.config, self.ssl_context)
            root.start_soon(relay_pushes, address, doorbell)
            root.start_soon(run_reapers, manager, self.config, server.close_worker)
            async with trio.open_nursery() as serving:
                self.port = await serving.start(server.run)
                log.info(
                    "Hopper listening on %s:%d%s, redis %s",
                    self.config.host,
                    self.port,
                    " (TLS)" if self.ssl_context else "",
                    address.display,
                )
                task_status.started(self.port)
                await self._stop.wait()
                log.info("shutting down")
                server.begin_shutdown()
            root.cancel_scope.cancel()

    async def _reach_redis(self, root: trio.Nursery) -> Pipeline:
        """Start the embedded redis-server (without redis_url), then connect; raises StartError
        when Redis does not answer within redis_start_timeout."""
        timeout = self.config.redis_start_timeout
        if not self.redis_url:
            embedded = EmbeddedRedis(
                self.config.data_dir, self.config.redis_server, self.config.appendfsync, timeout
            )
            self.redis_url = await root.start(embedded.run)
        redis = Pipeline(Address(self.redis_url))
        with trio.move_on_after(timeout) as deadline:
            await root.start(redis.run)
        if deadline.cancelled_caught:
            raise StartError(
                f"cannot reach redis at {redis.address.display} within {timeout:g}s: "
                f"{redis.last_error or 'no answer'}"
            )
        return redis


async def relay_pushes(address: Address, doorbell: Doorbell) -> None:
    """Ring the doorbell for pushes made through other broker processes."""
    while True:
        try:
            async with Subscriber(address, PUSHED_CHANNEL).open() as messages:
                async for queue in messages:
                    doorbell.ring(queue.decode())
        except CONNECTION_ERRORS as exc:
            log.warning("push notifications lost (%s); resubscribing", exc)
        await trio.sleep(RESUBSCRIBE_DELAY)
