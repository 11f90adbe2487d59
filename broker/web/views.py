"""The dashboard's pages (GET): each reads through the manager and renders a template. A
request with `X-Partial: 1` (the live update, every few seconds) gets only the page's main
part."""

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from hopper_broker.history import HistoryQuery
from hopper_broker.manager import Manager
from hopper_broker.web.auth import AUTH_COOKIE
from hopper_broker.web.chart import Chart
from hopper_broker.web.figures import read_figures
from hopper_client.schema.errors import BrokerError, CommandError
from hopper_client.schema.jobs import encode, parse_time

# The navigation: (path, title); a feature that adds a page adds its entry here.
NAV = (
    ("/", "Overview"),
    ("/queues", "Queues"),
    ("/workers", "Workers"),
    ("/retries", "Retries"),
    ("/scheduled", "Scheduled"),
    ("/dead", "Dead"),
    ("/history", "History"),
    ("/cron", "Cron"),
    ("/batches", "Batches"),
    ("/limits", "Limits"),
)

MAX_BATCHES = 200  # batches the batches page lists at most

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.globals["nav"] = NAV


def manager_of(request: Request) -> Manager:
    manager: Manager = request.app.state.dashboard.manager
    return manager


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    """A page, or only its main part for a live update."""
    context["partial"] = request.headers.get("x-partial") == "1"
    context["csrf"] = request.state.csrf
    context["logged_in"] = AUTH_COOKIE in request.cookies
    response: Response = templates.TemplateResponse(request, template, context, status_code=status)
    return response


def redis_down(request: Request, exc: Exception) -> Response:
    """The page of a request whose reads Redis did not answer (the app's BrokerError handler)."""
    return page(request, "error.html", 503, message=f"Redis did not answer: {exc}")


def bad_request(request: Request, exc: Exception) -> Response:
    """The page of a request the broker refused (the app's CommandError handler)."""
    return page(request, "error.html", 400, message=str(exc))


# Errors of a page's reads, for every page (an action answers its own: actions.py).
ERROR_PAGES = {CommandError: bad_request, BrokerError: redis_down}


async def overview(request: Request) -> Response:
    dashboard = request.app.state.dashboard
    figures = await read_figures(dashboard.manager)
    chart = Chart(list(dashboard.history.samples))
    stats = dashboard.manager.stats
    return page(request, "overview.html", figures=figures, chart=chart, stats=stats)


async def queues(request: Request) -> Response:
    figures = await read_figures(manager_of(request))
    return page(request, "queues.html", figures=figures)


async def workers(request: Request) -> Response:
    """The connected workers with the jobs each holds: the listing INFO shows (hopper.workers)."""
    shown = await manager_of(request).listing.workers()
    return page(request, "workers.html", workers=shown.listed, more=shown.total - len(shown.listed))


async def job(request: Request) -> Response:
    jid = request.path_params["jid"]
    manager = manager_of(request)
    state, found = await manager.tracking.find(jid)
    archived = (await manager.history.query(HistoryQuery(jid=jid))).jobs
    status = 404 if found is None and not archived else 200
    payload = _pretty(encode(found)) if found else ""
    result = _pretty(bytes(state.result)) if state.result else ""
    past = [(entry, _pretty(bytes(entry.job))) for entry in archived]
    context = {"state": state, "payload": payload, "result": result, "archived": past}
    return page(request, "job.html", status, **context)


def _pretty(document: bytes) -> str:
    return msgspec.json.format(document, indent=2).decode()


async def find_job(request: Request) -> Response:
    """The header's jid box."""
    jid = request.query_params.get("jid", "").strip()
    return RedirectResponse(job_url(jid) if jid else "/", status_code=303)


def job_url(jid: str) -> str:
    """The address of a job's page: a jid is any text (`/`, `%`, `?` included)."""
    return "/jobs/" + quote(jid, safe="")


async def cron(request: Request) -> Response:
    manager = manager_of(request)
    entries = await manager.cron.listing(manager.clock())
    return page(request, "cron.html", entries=entries)


async def batches(request: Request) -> Response:
    """The batches kept (BATCH STATUS of each, the newest first)."""
    manager = manager_of(request)
    found = await manager.batches.recent(MAX_BATCHES)
    return page(request, "batches.html", batches=found, most=MAX_BATCHES)


async def limits(request: Request) -> Response:
    """Each queue's settings in force: limits, bounds, pauses (what INFO's hopper.queues says)."""
    manager = manager_of(request)
    settings = await manager.admin.settings_in_force(manager.clock())
    return page(request, "limits.html", settings=settings)


async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next", "/"))
    if not request.app.state.dashboard.guard.password():  # nothing to log in to
        return RedirectResponse(target, status_code=303)
    return page(request, "login.html", next=target)


def safe_next(path: str) -> str:
    """Where to go after logging in: a path of this site only."""
    return path if path.startswith("/") and not path.startswith("//") else "/"


def ago(when: str) -> str:
    """`2026-01-01T00:00:00Z` as time from now (`12s ago`, `in 3 h`), for templates ('' when
    unreadable)."""
    try:
        seconds = time.time() - parse_time(when)
    except ValueError:
        return ""
    size = abs(seconds)
    if size < 100:
        span = f"{size:.0f}s"
    elif size < 100 * 60:
        span = f"{size / 60:.0f} min"
    elif size < 48 * 3600:
        span = f"{size / 3600:.0f} h"
    else:
        span = f"{size / 86400:.0f} d"
    return f"{span} ago" if seconds >= 0 else f"in {span}"


templates.env.filters["ago"] = ago
templates.env.filters["job_url"] = job_url


def routes() -> list[Route]:
    ready = [Route(p, view) for p, view in (("/", overview), ("/queues", queues))]
    ready += [Route("/workers", workers), Route("/cron", cron)]
    ready += [Route("/batches", batches), Route("/limits", limits)]
    ready += [Route("/jobs/{jid:path}", job), Route("/find", find_job)]
    return [*ready, Route("/login", login_page)]
