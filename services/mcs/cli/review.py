"""`mcs review`: multi-agent code review with consensus."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mcs.cli.common import McsGroup, client, emit, json_option, url_option
from mcs.cli.root import main


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
@url_option
@json_option
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
        with client(url) as c:
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
        emit(task["result"], True)
    else:
        click.echo(reviewing.summary_text(task["result"]))
        click.echo(f"\nreport: {outcome.html_path}\njson:   {outcome.json_path}")


@review.command("agents")
@click.option("--tool", "-t", "tools", multiple=True, help="An analyzer to run (repeatable; default: all installed).")
@click.option("--capability", "-c", default="mcs-review", show_default=True, help="The capability they register.")
@click.option("--prefix", default="", help="Prefix for the agents' names (default: the tool's name).")
@click.option("--listen-host", default="127.0.0.1", show_default=True, help="Where their webhook receivers listen.")
@url_option
def review_agents(tools: tuple[str, ...], capability: str, prefix: str, listen_host: str, url: str) -> None:
    """Run the offline analyzer reviewers (ruff, pyflakes, bandit, vulture, pylint), one agent process
    each, until Ctrl-C. Creates each agent, or rotates its secrets if it exists (needs the admin token:
    MCS_ADMIN_TOKEN, or the config file and token file `mcs up` writes). Install the analyzers from the
    clone with `pip install -e '.[review]'`."""
    from mcs.review import launcher

    def say(line: str) -> None:
        click.echo(line, err=True)

    try:
        installed, missing = launcher.available_tools(list(tools) or None)
        for tool in missing:
            say(f"skipping {tool}: not installed (pip install -e '.[review]' in the clone)")
        if not installed:
            raise launcher.LaunchError("no analyzer is installed: pip install -e '.[review]' in the clone")
        with client(url) as c:
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
