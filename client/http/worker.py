"""`HttpWorker`: a `Worker` whose one job function POSTs every job to a downstream service.

Fetching, heartbeats, ACK/FAIL delivery through broker restarts, quiet/terminate and the
grace at shutdown are the Worker's own (see client/shift.py); this adds the HTTP client, the
callback endpoint for accepted jobs, and the delivery rules (deliver.py).
"""

import functools
import threading
from typing import Any

import httpx
import trio

from hopper_client.aio import AsyncClient
from hopper_client.execution import ANY_JOBTYPE
from hopper_client.http.callbacks import Callbacks
from hopper_client.http.config import Plan
from hopper_client.http.deliver import Delivery
from hopper_client.worker import Worker


class HttpWorker:
    """Runs `plan` (see config.py): fetches from its queues, POSTs each job by its jobtype.

    `worker_options` go to `Worker` (grace, heartbeat, labels, password, ssl_context...).
    """

    def __init__(self, plan: Plan, **worker_options: Any) -> None:
        config = plan.config
        self.plan = plan
        worker_options.setdefault("labels", ("python", "http"))
        worker_options.setdefault("prefetch", 0)  # requests take long: no job waits for a slot
        self.worker = Worker(config.url, config.queues, config.concurrency, **worker_options)
        self.callbacks = None if plan.secret is None else Callbacks(plan.secret)
        self.callback_url = ""

    def run(self) -> None:
        """Work until told to stop (signals in the main thread), as `Worker.run`."""
        main = threading.current_thread() is threading.main_thread()
        trio.run(functools.partial(self.arun, handle_signals=main))

    async def arun(
        self,
        *,
        handle_signals: bool = False,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """`run()` for trio programs; with `nursery.start` returns once the callback
        endpoint listens and the broker has registered the worker."""
        worker = self.worker
        settings = self.plan.config.callback
        listeners: list[trio.SocketListener] = []
        if self.callbacks is not None and settings is not None:
            host, port = settings.address()
            listeners = await self.callbacks.listen(host, port)  # OSError: taken
            self.callback_url = (
                settings.url or f"http://{host or '127.0.0.1'}:{self.callbacks.port}"
            )
        limits = httpx.Limits(max_connections=worker.concurrency)
        async with (
            httpx.AsyncClient(limits=limits, follow_redirects=False) as http,
            AsyncClient(worker.url, worker.password, ssl_context=worker.ssl_context) as broker,
            trio.open_nursery() as nursery,
        ):
            if self.callbacks is not None:
                nursery.start_soon(self.callbacks.serve, listeners)
            delivery = Delivery(self.plan, http, broker, self.callbacks, self.callback_url)
            worker.register(ANY_JOBTYPE, delivery)
            await nursery.start(self._work, handle_signals, nursery.cancel_scope)
            task_status.started()

    async def _work(
        self, handle_signals: bool, rest: trio.CancelScope, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run the worker; once it has stopped, stop the rest (the callback endpoint)."""
        await self.worker.arun(handle_signals=handle_signals, task_status=task_status)
        rest.cancel()

    def quiet(self) -> None:
        """Stop fetching (from any thread)."""
        self.worker.quiet()

    def terminate(self) -> None:
        """Stop, as `Worker.terminate` (from any thread)."""
        self.worker.terminate()
