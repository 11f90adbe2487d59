"""Who may use the dashboard: a signed session cookie set by the login form (or HTTP Basic
credentials, for scrapers), and a token in every state-changing form against cross-site
request forgery. The password is `dashboard_password`, else the broker's; with neither (a
loopback bind only, see config.check) the dashboard is open, but forms still carry tokens.
"""

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import trio
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp

from hopper_broker.config import Config, is_loopback, split_bind

SID_COOKIE = "hopper_sid"
AUTH_COOKIE = "hopper_auth"
SESSION_TTL = 12 * 3600  # seconds a login lasts
LOGIN_DELAY = 0.5  # seconds a wrong password waits before its answer (slows guessing)
OPEN_PATHS = ("/login", "/static/")  # reachable without logging in


class Guard:
    """Signs and checks the session, login and CSRF tokens with a key of this process."""

    def __init__(self, config: Callable[[], Config]) -> None:
        self.config = config
        self._key = secrets.token_bytes(32)

    def password(self) -> str:
        return self.config().web_password

    def _sign(self, *parts: str) -> str:
        message = "\0".join(parts).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def new_sid(self) -> tuple[str, str]:
        """A fresh session id and its cookie value."""
        sid = secrets.token_urlsafe(16)
        return sid, f"{sid}.{self._sign('sid', sid)}"

    def sid(self, request: Request) -> str | None:
        """The session id of a valid session cookie."""
        sid, _, signature = request.cookies.get(SID_COOKIE, "").partition(".")
        ok = sid and hmac.compare_digest(signature, self._sign("sid", sid))
        return sid if ok else None

    def csrf(self, sid: str) -> str:
        return self._sign("csrf", sid)

    def login_cookie(self, sid: str) -> str:
        expiry = str(int(time.time()) + SESSION_TTL)
        return f"{expiry}.{self._sign('auth', sid, expiry, self._password_digest())}"

    def _password_digest(self) -> str:
        """A changed password (reload) ends every login."""
        return hashlib.sha256(self.password().encode()).hexdigest()

    async def allowed(self, request: Request, sid: str | None) -> bool:
        """No password, a valid login for this session, or the password as Basic credentials
        (wrong ones wait as a wrong login does)."""
        password = self.password()
        if not password:
            return True
        expiry, _, signature = request.cookies.get(AUTH_COOKIE, "").partition(".")
        if sid and expiry.isdigit() and int(expiry) > time.time():
            wanted = self._sign("auth", sid, expiry, self._password_digest())
            if hmac.compare_digest(signature, wanted):
                return True
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                _, _, given = base64.b64decode(encoded).decode().partition(":")
            except ValueError:  # not base64 (of ASCII), not UTF-8
                given = ""
            return await self.check_password(given)
        return False

    async def check_password(self, given: str) -> bool:
        if hmac.compare_digest(given.encode(), self.password().encode()):
            return True
        await trio.sleep(LOGIN_DELAY)
        return False

    def trusted_host(self, request: Request) -> bool:
        """Whether the request may name this dashboard as it does: any name with a password
        (a login cookie goes only to the name it was set for) or on a bind open to the
        network (allow_open_bind); an open loopback dashboard answers only to loopback names,
        so that a site whose name is made to point at 127.0.0.1 (DNS rebinding) cannot use
        it."""
        config = self.config()
        if self.password() or not is_loopback(split_bind(config.dashboard_bind)[0]):
            return True
        host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        return host == "localhost" or is_loopback(host)

    async def form(self, request: Request) -> FormData:
        """The form of a state-changing request, once its origin and CSRF token check out;
        otherwise 403."""
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise HTTPException(403, "cross-origin request refused")
        form = await request.form()
        sid = self.sid(request)
        token = str(form.get("csrf", ""))
        if sid is None or not hmac.compare_digest(token, self.csrf(sid)):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page and try again")
        return form


class GuardMiddleware(BaseHTTPMiddleware):
    """Gives every visitor a session, and sends those not logged in to the login page (401
    for /metrics and other non-page requests)."""

    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        super().__init__(app)
        self.guard = guard

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        guard, cookie = self.guard, None
        sid = guard.sid(request)
        if sid is None:
            sid, cookie = guard.new_sid()
        request.state.sid = sid
        request.state.csrf = guard.csrf(sid)
        path = request.url.path
        if not guard.trusted_host(request):
            response = Response("not a name of this dashboard\n", 421)
        elif path.startswith(OPEN_PATHS) or await guard.allowed(request, sid):
            response = await call_next(request)
        elif request.method == "GET" and path != "/metrics":
            response = RedirectResponse(f"/login?next={path}", status_code=303)
        else:
            response = Response(
                "login required\n", 401, {"WWW-Authenticate": 'Basic realm="hopper"'}
            )
        if cookie is not None:
            response.set_cookie(SID_COOKIE, cookie, httponly=True, samesite="strict")
        return response
