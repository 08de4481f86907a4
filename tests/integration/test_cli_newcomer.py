# ruff: noqa: F811  (the fixtures api and mcs come from test_cli)
"""What a newcomer meets in the `mcs` CLI (issue 11): help, warnings about work nobody can take, the config
file and its profiles, env files for agent secrets, short ids, and errors that say what to do. Through
click's runner against a real `mcs api` process on loopback (the fixtures of test_cli)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from mcs.client import Client
from mcs.profiles import config_path

from .test_cli import TOKEN, api, free_port, mcs  # noqa: F401 - fixtures

NO_CLIENT_ENV = {"MCS_URL": None, "MCS_ADMIN_TOKEN": None, "MCS_AGENT_ID": None, "MCS_AGENT_SECRET": None}


@pytest.fixture
def config_home(tmp_path, monkeypatch):
    """A config home of this test's own; yields the config file's path (not written yet)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("MCS_PROFILE", raising=False)
    return config_path()


@pytest.fixture
def saved_environ():
    """`--env-file` puts the file's values into the process environment: put it back after the test."""
    before = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(before)


def test_mcs_alone_prints_help_and_exits_0(mcs):
    alone = mcs()
    assert alone.exit_code == 0 and "Usage:" in alone.stdout
    assert "task" in alone.stdout and alone.stderr == ""
    group = mcs("task")
    assert group.exit_code == 0 and "submit" in group.stdout


def test_state_lists_its_values(mcs):
    bad = mcs("task", "list", "--state", "done")
    assert bad.exit_code == 2
    for state in ("queued", "waiting", "completed", "canceled"):
        assert state in bad.stderr
    assert "waiting" in mcs("task", "list", "--help").stdout


def test_a_task_nobody_online_serves_warns_at_once_and_again_on_timeout(mcs):
    mcs("admin", "agent", "create", "translator", "-c", "translate")  # exists, never registered: offline
    plain = mcs("task", "submit", "--type", "translate", "--payload", '{"text": "hallo"}')
    assert plain.exit_code == 0 and len(plain.stdout.strip()) == 36  # stdout is the id alone
    assert "no online agent serves the capability translate" in plain.stderr
    assert "offline agents that would take it: translator" in plain.stderr
    waited = mcs("task", "submit", "--type", "translate", "--wait", "--timeout", "0.5")
    assert waited.exit_code == 1
    assert waited.stderr.count("no online agent serves the capability translate") == 2  # at once, and on timeout
    assert "still queued" in waited.stderr and "mcs task watch" in waited.stderr and "mcs task cancel" in waited.stderr
    nobody = mcs("task", "submit", "--type", "no-such-skill")
    assert "no agent has it" in nobody.stderr
    assert "mcs admin agent create NAME --capability no-such-skill" in nobody.stderr


def test_a_served_task_gives_no_warning(mcs, api):
    secrets = json.loads(mcs("admin", "agent", "create", "speaker", "-c", "speak", "--json").stdout)
    with Client(api, agent_id="speaker", agent_secret=secrets["secret"]) as agent:
        agent.register(["speak"])
        submitted = mcs("task", "submit", "--type", "speak")
    assert submitted.exit_code == 0 and "warning" not in submitted.stderr


def test_a_failed_wait_prints_the_error_not_null(mcs, api):
    secrets = json.loads(mcs("admin", "agent", "create", "failer", "-c", "fragile", "--json").stdout)
    agent = Client(api, agent_id="failer", agent_secret=secrets["secret"])
    agent.register(["fragile"])

    def work():
        task = agent.claim_next(wait=10)
        agent.fail(task["id"], task["claim_token"], "the disk is full", retryable=False)

    worker = threading.Thread(target=work)
    worker.start()
    result = mcs("task", "submit", "--type", "fragile", "--wait", "--timeout", "20")
    worker.join(timeout=20)
    agent.close()
    assert result.exit_code == 1
    assert "null" not in result.stdout and result.stdout == ""
    assert "ended failed: the disk is full" in result.stderr


def test_show_has_the_payload_and_ids_may_be_short(mcs):
    task_id = mcs("task", "submit", "--type", "shortid", "--payload", '{"words": 3}').stdout.strip()
    short = task_id[:8]
    shown = mcs("task", "show", short)
    assert shown.exit_code == 0, shown.output
    assert f"id: {task_id}" in shown.stdout and '"words": 3' in shown.stdout
    assert json.loads(mcs("task", "show", short, "--result").stdout) is None  # only the result: none yet
    assert "submitted" in mcs("task", "events", task_id[:10]).stdout
    canceled = mcs("task", "cancel", short)
    assert canceled.exit_code == 0 and canceled.stdout.strip() == f"{task_id} canceled"
    watched = mcs("task", "watch", short, "--timeout", "10")
    assert watched.exit_code == 1 and "canceled" in watched.stdout  # it ended, not completed
    too_short = mcs("task", "show", task_id[:7])
    assert too_short.exit_code == 1 and "no task" in too_short.stderr


def test_a_bad_payload_file_names_the_file_and_the_line(mcs, tmp_path):
    payload = tmp_path / "hello.json"
    payload.write_text('{\n  "hello": "mesh",\n  oops\n}\n')
    bad = mcs("task", "submit", "--type", "x", "--payload-file", str(payload))
    assert bad.exit_code == 2
    assert f"{payload}, line 3 column 3" in bad.stderr and "Traceback" not in bad.output


def test_without_credentials_the_error_names_the_three_ways(mcs, tmp_path, config_home, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./data/admin-token here
    refused = mcs("admin", "agent", "create", "x", "--url", os.environ["MCS_URL"], env=NO_CLIENT_ENV)
    assert refused.exit_code == 1 and "HTTP 401" in refused.stderr
    assert "MCS_ADMIN_TOKEN" in refused.stderr and str(config_home) in refused.stderr
    assert "MCS_AGENT_ID + MCS_AGENT_SECRET" in refused.stderr


def test_the_config_file_finds_the_mesh_from_any_folder(mcs, api, tmp_path, config_home, monkeypatch):
    token_file = tmp_path / "mesh" / "admin-token"
    token_file.parent.mkdir()
    token_file.write_text(TOKEN + "\n")
    config_home.parent.mkdir(parents=True)
    config_home.write_text(
        'default_profile = "home"\n\n'
        f'[profiles.home]\nurl = "{api}"\ntoken_file = "{token_file}"\n\n'
        f'[profiles.elsewhere]\nurl = "http://127.0.0.1:{free_port()}"\ntoken = "nope"\n'
    )
    monkeypatch.chdir(tmp_path)
    found = mcs("agent", "list", env=NO_CLIENT_ENV)
    assert found.exit_code == 0, found.output
    other = mcs("agent", "list", "--profile", "elsewhere", env=NO_CLIENT_ENV)
    assert other.exit_code == 1 and "cannot reach MCS" in other.stderr
    by_env = mcs("agent", "list", env=NO_CLIENT_ENV | {"MCS_PROFILE": "elsewhere"})
    assert by_env.exit_code == 1 and "cannot reach MCS" in by_env.stderr
    # the environment beats the profile
    env_wins = mcs("agent", "list", env=NO_CLIENT_ENV | {"MCS_URL": f"http://127.0.0.1:{free_port()}"})
    assert env_wins.exit_code == 1 and "cannot reach MCS" in env_wins.stderr
    # ... but --profile on the command line beats the environment (an agent's env file sourced in the shell)
    sourced = {"MCS_URL": f"http://127.0.0.1:{free_port()}", "MCS_AGENT_ID": "who", "MCS_AGENT_SECRET": "what"}
    chosen = mcs("admin", "agent", "create", "chosen", "--profile", "home", env=NO_CLIENT_ENV | sourced)
    assert chosen.exit_code == 0, chosen.output
    unknown = mcs("agent", "list", "--profile", "nope", env=NO_CLIENT_ENV)
    assert unknown.exit_code == 1 and "no profile 'nope'" in unknown.stderr and "elsewhere, home" in unknown.stderr
    assert "MCS_PROFILE" in mcs("task", "submit", "--help").stdout


def test_agent_secrets_go_to_an_env_file(mcs, tmp_path):
    out = tmp_path / "envy.env"
    created = mcs("admin", "agent", "create", "envy", "-c", "echo", "--out", str(out))
    assert created.exit_code == 0, created.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600 and "secret" not in created.stdout
    lines = dict(line.split("=", 1) for line in out.read_text().splitlines() if line and not line.startswith("#"))
    assert set(lines) == {"MCS_URL", "MCS_AGENT_ID", "MCS_AGENT_SECRET", "MCS_WEBHOOK_SECRET"}
    assert lines["MCS_AGENT_ID"] == "envy" and lines["MCS_WEBHOOK_SECRET"].startswith("whsec_")
    with Client(lines["MCS_URL"], agent_id="envy", agent_secret=lines["MCS_AGENT_SECRET"]) as agent:
        assert agent.register(["echo"])["name"] == "envy"
    again = mcs("admin", "agent", "create", "envy2", "--out", str(out))
    assert again.exit_code == 1 and "--force" in again.stderr
    assert "envy2" not in mcs("agent", "list").stdout  # refused before any secret was issued
    rotated = mcs("admin", "agent", "rotate", "envy", "--out", str(out), "--force")
    assert rotated.exit_code == 0 and out.read_text() != "\n".join(lines)
    printed = mcs("admin", "agent", "rotate", "envy", "--env")
    assert printed.stdout.count("MCS_AGENT_SECRET=") == 1 and "MCS_WEBHOOK_SECRET=whsec_" in printed.stdout


def test_agent_run_reads_an_env_file_and_speaks_in_options(mcs, tmp_path, saved_environ):
    handler = tmp_path / "h.py"
    handler.write_text("def handle(task):\n    return 1\n")
    env_file = tmp_path / "half.env"
    env_file.write_text("# no webhook secret\nexport MCS_AGENT_ID=half\nMCS_AGENT_SECRET='s3cr3t-value'\n")
    run = ("agent", "run", f"{handler}:handle", "-c", "x")
    half = mcs(*run, "--env-file", str(env_file), env={"MCS_WEBHOOK_SECRET": None})
    assert half.exit_code == 1 and "--pull" in half.stderr and "--env-file" in half.stderr
    assert "listen=None" not in half.stderr and "s3cr3t-value" not in half.output
    bad = tmp_path / "bad.env"
    bad.write_text("MCS_AGENT_ID=x\nthis is s3cr3t\n")
    broken = mcs("agent", "run", f"{handler}:handle", "-c", "x", "--env-file", str(bad))
    assert broken.exit_code == 2 and "line 2 is not KEY=VALUE" in broken.stderr and "s3cr3t" not in broken.output
    os.environ.pop("MCS_AGENT_SECRET", None)
    nothing = mcs("agent", "run", f"{handler}:handle", "-c", "x", "--pull", env={"MCS_AGENT_ID": None})
    assert nothing.exit_code == 1 and "--env-file" in nothing.stderr and "name=" not in nothing.stderr


def test_shell_completion_as_the_readme_says(tmp_path):
    script = subprocess.run(
        [str(Path(sys.executable).parent / "mcs")],  # the installed command, as a shell runs it
        env=os.environ | {"_MCS_COMPLETE": "bash_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert script.returncode == 0 and "complete " in script.stdout and "_MCS_COMPLETE=bash_complete" in script.stdout
    # and completing works, though `mcs` alone prints help: TAB after `mcs ` and after `--state `
    for words, cword, expected in (("mcs ", "1", "plain,task"), ("mcs task list --state ", "4", "plain,waiting")):
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "mcs")],
            env=os.environ | {"_MCS_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 0 and expected in completed.stdout.splitlines(), completed.stderr


def test_ctrl_c_during_watch_says_the_task_goes_on(mcs, api):
    task_id = mcs("task", "submit", "--type", "nobody-watches-this").stdout.strip()
    env = os.environ | {"MCS_URL": api, "MCS_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcs", "task", "watch", task_id[:8]],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert "submitted" in proc.stdout.readline()  # it watches
    proc.send_signal(signal.SIGINT)
    said = proc.stderr.read()
    assert proc.wait(timeout=20) == 130, said
    assert f"task {task_id} goes on" in said and f"mcs task cancel {task_id}" in said and "Traceback" not in said
    proc.stdout.close()
    proc.stderr.close()
    assert json.loads(mcs("task", "show", task_id, "--json").stdout)["state"] == "queued"  # it goes on


def test_ctrl_c_during_wait_says_the_task_goes_on(api, tmp_path):
    env = os.environ | {"MCS_URL": api, "MCS_ADMIN_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mcs", "task", "submit", "--type", "nobody-does-this", "--wait"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in proc.stderr:  # wait until it waits
        lines.append(line)
        if "waiting" in line:
            break
    proc.send_signal(signal.SIGINT)
    rest = proc.stderr.read()
    assert proc.wait(timeout=20) == 130, (lines, rest)
    task_id = lines[-1].split()[1].rstrip(";")
    assert f"task {task_id} goes on" in rest and f"mcs task watch {task_id}" in rest
    assert f"mcs task cancel {task_id}" in rest and "Traceback" not in rest
    proc.stdout.close()
    proc.stderr.close()


def test_mcs_up_writes_no_profile_for_a_mesh_that_never_started(tmp_path):
    # 192.0.2.1 is a documentation address (TEST-NET-1): no host has it, so the api cannot listen there
    env = os.environ | {"MCS_HOST": "192.0.2.1", "XDG_CONFIG_HOME": str(tmp_path / "config")}
    env = {k: v for k, v in env.items() if k != "MCS_ADMIN_TOKEN"}
    up = subprocess.run(
        [sys.executable, "-m", "mcs", "up", "--port", str(free_port()), "--data", str(tmp_path / "data")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert up.returncode == 1 and "cannot start" in up.stderr and "Traceback" not in up.stderr
    assert not (tmp_path / "config" / "mcs" / "config.toml").exists() and "CLI config" not in up.stderr
