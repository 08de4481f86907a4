"""Offline reviewer agents: each runs one real analyzer on the unpacked code and turns its output into
findings (`{file, line, severity, title, detail}`) for the consensus merge.

Problems several tools detect get one shared title and severity (`KINDS`), so that "`os` imported but
unused" (ruff, pyflakes), "Unused import os" (pylint) and "unused import 'os'" (vulture) all become
"Unused import: os" and merge. Anything else keeps the tool's own message as its title, with a severity
from the tool's own level. The tool's code and message are always in `detail`.

The reviewed code is data, never code: each tool runs in `mcs.review.sandbox` (nothing under the review's
throwaway folder importable, no secret in its environment, CPU, memory and wall-time limits), reading
only our own config files, never the payload's.

Handlers for `mcs agent run` (each a `handler(task) -> dict`):

    mcs agent run mcs.review.analyzers:ruff --capability mcs-review
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mcs.config import Settings
from mcs.errors import ConfigError
from mcs.review import sandbox
from mcs.review.pack import UnpackError, unpack
from mcs.review.sandbox import Limits

# kind -> (title, severity); "{name}" is filled in from the tool's message.
KINDS: dict[str, tuple[str, str]] = {
    "syntax-error": ("Syntax error", "critical"),
    "undefined-name": ("Undefined name: {name}", "critical"),
    "eval": ("Use of eval", "critical"),
    "exec": ("Use of exec", "critical"),
    "shell": ("Subprocess call with shell=True", "critical"),
    "hardcoded-password": ("Possible hardcoded password", "recommendation"),  # often a false alarm
    "pickle": ("Unpickling untrusted data", "recommendation"),
    "yaml-load": ("yaml.load without a safe loader", "critical"),
    "weak-hash": ("Weak hash (md5/sha1) for security", "recommendation"),
    "no-timeout": ("HTTP request without a timeout", "recommendation"),
    "bare-except": ("Bare except", "recommendation"),
    "try-except-pass": ("Exception silently ignored (try/except/pass)", "recommendation"),
    "unreachable": ("Unreachable code", "recommendation"),
    "mutable-default": ("Mutable default argument", "recommendation"),
    "redefined-unused": ("Redefinition of unused name: {name}", "recommendation"),
    "unused-import": ("Unused import: {name}", "observation"),
    "unused-variable": ("Unused variable: {name}", "observation"),
    "fstring-no-placeholders": ("f-string without placeholders", "observation"),
    "assert": ("Use of assert", "observation"),
}

RUFF_KINDS = {
    "F401": "unused-import", "F821": "undefined-name", "F841": "unused-variable", "F811": "redefined-unused",
    "F541": "fstring-no-placeholders", "E722": "bare-except", "S110": "try-except-pass", "S307": "eval",
    "S102": "exec", "S602": "shell", "S604": "shell", "S605": "shell", "S105": "hardcoded-password",
    "S106": "hardcoded-password", "S107": "hardcoded-password", "S301": "pickle", "S506": "yaml-load",
    "S324": "weak-hash", "S113": "no-timeout", "S101": "assert", "B006": "mutable-default",
    "E999": "syntax-error", "invalid-syntax": "syntax-error",
}  # fmt: skip
BANDIT_KINDS = {
    "B307": "eval", "B102": "exec", "B602": "shell", "B604": "shell", "B605": "shell", "B110": "try-except-pass",
    "B105": "hardcoded-password", "B106": "hardcoded-password", "B107": "hardcoded-password", "B301": "pickle",
    "B506": "yaml-load", "B324": "weak-hash", "B303": "weak-hash", "B113": "no-timeout", "B101": "assert",
}  # fmt: skip
PYLINT_KINDS = {
    "W0611": "unused-import", "E0602": "undefined-name", "W0612": "unused-variable", "W0123": "eval",
    "W0122": "exec", "W0702": "bare-except", "W0101": "unreachable", "W0102": "mutable-default",
    "W1309": "fstring-no-placeholders", "E0001": "syntax-error",
}  # fmt: skip
# Messages a reviewer machine cannot judge: it does not have the project's dependencies installed.
PYLINT_DISABLE = "C,import-error,no-name-in-module,no-member,fixme"
RUFF_SELECT = "E,F,W,B,S"
# Rule lineages: ruff's rule families are ports of other tools' rules (its S rules are bandit's, its F rules
# pyflakes'), so a ruff S105 and a bandit B105 on one line are one reviewer's opinion seen twice, not two.
# Consensus counts a merged finding's distinct lineages; every tool that raised it is still listed.
RUFF_LINEAGES = {"S": "bandit", "F": "pyflakes", "E": "pycodestyle", "W": "pycodestyle", "B": "flake8-bugbear",
                 "PLC": "pylint", "PLE": "pylint", "PLR": "pylint", "PLW": "pylint"}  # fmt: skip


def ruff_lineage(code: str) -> str:
    """The tool whose rule a ruff code ports (longest prefix first), or "ruff" for ruff's own rules."""
    for prefix in sorted(RUFF_LINEAGES, key=len, reverse=True):
        if code.startswith(prefix) and code[len(prefix) : len(prefix) + 1].isdigit():
            return RUFF_LINEAGES[prefix]
    return "ruff"


RUFF_IGNORE = "E501"  # line length is the project's own choice


class AnalyzerError(Exception):
    """The analyzer could not run (not installed, or it crashed): retrying will not help."""


class AnalyzerTimeout(Exception):
    """The analyzer ran out of time (perhaps a busy machine): worth another try."""


def finding(file: str, line: int | None, kind: str | None, severity: str, message: str, detail: str,
            name: str | None = None, *, lineage: str) -> dict[str, Any]:  # fmt: skip
    """A finding; a known `kind` sets the shared title and severity. `lineage` names the tool whose rule
    produced it (see RUFF_LINEAGES), so that consensus counts ports of one rule once."""
    if kind in KINDS:
        template, severity = KINDS[kind]
        title = template.format(name=name) if "{name}" in template and name else template.split(":")[0]
    else:
        title = message.strip().rstrip(".")
    return {"file": file, "line": line if line and line > 0 else None, "severity": severity, "title": title,
            "detail": detail, "lineage": lineage}  # fmt: skip


def _rel(path: str, root: Path) -> str:
    p = Path(path)
    if p.is_absolute():
        try:
            p = p.resolve().relative_to(root.resolve())
        except ValueError:
            return p.as_posix()
    text = p.as_posix()
    while text.startswith("./"):
        text = text[2:]
    return text


def _import_name(raw: str) -> str:
    """The imported name as the tools disagree on it: `os.path`, `numpy as np`, `path imported from os`."""
    raw = raw.strip("`'\" ")
    raw = raw.split(" imported")[0].split(" as ")[0]
    return raw.rsplit(".", 1)[-1]


def _quoted(message: str) -> str | None:
    m = re.search(r"[`'\"]([^`'\"]+)[`'\"]", message)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Workspace:
    """One review's throwaway folder: `root` holds the reviewed files, `work` is the tool's working and
    home folder and holds our own config files; nothing under `base` can be imported by a tool."""

    base: Path

    @property
    def root(self) -> Path:
        return self.base / "review-src"  # not a valid module name: never importable as a package

    @property
    def work(self) -> Path:
        return self.base / "work"

    def config(self, name: str, text: str) -> Path:
        path = self.work / name
        path.write_text(text)
        return path


def _run(args: list[str], ws: Workspace, ok_codes: tuple[int, ...], limits: Limits) -> subprocess.CompletedProcess[str]:
    tool = args[0]
    try:
        # The reviewed code is data, never code: see mcs.review.sandbox.
        proc = sandbox.run(args, workdir=ws.work, refuse=[ws.base], limits=limits)
    except sandbox.SandboxTimeout as exc:
        raise AnalyzerTimeout(str(exc)) from exc
    except sandbox.SandboxLimit as exc:
        raise AnalyzerError(str(exc)) from exc
    if "No module named" in proc.stderr and proc.returncode not in ok_codes:
        raise AnalyzerError(f"{tool} is not installed here: pip install -e '.[review]' in the clone")
    if proc.returncode not in ok_codes or "Traceback (most recent call last):" in proc.stderr.splitlines():
        # A crash must not pass for a review without findings (bandit and pyflakes exit 1 either way).
        raise AnalyzerError(f"{tool} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return proc


def _json(proc: subprocess.CompletedProcess[str], empty: str) -> Any:
    try:
        return json.loads(proc.stdout or empty)
    except json.JSONDecodeError as exc:
        tool = proc.args[proc.args.index("--") + 1]  # see sandbox.command()
        raise AnalyzerError(f"{tool} wrote no valid JSON: {exc}: {proc.stdout[:200]!r}") from exc


# ---------------------------------------------------------------- the analyzers


def run_ruff(ws: Workspace, limits: Limits) -> list[dict[str, Any]]:
    root = ws.root
    proc = _run(
        ["ruff", "check", "--output-format", "json", "--isolated", "--no-cache", "--exit-zero",
         "--select", RUFF_SELECT, "--ignore", RUFF_IGNORE, str(root)],
        ws,
        (0,),
        limits,
    )  # fmt: skip
    out = []
    for m in _json(proc, "[]"):
        code = m.get("code") or m.get("name") or "?"
        message = m.get("message", "")
        kind = RUFF_KINDS.get(code)
        name = _import_name(_quoted(message) or "") if kind == "unused-import" else _quoted(message)
        severity = "critical" if code.startswith(("F8", "E9")) else "observation" if code[:1] in "EW" else (
            "recommendation")  # fmt: skip
        line = (m.get("location") or {}).get("row")
        out.append(finding(_rel(m["filename"], root), line, kind, severity, message, f"ruff {code}: {message}",
                           name, lineage=ruff_lineage(code)))  # fmt: skip
    return out


_LOCATED = re.compile(r"^(?P<file>.+?):(?P<line>\d+):(?:(?P<col>\d+):?)? (?P<msg>.+)$")


def run_pyflakes(ws: Workspace, limits: Limits) -> list[dict[str, Any]]:
    root = ws.root
    proc = _run(["pyflakes", str(root)], ws, (0, 1), limits)
    out = []
    patterns = (
        (r"^'(.+)' imported but unused$", "unused-import"),
        (r"^undefined name '(.+)'$", "undefined-name"),
        (r"^local variable '(.+)' .*assigned to but never used$", "unused-variable"),
        (r"^redefinition of unused '(.+)'", "redefined-unused"),
        (r"^f-string is missing placeholders$", "fstring-no-placeholders"),
    )
    for stream, default in ((proc.stdout, None), (proc.stderr, "syntax-error")):
        for raw in stream.splitlines():
            m = _LOCATED.match(raw)
            if not m:
                continue
            msg, kind, name = m["msg"], default, None
            for pattern, k in patterns:
                hit = re.match(pattern, msg)
                if hit:
                    kind = k
                    name = _import_name(hit.group(1)) if hit.groups() and k == "unused-import" else (
                        hit.group(1) if hit.groups() else None)  # fmt: skip
                    break
            out.append(finding(_rel(m["file"], root), int(m["line"]), kind, "recommendation", msg,
                               f"pyflakes: {msg}", name, lineage="pyflakes"))  # fmt: skip
    return out


def run_bandit(ws: Workspace, limits: Limits) -> list[dict[str, Any]]:
    root = ws.root
    # Our own ini file: otherwise bandit reads any `.bandit` under the reviewed code, whose options
    # include `output` (a file to write anywhere) and `targets` (folders to scan outside the review).
    ini = ws.config("bandit.ini", "[bandit]\n")
    proc = _run(["bandit", "--ini", str(ini), "-r", "-f", "json", "-q", str(root)], ws, (0, 1), limits)
    data = _json(proc, "{}")
    levels = {"HIGH": "critical", "MEDIUM": "recommendation", "LOW": "observation"}
    out = []
    for m in data.get("results", []):
        code, text = m.get("test_id", "?"), m.get("issue_text", "")
        severity = levels.get(m.get("issue_severity", ""), "observation")
        detail = f"bandit {code} ({m.get('test_name')}, {m.get('issue_severity')} severity, "
        detail += f"{m.get('issue_confidence')} confidence): {text}"
        out.append(finding(_rel(m["filename"], root), m.get("line_number"), BANDIT_KINDS.get(code), severity, text,
                           detail, lineage="bandit"))  # fmt: skip
    for err in data.get("errors", []):
        if "syntax" in str(err.get("reason", "")).lower():
            out.append(finding(_rel(err["filename"], root), None, "syntax-error", "critical", "",
                               f"bandit: {err.get('reason')}", lineage="bandit"))  # fmt: skip
    return out


_VULTURE = re.compile(r"^(?P<file>.+?):(?P<line>\d+): (?P<msg>.+?) \((?P<conf>\d+)% confidence(?:, \d+ lines?)?\)$")


def run_vulture(ws: Workspace, limits: Limits) -> list[dict[str, Any]]:
    """Dead code. A public name nobody here calls may be used by other projects, so 60 %-confidence
    findings count only for private names (`_name`)."""
    root = ws.root
    config = ws.config("vulture.toml", "")  # not the reviewed pyproject.toml, whose `paths` could point anywhere
    proc = _run(["vulture", "--config", str(config), str(root)], ws, (0, 1, 3), limits)
    out = []
    for raw in proc.stdout.splitlines():
        m = _VULTURE.match(raw)
        if not m:
            continue
        msg, conf = m["msg"], int(m["conf"])
        name = _quoted(msg)
        if conf < 90 and not (name or "").startswith("_"):
            continue
        if msg.startswith("unused import"):
            kind, name = "unused-import", _import_name(name or "")
        elif msg.startswith("unused variable"):
            kind = "unused-variable"
        elif msg.startswith("unreachable code"):
            kind = "unreachable"
        else:
            kind = None
            what = msg.split(" '")[0]  # "unused function", "unused class", ...
            msg = f"{what.capitalize()}: {name}" if name else msg
        severity = "recommendation" if conf == 100 else "observation"
        out.append(finding(_rel(m["file"], root), int(m["line"]), kind, severity, msg,
                           f"vulture ({conf}% confidence): {m['msg']}", name, lineage="vulture"))  # fmt: skip
    for raw in proc.stderr.splitlines():
        m = _LOCATED.match(raw)
        if m and "syntax" in m["msg"]:
            out.append(finding(_rel(m["file"], root), int(m["line"]), "syntax-error", "critical", "",
                               f"vulture: {m['msg']}", lineage="vulture"))  # fmt: skip
    return out


def run_pylint(ws: Workspace, limits: Limits) -> list[dict[str, Any]]:
    root = ws.root
    # Our own rcfile: a pylintrc in the reviewed code could run anything through init-hook. No plugins,
    # no C extension loaded to inspect it (`unsafe-load-any-extension` stays off).
    rcfile = ws.config("pylintrc", "[MAIN]\nload-plugins=\nunsafe-load-any-extension=no\n")
    proc = _run(
        ["pylint", f"--rcfile={rcfile}", "--output-format=json", "--recursive=y", "--score=n",
         "--persistent=n", f"--disable={PYLINT_DISABLE}", str(root)],
        ws,
        tuple(range(0, 32)),  # a bit mask of message categories; 32 is a usage error
        limits,
    )  # fmt: skip
    levels = {"fatal": "critical", "error": "critical", "warning": "recommendation"}
    out = []
    for m in _json(proc, "[]"):
        if m.get("path") == "<?>":  # a module astroid built itself (a file named `pytest.py`, say): not reviewed code
            continue
        code, message = m.get("message-id", "?"), m.get("message", "")
        kind = PYLINT_KINDS.get(code)
        name = _quoted(message)
        if kind == "unused-import":
            name = _import_name(message.removeprefix("Unused import ").removeprefix("Unused "))
        severity = levels.get(m.get("type", ""), "observation")
        out.append(finding(_rel(m["path"], root), m.get("line"), kind, severity, message,
                           f"pylint {code} ({m.get('symbol')}): {message}", name, lineage="pylint"))  # fmt: skip
    return out


ANALYZERS: dict[str, Callable[[Workspace, Limits], list[dict[str, Any]]]] = {
    "ruff": run_ruff,
    "pyflakes": run_pyflakes,
    "bandit": run_bandit,
    "vulture": run_vulture,
    "pylint": run_pylint,
}


@functools.cache
def configured_limits() -> Limits:
    """The sandbox limits from MCS_REVIEW_TIMEOUT, MCS_REVIEW_CPU and MCS_REVIEW_MEMORY_BYTES (read once:
    the agent process running these handlers is the entry point)."""
    return Limits.from_settings(Settings.from_env())


def review(tool: str, payload: Any, *, limits: Limits | None = None) -> dict[str, Any]:
    """Unpack the payload into a throwaway folder, run `tool` on it in the sandbox (mcs.review.sandbox),
    and return the findings."""
    with tempfile.TemporaryDirectory(prefix=f"mcs-review-{tool}-") as tmp:
        ws = Workspace(Path(tmp).resolve())
        ws.root.mkdir()
        ws.work.mkdir()
        files = unpack(payload, ws.root)
        findings = ANALYZERS[tool](ws, limits or configured_limits()) if files else []
    unique = {(f["file"], f["line"], f["title"]): f for f in reversed(findings)}  # one report per problem
    findings = sorted(unique.values(), key=lambda f: (f["file"], f["line"] or 0, f["title"]))
    return {"findings": findings, "tool": tool, "files": len(files)}


def _handler(tool: str) -> Callable[[Any], dict[str, Any]]:
    def handle(task: Any) -> dict[str, Any]:
        from mcs.agent import PermanentError

        try:
            return review(tool, task.payload)
        except UnpackError as exc:
            raise PermanentError(f"not a review payload: {exc}") from exc
        except (AnalyzerError, ConfigError) as exc:  # a bad MCS_REVIEW_* setting will not fix itself either
            raise PermanentError(str(exc)) from exc

    handle.__name__ = tool
    handle.__doc__ = f"Review the task's code with {tool}."
    return handle


ruff = _handler("ruff")
pyflakes = _handler("pyflakes")
bandit = _handler("bandit")
vulture = _handler("vulture")
pylint = _handler("pylint")
