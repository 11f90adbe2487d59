"""Faults on a Redis Cluster under load (docs/cluster.md): two broker processes serve the rig
(tests/cluster_rig.py) while producers push and workers run jobs of queues on every master
(chaos/load.py: clients that resend what a failure left unanswered). The master holding the
global keys is SIGKILLed, its replica promoted and the killed node started again as a replica
(what an operator does; without a replica, push_replicas cannot be met there); in the long
run a queue's slot also moves to another master while jobs flow, and a broker is SIGKILLed and
started again. With push_replicas = 1 every acknowledged push runs (lost = 0); without it the
loss is reported (a master that fails over loses what it had not yet copied to its replica).
Each run ends with `hopper check --repair` mending what a death between a script and its second
step left (docs/cluster.md), then a clean `hopper check`."""

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from chaos.conn import Lost
from chaos.figures import record
from chaos.load import GIVE_UP, RETRY_DELAY, Client, Ledger, Producer, Worker, job, wait_for
from chaos.marks import CHAOS
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.slots import key_slot
from tests.cluster_rig import ClusterRig
from tests.conftest import BrokerProcess, check_store
from tests.wire import WireError

ARGS = ("--min-reservation", "1", "--fetch-timeout", "0.5", "--reaper-interval", "0.2")
BATCH_SIZE = 10  # jobs per batch of BatchProducer
CALLBACKS = "callbacks"  # the queue of the batches' success callbacks
FOLLOWERS = "followers"  # the queue of the jobs that run after a batch's jobs (custom.after)


@pytest.fixture
def cluster_brokers(
    redis_cluster: ClusterRig, broker_process: Callable[..., BrokerProcess]
) -> Callable[..., BrokerProcess]:
    """Broker processes on the flushed rig (conftest's, their --redis-url the rig's)."""
    redis_cluster.flush()
    return lambda *args: broker_process("--redis-url", redis_cluster.url, *ARGS, *args)


def spread_queues(rig: ClusterRig, per_master: int = 2) -> list[str]:
    """Queue names, `per_master` on each master."""
    found: dict[int, list[str]] = {port: [] for port in rig.masters()}
    for n in range(10_000):
        name = f"c{n}"
        names = found[rig.owner(key_slot(QueueKeys(name).jobs))]
        if len(names) < per_master:
            names.append(name)
        if all(len(names) == per_master for names in found.values()):
            return [name for names in found.values() for name in names]
    raise AssertionError("queues for every master not found")


def fail_over_globals(rig: ClusterRig) -> float:
    """SIGKILL the master of the global keys, wait for its replica's promotion and start it
    again as a replica (else push_replicas has none to wait for there); the seconds from the
    kill to the promotion."""
    victim = rig.owner(key_slot(keys.JIDS))
    killed_at = time.monotonic()
    replica = rig.kill(victim)
    rig.promoted(replica)
    failover = time.monotonic() - killed_at
    rig.restart_as_replica(victim)
    return failover


@pytest.mark.parametrize(
    ("replicas", "long"),
    [
        pytest.param(1, False, id="wait"),
        pytest.param(0, False, id="no-wait", marks=CHAOS),
        pytest.param(1, True, id="chaos-wait", marks=CHAOS),
    ],
)
def test_a_master_killed_under_load(
    cluster_brokers: Callable[..., BrokerProcess],
    redis_cluster: ClusterRig,
    replicas: int,
    long: bool,
) -> None:
    rig = redis_cluster
    brokers = [cluster_brokers("--push-replicas", str(replicas)) for _ in range(2)]
    queues = spread_queues(rig)
    ledger = Ledger()
    producers = [
        Producer(brokers[i % 2].port, ledger, queue, f"{queue}-p", reserve_for=2)
        for i, queue in enumerate(queues)
    ]
    workers = [
        Worker(brokers[(i + 1) % 2].port, ledger, queue, f"w-{queue}")
        for i, queue in enumerate(queues)
    ]
    for thread in (*producers, *workers):
        thread.start()

    def progress(more: int, seen: Callable[[], int] = lambda: len(ledger.done)) -> None:
        target = seen() + more
        wait_for(lambda: seen() >= target, 120, f"{more} more jobs run (or pushed)")

    progress(300)
    failover = fail_over_globals(rig)
    progress(300)
    if long:
        moved = queues[0]
        slot = key_slot(QueueKeys(moved).jobs)
        rig.move_slot(slot, next(p for p in rig.masters() if p != rig.owner(slot)))
        progress(300)
        brokers[0].kill()
        progress(200, lambda: len(ledger.pushed))  # the other broker serves on its clients

        brokers[0].start()
        progress(300)
    stop(producers)
    if replicas:
        wait_for(lambda: not ledger.missing(), 120, "every pushed job run")
    else:  # what a failover lost stays lost: give the rest time to run, then count
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not ledger.missing(), 30, "every pushed job run")
    stop(workers)
    repaired = check_store(rig.url, repair=True)  # what the kills left between two steps
    check_store(rig.url)
    lost = ledger.missing()
    record(
        f"cluster-master-kill{'-long' if long else ''}-replicas-{replicas}",
        pushed=len(ledger.pushed),
        kills=1 + long,
        failover_s=round(failover, 2),
        duplicates=len(ledger.duplicates()),
        lost=len(lost),
        repaired=repaired,
    )
    if replicas:
        assert not lost


class BatchProducer(threading.Thread):
    """Batches of BATCH_SIZE jobs over `queues`, each with a success callback job in CALLBACKS
    and a follower in FOLLOWERS that runs after those jobs (a workflow), one after the other
    until stopped: BATCH NEW, the jobs, the follower, BATCH COMMIT, each call sent again until
    answered (a push that had landed answers `already in use`)."""

    def __init__(self, port: int, ledger: Ledger, queues: list[str], prefix: str) -> None:
        super().__init__(daemon=True)
        self.client = Client(port, ledger, {"hostname": "batches"})
        self.ledger = ledger
        self.queues = queues
        self.prefix = prefix
        self.committed: dict[str, str] = {}  # bid -> its callback's jid
        self.stop = threading.Event()
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            for n in range(10**6):
                if self.stop.is_set():
                    break
                self.batch(n)
        except BaseException as exc:
            self.failure = exc
        finally:
            self.client.close()

    def batch(self, n: int) -> None:
        callback = f"{self.prefix}-cb-{n:05d}"
        # reserve_for as every job here: a callback whose FETCH reply the failover lost runs
        # again when its reservation ends (the default, 30 minutes, outlasts the test)
        success = {"jid": callback, "jobtype": "cb", "args": [], "queue": CALLBACKS}
        spec = {"success": {**success, "reserve_for": 2}}
        bid = self.answered("BATCH", "NEW " + json.dumps(spec)).decode()
        jids = [f"{self.prefix}-{n:05d}-{i}" for i in range(BATCH_SIZE)]
        for i, jid in enumerate(jids):
            pushed = job(jid, self.queues[i % len(self.queues)], 2)
            pushed["custom"]["bid"] = bid
            self.answered("PUSH", pushed)
            self.ledger.pushed[jid] = time.time()
        follower = job(f"{self.prefix}-after-{n:05d}", FOLLOWERS, 2)
        follower["custom"]["after"] = jids
        self.answered("PUSH", follower)
        self.ledger.pushed[follower["jid"]] = time.time()
        self.answered("BATCH", f"COMMIT {bid}")
        self.committed[bid] = callback

    def answered(self, verb: str, arg: Any) -> Any:
        deadline = time.monotonic() + GIVE_UP
        while time.monotonic() < deadline:
            try:
                return self.client.call(verb, arg)
            except WireError as exc:
                if verb == "PUSH" and "already in use" in str(exc):
                    return None
                self.ledger.error(exc)
            except Lost:
                pass
            time.sleep(RETRY_DELAY)
        raise RuntimeError(f"{verb} did not get through in {GIVE_UP}s")


def unrun_callbacks(
    port: int, ledger: Ledger, committed: dict[str, str], workers: list[Worker]
) -> str:
    """What a failure to run every callback leaves to look at: each unrun callback's batch,
    state and runs, and the workers that gave up."""
    client = Client(port, ledger, {})
    lines = [f"worker of {w.queue} gave up: {w.failure!r}" for w in workers if w.failure]
    for bid, jid in committed.items():
        if jid not in ledger.done:
            state = client.call("JOB", f"STATE {jid}")
            lines.append(f"{bid} callback {jid}: runs {ledger.runs[jid]}, state {state!r}")
    return "\n".join(lines)


def stop(threads: Sequence[Producer | Worker | BatchProducer]) -> None:
    """Stop the load threads, then wait for each: none may have failed."""
    for thread in threads:
        thread.stop.set()
    for thread in threads:
        thread.join(60)
        assert thread.failure is None, thread.failure


@pytest.mark.parametrize("run", [pytest.param(1, marks=CHAOS)])
def test_batches_and_workflows_complete_across_a_master_kill(
    cluster_brokers: Callable[..., BrokerProcess], redis_cluster: ClusterRig, run: int
) -> None:
    """Batches whose jobs are in queues on every master, their callbacks in another, and a job
    after each batch's jobs in a third, while the master of the batch records and of wf:due
    ({g}) is SIGKILLed: the tallies its failover lost are made by the batches loop, so every
    committed batch succeeds and its callback runs, and every follower runs."""
    rig = redis_cluster
    brokers = [cluster_brokers("--push-replicas", "1") for _ in range(2)]
    queues = spread_queues(rig, 1)
    ledger = Ledger()
    producers = [BatchProducer(brokers[i].port, ledger, queues, f"b{i}") for i in range(2)]
    workers = [
        Worker(brokers[i % 2].port, ledger, queue, f"w-{queue}")
        for i, queue in enumerate([*queues, CALLBACKS, FOLLOWERS])
    ]
    for thread in (*producers, *workers):
        thread.start()

    def batches(more: int) -> None:
        target = sum(len(p.committed) for p in producers) + more
        wait_for(lambda: sum(len(p.committed) for p in producers) >= target, 120, "batches")

    batches(20)
    fail_over_globals(rig)
    batches(20)
    stop(producers)
    committed = {bid: cb for p in producers for bid, cb in p.committed.items()}
    wait_for(lambda: not ledger.missing(), 120, "every pushed job run")
    try:
        wait_for(lambda: set(committed.values()) <= set(ledger.done), 120, "every callback run")
    except TimeoutError as exc:
        raise AssertionError(unrun_callbacks(brokers[0].port, ledger, committed, workers)) from exc
    stop(workers)
    statuses = [json.loads(Client(brokers[0].port, ledger, {}).call("BATCH", f"STATUS {bid}"))
                for bid in committed]  # fmt: skip
    assert {(s["total"], s["pending"]) for s in statuses} == {(BATCH_SIZE, 0)}
    repaired = check_store(rig.url, repair=True)
    check_store(rig.url)
    record(
        "cluster-master-kill-batches",
        batches=len(committed),
        pushed=len(ledger.pushed),
        kills=1,
        lost=len(ledger.missing()),
        duplicates=len(ledger.duplicates()),
        repaired=repaired,
    )
