"""The web console at /ui: static HTML, app.js and app.css from this package (nothing from another origin,
and a Content-Security-Policy that forbids it), and the login that turns the admin token into a session.

A session is a random id in an HttpOnly, SameSite=Strict cookie; the database keeps only its SHA-256
(table console_sessions: a login survives an api restart) with its expiry and a per-session CSRF token,
which the page reads from a <meta> tag and sends as X-CSRF-Token on every state-changing request. A wrong
token at /ui/login locks that client out for a time that doubles with each failure (429 + Retry-After).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from quart import Blueprint, Response, current_app, redirect, request
from quart_schema import hide

from mcs import auth, metrics
from mcs.engines.sqlite.connection import Connection
from mcs.errors import ApiError, Forbidden, NotFound, Unauthorized
from mcs.state import console as console_store

bp = Blueprint("console", __name__, url_prefix="/ui")
log = logging.getLogger("mcs.api")

SESSION_COOKIE = "mcs_console"
CSRF_HEADER = "X-CSRF-Token"
CONSOLE_ACTOR = "admin (console)"  # the actor the audit trail records for the console's actions
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
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


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass
class Throttle:
    """Wrong tokens per client address, in this process; bounded."""

    failures: dict[str, tuple[int, float]] = field(default_factory=dict)  # client -> (count, locked until)

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


def throttle() -> Throttle:
    found = current_app.config.setdefault("MCS_CONSOLE_THROTTLE", Throttle())
    assert isinstance(found, Throttle)
    return found


def session_credentials() -> Any:
    """The console cookie's credentials, checked against the database in `verify` (the admin once checked)."""
    from mcs.api.auth import Credentials  # auth imports this module

    sent = None if request.method in SAFE_METHODS else request.headers.get(CSRF_HEADER, "")
    # is_admin stays False until `verify` has found the session in the database (then the caller is the
    # admin): code that trusts `Credentials.is_admin` before verifying cannot be fooled by a made-up cookie.
    return Credentials(
        is_admin=False, name=CONSOLE_ACTOR, session=session_hash(request.cookies.get(SESSION_COOKIE, "")), csrf=sent
    )


def verify_session(conn: Connection, creds: Any) -> str:
    """The session's CSRF token; 401 when the session is unknown or expired, 403 when a state-changing
    request did not send the session's X-CSRF-Token."""
    csrf = console_store.csrf_of(conn, id_hash=creds.session, now=time.time())
    if csrf is None:
        raise Unauthorized("the console session expired or is unknown; log in again at /ui/login")
    if creds.csrf is not None and not hmac.compare_digest(creds.csrf.encode(), csrf.encode()):
        raise Forbidden(f"a console request that changes state needs the {CSRF_HEADER} header", code="csrf")
    return csrf


def _db() -> Any:
    return current_app.config["MCS_DB"]


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
    if SESSION_COOKIE not in request.cookies:
        return _secured(redirect("/ui/login"))  # type: ignore[arg-type]
    try:
        csrf = await _db().read(verify_session, session_credentials())
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
    store, now = throttle(), time.time()
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
        log.warning("console login refused", extra={"action": "console_login_refused", "client": client})
        raise Unauthorized("wrong admin token")
    store.succeeded(client)
    session_id = secrets.token_urlsafe(32)
    ttl = current_app.config["MCS_SETTINGS"].console_session_ttl
    await _db().write(
        console_store.create, id_hash=session_hash(session_id), csrf=secrets.token_urlsafe(32), now=now, ttl=ttl
    )
    metrics.console_logins.labels("ok").inc()
    log.info("console login", extra={"action": "console_login", "client": client})
    response = _secured(Response('{"ok": true}', content_type="application/json"))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(ttl),
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.scheme == "https",
    )
    return response


@bp.post("/logout")
@hide
async def logout() -> Response:
    creds = session_credentials()  # needs the CSRF token: another site cannot log the admin out

    def drop(conn: Connection) -> None:
        verify_session(conn, creds)
        console_store.drop(conn, id_hash=creds.session)

    await _db().write(drop)
    log.info("console logout", extra={"action": "console_logout"})
    response = _secured(Response("", status=204))
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="Strict")
    return response


@bp.get("/<name>")
@hide
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no console file {name!r}")
    text = (resources.files("mcs.api") / "console" / name).read_text(encoding="utf-8")
    response = _secured(Response(text, content_type=ASSETS[name]))
    response.headers["Cache-Control"] = "no-cache"
    return response
