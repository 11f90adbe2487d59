"""One job over HTTP: the POST, and what its answer means for the job.

2xx ACKs (a JSON body is the job's result); 429 or 503 with Retry-After snoozes the job for
that long (no failure counted); other 5xx, 429, timeouts and connection errors FAIL it (it
is retried); any other 4xx is Fatal: the job goes to the dead set with the status and the
start of the body as its error. On a route with `accepted = true`, 202 means the outcome
comes later by callback (see callbacks.py); meanwhile the job's reservation is extended.
"""

import contextlib
import email.utils
import logging
import math
import time
import urllib.parse
from datetime import timedelta
from typing import Any

import httpx
import msgspec
import trio

from hopper_client.aio import AsyncClient
from hopper_client.control import MAX_SNOOZE, Fatal, Snooze
from hopper_client.errors import ClientError
from hopper_client.execution import current_job
from hopper_client.http.callbacks import Callbacks, Outcome
from hopper_client.http.config import Plan, Target
from hopper_client.schema.jobs import Job

log = logging.getLogger("hopper_client.http")

MAX_BODY = 1 << 20  # bytes of an answer read at most
MAX_RESULT = 64 * 1024  # bytes of a JSON answer kept as the result (the broker's default cap)


class NoRoute(Exception):
    """No route for the job's jobtype and no default: failed, retried (the file may change)."""


class DownstreamError(Exception):
    """A 5xx (or 429 without Retry-After, or another status that is no answer): retried."""


class DownstreamTimeout(Exception):
    """No whole answer within the route's timeout: retried."""


class DownstreamUnreachable(Exception):
    """Could not connect, or the connection broke: retried."""


class DownstreamRejected(Fatal):
    """A 4xx other than 429: the request itself is wrong; the job goes to the dead set."""


class CallbackFailed(Exception):
    """The downstream called back `failed`: retried."""


class CallbackTimeout(Exception):
    """An accepted job's callback did not come within `callback.wait`: retried."""


class Payload(msgspec.Struct):
    """The JSON body of each request."""

    jid: str
    jobtype: str
    args: list[Any]
    custom: dict[str, Any]
    queue: str
    attempt: int
    callback: str | None = None  # accepted routes: where to report the outcome


class Delivery:
    """The job function of the HTTP worker (registered for every jobtype)."""

    def __init__(
        self,
        plan: Plan,
        http: httpx.AsyncClient,
        broker: AsyncClient,
        callbacks: Callbacks | None = None,
        callback_url: str = "",
    ) -> None:
        self.plan = plan
        self.http = http
        self.broker = broker
        self.callbacks = callbacks
        self.callback_url = callback_url.rstrip("/")

    async def __call__(self, *args: Any) -> Any:
        job = current_job()
        target = self.plan.target(job.jobtype)
        if target is None:
            raise NoRoute(f"no route for jobtype {job.jobtype!r} and no default")
        callbacks = self.callbacks if target.accepted else None
        outcome = None if callbacks is None else callbacks.expect(job.jid)
        try:
            async with target.limiter or contextlib.nullcontext():
                status, headers, body = await self._post(job, target, outcome is not None)
            if status == 202 and outcome is not None:
                return await self._await(job, outcome)
            return self._judge(status, headers, body)
        finally:
            if callbacks is not None:
                callbacks.forget(job.jid)

    async def _post(
        self, job: Job, target: Target, accepted: bool
    ) -> tuple[int, httpx.Headers, bytes]:
        attempt = 1 if job.failure is None else job.failure.retry_count + 2
        key = urllib.parse.quote(job.jid, safe="")
        callback = f"{self.callback_url}/jobs/{key}" if accepted else None
        payload = Payload(
            job.jid, job.jobtype, job.args or [], job.custom or {}, job.queue, attempt, callback
        )
        headers = {
            **target.headers,
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "Hopper-Jid": key,
            "Hopper-Attempt": str(attempt),
        }
        if callback is not None:
            headers["Hopper-Callback"] = callback
        try:
            with trio.fail_after(target.timeout):  # the whole exchange, however it trickles
                async with self.http.stream(
                    "POST",
                    target.url,
                    content=msgspec.json.encode(payload),
                    headers=headers,
                    timeout=target.timeout,
                ) as response:
                    body = await _read(response)
        except (trio.TooSlowError, httpx.TimeoutException):
            raise DownstreamTimeout(
                f"POST {target.url}: no answer within {target.timeout:g} s"
            ) from None
        except httpx.TransportError as exc:
            raise DownstreamUnreachable(
                f"POST {target.url}: {type(exc).__name__}: {exc or 'connection failed'}"
            ) from None
        return response.status_code, response.headers, body

    def _judge(self, status: int, headers: httpx.Headers, body: bytes) -> Any:
        """The result of a 2xx answer; raises what any other answer means for the job."""
        if 200 <= status < 300:
            return _result(body, headers.get("content-type", ""))
        if status in (429, 503) and (delay := retry_after(headers.get("retry-after"))) is not None:
            raise Snooze(delay)
        text = body.decode("utf-8", "replace")[: self.plan.config.max_error_body]
        summary = f"HTTP {status}: {text}" if text else f"HTTP {status}"
        if 400 <= status < 500 and status != 429:
            raise DownstreamRejected(summary)
        raise DownstreamError(summary)

    async def _await(self, job: Job, outcome: Outcome) -> Any:
        """Wait for the callback of an accepted job, keeping its reservation alive."""
        settings = self.plan.config.callback
        assert settings is not None
        deadline = trio.current_time() + settings.wait
        while True:
            await self._extend(job.jid, settings.extend)
            left = deadline - trio.current_time()
            with trio.move_on_after(min(settings.extend, max(left, 0))):
                await outcome.arrived.wait()
            if outcome.arrived.is_set():
                break
            if trio.current_time() >= deadline:
                raise CallbackTimeout(f"no callback within {settings.wait:g} s")
        if outcome.status == "failed":
            text = outcome.body.decode("utf-8", "replace")[: self.plan.config.max_error_body]
            raise CallbackFailed(text or "the downstream reported a failure")
        return _result(outcome.body, "application/json")

    async def _extend(self, jid: str, extend: float) -> None:
        """Keep the job reserved for three more periods between extensions."""
        try:
            await self.broker.track(jid, reserve_until=timedelta(seconds=3 * extend))
        except ClientError as exc:  # the next period tries again; the reservation has slack
            log.warning("job %s: could not extend its reservation: %s", jid, exc)


async def _read(response: httpx.Response) -> bytes:
    """The answer's body, cut at MAX_BODY bytes."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) >= MAX_BODY:
            break
    return bytes(body[:MAX_BODY])


def _result(body: bytes, content_type: str) -> Any:
    """A JSON body as the job's result (None when it is not JSON, empty or too large)."""
    media = content_type.partition(";")[0].strip().lower()
    if not body.strip() or not (media == "application/json" or media.endswith("+json")):
        return None
    if len(body) > MAX_RESULT:
        jid = current_job().jid
        log.warning("job %s: answer of %d bytes not kept as its result", jid, len(body))
        return None
    try:
        return msgspec.json.decode(body)
    except msgspec.DecodeError:
        log.warning("job %s: answer is not valid JSON, not kept", current_job().jid)
        return None


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None if absent or
    unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), float(MAX_SNOOZE))
