"""Running an analyzer over code under review so that the code stays data: nothing in it ever runs.

The analyzers are Python programs that read the reviewed files, and some of them (pylint, through
astroid) also put the reviewed folder on `sys.path` and import things while they work: a payload that
brings a `multiprocessing/__init__.py` next to an `import multiprocessing.pool` would run on the reviewer.
So each analyzer runs as

    python -I -m mcs.review.sandbox --refuse DIR --cpu S --memory B -- TOOL ARGS...

a fresh interpreter (`-I`: no `PYTHON*` variables, no user site, no current folder on `sys.path`) that
sets its resource limits, wraps Python's import system so that no module, package or distribution
(with its entry points) under DIR can be found (`Guard`), and only then starts the tool. (`.pth` files,
`sitecustomize` and `usercustomize` under DIR are never read: Python looks for them at start-up only,
in site-packages, and `-I` leaves out the user site.) `run()` starts it from
the outside: in a throwaway working and home folder, with an environment built from an allow-list (no
MCS secret reaches the tool), in its own process group, which is killed when the wall-time runs out.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import math
import os
import resource
import runpy
import signal
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.machinery import ModuleSpec
from importlib.metadata import Distribution, DistributionFinder
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcs.config import Settings

# The only variables an analyzer sees from the agent's environment (plus HOME and TMPDIR, which point
# into the throwaway folder). Everything else, every MCS_* secret and every API key, stays behind.
ENV_ALLOW = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")
KILL_WAIT = 5.0  # seconds to collect a killed tool's last output


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one analyzer run may use; 0 is no limit. `cpu` (seconds of CPU time, all threads) and `memory`
    (bytes of address space) are enforced by the kernel (RLIMIT_CPU, RLIMIT_AS); `timeout` (seconds of
    wall time) by `run()`, which then kills the tool's whole process group."""

    timeout: float
    cpu: float
    memory: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(timeout=settings.review_timeout, cpu=settings.review_cpu, memory=settings.review_memory_bytes)


class SandboxTimeout(Exception):
    """The tool ran out of wall time and was killed with everything it started."""


class SandboxLimit(Exception):
    """The tool was stopped by a resource limit (CPU time or memory)."""


def clean_env(workdir: Path, source: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an analyzer: the allow-listed variables of `source` (os.environ), HOME and
    TMPDIR in the throwaway `workdir`, and nothing else."""
    source = dict(os.environ) if source is None else source
    env = {k: v for k, v in source.items() if k in ENV_ALLOW}
    env.setdefault("PATH", os.defpath)
    env["HOME"] = str(workdir)
    env["TMPDIR"] = str(workdir)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # ignored under -I; for anything else that starts a Python
    return env


def command(argv: Sequence[str], *, refuse: Sequence[Path], limits: Limits) -> list[str]:
    """The command line that runs `argv` (a Python module and its arguments) inside the sandbox."""
    cmd = [sys.executable, "-I", "-m", "mcs.review.sandbox", "--cpu", str(math.ceil(limits.cpu)), "--memory",
           str(limits.memory)]  # fmt: skip
    for folder in refuse:
        cmd += ["--refuse", str(folder)]
    return [*cmd, "--", *argv]


def run(
    argv: Sequence[str],
    *,
    workdir: Path,
    refuse: Sequence[Path],
    limits: Limits,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the Python module `argv[0]` (or `-c CODE`) with arguments `argv[1:]` in the sandbox, from
    `workdir`, unable to import anything under `refuse`, with the allow-listed variables of `env`
    (os.environ). SandboxTimeout when the wall time runs out, SandboxLimit when it ran out of CPU time or
    memory."""
    proc = subprocess.Popen(
        command(argv, refuse=refuse, limits=limits),
        cwd=workdir,
        env=clean_env(workdir, env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, so a timeout kills what it started too
    )
    try:
        out, err = proc.communicate(timeout=limits.timeout or None)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise SandboxTimeout(f"{argv[0]} did not finish within {limits.timeout:g} s (MCS_REVIEW_TIMEOUT)") from None
    except BaseException:
        _kill_group(proc)
        raise
    if proc.returncode == -signal.SIGXCPU:
        raise SandboxLimit(f"{argv[0]} ran out of CPU time (limit {limits.cpu:g} s, MCS_REVIEW_CPU)")
    if limits.memory and _out_of_memory(err):
        raise SandboxLimit(f"{argv[0]} ran out of memory (limit {limits.memory} bytes, MCS_REVIEW_MEMORY_BYTES)")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _out_of_memory(stderr: str) -> bool:
    tail = stderr.strip().splitlines()[-1:] if stderr.strip() else []
    return bool(tail) and tail[0].startswith("MemoryError")


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we created for it (start_new_session)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=KILL_WAIT)
    except subprocess.TimeoutExpired:  # something left the group and holds the pipes: stop reading them
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        proc.wait()


# ---------------------------------------------------------------- inside the sandboxed interpreter


def _inside(path: Any, refused: Sequence[str]) -> bool:
    if not isinstance(path, (str, os.PathLike)):
        return False
    real = os.path.realpath(os.fspath(path) or ".")
    return any(real == r or real.startswith(r + os.sep) for r in refused)


class Guard:
    """Wraps one finder of `sys.meta_path` so that nothing under the refused folders can be imported:
    `sys.path` entries (and package `__path__` entries) there are skipped, and a spec that still points
    there is an ImportError. The standard library is found where it belongs even when a shadowing
    `os.py` or `multiprocessing/` sits in a refused folder that the tool put first on `sys.path`."""

    def __init__(self, finder: Any, refused: Sequence[str]) -> None:
        self.finder = finder
        self.refused = refused

    def _filter(self, entries: Iterable[Any]) -> list[Any]:
        return [e for e in entries if not _inside(e, self.refused)]

    def find_spec(
        self, fullname: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if self.finder is importlib.machinery.PathFinder:
            path = self._filter(sys.path if path is None else path)
        spec: ModuleSpec | None = self.finder.find_spec(fullname, path, target)
        if spec is None:
            return None
        if (spec.has_location and _inside(spec.origin, self.refused)) or any(
            _inside(p, self.refused) for p in spec.submodule_search_locations or ()
        ):
            raise ImportError(f"refused to import {fullname} from the code under review", name=fullname)
        return spec

    def find_distributions(self, context: Any = None) -> Iterator[Distribution]:
        find = getattr(self.finder, "find_distributions", None)
        if find is None:
            return iter(())
        context = context or DistributionFinder.Context()
        safe = DistributionFinder.Context(name=context.name, path=self._filter(context.path))
        return (d for d in find(safe) if not _inside(getattr(d, "_path", None), self.refused))

    def invalidate_caches(self) -> None:
        if hasattr(self.finder, "invalidate_caches"):
            self.finder.invalidate_caches()


def guard_imports(refuse: Sequence[str | Path]) -> None:
    """Wrap every finder of `sys.meta_path` in a Guard for `refuse`, and drop those folders from
    `sys.path`."""
    refused = [os.path.realpath(r) for r in refuse]
    sys.meta_path[:] = [f if isinstance(f, Guard) else Guard(f, refused) for f in sys.meta_path]
    sys.path[:] = [p for p in sys.path if not _inside(p, refused)]
    sys.path_importer_cache.clear()


def set_limits(*, cpu: int, memory: int) -> None:
    """Kernel limits for this process and everything it starts (0: none)."""
    if cpu:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))  # SIGXCPU, then SIGKILL 5 s later
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -I -m mcs.review.sandbox", description=__doc__)
    parser.add_argument("--refuse", action="append", default=[], help="a folder nothing may be imported from")
    parser.add_argument("--cpu", type=int, required=True, help="CPU seconds")
    parser.add_argument("--memory", type=int, required=True, help="bytes of address space")
    parser.add_argument("module", help="the Python module to run, as with python -m; or -c CODE")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    opts = parser.parse_args(argv)
    set_limits(cpu=opts.cpu, memory=opts.memory)
    guard_imports(opts.refuse)
    if opts.module == "-c":  # a probe (the tests use it to see what a tool would see)
        sys.argv = ["-c", *opts.args[1:]]
        exec(compile(opts.args[0], "<string>", "exec"), {"__name__": "__main__"})  # noqa: S102
        return
    sys.argv = [opts.module, *opts.args]
    runpy.run_module(opts.module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
