"""The console's web page and its JSON API: Starlette routes, sessions, CSRF, roles, server-sent events.

Requests and who may make them:

- every page and API call but ``/login`` and ``/healthz`` needs a signed-in user: a signed session cookie
  (``SessionMiddleware``, itsdangerous) set by ``POST /login`` with an Argon2 password check, or, when
  ``auth.proxy_header`` is configured, that header on a request from one of ``auth.trusted_proxies``;
- every state-changing request (any method but GET/HEAD/OPTIONS, the login included) must carry the session's
  CSRF token in ``X-CSRF-Token`` and, if the browser sends an Origin, come from this console's own origin (its
  Host, ``listen.public_url``, or the ``X-Forwarded-Host`` of a trusted proxy) (:class:`GuardMiddleware`);
  otherwise 403 before any route runs; five failed sign-ins of one login within 5 minutes lock it for the rest
  of that window (429);
- rights come from the user's role (``console.auth.RIGHTS``): operators give verdicts; supervisors also re-open
  verdicts, manage users and read the who-did-what log.

Store calls are synchronous (SQLAlchemy) and run in the thread pool; the page's live queue is one SSE stream
per page fed by :class:`console.hub.Hub`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.auth import check_password, hash_password, may
from console.config import ConsoleConfig
from console.db import ROLES, VERDICTS
from console.hub import Hub
from console.store import ConsoleStore, LastSupervisorError, StoreError, User

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
THROTTLE_FAILURES, THROTTLE_WINDOW_S = 5, 300
"""A login with this many failed sign-ins within the window is refused (429) until the oldest leaves it."""
THROTTLE_LOGINS_MAX = 10_000
"""Failed sign-ins are remembered per login; past this many logins the ones out of the window are forgotten (a
run of guessed logins must not grow the console's memory without bound)."""
STREAM_RECHECK_S = 15.0
"""An open live stream checks its user (signed out, disabled, expired) at least this often."""
MAX_BODY_BYTES = 64 * 1024
"""Largest body of a state-changing request (sign-in, verdict with its note, user change: all under 1 kB). The
sign-in page hands a CSRF token to anyone, so without a bound an anonymous client could post a body of any size
and the console would read it all into memory."""
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class BodyTooLarge(Exception):
    """A streamed (chunked) request body went past ``MAX_BODY_BYTES``: the request ends, unread."""


def _limited(receive: Receive) -> Receive:
    """``receive`` that stops a body without a Content-Length once it passes ``MAX_BODY_BYTES``."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY_BYTES:
                raise BodyTooLarge(f"request body over {MAX_BODY_BYTES} bytes")
        return message

    return wrapped


class GuardMiddleware:
    """CSRF and origin check for every state-changing request; security headers on every response.

    Sits inside ``SessionMiddleware`` (it reads ``scope["session"]``). A pure ASGI middleware: it never reads
    the body, so the SSE stream and the routes see the request untouched.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: frozenset[str] = frozenset(),
                 public_url: str | None = None) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies
        self.public_host = urlsplit(public_url).netloc if public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in SAFE_METHODS:
            refusal = self._refusal(scope)
            if refusal is not None:
                await JSONResponse({"error": refusal}, status_code=403)(scope, receive, self._with_headers(send))
                return
            length = dict(scope["headers"]).get(b"content-length", b"0")
            if not length.isdigit() or int(length) > MAX_BODY_BYTES:
                await JSONResponse({"error": f"request body over {MAX_BODY_BYTES} bytes"}, status_code=413)(
                    scope, receive, self._with_headers(send))
                return
            started = False
            guarded = self._with_headers(send)

            async def tracking(message: Message) -> None:
                nonlocal started
                started = started or message["type"] == "http.response.start"
                await guarded(message)

            try:
                await self.app(scope, _limited(receive), tracking)
            except BodyTooLarge as exc:
                if started:
                    raise
                await JSONResponse({"error": str(exc)}, status_code=413)(scope, receive, guarded)
            return
        await self.app(scope, receive, self._with_headers(send))

    def _refusal(self, scope: Scope) -> str | None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin")
        if origin and origin != "null":
            ours = {headers.get("host", ""), self.public_host}
            client = scope.get("client")
            if client and client[0] in self.trusted_proxies and "x-forwarded-host" in headers:
                ours.add(headers["x-forwarded-host"])  # behind the site's reverse proxy
            if urlsplit(origin).netloc not in ours:
                return f"cross-origin request from {origin} refused"
        expected = scope.get("session", {}).get("csrf")
        given = headers.get("x-csrf-token", "")
        if not expected or not given or not hmac.compare_digest(str(expected), given):
            return "CSRF token missing or wrong: reload the page"
        return None

    @staticmethod
    def _with_headers(send: Send) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)
        return wrapped


class ConsoleWeb:
    """The routes, bound to one store, hub and verdict sender."""

    def __init__(self, config: ConsoleConfig, store: ConsoleStore, hub: Hub, wake_sender: Callable[[], None],
                 brokers: Callable[[], list[dict[str, Any]]] = list):
        self.config, self.store, self.hub, self.wake_sender = config, store, hub, wake_sender
        self.brokers = brokers
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.trusted = frozenset(config.auth.trusted_proxies)
        self._failed: dict[str, list[float]] = {}  # login -> times of its recent failed sign-ins

    # ---- who is asking ----

    def _csrf(self, request: Request) -> str:
        token = request.session.get("csrf")
        if not token:
            token = request.session["csrf"] = secrets.token_urlsafe(32)
        return str(token)

    async def user(self, request: Request) -> User | None:
        header = self.config.auth.proxy_header
        if header and request.client is not None and request.client.host in self.trusted:
            login = request.headers.get(header)
            if login:
                user = await run_in_threadpool(self.store.user, login)
                if user is None or user.disabled:
                    return None
                if request.session.get("login") != login:
                    request.session["login"] = login
                    request.session["issued"] = time.time()
                    request.session["sid"] = secrets.token_urlsafe(24)
                return user
        login, sid = request.session.get("login"), request.session.get("sid")
        issued = float(request.session.get("issued") or 0)
        if not login or not sid or time.time() - issued > self.config.auth.session_max_age_s:
            return None
        if await run_in_threadpool(self.store.session_ended, str(sid), str(login), issued):
            return None  # signed out (a copy of the cookie is refused too), or password changed, or disabled
        user = await run_in_threadpool(self.store.user, str(login))
        return None if user is None or user.disabled else user

    def _address(self, request: Request) -> str | None:
        return request.client.host if request.client is not None else None

    # ---- pages ----

    async def index(self, request: Request) -> Response:
        user = await self.user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        return self.templates.TemplateResponse(request, "index.html", {
            "user": user, "csrf": self._csrf(request), "console_id": self.config.console_id,
            "verdicts": VERDICTS, "supervisor": may(user.role, "manage_users")})

    async def login_page(self, request: Request) -> Response:
        return self.templates.TemplateResponse(request, "login.html", {
            "csrf": self._csrf(request), "console_id": self.config.console_id})

    async def users_page(self, request: Request) -> Response:
        user = await self.user(request)
        if user is None:
            return RedirectResponse("/login", status_code=303)
        if not may(user.role, "manage_users"):
            return JSONResponse({"error": "supervisors only"}, status_code=403)
        return self.templates.TemplateResponse(request, "users.html", {
            "user": user, "csrf": self._csrf(request), "console_id": self.config.console_id, "roles": ROLES})

    async def login(self, request: Request) -> Response:
        body = await _json(request)
        login, password = str(body.get("login") or ""), str(body.get("password") or "")
        now = time.time()
        recent = [w for w in self._failed.get(login, []) if now - w < THROTTLE_WINDOW_S]
        if len(recent) >= THROTTLE_FAILURES:
            await run_in_threadpool(self.store.audit, login or "?", "login_throttled", None, None,
                                    self._address(request))
            return JSONResponse({"error": f"{len(recent)} failed sign-ins in {THROTTLE_WINDOW_S // 60} min: wait "
                                          "a few minutes"}, status_code=429)
        user = await run_in_threadpool(self.store.user, login)
        # the hash is checked (or a stand-in's) for every login, known or not: equal time, no enumeration
        matches = await run_in_threadpool(check_password, user.password_hash if user is not None else None, password)
        ok = matches and user is not None and not user.disabled
        await run_in_threadpool(self.store.audit, login or "?", "login" if ok else "login_failed", None, None,
                                self._address(request))
        if not ok:
            if len(self._failed) >= THROTTLE_LOGINS_MAX:  # many logins guessed: forget those out of the window
                self._failed = {k: v for k, v in self._failed.items() if now - v[-1] < THROTTLE_WINDOW_S}
            self._failed[login] = [*recent, now][-THROTTLE_FAILURES:]
            return JSONResponse({"error": "wrong login or password"}, status_code=401)
        self._failed.pop(login, None)
        request.session.clear()
        request.session.update({"login": login, "issued": time.time(), "csrf": secrets.token_urlsafe(32),
                                "sid": secrets.token_urlsafe(24)})
        return JSONResponse({"ok": True, "csrf": request.session["csrf"]})

    async def logout(self, request: Request) -> Response:
        user = await self.user(request)
        if user is not None:
            await run_in_threadpool(self.store.audit, user.login, "logout", None, None, self._address(request))
        sid = request.session.get("sid")
        if sid:  # the cookie is signed, not stored: the session id is listed as ended so no copy of it works
            until = float(request.session.get("issued") or time.time()) + self.config.auth.session_max_age_s
            await run_in_threadpool(self.store.end_session, str(sid), until)
        request.session.clear()
        return JSONResponse({"ok": True})

    async def healthz(self, _request: Request) -> Response:
        return JSONResponse({"ok": True, "console_id": self.config.console_id})

    # ---- API ----

    async def items(self, request: Request, user: User) -> Response:
        q = request.query_params
        limit = _int(q.get("limit"), 200)
        if limit is None:
            return JSONResponse({"error": "limit: expected a whole number"}, status_code=400)
        views = await run_in_threadpool(
            self.store.items, status=q.get("status", "open"), site=q.get("site") or None,
            lane=q.get("lane") or None, verdict=q.get("verdict") or None, text=q.get("q") or None,
            since=_float(q.get("since")), until=_float(q.get("until")), limit=limit)
        return JSONResponse({"items": [v.as_json() for v in views], "now": time.time()})

    async def item(self, request: Request, user: User) -> Response:
        view = await run_in_threadpool(self.store.item, request.path_params["record_id"])
        if view is None:
            return JSONResponse({"error": "no such item"}, status_code=404)
        return JSONResponse(view.as_json())

    async def lanes(self, request: Request, user: User) -> Response:
        now = time.time()
        lanes = await run_in_threadpool(self.store.lanes, now)
        keep_days = self.config.database.keep_days
        overdue = await run_in_threadpool(self.store.open_alarms_before, now - keep_days * 86400)
        return JSONResponse({"lanes": [lane.as_json() for lane in lanes], "brokers": self.brokers(),
                             "sites": sorted({lane.site_id for lane in lanes if lane.site_id}), "now": now,
                             "overdue": _overdue(overdue, keep_days)})

    async def image(self, request: Request, user: User) -> Response:
        image_id = int(request.path_params["image_id"])
        found = await run_in_threadpool(self.store.image, image_id) if image_id < 2**63 else None
        if found is None:
            return JSONResponse({"error": "no such image"}, status_code=404)
        media_type, content = found
        return Response(content, media_type=media_type,
                        headers={"cache-control": "private, max-age=86400, immutable"})

    async def verdict(self, request: Request, user: User) -> Response:
        body = await _json(request)
        try:
            verdict_id, view = await run_in_threadpool(
                self.store.add_verdict, str(body.get("record_id") or ""), str(body.get("verdict") or ""), user,
                (str(body["note"])[:500] if body.get("note") else None), self.config.console_id,
                self._address(request))
        except StoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        self.wake_sender()
        self.hub.publish("update", view.as_json())
        return JSONResponse({"verdict_id": verdict_id, "item": view.as_json()}, status_code=201)

    async def reopen(self, request: Request, user: User) -> Response:
        try:
            view = await run_in_threadpool(self.store.reopen, request.path_params["record_id"], user,
                                           self._address(request))
        except StoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        self.hub.publish("alarm", view.as_json())
        return JSONResponse({"item": view.as_json()})

    async def list_users(self, request: Request, user: User) -> Response:
        users = await run_in_threadpool(self.store.users)
        return JSONResponse({"users": [{"login": u.login, "role": u.role, "disabled": u.disabled} for u in users]})

    async def add_user(self, request: Request, user: User) -> Response:
        body = await _json(request)
        try:
            hashed = hash_password(str(body.get("password") or ""))
            await run_in_threadpool(self.store.add_user, str(body.get("login") or ""), hashed,
                                    str(body.get("role") or "operator"), user.login)
        except (ValueError, StoreError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True}, status_code=201)

    async def change_user(self, request: Request, user: User) -> Response:
        body = await _json(request)
        login = request.path_params["login"]
        try:
            if "role" in body:
                await run_in_threadpool(self.store.set_role, login, str(body["role"]), user.login)
            if "disabled" in body:
                await run_in_threadpool(self.store.set_disabled, login, bool(body["disabled"]), user.login)
            if body.get("password"):
                await run_in_threadpool(self.store.set_password, login, hash_password(str(body["password"])),
                                        user.login)
        except LastSupervisorError as exc:  # a conflict with the users as they are, not a malformed request
            return JSONResponse({"error": str(exc)}, status_code=409)
        except (ValueError, StoreError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True})

    async def audit(self, request: Request, user: User) -> Response:
        limit = _int(request.query_params.get("limit"), 200)
        if limit is None:
            return JSONResponse({"error": "limit: expected a whole number"}, status_code=400)
        rows = await run_in_threadpool(self.store.audit_log, max(1, min(limit, 10_000)))
        return JSONResponse({"audit": rows})

    async def events(self, request: Request, user: User) -> Response:
        queue = self.hub.subscribe()

        async def stream() -> AsyncIterator[bytes]:
            next_check = time.monotonic() + STREAM_RECHECK_S
            try:
                yield f"retry: 1000\nevent: hello\ndata: {{\"now\": {time.time()}}}\n\n".encode()
                while True:
                    try:
                        event = await asyncio.wait_for(queue.get(), timeout=STREAM_RECHECK_S)
                        timed_out = False
                    except TimeoutError:
                        event, timed_out = None, True
                    # checked by the clock, not only when the stream is quiet: on busy lanes it never is
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + STREAM_RECHECK_S
                        if await self.user(request) is None:
                            return  # signed out, disabled or expired meanwhile: the stream ends
                    if timed_out:
                        yield b": keep-alive\n\n"
                        continue
                    if event is None:
                        return
                    yield event.encode()
            finally:
                self.hub.unsubscribe(queue)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-store", "x-accel-buffering": "no"})


Handler = Callable[[Request, User], Awaitable[Response]]


def _guarded(web: ConsoleWeb, right: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """The route needs a signed-in user who has ``right``: 401 when signed out, 403 without the right."""

    async def endpoint(request: Request) -> Response:
        user = await web.user(request)
        if user is None:
            return JSONResponse({"error": "sign in first"}, status_code=401)
        if not may(user.role, right):
            await run_in_threadpool(web.store.audit, user.login, "refused", request.url.path, right,
                                    web._address(request))
            return JSONResponse({"error": f"your role ({user.role}) may not do this ({right})"}, status_code=403)
        return await handler(request, user)

    return endpoint


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _int(value: str | None, default: int) -> int | None:
    """A whole-number query parameter (``default`` when absent); None when it is not one (the route answers 400,
    not a 500 from deep in the store)."""
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        return None


def _overdue(per_lane: dict[str, tuple[int, float]], keep_days: float) -> dict[str, Any]:
    """The open alarms older than ``keep_days`` as ``/api/lanes`` tells the page: the retention keeps them until
    an operator decides them, and the page says they are there (per lane, and how old the oldest is)."""
    return {"keep_days": keep_days, "count": sum(n for n, _ in per_lane.values()),
            "oldest_wall": min((oldest for _, oldest in per_lane.values()), default=None),
            "lanes": {prefix: n for prefix, (n, _) in per_lane.items()}}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def build_app(config: ConsoleConfig, store: ConsoleStore, hub: Hub, wake_sender: Callable[[], None],
              session_key: str, brokers: Callable[[], list[dict[str, Any]]] = list) -> Starlette:
    """The ASGI application (served by uvicorn over HTTPS; ``console.service``); ``brokers`` tells the page the
    state of the console's own broker connections."""
    web = ConsoleWeb(config, store, hub, wake_sender, brokers)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        hub.bind(asyncio.get_running_loop())
        yield
        hub.close()

    g = _guarded
    routes = [
        Route("/", web.index),
        Route("/login", web.login_page, methods=["GET"]),
        Route("/login", web.login, methods=["POST"]),
        Route("/logout", web.logout, methods=["POST"]),
        Route("/users", web.users_page),
        Route("/healthz", web.healthz),
        Route("/events", g(web, "view", web.events)),
        Route("/images/{image_id:int}", g(web, "view", web.image)),
        Route("/api/items", g(web, "view", web.items)),
        Route("/api/items/{record_id}", g(web, "view", web.item)),
        Route("/api/items/{record_id}/reopen", g(web, "reopen", web.reopen), methods=["POST"]),
        Route("/api/lanes", g(web, "view", web.lanes)),
        Route("/api/verdicts", g(web, "verdict", web.verdict), methods=["POST"]),
        Route("/api/users", g(web, "manage_users", web.list_users), methods=["GET"]),
        Route("/api/users", g(web, "manage_users", web.add_user), methods=["POST"]),
        Route("/api/users/{login}", g(web, "manage_users", web.change_user), methods=["POST"]),
        Route("/api/audit", g(web, "audit", web.audit)),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    middleware = [
        Middleware(SessionMiddleware, secret_key=session_key, session_cookie="edge_console",
                   max_age=config.auth.session_max_age_s, same_site="strict", https_only=True),
        Middleware(GuardMiddleware, trusted_proxies=frozenset(config.auth.trusted_proxies),
                   public_url=config.listen.public_url),
    ]
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
