"""Hopper's Python client: push jobs and run workers against any Faktory-protocol broker.

from hopper_client import Tasks

jobs = Tasks()                                # HOPPER_URL / FAKTORY_URL, or localhost

@jobs.task(queue="critical", retry=5)
def send_welcome(email: str) -> None: ...

send_welcome.push("ada@example.com")          # producers; `hopper-worker module:jobs` runs it
"""

from hopper_client.aio import AsyncClient
from hopper_client.batches import AsyncBatch, Batch, batch_id, callback_bid, callback_parent_bid
from hopper_client.client import Client
from hopper_client.commands import BatchStatus
from hopper_client.control import (
    DeadlineExceeded,
    Fatal,
    JobCancelled,
    Snooze,
    check_cancelled,
    job_cancelled,
    wait_cancelled,
)
from hopper_client.errors import (
    AuthenticationError,
    BatchNotOpen,
    ClientError,
    ConnectionLost,
    Draining,
    JobFailed,
    NotUnique,
    QueueFull,
    ResultTimeout,
    ServerError,
    UnknownJob,
)
from hopper_client.execution import Interrupted, Middleware, UnknownJobtype, current_job
from hopper_client.history import HistoryEntry, HistoryPage
from hopper_client.jobs import make_job, new_jid, results_of
from hopper_client.operations import JobPage, ListedJob
from hopper_client.schema.jobs import Failure, Job, JobEvent, JobState
from hopper_client.tasks import Task, Tasks
from hopper_client.tracing import continue_trace
from hopper_client.worker import Worker

__all__ = [
    "AsyncBatch",
    "AsyncClient",
    "AuthenticationError",
    "Batch",
    "BatchNotOpen",
    "BatchStatus",
    "Client",
    "ClientError",
    "ConnectionLost",
    "DeadlineExceeded",
    "Draining",
    "Failure",
    "Fatal",
    "HistoryEntry",
    "HistoryPage",
    "Interrupted",
    "Job",
    "JobCancelled",
    "JobEvent",
    "JobFailed",
    "JobPage",
    "JobState",
    "ListedJob",
    "Middleware",
    "NotUnique",
    "QueueFull",
    "ResultTimeout",
    "ServerError",
    "Snooze",
    "Task",
    "Tasks",
    "UnknownJob",
    "UnknownJobtype",
    "Worker",
    "batch_id",
    "callback_bid",
    "callback_parent_bid",
    "check_cancelled",
    "continue_trace",
    "current_job",
    "job_cancelled",
    "make_job",
    "new_jid",
    "results_of",
    "wait_cancelled",
]
