"""`hopper run`: argv, environment and TOML file -> Config -> run the app; nothing else."""

import argparse
import logging
import os
import resource
import signal
import sys
import tomllib
from collections.abc import Sequence
from functools import partial
from typing import Any

import msgspec
import trio

from broker import __version__
from broker.app import App
from broker.check import check
from broker.config import FD_RESERVE, Config
from broker.errors import StartError

ENV_ALIASES = {
    "password": ("HOPPER_PASSWORD", "FAKTORY_PASSWORD"),
    "redis_url": ("HOPPER_REDIS_URL", "REDIS_URL"),
}
FILE_ONLY = ("cron", "queues", "throttles", "retention")  # settings only a TOML file can give
FIELDS = [f for f in msgspec.structs.fields(Config) if f.name not in FILE_ONLY]
log = logging.getLogger("broker")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="hopper", description="Hopper job broker")
    top.add_argument("--version", action="version", version=f"hopper {__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the broker",
        description="Run the broker. Each setting is also read from the environment variable "
        "HOPPER_<NAME> and from the TOML file given by --config; flags win over the "
        "environment, which wins over the file.",
    )
    _settings_flags(run, FIELDS)
    check = commands.add_parser(
        "check",
        help="check the store's integrity",
        description="Walk the whole store (in batches, safe while brokers run) and report every "
        "broken invariant: a job in no place or in two, an entry without its job, a jid index "
        "entry missing or pointing nowhere, a queue with work no loop would visit. Exit status "
        "0 when sound, 1 when problems remain.",
    )
    check.add_argument(
        "--repair", action="store_true", help="fix what can be fixed without losing a job"
    )
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    _settings_flags(check, [f for f in FIELDS if f.name in CHECK_SETTINGS])
    return top


CHECK_SETTINGS = ("redis_url", "data_dir", "redis_server")


def _settings_flags(
    command: argparse.ArgumentParser, fields: Sequence[msgspec.structs.FieldInfo]
) -> None:
    command.add_argument("--config", metavar="FILE", help="TOML settings file (env HOPPER_CONFIG)")
    for field in fields:
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:
            command.add_argument(flag, action="store_const", const=True, default=None)
        else:
            command.add_argument(flag, metavar=field.name.upper(), default=None, help=_help(field))


def _help(field: msgspec.structs.FieldInfo) -> str:
    return f"default: {field.default!r}"


def load_config(args: argparse.Namespace, env: dict[str, str]) -> Config:
    """Flags, then environment, then the TOML file, then defaults."""
    values: dict[str, Any] = {}
    path = args.config or env.get("HOPPER_CONFIG")
    if path:
        with open(path, "rb") as f:
            document = tomllib.load(f)
        values.update(document.get("hopper", document))
        for table in FILE_ONLY:  # `[[cron]]`, `[queues.<name>]`, `[throttles]` at top level
            if table in document:
                values[table] = document[table]
    for field in FIELDS:
        for name in ENV_ALIASES.get(field.name, (f"HOPPER_{field.name.upper()}",)):
            if env.get(name):
                values[field.name] = env[name]
                break
        flag = getattr(args, field.name, None)
        if flag is not None:
            values[field.name] = flag
    password = str(values.get("password", ""))
    if password.startswith("/"):
        with open(password) as f:
            values["password"] = f.read().strip()
    config = msgspec.convert(values, Config, strict=False)
    config.check()
    return config


async def serve(args: argparse.Namespace, config: Config) -> None:
    app = App(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async with trio.open_nursery() as nursery:

            async def run_app() -> None:
                try:
                    await app.run()
                finally:
                    nursery.cancel_scope.cancel()

            nursery.start_soon(run_app)

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


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        config = load_config(args, dict(os.environ))
    except (OSError, ValueError, msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        sys.exit(f"hopper: {exc}")
    logging.basicConfig(
        level=config.log_level.upper() if args.command == "run" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    status = 0
    try:
        if args.command == "check":
            status = trio.run(partial(check, config, repair=args.repair, as_json=args.json))
        else:
            raise_fd_limit(config.max_connections + FD_RESERVE)
            trio.run(serve, args, config)
    except* StartError as failed:
        sys.exit(f"hopper: {_first(failed)}")
    sys.exit(status)


def _first(group: BaseExceptionGroup) -> BaseException:
    """The first exception in a (nested) exception group."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def raise_fd_limit(wanted: int) -> None:
    """Raise the soft limit on open files to `wanted`, as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        log.warning("the open-file limit %d is below max_connections + %d", hard, FD_RESERVE)
        wanted = hard
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


if __name__ == "__main__":
    main()
