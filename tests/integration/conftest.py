"""The api app on a real SQLite file, driven through Quart's test client, with the dispatcher and watchdog
run one pass at a time on their own connections to the same file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from mcs.api import create_app
from mcs.config import Settings
from mcs.dispatcher import Dispatcher
from mcs.engines.sqlite.engine import Store
from mcs.watchdog import Watchdog

ADMIN_TOKEN = "test-admin-token"


@dataclass
class Mesh:
    client: Any
    settings: Settings
    dispatcher: Dispatcher
    watchdog: Watchdog
    store: Store

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
def settings(tmp_path: Any) -> Settings:
    return Settings.from_env(
        {},
        db=tmp_path / "mcs.db",
        admin_token=ADMIN_TOKEN,
        retry_base=0.05,
        retry_max=1.0,
        synchronous="NORMAL",
    )


@pytest.fixture
async def mesh(settings: Settings) -> AsyncIterator[Mesh]:
    store = Store(settings.db, synchronous=settings.synchronous)
    store.migrate()
    worker_store = Store(settings.db, synchronous=settings.synchronous)
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
