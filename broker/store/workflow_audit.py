"""`hopper check` for workflows (store/audit.py runs it): each blocked job waits for no more
ends than will come to it, from live dependencies that name it among their dependants or from
ends already due for it (wf:due); one that waits for more would stay blocked for good. Walked
in steps (ZSCAN), each step looked at again by one script (blocked_check.lua), so it is safe
while brokers run; `--repair` marks the missing ends due as ends without success, and the
workflows loop settles them under the job's policy (cancelled, or released)."""

from collections.abc import Sequence

from hopper_broker.store.audit_part import AuditPart
from hopper_broker.store.base import Script, text
from hopper_broker.store.keys import JIDS, WF_DUE

BLOCKED_CHECK = Script("blocked_check")
STRANDED = "blocked for good"


class WorkflowAuditor(AuditPart):
    """Checks (and with `repair`, mends) the blocked jobs of the given queues."""

    async def run(self, queues: Sequence[str]) -> None:
        for queue in queues:
            k = self.store.jobs.keys(queue)
            async for step in self.redis.steps("ZSCAN", k.blocked):
                jids = step[::2]
                if not jids:
                    continue
                args = (queue, "1" if self.repair else "0", *jids)
                for jid in await self.redis.run(BLOCKED_CHECK, (k.jobs, JIDS, WF_DUE), args):
                    self.note(STRANDED, queue, text(jid))
