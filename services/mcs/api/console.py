"""The web console at /ui: static HTML, app.js and app.css from this package (nothing from another origin,
and a Content-Security-Policy that forbids it), and the login that turns the admin token into a session.

A session is a random id in an HttpOnly, SameSite=Strict cookie; the api keeps only its SHA-256 (in this
process's memory: a restart of the api logs the console out) with its expiry and a per-session CSRF token,
which the page reads from a <meta> tag and sends as X-CSRF-Token on every state-changing request. A wrong
token at /ui/login locks that client out for a time that doubles with each failure (429 + Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources

from quart import Blueprint, Response, current_app, redirect, request
from quart_schema import hide

from mcs import auth, metrics
from mcs.errors import ApiError, Forbidden, Unauthorized

bp = Blueprint("console", __name__, url_prefix="/ui")

SESSION_COOKIE = "mcs_console"
CSRF_HEADER = "X-CSRF-Token"
CONSOLE_ACTOR = "admin (console)"  # the actor the audit trail records for the console's actions
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
MAX_SESSIONS = 1000  # oldest dropped beyond this
MAX_CLIENTS = 10000  # throttled clients remembered
LOCKOUT_MAX = 300.0  # seconds: the longest lockout after repeated wrong tokens
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


class TooManyAttempts(ApiError):
    status = 429
    code = "too_many_attempts"


@dataclass
class Sessions:
    """Console sessions and the wrong-token throttle, in this process; both bounded."""

    ttl: float
    by_hash: dict[str, tuple[str, float]] = field(default_factory=dict)  # sha256(id) -> (csrf, expires)
    failures: dict[str, tuple[int, float]] = field(default_factory=dict)  # client -> (count, locked until)

    @staticmethod
    def _hash(session_id: str) -> str:
        return hashlib.sha256(session_id.encode()).hexdigest()

    def create(self, now: float) -> tuple[str, str]:
        for key in [k for k, (_, expires) in self.by_hash.items() if expires <= now]:
            del self.by_hash[key]
        while len(self.by_hash) >= MAX_SESSIONS:
            del self.by_hash[next(iter(self.by_hash))]
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.by_hash[self._hash(session_id)] = (csrf, now + self.ttl)
        return session_id, csrf

    def csrf(self, session_id: str, now: float) -> str | None:
        """The session's CSRF token, or None when it is unknown or expired."""
        found = self.by_hash.get(self._hash(session_id))
        if found is None or found[1] <= now:
            return None
        return found[0]

    def drop(self, session_id: str) -> None:
        self.by_hash.pop(self._hash(session_id), None)

    def locked_for(self, client: str, now: float) -> float:
        count_until = self.failures.get(client)
        return 0.0 if count_until is None else max(0.0, count_until[1] - now)

    def failed(self, client: str, now: float) -> float:
        """Record a wrong token; the lockout it earns, in seconds (1, 2, 4, ... up to LOCKOUT_MAX)."""
        count = self.failures.pop(client, (0, 0.0))[0] + 1
        while len(self.failures) >= MAX_CLIENTS:
            del self.failures[next(iter(self.failures))]
        lockout = min(LOCKOUT_MAX, 2.0 ** (count - 1))
        self.failures[client] = (count, now + lockout)
        return lockout

    def succeeded(self, client: str) -> None:
        self.failures.pop(client, None)


def sessions() -> Sessions:
    app = current_app
    found = app.config.get("MCS_CONSOLE_SESSIONS")
    if found is None:
        found = app.config["MCS_CONSOLE_SESSIONS"] = Sessions(ttl=app.config["MCS_SETTINGS"].console_session_ttl)
    assert isinstance(found, Sessions)
    return found


def check_session() -> str:
    """The request's console session's CSRF token; 401 when the session is unknown or expired, 403 when
    a state-changing request lacks the session's X-CSRF-Token."""
    csrf = sessions().csrf(request.cookies.get(SESSION_COOKIE, ""), time.time())
    if csrf is None:
        raise Unauthorized("the console session expired or is unknown; log in again at /ui/login")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), csrf.encode()):
            raise Forbidden(f"a console request that changes state needs the {CSRF_HEADER} header", code="csrf")
    return csrf


def _page(body: str, *, csrf: str = "", status: int = 200) -> Response:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="csrf-token" content="{csrf}"><title>MCS console</title>
<link rel="stylesheet" href="/ui/app.css"><script src="/ui/app.js" defer></script></head>
<body>{body}</body></html>"""
    return _secured(Response(html, status=status, content_type="text/html; charset=utf-8"))


def _secured(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


LOGIN = """<main class="login"><h1>MCS console</h1>
<form id="login"><label>Admin token <input type="password" name="token" autocomplete="current-password"
required autofocus></label><button type="submit">Log in</button><p id="login-error" class="error"></p></form>
</main>"""

APP = """<header><nav><a href="#/tasks">Tasks</a><a href="#/workflows">Workflows</a><a href="#/agents">Agents</a>
<a href="#/schedules">Schedules</a><a href="#/memory">Memory</a></nav>
<span id="live" class="live">connecting</span><button id="logout" type="button">Log out</button></header>
<section id="glance" class="glance"></section><main id="view"></main>
<dialog id="confirm"><form method="dialog"><p id="confirm-text"></p>
<button value="cancel">Back</button> <button value="ok" id="confirm-ok">Yes, do it</button></form></dialog>"""


@bp.get("")
@hide
async def index() -> Response:
    try:
        csrf = check_session()
    except Unauthorized:
        return _secured(redirect("/ui/login"))  # type: ignore[arg-type]
    return _page(APP, csrf=csrf)


@bp.get("/login")
@hide
async def login_page() -> Response:
    return _page(LOGIN)


@bp.post("/login")
@hide
async def login() -> Response:
    """{"token": "<admin token>"} -> a session cookie; 401 for a wrong token, 429 while locked out."""
    store, now = sessions(), time.time()
    client = request.remote_addr or "unknown"
    wait = store.locked_for(client, now)
    if wait > 0:
        metrics.console_logins.labels("throttled").inc()
        raise TooManyAttempts(f"too many wrong tokens; try again in {wait:.0f} s", retry_after=wait)
    body = await request.get_json()
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not auth.token_matches(token, current_app.config["MCS_SETTINGS"].admin_token):
        store.failed(client, now)
        metrics.console_logins.labels("wrong_token").inc()
        raise Unauthorized("wrong admin token")
    store.succeeded(client)
    session_id, _ = store.create(now)
    metrics.console_logins.labels("ok").inc()
    response = _secured(Response('{"ok": true}', content_type="application/json"))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(store.ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    return response


@bp.post("/logout")
@hide
async def logout() -> Response:
    check_session()  # needs the CSRF token: another site cannot log the admin out
    sessions().drop(request.cookies.get(SESSION_COOKIE, ""))
    response = _secured(Response("", status=204))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@bp.get("/<name>")
@hide
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise_not_found = Response('{"error": {"code": "not_found", "message": "no such file"}}', status=404)
        raise_not_found.content_type = "application/json"
        return raise_not_found
    text = (resources.files("mcs.api") / "console" / name).read_text(encoding="utf-8")
    response = _secured(Response(text, content_type=ASSETS[name]))
    response.headers["Cache-Control"] = "no-cache"
    return response
