"""Composition root: Redis (embedded or external), store, manager, server and loops, all in
one root nursery."""

import logging
from collections.abc import Callable

import trio

from hopper_broker.clock import RedisClock
from hopper_broker.config import DASHBOARD_OFF, REDIS_TIMEOUT, Config, Settings
from hopper_broker.doorbell import Doorbell
from hopper_broker.events import EventHub
from hopper_broker.loop_idle import LoopIdle
from hopper_broker.manager import Manager
from hopper_broker.middleware import Chains
from hopper_broker.reach import reach
from hopper_broker.reapers import run_reapers
from hopper_broker.redis_server import EmbeddedRedis
from hopper_broker.server import Server
from hopper_broker.stats import Stats
from hopper_broker.store.address import Address
from hopper_broker.store.cluster import ClusterPipeline
from hopper_broker.store.connection import CONNECTION_ERRORS, Pipeline, Subscriber
from hopper_broker.store.keys import FINISHED_CHANNEL, PUSHED_CHANNEL
from hopper_broker.store.migrate import migrate
from hopper_broker.store.redis import Store
from hopper_broker.tls import server_context
from hopper_broker.web.app import Dashboard
from hopper_client.schema.errors import BrokerError

log = logging.getLogger(__name__)

RESUBSCRIBE_DELAY = 1.0  # seconds before re-opening the push-notification subscription
FINISHED = FINISHED_CHANNEL.encode()
ALL = 1_000_000  # JOB WAITs woken by one finish: all of them


class App:
    """One broker process. `await app.run()` serves until `app.stop()` (or cancellation); it
    raises StartError when it cannot start."""

    def __init__(
        self,
        config: Config,
        *,
        chains: Chains | None = None,
    ) -> None:
        self.settings = Settings(config)
        self.chains = chains if chains is not None else Chains()
        self.ssl_context = server_context(config)
        self.redis_url = config.redis_url
        self.port = 0
        self.dashboard: Dashboard | None = None
        self.dashboard_port = 0  # 0: no dashboard (off, or its port could not be bound)
        self.manager: Manager | None = None
        self.server: Server | None = None
        self._stop = trio.Event()
        self._starting = trio.CancelScope()  # around the start: stop() then ends it at once

    def stop(self) -> None:
        """Stop: at once while starting (e.g. waiting for Redis), gracefully once serving."""
        self._stop.set()
        self._starting.cancel()

    def reload(self, config: Config) -> list[str]:
        """Take new settings; returns the names of those that only a restart can change (they
        keep their values). Raises ValueError for settings that cannot work together."""
        return self.settings.reload(config)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as root:
            config = self.settings()
            LoopIdle.current().budget = lambda: self.settings().busy_poll_us / 1e6
            with self._starting:
                redis = await self._reach_redis(root)
                split = config.redis_split or isinstance(redis, ClusterPipeline)
                store = Store(redis, split=split)
                await migrate(store)
                clock = RedisClock(store)
                await clock.sync()
            if self._starting.cancelled_caught:
                log.info("stopped while starting")
                root.cancel_scope.cancel()
                return
            address = redis.node_address
            root.start_soon(clock.run)
            doorbell = Doorbell()
            self.manager = manager = Manager(
                store,
                self.settings,
                chains=self.chains,
                stats=Stats(),
                doorbell=doorbell,
                clock=clock,
            )
            events = EventHub(
                address,
                redis.master_addresses,
                lambda: self.settings().event_buffer,
                lambda: self.settings().redis_timeout,
            )
            await root.start(events.run)
            self.server = server = Server(manager, self.settings, events, self.ssl_context)
            root.start_soon(
                relay,
                address,
                doorbell,
                manager.finishes,
                lambda: self.settings().redis_timeout,
            )
            await manager.admin.apply(config.queue_rules())
            root.start_soon(self._apply_queue_settings, manager, config)
            root.start_soon(run_reapers, manager, server.close_worker)
            if config.dashboard_bind != DASHBOARD_OFF:
                self.dashboard = Dashboard(manager, server, self.settings)
                self.dashboard_port = await root.start(self.dashboard.run)
            async with trio.open_nursery() as serving:
                self.port = await serving.start(server.run)
                log.info(
                    "Hopper listening on %s:%d%s, redis %s",
                    config.host,
                    self.port,
                    " (TLS)" if self.ssl_context else "",
                    redis.address.display,
                )
                task_status.started(self.port)
                await self._stop.wait()
                log.info("shutting down")
                server.begin_shutdown()
            root.cancel_scope.cancel()

    async def _apply_queue_settings(self, manager: Manager, applied: Config) -> None:
        """After each reload, write the file's `[queues.<name>]` settings to the queues (again
        at once if another reload came while they were being written)."""
        while True:
            if self.settings() is applied:
                await self.settings.reloaded()
            applied = self.settings()
            try:
                await manager.admin.apply(applied.queue_rules())
            except BrokerError as exc:
                log.warning("queue settings not applied: %s", exc)

    async def _reach_redis(self, root: trio.Nursery) -> Pipeline | ClusterPipeline:
        """Start the embedded redis-server (without redis_url), then connect; raises StartError
        when Redis does not answer within redis_start_timeout."""
        config = self.settings()
        timeout = config.redis_start_timeout
        if not self.redis_url:
            embedded = EmbeddedRedis(
                config.data_dir, config.redis_server, config.appendfsync, timeout
            )
            self.redis_url = await root.start(embedded.run)
        return await reach(self.redis_url, root, lambda: self.settings().redis_timeout, timeout)


async def relay(
    address: Callable[[], Address],
    pushes: Doorbell,
    finishes: Doorbell,
    timeout: Callable[[], float] = lambda: REDIS_TIMEOUT,
) -> None:
    """Ring the bells for what happened through any broker process: a queue that stopped being
    empty (waiting FETCHes), an awaited job that finished (waiting JOB WAITs). `address()`
    gives the Redis node to subscribe to (on a cluster, each attempt another: a message
    published on any node reaches every node), `timeout()` `redis_timeout` (see Subscriber)."""
    channels = (PUSHED_CHANNEL, FINISHED_CHANNEL)
    while True:
        try:
            async with Subscriber(address(), channels, timeout).open() as messages:
                async for channel, name in messages:
                    if channel == FINISHED:
                        finishes.ring(name.decode(), ALL)
                    else:
                        pushes.ring(name.decode())
        except CONNECTION_ERRORS as exc:
            log.warning("push notifications lost (%s); resubscribing", exc)
        await trio.sleep(RESUBSCRIBE_DELAY)
