"""The HTML report's content, before a browser sees it (tests/acceptance/test_review.py drives it in
Chromium): every finding is there, and nothing an agent wrote can become markup or script."""

from __future__ import annotations

from html.parser import HTMLParser

from mcs.consensus import aggregate
from mcs.review.report import render_html, render_json

EVIL = '<img src=x onerror="alert(1)"></script><script>alert(2)</script>'


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.seen = []

    def handle_starttag(self, tag, attrs):
        self.seen.append((tag, [name for name, _ in attrs]))


def result():
    return aggregate(
        [
            {"agent": "ruff", "task_id": "t1", "state": "completed", "result": {"findings": [
                {"file": "a.py", "line": 3, "severity": "critical", "title": EVIL, "detail": EVIL},
                {"file": "b.py", "line": 9, "severity": "observation", "title": "Unused import: os", "detail": ""},
            ]}},
            {"agent": "<b>bad-agent</b>", "task_id": "t2", "state": "failed", "error": EVIL},
        ]
    )  # fmt: skip


def test_agent_text_is_escaped_everywhere():
    html = render_html(result(), title="MCS review: <proj>", task_id="t0")
    assert "<img" not in html and "<b>bad-agent" not in html and "alert(2)</script>" not in html
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in html
    assert html.count("<script>") == 1  # the report's own, and no other
    assert "<title>MCS review: &lt;proj&gt;</title>" in html


def test_every_finding_and_agent_is_rendered_without_the_network():
    r = result()
    html = render_html(r, title="t")
    assert html.count('<tr data-id="') == len(r["findings"]) == 2
    assert 'data-agent="ruff"' in html and 'data-agent="&lt;b&gt;bad-agent&lt;/b&gt;"' in html
    assert "http://" not in html and "https://" not in html
    tags = Tags()
    tags.feed(html)
    assert not [t for t in tags.seen if t[0] in ("img", "link", "iframe") or {"src", "href"} & set(t[1])]
    assert [t[0] for t in tags.seen].count("script") == 1
    assert "default-src 'none'" in html  # the page may load nothing, even if a browser were tricked


def test_json_twin_carries_meta_and_result():
    text = render_json(result(), task_id="t0", title="t")
    assert text.startswith("{") and '"task_id": "t0"' in text and '"findings"' in text


def test_a_merge_the_server_could_not_do_is_said_not_shown_as_zero_findings():
    from mcs.review.submit import summary_text

    text = summary_text({"aggregate": "consensus", "error": "merge failed: boom", "agents": [], "findings": []})
    assert text.splitlines()[0] == "warning: the server could not merge the findings: merge failed: boom"


def test_each_finding_shows_its_code_lines_escaped():
    code = "\n".join(f"line{n} = {n}" for n in range(1, 11)).replace("line5 = 5", "x = '<script>'")
    finding = {"file": "app.py", "line": 5, "lines": [5], "severity": "critical", "title": "T", "agents": ["a"],
               "consensus": 1, "raised": []}  # fmt: skip
    html = render_html({"findings": [finding], "summary": {}, "agents": []}, title="t", sources={"app.py": code})
    snippet = html[html.index('<pre class="code">') :]
    snippet = snippet[: snippet.index("</pre>")]
    assert "line3 = 3" in snippet and "line7 = 7" in snippet  # two lines either side
    assert "line2 = 2" not in snippet and "line8 = 8" not in snippet
    assert '<span class="hit">5  x = &#x27;&lt;script&gt;&#x27;</span>' in snippet


def test_no_code_for_a_file_the_report_does_not_have():
    finding = {"file": "gone.py", "line": 5, "severity": "critical", "title": "T", "agents": ["a"], "consensus": 1}
    html = render_html({"findings": [finding], "summary": {}, "agents": []}, title="t", sources={})
    assert '<pre class="code">' not in html
