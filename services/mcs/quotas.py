"""Per-caller limits, so one agent cannot fill the disk or starve the mesh. The admin is exempt; 0 disables.

submit_rate    task submissions per second per agent: a token bucket per agent in the api process
               (MCS_RATE_SUBMITS, burst MCS_RATE_SUBMITS_BURST). It lives on the api's event loop, which
               is one process, so a bucket needs no lock and costs no database trip.
queued_tasks   unfinished tasks an agent has submitted (MCS_QUOTA_QUEUED_TASKS), counted in the submit
               transaction on an index (migration 0008). A fanout counts once: its children are the
               dispatcher's work, made from the one submission.
memory_bytes   key and value bytes one memory namespace holds (MCS_QUOTA_MEMORY_BYTES), from a running
               count that triggers keep (migration 0008), checked in the put's own transaction. A write
               that does not grow the namespace is always allowed, so a namespace over a lowered quota
               can still be cleaned up.

Every refusal is a 429 with Retry-After (`QuotaExceeded`) and counts in mcs_quota_refusals_total{quota}.
"""

from __future__ import annotations

from collections import OrderedDict

from mcs.errors import QuotaExceeded

SUBMIT_RATE = "submit_rate"
QUEUED_TASKS = "queued_tasks"
MEMORY_BYTES = "memory_bytes"
QUOTAS = (SUBMIT_RATE, QUEUED_TASKS, MEMORY_BYTES)

QUEUED_RETRY_AFTER = 5.0  # seconds: unfinished tasks end at the mesh's pace; ask again shortly
MEMORY_RETRY_AFTER = 60.0  # seconds: only a delete or an expiry makes room
MAX_TRACKED_CALLERS = 10_000  # buckets kept at most; the least recently used goes first (it refilled)


class SubmitRate:
    """A token bucket per caller: `burst` submissions at once, then `rate` a second. Not thread-safe: the
    api calls it on its event loop only. Bounded: past `max_callers` the least recently used bucket is
    dropped, which only forgives that caller (a dropped bucket starts full again)."""

    def __init__(self, *, rate: float, burst: int, max_callers: int = MAX_TRACKED_CALLERS) -> None:
        self.rate = rate
        self.burst = float(max(1, burst))
        self.max_callers = max_callers
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # caller -> (tokens, at)

    def take(self, caller: str, now: float) -> None:
        """Spend one submission of `caller` at monotonic time `now`, or raise QuotaExceeded (429)."""
        if self.rate <= 0:
            return
        tokens, at = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - at) * self.rate)
        if tokens < 1:
            self._buckets[caller] = (tokens, now)
            self._buckets.move_to_end(caller)
            raise QuotaExceeded(
                f"agent {caller!r} is submitting faster than {self.rate:g} tasks a second "
                f"(burst {self.burst:g}; MCS_RATE_SUBMITS, MCS_RATE_SUBMITS_BURST)",
                quota=SUBMIT_RATE,
                code="rate_limited",
                retry_after=(1 - tokens) / self.rate,
            )
        self._buckets[caller] = (tokens - 1, now)
        self._buckets.move_to_end(caller)
        while len(self._buckets) > self.max_callers:
            self._buckets.popitem(last=False)

    def give_back(self, caller: str) -> None:
        """Return a submission that did not count (its credentials were refused), so a request made in
        another agent's name cannot spend that agent's allowance."""
        if caller in self._buckets:
            tokens, at = self._buckets[caller]
            self._buckets[caller] = (min(self.burst, tokens + 1), at)

    def __len__(self) -> int:
        return len(self._buckets)


def queued_tasks_exceeded(caller: str, count: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"agent {caller!r} has {count} unfinished tasks and may have {limit} (MCS_QUOTA_QUEUED_TASKS); "
        "submit more when some have finished",
        quota=QUEUED_TASKS,
        code="too_many_queued_tasks",
        retry_after=QUEUED_RETRY_AFTER,
    )


def memory_bytes_exceeded(namespace: str, used: int, limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        f"{namespace} would hold {used} bytes of keys and values, over its quota of {limit} "
        "(MCS_QUOTA_MEMORY_BYTES); delete keys to make room",
        quota=MEMORY_BYTES,
        code="memory_quota_exceeded",
        retry_after=MEMORY_RETRY_AFTER,
    )
