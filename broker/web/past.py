"""The history page (HISTORY: jobs that reached a final state, newest first, a page at a time
by cursor, so it stays fast however many are archived)."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from hopper_broker.history import HistoryQuery
from hopper_broker.store.keys import FINAL_STATES
from hopper_broker.web.views import manager_of, page

PAGE = 50  # entries a history page shows


async def history(request: Request) -> Response:
    params = request.query_params
    chosen = {name: params.get(name, "").strip() for name in ("queue", "jobtype", "state")}
    query = HistoryQuery(
        queue=chosen["queue"] or None,
        jobtype=chosen["jobtype"] or None,
        state=chosen["state"] or None,
        cursor=params.get("cursor") or None,
        count=PAGE,
    )
    found = await manager_of(request).history.query(query)
    later = {**{k: v for k, v in chosen.items() if v}, "cursor": found.cursor}
    return page(
        request,
        "history.html",
        entries=found.jobs,
        chosen=chosen,
        states=FINAL_STATES,
        older=found.cursor and later,
    )


def routes() -> list[Route]:
    return [Route("/history", history)]
