"""Settings: the only place environment variables are read.

Every value is cast and defaulted here; everything below takes keyword arguments. Durations are seconds
(fractions allowed) so tests can run a whole retry ladder in well under a second.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mcs import egress
from mcs.errors import ConfigError

DAY = 86400.0  # seconds


def _env(env: Mapping[str, str], name: str, cast: Callable[[str], Any], default: Any) -> Any:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError as exc:
        shown = "..." if name == "MCS_DATABASE_URL" else repr(raw)  # a URL may carry a password
        raise ConfigError(f"{name}={shown} is not a valid {cast.__name__}") from exc


def _positive(cast: Callable[[str], float]) -> Callable[[str], float]:
    def check(raw: str) -> float:
        value = cast(raw)
        if value < 0:
            raise ValueError(raw)
        return value

    check.__name__ = f"non-negative {cast.__name__}"
    return check


def _synchronous(raw: str) -> str:
    value = raw.upper()
    if value not in {"FULL", "NORMAL"}:
        raise ValueError(raw)
    return value


_synchronous.__name__ = "choice of FULL or NORMAL"


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError(raw)


_bool.__name__ = "boolean (true/false, 1/0, yes/no, on/off)"


def _http_url(raw: str) -> str:
    value = raw.strip()
    if not value.lower().startswith(("http://", "https://")) or not value.split("://", 1)[1]:
        raise ValueError(raw)
    return value


_http_url.__name__ = "http:// or https:// URL"


def _alert_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in {"json", "text"}:
        raise ValueError(raw)
    return value


_alert_format.__name__ = "choice of json or text"


KEEP_ALIVE_MAX = 75.0  # seconds an idle api connection stays open at most


def _allow_list(raw: str) -> tuple[egress.Rule, ...]:
    try:
        return egress.parse_rules(raw)
    except ValueError as exc:
        raise ConfigError(f"MCS_NOTIFY_ALLOW: {exc}") from None


def _deny_list(raw: str) -> tuple[egress.Rule, ...]:
    try:
        return egress.parse_rules(raw)
    except ValueError as exc:
        raise ConfigError(f"MCS_EGRESS_DENY: {exc}") from None


def _database_url(raw: str) -> str:
    if raw.strip().split("://", 1)[0] not in {"postgresql", "postgres"}:
        raise ValueError("****")  # never echo the URL: it may carry a password
    return raw.strip()


_database_url.__name__ = "postgresql:// URL"


@dataclass(frozen=True, kw_only=True)
class Settings:
    db: Path = Path("data/mcs.db")
    host: str = "127.0.0.1"
    port: int = 8080
    admin_token: str | None = None
    synchronous: str = "FULL"
    write_lock_timeout: float = 5.0  # seconds a write waits for the database's write lock, then 503
    claim_ttl: float = 300.0  # seconds
    agent_ttl: float = 300.0  # seconds
    watchdog_interval: float = 30.0  # seconds
    retry_base: float = 10.0  # seconds
    retry_max: float = 600.0  # seconds
    max_retries: int = 3
    webhook_timeout: float = 10.0  # seconds
    webhook_attempts: int = 6
    webhook_retry_base: float = 1.0  # seconds
    webhook_retry_max: float = 60.0  # seconds
    idempotency_ttl: float = 86400.0  # seconds
    console_session_ttl: float = 28800.0  # seconds a web console login lasts
    retention_days: float = 30.0  # finished tasks and their events older than this are pruned; 0 keeps all
    max_body_bytes: int = 1024 * 1024
    memory_max_value_bytes: int = 256 * 1024
    telegram_bot_token: str | None = field(default=None, repr=False)
    telegram_chat_id: str | None = None
    telegram_api: str = "https://api.telegram.org"
    alert_webhook_url: str | None = None
    alert_webhook_format: str = "json"  # "text" for ntfy, Gotify and other push services
    alert_agent_offline: bool = True
    dispatcher_metrics_port: int = 9101
    watchdog_metrics_port: int = 9102
    notifier_metrics_port: int = 9103
    metrics_host: str | None = None  # defaults to host
    # Per-caller limits (0 disables each); the admin is exempt. See mcs.quotas.
    rate_submits: float = 20.0  # task submissions per second per agent, sustained
    rate_submits_burst: int = 60  # submissions an agent may make at once before the rate applies
    quota_queued_tasks: int = 1000  # unfinished tasks one agent may have submitted (a fanout counts once)
    quota_memory_bytes: int = 64 * 1024 * 1024  # key and value bytes one memory namespace may hold
    disk_min_free_bytes: int = 16 * 1024 * 1024  # /healthz reports disk_full below this much free space
    api_backlog: int = 2048  # connections the kernel queues for the api (capped by net.core.somaxconn)
    api_read_timeout: float = 90.0  # seconds: a connection that sends nothing for this long is closed
    events_buffer: int = 1000  # events queued for one GET /v1/events client before it is dropped as too slow
    container: bool | None = None  # whether MCS runs in a container (None: detect); /healthz tells agents
    # Where notify URLs may point (egress.NOTIFY_DEFAULT when None); what is refused always stays refused.
    notify_allow: tuple[egress.Rule, ...] | None = None
    # Refused always for every outbound request, on top of the built-in list (compose names its services).
    egress_deny: tuple[egress.Rule, ...] = ()
    review_timeout: float = 300.0  # seconds of wall time one analyzer may take over one review (0: no limit)
    review_cpu: float = 300.0  # seconds of CPU time one analyzer may use over one review (0: no limit)
    review_memory_bytes: int = 4 * 1024**3  # address space one analyzer may map (0: no limit)
    # PostgreSQL instead of the SQLite file at `db` (issue 16): postgresql://user:password@host:port/name
    database_url: str | None = field(default=None, repr=False)
    pg_pool_size: int = 8  # connections one process keeps to PostgreSQL
    outbox_lease: float = 30.0  # seconds a notifier holds the webhooks it took before another may send them
    instance: str | None = None  # this replica's name in heartbeats (None: host name and pid)

    @property
    def data_dir(self) -> Path:
        return self.db.parent

    @property
    def api_keep_alive(self) -> float:
        """Seconds an idle connection (or one still sending its headers) stays open, and the longest a
        long poll waits: a third of the read timeout each, so a connection is always closed by the
        keep-alive timer before the read timeout stops reading from it (Hypercorn then stops reading
        but closes the socket only when the keep-alive timer fires; a request sent meanwhile hangs)."""
        return min(KEEP_ALIVE_MAX, self.api_read_timeout / 3) if self.api_read_timeout else KEEP_ALIVE_MAX

    @property
    def events_stream_max(self) -> float | None:
        """Seconds one GET /v1/events response lasts before the server ends it (the client resumes with
        Last-Event-ID): Hypercorn's read timeout counts from the request even while the response streams,
        so a stream is ended well before that timer would cut it mid-event. None: no read timeout."""
        return self.api_read_timeout * 2 / 3 if self.api_read_timeout else None

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def retention(self) -> float:
        """MCS_RETENTION_DAYS in seconds (0: keep everything)."""
        return self.retention_days * DAY

    @property
    def bind_metrics_host(self) -> str:
        return self.metrics_host or self.host

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Build settings from `MCS_*` variables (os.environ by default)."""
        e = os.environ if env is None else env
        num = _positive(float)
        whole = _positive(int)
        settings = cls(
            db=Path(_env(e, "MCS_DB", str, "data/mcs.db")),
            host=_env(e, "MCS_HOST", str, "127.0.0.1"),
            port=int(_env(e, "MCS_PORT", whole, 8080)),
            admin_token=_env(e, "MCS_ADMIN_TOKEN", str, None) or None,
            synchronous=_env(e, "MCS_SYNCHRONOUS", _synchronous, "FULL"),
            write_lock_timeout=_env(e, "MCS_WRITE_LOCK_TIMEOUT", num, 5.0),
            claim_ttl=_env(e, "MCS_CLAIM_TTL", num, 300.0),
            agent_ttl=_env(e, "MCS_AGENT_TTL", num, 300.0),
            watchdog_interval=_env(e, "MCS_WATCHDOG_INTERVAL", num, 30.0),
            retry_base=_env(e, "MCS_RETRY_BASE", num, 10.0),
            retry_max=_env(e, "MCS_RETRY_MAX", num, 600.0),
            max_retries=int(_env(e, "MCS_MAX_RETRIES", whole, 3)),
            webhook_timeout=_env(e, "MCS_WEBHOOK_TIMEOUT", num, 10.0),
            webhook_attempts=max(1, int(_env(e, "MCS_WEBHOOK_ATTEMPTS", whole, 6))),
            webhook_retry_base=_env(e, "MCS_WEBHOOK_RETRY_BASE", num, 1.0),
            webhook_retry_max=_env(e, "MCS_WEBHOOK_RETRY_MAX", num, 60.0),
            idempotency_ttl=_env(e, "MCS_IDEMPOTENCY_TTL", num, 86400.0),
            console_session_ttl=_env(e, "MCS_CONSOLE_SESSION_TTL", num, 28800.0),
            retention_days=_env(e, "MCS_RETENTION_DAYS", num, 30.0),
            max_body_bytes=int(_env(e, "MCS_MAX_BODY_BYTES", whole, 1024 * 1024)),
            memory_max_value_bytes=int(_env(e, "MCS_MEMORY_MAX_VALUE_BYTES", whole, 256 * 1024)),
            telegram_bot_token=_env(e, "MCS_TELEGRAM_BOT_TOKEN", str.strip, None) or None,
            telegram_chat_id=_env(e, "MCS_TELEGRAM_CHAT_ID", str.strip, None) or None,
            telegram_api=_env(e, "MCS_TELEGRAM_API", _http_url, "https://api.telegram.org"),
            alert_webhook_url=_env(e, "MCS_ALERT_WEBHOOK_URL", _http_url, None) or None,
            alert_webhook_format=_env(e, "MCS_ALERT_WEBHOOK_FORMAT", _alert_format, "json"),
            alert_agent_offline=_env(e, "MCS_ALERT_AGENT_OFFLINE", _bool, True),
            dispatcher_metrics_port=int(_env(e, "MCS_DISPATCHER_METRICS_PORT", whole, 9101)),
            watchdog_metrics_port=int(_env(e, "MCS_WATCHDOG_METRICS_PORT", whole, 9102)),
            notifier_metrics_port=int(_env(e, "MCS_NOTIFIER_METRICS_PORT", whole, 9103)),
            metrics_host=_env(e, "MCS_METRICS_HOST", str, None) or None,
            rate_submits=_env(e, "MCS_RATE_SUBMITS", num, cls.rate_submits),
            rate_submits_burst=int(_env(e, "MCS_RATE_SUBMITS_BURST", whole, cls.rate_submits_burst)),
            quota_queued_tasks=int(_env(e, "MCS_QUOTA_QUEUED_TASKS", whole, cls.quota_queued_tasks)),
            quota_memory_bytes=int(_env(e, "MCS_QUOTA_MEMORY_BYTES", whole, cls.quota_memory_bytes)),
            disk_min_free_bytes=int(_env(e, "MCS_DISK_MIN_FREE_BYTES", whole, cls.disk_min_free_bytes)),
            api_backlog=int(_env(e, "MCS_API_BACKLOG", whole, cls.api_backlog)),
            api_read_timeout=_env(e, "MCS_API_READ_TIMEOUT", num, cls.api_read_timeout),
            events_buffer=int(_env(e, "MCS_EVENTS_BUFFER", whole, cls.events_buffer)),
            container=_env(e, "MCS_CONTAINER", _bool, None),
            notify_allow=_env(e, "MCS_NOTIFY_ALLOW", _allow_list, None),
            egress_deny=_env(e, "MCS_EGRESS_DENY", _deny_list, ()),
            review_timeout=_env(e, "MCS_REVIEW_TIMEOUT", num, 300.0),
            review_cpu=_env(e, "MCS_REVIEW_CPU", num, 300.0),
            review_memory_bytes=int(_env(e, "MCS_REVIEW_MEMORY_BYTES", whole, 4 * 1024**3)),
            database_url=_env(e, "MCS_DATABASE_URL", _database_url, None) or None,
            pg_pool_size=max(1, int(_env(e, "MCS_PG_POOL_SIZE", whole, cls.pg_pool_size))),
            outbox_lease=_env(e, "MCS_OUTBOX_LEASE", num, cls.outbox_lease),
            instance=_env(e, "MCS_INSTANCE", str.strip, None) or None,
        )
        settings = replace(settings, **overrides) if overrides else settings
        if bool(settings.telegram_bot_token) != bool(settings.telegram_chat_id):
            given, missing = (
                ("MCS_TELEGRAM_BOT_TOKEN", "MCS_TELEGRAM_CHAT_ID")
                if settings.telegram_bot_token
                else ("MCS_TELEGRAM_CHAT_ID", "MCS_TELEGRAM_BOT_TOKEN")
            )
            raise ConfigError(f"{given} is set but {missing} is not: Telegram alerts need both")
        alerts = egress.alert_policy(settings)  # an address refused always fails here, not at the first alert
        # Not the default Telegram API: a host name, which only a lookup decides on (at send time), so the
        # check would say nothing and only load httpx, for its URL parser, into every process.
        telegram = settings.telegram_api if settings.telegram_api != cls.telegram_api else None
        urls = {"MCS_ALERT_WEBHOOK_URL": settings.alert_webhook_url, "MCS_TELEGRAM_API": telegram}
        for name, url in urls.items():
            why = egress.literal_refusal(alerts, url) if url else None
            if why:
                raise ConfigError(f"{name}: {why}")
        return settings

    @property
    def alert_channels(self) -> list[str]:
        """The channels alerts go to: "telegram" and/or "webhook"."""
        channels = ["telegram"] if self.telegram_bot_token and self.telegram_chat_id else []
        return channels + (["webhook"] if self.alert_webhook_url else [])

    def with_admin_token_file(self) -> Settings:
        """Fill `admin_token` from the data folder's token file when the environment gave none."""
        if self.admin_token or not self.admin_token_file.exists():
            return self
        token = self.admin_token_file.read_text().strip()
        return replace(self, admin_token=token or None)


SETTING_NAMES = [f.name for f in fields(Settings)]
