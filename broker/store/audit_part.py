"""What the parts of `hopper check` that audit.py runs (history_audit.py, workflow_audit.py)
share: the store they walk, how they report a problem, and whether they mend it."""

from collections.abc import Callable

from hopper_broker.store.redis import Store

Note = Callable[[str, str, str], None]  # kind, queue, jid


class AuditPart:
    """One part of the audit: each problem found goes to `note`; with `repair` it is mended."""

    def __init__(self, store: Store, note: Note, *, repair: bool) -> None:
        self.store = store
        self.redis = store.redis
        self.note = note
        self.repair = repair
