"""Hopper's Python client: push jobs and run workers against any Faktory-protocol broker.

from client import Client, Worker

with Client() as client:                      # HOPPER_URL / FAKTORY_URL, or localhost
    client.push("send_email", ["ada@example.com"])
"""

from broker.jobs import Failure, Job, JobEvent, JobState
from client.aio import AsyncClient
from client.batches import AsyncBatch, Batch, batch_id, callback_bid, callback_parent_bid
from client.client import Client
from client.commands import BatchStatus
from client.control import (
    DeadlineExceeded,
    Fatal,
    JobCancelled,
    Snooze,
    check_cancelled,
    job_cancelled,
    wait_cancelled,
)
from client.errors import (
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
from client.execution import Interrupted, Middleware, UnknownJobtype, current_job
from client.jobs import make_job, new_jid, results_of
from client.operations import JobPage, ListedJob
from client.worker import Worker

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
    "UnknownJob",
    "UnknownJobtype",
    "Worker",
    "batch_id",
    "callback_bid",
    "callback_parent_bid",
    "check_cancelled",
    "current_job",
    "job_cancelled",
    "make_job",
    "new_jid",
    "results_of",
    "wait_cancelled",
]
