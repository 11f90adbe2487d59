"""What the parts of `hopper check` that audit.py runs (batch_audit.py, history_audit.py,
workflow_audit.py) share: the store they walk, how they report a problem, and whether they mend
it."""

from typing import Protocol

from hopper_broker.store.redis import Store


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
