"""The review sandbox: no analyzer runs any of the reviewed code, whatever the payload tries, and what an
analyzer sees of the reviewer (environment, time, memory) is limited. Real tools, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcs.agent import PermanentError, Task
from mcs.review import analyzers, sandbox
from mcs.review.pack import unpack
from tests import review_attack
from tests.polling import wait_until

SECRETS = {
    "MCS_AGENT_SECRET": "agent-secret-4b1d",
    "MCS_WEBHOOK_SECRET": "whsec_webhook-secret-77aa",
    "MCS_ADMIN_TOKEN": "admin-token-9c3e",
    "MCS_LLM_API_KEY": "llm-key-51f0",
    "OPENAI_API_KEY": "sk-openai-key-e2d8",
    "MCS_URL": "http://127.0.0.1:1",
}
LIMITS = sandbox.Limits(timeout=120, cpu=120, memory=4 * 1024**3)


@pytest.fixture
def secrets(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


@pytest.fixture(params=["flat", "package"])
def attack(request, tmp_path):
    """(markers, outside, payload); the payload's root is a plain folder, or a package."""
    markers, outside = tmp_path / "markers", tmp_path / "outside"
    markers.mkdir()
    outside.mkdir()
    return markers, outside, review_attack.payload(markers, outside, package=request.param == "package")


@pytest.mark.parametrize("attack", ["flat"], indirect=True)
def test_the_planted_code_does_run_when_python_imports_it(attack, tmp_path):
    """The attack is real: imported the ordinary way, the planted package runs and dumps the environment;
    and pylint given the planted rcfile runs its init-hook. (So the empty marker folder below means
    something.)"""
    markers, _, payload = attack
    root = tmp_path / "plain"
    root.mkdir()
    unpack(payload, root)
    env = dict(os.environ, **SECRETS)
    subprocess.run([sys.executable, "-c", "import multiprocessing.pool"], cwd=root, env=env, check=False)
    assert "agent-secret-4b1d" in (markers / "package-multiprocessing").read_text()
    subprocess.run([sys.executable, "-m", "pylint", f"--rcfile={root / 'pylintrc'}", str(root / "app.py")],
                   cwd=tmp_path, env=env, capture_output=True, check=False)  # fmt: skip
    assert (markers / "init-hook-pylintrc").exists()


@pytest.mark.parametrize("tool", sorted(analyzers.ANALYZERS))
def test_no_analyzer_runs_any_of_the_reviewed_code(tool, attack, secrets):
    markers, outside, payload = attack
    result = analyzers.review(tool, payload, limits=LIMITS)
    found = {(f["file"], f["title"]) for f in result["findings"]}
    # The tool really ran over the payload ...
    expect = ("app.py", "Use of eval") if tool in ("bandit", "ruff", "pylint") else ("app.py", "Unused import: os")
    assert expect in found, sorted(found)[:20]
    # ... ran none of it ...
    assert sorted(p.name for p in markers.iterdir()) == []
    # ... and looked at nothing but the payload, even where its config files point elsewhere.
    names = {f["path"] for f in payload["files"]}
    assert {f["file"] for f in result["findings"]} <= names
    assert sorted(p.name for p in outside.iterdir()) == ["outside_secret.py", "ruff.toml"]
    if tool == "ruff":  # the payload's ruff.toml and pyproject.toml extend a config that selects every rule
        codes = {f["detail"].split(":")[0].removeprefix("ruff ") for f in result["findings"]}
        assert {c.rstrip("0123456789") for c in codes} <= set(analyzers.RUFF_SELECT.split(",")), codes


def probe(code: str, tmp_path: Path, **kw) -> subprocess.CompletedProcess[str]:
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    return sandbox.run(["-c", code], workdir=work, refuse=[tmp_path / "refused"], limits=kw.pop("limits", LIMITS), **kw)


def test_an_analyzer_process_sees_no_secret(tmp_path, secrets):
    dump = tmp_path / "env.json"
    done = probe(f"import json, os; open({str(dump)!r}, 'w').write(json.dumps(dict(os.environ)))", tmp_path)
    assert done.returncode == 0, done.stderr
    env = json.loads(dump.read_text())
    assert env["PATH"] and env["HOME"] == str(tmp_path / "work") and env["TMPDIR"] == str(tmp_path / "work")
    assert not [k for k in env if k.startswith(("MCS_", "OPENAI", "PYTHON")) and k != "PYTHONDONTWRITEBYTECODE"]
    text = dump.read_text()
    assert not [v for v in secrets.values() if v in text]
    allowed = [k for k in ("LANG", "LC_ALL", "LC_CTYPE", "TZ") if k in os.environ]
    assert sorted(env) == sorted(["HOME", "PATH", "PYTHONDONTWRITEBYTECODE", "TMPDIR", *allowed])


def test_the_import_guard_finds_the_stdlib_behind_a_shadowing_folder(tmp_path):
    """Even with the refused folder first on sys.path, `import multiprocessing` is the stdlib's, a module
    that exists only there cannot be imported at all, and its distributions (entry points) are not seen."""
    refused = tmp_path / "refused"
    (refused / "multiprocessing").mkdir(parents=True)
    (refused / "multiprocessing" / "__init__.py").write_text("raise SystemExit('shadow ran')\n")
    (refused / "only_here.py").write_text("raise SystemExit('only_here ran')\n")
    (refused / "evil-1.0.dist-info").mkdir()
    (refused / "evil-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n")
    (refused / "evil-1.0.dist-info" / "entry_points.txt").write_text("[console_scripts]\nevil = only_here:main\n")
    code = (
        f"import sys; sys.path.insert(0, {str(refused)!r}); import multiprocessing.pool; "
        "print(multiprocessing.__file__)\n"
        "try:\n    import only_here\nexcept ImportError as exc:\n    print('refused:', exc)\n"
        "import importlib.metadata as md\n"
        "print(sorted(d.metadata['Name'] for d in md.distributions() if d.metadata['Name'] == 'evil'))\n"
        "print([e.value for e in md.entry_points(group='console_scripts') if e.name == 'evil'])\n"
    )
    done = probe(code, tmp_path)
    assert done.returncode == 0, done.stderr
    first, second, dists, scripts = done.stdout.splitlines()
    assert first.startswith(sys.base_prefix) and "refused" not in first
    assert second.startswith("refused:")
    assert (dists, scripts) == ("[]", "[]")


def test_cpu_time_is_limited(tmp_path):
    limits = sandbox.Limits(timeout=60, cpu=1, memory=LIMITS.memory)
    with pytest.raises(sandbox.SandboxLimit, match=r"ran out of CPU time \(limit 1 s, MCS_REVIEW_CPU\)"):
        probe("while True:\n    pass\n", tmp_path, limits=limits)


def test_memory_is_limited(tmp_path):
    limits = sandbox.Limits(timeout=60, cpu=60, memory=256 * 1024**2)
    with pytest.raises(sandbox.SandboxLimit, match="ran out of memory .*MCS_REVIEW_MEMORY_BYTES"):
        probe("x = bytearray(512 * 1024 * 1024)\n", tmp_path, limits=limits)


def test_wall_time_is_limited_and_everything_the_tool_started_is_killed(tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(600)\n"
    )
    limits = sandbox.Limits(timeout=2, cpu=60, memory=LIMITS.memory)
    with pytest.raises(sandbox.SandboxTimeout, match=r"did not finish within 2 s \(MCS_REVIEW_TIMEOUT\)"):
        probe(code, tmp_path, limits=limits)
    pid = int(pid_file.read_text())

    def gone() -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        return state in ("Z", "X")  # killed; waiting for init to reap it

    wait_until(gone, timeout=10, what=f"the tool's child {pid} to be killed")


@pytest.mark.parametrize("attack", ["flat"], indirect=True)
def test_an_analyzer_out_of_cpu_time_fails_the_task_for_good_with_the_reason(attack, monkeypatch):
    _, _, payload = attack
    monkeypatch.setenv("MCS_REVIEW_CPU", "1")
    analyzers.configured_limits.cache_clear()
    try:
        task = Task(id="t1", type="mcs-review", payload=payload, attempts=1, priority="normal")
        with pytest.raises(PermanentError, match=r"pylint ran out of CPU time \(limit 1 s, MCS_REVIEW_CPU\)"):
            analyzers.pylint(task)
    finally:
        analyzers.configured_limits.cache_clear()
