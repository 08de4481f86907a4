"""A2aTx: the a2a area of one transaction's data access (see mcs.engines.base)."""

from __future__ import annotations

from typing import Any, Protocol

from mcs.models import Agent, Origin, PushConfig, Task


class A2aTx(Protocol):
    """The A2A face's rows (`a2a_tasks`, `a2a_push_configs`) and its reads (docs/design/engines.md, 2.3)."""

    def a2a_origin_insert(self, task_id: str, *, context_id: str, message: Any, now: float) -> None:
        """Where a task came from: its A2A context and the client's message (stored as JSON)."""
        ...

    def a2a_origin_get(self, task_id: str) -> Origin | None:
        """A task's origin, or None for a task the A2A face did not create."""
        ...

    def push_upsert(self, config: PushConfig, now: float) -> None:
        """Create or replace the push config (task_id, id)."""
        ...

    def push_get(self, task_id: str, config_id: str) -> PushConfig | None:
        """One push config of a task, or None."""
        ...

    def push_list(self, task_id: str) -> list[PushConfig]:
        """A task's push configs, oldest first."""
        ...

    def push_delete(self, task_id: str, config_id: str) -> bool:
        """The push config gone; False when there was none."""
        ...

    def a2a_online_agents(self, now: float) -> list[Agent]:
        """Agents online and unexpired at `now`, by name (the agent card's skills)."""
        ...

    def a2a_tasks_count(self, *, states: list[tuple[str, bool | None]], context_id: str | None) -> int:
        """How many tasks match: any of `states` (each with approval True/False or either) and the context."""
        ...

    def a2a_tasks_page(
        self, *, states: list[tuple[str, bool | None]], context_id: str | None, before_seq: int | None, limit: int
    ) -> list[Task]:
        """Matching tasks newest first, before a seq or from the newest."""
        ...
