"""The analyzer reviewers on the fixture project: each real tool, run as its agent handler would run it,
finds the problems planted for it under the shared titles that let consensus merge them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcs.agent import PermanentError, Task
from mcs.consensus import SEVERITIES
from mcs.review import analyzers
from mcs.review.pack import pack

FIXTURE = Path(__file__).parents[1] / "fixtures" / "review_project"

# (file, line, title) each tool must report on the fixture (see the `# planted:` comments there).
PLANTED = {
    "ruff": {
        ("shop/orders.py", 4, "Unused import: os"),
        ("shop/orders.py", 8, "Use of eval"),
        ("shop/orders.py", 15, "Bare except"),
        ("shop/orders.py", 20, "Undefined name: shipping_fee"),
        ("shop/admin.py", 7, "Subprocess call with shell=True"),
    },
    "pyflakes": {
        ("shop/orders.py", 4, "Unused import: os"),
        ("shop/orders.py", 20, "Undefined name: shipping_fee"),
    },
    "bandit": {
        ("shop/orders.py", 8, "Use of eval"),
        ("shop/admin.py", 7, "Subprocess call with shell=True"),
    },
    "vulture": {
        ("shop/orders.py", 4, "Unused import: os"),
        ("shop/orders.py", 23, "Unused function: _legacy_discount"),
        ("shop/orders.py", 29, "Unreachable code"),
    },
    "pylint": {
        ("shop/orders.py", 4, "Unused import: os"),
        ("shop/orders.py", 8, "Use of eval"),
        ("shop/orders.py", 15, "Bare except"),
        ("shop/orders.py", 20, "Undefined name: shipping_fee"),
        ("shop/orders.py", 29, "Unreachable code"),
    },
}


@pytest.fixture(scope="module")
def payload():
    return pack(FIXTURE).payload()


def task(payload):
    return Task(id="t1", type="mcs-review", payload=payload, attempts=1, priority="normal")


@pytest.mark.parametrize("tool", sorted(PLANTED))
def test_each_analyzer_finds_what_was_planted_for_it(tool, payload):
    result = getattr(analyzers, tool)(task(payload))
    assert result["tool"] == tool and result["files"] == 3
    found = {(f["file"], f["line"], f["title"]) for f in result["findings"]}
    assert PLANTED[tool] <= found, f"{tool} missed {PLANTED[tool] - found}"
    for f in result["findings"]:
        assert f["severity"] in SEVERITIES and f["detail"].startswith(tool)
    # the shared titles carry shared severities
    by_title = {f["title"]: f["severity"] for f in result["findings"]}
    for title, severity in (("Use of eval", "critical"), ("Undefined name: shipping_fee", "critical"),
                            ("Unused import: os", "observation"), ("Bare except", "recommendation")):  # fmt: skip
        if title in by_title:
            assert by_title[title] == severity, (tool, title)


def test_public_functions_nobody_calls_are_not_dead_code(payload):
    titles = {f["title"] for f in analyzers.vulture(task(payload))["findings"]}
    assert "Unused function: parse_quantity" not in titles  # public API: another project may call it


def test_a_syntax_error_is_a_finding_not_a_crash():
    broken = {"files": [{"path": "bad.py", "content": "def broken(:\n    pass\n"}]}
    for tool in analyzers.ANALYZERS:
        findings = analyzers.review(tool, broken)["findings"]
        assert [(f["file"], f["title"], f["severity"]) for f in findings] == [("bad.py", "Syntax error", "critical")]


@pytest.mark.parametrize(
    "bad",
    [None, "code", {"files": [{"path": "../../etc/cron.d/x", "content": "boom"}]}]
    + [{"files": [{"path": p, "content": "x = 1"}]} for p in (".", "./", "..", "/abs.py", "", "a\\b.py")]
    + [{"files": [{"path": "a.py", "content": "1"}, {"path": "a.py", "content": "2"}]}],
)
def test_a_malformed_payload_fails_for_good(bad):
    with pytest.raises(PermanentError, match="not a review payload: .*(path|twice|object)"):
        analyzers.ruff(task(bad))


def test_an_empty_project_has_no_findings():
    assert analyzers.pylint(task({"files": []}))["findings"] == []


def test_the_reviewed_code_never_runs_on_the_reviewer(tmp_path):
    """A payload that brings its own `pyflakes.py` (shadowing the tool) and a pylintrc whose init-hook
    writes a file: the tools still run for real, and nothing of the payload executes."""
    marker = tmp_path / "ran"
    evil = f"open({str(marker)!r}, 'w').write('payload code ran')\n"
    payload = {
        "files": [
            {"path": "app.py", "content": "import os\n"},
            {"path": "pyflakes.py", "content": evil},
            {"path": "pylint.py", "content": evil},
            {"path": "ast.py", "content": evil},
            {"path": "pylintrc", "content": f"[MAIN]\ninit-hook={evil.strip()}\n"},
            {"path": ".pylintrc", "content": f"[MAIN]\ninit-hook={evil.strip()}\n"},
        ]
    }
    for tool in analyzers.ANALYZERS:
        titles = {(f["file"], f["title"]) for f in analyzers.review(tool, payload)["findings"]}
        if tool != "bandit":  # bandit looks for security problems only; the others really ran on app.py
            assert ("app.py", "Unused import: os") in titles, tool
        assert not marker.exists(), f"{tool}: {marker.read_text()}"
