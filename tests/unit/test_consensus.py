"""Consensus merging of fanout results (mcs.consensus): which findings merge, what the parent reports."""

from __future__ import annotations

import pytest

from mcs import consensus
from mcs.consensus import LINE_WINDOW, aggregate, title_similarity


def f(file="app.py", line=10, severity="recommendation", title="Unused import: os", detail=""):
    return {"file": file, "line": line, "severity": severity, "title": title, "detail": detail}


def child(agent, *findings, state="completed", result=None, error=None):
    c = {"agent": agent, "task_id": f"t-{agent}", "state": state}
    if state == "completed":
        c["result"] = {"findings": list(findings)} if result is None else result
    else:
        c["error"] = error
    return c


def by_title(result):
    return {(m["file"], m["title"]): m for m in result["findings"]}


def test_the_same_problem_from_three_agents_is_one_finding_with_consensus_three():
    r = aggregate(
        [
            child("ruff", f(line=3, title="Unused import: os")),
            child("pyflakes", f(line=3, title="unused import os", severity="observation")),
            child("pylint", f(line=4, title="Unused import: os")),
        ]
    )
    assert len(r["findings"]) == 1
    merged = r["findings"][0]
    assert merged["agents"] == ["pyflakes", "pylint", "ruff"]
    assert merged["consensus"] == 3
    assert merged["severity"] == "recommendation"  # the most severe report wins
    assert merged["file"] == "app.py" and merged["line"] == 3 and merged["lines"] == [3, 4]
    assert sorted(x["agent"] for x in merged["raised"]) == ["pyflakes", "pylint", "ruff"]
    assert r["summary"]["consensus"] == 1 and r["summary"]["findings"] == 1


@pytest.mark.parametrize(
    "other, merges",
    [
        (f(line=10 + LINE_WINDOW), True),  # at the edge of the window
        (f(line=10 + LINE_WINDOW + 1), False),  # one line too far
        (f(file="other.py"), False),  # another file
        (f(file="./app.py"), True),  # the same file spelt differently
        (f(title="Unused import: sys"), False),  # another name is another problem
        (f(title="os imported but unused"), True),  # pyflakes' wording
        (f(title="Use of eval"), False),
        (f(title="Unused import: os, flagged by a linter"), True),  # contains all of the other's words
        (f(title="Unused import"), True),  # two words, both in the other title
        (f(title="Unused"), False),  # one word is too little to go on
        (f(line=None), False),  # a file-level finding is not a line finding
    ],
)
def test_which_findings_name_the_same_problem(other, merges):
    r = aggregate([child("a", f()), child("b", other)])
    assert len(r["findings"]) == (1 if merges else 2)
    assert [m["consensus"] for m in r["findings"]] == ([2] if merges else [1, 1])


def test_title_similarity_thresholds_documented_in_the_module():
    assert title_similarity("Unused import: os", "unused import os") == 1.0
    assert title_similarity("Unused import: os", "os imported but unused") >= consensus.MIN_TITLE_SIMILARITY
    assert title_similarity("Unused import: os", "Unused import: sys") < consensus.MIN_TITLE_SIMILARITY


def test_one_agent_reporting_two_similar_findings_keeps_two():
    r = aggregate([child("a", f(line=10), f(line=11))])
    assert [m["consensus"] for m in r["findings"]] == [1, 1]
    assert r["agents"][0]["findings"] == 2


def test_each_agent_joins_the_closest_of_two_nearby_problems():
    r = aggregate(
        [
            child("a", f(line=10, title="Bare except"), f(line=14, title="Bare except")),
            child("b", f(line=13, title="bare except clause")),
        ]
    )
    pairs = sorted((m["lines"], m["agents"]) for m in r["findings"])
    assert pairs == [([10], ["a"]), ([13, 14], ["a", "b"])]


def test_order_is_severity_then_consensus_then_place():
    r = aggregate(
        [
            child(
                "a",
                f(file="z.py", line=1, severity="observation", title="Dead code"),
                f(file="b.py", line=5, severity="critical", title="Use of eval"),
                f(file="a.py", line=9, severity="recommendation", title="Bare except"),
                f(file="a.py", line=2, severity="critical", title="Undefined name: x"),
                f(file="c.py", line=7, severity="critical", title="Use of exec"),
            ),
            child(
                "b",
                f(file="z.py", line=2, severity="observation", title="dead code"),
                f(file="c.py", line=7, severity="critical", title="use of exec"),
            ),
        ]
    )
    order = [(m["file"], m["title"], m["consensus"]) for m in r["findings"]]
    assert order == [
        ("c.py", "Use of exec", 2),
        ("a.py", "Undefined name: x", 1),
        ("b.py", "Use of eval", 1),
        ("a.py", "Bare except", 1),
        ("z.py", "Dead code", 2),
    ]
    assert [m["id"] for m in r["findings"]] == ["F1", "F2", "F3", "F4", "F5"]


def lf(lineage, **kw):
    return {**f(**kw), "lineage": lineage}


def test_ports_of_one_rule_count_once_but_every_tool_is_listed():
    # ruff's S105 is bandit's B105: two tools, one opinion. pylint's own check is a second one.
    pw = {"line": 4, "title": "Possible hardcoded password"}
    r = aggregate(
        [
            child("ruff", lf("bandit", **pw)),
            child("bandit", lf("bandit", **pw)),
            child("pylint", lf("pylint", **pw)),
            child("llm", f(**pw)),  # no lineage: its agent is its own reviewer
        ]
    )
    [m] = r["findings"]
    assert m["agents"] == ["bandit", "llm", "pylint", "ruff"]
    assert m["consensus"] == 3
    assert {x["agent"]: x.get("lineage") for x in m["raised"]}["ruff"] == "bandit"


def test_two_ports_of_one_rule_alone_are_no_consensus():
    r = aggregate([child("ruff", lf("pyflakes", title="Unused import: os")), child("pyflakes", lf("pyflakes"))])
    [m] = r["findings"]
    assert (m["consensus"], m["agents"]) == (1, ["pyflakes", "ruff"])
    assert r["summary"]["consensus"] == 0


def test_a_bad_lineage_drops_that_finding_only():
    r = aggregate([child("a", {**f(), "lineage": 5}, f(line=30, title="Use of eval"))])
    assert r["agents"][0]["invalid"] == 1
    assert [m["title"] for m in r["findings"]] == ["Use of eval"]


def test_per_agent_counts_like_the_write_up_table():
    r = aggregate(
        [
            child(
                "gemini", f(severity="critical"), f(line=50, severity="critical"), f(line=90, severity="observation")
            ),
            child("rex", f(line=30, severity="recommendation", title="Long function")),
            child("phil"),
        ]
    )
    table = {a["agent"]: (a["critical"], a["recommendation"], a["observation"], a["findings"]) for a in r["agents"]}
    assert table == {"gemini": (2, 0, 1, 3), "rex": (0, 1, 0, 1), "phil": (0, 0, 0, 0)}
    assert all(a["status"] == "ok" for a in r["agents"])
    assert r["summary"] | {} == {
        "findings": 4,
        "consensus": 0,
        "critical": 2,
        "recommendation": 1,
        "observation": 1,
        "agents": 3,
        "agents_reporting": 3,
    }


def test_malformed_and_failed_children_are_recorded_and_do_not_break_the_rest():
    children = [
        child("good", f(), f(line=40, severity="urgent"), f(line=None, title=""), "not a finding"),
        child("text", result="I think the code is fine"),
        child("nofindings", result={"summary": "looks good"}),
        child("chatty", result={"answer": "Looks good to me {really}."}),
        child("badlist", result={"findings": {"file": "x"}}),
        child("none", result=None),
        child("down", state="failed", error="model timed out"),
        child("gone", state="canceled"),
        child("peer", f(line=11, title="unused import os")),
    ]
    children[5]["result"] = None
    r = aggregate(children)
    status = {a["agent"]: (a["status"], a.get("reason")) for a in r["agents"]}
    assert status == {
        "good": ("ok", None),
        "text": ("malformed", "result is not an object"),
        "nofindings": ("malformed", "result has no findings list"),
        "chatty": ("malformed", 'the answer holds no JSON {"findings": [...]}'),
        "badlist": ("malformed", "findings is not a list"),
        "none": ("malformed", "result is not an object"),
        "down": ("failed", "model timed out"),
        "gone": ("canceled", None),
        "peer": ("ok", None),
    }
    good = next(a for a in r["agents"] if a["agent"] == "good")
    assert good["findings"] == 1 and good["invalid"] == 3
    assert any("severity 'urgent'" in reason for reason in good["invalid_reasons"])
    assert [(m["agents"], m["consensus"]) for m in r["findings"]] == [(["good", "peer"], 2)]
    assert r["children"] == children  # the collect view is still there, untouched
    assert r["summary"]["agents"] == 9 and r["summary"]["agents_reporting"] == 2


@pytest.mark.parametrize(
    "bad",
    [
        {"line": 3, "severity": "critical", "title": "t"},  # no file
        {"file": "a.py", "line": -1, "severity": "critical", "title": "t"},
        {"file": "a.py", "line": "12", "severity": "critical", "title": "t"},
        {"file": "a.py", "line": True, "severity": "critical", "title": "t"},
        {"file": "a.py", "line": 1, "severity": "high", "title": "t"},
        {"file": "a.py", "line": 1, "severity": "critical"},
        {"file": "a.py", "line": 1, "severity": "critical", "title": "t", "detail": ["x"]},
        ["a.py", 1],
    ],
)
def test_invalid_findings_are_dropped_and_counted(bad):
    r = aggregate([child("a", bad, f())])
    assert r["agents"][0]["invalid"] == 1 and r["agents"][0]["findings"] == 1
    assert len(r["findings"]) == 1


def test_lenient_where_it_is_harmless():
    r = aggregate([child("a", {"file": "a.py", "severity": " Critical ", "title": " Use of eval ", "detail": None})])
    (m,) = r["findings"]
    assert (m["severity"], m["title"], m["line"], m["detail"]) == ("critical", "Use of eval", None, "")


def test_too_many_findings_are_cut_off_and_said_so(monkeypatch):
    monkeypatch.setattr(consensus, "MAX_FINDINGS_PER_AGENT", 5)
    r = aggregate([child("a", *[f(line=10 * i, title=f"problem {i}") for i in range(8)])])
    assert r["agents"][0]["findings"] == 5 and r["agents"][0]["truncated"] == 3


def test_no_children_and_no_findings():
    assert aggregate([])["findings"] == [] and aggregate([])["summary"]["findings"] == 0
    r = aggregate([child("a"), child("b")])
    assert r["findings"] == [] and [a["findings"] for a in r["agents"]] == [0, 0]


def test_merging_is_independent_of_the_order_children_arrive_in():
    kids = [
        child("a", f(line=5), f(line=20, title="Bare except")),
        child("b", f(line=6, title="unused import os"), f(line=21, title="bare except clause")),
        child("c", f(line=7), f(line=60, title="Use of eval")),
    ]
    first = aggregate(kids)["findings"]
    again = aggregate(list(reversed(kids)))["findings"]
    assert first == again
    assert [m["consensus"] for m in first] == [3, 2, 1]


@pytest.mark.parametrize(
    "answer",
    [
        '{"findings": [{"file": "app.py", "line": 11, "severity": "critical", "title": "unused import os"}]}',
        'Here is my review:\n```json\n{"findings": [{"file": "app.py", "line": 11, "severity": "critical",'
        ' "title": "Unused import: os", "detail": "drop it"}]}\n```\nHope it helps.',
        'Sure! {"findings": [{"file": "./app.py", "line": 9, "severity": "Critical",'
        ' "title": "os is an unused import"}]}',
    ],
)
def test_an_llm_text_answer_holding_findings_json_joins_the_consensus(answer):
    r = aggregate([child("ruff", f()), child("llm", result={"answer": answer, "model": "qwen"})])
    assert [(m["agents"], m["consensus"], m["severity"]) for m in r["findings"]] == [(["llm", "ruff"], 2, "critical")]
    assert {a["agent"]: a["status"] for a in r["agents"]} == {"ruff": "ok", "llm": "ok"}


def test_a_merged_finding_takes_the_majority_title_and_the_highest_severity():
    r = aggregate(
        [
            child("a-model", f(line=15, title="Bare except hides every error", severity="critical", detail="model")),
            child("pylint", f(line=15, title="Bare except", severity="recommendation", detail="pylint W0702")),
            child("ruff", f(line=15, title="Bare except", severity="observation", detail="ruff E722")),
        ]
    )
    (m,) = r["findings"]
    assert (m["title"], m["severity"], m["detail"], m["consensus"]) == ("Bare except", "critical", "pylint W0702", 3)
    assert [x["title"] for x in m["raised"]] == ["Bare except hides every error", "Bare except", "Bare except"]


JUNK = [
    None, 0, -1, 3.5, True, "", "{", "}{", "```json\n{\"findings\": 1}\n```", [], [[]], {}, {"findings": None},
    {"findings": [None, 1, "x", [], {}, {"file": {}}]},
    {"findings": [{"file": "a", "line": 1e308, "severity": "critical", "title": 1}]},
    {"answer": None}, {"answer": "{\"findings\": [{\"file\": \"a\"}]}"}, {"answer": "{" * 10000},
    {"findings": [{"file": "a.py", "line": 2**70, "severity": "observation", "title": "t" * 10**5}]},
    {"findings": [{"file": "\x00", "line": 1, "severity": "critical", "title": "\ud800"}]},
]  # fmt: skip


def test_no_result_an_agent_can_send_breaks_the_merge():
    children = [child(f"a{i}", result=junk) for i, junk in enumerate(JUNK)]
    children.append({"agent": None, "state": None})
    children.append("not even a child")
    r = aggregate(children)
    assert len(r["agents"]) == len(children)
    assert all(len(m["title"]) <= consensus.MAX_TEXT for m in r["findings"])


def test_a_name_after_the_colon_counts_even_when_it_is_a_stop_word():
    a = consensus.parse_finding(
        "x", {"file": "f.py", "line": 3, "severity": "observation", "title": "Unused variable: a"}
    )
    b = consensus.parse_finding(
        "y", {"file": "f.py", "line": 3, "severity": "observation", "title": "Unused variable: b"}
    )
    assert not consensus.same_problem(a, b)


def test_one_agent_reporting_the_same_thing_twice_counts_once():
    twice = {"file": "f.py", "line": 3, "severity": "critical", "title": "Use of eval"}
    result = consensus.aggregate(
        [{"agent": "a", "task_id": "1", "state": "completed", "result": {"findings": [twice, dict(twice)]}}]
    )
    assert len(result["findings"]) == 1
    assert result["agents"][0]["findings"] == 1 and result["agents"][0]["duplicates"] == 1


def test_a_flood_of_findings_on_one_line_costs_a_bounded_number_of_comparisons(monkeypatch):
    """Settling runs in the database's write transaction: no child result may make it quadratic."""
    calls = 0
    real = consensus.same_problem

    def counting(a, b):
        nonlocal calls
        calls += 1
        return real(a, b)

    monkeypatch.setattr(consensus, "same_problem", counting)
    per_agent = consensus.MAX_FINDINGS_PER_AGENT
    children = [
        {
            "agent": f"ag{n}",
            "task_id": str(n),
            "state": "completed",
            "result": {
                "findings": [
                    {"file": "a.py", "line": 1, "severity": "observation", "title": f"w0 w1 w2 w3 x{i}"}
                    for i in range(per_agent)
                ]
            },
        }
        for n in range(4)
    ]
    result = consensus.aggregate(children)
    assert calls <= 4 * per_agent * consensus.MAX_COMPARISONS_PER_FINDING
    assert sum(m["consensus"] for m in result["findings"]) == 4 * per_agent  # nothing lost
