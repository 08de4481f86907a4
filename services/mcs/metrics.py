"""Every Prometheus object, defined once. Each process exports the ones it updates on its own /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Milliseconds when the mesh is idle, minutes when it is backed up: both must be readable.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    600.0,
    1800.0,
)

http_requests = Counter("mcs_http_requests_total", "HTTP requests answered by the api", ["method", "route", "status"])
http_duration = Histogram(
    "mcs_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
tasks_submitted = Counter("mcs_tasks_submitted_total", "Tasks submitted", ["type", "priority"])
tasks_completed = Counter("mcs_tasks_completed_total", "Tasks completed", ["type", "priority"])
tasks_failed = Counter("mcs_tasks_failed_total", "Tasks failed for good", ["type", "priority"])
tasks_retried = Counter("mcs_tasks_retried_total", "Failed attempts that will be retried", ["type", "priority"])
tasks_rejected = Counter("mcs_tasks_rejected_total", "Tasks an agent declined", ["type", "priority"])
tasks_canceled = Counter("mcs_tasks_canceled_total", "Tasks canceled", ["type", "priority"])
tasks_redriven = Counter("mcs_tasks_redriven_total", "Failed or canceled tasks put back by hand", ["type", "priority"])
tasks_dispatched = Counter("mcs_tasks_dispatched_total", "Tasks assigned to an agent by the dispatcher")
dispatch_latency = Histogram(
    "mcs_dispatch_latency_seconds",
    "Submit (or a retry falling due) -> assignment committed",
    buckets=LATENCY_BUCKETS,
)
dispatcher_passes = Counter(
    "mcs_dispatcher_passes_total", "Dispatcher passes that routed (took the write lock); idle wake-ups are not counted"
)
dispatcher_agent_reads = Counter(
    "mcs_dispatcher_agent_reads_total",
    "Dispatcher reads of agents: `all` (every online one) or `changed` (named by an event, or past their TTL)",
    ["scope"],
)
tasks_push_claimed = Counter(
    "mcs_tasks_push_claimed_total", "Tasks the dispatcher claimed for their agent at assignment (claim_on_push)"
)
claims_with_completion = Counter(
    "mcs_claims_with_completion_total", "Next tasks claimed in the answer to a completion (complete with next)"
)
webhooks_superseded = Counter(
    "mcs_webhooks_superseded_total",
    "Webhook retries not sent: the claim they carry (claim_on_push) is no longer held",
)
claims_expired = Counter("mcs_claims_expired_total", "Leases that ran out before the agent finished")
unclaimed_rerouted = Counter("mcs_unclaimed_rerouted_total", "Assignments nobody claimed, routed again")
agents_marked_offline = Counter("mcs_agents_marked_offline_total", "Agents marked offline past their TTL")
webhook_deliveries = Counter(
    "mcs_webhook_deliveries_total", "Webhook and alert delivery attempts by outcome", ["kind", "outcome"]
)
webhook_duration = Histogram(
    "mcs_webhook_delivery_duration_seconds", "Time of one delivery attempt", ["kind"], buckets=LATENCY_BUCKETS
)
webhook_latency = Histogram(
    "mcs_submit_to_webhook_seconds",
    "Submit (or a retry falling due) -> webhook accepted by the agent",
    buckets=LATENCY_BUCKETS,
)
write_lock_waits = Histogram(
    "mcs_write_lock_wait_seconds",
    "Waits for the database's write lock when another process held it (a free lock is not counted)",
    buckets=LATENCY_BUCKETS,
)
write_lock_holds = Histogram(
    "mcs_write_lock_hold_seconds",
    "How long this process held the database's write lock per write transaction (work and commit)",
    buckets=LATENCY_BUCKETS,
)
write_lock_acquisitions = Counter(
    "mcs_write_lock_acquisitions_total",
    "Write transactions this process began: each takes the database's write lock once (a group commit counts once)",
)
write_lock_timeouts = Counter(
    "mcs_write_lock_timeouts_total",
    "Writes refused with 503 database_busy: the write lock stayed taken past MCS_WRITE_LOCK_TIMEOUT",
)
quota_refusals = Counter(
    "mcs_quota_refusals_total", "Requests refused with 429 by a rate limit or quota (see mcs.quotas)", ["quota"]
)
claim_wakeups = Counter(
    "mcs_claim_wakeups_total",
    "Long-poll claims (POST /v1/tasks/claim with wait) woken by a commit: idle (a read found nothing this agent"
    " could take, so no write), claimed, raced (the read found work; another agent took it first)",
    ["outcome"],
)
for _outcome in ("idle", "claimed", "raced"):
    claim_wakeups.labels(_outcome)
claims_waiting = Gauge("mcs_claims_waiting", "Long-poll claims waiting for work now in this api process")
batch_items = Counter(
    "mcs_batch_items_total",
    "Items of POST /v1/tasks/batch by outcome: created, replayed (an idempotency key seen before), refused",
    ["outcome"],
)
for _outcome in ("created", "replayed", "refused"):
    batch_items.labels(_outcome)
console_logins = Counter(
    "mcs_console_logins_total", "Web console login attempts by outcome: ok, wrong_token, throttled", ["outcome"]
)
disk_full_refusals = Counter("mcs_disk_full_total", "Writes refused with 507 because the disk was full")
disk_free_bytes = Gauge(
    "mcs_disk_free_bytes", "Free bytes on the disk holding the database, read by the api at each scrape", ["db"]
)
pruned = Counter(
    "mcs_pruned_total", "Rows the retention pruner deleted (finished tasks, their events, old outbox rows...)", ["kind"]
)
PRUNED_KINDS = (
    "tasks",
    "task_events",
    "outbox",
    "idempotency_keys",
    "agent_events",
    "schedule_runs",
    "workflows",
    "workflow_events",
    "heartbeats",
)
outbox_leases_lost = Counter(
    "mcs_outbox_leases_lost_total",
    "Outbox rows whose lease lapsed while this notifier was still sending them (another notifier may send them too)",
)
loop_last_pass = Gauge("mcs_process_last_pass_timestamp_seconds", "When this process last completed a pass")
schedule_ticks = Counter(
    "mcs_schedule_ticks_total",
    "Schedule ticks the watchdog handled: fired (submitted) or skipped (overlap, or missed with catch_up none)",
    ["outcome"],
)
for _outcome in ("fired", "skipped"):
    schedule_ticks.labels(_outcome)

_TRANSITIONS = {
    "submitted": tasks_submitted,
    "completed": tasks_completed,
    "failed": tasks_failed,
    "retried": tasks_retried,
    "rejected": tasks_rejected,
    "canceled": tasks_canceled,
    "redriven": tasks_redriven,
}


workflows_total = Counter(
    "mcs_workflows_total", "Workflow transitions: submitted, completed, failed, canceled", ["event"]
)
for _event in ("submitted", "completed", "failed", "canceled"):
    workflows_total.labels(_event)
WORKFLOW_PREFIX = "workflow_"  # effects notes for workflows, not tasks: "workflow_<event>"


def count_transitions(notes: list[tuple[str, str, str]]) -> None:
    """Add a committed transaction's task events (see mcs.effects) to this process's counters."""
    for event, task_type, priority in notes:
        if event.startswith(WORKFLOW_PREFIX):
            workflows_total.labels(event.removeprefix(WORKFLOW_PREFIX)).inc()
            continue
        init_task_series([task_type], priorities=[priority])
        _TRANSITIONS[event].labels(task_type, priority).inc()


_initialised: set[tuple[str, str]] = set()
MAX_INITIAL_TYPES = 500  # task types whose series a process creates at start


def init_task_series(types: list[str], *, priorities: list[str] | None = None) -> None:
    """Create every task counter of these types at 0, so a process's first completion or failure of a
    type is an increase that rate() and increase() can see, not a series born at 1. Processes call it at
    start with the types the database knows, and it runs before each counted event."""
    for task_type in types[:MAX_INITIAL_TYPES]:
        for priority in priorities or ("urgent", "normal", "low"):
            if (task_type, priority) not in _initialised:
                _initialised.add((task_type, priority))
                for counter in _TRANSITIONS.values():
                    counter.labels(task_type, priority)


egress_refusals = Counter(
    "mcs_egress_refusals_total", "URLs refused by the egress policy when they were given (registration)", ["what"]
)
egress_refusals.labels("notify_url")  # at 0 from the start, so the first refusal is an increase

DELIVERY_OUTCOMES = ("delivered", "http_error", "refused", "timeout", "connection_error", "egress_refused")


def init_delivery_series(kinds: list[str]) -> None:
    """Start every delivery outcome of these channels at 0, so the first failure is an increase that
    rate() sees and the failing-deliveries ratio has data before anything ever failed."""
    for kind in kinds:
        webhook_duration.labels(kind)
        for outcome in DELIVERY_OUTCOMES:
            webhook_deliveries.labels(kind, outcome)


events_streamed = Counter("mcs_events_streamed_total", "Events sent on GET /v1/events streams")
event_streams = Gauge("mcs_event_streams", "Open event subscriptions in this api process (GET /v1/events, MCP waits)")
event_streams_dropped = Counter(
    "mcs_event_streams_dropped_total", "Event streams closed because the client fell too far behind"
)
task_progress = Counter("mcs_task_progress_total", "Progress reports from agents on claimed tasks")
a2a_requests = Counter(
    "mcs_a2a_requests_total",
    "A2A JSON-RPC calls to the api's /a2a, by method and outcome (ok, error)",
    ["method", "outcome"],
)
a2a_forwarded = Counter(
    "mcs_a2a_forwarded_total", "Tasks `mcs agent a2a` forwarded to a remote A2A agent, by outcome", ["outcome"]
)
mcp_tool_calls = Counter(
    "mcs_mcp_tool_calls_total",
    "MCP tool calls (`mcs mcp` and /mcp on the api), by tool and outcome",
    ["tool", "outcome"],
)
db_retries = Counter(
    "mcs_db_retries_total",
    "Write jobs run again on PostgreSQL after a conflict (serialization, deadlock, race_lost) or a lost connection",
    ["reason"],
)
db_round_trips = Counter(
    "mcs_db_round_trips_total",
    "Statements sent to PostgreSQL by committed transactions, BEGIN and COMMIT included (per task: divide by tasks)",
    ["kind"],
)
