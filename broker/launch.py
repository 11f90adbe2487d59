"""What `hopper run` and `hopper check` start, once their settings are read: the check, the
supervisor of several broker processes, or one broker with its signals (INT/TERM stop, HUP
reload) and, when supervised, its link to the supervisor."""

import argparse
import logging
import os
import resource
import signal
import socket
from functools import partial

import msgspec
import trio

from hopper_broker.app import App
from hopper_broker.check import check
from hopper_broker.config import FD_RESERVE, Config
from hopper_broker.errors import StartError
from hopper_broker.options import LINK_FLAG, load_config
from hopper_broker.processes import Ready, Supervisor, follow_supervisor

log = logging.getLogger("hopper_broker")


def launch(args: argparse.Namespace, argv: list[str], config: Config) -> int:
    """Run the command `args` names to its end; its exit status (StartError if it cannot)."""
    if args.command == "check":
        return trio.run(partial(check, config, repair=args.repair, as_json=args.json))
    if config.process_count > 1:
        return trio.run(Supervisor(config, argv).run)
    raise_fd_limit(config.max_connections + FD_RESERVE)
    trio.run(serve, args, config)
    return 0


async def serve(args: argparse.Namespace, config: Config) -> None:
    app = App(config)
    link = _supervisor_link(args.supervisor_fd)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def run_app() -> None:
                try:
                    await app.run(task_status=Ready(link) if link else trio.TASK_STATUS_IGNORED)
                finally:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(run_app)
            if link:
                link.setblocking(False)
                nursery.start_soon(follow_supervisor, link, app.stop)

            async def watch() -> None:
                async for signum in signals:
                    if signum == signal.SIGHUP:
                        try:
                            kept = app.reload(load_config(args, dict(os.environ)))
                        except (OSError, ValueError, msgspec.ValidationError) as exc:
                            log.error("configuration not reloaded: %s", exc)
                            continue
                        logging.getLogger().setLevel(app.settings().log_level.upper())
                        log.info("configuration reloaded")
                        if kept:
                            log.warning("%s: changed only by a restart", ", ".join(kept))
                    else:
                        app.stop()
                        return

            nursery.start_soon(watch)


def _supervisor_link(fd: int | None) -> socket.socket | None:
    """A supervised broker's end of its link to the supervisor (processes.py), if any."""
    if fd is None:
        return None
    try:
        return socket.socket(fileno=fd)
    except OSError as exc:
        raise StartError(f"{LINK_FLAG} {fd}: {exc.strerror or exc}") from None


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft limit on open files to `wanted`, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("the open-file limit %d is below max_connections + %d", hard, FD_RESERVE)
        wanted = hard
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
