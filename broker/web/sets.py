"""The retries, scheduled and dead pages: a page of a set at a time through the manager's
listing (JOB LIST's walk by cursor, so a page costs the same with a million entries),
filtered by queue, jobtype and error text, with the actions of broker/web/set_actions.py."""

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hopper_broker.web.views import manager_of, page
from hopper_client.schema.jobs import Job, format_time, job_decoder
from hopper_client.schema.pages import Listed, ListQuery

PAGE = 50  # entries a page shows
ARGS_SHOWN = 60  # characters of a job's args shown in the table
FILTERS = ("queue", "jobtype", "error")

# target -> (title, heading of the time column, what the set holds, its actions)
SETS: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "retries": ("Retries", "Next attempt", "Jobs that failed and will run again",
                ("retry", "kill", "delete")),
    "scheduled": ("Scheduled", "Runs at", "Jobs waiting for their time",
                  ("retry", "kill", "delete")),
    "dead": ("Dead", "Died", "Jobs out of retries (or killed), kept until purged",
             ("retry", "delete")),
}  # fmt: skip
# action -> (MUTATE command, what the page says it did, its button)
ACTIONS = {
    "retry": ("requeue", "retried", "Retry now"),
    "kill": ("kill", "killed", "Kill"),
    "delete": ("discard", "deleted", "Delete"),
}


class Row(msgspec.Struct, frozen=True):
    """One entry as a table row."""

    jid: str
    queue: str
    jobtype: str
    args: str
    when: str
    errtype: str = ""
    message: str = ""
    retry_count: int | None = None


def query_of(target: str, params: Mapping[str, str], limit: int = PAGE) -> ListQuery:
    """The listing query of a page's (or an action's) queue, jobtype and error filters."""
    queue, jobtype, error = (params.get(name, "").strip() for name in FILTERS)
    return ListQuery(
        target=target,
        queues=[queue] if queue else [],
        jobtype=jobtype,
        error=error,
        cursor=params.get("cursor", "").strip(),
        limit=limit,
    )


def chosen_filters(params: Mapping[str, str]) -> dict[str, str]:
    """The filters given (non-empty ones), as in the page's address."""
    return {name: params.get(name, "").strip() for name in FILTERS if params.get(name, "").strip()}


def _row(entry: Listed, died_before: float) -> Row:
    job: Job = job_decoder.decode(entry.job)
    args = msgspec.json.encode(job.args or []).decode()
    if len(args) > ARGS_SHOWN:
        args = args[: ARGS_SHOWN - 1] + "…"
    when = format_time(entry.score - died_before)
    failure = job.failure
    if failure is None:
        return Row(entry.jid, entry.queue, job.jobtype, args, when)
    return Row(
        entry.jid,
        entry.queue,
        job.jobtype,
        args,
        when,
        failure.errtype,
        failure.message,
        failure.retry_count,
    )


def _done(text: str) -> str:
    """The message of the action just done (`retry:3`, `:more` when it stopped at its bound),
    made from known words only."""
    op, _, rest = text.partition(":")
    count, _, more = rest.partition(":")
    if op not in ACTIONS or not count.isdigit():
        return ""
    n = int(count)
    said = f"{ACTIONS[op][1].capitalize()} {n} job{'' if n == 1 else 's'}."
    if more:
        said += " It stopped at its bound: more may match, do it again to go on."
    return said


async def set_page(request: Request) -> Response:
    target = request.url.path.strip("/")
    title, when, holds, actions = SETS[target]
    params = request.query_params
    manager = manager_of(request)
    query = query_of(target, params)
    found = await manager.listing.page(query)
    died_before = manager.settings().dead_ttl if target == "dead" else 0.0
    chosen = chosen_filters(params)
    here = {**chosen, "cursor": query.cursor} if query.cursor else chosen
    context: dict[str, Any] = {
        "target": target,
        "title": title,
        "when": when,
        "holds": holds,
        "actions": [(name, *ACTIONS[name]) for name in actions],
        "rows": [_row(entry, died_before) for entry in found.jobs],
        "scanned": found.scanned,
        "filtered": query.filtered,
        "chosen": chosen,
        "first": query.cursor and _address(target, chosen),
        "next": found.cursor and _address(target, {**chosen, "cursor": found.cursor}),
        "back": _address(target, here),
        "home": _address(target, chosen),
        "done": _done(params.get("done", "")),
    }
    return page(request, "set.html", 200, **context)


def _address(target: str, params: dict[str, str]) -> str:
    return f"/{target}?{urlencode(params)}" if params else f"/{target}"


def routes() -> list[Route]:
    return [Route(f"/{target}", set_page) for target in SETS]
