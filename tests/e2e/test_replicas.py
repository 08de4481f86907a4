"""The replicated e2e test (docs/design/engines.md 6.2): compose.yaml's `postgres` profile alone (two
replicas each of api, dispatcher, notifier and watchdog on one PostgreSQL, the api behind HAProxy), a
stream of tasks through the proxy served by tests/e2e/agent.py agents, and at 30 % and 60 % of the stream
one replica of each process killed with SIGKILL from the host (a crash: `restart: unless-stopped` brings
it back). Nothing may be lost, nothing completed twice, and no agent or concurrency key may ever hold more
tasks than its limit, as the events recorded in PostgreSQL show.

Agents take webhooks, half of them with claim_on_push; REPLICA_AGENTS_PULL=1 makes them pull instead
(long-poll POST /v1/tasks/claim). REPLICA_STREAM sets the stream's length (1,000), REPLICA_KEEP=1 keeps
the compose project afterwards.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcs.client import Client, McsApiError, McsUnavailable

from .conftest import (
    AGENT_PORT,
    BASE_IMAGE,
    E2E,
    PROMETHEUS_IMAGE,
    PYTHON_IMAGE,
    REPO,
    UP_TIMEOUT,
    Images,
    docker,
    say,
    wait_until,
)

PG_SERVICES = ["api-pg", "dispatcher-pg", "watchdog-pg", "notifier-pg"]
STREAM = int(os.environ.get("REPLICA_STREAM", "1000"))  # tasks in the stream (design: 1,000)
KEYED, KEY_LIMIT = 20, 2  # tasks sharing one concurrency key, and its max_concurrency
AGENTS, AGENT_CONCURRENCY = 4, 4
SUBMITTERS = 4  # client threads sending the stream
PUSH = os.environ.get("REPLICA_AGENTS_PULL", "") != "1"
OUTBOX_LEASE = 30  # seconds: the notifiers' lease on the webhooks they took (MCS_OUTBOX_LEASE's default)
CAPABILITY = "replica-work"
SUBMIT_PATIENCE = 60  # seconds a submission is retried while no api replica answers
FINISH_PATIENCE = 300  # seconds for the last tasks after the stream, on a loaded 2-core machine
CLAIM_TTL = 10  # seconds: a claim whose answer died with its api replica comes back this soon
HOLD_STARTS = {"assigned", "claimed"}
HOLD_ENDS = {"completed", "failed", "rejected", "lease_expired", "unclaimed", "requeued", "retrying", "canceled"}


@dataclass
class PgStack:
    project: str
    env_file: Path
    admin_token: str
    killed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))  # service -> container ids
    kill_times: list[float] = field(default_factory=list)
    _url: str | None = None

    def compose(self, *args: str, check: bool = True, timeout: float = UP_TIMEOUT) -> Any:
        return docker("compose", "--env-file", str(self.env_file), "-f", str(REPO / "compose.yaml"), *args,
                      check=check, timeout=timeout)  # fmt: skip

    @property
    def url(self) -> str:
        if self._url is None:
            published = self.compose("port", "proxy", "8080").stdout.strip()
            self._url = f"http://127.0.0.1:{published.rsplit(':', 1)[1]}"
        return self._url

    def admin(self, timeout: float = 15) -> Client:
        return Client(self.url, admin_token=self.admin_token, timeout=timeout)

    def replicas(self, service: str) -> list[str]:
        return sorted(self.compose("ps", "-q", service).stdout.split())

    def inspect(self, container: str) -> dict[str, Any]:
        info: dict[str, Any] = json.loads(docker("inspect", container).stdout)[0]
        return info

    def show_logs(self, config: pytest.Config) -> None:
        logs = self.compose("logs", "--no-color", "--tail", "15", *PG_SERVICES, check=False)
        say(config, f"the last lines of each replica's log:\n{logs.stdout}{logs.stderr}")

    def psql(self, sql: str) -> list[list[str]]:
        """Rows of `sql` (CSV out of psql in the postgres container)."""
        copy = f"COPY ({sql}) TO STDOUT WITH CSV"
        out = self.compose("exec", "-T", "postgres", "psql", "-X", "-q", "-U", "mcs", "-d", "mcs", "-c", copy).stdout
        return list(csv.reader(io.StringIO(out)))


@pytest.fixture(scope="module")
def pg_stack(
    pytestconfig: pytest.Config,
    images: Images,
    postgres_image: str,
    proxy_image: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PgStack]:
    """The README's PostgreSQL-only .env (COMPOSE_PROFILES=postgres, MCS_SQLITE_SCALE=0,
    PROMETHEUS_CONFIG=prometheus-postgres.yml) in a compose project of its own, removed at the end."""
    tmp = tmp_path_factory.mktemp("replicas")
    project = f"mcs-e2e-rep-{uuid.uuid4().hex[:8]}"
    admin_token = "e2e-" + secrets.token_urlsafe(24)
    settings = {
        "COMPOSE_PROJECT_NAME": project,
        "COMPOSE_PROFILES": "postgres",
        "MCS_SQLITE_SCALE": "0",
        "PROMETHEUS_CONFIG": "prometheus-postgres.yml",
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "MCS_IMAGE": images.mcs,
        "POSTGRES_IMAGE": postgres_image,
        "PROXY_IMAGE": proxy_image,
        "MCS_PULL_POLICY": "never",
        "PYTHON_IMAGE": PYTHON_IMAGE,
        "BASE_IMAGE": BASE_IMAGE,
        "PROMETHEUS_IMAGE": PROMETHEUS_IMAGE,
        "MCS_ADMIN_TOKEN": admin_token,
        "GRAFANA_ADMIN_PASSWORD": "not-started-in-tests",
        "MCS_API_PORT": "",
        "PROMETHEUS_PORT": "",
        "GRAFANA_PORT": "",
        "MCS_HEALTHCHECK_INTERVAL": "3s",
        "MCS_CLAIM_TTL": str(CLAIM_TTL),
        "MCS_WATCHDOG_INTERVAL": "1",
        "MCS_WEBHOOK_RETRY_BASE": "0.5",
        "MCS_WEBHOOK_RETRY_MAX": "2",
        "MCS_WEBHOOK_ATTEMPTS": "60",
        "MCS_LOG_LEVEL": "WARNING",
    }
    env_file = tmp / "replicas.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    stack = PgStack(project=project, env_file=env_file, admin_token=admin_token)
    services = ["postgres", "proxy", *PG_SERVICES]
    say(pytestconfig, f"compose project {project}: starting {', '.join(services)} (two replicas of each process)")
    started = time.monotonic()
    try:
        stack.compose("up", "-d", "--no-build", *services)

        def proxy_healthy() -> bool:
            try:
                return httpx.get(f"{stack.url}/healthz", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(proxy_healthy, timeout=UP_TIMEOUT, what="the api replicas to answer through the proxy", interval=1)
        for service in PG_SERVICES:
            running = wait_until(
                lambda s=service: (
                    len(ids := stack.replicas(s)) == 2 and all(stack.inspect(c)["State"]["Running"] for c in ids)
                ),
                timeout=UP_TIMEOUT,
                what=f"two {service} replicas running",
                interval=1,
            )
            assert running
        say(pytestconfig, f"up in {time.monotonic() - started:.0f} s; proxy at {stack.url}")
        yield stack
    except BaseException:
        stack.show_logs(pytestconfig)
        raise
    finally:
        if os.environ.get("REPLICA_KEEP") == "1":  # for a look afterwards: `docker compose -p PROJECT ...`
            say(pytestconfig, f"keeping compose project {project} (env file {env_file})")
        else:
            say(pytestconfig, f"removing compose project {project}")
            stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "5", check=False)
            leftovers = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}", check=False)
            for cid in leftovers.stdout.split():
                docker("rm", "-fv", cid, check=False)


@dataclass
class Agent:
    name: str
    container: Any
    claim_on_push: bool

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        stdout, _ = self.container.get_logs()
        found = [json.loads(line) for line in stdout.decode().splitlines() if line.startswith("{")]
        return [e for e in found if kind is None or e["event"] == kind]


@pytest.fixture(scope="module")
def agents(pytestconfig: pytest.Config, pg_stack: PgStack) -> Iterator[list[Agent]]:
    """AGENTS agents of capability CAPABILITY, concurrency AGENT_CONCURRENCY each, through the proxy; half
    of them claim_on_push when they take webhooks."""
    from testcontainers.core.container import DockerContainer

    started: list[Agent] = []
    network = f"{pg_stack.project}_default"
    try:
        with pg_stack.admin() as admin:
            for n in range(AGENTS):
                name = f"rep-{n}"
                on_push = PUSH and n % 2 == 1
                creds = admin.create_agent(name, [CAPABILITY], claim_on_push=on_push)
                host = f"{pg_stack.project}-{name}"
                container = (
                    DockerContainer(PYTHON_IMAGE)
                    .with_name(host)
                    .with_volume_mapping(str(E2E), "/agent", "ro")
                    .with_kwargs(network=network)
                    .with_envs(
                        MCS_URL="http://proxy:8080",
                        MCS_AGENT_ID=name,
                        MCS_AGENT_SECRET=creds["secret"],
                        MCS_WEBHOOK_SECRET=creds["webhook_secret"],
                        AGENT_CAPABILITY=CAPABILITY,
                        AGENT_LISTEN=f"0.0.0.0:{AGENT_PORT}",
                        AGENT_NOTIFY_URL=f"http://{host}:{AGENT_PORT}/hook" if PUSH else "",
                        AGENT_CONCURRENCY=str(AGENT_CONCURRENCY),
                    )
                    .with_command("python3 -u /agent/agent.py")
                )
                container.start()
                started.append(Agent(name, container, on_push))
            for agent in started:
                wait_until(
                    lambda a=agent: a.events("registered") and admin.get_agent(a.name)["status"] == "online",
                    timeout=60,
                    what=f"agent {agent.name} to register",
                )
        mode = "webhooks (half claim_on_push)" if PUSH else "pulling"
        say(pytestconfig, f"{AGENTS} agents online, concurrency {AGENT_CONCURRENCY}, {mode}")
        yield started
    finally:
        for agent in started:
            try:
                agent.container.stop()
            except Exception:  # already gone
                pass


def submit_retrying(client: Client, n: int, retried: Counter[str], **fields: Any) -> str:
    """Submit task `n` with its Idempotency-Key, again after a failure on the way (the api replica that had
    the request was killed): the key makes the repeat return the task the first attempt may have made."""
    key = f"replica-{n}"
    payload = {"n": n, **fields.pop("payload", {})}  # the same body on every attempt, as the key requires
    last: Exception | None = None
    deadline = time.monotonic() + SUBMIT_PATIENCE
    while time.monotonic() < deadline:
        try:
            task: dict[str, Any] = client.submit(CAPABILITY, payload, idempotency_key=key, **fields)
            return str(task["id"])
        except McsUnavailable as exc:
            retried["transport"] += 1
            last = exc
        except McsApiError as exc:
            if exc.status not in (502, 503, 504):
                raise
            retried[str(exc.status)] += 1
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"task {n} could not be submitted in {SUBMIT_PATIENCE} s; the last error: {last!r}")


def kill_one_of_each(stack: PgStack, round_: int) -> list[str]:
    """SIGKILL replica `round_` of each process from the host (a crash; `docker kill` would be a stop)."""
    said = []
    stack.kill_times.append(time.time())
    for service in PG_SERVICES:
        container = stack.replicas(service)[round_]
        pid = stack.inspect(container)["State"]["Pid"]
        os.kill(pid, signal.SIGKILL)
        stack.killed[service].append(container)
        said.append(f"{service} {container[:12]} (pid {pid})")
    return said


def back_again(stack: PgStack, restart_counts: dict[str, int], config: pytest.Config) -> None:
    """Every killed replica restarted by its policy (a new process in the same container), the api's
    healthy again."""
    started = time.monotonic()
    for service, containers in stack.killed.items():
        for container in containers:

            def restarted(c: str = container, api: bool = service == "api-pg") -> bool:
                info = stack.inspect(c)
                state = info["State"]
                healthy = not api or state.get("Health", {}).get("Status") == "healthy"
                return bool(state["Running"] and info["RestartCount"] > restart_counts[c] and healthy)

            wait_until(restarted, timeout=90, what=f"{service} {container[:12]} to restart", interval=0.5)
    say(config, f"killed replicas back ({time.monotonic() - started:.0f} s)")


def holds(events: list[tuple[int, str, str, str, Any]]) -> tuple[dict[str, int], int]:
    """The highest number of tasks each agent held at once, and the concurrency key's, from the events in
    their commit order (event id): a hold starts at `assigned`/`claimed` and ends at the task's next
    release (completed, failed, unclaimed, ...)."""
    holder: dict[str, str] = {}
    per_agent: Counter[str] = Counter()
    peak_agent: dict[str, int] = defaultdict(int)
    keyed_now, keyed_peak = 0, 0
    for _, task, kind, actor, keyed in events:
        if kind in HOLD_STARTS and task not in holder:
            detail_agent = actor
            holder[task] = detail_agent
            per_agent[detail_agent] += 1
            peak_agent[detail_agent] = max(peak_agent[detail_agent], per_agent[detail_agent])
            if keyed:
                keyed_now += 1
                keyed_peak = max(keyed_peak, keyed_now)
        elif kind in HOLD_ENDS and task in holder:
            per_agent[holder.pop(task)] -= 1
            if keyed:
                keyed_now -= 1
    return dict(peak_agent), keyed_peak


def test_replicas_killed_mid_stream_lose_nothing_and_complete_each_task_once(
    pytestconfig: pytest.Config, pg_stack: PgStack, agents: list[Agent]
) -> None:
    try:
        stream_with_kills(pytestconfig, pg_stack, agents)
    except BaseException:
        pg_stack.show_logs(pytestconfig)
        raise


def stream_with_kills(pytestconfig: pytest.Config, pg_stack: PgStack, agents: list[Agent]) -> None:
    started = time.monotonic()
    ids: dict[int, str] = {}
    keyed_ids: set[str] = set()
    retried: Counter[str] = Counter()
    errors: list[BaseException] = []
    marks = {int(STREAM * 0.3): threading.Event(), int(STREAM * 0.6): threading.Event()}
    lock = threading.Lock()
    numbers = iter(range(STREAM))

    def submitter() -> None:
        try:
            with pg_stack.admin() as client:
                while True:
                    with lock:
                        n = next(numbers, None)
                    if n is None:
                        return
                    task_id = submit_retrying(client, n, retried)
                    with lock:
                        ids[n] = task_id
                        if (mark := marks.get(len(ids))) is not None:
                            mark.set()
        except BaseException as exc:  # reported by the test
            errors.append(exc)
            for mark in marks.values():
                mark.set()

    def keyed_submitter() -> None:
        try:
            with pg_stack.admin() as client:
                for k in range(KEYED):
                    task_id = submit_retrying(
                        client,
                        STREAM + k,
                        retried,
                        payload={"sleep": 0.5},
                        concurrency_key="replica-key",
                        max_concurrency=KEY_LIMIT,
                    )
                    keyed_ids.add(task_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=submitter) for _ in range(SUBMITTERS)]
    threads.append(threading.Thread(target=keyed_submitter))
    for thread in threads:
        thread.start()
    restart_counts: dict[str, int] = {}
    for round_, (at, mark) in enumerate(marks.items()):
        assert mark.wait(180), f"the stream stalled before {at} tasks"
        assert not errors, errors
        if round_:  # one replica each, never both: the first round's are back (the proxy sees its api)
            back_again(pg_stack, restart_counts, pytestconfig)
        for service in PG_SERVICES:
            container = pg_stack.replicas(service)[round_]
            restart_counts[container] = pg_stack.inspect(container)["RestartCount"]
        killed = kill_one_of_each(pg_stack, round_)
        say(pytestconfig, f"{at} tasks submitted ({time.monotonic() - started:.0f} s): killed {', '.join(killed)}")
    for thread in threads:
        thread.join(180)
    assert not errors, errors
    assert len(ids) == STREAM and len(keyed_ids) == KEYED
    say(pytestconfig, f"stream submitted in {time.monotonic() - started:.0f} s; retried submissions: {dict(retried)}")

    back_again(pg_stack, restart_counts, pytestconfig)

    everything = set(ids.values()) | keyed_ids
    quoted = ",".join(f"'{t}'" for t in sorted(everything))

    def finished() -> dict[str, str] | None:
        states = dict((r[0], r[1]) for r in pg_stack.psql(f"SELECT id, state FROM tasks WHERE id IN ({quoted})"))
        open_ = sum(s not in ("completed", "failed", "canceled") for s in states.values())
        say(pytestconfig, f"{len(states) - open_}/{len(everything)} finished ({time.monotonic() - started:.0f} s)")
        return states if open_ == 0 and len(states) == len(everything) else None

    try:  # webhooks a killed notifier had leased go out again once its lease lapses (OUTBOX_LEASE)
        states = wait_until(finished, timeout=FINISH_PATIENCE, what="every task to finish", interval=3)
    finally:  # more restarts than kills: a replica died by itself
        restarts = {
            f"{s}/{c[:12]}": pg_stack.inspect(c)["RestartCount"] for s in PG_SERVICES for c in pg_stack.replicas(s)
        }
        say(pytestconfig, f"restarts per replica (one kill each): {restarts}")
    assert Counter(states.values()) == {"completed": STREAM + KEYED}  # 0 lost, none failed

    rows = pg_stack.psql(
        "SELECT e.id, e.task_id, e.kind, e.actor, e.detail, t.concurrency_key FROM task_events e "
        f"JOIN tasks t ON t.id = e.task_id WHERE e.task_id IN ({quoted}) ORDER BY e.id"
    )
    events = []
    for event_id, task, kind, actor, detail, key in rows:
        parsed = json.loads(detail) if detail else None
        agent = parsed.get("agent", actor) if isinstance(parsed, dict) and kind in HOLD_STARTS else actor
        events.append((int(event_id), task, kind, agent, key == "replica-key"))
    completed = Counter(task for _, task, kind, _, _ in events if kind == "completed")
    assert {t: completed[t] for t in everything} == dict.fromkeys(everything, 1)  # 0 completed twice
    peak_agent, peak_key = holds(events)
    say(pytestconfig, f"held at most: per agent {peak_agent}, on the key {peak_key}")
    assert set(peak_agent) <= {a.name for a in agents}
    assert all(peak <= AGENT_CONCURRENCY for peak in peak_agent.values()), peak_agent
    assert 1 <= peak_key <= KEY_LIMIT

    if PUSH:
        # At most one webhook row per assignment (a claim_on_push claim is its assignment).
        assignments = Counter(t for _, t, kind, agent, _ in events if kind == "assigned" or (kind == "claimed"
                              and agent in {a.name for a in agents if a.claim_on_push}))  # fmt: skip
        rows = pg_stack.psql(f"SELECT task_id FROM outbox WHERE kind = 'webhook' AND task_id IN ({quoted})")
        per_task = Counter(r[0] for r in rows)
        assert all(per_task[t] <= assignments[t] for t in per_task), per_task.most_common(3)
        # A webhook-id delivered twice: a notifier sent a row again, which only a killed notifier's rows
        # (sent, then its lease lapsed) may have needed: the first delivery came before a kill, within a lease.
        arrivals: dict[str, list[float]] = defaultdict(list)
        for agent in agents:
            for hook in agent.events("webhook"):
                arrivals[hook["webhook_id"]].append(hook["at"])
        repeated = {wid: sorted(times) for wid, times in arrivals.items() if len(times) > 1}
        say(
            pytestconfig,
            f"webhooks delivered: {sum(map(len, arrivals.values()))}, ids delivered twice: {len(repeated)}",
        )
        unexplained = {
            wid: times
            for wid, times in repeated.items()
            if not any(kill - OUTBOX_LEASE - 5 <= times[0] <= kill + 5 for kill in pg_stack.kill_times)
        }
        assert not unexplained, (pg_stack.kill_times, list(unexplained.items())[:5])
    say(pytestconfig, f"{STREAM + KEYED} tasks through 2 kill rounds in {time.monotonic() - started:.0f} s")
