"""The dashboard's state-changing requests (POST): each checks the CSRF token (auth.Guard),
makes the same manager call as the protocol command it mirrors, and goes back to the page
(with `done=` in its address when the action says what it did)."""

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from hopper_broker.manager import Manager
from hopper_broker.web.auth import AUTH_COOKIE, SESSION_TTL, Guard
from hopper_broker.web.views import manager_of, page, safe_next
from hopper_client.schema.errors import BrokerError, CommandError

Act = Callable[[Manager, FormData], Awaitable[str | None]]  # returns what it did, if it says


async def _queue(manager: Manager, form: FormData) -> None:
    """QUEUE PAUSE / RESUME / REMOVE (clear) of one queue."""
    name, op = str(form.get("queue", "")), form.get("op")
    if op in ("pause", "resume"):
        await manager.admin.pause([name], op == "pause")
    elif op == "clear":
        await manager.admin.remove([name])
    else:
        raise CommandError(f"no such queue action: {op}")


async def _drain(manager: Manager, form: FormData) -> None:
    """DRAIN ON|OFF."""
    await manager.admin.drain(form.get("on") == "1")


async def _worker(manager: Manager, form: FormData) -> None:
    """Tell a worker to go quiet or terminate (its next BEAT hears it)."""
    await manager.workers.signal(str(form.get("wid", "")), str(form.get("state", "")))


async def _cancel(manager: Manager, form: FormData) -> None:
    """JOB CANCEL."""
    await manager.tracking.cancel(str(form.get("jid", "")))


def action(act: Act, back: str) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of a form's action: CSRF check, the act, back to the form's `back` page
    (else `back`)."""

    async def endpoint(request: Request) -> Response:
        guard: Guard = request.app.state.dashboard.guard
        form = await guard.form(request)
        try:
            done = await act(manager_of(request), form)
        except BrokerError as exc:
            return page(request, "error.html", 400, message=exc.message)
        target = safe_next(str(form.get("back", "")) or back)
        if done:
            target += ("&" if "?" in target else "?") + urlencode({"done": done})
        return RedirectResponse(target, status_code=303)

    return endpoint


async def login(request: Request) -> Response:
    guard: Guard = request.app.state.dashboard.guard
    form = await guard.form(request)
    target = safe_next(str(form.get("next", "/")))
    if not await guard.check_password(str(form.get("password", ""))):
        return page(request, "login.html", 401, next=target, wrong=True)
    response = RedirectResponse(target, status_code=303)
    cookie = guard.login_cookie(request.state.sid)
    response.set_cookie(AUTH_COOKIE, cookie, SESSION_TTL, httponly=True, samesite="strict")
    return response


async def logout(request: Request) -> Response:
    guard: Guard = request.app.state.dashboard.guard
    await guard.form(request)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(AUTH_COOKIE)
    return response


def routes() -> list[Route]:
    acts = [
        ("/queues/act", _queue, "/queues"),
        ("/queues/drain", _drain, "/queues"),
        ("/workers/act", _worker, "/workers"),
        ("/jobs/cancel", _cancel, "/"),
    ]
    posts = [Route(path, action(act, back), methods=["POST"]) for path, act, back in acts]
    return [
        *posts,
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
    ]
