"""The deployment example's agents: build a wheel, test it, deploy it into an environment's folder, verify
it imports from there. Each runs as its own agent (see deploy.yaml and the README's Workflows section):

    mcs agent run examples/deploy/agents.py:build --capability build --env-file builder.env
    mcs agent run examples/deploy/agents.py:test --capability test --env-file tester-1.env
    mcs agent run examples/deploy/agents.py:deploy --capability deploy --env-file deployer.env
    mcs agent run examples/deploy/agents.py:verify --capability verify --env-file verifier.env

Everything is local and offline: the wheel is a zip made with `zipfile`, the tests run with `unittest` in
a subprocess, "deploy" unpacks the wheel into `$DEPLOY_ROOT/<env>/site` (default `./deployments`), and
verify imports the package from there in a fresh interpreter. Builds go to `$DEPLOY_WORK` (default: a
folder in the system's temp dir), which the builder and the testers share (one machine).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from mcs.agent import PermanentError, Task

APP = Path(__file__).resolve().parent / "app"  # the tiny package this example ships
PACKAGE = "greet"
WHEEL = b"Wheel-Version: 1.0\nGenerator: mcs-example\nRoot-Is-Purelib: true\nTag: py3-none-any\n"


def _work_root() -> Path:
    root = Path(os.environ.get("DEPLOY_WORK") or Path(tempfile.gettempdir()) / "mcs-deploy-work")
    root.mkdir(parents=True, exist_ok=True)
    return root.resolve()


def _deploy_root() -> Path:
    return Path(os.environ.get("DEPLOY_ROOT", "deployments")).resolve()


def _version(source: Path) -> str:
    for line in (source / PACKAGE / "__init__.py").read_text().splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    raise PermanentError(f"{source / PACKAGE}/__init__.py has no __version__")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(task: Task) -> dict[str, Any]:
    """Zip the package into a wheel (with its dist-info) and keep a copy of its tests next to it."""
    given = task.inputs.get("workflow") or {}
    source = Path(given.get("source") or APP)
    if not (source / PACKAGE / "__init__.py").is_file():
        raise PermanentError(f"no package {PACKAGE!r} in {source}")
    version = _version(source)
    out = _work_root() / task.id
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    wheel = out / f"{PACKAGE}-{version}-py3-none-any.whl"
    dist_info = f"{PACKAGE}-{version}.dist-info"
    files: dict[str, bytes] = {
        p.relative_to(source).as_posix(): p.read_bytes() for p in sorted((source / PACKAGE).rglob("*.py"))
    }
    files[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {PACKAGE}\nVersion: {version}\n".encode()
    files[f"{dist_info}/WHEEL"] = WHEEL
    record = [_record_line(name, data) for name, data in files.items()] + [f"{dist_info}/RECORD,,"]
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    shutil.copytree(source / "tests", out / "tests")
    return {
        "wheel": str(wheel),
        "tests": str(out / "tests"),
        "version": version,
        "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
        "env": given.get("env", "staging"),
    }


def test(task: Task) -> dict[str, Any]:
    """Install the wheel into a fresh folder and run the package's tests against it, in a subprocess."""
    built = task.inputs["build"]
    with tempfile.TemporaryDirectory(prefix="mcs-deploy-test-") as tmp:
        with zipfile.ZipFile(built["wheel"]) as zf:
            zf.extractall(Path(tmp) / "site")
        shutil.copytree(built["tests"], Path(tmp) / "tests")
        env = os.environ | {"PYTHONPATH": str(Path(tmp) / "site")}
        run = subprocess.run(
            [sys.executable, "-m", "unittest", "discover", "-s", "tests"],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    summary = run.stderr.strip().splitlines()[-3:]
    if run.returncode != 0:
        raise PermanentError(f"tests failed for {Path(built['wheel']).name}: {' | '.join(summary)}"[:1000])
    return {"passed": True, "wheel": Path(built["wheel"]).name, "summary": summary}


def deploy(task: Task) -> dict[str, Any]:
    """Unpack the tested wheel into $DEPLOY_ROOT/<env>/site, replacing what was there."""
    built, tested = task.inputs["build"], task.inputs["test"]
    failed = [c["agent"] for c in tested.get("children", []) if c["state"] != "completed"]
    if failed:  # a fanout completes when any child did: every tester must have passed
        raise PermanentError(f"not every tester passed: {', '.join(failed)}")
    target = _deploy_root() / built["env"]
    target.mkdir(parents=True, exist_ok=True)
    fresh = target / "site.new"
    shutil.rmtree(fresh, ignore_errors=True)
    with zipfile.ZipFile(built["wheel"]) as zf:
        zf.extractall(fresh)
    shutil.rmtree(target / "site", ignore_errors=True)
    fresh.rename(target / "site")
    shipped = {"version": built["version"], "sha256": built["sha256"], "approved": task.inputs["approve"]}
    (target / "DEPLOYED.json").write_text(json.dumps(shipped, indent=2) + "\n")
    return {"env": built["env"], "site": str(target / "site"), "version": built["version"]}


def verify(task: Task) -> dict[str, Any]:
    """Import the package from the deployed folder in a fresh interpreter and call it."""
    deployed = task.inputs["deploy"]
    probe = f"import json, {PACKAGE} as p; print(json.dumps([p.__file__, p.__version__, p.greet('mesh')]))"
    env = os.environ | {"PYTHONPATH": deployed["site"]}
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=deployed["site"], env=env, capture_output=True, text=True, timeout=60
    )
    if run.returncode != 0:
        raise PermanentError(f"import failed: {run.stderr.strip()[-500:]}")
    where, version, says = json.loads(run.stdout)
    if not Path(where).resolve().is_relative_to(Path(deployed["site"]).resolve()):
        raise PermanentError(f"{PACKAGE} was imported from {where}, not from {deployed['site']}")
    if version != deployed["version"]:
        raise PermanentError(f"deployed {deployed['version']} but {version} answers")
    return {"env": deployed["env"], "imported_from": where, "version": version, "says": says}
