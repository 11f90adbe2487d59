"""The verbs that steer jobs and queues rather than run them: INFO, FLUSH, QUEUE, MUTATE, TRACK,
JOB, DRAIN, CRON, WORKER, HISTORY and BATCH, each one manager call (commands.py dispatches)."""

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import msgspec

from hopper_broker import protocol
from hopper_broker.arguments import decode, decode_as, seconds_of
from hopper_broker.history import query_decoder
from hopper_broker.session import Session
from hopper_client.schema.errors import CommandError
from hopper_client.schema.jobs import decode_input, encode, mutation_decoder
from hopper_client.schema.pages import ListQuery

if TYPE_CHECKING:
    from hopper_broker.commands import Commands

list_decoder = msgspec.json.Decoder(ListQuery)
DEFAULT_WAIT = 30.0  # seconds a JOB WAIT without a timeout waits


async def info(commands: "Commands", session: Session, arg: bytes) -> bytes:
    return protocol.bulk(encode(await commands.manager.admin.info(commands.clock())))


async def flush(commands: "Commands", session: Session, arg: bytes) -> bytes:
    await commands.manager.admin.flush()
    return protocol.OK


async def queue(commands: "Commands", session: Session, arg: bytes) -> bytes:
    words = arg.decode("utf-8", "replace").split()
    if not words:
        raise CommandError("QUEUE needs a subcommand: PAUSE, RESUME, REMOVE, LATENCY or SET")
    sub, names = words[0].upper(), words[1:]
    options = [w for w in names if "=" in w]
    names = [w for w in names if "=" not in w]
    if not names:
        raise CommandError(f"QUEUE {sub} needs at least one queue name")
    if sub == "SET":
        if not options:
            raise CommandError("QUEUE SET needs at least one <setting>=<value>")
        await commands.manager.admin.configure(names, options)
    elif sub == "PAUSE" and options:
        if len(options) != 1 or not options[0].startswith("for="):
            raise CommandError("QUEUE PAUSE takes one option: for=<seconds>")
        seconds = seconds_of(options[0][4:], "QUEUE PAUSE")
        await commands.manager.admin.pause(names, True, max(seconds, 0.0))
    elif options:
        raise CommandError(f"QUEUE {sub} takes no options")
    elif sub in ("PAUSE", "RESUME"):
        await commands.manager.admin.pause(names, sub == "PAUSE")
    elif sub == "REMOVE":
        await commands.manager.admin.remove(names)
    elif sub == "LATENCY":
        return protocol.bulk(encode(await commands.manager.admin.latency(names, commands.clock())))
    else:
        raise CommandError(f"no such QUEUE subcommand: {sub}")
    return protocol.OK


async def track(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """TRACK SET <json> | TRACK GET <jid> (Faktory Enterprise's job tracking)."""
    sub, _, rest = arg.partition(b" ")
    sub = sub.upper()
    if sub == b"SET":
        await commands.manager.tracking.track_set(rest)
        return protocol.OK
    if sub == b"GET" and rest.strip():
        answer = await commands.manager.tracking.track_get(rest.strip().decode("utf-8", "replace"))
        return protocol.bulk(encode(answer))
    raise CommandError("TRACK needs SET <json> or GET <jid>")


async def job(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """JOB STATE|CANCEL|WORKFLOW <jid> | JOB WAIT <jid> [seconds] | JOB SNOOZE <jid>
    <seconds> | JOB LOG <json> | JOB LIST <json> (Hopper extensions)."""
    words = arg.decode("utf-8", "replace").split(" ")
    sub, jid = words[0].upper(), words[1] if len(words) > 1 else ""
    tracking = commands.manager.tracking
    if sub == "LOG":
        await tracking.log(arg[4:])
        return protocol.OK
    if sub == "LIST":
        query = decode_as(list_decoder, arg[5:], "JOB LIST")
        return protocol.bulk(encode(await commands.manager.listing.page(query)))
    if sub == "STATE" and len(words) == 2 and jid:
        return protocol.bulk(encode(await tracking.state(jid)))
    if sub == "WORKFLOW" and len(words) == 2 and jid:
        return protocol.bulk(encode(await commands.manager.workflows.graph(jid)))
    if sub == "CANCEL" and len(words) == 2 and jid:
        return protocol.bulk(encode(await tracking.cancel(jid)))
    if sub == "WAIT" and len(words) in (2, 3) and jid:
        timeout = seconds_of(words[2], "JOB WAIT") if len(words) == 3 else DEFAULT_WAIT
        return protocol.bulk(encode(await tracking.wait(jid, timeout)))
    if sub == "SNOOZE" and len(words) == 3 and jid:
        seconds = seconds_of(words[2], "JOB SNOOZE")
        await commands.manager.snooze(jid, seconds, session.recall(jid), commands.clock())
        return protocol.OK
    raise CommandError(
        "JOB needs STATE <jid>, WAIT <jid> [seconds], CANCEL <jid>, SNOOZE <jid> <seconds>,"
        " WORKFLOW <jid>, LOG <json> or LIST <json>"
    )


async def batch(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """BATCH NEW <json> | OPEN <bid> | COMMIT <bid> | STATUS <bid> (Faktory Enterprise)."""
    sub, _, rest = arg.partition(b" ")
    sub, batches = sub.upper(), commands.manager.batches
    if sub == b"NEW":
        return protocol.bulk((await batches.new(rest, commands.clock())).encode())
    bid = rest.strip().decode("utf-8", "replace")
    if sub == b"OPEN" and bid:
        return protocol.bulk((await batches.open(bid)).encode())
    if sub == b"COMMIT" and bid:
        await batches.commit(bid, commands.clock())
        return protocol.OK
    if sub == b"STATUS" and bid:
        return protocol.bulk(encode(await batches.status(bid)))
    raise CommandError("BATCH needs NEW <json>, OPEN <bid>, COMMIT <bid> or STATUS <bid>")


async def drain(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """DRAIN ON|OFF (Hopper): the whole broker refuses pushes, or takes them again."""
    word = arg.strip().upper()
    if word not in (b"ON", b"OFF"):
        raise CommandError("DRAIN needs ON or OFF")
    await commands.manager.admin.drain(word == b"ON")
    return protocol.OK


async def worker(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """WORKER QUIET|TERMINATE <wid> (Hopper): ask a worker to quiet or stop, as Faktory's
    Web UI does; its next BEAT is answered with the state."""
    words = arg.decode("utf-8", "replace").split()
    if len(words) != 2 or words[0].upper() not in ("QUIET", "TERMINATE"):
        raise CommandError("WORKER needs QUIET <wid> or TERMINATE <wid>")
    state = await commands.manager.workers.signal(words[1], words[0].lower())
    return protocol.bulk(encode({"wid": words[1], "state": state}))


async def cron(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """CRON LIST (Hopper extension): the periodic jobs with their next and last ticks."""
    if arg.strip().upper() != b"LIST":
        raise CommandError("CRON needs LIST")
    return protocol.bulk(encode(await commands.manager.cron.listing(commands.clock())))


async def history(commands: "Commands", session: Session, arg: bytes) -> bytes:
    """HISTORY <json> (Hopper extension): archived jobs by jid, or a page newest first."""
    query = decode(query_decoder, arg or b"{}", "HISTORY")
    return protocol.bulk(encode(await commands.manager.history.query(query)))


async def mutate(commands: "Commands", session: Session, arg: bytes) -> bytes:
    try:
        mutation = decode_input(mutation_decoder, arg)
    except msgspec.DecodeError as exc:
        raise CommandError(str(exc)) from None
    await commands.manager.mutator.run(mutation, commands.clock())
    return protocol.OK


TABLE: dict[str, Callable[["Commands", Session, bytes], Awaitable[bytes]]] = {
    "INFO": info,
    "FLUSH": flush,
    "QUEUE": queue,
    "MUTATE": mutate,
    "TRACK": track,
    "JOB": job,
    "DRAIN": drain,
    "CRON": cron,
    "WORKER": worker,
    "HISTORY": history,
    "BATCH": batch,
}
