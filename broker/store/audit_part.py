"""What `hopper check` (audit.py) and the parts it runs (batch_audit.py, history_audit.py,
workflow_audit.py) share: the report and its problems, the store they walk, how they report a
problem, and whether they mend it."""

from typing import Protocol

import msgspec

from hopper_broker.store.redis import Store


class Problem(msgspec.Struct):
    """One broken invariant: what, where, and whether it was repaired."""

    kind: str
    queue: str = ""
    jid: str = ""
    detail: str = ""
    repaired: bool = False

    def describe(self) -> str:
        where = " ".join(
            part for part in (f"queue {self.queue}" if self.queue else "", self.jid) if part
        )
        detail = f" ({self.detail})" if self.detail else ""
        return f"{self.kind}: {where}{detail}" + (" - repaired" if self.repaired else "")


class Report(msgspec.Struct):
    """What a check saw."""

    queues: int = 0
    jobs: int = 0
    workers: int = 0
    problems: list[Problem] = msgspec.field(default_factory=list)

    @property
    def clean(self) -> bool:
        return all(p.repaired for p in self.problems)

    def summary(self) -> str:
        repaired = sum(p.repaired for p in self.problems)
        text_ = f"checked {self.queues} queues, {self.jobs} jobs, {self.workers} workers: "
        text_ += f"{len(self.problems)} problems"
        return text_ + (f", {repaired} repaired" if repaired else "")


class Note(Protocol):
    """Reports one problem: its kind, where (queue, jid or bid), a detail, and whether it was
    repaired (None: as the check repairs)."""

    def __call__(
        self, kind: str, queue: str, jid: str, detail: str = "", repaired: bool | None = None
    ) -> None: ...


class AuditPart:
    """One part of the audit: each problem found goes to `note`; with `repair` it is mended."""

    def __init__(self, store: Store, note: Note, *, repair: bool) -> None:
        self.store = store
        self.redis = store.redis
        self.note = note
        self.repair = repair
