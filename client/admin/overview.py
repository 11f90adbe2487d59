"""`hopper info`, `hopper queues`: what the broker's INFO says, for people (tables) or
scripts (--json)."""

import argparse
from typing import Any

import msgspec

from hopper_client.admin.cli import OK, Subcommands
from hopper_client.admin.output import duration, emit_json, table
from hopper_client.client import Client

NAMES = ("info", "queues")
SETS = ("working", "scheduled", "retries", "dead")


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    info = commands.add_parser(
        "info",
        parents=[common],
        help="the broker's figures",
        description="The broker's version, uptime, job counts per set, paused and draining "
        "queues and connected workers (--json: the whole INFO document).",
    )
    info.set_defaults(handler=show_info)
    queues = commands.add_parser(
        "queues",
        parents=[common],
        help="the queues: size, latency, paused, draining, limits",
        description="One line per queue: jobs waiting, seconds the oldest has waited, whether "
        "it is paused or draining, and its limits (QUEUE SET).",
    )
    queues.set_defaults(handler=show_queues)


def show_info(client: Client, args: argparse.Namespace) -> int:
    info = client.info()
    if args.json:
        emit_json(info)
        return OK
    faktory, server, hopper = info["faktory"], info["server"], info.get("hopper", {})
    sets = faktory["sets"]
    print(
        f"{server.get('description', 'Faktory')} {server.get('hopper_version', '')} "
        f"(protocol {server['faktory_version']}), up {duration(server['uptime'])}, "
        f"connections {server['connections']}"
    )
    print(
        f"jobs: {faktory['total_enqueued']} waiting in {faktory['total_queues']} queues; "
        + ", ".join(f"{name} {sets.get(name, 0)}" for name in SETS)
    )
    print(
        f"processed {faktory['total_processed']} (today {faktory.get('processed_today', 0)}), "
        f"failed {faktory['total_failures']} (today {faktory.get('failures_today', 0)})"
    )
    if hopper:
        print(
            f"paused: {', '.join(hopper.get('paused', [])) or 'none'}; draining: "
            f"{', '.join(hopper.get('draining_queues', [])) or 'none'}"
            + ("; the whole broker drains" if hopper.get("draining") else "")
        )
        print(f"workers: {hopper.get('workers', {}).get('total', 0)} connected")
    return OK


def show_queues(client: Client, args: argparse.Namespace) -> int:
    info = client.info()
    sizes: dict[str, int] = info["faktory"]["queues"]
    settings: dict[str, dict[str, Any]] = info.get("hopper", {}).get("queues", {})
    names = sorted({*sizes, *settings})
    latency = client.latency(*names) if names else {}
    rows = [_queue(name, sizes, latency, settings.get(name, {})) for name in names]
    if args.json:
        emit_json(rows)
        return OK
    table(
        ("QUEUE", "SIZE", "LATENCY", "PAUSED", "DRAINING", "LIMITS"),
        [
            (r.queue, r.size, f"{r.latency:g}s", _yes(r.paused), _yes(r.draining),
             " ".join(f"{k}={v}" for k, v in r.limits.items()))
            for r in rows
        ],
        "no queues",
    )  # fmt: skip
    return OK


class QueueRow(msgspec.Struct):
    """One queue as `hopper queues` shows it."""

    queue: str
    size: int
    latency: float  # seconds the oldest waiting job has waited
    paused: bool
    draining: bool
    limits: dict[str, Any]


def _queue(
    name: str, sizes: dict[str, int], latency: dict[str, float], shown: dict[str, Any]
) -> QueueRow:
    return QueueRow(
        queue=name,
        size=sizes.get(name, 0),
        latency=round(latency.get(name, 0.0), 3),
        paused="paused" in shown,
        draining=bool(shown.get("draining")),
        limits=_limits(shown),
    )


def _limits(shown: dict[str, Any]) -> dict[str, Any]:
    limits = {k: v for k, v in shown.items() if k not in ("paused", "resume_at", "draining")}
    for jobtype, values in limits.pop("jobtypes", {}).items():
        limits.update({f"{jobtype}.{name}": value for name, value in values.items()})
    return limits


def _yes(flag: bool) -> str:
    return "yes" if flag else ""
