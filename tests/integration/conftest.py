"""The api app on a real SQLite file (or, with `--engine postgres`, a real PostgreSQL database of the
test's own), driven through Quart's test client, with the dispatcher and watchdog run one pass at a time on
their own connections to the same database.

Every store a test opens comes from `open_store` (one fixture, both engines); raw SQL goes through
`db.sql` (tests/engine.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcs.api import create_app
from mcs.config import Settings
from mcs.dispatcher import Dispatcher
from mcs.engines import open_engine
from mcs.engines.sqlite.engine import Store
from mcs.watchdog import Watchdog
from tests.engine import Db

ADMIN_TOKEN = "test-admin-token"


@dataclass
class Mesh:
    client: Any
    settings: Settings
    dispatcher: Dispatcher
    watchdog: Watchdog
    store: Store

    @property
    def db(self) -> Db:
        """Raw SQL on the mesh's database, either engine."""
        return Db(self.store)

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def call(self, method: str, path: str, *, who: Any = None, json: Any = None, **kw: Any) -> Any:
        headers = dict(kw.pop("headers", {}))
        headers.update(self.admin if who == "admin" else (who or {}))
        headers.pop("_whsec", None)
        if json is not None:
            kw["json"] = json
        return await self.client.open(path, method=method, headers=headers, **kw)

    async def ok(self, method: str, path: str, *, who: Any = None, json: Any = None, status: int = 200) -> Any:
        response = await self.call(method, path, who=who, json=json)
        body = await response.get_json()
        assert response.status_code == status, body
        return body

    async def agent(
        self,
        name: str,
        caps: list[str],
        *,
        notify_url: str | None = "http://127.0.0.1:9/hook",
        ttl: float | None = None,
        concurrency: int | None = None,
    ) -> dict[str, str]:
        """Create and register an agent; returns its auth headers (plus its webhook secret under `_whsec`)."""
        created = await self.ok(
            "POST", "/v1/agents", who="admin", json={"name": name, "capabilities": caps}, status=201
        )
        headers = {"X-Agent-ID": name, "X-Agent-Secret": created["secret"]}
        body: dict[str, Any] = {"capabilities": caps, "notify_url": notify_url}
        if ttl is not None:
            body["ttl"] = ttl
        if concurrency is not None:
            body["concurrency"] = concurrency
        await self.ok("POST", "/v1/agents/register", who=headers, json=body)
        self.last_agent = headers
        return headers | {"_whsec": created["webhook_secret"]}

    async def submit(self, who: Any = "admin", **body: Any) -> dict[str, Any]:
        result: dict[str, Any] = await self.ok("POST", "/v1/tasks", who=who, json=body, status=201)
        return result

    async def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.ok("GET", f"/v1/tasks/{task_id}", who="admin")
        return result

    async def kinds(self, task_id: str) -> list[str]:
        body = await self.ok("GET", f"/v1/tasks/{task_id}/events", who="admin")
        return [e["kind"] for e in body["events"]]

    def dispatch(self) -> Any:
        return self.dispatcher.run_once()

    def sweep(self) -> Any:
        return self.watchdog.run_once()


@pytest.fixture
def settings(tmp_path: Any, database_url: str | None) -> Settings:
    return Settings.from_env(
        {},
        db=tmp_path / "mcs.db",
        admin_token=ADMIN_TOKEN,
        retry_base=0.05,
        retry_max=1.0,
        synchronous="NORMAL",
        database_url=database_url,
    )


@pytest.fixture
def open_store(
    settings: Settings, database_urls: Callable[[str], str | None], database_url: str | None
) -> Iterator[Callable[..., Any]]:
    """Open a store on either engine: `open_store()` is the test's database (settings.db, or its
    PostgreSQL database), `open_store(path)` another one (on PostgreSQL: one database per path, already
    migrated). Keyword arguments go to SQLite's Store (synchronous, write_lock_timeout). Every store opened
    is closed at the end (closing one earlier is fine)."""
    opened: list[Any] = []

    def open_(path: Path | None = None, **kw: Any) -> Any:
        if database_url is None:
            store: Any = Store(path or settings.db, **kw)
        else:
            url = database_url if path is None or Path(path) == settings.db else database_urls(str(path))
            timeout = kw.get("write_lock_timeout", settings.write_lock_timeout)
            store = open_engine(dataclasses.replace(settings, database_url=url, write_lock_timeout=timeout))
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def db(mesh: Mesh) -> Db:
    """Raw SQL on the mesh's database (`db.sql(query, params)`, `?` placeholders), either engine."""
    return mesh.db


@pytest.fixture
async def mesh(settings: Settings) -> AsyncIterator[Mesh]:
    store: Any = open_engine(settings, process="api")
    store.migrate()
    worker_store: Any = open_engine(settings, process="worker")
    app = create_app(settings, store)
    async with app.test_app() as test_app:
        yield Mesh(
            client=test_app.test_client(),
            settings=settings,
            dispatcher=Dispatcher(worker_store),
            watchdog=Watchdog(worker_store, interval=1, retry_base=settings.retry_base, retry_max=settings.retry_max),
            store=worker_store,
        )
    worker_store.close()
    store.close()
