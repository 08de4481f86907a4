"""The `mcs` command: the server processes, admin, tasks and agents. Data goes to stdout, messages to
stderr; `--json` prints the API's JSON; a failure exits non-zero with a one-line message.

Secrets are read from the environment (or the admin token file that `mcs up` writes), never from command
arguments, so they stay out of shell history and `ps`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from mcs.client import TERMINAL, Client, McsApiError, McsUnavailable

SERVER_PROCESSES = ("api", "dispatcher", "watchdog", "notifier")


def _json_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")(fn)


def _url_option(fn: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url",
        envvar="MCS_URL",
        default="http://127.0.0.1:8080",
        show_default=True,
        show_envvar=True,
        help="The MCS API.",
    )(fn)


def _client(url: str) -> Client:
    return Client.from_env(url=url)


def _emit(data: Any, as_json: bool, human: Callable[[Any], str] | None = None) -> None:
    if as_json or human is None:
        click.echo(json.dumps(data, indent=2, sort_keys=False))
    else:
        click.echo(human(data))


class McsGroup(click.Group):
    """Turns client errors into one line on stderr and exit code 1, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except McsApiError as exc:
            click.echo(f"error: {exc.message} ({exc.code}, HTTP {exc.status})", err=True)
            ctx.exit(1)
        except McsUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except TimeoutError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except Exception as exc:
            from mcs.errors import McsError

            if isinstance(exc, McsError):
                click.echo(f"error: {exc}", err=True)
                ctx.exit(1)
            raise


@click.group(cls=McsGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mcs")
def main() -> None:
    """MCS, the Mesh Coordination Server: tasks, signed webhooks and shared memory for a mesh of AI agents.

    Server settings come from MCS_* environment variables (MCS_DB, MCS_HOST, MCS_PORT, MCS_ADMIN_TOKEN, ...;
    see the README). Client commands use MCS_URL and MCS_ADMIN_TOKEN or MCS_AGENT_ID + MCS_AGENT_SECRET.
    """


# ---------------------------------------------------------------- server processes


EXIT_CANNOT_START = 78  # EX_CONFIG: restarting will not help; `mcs up` stops everything on it


def _settings() -> Any:
    from mcs.config import Settings

    return Settings.from_env()


def _serve(name: str, run: Callable[[Any], Any]) -> None:
    """Run a server process; a start-up problem (port in use, bad setting, unusable database) is one line
    on stderr and exit code 78, which tells `mcs up` that restarting would not help."""
    import errno

    from mcs.errors import McsError

    try:
        run(_settings())
    except OSError as exc:
        why = "the port is already in use (another MCS?)" if exc.errno == errno.EADDRINUSE else str(exc)
        click.echo(f"mcs {name}: cannot start: {why}", err=True)
        sys.exit(EXIT_CANNOT_START)
    except McsError as exc:
        click.echo(f"mcs {name}: cannot start: {exc}", err=True)
        sys.exit(EXIT_CANNOT_START)


@main.command()
def up() -> None:
    """Run api, dispatcher, watchdog and notifier as four processes (the embedded default; env: MCS_DB,
    MCS_HOST, MCS_PORT, MCS_ADMIN_TOKEN)."""
    from mcs import supervisor
    from mcs.process import setup_logging

    setup_logging()
    code: list[int] = []
    _serve("up", lambda settings: code.append(supervisor.main(settings)))
    sys.exit(code[0] if code else 0)


@main.command()
def api() -> None:
    """Run the HTTP API alone (env: MCS_HOST, MCS_PORT, MCS_DB, MCS_ADMIN_TOKEN)."""
    from mcs.api.server import main as run

    _serve("api", run)


@main.command()
def dispatcher() -> None:
    """Run the dispatcher alone (env: MCS_DB, MCS_DISPATCHER_METRICS_PORT)."""
    from mcs.dispatcher import main as run

    _serve("dispatcher", run)


@main.command()
def watchdog() -> None:
    """Run the watchdog alone (env: MCS_DB, MCS_WATCHDOG_INTERVAL, MCS_WATCHDOG_METRICS_PORT)."""
    from mcs.watchdog import main as run

    _serve("watchdog", run)


@main.command()
def notifier() -> None:
    """Run the notifier alone (env: MCS_DB, MCS_NOTIFIER_METRICS_PORT, MCS_ALERT_WEBHOOK_URL)."""
    from mcs.notifier import main as run

    _serve("notifier", run)


@main.command()
@_json_option
def migrate(as_json: bool) -> None:
    """Apply pending database migrations (env: MCS_DB)."""
    from mcs.store import Store, sqlite_version

    settings = _settings()
    store = Store(settings.db, synchronous=settings.synchronous)
    applied = store.migrate()
    store.close()
    data = {"db": str(settings.db), "applied": applied, "sqlite_version": sqlite_version()}
    _emit(data, as_json, lambda d: f"applied {', '.join(d['applied'])}" if d["applied"] else "up to date")


@main.command()
@click.argument("process", type=click.Choice(SERVER_PROCESSES))
@click.option("--max-age", default=60.0, show_default=True, help="Seconds a heartbeat may be old.")
def check(process: str, max_age: float) -> None:
    """Exit 0 if PROCESS wrote its heartbeat recently, 1 if not (for container healthchecks; env: MCS_DB)."""
    from mcs.store import Store
    from mcs.store import outbox as outbox_store

    settings = _settings()
    if process == "api":
        import httpx

        try:
            httpx.get(f"http://{settings.host}:{settings.port}/healthz", timeout=5).raise_for_status()
        except httpx.HTTPError as exc:
            click.echo(f"api unhealthy: {exc}", err=True)
            sys.exit(1)
        click.echo("api ok")
        return
    store = Store(settings.db, synchronous=settings.synchronous)
    beats = store.read(outbox_store.heartbeats)
    store.close()
    age = time.time() - beats.get(process, 0.0)
    if age > max_age:
        click.echo(f"{process}: no heartbeat for {age:.0f} s", err=True)
        sys.exit(1)
    click.echo(f"{process} ok (heartbeat {age:.1f} s ago)")


# ---------------------------------------------------------------- admin


@main.group()
def admin() -> None:
    """Admin commands (env: MCS_ADMIN_TOKEN, or the token file `mcs up` writes)."""


@admin.group("agent")
def admin_agent() -> None:
    """Create, rotate and delete agents."""


def _secrets_human(d: dict[str, Any]) -> str:
    return (
        f"agent {d['name']}\n  MCS_AGENT_ID={d['name']}\n  MCS_AGENT_SECRET={d['secret']}\n"
        f"  webhook secret (verify webhooks with it): {d['webhook_secret']}\n"
        "These secrets are shown once; store them now."
    )


@admin_agent.command("create")
@click.argument("name")
@click.option("--capability", "-c", "capabilities", multiple=True, help="A capability (repeatable).")
@_url_option
@_json_option
def admin_agent_create(name: str, capabilities: tuple[str, ...], url: str, as_json: bool) -> None:
    """Create agent NAME; prints its secret and webhook secret once."""
    with _client(url) as c:
        _emit(c.create_agent(name, list(capabilities)), as_json, _secrets_human)


@admin_agent.command("rotate")
@click.argument("name")
@_url_option
@_json_option
def admin_agent_rotate(name: str, url: str, as_json: bool) -> None:
    """Issue new secrets for NAME (the old ones stop working at once)."""
    with _client(url) as c:
        _emit(c.rotate_agent(name), as_json, _secrets_human)


@admin_agent.command("delete")
@click.argument("name")
@_url_option
@_json_option
def admin_agent_delete(name: str, url: str, as_json: bool) -> None:
    """Delete agent NAME; work assigned to it goes back to the queue."""
    with _client(url) as c:
        c.delete_agent(name)
    _emit({"deleted": name}, as_json, lambda d: f"deleted {d['deleted']}")


# ---------------------------------------------------------------- agents


@main.group()
def agent() -> None:
    """See the agents of the mesh, or run one (`mcs agent run`, `mcs agent llm`)."""


def _agents_human(agents: list[dict[str, Any]]) -> str:
    if not agents:
        return "no agents"
    rows = [f"{'NAME':<20} {'STATUS':<8} {'LAST SEEN':<25} CAPABILITIES"]
    for a in agents:
        rows.append(f"{a['name']:<20} {a['status']:<8} {a['last_seen'] or '-':<25} {','.join(a['capabilities'])}")
    return "\n".join(rows)


@agent.command("list")
@_url_option
@_json_option
def agent_list(url: str, as_json: bool) -> None:
    """List agents with their status and capabilities."""
    with _client(url) as c:
        _emit(c.list_agents(), as_json, _agents_human)


@agent.command("show")
@click.argument("name")
@_url_option
@_json_option
def agent_show(name: str, url: str, as_json: bool) -> None:
    """Show one agent."""
    with _client(url) as c:
        _emit(c.get_agent(name), as_json, lambda a: _agents_human([a]))


_AGENT_ENV_HELP = (
    "Credentials come from the environment only (never arguments): MCS_AGENT_ID (or --name), "
    "MCS_AGENT_SECRET, and MCS_WEBHOOK_SECRET (to verify webhooks; not needed with --pull)."
)


def _agent_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options every runnable agent shares: who it is, how work reaches it, how much at once."""
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--capability", "-c", "capabilities", multiple=True, required=True, help="Repeatable: what it can do."
        ),
        click.option("--name", envvar="MCS_AGENT_ID", show_envvar=True, help="The agent's name (MCS_AGENT_ID)."),
        click.option(
            "--listen",
            envvar="MCS_AGENT_LISTEN",
            show_envvar=True,
            default="127.0.0.1:0",
            show_default=True,
            help="HOST:PORT of the webhook receiver (port 0: any free port).",
        ),
        click.option("--pull", is_flag=True, help="No webhooks: long-poll for work (no inbound connections)."),
        click.option(
            "--notify-url",
            envvar="MCS_AGENT_NOTIFY_URL",
            show_envvar=True,
            help="The URL MCS should call, when it is not the listen address (proxy, tunnel, container).",
        ),
        click.option(
            "--concurrency", type=click.IntRange(1, 1000), default=1, show_default=True, help="Tasks at once."
        ),
        click.option(
            "--shutdown-grace",
            type=click.FloatRange(0),
            default=30.0,
            show_default=True,
            help="Seconds running tasks get to finish on SIGINT/SIGTERM before they are released.",
        ),
        _url_option,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _run_agent(handler: Any, opts: dict[str, Any]) -> None:
    """Build the Agent from the shared options and serve until SIGINT/SIGTERM; problems are one line."""
    import errno

    from mcs.agent import Agent
    from mcs.process import setup_logging

    setup_logging()
    agent = Agent(
        handler,
        capabilities=list(opts["capabilities"]),
        url=opts["url"],
        name=opts["name"],
        listen=None if opts["pull"] else opts["listen"],
        notify_url=opts["notify_url"],
        concurrency=opts["concurrency"],
        shutdown_grace=opts["shutdown_grace"],
    )
    try:
        agent.run()
    except OSError as exc:
        why = "the address is already in use" if exc.errno == errno.EADDRINUSE else str(exc)
        raise click.ClickException(f"cannot listen on {opts['listen']}: {why}") from None


@agent.command("run", epilog=_AGENT_ENV_HELP)
@click.argument("handler")
@_agent_options
def agent_run(handler: str, **opts: Any) -> None:
    """Run HANDLER (module:function or file.py:function) as an agent until SIGINT/SIGTERM.

    The function gets each task (task.id, task.type, task.payload, task.attempts, ...) and returns the
    result (any JSON value). Raising mcs.agent.PermanentError fails the task for good; any other exception
    fails it and MCS retries it. Async functions work too.
    """
    from mcs.agent.loader import load_handler

    _run_agent(load_handler(handler), opts)


@agent.command(
    "llm", epilog=_AGENT_ENV_HELP + " The model server's API key, if it needs one: MCS_LLM_API_KEY or OPENAI_API_KEY."
)
@click.option(
    "--base-url",
    envvar="MCS_LLM_BASE_URL",
    show_envvar=True,
    required=True,
    help="The OpenAI-compatible API, e.g. http://127.0.0.1:11434/v1 for Ollama.",
)
@click.option("--model", "-m", envvar="MCS_LLM_MODEL", show_envvar=True, required=True, help="The model to ask.")
@click.option("--system", help="A system prompt for tasks that bring none.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds to wait for one answer; longer fails the task (retryably).",
)
@click.option("--temperature", type=float, help="Sampling temperature, unless the task says otherwise.")
@click.option("--max-tokens", type=click.IntRange(1), help="Answer length limit, unless the task says otherwise.")
@_agent_options
def agent_llm(
    base_url: str,
    model: str,
    system: str | None,
    timeout: float,
    temperature: float | None,
    max_tokens: int | None,
    **opts: Any,
) -> None:
    """Answer tasks with a model behind any OpenAI-compatible chat API (Ollama, vLLM, llama.cpp, OpenAI).

    A task's payload is {"prompt": ..., "system"?: ..., "url"?: material to fetch and include}; the result
    is {"answer": ..., "model": ..., "usage": ...}. The model server's timeouts, 429 and 5xx fail the task
    retryably; its other 4xx (wrong key, unknown model) fail it for good.
    """
    import os

    from mcs.agent.llm import API_KEY_ENV, ChatAgent

    api_key = next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)), None)
    try:
        handler = ChatAgent(
            base_url=base_url,
            model=model,
            api_key=api_key,
            system=system,
            timeout=timeout,
            temperature=temperature,
            max_tokens=max_tokens,
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--base-url") from None
    _run_agent(handler, opts)


# ---------------------------------------------------------------- tasks


@main.group()
def task() -> None:
    """Submit and follow tasks."""


def _task_human(t: dict[str, Any]) -> str:
    lines = [
        f"{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
        for k, v in t.items()
        if k not in ("payload", "result") and v not in (None, [], "")
    ]
    if t.get("result") is not None:
        lines.append("result: " + json.dumps(t["result"], indent=2))
    return "\n".join(lines)


def _load_payload(payload: str | None, payload_file: str | None) -> Any:
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    try:
        if payload_file is not None:
            text = sys.stdin.read() if payload_file == "-" else Path(payload_file).read_text()
            return json.loads(text)
        return json.loads(payload) if payload is not None else None
    except OSError as exc:
        raise click.BadParameter(f"cannot read {payload_file}: {exc.strerror}", param_hint="the file") from exc
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="the JSON value") from exc


@task.command("submit")
@click.option("--type", "-t", "type_", required=True, help="The task type (also the default capability).")
@click.option("--route", "-r", default=None, help="any (default), all (fan out), or an agent name.")
@click.option("--priority", "-p", type=click.Choice(["urgent", "normal", "low"]), default=None)
@click.option("--capability", "-c", "capabilities", multiple=True, help="A required capability (repeatable).")
@click.option("--payload", default=None, help="The payload as JSON.")
@click.option("--payload-file", default=None, help="A file holding the JSON payload (- for stdin).")
@click.option("--max-retries", type=click.IntRange(0, 100), default=None)
@click.option("--claim-ttl", type=click.FloatRange(min=0, min_open=True), default=None, help="Lease seconds.")
@click.option("--idempotency-key", default=None, help="Submit at most once with this key.")
@click.option("--wait", is_flag=True, help="Follow the task to its end and print its result.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after this many seconds.")
@_url_option
@_json_option
def task_submit(
    type_: str,
    route: str | None,
    priority: str | None,
    capabilities: tuple[str, ...],
    payload: str | None,
    payload_file: str | None,
    max_retries: int | None,
    claim_ttl: float | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float | None,
    url: str,
    as_json: bool,
) -> None:
    """Submit a task; prints its id (or, with --wait, its result)."""
    body = _load_payload(payload, payload_file)
    with _client(url) as c:
        t = c.submit(
            type_,
            body,
            priority=priority,
            capabilities=list(capabilities) or None,
            route=route,
            max_retries=max_retries,
            claim_ttl=claim_ttl,
            idempotency_key=idempotency_key,
        )
        if not wait:
            _emit(t, as_json, lambda d: d["id"])
            return
        click.echo(f"submitted {t['id']}; waiting", err=True)
        t = c.wait_for(t["id"], timeout=timeout)
    _emit(t if as_json else t.get("result"), as_json or True)
    if t["state"] != "completed":
        click.echo(f"task {t['id']} ended {t['state']}: {t.get('error')}", err=True)
        sys.exit(1)


@task.command("list")
@click.option("--state", default=None)
@click.option("--type", "type_", default=None)
@click.option("--agent", default=None)
@click.option("--parent", default=None)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None)
@_url_option
@_json_option
def task_list(
    state: str | None,
    type_: str | None,
    agent: str | None,
    parent: str | None,
    limit: int,
    cursor: str | None,
    url: str,
    as_json: bool,
) -> None:
    """List tasks, newest first."""
    with _client(url) as c:
        page = c.list_tasks(state=state, type=type_, agent=agent, parent=parent, limit=limit, cursor=cursor)

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

    _emit(page, as_json, human)


@task.command("show")
@click.argument("task_id")
@_url_option
@_json_option
def task_show(task_id: str, url: str, as_json: bool) -> None:
    """Show one task."""
    with _client(url) as c:
        _emit(c.get_task(task_id), as_json, _task_human)


def _event_line(e: dict[str, Any]) -> str:
    detail = f" {json.dumps(e['detail'])}" if e.get("detail") else ""
    return f"{e['at']}  {e['kind']:<14} {e['actor']}{detail}"


@task.command("events")
@click.argument("task_id")
@_url_option
@_json_option
def task_events(task_id: str, url: str, as_json: bool) -> None:
    """Show a task's audit trail."""
    with _client(url) as c:
        _emit(c.events(task_id), as_json, lambda evs: "\n".join(_event_line(e) for e in evs))


@task.command("cancel")
@click.argument("task_id")
@_url_option
@_json_option
def task_cancel(task_id: str, url: str, as_json: bool) -> None:
    """Cancel a task (and its children)."""
    with _client(url) as c:
        _emit(c.cancel(task_id), as_json, lambda t: f"{t['id']} {t['state']}")


@task.command("watch")
@click.argument("task_id")
@click.option("--timeout", type=float, default=None, help="Give up after this many seconds.")
@_url_option
@_json_option
def task_watch(task_id: str, timeout: float | None, url: str, as_json: bool) -> None:
    """Print a task's events as they happen until it ends."""
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    with _client(url) as c:
        while True:
            events = c.events(task_id)
            for e in events[seen:]:
                click.echo(json.dumps(e) if as_json else _event_line(e))
            seen = len(events)
            t = c.get_task(task_id)
            if t["state"] in TERMINAL and len(c.events(task_id)) == seen:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} is still {t['state']}")
            time.sleep(0.3)
    if t["state"] != "completed":
        sys.exit(1)


# ---------------------------------------------------------------- shared memory


@main.group()
def mem() -> None:
    """Shared memory: namespaces mesh, agent:NAME and private:NAME."""


def _item_human(item: dict[str, Any]) -> str:
    meta = f"version {item['version']}, by {item['updated_by']} at {item['updated_at']}"
    if item.get("tags"):
        meta += f", tags {','.join(item['tags'])}"
    if item.get("expires_at"):
        meta += f", expires {item['expires_at']}"
    if "value" in item:
        click.echo(meta, err=True)
        return json.dumps(item["value"], indent=2)
    return f"{item['key']}\t{meta}"


@mem.command("get")
@click.argument("ns")
@click.argument("key")
@_url_option
@_json_option
def mem_get(ns: str, key: str, url: str, as_json: bool) -> None:
    """Print the value of KEY in NS (metadata on stderr)."""
    with _client(url) as c:
        _emit(c.mem_get(ns, key), as_json, _item_human)


@mem.command("put")
@click.argument("ns")
@click.argument("key")
@click.option("--value", default=None, help="The value as JSON.")
@click.option("--file", "file_", default=None, help="A file holding the JSON value (- for stdin).")
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), default=None, help="Seconds until it expires.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--if-match", type=click.IntRange(min=1), default=None, help="Only if the key is at this version.")
@click.option("--if-absent", is_flag=True, help="Only if the key does not exist (If-None-Match: *).")
@_url_option
@_json_option
def mem_put(
    ns: str,
    key: str,
    value: str | None,
    file_: str | None,
    ttl: float | None,
    tags: tuple[str, ...],
    if_match: int | None,
    if_absent: bool,
    url: str,
    as_json: bool,
) -> None:
    """Write KEY in NS; prints its new version."""
    if value is None and file_ is None:
        raise click.UsageError("give --value or --file")
    data = _load_payload(value, file_)
    with _client(url) as c:
        item = c.mem_put(ns, key, data, ttl=ttl, tags=list(tags), if_match=if_match, if_none_match=if_absent)
    _emit(item, as_json, lambda i: f"{i['ns']} {i['key']} version {i['version']}")


@mem.command("del")
@click.argument("ns")
@click.argument("key")
@click.option("--if-match", type=click.IntRange(min=1), default=None, help="Only if the key is at this version.")
@_url_option
@_json_option
def mem_del(ns: str, key: str, if_match: int | None, url: str, as_json: bool) -> None:
    """Delete KEY from NS."""
    with _client(url) as c:
        c.mem_delete(ns, key, if_match=if_match)
    _emit({"ns": ns, "key": key, "deleted": True}, as_json, lambda d: f"deleted {d['ns']} {d['key']}")


@mem.command("ls")
@click.argument("ns")
@click.option("--prefix", default=None, help="Only keys starting with this.")
@click.option("--tag", default=None, help="Only keys with this tag.")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--cursor", default=None)
@_url_option
@_json_option
def mem_ls(
    ns: str, prefix: str | None, tag: str | None, limit: int, cursor: str | None, url: str, as_json: bool
) -> None:
    """List the keys of NS (without values)."""
    with _client(url) as c:
        page = c.mem_list(ns, prefix=prefix, tag=tag, limit=limit, cursor=cursor)

    def human(p: dict[str, Any]) -> str:
        rows = [_item_human(i) for i in p["items"]] or ["no keys"]
        if p["next_cursor"]:
            rows.append(f"more: --cursor {p['next_cursor']}")
        return "\n".join(rows)

    _emit(page, as_json, human)


# ---------------------------------------------------------------- review


class _ReviewGroup(McsGroup):
    """`mcs review PATH` runs a review; `mcs review agents` starts the analyzer agents. A first argument
    that is not a subcommand is the PATH of `mcs review run` (so a folder named `agents` is `./agents`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@main.group(cls=_ReviewGroup)
def review() -> None:
    """Multi-agent code review with consensus: `mcs review PATH`, `mcs review agents`.

    `mcs review PATH` packs the Python code under PATH, fans it out to every online agent with the
    mcs-review capability, merges their findings (consensus: how many agents raised each) and writes
    review.html and review.json. `mcs review agents` runs offline analyzer reviewers (ruff, pyflakes,
    bandit, vulture, pylint), one agent process each.
    """


@review.command("run")
@click.argument("path", type=click.Path(exists=True, file_okay=True, dir_okay=True, path_type=Path))
@click.option(
    "--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True,
    help="Folder for review.html and review.json.",
)  # fmt: skip
@click.option(
    "--include", "-i", "include", multiple=True, help="File pattern to pack (repeatable; default *.py, *.pyi)."
)
@click.option("--capability", "-c", default="mcs-review", show_default=True, help="Who reviews.")
@click.option(
    "--prompt-code/--no-prompt-code", default=True, show_default=True,
    help="Also put the code into the prompt, for LLM reviewers (about doubles the size).",
)  # fmt: skip
@click.option("--priority", "-p", type=click.Choice(["urgent", "normal", "low"]), default=None)
@click.option("--timeout", type=click.FloatRange(min=1), default=900.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--max-bytes", envvar="MCS_MAX_BODY_BYTES", show_envvar=True, type=click.IntRange(min=1024),
    default=1024 * 1024, show_default=True, help="The server's request size limit.",
)  # fmt: skip
@_url_option
@_json_option
def review_run(
    path: Path,
    out: Path,
    include: tuple[str, ...],
    capability: str,
    prompt_code: bool,
    priority: str | None,
    timeout: float,
    max_bytes: int,
    url: str,
    as_json: bool,
) -> None:
    """Review the code under PATH with every online reviewer; writes review.html and review.json."""
    from mcs.review import pack as packing
    from mcs.review import submit as reviewing

    try:
        # The report's folder first: finding out it cannot be written after the whole review is a waste.
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise OSError(f"{out} is not writable")
    except OSError as exc:
        click.echo(f"error: cannot write the report to {out}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    try:
        packed = packing.pack(
            path, include=include or packing.DEFAULT_INCLUDE, max_bytes=max_bytes, with_prompt_code=prompt_code
        )
        skipped = f", {len(packed.skipped_binary)} binary skipped" if packed.skipped_binary else ""
        click.echo(f"packed {len(packed.files)} files ({packed.size() / 1024:.0f} KiB{skipped})", err=True)
        with _client(url) as c:
            task = reviewing.submit(c, packed, capability=capability, priority=priority)
            click.echo(f"review task {task['id']} submitted", err=True)
            task = reviewing.follow(c, task["id"], timeout=timeout, progress=lambda s: click.echo(s, err=True))
        if task["state"] != "completed":
            raise reviewing.ReviewError(f"the review ended {task['state']}: {task.get('error')}")
        outcome = reviewing.write_report(task, packed, out)
    except (packing.PackError, reviewing.ReviewError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # the report could not be written after all (disk full, ...)
        click.echo(f"error: cannot write the report to {out}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    if as_json:
        _emit(task["result"], True)
    else:
        click.echo(reviewing.summary_text(task["result"]))
        click.echo(f"\nreport: {outcome.html_path}\njson:   {outcome.json_path}")


@review.command("agents")
@click.option("--tool", "-t", "tools", multiple=True, help="An analyzer to run (repeatable; default: all installed).")
@click.option("--capability", "-c", default="mcs-review", show_default=True, help="The capability they register.")
@click.option("--prefix", default="", help="Prefix for the agents' names (default: the tool's name).")
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Where their webhook receivers listen.")
@_url_option
def review_agents(tools: tuple[str, ...], capability: str, prefix: str, listen_host: str, url: str) -> None:
    """Run the offline analyzer reviewers (ruff, pyflakes, bandit, vulture, pylint), one agent process
    each, until Ctrl-C. Creates each agent, or rotates its secrets if it exists (needs the admin token:
    MCS_ADMIN_TOKEN or the token file `mcs up` writes). Install the analyzers with `pip install 'mcs[review]'`."""
    from mcs.review import launcher

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        installed, missing = launcher.available_tools(list(tools) or None)
        for tool in missing:
            say(f"skipping {tool}: not installed (pip install 'mcs[review]')")
        if not installed:
            raise launcher.LaunchError("no analyzer is installed: pip install 'mcs[review]'")
        with _client(url) as c:
            running = launcher.start(
                c, url=url, tools=installed, capability=capability, prefix=prefix, listen_host=listen_host, out=say
            )
            try:
                launcher.wait_online(c, running)
            except BaseException:
                launcher.stop(running)
                raise
        say(f"{len(running)} analyzer agents online ({', '.join(r.name for r in running)}); "
            "run `mcs review PATH` in another terminal; Ctrl-C stops them")  # fmt: skip
    except launcher.LaunchError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    sys.exit(launcher.supervise(running, say))
