"""Workflows (Hopper, issue 14): jobs that run only after others succeeded.

A job pushed with `custom.after` (jids of live or finished jobs) waits, blocked, until each of
them is ACKed; `custom.after_policy` says what a dependency that ends without success (dead,
cancelled, expired, discarded) does to it: "fail" (the default) ends it cancelled, and so on
down the graph; "run" counts it as met. A released job finds its dependencies' ACK results in
`custom._results` ({jid: result}). The scripts do the counting (lib_workflows.lua, called
wherever a job ends); this room checks what is pushed (after_of, graph_order) and runs the loop
that settles the ends marked due across queues (settle), once whatever the number of brokers.
"""

import json
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from hopper_broker.config import Settings
from hopper_broker.store.pushes import SPLIT_GRAPH
from hopper_broker.store.redis import Store
from hopper_client.schema.errors import BrokerError, CommandError
from hopper_client.schema.jobs import Job, JobState

POLICIES = ("fail", "run")
MAX_AFTER = 100  # dependencies one job may have
MAX_SETTLE = 1000  # wf:due entries one script call takes
MAX_PASSES = 100  # script calls one settle() makes
MAX_GRAPH = 1000  # jobs JOB WORKFLOW reports
NOT_SPLIT = (
    "a workflow across queues in one PUSHB is not served on a Redis Cluster (one atomic change"
    " over their slots): push its jobs one PUSH at a time, dependencies first"
)

Find = Callable[[str], Awaitable[tuple[JobState, Job | None]]]


class Graph(msgspec.Struct, omit_defaults=True):
    """The answer of JOB WORKFLOW: the job and every job it depends on, transitively."""

    jid: str
    states: dict[str, str]  # jid -> state (unknown: no longer kept)
    after: dict[str, list[str]]  # jid -> its dependencies (jobs that have some)
    truncated: bool = False  # more than MAX_GRAPH jobs: the rest left out


def after_of(job: Job) -> str:
    """A pushed job's dependencies as the push script takes them: '' or JSON [policy, jid, ...]
    (duplicates dropped); a client's custom._results is dropped (the broker writes it)."""
    custom = job.custom
    if not custom:
        return ""
    custom.pop("_results", None)
    after, policy = custom.get("after"), custom.get("after_policy", "fail")
    if after is None or after == []:
        return ""
    if not isinstance(after, list) or not all(isinstance(j, str) and j for j in after):
        raise CommandError("custom.after must be a list of jids")
    if len(after) > MAX_AFTER:
        raise CommandError(f"custom.after: at most {MAX_AFTER} dependencies")
    if policy not in POLICIES:
        raise CommandError('custom.after_policy must be "fail" or "run"')
    if job.jid in after:
        raise CommandError(f"job {job.jid} depends on itself")
    if "expires_at" in custom or "expires_in" in custom:
        raise CommandError("custom.after cannot be combined with an expiry")
    return json.dumps([policy, *dict.fromkeys(after)], separators=(",", ":"))


def graph_order(jids: Sequence[str], afters: Sequence[str]) -> list[int] | None:
    """For the jobs of one PUSHB (jids, their after_of specs): the positions of those that
    refer to each other, dependencies first; None when none does. A cycle raises."""
    inside = {jid: i for i, jid in enumerate(jids)}
    deps = [[inside[d] for d in json.loads(a)[1:] if d in inside] if a else [] for a in afters]
    if not any(deps):
        return None
    order: list[int] = []
    state = [0] * len(jids)  # 0 new, 1 on the path, 2 placed
    for start in range(len(jids)):
        stack = [(start, 0)]
        while stack:
            node, edge = stack.pop()
            if edge == 0:
                if state[node] == 2:
                    continue
                state[node] = 1
            if edge < len(deps[node]):
                stack.append((node, edge + 1))
                nxt = deps[node][edge]
                if state[nxt] == 1:
                    raise CommandError(f"cycle in workflow at job {jids[nxt]}")
                if state[nxt] == 0:
                    stack.append((nxt, 0))
            else:
                state[node] = 2
                order.append(node)
    return order


def refusal(code: int, jid: str) -> BrokerError | None:
    """The error of a push script result of a workflow (None: not one)."""
    if code == 7:
        return CommandError(f"unknown dependency {jid}")
    if code == 8:
        return CommandError(f"dependency {jid} did not succeed")
    if code == 9:
        return BrokerError("another job of the workflow was refused", "WORKFLOW")
    if code == SPLIT_GRAPH:
        return BrokerError(NOT_SPLIT, "WORKFLOW")
    return None


class Workflows:
    """The workflows room: the loop settling dependencies' ends across queues."""

    def __init__(
        self, store: Store, settings: Settings, kept: Callable[[], str], find: Find
    ) -> None:
        self.store = store
        self.settings = settings
        self.kept = kept
        self.find = find

    async def graph(self, jid: str) -> Graph:
        """JOB WORKFLOW <jid>: the states of the job and of all it waits or waited for (read
        from each job's custom.after, breadth first, MAX_GRAPH jobs at most)."""
        found = Graph(jid, {}, {})
        todo = [jid]
        while todo:
            if len(found.states) >= MAX_GRAPH:
                found.truncated = True
                break
            current = todo.pop(0)
            if current in found.states:
                continue
            state, job = await self.find(current)
            found.states[current] = state.state
            after = (job.custom or {}).get("after") if job is not None else None
            if isinstance(after, list) and after:
                found.after[current] = [str(d) for d in after]
                todo += [str(d) for d in after]
        return found

    async def settle(self, now: float) -> int:
        """Settle the ends marked due (wf:due); returns how many."""
        settled = 0
        for _ in range(MAX_PASSES):
            took = await self.store.workflows.settle(now, self.kept(), MAX_SETTLE)
            settled += took
            if not took:  # a pass may mark more due (a cancel cascades): go on until none
                break
        return settled
