"""The dashboard's web server: a Starlette app served by Hypercorn's trio backend inside the
broker's own nursery, on `dashboard_bind` (docs/dashboard.md)."""

import logging
from collections.abc import Callable
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from hopper_broker.config import Config, split_bind
from hopper_broker.manager import Manager
from hopper_broker.server import Server
from hopper_broker.web import actions, past, set_actions, sets, views
from hopper_broker.web.auth import Guard, GuardMiddleware
from hopper_broker.web.figures import History
from hopper_broker.web.metrics import Metrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


class Dashboard:
    """The dashboard of one broker process: its routes, metrics and chart history."""

    def __init__(self, manager: Manager, server: Server, config: Callable[[], Config]) -> None:
        self.manager = manager
        self.server = server
        self.config = config
        self.guard = Guard(config)
        self.metrics = Metrics(manager)
        self.history = History(manager)
        self.port = 0
        server.commands.observer = self.metrics
        routes = [
            *views.routes(),
            *actions.routes(),
            *past.routes(),
            *sets.routes(),
            *set_actions.routes(),
            Route("/metrics", self._metrics),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        self.app = Starlette(
            routes=routes,
            middleware=[Middleware(GuardMiddleware, self.guard)],
            exception_handlers=views.ERROR_PAGES,
        )
        self.app.state.dashboard = self

    async def _metrics(self, request: Request) -> Response:
        body = await self.metrics.render()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; reports the bound port (0 when the port could not be bound:
        the broker goes on without a dashboard, saying why)."""
        host, port = split_bind(self.config().dashboard_bind)
        web = HypercornConfig()
        web.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        web.accesslog = None
        web.errorlog = logging.getLogger("hopper_broker.web.hypercorn")
        web.errorlog.setLevel(logging.WARNING)  # its "Running on": said below, once
        try:
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(serve, self.app, web)
                self.port = int(bound[0].rsplit(":", 1)[1])
                log.info("dashboard on %s", bound[0])
                task_status.started(self.port)
                nursery.start_soon(self.metrics.watch_lag)
                nursery.start_soon(self.history.run)
        except* OSError as failed:
            if self.port:
                raise
            log.warning(
                "no dashboard: cannot listen on %s:%d: %s", host, port, failed.exceptions[0]
            )
            task_status.started(0)
