"""HTTP delivery: `hopper-http-worker CONFIG` POSTs each job to a downstream URL chosen by its
jobtype (see docs/http-worker.md)."""

from hopper_client.http.config import ConfigError, HttpConfig, Plan, load, plan
from hopper_client.http.worker import HttpWorker

__all__ = ["ConfigError", "HttpConfig", "HttpWorker", "Plan", "load", "plan"]
