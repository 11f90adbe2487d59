"""The shop's own tests, with Hopper's pytest plugin: eager unit tests, then a real broker."""

import pytest
from shop.tasks import SENT, send_welcome, sign_up

from hopper_client import Tasks
from hopper_client.testing import WorkerRun


def test_signup_sends_welcome_inline(hopper_eager: Tasks) -> None:
    SENT.clear()
    sign_up.push("ada@example.com")
    assert SENT == ["ada@example.com"]


def test_bad_address_raises_inline(hopper_eager: Tasks) -> None:
    with pytest.raises(ValueError, match="not an address"):
        sign_up.push("ada")


def test_wrong_arguments_fail_at_push(hopper_eager: Tasks) -> None:
    with pytest.raises(TypeError, match="send_welcome"):
        send_welcome.push("ada@example.com", "extra")  # type: ignore[call-arg]


def test_signup_runs_on_a_real_broker(hopper_worker: WorkerRun) -> None:
    SENT.clear()
    sign_up.push("grace@example.com")
    states = hopper_worker.wait()
    assert [state.jobtype for state in states] == ["sign_up", "send_welcome"]
    assert SENT == ["grace@example.com"]
    receipt = hopper_worker.client.result(states[1].jid)
    assert receipt == {"to": "grace@example.com", "queue": "critical", "retry": 5}


def test_failures_are_reported(hopper_worker: WorkerRun) -> None:
    sign_up.options(retry=0).push("nobody")
    with pytest.raises(AssertionError, match="ValueError: not an address"):
        hopper_worker.wait()
