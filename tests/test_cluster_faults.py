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
import time
from collections.abc import Callable

import pytest

from chaos.figures import record
from chaos.load import Ledger, Producer, Worker, wait_for
from chaos.marks import CHAOS
from hopper_broker.store import keys
from hopper_broker.store.keys import QueueKeys
from hopper_broker.store.slots import key_slot
from tests.cluster_rig import ClusterRig
from tests.conftest import BrokerProcess, check_store

ARGS = ("--min-reservation", "1", "--fetch-timeout", "0.5", "--reaper-interval", "0.2")


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
    victim = rig.owner(key_slot(keys.JIDS))  # the master of the global keys
    killed_at = time.monotonic()
    replica = rig.kill(victim)
    rig.promoted(replica)
    failover = time.monotonic() - killed_at
    rig.restart_as_replica(victim)  # else push_replicas has no replica to wait for there
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
    for producer in producers:
        producer.stop.set()
    for producer in producers:
        producer.join(60)
        assert producer.failure is None, producer.failure
    if replicas:
        wait_for(lambda: not ledger.missing(), 120, "every pushed job run")
    else:  # what a failover lost stays lost: give the rest time to run, then count
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: not ledger.missing(), 30, "every pushed job run")
    for worker in workers:
        worker.stop.set()
    for worker in workers:
        worker.join(60)
        assert worker.failure is None, worker.failure
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
