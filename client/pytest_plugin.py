"""Hopper's pytest plugin (entry point `pytest11`): fixtures for an application's tests.

- `hopper_tasks`: the application's Tasks registry, named by the ini option `hopper_tasks =
  package.module:name` (or override the fixture in a conftest.py).
- `hopper_eager`: the registry in eager mode for one test: `push` runs the function inline.
- `hopper_broker`: a real broker for the session (`hopper run` on a temporary data directory
  with its embedded Redis); the ini option `hopper_broker_args` adds `hopper run` flags.
- `hopper_worker`: the registry's worker running against that broker for one test, its
  pushes going there; `hopper_worker.wait()` returns once the jobs the test caused have run.

The fixtures cost nothing until a test asks for one.
"""

import importlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from hopper_client.tasks import Tasks
    from hopper_client.testing import TestBroker, WorkerRun


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("hopper_tasks", "module:name of the Tasks registry the hopper fixtures use")
    parser.addini("hopper_broker_args", "flags added to `hopper run` (hopper_broker)", "args")


@pytest.fixture
def hopper_tasks(request: pytest.FixtureRequest) -> "Tasks":
    """The registry named by the ini option `hopper_tasks` (module:name)."""
    from hopper_client.tasks import Tasks

    target = str(request.config.getini("hopper_tasks"))
    module_name, _, name = target.partition(":")
    if not module_name or not name:
        pytest.fail(
            "hopper_tasks: set `hopper_tasks = package.module:name` in the pytest ini file "
            "or define a hopper_tasks fixture",
            pytrace=False,
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pytest.fail(f"hopper_tasks: cannot import {module_name!r}: {exc}", pytrace=False)
    tasks = getattr(module, name, None)
    if not isinstance(tasks, Tasks):
        pytest.fail(f"hopper_tasks: {target} is not a Tasks registry", pytrace=False)
    return tasks


@pytest.fixture
def hopper_eager(hopper_tasks: "Tasks") -> Iterator["Tasks"]:
    """The registry with eager mode on for this test."""
    saved, hopper_tasks.eager = hopper_tasks.eager, True
    try:
        yield hopper_tasks
    finally:
        hopper_tasks.eager = saved


@pytest.fixture(scope="session")
def hopper_broker(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator["TestBroker"]:
    """A broker process for the test session, on a temporary data directory."""
    from hopper_client.testing import TestBroker

    args = [str(arg) for arg in request.config.getini("hopper_broker_args")]
    with TestBroker(tmp_path_factory.mktemp("hopper"), args) as broker:
        yield broker


@pytest.fixture
def hopper_worker(hopper_broker: "TestBroker", hopper_tasks: "Tasks") -> Iterator["WorkerRun"]:
    """The registry's worker against `hopper_broker`, on a store emptied for this test."""
    from hopper_client.testing import WorkerRun

    run = WorkerRun(hopper_tasks, hopper_broker.url)
    run.client.flush()
    with run:
        yield run
