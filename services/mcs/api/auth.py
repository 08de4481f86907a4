"""Who is calling: agents by X-Agent-ID/X-Agent-Secret, the admin by bearer token or by a web console
session (cookie + X-CSRF-Token on every state-changing request; see mcs.api.console).

The admin token is checked from the request alone. An agent's secret is checked against its stored hash
inside the same database call that does the work (`authed`), so a request costs one trip to the database,
not two, and a secret rotated a moment ago is refused at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from quart import current_app, request

from mcs import auth
from mcs.api import console
from mcs.engines.sqlite.connection import Connection
from mcs.errors import Forbidden, Unauthorized
from mcs.models import ADMIN, Agent, Caller
from mcs.state import agents as agents_store

BAD_CREDENTIALS = "unknown agent or wrong secret"
ADMIN_ONLY = "this needs the admin token"
FACE_CREDENTIALS = (
    "send Authorization: Bearer <admin token>, Bearer NAME:SECRET for an agent, or X-Agent-ID and X-Agent-Secret"
)


@dataclass(frozen=True)
class Credentials:
    """What the request presented; an agent's and a console session's are not verified yet (a console
    session's `is_admin` is False here: `verify` makes it the admin once the session is found)."""

    is_admin: bool
    name: str = "admin"
    secret: str = ""
    session: str = ""  # a console session's id hash: checked against the database in verify()
    csrf: str | None = None  # the X-CSRF-Token a state-changing console request sent (None: a read)


def credentials() -> Credentials:
    """The request's credentials, or 401 when there are none or the admin token is wrong."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        if auth.token_matches(header[7:].strip(), current_app.config["MCS_SETTINGS"].admin_token):
            return Credentials(is_admin=True)
        raise Unauthorized("invalid admin token")
    name = request.headers.get("X-Agent-ID")
    secret = request.headers.get("X-Agent-Secret")
    if not name and not secret and console.SESSION_COOKIE in request.cookies:
        session: Credentials = console.session_credentials()
        return session
    if not name or not secret:
        raise Unauthorized("send X-Agent-ID and X-Agent-Secret, or Authorization: Bearer <admin token>")
    return Credentials(is_admin=False, name=name, secret=secret)


def face_credentials(headers: Mapping[str, str], admin_token: str | None) -> Credentials:
    """Who a request to a protocol face (/mcp, /a2a) says it is, from its lower-cased headers:
    `Authorization: Bearer <admin token>`, `Bearer NAME:SECRET` for an agent (agent names never hold a
    colon; MCP and A2A clients can send only a bearer token), or X-Agent-ID + X-Agent-Secret. 401 when none
    is given or the bearer token is neither; an agent's secret is checked against the database by `verify`."""
    header = headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        token = header[7:].strip()
        if auth.token_matches(token, admin_token):
            return Credentials(is_admin=True)
        name, sep, secret = token.partition(":")
        if sep and name and secret:
            return Credentials(is_admin=False, name=name, secret=secret)
        raise Unauthorized("invalid bearer token: send the admin token, or NAME:SECRET for an agent")
    agent, agent_secret = headers.get("x-agent-id"), headers.get("x-agent-secret")
    if not agent or not agent_secret:
        raise Unauthorized(FACE_CREDENTIALS)
    return Credentials(is_admin=False, name=agent, secret=agent_secret)


def verify(conn: Connection, creds: Credentials) -> tuple[Caller, Agent | None]:
    """The caller behind the credentials. Unknown agent and wrong secret answer the same, in the same time."""
    if creds.session:
        console.verify_session(conn, creds)  # 401 unknown or expired, 403 without the session's CSRF token
        return Caller(name=creds.name, is_admin=True), None
    if creds.is_admin:
        return (ADMIN if creds.name == ADMIN.name else Caller(name=creds.name, is_admin=True)), None
    agent, stored = agents_store.with_secret_hash(conn, creds.name)
    if not auth.secret_matches(creds.secret, stored) or agent is None:
        raise Unauthorized(BAD_CREDENTIALS)
    return Caller(name=agent.name), agent


def authed(
    fn: Callable[..., Any], *, need: Literal["any", "agent", "admin"], pass_as: str | None = None
) -> Callable[..., Any]:
    """Wrap a store function so it verifies the caller first, in the same transaction.

    `need="agent"` refuses the admin token (403); `need="admin"` refuses a verified agent (403), so a
    wrong agent secret is a 401 there as everywhere; `pass_as` names the keyword the caller is handed on as:
    "agent" (the Agent), "caller" (the Caller) or None (not passed)."""

    def run(conn: Connection, creds: Credentials, **kwargs: Any) -> Any:
        caller, agent = verify(conn, creds)
        if need == "agent" and agent is None:
            raise Forbidden("this is for agents: send X-Agent-ID and X-Agent-Secret", code="agent_only")
        if need == "admin" and agent is not None:
            raise Forbidden(ADMIN_ONLY, code="admin_only")
        if pass_as == "agent":
            kwargs["agent"] = agent
        elif pass_as == "caller":
            kwargs["caller"] = caller
        return fn(conn, **kwargs)

    return run


def require_admin() -> Caller:
    """The admin, from the request alone. An agent's credentials get 403 here without their secret being
    checked; where a wrong secret must be a 401 (any route in /openapi.json), use `authed(need="admin")`."""
    if not credentials().is_admin:
        raise Forbidden(ADMIN_ONLY, code="admin_only")
    return ADMIN
