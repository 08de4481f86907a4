"""Request bodies, validated by quart-schema (pydantic) and published in /openapi.json."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
# Words that mean something else where an agent name goes (routes, actors in the audit trail).
RESERVED_NAMES = frozenset({"admin", "any", "all", "mcs", "dispatcher", "watchdog", "notifier"})
Capability = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")]
TaskType = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")]
Route = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateAgent(Strict):
    name: Name
    capabilities: list[Capability] = Field(default_factory=list, max_length=100)

    @field_validator("name")
    @classmethod
    def not_reserved(cls, name: str) -> str:
        if name.lower() in RESERVED_NAMES:
            raise ValueError(f"{name!r} is reserved ({', '.join(sorted(RESERVED_NAMES))})")
        return name


class Register(Strict):
    capabilities: list[Capability] = Field(default_factory=list, max_length=100)
    notify_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=2000)] | None = None
    ttl: float | None = Field(default=None, gt=0, le=86400)
    concurrency: int = Field(default=1, ge=1, le=1000, strict=True)


class SubmitTask(Strict):
    type: TaskType
    payload: Any = None
    priority: Literal["urgent", "normal", "low"] = "normal"
    capabilities: list[Capability] | None = Field(default=None, max_length=100)
    route: Route = "any"
    max_retries: int | None = Field(default=None, ge=0, le=100, strict=True)
    claim_ttl: float | None = Field(default=None, gt=0, le=7 * 86400)
    aggregate: Literal["collect", "consensus"] | None = None


class ClaimNext(Strict):
    wait: float = Field(default=0, ge=0, le=30)


class Extend(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    ttl: float | None = Field(default=None, gt=0, le=7 * 86400)


class Complete(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    result: Any = None


class Fail(Strict):
    claim_token: str = Field(min_length=1, max_length=200)
    error: Any
    retryable: bool = Field(default=True, strict=True)


class Reject(Strict):
    claim_token: str | None = Field(default=None, min_length=1, max_length=200)
    reason: str = Field(default="", max_length=2000)


class TaskQuery(Strict):
    state: Literal["queued", "assigned", "claimed", "retrying", "waiting", "completed", "failed", "canceled"] | None = (
        None
    )
    type: str | None = None
    agent: str | None = None
    parent: str | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)


Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]
MemoryKey = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class MemoryPut(Strict):
    value: Any
    ttl: float | None = Field(default=None, gt=0, le=10 * 365 * 86400)
    tags: list[Tag] = Field(default_factory=list, max_length=32)


class BulkPut(MemoryPut):
    key: MemoryKey
    if_match: int | None = Field(default=None, ge=1, strict=True)
    if_none_match: Literal["*"] | None = None


class MemoryBulk(Strict):
    get: list[MemoryKey] = Field(default_factory=list, max_length=1000)
    put: list[BulkPut] = Field(default_factory=list, max_length=1000)
    delete: list[MemoryKey] = Field(default_factory=list, max_length=1000)


class MemoryQuery(Strict):
    prefix: str | None = Field(default=None, max_length=512)
    tag: str | None = Field(default=None, max_length=64)
    limit: int = Field(default=100, ge=1, le=1000)
    cursor: str | None = Field(default=None, max_length=1000)
