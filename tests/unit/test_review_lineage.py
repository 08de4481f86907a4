"""Which tool's rule an analyzer finding comes from (consensus counts ports of one rule once), and the
terminal summary of a review."""

from __future__ import annotations

from mcs.consensus import aggregate
from mcs.review.analyzers import finding, ruff_lineage
from mcs.review.submit import summary_text


def test_ruff_codes_name_the_tool_they_port():
    assert ruff_lineage("S105") == "bandit"
    assert ruff_lineage("F401") == "pyflakes"
    assert ruff_lineage("E722") == "pycodestyle"
    assert ruff_lineage("B006") == "flake8-bugbear"
    assert ruff_lineage("PLW0611") == "pylint"
    assert ruff_lineage("SIM102") == "ruff"  # a family not listed is ruff's own, not bandit's (S)
    assert ruff_lineage("invalid-syntax") == "ruff"


def test_every_analyzer_finding_carries_its_lineage():
    made = finding("a.py", 3, "unused-import", "observation", "x", "ruff F401: x", "os", lineage="pyflakes")
    assert made["lineage"] == "pyflakes" and made["title"] == "Unused import: os"


def test_the_summary_lists_the_top_agreed_findings_and_counts_the_rest():
    children = [
        {"agent": agent, "task_id": agent, "state": "completed",
         "result": {"findings": [{"file": "a.py", "line": n * 10, "severity": "critical", "title": f"Problem {n}"}
                                 for n in range(1, 14)]}}
        for agent in ("x", "y")
    ]  # fmt: skip
    text = summary_text(aggregate(children), top=10)
    assert text.count("[2] critical") == 10
    assert "... and 3 more (see the report)" in text
    assert "13 raised by 2 or more independent reviewers" in text
