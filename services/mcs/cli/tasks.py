"""`mcs task`: submit, list, show, follow and cancel tasks."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click
from click.core import ParameterSource

from mcs.cli.common import client, emit, json_option, load_payload, resolve_task_id, url_option
from mcs.cli.root import main
from mcs.client import TERMINAL, Client, McsApiError, serves
from mcs.models import APPROVAL, SUBMIT_BATCH_MAX, TaskState

STATES = [s.value for s in TaskState]


@main.group()
def task() -> None:
    """Submit and follow tasks."""


def _task_human(t: dict[str, Any]) -> str:
    lines = [
        f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
        for k, v in t.items()
        if k not in ("payload", "result") and v not in (None, [], "")
    ]
    lines.append("payload: " + json.dumps(t.get("payload"), indent=2))
    if t.get("result") is not None:
        lines.append("result: " + json.dumps(t["result"], indent=2))
    return "\n".join(lines)


def nobody_serves(c: Client, capabilities: list[str], route: str | None) -> str | None:
    """A warning when no online agent can take a task with these capabilities and route (None when one
    can), naming the offline agents that could: the check `mcs review` makes before it submits."""
    route = route or "any"
    try:
        agents: list[dict[str, Any]] = c.list_agents()
    except McsApiError:
        return None  # not allowed to look: the submit itself will say what is wrong
    if any(a["status"] == "online" and serves(a, capabilities, route) for a in agents):
        return None
    wanted = ", ".join(capabilities)
    what = (
        f"agent {route!r} with {wanted}"
        if route not in ("any", "all")
        else f"the capabilit{'ies' if len(capabilities) > 1 else 'y'} {wanted}"
    )
    offline = [a["name"] for a in agents if serves(a, capabilities, route)]
    if offline:
        why = f"offline agents that would take it: {', '.join(offline)} (start one of them)"
    else:
        why = f"no agent has it (create one: mcs admin agent create NAME --capability {capabilities[0]})"
    return f"warning: no online agent serves {what}; the task waits until one does; {why}"


@task.command("submit")
@click.option("--type", "-t", "type_", default=None, help="The task type (also the default capability).")
@click.option("--route", "-r", default=None, help="any (default), all (fan out), or an agent name.")
@click.option("--priority", "-p", type=click.Choice(["urgent", "normal", "low"]), default=None)
@click.option("--capability", "-c", "capabilities", multiple=True, help="A required capability (repeatable).")
@click.option("--payload", default=None, help="The payload as JSON.")
@click.option("--payload-file", default=None, help="A file holding the JSON payload (- for stdin).")
@click.option("--max-retries", type=click.IntRange(0, 100), default=None)
@click.option("--claim-ttl", type=click.FloatRange(min=0, min_open=True), default=None, help="Lease seconds.")
@click.option("--idempotency-key", default=None, help="Submit at most once with this key.")
@click.option("--concurrency-key", default=None, help="Tasks sharing this key run at most --max-concurrency at once.")
@click.option("--max-concurrency", type=click.IntRange(1, 10000), default=None, help="With --concurrency-key (1).")
@click.option("--wait", is_flag=True, help="Follow the task to its end and print its result.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@click.option(
    "--from-file",
    default=None,
    help="Submit every task of a JSON Lines file (- for stdin), one POST /v1/tasks body a line, in batches of "
    f"up to {SUBMIT_BATCH_MAX}; prints their ids. Checked whole first: a bad line sends nothing.",
)
@url_option
@json_option
def task_submit(
    type_: str | None,
    route: str | None,
    priority: str | None,
    capabilities: tuple[str, ...],
    payload: str | None,
    payload_file: str | None,
    max_retries: int | None,
    claim_ttl: float | None,
    idempotency_key: str | None,
    concurrency_key: str | None,
    max_concurrency: int | None,
    wait: bool,
    timeout: float | None,
    from_file: str | None,
    url: str,
    as_json: bool,
) -> None:
    """Submit a task; prints its id (or, with --wait, its result). --from-file submits many."""
    if from_file is not None:
        ctx = click.get_current_context()
        given = [
            f"--{p.name.replace('_', '-')}"
            for p in ctx.command.params
            if p.name not in ("from_file", "url", "as_json", "profile")
            and ctx.get_parameter_source(p.name or "") is ParameterSource.COMMANDLINE
        ]
        if given:
            raise click.UsageError(f"--from-file takes every task from the file; drop {', '.join(given)}")
        _submit_file(url, from_file, as_json)
        return
    if type_ is None:
        raise click.UsageError("give --type (one task) or --from-file (many)")
    body = load_payload(payload, payload_file)
    with client(url) as c:
        t = c.submit(
            type_,
            body,
            priority=priority,
            capabilities=list(capabilities) or None,
            route=route,
            max_retries=max_retries,
            claim_ttl=claim_ttl,
            idempotency_key=idempotency_key,
            concurrency_key=concurrency_key,
            max_concurrency=max_concurrency,
        )
        warning = None if type_ == APPROVAL else nobody_serves(c, list(capabilities) or [type_], route)
        if warning:
            click.echo(warning, err=True)
        if not wait:
            emit(t, as_json, lambda d: d["id"])
            return
        try:
            click.echo(f"submitted {t['id']}; waiting (Ctrl-C stops waiting, not the task)", err=True)
            t = c.wait_for(t["id"], timeout=timeout)
        except TimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            warning = nobody_serves(c, list(capabilities) or [type_], route)
            if warning:
                click.echo(warning, err=True)
            click.echo(f"it goes on: mcs task watch {t['id']}, or mcs task cancel {t['id']}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(
                f"\ninterrupted; task {t['id']} goes on: follow it with `mcs task watch {t['id']}`, "
                f"cancel it with `mcs task cancel {t['id']}`",
                err=True,
            )
            sys.exit(130)
    if t["state"] == "completed":
        emit(t if as_json else t.get("result"), True)
        return
    if as_json:
        emit(t, True)
    error = t.get("error")
    why = "" if error is None else f": {error}" if isinstance(error, str) else f": {json.dumps(error)}"
    click.echo(f"task {t['id']} ended {t['state']}{why}", err=True)
    sys.exit(1)


BATCH_BYTES = 512 * 1024  # JSON bytes per batch request at most: half the api's default MCS_MAX_BODY_BYTES


def _read_jsonl(path: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, task body) for each non-blank line, every one checked against the api's own schema;
    a bad line exits 1 with one line naming it, before anything is sent."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        _fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError:
        _fail(f"{path} is not UTF-8 text")
    from pydantic import ValidationError

    from mcs.api.schemas import BatchTask  # here, not at the top: it costs a fraction of a second

    source = "stdin" if path == "-" else path
    bodies: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            _fail(f"{source} line {number}: not valid JSON (column {exc.colno}): {exc.msg}; nothing was sent")
        if not isinstance(body, dict):
            _fail(f"{source} line {number}: a task is a JSON object (a POST /v1/tasks body); nothing was sent")
        try:
            BatchTask.model_validate(body)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err.get("loc", ())) or "body"
            _fail(f"{source} line {number}: {where}: {err.get('msg')}; nothing was sent")
        bodies.append((number, body))
    if not bodies:
        _fail(f"{source} holds no task (one JSON object a line)")
    return bodies


def _fail(message: str) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def _batches(bodies: list[tuple[int, dict[str, Any]]]) -> list[list[tuple[int, dict[str, Any]]]]:
    """Runs of at most SUBMIT_BATCH_MAX tasks and BATCH_BYTES of JSON (a bigger task goes alone)."""
    out: list[list[tuple[int, dict[str, Any]]]] = []
    size = 0
    for entry in bodies:
        length = len(json.dumps(entry[1])) + 2
        if not out or len(out[-1]) >= SUBMIT_BATCH_MAX or size + length > BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(entry)
        size += length
    return out


RATE_WAIT = 1.0  # seconds before tasks refused by the submit rate (429 rate_limited) are sent again


def _submit_file(url: str, path: str, as_json: bool) -> None:
    """Submit a JSON Lines file in batches; ids (or --json results) on stdout in file order, refusals on
    stderr by line. A batch is one transaction; tasks the submit rate refused are sent again after
    RATE_WAIT (the rate always lets them in); a request refused as a whole stops there, earlier batches in."""
    bodies = _read_jsonl(path)
    results: list[dict[str, Any]] = []
    refused = 0
    with client(url) as c:
        for batch in _batches(bodies):
            final: dict[int, dict[str, Any]] = {}
            pending = batch
            while pending:
                try:
                    answer = c.submit_batch([body for _, body in pending])
                except McsApiError as exc:
                    if as_json:
                        emit({"results": results}, True)
                    sent = f"lines {bodies[0][0]}-{batch[0][0] - 1} were sent (see above); " if results else ""
                    _fail(
                        f"{exc.message} ({exc.code}, HTTP {exc.status}); {sent}lines {pending[0][0]}-"
                        f"{bodies[-1][0]} were not submitted"
                    )
                again = []
                for (number, body), result in zip(pending, answer["results"], strict=True):
                    if result.get("error", {}).get("code") == "rate_limited":
                        again.append((number, body))
                    else:
                        final[number] = result
                if again:
                    wait = f"{len(again)} tasks wait for the submit rate; sending them again in {RATE_WAIT:g} s"
                    click.echo(wait, err=True)
                    time.sleep(RATE_WAIT)
                pending = again
            for number, _ in batch:
                result = {"line": number} | final[number] | {"index": len(results)}
                results.append(result)
                if "task" in result:
                    if not as_json:
                        click.echo(result["task"]["id"])
                else:
                    refused += 1
                    error = result["error"]
                    click.echo(
                        f"error: line {number}: {error['message']} ({error['code']}, HTTP {result['status']})",
                        err=True,
                    )
    if as_json:
        emit({"results": results}, True)
    if refused:
        _fail(f"{refused} of {len(bodies)} tasks were refused (the others were submitted)")


@task.command("list")
@click.option("--state", type=click.Choice(STATES), default=None, help="Only tasks in this state.")
@click.option("--type", "type_", default=None)
@click.option("--agent", default=None)
@click.option("--parent", default=None)
@click.option("--since", default=None, help="Only tasks changed in this window (90s, 30m, 1h, 2d) or since a time.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None)
@url_option
@json_option
def task_list(
    state: str | None,
    type_: str | None,
    agent: str | None,
    parent: str | None,
    since: str | None,
    limit: int,
    cursor: str | None,
    url: str,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    with client(url) as c:
        page = c.list_tasks(
            state=state, type=type_, agent=agent, parent=parent, updated_after=since, limit=limit, cursor=cursor
        )

    def human(p: dict[str, Any]) -> str:
        rows = [f"{'ID':<36} {'STATE':<9} {'PRIORITY':<8} {'TYPE':<20} {'AGENT':<16} CREATED"]
        for t in p["tasks"]:
            rows.append(
                f"{t['id']:<36} {t['state']:<9} {t['priority']:<8} {t['type']:<20} "
                f"{t['assigned_to'] or '-':<16} {t['created_at']}"
            )
        if p["next_cursor"]:
            rows.append(f"more: --cursor {p['next_cursor']}")
        return "\n".join(rows)

    emit(page, as_json, human)


@task.command("show")
@click.argument("task_id", metavar="ID")
@click.option("--result", "only_result", is_flag=True, help="Print only the result (JSON).")
@url_option
@json_option
def task_show(task_id: str, only_result: bool, url: str, as_json: bool) -> None:
    """Show one task, its payload and result. ID may be a unique prefix of 8 or more characters."""
    with client(url) as c:
        t = c.get_task(resolve_task_id(c, task_id))
    if only_result:
        emit(t.get("result"), True)
    else:
        emit(t, as_json, _task_human)


def _event_line(e: dict[str, Any]) -> str:
    detail = f" {json.dumps(e['detail'])}" if e.get("detail") else ""
    return f"{e['at']}  {e['kind']:<14} {e['actor']}{detail}"


@task.command("events")
@click.argument("task_id", metavar="ID")
@url_option
@json_option
def task_events(task_id: str, url: str, as_json: bool) -> None:
    """Show a task's audit trail (ID: or a unique prefix of 8+ characters)."""
    with client(url) as c:
        emit(c.events(resolve_task_id(c, task_id)), as_json, lambda evs: "\n".join(_event_line(e) for e in evs))


@task.command("cancel")
@click.argument("task_id", metavar="ID")
@url_option
@json_option
def task_cancel(task_id: str, url: str, as_json: bool) -> None:
    """Cancel a task and its children (ID: or a unique prefix of 8+ characters)."""
    with client(url) as c:
        emit(c.cancel(resolve_task_id(c, task_id)), as_json, lambda t: f"{t['id']} {t['state']}")


class _Ended(Exception):
    """The watched task had already ended when the stream opened."""


@task.command("watch")
@click.argument("task_id", metavar="ID")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@url_option
@json_option
def task_watch(task_id: str, timeout: float | None, url: str, as_json: bool) -> None:
    """Print a task's events as they happen until it ends (ID: or a unique prefix of 8+ characters): its
    history, then live from the event stream (resuming after a dropped connection)."""
    seen: set[tuple[str, str]] = set()

    def show(e: dict[str, Any]) -> None:
        key = (e["at"], e["kind"])
        if key not in seen:
            seen.add(key)
            click.echo(json.dumps(e) if as_json else _event_line(e))

    def too_long(signum: int, frame: Any) -> None:
        raise TimeoutError(f"task {task_id} did not end within {timeout} s")

    with client(url) as c:
        task_id = resolve_task_id(c, task_id)

        def history() -> None:  # once the stream is open, so nothing falls between the two
            for e in c.events(task_id):
                show(e)
            if c.get_task(task_id)["state"] in TERMINAL:
                raise _Ended

        if timeout is not None:
            signal.signal(signal.SIGALRM, too_long)
            signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            for e in c.stream_events(task=task_id, on_open=history):
                show(e)
                if e["kind"] in TERMINAL:
                    break
        except _Ended:
            pass
        except KeyboardInterrupt:
            click.echo(f"\nstopped watching; task {task_id} goes on (mcs task cancel {task_id} stops it)", err=True)
            sys.exit(130)
        finally:
            if timeout is not None:
                signal.setitimer(signal.ITIMER_REAL, 0)
        t = c.get_task(task_id)
    if t["state"] != "completed":
        sys.exit(1)


@task.command("approve")
@click.argument("task_id", metavar="ID")
@click.option("--note", default=None, help="A note kept in the result.")
@url_option
@json_option
def task_approve(task_id: str, note: str | None, url: str, as_json: bool) -> None:
    """Approve a waiting approval task (the admin or its submitter; ID: or a unique prefix of 8+)."""
    with client(url) as c:
        emit(c.approve(resolve_task_id(c, task_id), note), as_json, lambda t: f"{t['id']} {t['state']}")


@task.command("deny")
@click.argument("task_id", metavar="ID")
@click.option("--reason", required=True, help="Why: the task's error.")
@url_option
@json_option
def task_deny(task_id: str, reason: str, url: str, as_json: bool) -> None:
    """Deny a waiting approval task: it fails with the reason."""
    with client(url) as c:
        emit(c.deny(resolve_task_id(c, task_id), reason), as_json, lambda t: f"{t['id']} {t['state']}")


@task.command("retry")
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--state", type=click.Choice(["failed", "canceled"]), default=None, help="Retry every task in it.")
@click.option("--type", "type_", default=None, help="With --state: only tasks of this type.")
@click.option("--since", default=None, help="With --state: only tasks that ended in this window (90s, 30m, 1h, 2d).")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True, help="With --state: at most.")
@click.option("--dry-run", is_flag=True, help="List what would be retried; change nothing.")
@url_option
@json_option
def task_retry(
    task_id: str | None,
    state: str | None,
    type_: str | None,
    since: str | None,
    limit: int,
    dry_run: bool,
    url: str,
    as_json: bool,
) -> None:
    """Put a failed or canceled task back to the queue, attempts reset; or, with --state, every matching
    task (a dead-letter redrive). Prints each id retried and a count."""
    if (task_id is None) == (state is None):
        raise click.UsageError("give a task ID, or --state (with --type, --since) to retry many")
    if task_id is not None and (type_ or since):
        raise click.UsageError("--type and --since go with --state")
    with client(url) as c:
        if task_id is not None:
            ids = [resolve_task_id(c, task_id)]
        else:
            ids = _matching(c, state=state, type_=type_, since=since, limit=limit)
        done: list[dict[str, Any]] = []
        failures = 0
        for one in ids:
            if dry_run:
                done.append({"id": one, "state": state or "?", "dry_run": True})
                continue
            try:
                done.append(c.retry(one))
            except McsApiError as exc:
                if task_id is not None:
                    raise
                failures += 1
                click.echo(f"{one}: {exc}", err=True)
    if as_json:
        emit(
            {
                "retried": [] if dry_run else [t["id"] for t in done],
                "would_retry": [t["id"] for t in done] if dry_run else [],
                "count": len(done),
            },
            True,
        )
    else:
        for t in done:
            click.echo(t["id"])
        verb = "would retry" if dry_run else "retried"
        click.echo(f"{verb} {len(done)} task(s)" + (f"; {failures} refused" if failures else ""), err=True)
    if failures:
        sys.exit(1)


def _matching(c: Client, *, state: str | None, type_: str | None, since: str | None, limit: int) -> list[str]:
    """Every top-level task id matching the filters, newest first, read page by page up to `limit`."""
    ids: list[str] = []
    cursor = None
    while len(ids) < limit:
        page = c.list_tasks(
            state=state, type=type_, updated_after=since, limit=min(500, limit - len(ids)), cursor=cursor
        )
        ids += [t["id"] for t in page["tasks"] if t.get("parent_id") is None]
        cursor = page["next_cursor"]
        if not cursor:
            break
    return ids[:limit]
