"""`hopper-http-worker CONFIG`: POST the jobs of some queues to downstream services until a
signal stops it (TERM/INT: gracefully, twice: at once; TSTP: quiet).

Exit codes as hopper-worker's: 0 after a clean shutdown, 1 when the broker refused the worker,
2 for usage errors (bad flags, a configuration that cannot work).
"""

import argparse
import logging
import sys

from hopper_client.arguments import LOG_LEVELS, positive, seconds
from hopper_client.errors import ClientError
from hopper_client.http.config import ConfigError, plan, read
from hopper_client.http.worker import HttpWorker
from hopper_client.url import parse_urls

log = logging.getLogger("hopper_client.http")


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="hopper-http-worker",
        description="POST each job to the downstream URL its jobtype is routed to (TOML file).",
    )
    cli.add_argument("config", help="the TOML file: routes by jobtype, auth, timeouts")
    cli.add_argument("-q", "--queues", help="comma-separated queues (overrides the file)")
    cli.add_argument("-c", "--concurrency", type=positive, help="requests at once (overrides)")
    cli.add_argument("--url", help="broker URL (overrides; default: $HOPPER_URL, localhost)")
    cli.add_argument("--grace", type=seconds, help="seconds running jobs get at shutdown")
    cli.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    return cli


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        config = read(args.config)
        if args.queues is not None:
            config.queues = [q for q in args.queues.split(",") if q]
        if args.concurrency is not None:
            config.concurrency = args.concurrency
        if args.url:
            config.url = args.url
        checked = plan(config)
        parse_urls(config.url, None)
    except (ConfigError, ValueError) as exc:
        print(f"hopper-http-worker: {exc}", file=sys.stderr)
        return 2
    options = {} if args.grace is None else {"grace": args.grace}
    code = 0
    try:
        HttpWorker(checked, **options).run()
    except* ClientError as refused:
        log.error("worker stopped: %s", refused.exceptions[0])
        code = 1
    except* OSError as failed:  # the callback endpoint cannot listen
        print(f"hopper-http-worker: callback.listen: {failed.exceptions[0]}", file=sys.stderr)
        code = 2
    return code
