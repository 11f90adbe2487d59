"""Batches, as Faktory Enterprise has them (the manager owns this room): BATCH NEW, OPEN,
COMMIT and STATUS, and the callbacks pushed once a committed batch's jobs ran.

A job joins a batch by `custom.bid` on PUSH (intake.py asks member_of()); the push, ack, fail
and other job scripts count it (batch_count() in lib_batches.lua) and mark a callback due the moment
it may fire. fire() pushes due callbacks through the normal push with the batch as a claim:
the push script stores a callback only while its batch may push it, and moves its state to 1
in the same step, so a callback is pushed once whichever brokers try, and a broker that dies
between reading and pushing leaves it due for the next. A callback carries custom._bid (and
_pbid for a child); its ACK moves its state to 2.

BATCH OPEN checks that the batch exists and changes nothing: a committed batch stays
committed (so an OPEN never followed by a COMMIT, as faktory_worker_go's in-job helper does,
cannot hold the callbacks back), and jobs may be pushed into any batch that exists.
"""

import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from hopper_broker.config import Settings
from hopper_broker.errors import Unreplicated
from hopper_broker.policy import due_at, settle_rules
from hopper_broker.store.batches import KINDS
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import BrokerError, CommandError
from hopper_client.schema.jobs import (
    Job,
    check_queue_name,
    decode_pushed,
    encode,
    job_decoder,
    validate_new,
)

log = logging.getLogger(__name__)

BID = re.compile(r"b-[A-Za-z0-9_-]{14}")  # what BATCH NEW hands out (URL-safe base64)
BID_BYTES = 11  # random bytes of a bid: 14 URL-safe characters kept
MAX_FIRES = 1000  # due callbacks one pass pushes
MAX_BID_TRIES = 10  # fresh bids tried when one is taken

Push = Callable[..., Awaitable[list[BrokerError | None]]]


class BatchDef(msgspec.Struct):
    """The argument of BATCH NEW; `bid` must be empty (Go always sends "")."""

    bid: str = ""
    parent_bid: str = ""
    description: str = ""
    success: dict[str, Any] | None = None
    complete: dict[str, Any] | None = None


class BatchStatus(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The reply of BATCH STATUS; parent_bid and description are left out when empty."""

    bid: str
    parent_bid: str = ""
    description: str = ""
    created_at: str
    total: int
    pending: int
    failed: int
    complete_st: str
    success_st: str


batch_def_decoder = msgspec.json.Decoder(BatchDef)


def no_such_batch(bid: str) -> CommandError:
    return CommandError(f"No such batch {bid}")


def check_bid(bid: str) -> str:
    """A bid as a client sent it, checked before it names a key."""
    if not BID.fullmatch(bid):
        raise no_such_batch(bid)
    return bid


def member_of(job: Job) -> tuple[str, str] | None:
    """The batch a pushed job joins, (bid, ''), from custom.bid (None: none)."""
    bid = job.custom.get("bid") if job.custom else None
    if bid is None or bid == "":
        return None
    if not isinstance(bid, str):
        raise CommandError("custom.bid must be a string")
    return check_bid(bid), ""


def _callback(value: dict[str, Any] | None, kind: str, now: float) -> bytes:
    """A callback job as BATCH NEW gives it, with PUSH's defaults and checks, encoded."""
    if value is None:
        return b""
    try:
        job = decode_pushed(msgspec.json.encode(value))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CommandError(f"invalid {kind} callback: {exc}") from None
    job.jid = job.jid or secrets.token_hex(12)
    job.args = [] if job.args is None else job.args
    try:
        validate_new(job, now)
        check_queue_name(job.queue)
        payload = encode(job)  # as given: pushed when it fires, its rules are settled then
        settle_rules(job, now, due_at(job, now))
    except BrokerError as exc:
        raise CommandError(f"{kind} callback: {exc.message}") from None
    return payload


def _created_at(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: bytes | None) -> int:
    return int(value) if value else 0


def _str(value: bytes | None) -> str:
    return value.decode() if value else ""


class Batches:
    """The batches room; `push` is Manager.push_many."""

    def __init__(self, store: Store, settings: Settings, push: Push) -> None:
        self.store = store
        self.settings = settings
        self.push = push
        self.due = False  # a script said a callback came due: fire() before replying

    def wake(self) -> None:
        self.due = True

    async def new(self, arg: bytes, now: float) -> str:
        """BATCH NEW: the new batch's bid."""
        try:
            spec = batch_def_decoder.decode(arg)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CommandError(f"invalid BATCH NEW: {exc}") from None
        if spec.bid:
            raise CommandError("BATCH NEW: bid must be blank, the broker chooses it")
        if spec.success is None and spec.complete is None:
            raise CommandError("BATCH NEW needs a success or complete callback job")
        parent = check_bid(spec.parent_bid) if spec.parent_bid else ""
        complete = _callback(spec.complete, "complete", now)
        callbacks = (complete, _callback(spec.success, "success", now))
        config = self.settings()
        for _ in range(MAX_BID_TRIES):
            bid = "b-" + secrets.token_urlsafe(BID_BYTES)[:14]
            made = await self.store.batches.create(
                bid,
                _created_at(now),
                now + config.batch_ttl,
                config.batch_finished_ttl,
                parent,
                spec.description,
                callbacks,
            )
            if made == 0:
                raise no_such_batch(parent)
            if made == 1:
                return bid
        raise CommandError("BATCH NEW: no free bid found")

    async def open(self, bid: str) -> str:
        """BATCH OPEN: the bid, when the batch exists (see the module's note)."""
        if not await self.store.batches.exists(check_bid(bid)):
            raise no_such_batch(bid)
        return bid

    async def commit(self, bid: str, now: float) -> None:
        """BATCH COMMIT: callbacks that may fire now are pushed before the reply."""
        purge_at = now + self.settings().batch_max_age
        due = await self.store.batches.commit(check_bid(bid), now, purge_at)
        if due is None:
            raise no_such_batch(bid)
        if due:
            await self.fire(now)

    async def status(self, bid: str) -> BatchStatus:
        """BATCH STATUS."""
        record = await self.store.batches.record(check_bid(bid))
        if record is None:
            raise no_such_batch(bid)
        return BatchStatus(
            bid=bid,
            parent_bid=_str(record.get("parent")),
            description=_str(record.get("description")),
            created_at=_str(record.get("created_at")),
            total=_int(record.get("total")),
            pending=_int(record.get("pending")),
            failed=_int(record.get("failed")),
            complete_st=_str(record.get("complete_st")),
            success_st=_str(record.get("success_st")),
        )

    async def recent(self, most: int) -> list[BatchStatus]:
        """Up to `most` batches (the dashboard), those kept longest first; gone ones skipped."""
        found = []
        for bid in await self.store.batches.recent(most):
            try:
                found.append(await self.status(bid))
            except BrokerError:  # purged since
                continue
        return found

    async def fire(self, now: float) -> int:
        """Push the callbacks marked due; returns how many this broker pushed (one stored
        but not yet on its replicas included). One that is refused for another reason than
        its claim (jid in use, queue full) stays due."""
        self.due = False
        pushed = 0
        for kind, bid in await self.store.batches.due(MAX_FIRES):
            record = await self.store.batches.record(bid) if kind in KINDS else None
            if record is None or not record.get(kind):
                await self.store.batches.drop_due(kind, bid)
                continue
            try:
                job = self.callback_job(record[kind], bid, _str(record.get("parent")))
            except msgspec.DecodeError as exc:  # never pushable: said once, no longer due
                log.error("batch %s: %s callback cannot be read, dropped: %s", bid, kind, exc)
                await self.store.batches.drop_due(kind, bid)
                continue
            try:
                outcome = (await self.push([job], now, None, (bid, kind)))[0]
            except BrokerError:
                raise  # Redis out of reach: the next pass tries them all again
            except Exception:  # a bug in one callback must not hold back every other batch
                log.exception("batch %s: %s callback failed", bid, kind)
                continue
            if outcome is None:
                pushed += 1
            elif isinstance(outcome, Unreplicated):
                pushed += 1
                log.warning("batch %s: %s callback %s", bid, kind, outcome.message)
            elif outcome.code != "CLAIMED" and not outcome.message.startswith("No such batch"):
                log.warning("batch %s: %s callback refused: %s", bid, kind, outcome.render())
        return pushed

    @staticmethod
    def callback_job(payload: bytes, bid: str, parent: str) -> Job:
        """A callback job as pushed: custom._bid (and _pbid for a child), never custom.bid."""
        job = job_decoder.decode(payload)
        custom = {k: v for k, v in (job.custom or {}).items() if k != "bid"}
        custom["_bid"] = bid
        if parent:
            custom["_pbid"] = parent
        job.custom = custom
        job.enqueued_at = ""
        return job

    async def purge(self, now: float) -> int:
        """Delete the batch records whose time is up (uncommitted, finished, too old)."""
        batch = self.settings().reaper_batch
        purged = 0
        for _ in range(MAX_FIRES):
            removed = await self.store.batches.purge(now, batch)
            purged += removed
            if removed < batch:
                break
        return purged

    async def tick(self, now: float) -> int:
        """One pass of the batches loop: in split mode the queues' tallies due, then due
        callbacks, then due purges."""
        swept = await self.store.batches.sweep(now, self.settings().reaper_batch)
        return swept + await self.fire(now) + await self.purge(now)
