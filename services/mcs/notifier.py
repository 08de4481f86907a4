"""The notifier: delivers outbox rows. Signed webhooks to agents (Standard Webhooks, the agent's own key)
and alerts to people. Retries with exponential backoff on timeouts, connection errors, 429 and 5xx, with the
same webhook-id every time; gives up after a bounded number of attempts and records that in the task's
events. It never changes task state.

Each delivery runs as its own asyncio task with a cap per agent, so a slow or dead agent never delays
deliveries to the others. Outcomes are written in small batches by one writer thread.

Any number of notifiers may run on one database: each leases the rows it takes (MCS_OUTBOX_LEASE), renews
the leases while it sends, and records outcomes only for rows it still holds (mcs.state.outbox).

On SQLite it learns of new rows from PRAGMA data_version and an inotify watch (mcs.wake); on PostgreSQL
from the engine's LISTEN feed (Topic.OUTBOX: notified by every transaction that wrote an outbox row, and
by the A2A push trigger, migration 0021)."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import signal
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential

from mcs import egress, metrics, webhooks
from mcs.alerts import Alert
from mcs.config import Settings
from mcs.engines import open_engine
from mcs.engines.base import ChangeFeed, Topic
from mcs.errors import DatabaseReplaced
from mcs.models import ADMIN, OutboxItem
from mcs.process import Heartbeat, StatusServer, setup_logging
from mcs.state import a2a as a2a_store
from mcs.state import agents as agents_store
from mcs.state import outbox as outbox_state
from mcs.state import tasks as tasks_state
from mcs.store import AsyncStore, Store, data_version
from mcs.wake import CommitWatcher

if TYPE_CHECKING:
    from mcs.engines.postgres.asyncio import AsyncPostgres
    from mcs.engines.postgres.engine import PostgresEngine

log = logging.getLogger("mcs.notifier")

IDLE_PASS_INTERVAL = 1.0  # seconds: look at the outbox at least this often
FETCH_LIMIT = 500  # outbox rows read per pass
PER_AGENT_IN_FLIGHT = 8  # deliveries at once to one agent
IN_FLIGHT = 256  # deliveries at once in all
NOTIFY_KINDS = ("webhook", "a2a_push")  # outbox kinds sent to a URL an agent or A2A client named
LEASE_RENEW_EVERY = 10.0  # seconds between renewals of the leases on rows under way (a third of a shorter lease)
RETRY_AFTER_MAX = 3600.0  # seconds: the longest wait a receiver's Retry-After (or Telegram) can ask for


# What a task's events say about a webhook that was not delivered. Any agent can read any task's events,
# and an agent chooses its notify_url: "HTTP 404" against "connection refused" would let it map the
# network behind MCS, port by port. The reason goes to the outbox row and the notifier's log instead.
UNDELIVERED = "not delivered; the reason is in the notifier's log (not shown here: notify URLs must not probe networks)"


class DeliveryFailed(Exception):
    """One attempt failed; `retryable` says whether another attempt could succeed, and `retry_after` how
    long the receiver asked us to wait first (a 429's Retry-After, Telegram's `retry_after`). `public` is
    what a task's events may say about it (UNDELIVERED unless set)."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, public: str | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.public = public
        self.attempts = 0  # the attempt number it ended on, once the retry loop gives up


class Superseded(DeliveryFailed):
    """A retried webhook carries a claim (claim_on_push) that its agent no longer holds: the task was
    completed, failed, canceled or claimed again since. Not sent: it would only start the work again."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def _claim_token(body: str) -> str | None:
    """The claim_token a task.assigned webhook carries (claim_on_push), or None."""
    try:
        token = json.loads(body)["data"]["task"].get("claim_token")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return token if isinstance(token, str) else None


def _refused(exc: egress.EgressRefused) -> DeliveryFailed:
    """An egress refusal: final (the same URL is refused the next time too), and its reason may be shown,
    since it depends only on the URL's host and port, never on what answers there."""
    why = f"refused by the egress policy: {exc}"
    return DeliveryFailed(why, retryable=False, public=why)


def _wait_asked(value: Any) -> float | None:
    """A wait a receiver asked for, in seconds: finite, not negative, and at most RETRY_AFTER_MAX (a
    receiver must not be able to park a delivery forever with `Retry-After: inf`)."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    if math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, RETRY_AFTER_MAX)  # "inf" too: a long wait, never a delivery parked for good


def _retry_after(response: httpx.Response) -> float | None:
    """The Retry-After header in seconds, when it is given as a number (the HTTP-date form is ignored)."""
    return _wait_asked(response.headers.get("retry-after"))


def _redact_token(text: str, token: str | None) -> str:
    """Cut the bot token out of `text`: as given, and as any `/bot<token>/` URL path (also percent-encoded)."""
    if token:
        text = text.replace(token, "<telegram-bot-token>")
    return _BOT_PATH.sub("/bot<telegram-bot-token>/", text)


_BOT_PATH = re.compile(r"/bot\d+(?::|%3[Aa])[^/\s\"']+/")  # Telegram tokens look like 123456:AAF...


class _RedactToken(logging.Filter):
    """httpx logs each request's URL at INFO, and Telegram's URL holds the bot token: cut it out of any
    record on that logger, whatever level someone turns httpx's logging up to."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _redact_token(message, self.token)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryFailed) and exc.retryable


class Notifier:
    def __init__(
        self,
        store: Store | PostgresEngine,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.transport = transport
        # (Heartbeat duck-types either engine; its annotation names SQLite's Store until process.py says both.)
        self.heartbeat = Heartbeat(cast(Store, store), "notifier", instance=settings.instance)
        self.owner = self.heartbeat.instance  # the lease owner of the outbox rows this replica takes
        self.lease = settings.outbox_lease
        self.renew_every = min(LEASE_RENEW_EVERY, self.lease / 3)
        self.renewed = time.monotonic()
        self.in_flight: dict[int, str] = {}  # outbox id -> agent (or "alert")
        self.deliveries: set[asyncio.Task[None]] = set()  # kept until done; canceled if still running at stop
        self.per_agent: dict[str, int] = defaultdict(int)
        self.outcomes: list[dict[str, Any]] = []
        self.last_pass = time.monotonic()
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self.feed: ChangeFeed | None = None  # PostgreSQL's LISTEN feed (SQLite: the CommitWatcher, in run)
        channels = {"telegram": "telegram", "webhook": "alert_webhook"}
        metrics.init_delivery_series(["webhook", "a2a_push", *(channels[c] for c in settings.alert_channels)])
        self._telegram_paused_until = 0.0  # monotonic time: Telegram asked us to wait until then
        self._log_filter = _RedactToken(settings.telegram_bot_token) if settings.telegram_bot_token else None
        self.notify_policy = egress.notify_policy(settings)
        self.alert_policy = egress.alert_policy(settings)

    def stop(self) -> None:
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    def _on_change(self) -> None:
        assert self.watcher is not None
        self.watcher.drain()  # the fd is level-triggered: read it, or the loop calls us again at once
        self._changed.set()

    def alive(self) -> bool:
        return time.monotonic() - self.last_pass < 30

    # ------------------------------------------------------------ delivery

    async def _send_webhook(self, client: httpx.AsyncClient, item: OutboxItem, attempt: int) -> None:
        if attempt == item.attempts + 1 and item.agent_exists:
            target: tuple[str | None, str] | None = (item.notify_url, item.webhook_secret or "")
        else:  # a retry: the agent may have moved or rotated its key meanwhile
            target = await self.db.read(agents_store.webhook_target, item.agent)
        # The claim is minted once, at assignment: a retry (after a restart too: attempts are stored) whose
        # claim is gone would only start the work again.
        token = _claim_token(item.body) if attempt > 1 else None
        if token is not None and item.task_id:
            held = await self.db.read(tasks_state.holds_claim, task_id=item.task_id, agent=item.agent, token=token)
            if not held:
                metrics.webhooks_superseded.inc()
                raise Superseded(f"task {item.task_id} is no longer held with the claim this webhook carries")
        if target is None:
            raise DeliveryFailed(f"agent {item.agent} no longer exists", retryable=False)
        url, secret = target
        if not url:
            raise DeliveryFailed(f"agent {item.agent} has no notify_url", retryable=False)
        ts = int(time.time())
        headers = webhooks.headers(secret=secret, message_id=item.message_id, timestamp=ts, body=item.body)
        headers["webhook-attempt"] = str(attempt)
        await self._post(client, url, item.body, headers, kind="webhook")

    async def _send_push(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        """An A2A push notification (mcs.a2a.push): rendered from the task as it is now, signed with the
        key of whoever set the config, to the config's URL through the notify egress policy. Imported here:
        the a2a SDK and protobuf cost the notifier about 4 MiB, paid only once an A2A client sets a push config."""
        from mcs.a2a import push  # noqa: PLC0415

        change = push.Change.from_body(item.body)
        found = await self.db.read(a2a_store.push_target, task_id=item.task_id or "", config_id=change.config_id)
        if found is None:
            raise DeliveryFailed("the push config or its task no longer exists", retryable=False)
        config, task, origin = found
        if not push.worth_sending(change, task.type):
            return
        secret = None  # the admin's pushes are not signed (mcs.a2a.push: the admin token never leaves MCS)
        if config.owner != ADMIN.name:
            secret = await self.db.read(a2a_store.signing_key, config.owner) or None
            if secret is None:
                raise DeliveryFailed(f"no key to sign for {config.owner} (the agent was deleted)", retryable=False)
        body = push.render(change, task, origin)
        headers = push.headers(config, secret=secret, message_id=item.message_id, timestamp=int(time.time()), body=body)
        await self._post(client, config.url, body, headers, kind="a2a_push")

    async def _send_alert_webhook(self, client: httpx.AsyncClient, item: OutboxItem, alert: Alert) -> None:
        url = self.settings.alert_webhook_url or ""
        headers = {"user-agent": "mcs-notifier", "webhook-id": item.message_id, "title": alert.title}
        if self.settings.alert_webhook_format == "text":  # ntfy and friends show the body as the message
            body = alert.text()
            headers["content-type"] = "text/plain; charset=utf-8"
        else:
            body = json.dumps(alert.webhook_json(item.body))
            headers["content-type"] = "application/json"
        await self._post(client, url, body, headers, kind="alert_webhook")

    async def _send_telegram(self, client: httpx.AsyncClient, alert: Alert) -> None:
        """Bot API sendMessage in HTML mode. The bot token is part of the URL, so no error, log line or
        metric may carry the URL or an exception text unredacted."""
        settings = self.settings
        # Telegram's flood limit is per bot and chat: after a 429 every message waits, not just that one.
        pause = self._telegram_paused_until - time.monotonic()
        if pause > 0:
            await asyncio.sleep(pause)
        url = f"{settings.telegram_api.rstrip('/')}/bot{settings.telegram_bot_token}/sendMessage"
        message = {
            "chat_id": settings.telegram_chat_id,
            "text": alert.telegram_html(),
            "parse_mode": "HTML",
            "disable_web_page_preview": True,
        }
        started = time.perf_counter()
        try:
            response = await client.post(url, json=message, headers={"user-agent": "mcs-notifier"})
        except egress.EgressRefused as exc:
            metrics.webhook_deliveries.labels("telegram", "egress_refused").inc()
            raise _refused(exc) from None
        except httpx.TimeoutException:
            metrics.webhook_deliveries.labels("telegram", "timeout").inc()
            raise DeliveryFailed("Telegram timed out", retryable=True) from None
        except httpx.TransportError as exc:
            metrics.webhook_deliveries.labels("telegram", "connection_error").inc()
            why = self._redact(f"cannot reach Telegram: {type(exc).__name__}: {exc}")
            raise DeliveryFailed(why, retryable=True) from None
        except Exception as exc:  # e.g. a malformed MCS_TELEGRAM_API: no traceback, which would show the URL
            metrics.webhook_deliveries.labels("telegram", "refused").inc()
            why = self._redact(f"cannot send to Telegram: {type(exc).__name__}: {exc}")
            raise DeliveryFailed(why, retryable=False) from None
        finally:
            metrics.webhook_duration.labels("telegram").observe(time.perf_counter() - started)
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        answer = answer if isinstance(answer, dict) else {}
        status = response.status_code
        if 200 <= status < 300 and answer.get("ok", True):
            metrics.webhook_deliveries.labels("telegram", "delivered").inc()
            return
        description = self._redact(str(answer.get("description") or f"HTTP {status}"))[:200]
        if status == 429:
            params = answer.get("parameters")
            retry_after = _wait_asked(params.get("retry_after")) if isinstance(params, dict) else None
            retry_after = retry_after if retry_after is not None else _retry_after(response)
            if retry_after is not None:
                until = time.monotonic() + retry_after
                self._telegram_paused_until = max(self._telegram_paused_until, until)
            metrics.webhook_deliveries.labels("telegram", "http_error").inc()
            raise DeliveryFailed(f"Telegram rate limit: {description}", retryable=True, retry_after=retry_after)
        if status >= 500 or status == 408:
            metrics.webhook_deliveries.labels("telegram", "http_error").inc()
            raise DeliveryFailed(f"Telegram HTTP {status}: {description}", retryable=True)
        metrics.webhook_deliveries.labels("telegram", "refused").inc()
        raise DeliveryFailed(f"Telegram refused the message (HTTP {status}): {description}", retryable=False)

    def _redact(self, text: str) -> str:
        return _redact_token(text, self.settings.telegram_bot_token)

    async def _post(
        self, client: httpx.AsyncClient, url: str, body: str, headers: dict[str, str], *, kind: str
    ) -> None:
        started = time.perf_counter()
        try:
            response = await client.post(url, content=body.encode(), headers=headers)
        except egress.EgressRefused as exc:
            metrics.webhook_deliveries.labels(kind, "egress_refused").inc()
            log.warning(
                "delivery refused by the egress policy",
                extra={"action": "egress_refused", "channel": kind, "error": self._redact(exc.detail)},
            )
            raise _refused(exc) from None
        except httpx.TimeoutException as exc:
            metrics.webhook_deliveries.labels(kind, "timeout").inc()
            raise DeliveryFailed(f"timed out: {type(exc).__name__}", retryable=True) from exc
        except httpx.TransportError as exc:
            metrics.webhook_deliveries.labels(kind, "connection_error").inc()
            raise DeliveryFailed(f"connection failed: {type(exc).__name__}: {exc}", retryable=True) from exc
        finally:
            metrics.webhook_duration.labels(kind).observe(time.perf_counter() - started)
        status = response.status_code
        if 200 <= status < 300:
            metrics.webhook_deliveries.labels(kind, "delivered").inc()
            return
        if status == 429 or status >= 500 or status == 408:
            metrics.webhook_deliveries.labels(kind, "http_error").inc()
            raise DeliveryFailed(f"HTTP {status}", retryable=True, retry_after=_retry_after(response))
        metrics.webhook_deliveries.labels(kind, "refused").inc()
        hint = " (redirects are not followed)" if 300 <= status < 400 else ""
        raise DeliveryFailed(f"HTTP {status}{hint}", retryable=False)

    def _backoff(self) -> Callable[[RetryCallState], float]:
        """Exponential backoff, unless the receiver said how long to wait."""
        exponential = wait_exponential(multiplier=self.settings.webhook_retry_base, max=self.settings.webhook_retry_max)

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, DeliveryFailed) and exc.retry_after is not None:
                return exc.retry_after
            return float(exponential(state))

        return wait

    async def _attempts(self, item: OutboxItem, channel: str, send: Callable[[int], Awaitable[None]]) -> int:
        """Send through one channel, retrying as the policy says; the attempt number that got through, or
        DeliveryFailed once retries are spent or the receiver refused."""
        attempts = item.attempts

        def record_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            self.outcomes.append(
                {
                    "id": item.id,
                    "kind": item.kind,
                    "state": "retry",
                    "attempts": attempts + state.attempt_number,
                    "error": str(exc),
                    "next_attempt_at": time.time() + delay,
                }
            )
            log.info(
                "delivery failed, will retry",
                extra={
                    "action": "deliver_retry",
                    "channel": channel,
                    "outbox_id": item.id,
                    "task_id": item.task_id,
                    "error": str(exc),
                    "in": delay,
                },
            )

        number = attempts + 1
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            stop=stop_after_attempt(max(1, self.settings.webhook_attempts - attempts)),
            wait=self._backoff(),
            before_sleep=record_retry,
            reraise=True,
        ):
            with attempt:
                number = attempts + attempt.retry_state.attempt_number
                try:
                    await send(number)
                except DeliveryFailed as exc:
                    exc.attempts = number
                    raise
        return number

    def _channels(self, client: httpx.AsyncClient, item: OutboxItem) -> dict[str, Callable[[int], Awaitable[None]]]:
        if item.kind == "webhook":
            return {"webhook": lambda number: self._send_webhook(client, item, number)}
        if item.kind == "a2a_push":
            return {"a2a_push": lambda number: self._send_push(client, item)}
        alert = Alert.from_body(item.body)
        sends: dict[str, Callable[[int], Awaitable[None]]] = {
            "telegram": lambda number: self._send_telegram(client, alert),
            "webhook": lambda number: self._send_alert_webhook(client, item, alert),
        }
        return {name: sends[name] for name in self.settings.alert_channels}

    async def _deliver(self, client: httpx.AsyncClient, item: OutboxItem) -> None:
        outcome: dict[str, Any] = {
            "id": item.id,
            "kind": item.kind,
            "task_id": item.task_id,
            "agent": item.agent,
            "url": item.notify_url,
            "final": True,
        }
        results: list[Any] = []
        try:
            channels = self._channels(client, item)
            if not channels:
                raise DeliveryFailed(
                    "no alert channel configured (set MCS_TELEGRAM_BOT_TOKEN and MCS_TELEGRAM_CHAT_ID, "
                    "or MCS_ALERT_WEBHOOK_URL)",
                    retryable=False,
                )
            # Each channel retries on its own, so a Telegram rate limit never holds up the webhook.
            results = await asyncio.gather(
                *(self._attempts(item, name, send) for name, send in channels.items()), return_exceptions=True
            )
            crashed = [r for r in results if isinstance(r, BaseException) and not isinstance(r, DeliveryFailed)]
            if crashed:
                raise crashed[0]
            gone = next((r for r in results if isinstance(r, Superseded)), None)
            if gone is not None:
                raise gone
            failed = {name: r for name, r in zip(channels, results, strict=True) if isinstance(r, DeliveryFailed)}
            numbers = [r if isinstance(r, int) else r.attempts for r in results]
            if failed:
                prefix = len(channels) > 1 or item.kind != "webhook"
                error = "; ".join(f"{name}: {exc}" if prefix else str(exc) for name, exc in failed.items())
                if len(failed) == len(channels):
                    public = "; ".join(exc.public for exc in failed.values() if exc.public) or None
                    raise DeliveryFailed(error, retryable=False, public=public) from None
                # Someone was told: delivered, with the channel that failed kept as the row's error.
                outcome["error"] = error
                log.warning(
                    "alert delivered, but not on every channel",
                    extra={"action": "deliver_partial", "outbox_id": item.id, "error": error},
                )
            outcome |= {"state": "delivered", "attempts": max(numbers)}
            event = json.loads(item.body) if item.kind == "webhook" and item.task_id else {}
            if event.get("type") == "task.assigned":  # (not task.canceled: latency is from work to its agent)
                task = event["data"]["task"]
                eligible = task.get("not_before") or task["created_at"]  # a retry counts from falling due
                metrics.webhook_latency.observe(max(0.0, time.time() - _parse_iso(eligible)))
            log.debug("delivered", extra={"action": "deliver", "outbox_id": item.id, "task_id": item.task_id})
        except Superseded as exc:
            outcome |= {"state": "superseded", "attempts": exc.attempts, "error": str(exc)}
            log.info(
                "not delivered: the claim it carries is gone",
                extra={"action": "deliver_superseded", "outbox_id": item.id, "task_id": item.task_id},
            )
        except DeliveryFailed as exc:
            attempts = max(
                [item.attempts + 1, *(r if isinstance(r, int) else getattr(r, "attempts", 0) for r in results)]
            )
            outcome |= {"state": "dead", "attempts": attempts, "error": self._redact(str(exc))}
            if item.kind in NOTIFY_KINDS:
                outcome["event_error"] = exc.public or UNDELIVERED
            log.warning(
                "gave up delivering",
                extra={
                    "action": "deliver_dead",
                    "outbox_id": item.id,
                    "task_id": item.task_id,
                    "agent": item.agent,
                    "error": str(exc),
                },
            )
        except Exception as exc:  # a bug or an unexpected error: leave the row pending for the next pass
            log.error(
                "delivery crashed",
                extra={"action": "deliver_error", "outbox_id": item.id, "error": self._redact(repr(exc))},
                exc_info=item.kind == "webhook",  # an alert's traceback could show the Telegram URL
            )
            outcome |= {
                "state": "retry",
                "attempts": item.attempts + 1,
                "error": self._redact(repr(exc)),
                "next_attempt_at": time.time() + self.settings.webhook_retry_base,
            }
        self.outcomes.append(outcome)
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------ the loop

    async def _flush(self) -> None:
        if not self.outcomes:
            return
        batch, self.outcomes = self.outcomes, []
        try:
            await self.db.write(outbox_state.record_outcomes, owner=self.owner, outcomes=batch, now=time.time())
        except Exception:
            self.outcomes = batch + self.outcomes  # keep them (and their rows in flight) for the next pass
            raise
        for o in batch:
            if o.get("final"):
                agent = self.in_flight.pop(o["id"], None)
                if agent is not None:
                    self.per_agent[agent] -= 1

    def _client(self, item: OutboxItem) -> httpx.AsyncClient:
        """One small connection pool per agent: httpx's pool bookkeeping grows with its connections, and a
        pool of its own keeps a slow agent's connections out of everyone else's way. Alerts have their own,
        under the alert policy (an agent named "alert" must not share it)."""
        notify = item.kind in NOTIFY_KINDS
        key = f"agent:{item.agent}" if notify else "alert"
        client = self._clients.get(key)
        if client is None:
            client = webhooks.make_client(
                timeout=self.settings.webhook_timeout,
                policy=self.notify_policy if notify else self.alert_policy,
                transport=self.transport,
                max_connections=PER_AGENT_IN_FLIGHT,
            )
            self._clients[key] = client
        return client

    async def _start_due(self) -> float | None:
        """Start deliveries for due rows; return when the next not-yet-due row falls due. The reads run on
        the store's reader thread: deliveries under way go on while they do."""
        now = time.time()
        # A read first (nothing is written while nothing is due), then the lease: another notifier may take
        # some of these rows in between, and the take leases only what is still free.
        due = await self.db.read(outbox_state.due, now=now, limit=FETCH_LIMIT, per_key=PER_AGENT_IN_FLIGHT)
        rooms = [PER_AGENT_IN_FLIGHT - self.per_agent[item.agent or "alert"] for item in due if self._room(item)]
        if rooms:  # take no more than the caps let start now: fewer rows to give back
            taken = await self.db.write(
                outbox_state.take,
                owner=self.owner,
                now=now,
                lease=self.lease,
                limit=min(FETCH_LIMIT, IN_FLIGHT - len(self.in_flight)),
                per_key=max(rooms),
            )
            left: list[int] = []
            for item in taken:
                if not self._room(item):
                    left.append(item.id)
                    continue
                key = item.agent or "alert"
                self.in_flight[item.id] = key
                self.per_agent[key] += 1
                task = asyncio.create_task(self._deliver(self._client(item), item), name=f"deliver-{item.id}")
                self.deliveries.add(task)
                task.add_done_callback(self.deliveries.discard)
            if left:  # over this replica's caps: give them back now rather than when the lease lapses
                await self.db.write(outbox_state.release, owner=self.owner, ids=left)
        return await self.db.read(outbox_state.next_due, after=now)

    def _room(self, item: OutboxItem) -> bool:
        """Whether this replica may start sending `item` now (not under way here, caps not full)."""
        key = item.agent or "alert"
        return (
            item.id not in self.in_flight
            and self.per_agent[key] < PER_AGENT_IN_FLIGHT
            and len(self.in_flight) < IN_FLIGHT
        )

    async def _renew(self) -> None:
        """Extend the leases on the rows under way, every `renew_every` seconds. A row whose lease lapsed
        meanwhile (this process was frozen) may be sent by another notifier too: counted and logged."""
        if time.monotonic() - self.renewed < self.renew_every:
            return
        self.renewed = time.monotonic()
        ids = list(self.in_flight)
        if not ids:
            return
        held = await self.db.write(outbox_state.renew, owner=self.owner, ids=ids, now=time.time(), lease=self.lease)
        if held < len(ids):
            metrics.outbox_leases_lost.inc(len(ids) - held)
            log.warning(
                "lost the lease on outbox rows under way; another notifier may send them too",
                extra={"action": "lease_lost", "rows": len(ids) - held},
            )

    async def run(self) -> None:
        self.db: AsyncStore | AsyncPostgres
        self._wake = asyncio.Event()  # a delivery finished, or stop()
        self._changed = asyncio.Event()  # a file in the data folder changed (another process committed)
        self.watcher: CommitWatcher | None = None
        loop = asyncio.get_running_loop()
        if isinstance(self.store, Store):
            self.db = AsyncStore(self.store)
            self.watcher = CommitWatcher(self.store.path)
            if self.watcher.fd is not None:
                loop.add_reader(self.watcher.fd, self._on_change)
        else:
            from mcs.engines.postgres.asyncio import AsyncPostgres  # noqa: PLC0415 - psycopg only on PostgreSQL

            self.db = AsyncPostgres(self.store)
            self.feed = self.store.changes()
        if self._log_filter is not None:
            logging.getLogger("httpx").addFilter(self._log_filter)
        allowed = ",".join(rule.text for rule in self.notify_policy.allow)
        log.info("notifier started", extra={"action": "start", "notify_allow": allowed})
        self._clients: dict[str, httpx.AsyncClient] = {}
        try:
            while not self._stopping:
                # The version before the pass: a commit during the pass must end the next wait at once.
                version = await self._version()
                try:
                    self.store.check_file()  # deleted or replaced: exit, to be restarted on the file now there
                    await self._flush()
                    await self._renew()
                    next_due = await self._start_due()
                    self.last_pass = time.monotonic()
                    metrics.loop_last_pass.set(time.time())
                    if time.time() - self.heartbeat.last >= 5:
                        beats = await self.db.read(outbox_state.heartbeats) if self.heartbeat.first else None
                        await self.db.write(outbox_state.beat, **self.heartbeat.row(time.time(), beats))
                        self.heartbeat.last = time.time()
                except DatabaseReplaced:
                    log.error("database file deleted or replaced; exiting", extra={"action": "database_replaced"})
                    raise
                except Exception:
                    log.exception("notifier pass failed; retrying", extra={"action": "pass_failed"})
                    next_due = None
                await self._wait(version, next_due)
            await self._drain()
        finally:
            for client in self._clients.values():
                await client.aclose()
            if self._log_filter is not None:
                logging.getLogger("httpx").removeFilter(self._log_filter)
        if self.watcher is not None:
            if self.watcher.fd is not None:
                loop.remove_reader(self.watcher.fd)
            self.watcher.close()
        self.db.shutdown()
        log.info("notifier stopped", extra={"action": "stop"})

    async def _version(self) -> int:
        """What the next wait compares with: SQLite's data_version (a read), or the count of OUTBOX
        notifications PostgreSQL delivered so far (no query)."""
        if self.feed is not None:
            return self.feed.version(Topic.OUTBOX)
        return await self.db.read(data_version)

    async def _wait(self, version: int, next_due: float | None) -> None:
        """Until another process commits (after `version`), a delivery finishes, a retry falls due, or the
        idle interval passes. `data_version` is asked on the reader thread, like every read of the pass."""
        assert self._wake is not None
        await asyncio.sleep(0)  # always let deliveries run, even when the next pass is due at once
        deadline = time.time() + IDLE_PASS_INTERVAL
        if next_due is not None:
            deadline = min(deadline, next_due)
        if self.feed is not None:
            await self._wait_feed(self.feed, version, deadline)
            return
        assert self.watcher is not None
        loop = asyncio.get_running_loop()
        while not self._stopping and not self._wake.is_set():
            if await self.db.read(data_version) != version:
                break
            remaining = deadline - time.time()
            if remaining <= 0:
                break
            if self._changed.is_set():  # a commit is under way: wait for its writer to finish, off the loop
                self._changed.clear()
                if not self.watcher.writer_done(block=False):
                    await loop.run_in_executor(None, self.watcher.writer_done)
                continue
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, self.watcher.poll_interval))
            except TimeoutError:
                pass
        self._wake.clear()

    async def _wait_feed(self, feed: ChangeFeed, version: int, deadline: float) -> None:
        """PostgreSQL: until an OUTBOX notification arrives after `version`, a delivery finishes or stop(),
        or `deadline` (time.time()) passes. Both waits are tasks of this call, ended before it returns."""
        assert self._wake is not None
        remaining = deadline - time.time()
        if remaining > 0 and not self._stopping and not self._wake.is_set():
            woken = asyncio.create_task(self._wake.wait(), name="notifier-wake")
            changed = asyncio.create_task(
                feed.wait_async((Topic.OUTBOX,), version, timeout=remaining), name="notifier-feed"
            )
            try:
                await asyncio.wait({woken, changed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (woken, changed):
                    task.cancel()
                await asyncio.gather(woken, changed, return_exceptions=True)
        self._wake.clear()

    async def _drain(self, timeout: float = 5.0) -> None:
        """On stop: let deliveries under way finish briefly and record what is known. Unrecorded rows stay
        pending, their leases given back, and are delivered again by another notifier or after a restart
        (at-least-once)."""
        deadline = time.time() + timeout
        while self.in_flight and time.time() < deadline:
            await self._flush()
            await asyncio.sleep(0.05)
        late = list(self.deliveries)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
        await self._flush()
        if self.in_flight:
            await self.db.write(outbox_state.release, owner=self.owner, ids=list(self.in_flight))


def _parse_iso(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def main(settings: Settings | None = None) -> None:
    setup_logging()
    settings = settings or Settings.from_env()  # no admin token here: nothing the notifier sends is signed with it
    store = open_engine(settings, process="notifier")  # SQLite's Store, or PostgreSQL with MCS_DATABASE_URL
    store.migrate()
    notifier = Notifier(store, settings)
    status = StatusServer(
        host=settings.bind_metrics_host,
        port=settings.notifier_metrics_port,
        process="notifier",
        alive=notifier.alive,
        store=cast(Store, store),  # duck-typed, as the Heartbeat's
    ).start()

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, notifier.stop)
        await notifier.run()

    try:
        _run(serve())
    finally:
        notifier.heartbeat.stopped()
        status.stop()
        store.close()


def _run(coro: Any) -> None:
    try:
        import uvloop

        uvloop.run(coro)
    except ImportError:
        asyncio.run(coro)
