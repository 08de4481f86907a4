"""The review report: one self-contained HTML file (inline CSS and JS, no network) from a consensus
result, with the per-agent counts table and the findings table, sortable by any column and filterable by
severity, file and consensus.

The rows are rendered here, so the report reads without JavaScript too; the script only sorts, filters
and keeps the view in the URL fragment (`review.html#severity=critical&consensus=2`), so a view can be
shared or bookmarked.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from mcs.consensus import SEVERITIES

CONTEXT_LINES = 2  # lines of code shown above and below a finding's line
SEVERITY_LABELS = {"critical": "Critical", "recommendation": "Recommendations", "observation": "Observations"}

CSS = """
:root { --crit: #b3261e; --rec: #9a6700; --obs: #3d5a80; --line: #d0d7de; --muted: #57606a; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 1200px;
       padding: 0 1rem; color: #1f2328; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
.meta { color: var(--muted); margin: 0 0 1rem; }
.cards { display: flex; gap: .75rem; flex-wrap: wrap; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .5rem .9rem; min-width: 8rem; }
.card b { display: block; font-size: 1.4rem; }
table { border-collapse: collapse; width: 100%; margin-top: .5rem; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; white-space: nowrap; }
th[data-sort] { cursor: pointer; user-select: none; }
th[data-sort]::after { content: " \\2195"; color: #8c959f; }
th[aria-sort=ascending]::after { content: " \\2191"; color: #1f2328; }
th[aria-sort=descending]::after { content: " \\2193"; color: #1f2328; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.sev { font-weight: 600; text-transform: capitalize; }
.sev-critical { color: var(--crit); } .sev-recommendation { color: var(--rec); } .sev-observation { color: var(--obs); }
.badge { display: inline-block; min-width: 1.6rem; text-align: center; border-radius: 999px; padding: 0 .45rem;
         background: #eaeef2; font-weight: 600; }
.badge.multi { background: #1f883d; color: white; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
details summary { cursor: pointer; }
.raised { color: var(--muted); margin: .3rem 0 0 1rem; padding: 0; }
.controls { display: flex; gap: 1rem; flex-wrap: wrap; align-items: end; margin-top: .5rem; }
.controls label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted); }
.controls select { font: inherit; padding: .2rem; min-width: 10rem; }
.status-ok { color: #1f883d; } .status-bad { color: var(--crit); }
pre.code { margin: .4rem 0 0; padding: .3rem .5rem; background: #f6f8fa; border-radius: 4px; overflow-x: auto;
           font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, monospace; }
pre.code .hit { background: #fff8c5; display: block; }
"""

SCRIPT = """
(function () {
  var table = document.getElementById("findings");
  var body = table.tBodies[0];
  var rows = Array.prototype.slice.call(body.rows);
  var controls = { severity: document.getElementById("f-severity"), file: document.getElementById("f-file"),
                   consensus: document.getElementById("f-consensus") };
  var state = { severity: "", file: "", consensus: "1", sort: "", dir: "asc" };
  var numeric = { consensus: true, line: true, rank: true, id: true };

  function readHash() {
    var fresh = { severity: "", file: "", consensus: "1", sort: "", dir: "asc" };
    location.hash.replace(/^#/, "").split("&").forEach(function (pair) {
      if (!pair) return;
      var i = pair.indexOf("="), key = decodeURIComponent(i < 0 ? pair : pair.slice(0, i));
      if (key in fresh) fresh[key] = decodeURIComponent(i < 0 ? "" : pair.slice(i + 1));
    });
    state = fresh;
  }
  function writeHash() {
    var parts = [];
    Object.keys(state).forEach(function (k) {
      var v = state[k];
      if (v && !(k === "consensus" && v === "1") && !(k === "dir" && v === "asc"))
        parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(v));
    });
    var hash = parts.length ? "#" + parts.join("&") : "";
    if (hash !== location.hash) history.replaceState(null, "", hash || location.pathname + location.search);
  }
  function value(row, key) {
    var v = row.dataset[key];
    return numeric[key] ? Number(v) : (v || "").toLowerCase();
  }
  function render() {
    Object.keys(controls).forEach(function (k) { controls[k].value = state[k]; });
    var minimum = Number(state.consensus) || 1, shown = 0;
    rows.forEach(function (row) {
      var visible = (!state.severity || row.dataset.severity === state.severity) &&
                    (!state.file || row.dataset.file === state.file) &&
                    Number(row.dataset.consensus) >= minimum;
      row.hidden = !visible;
      if (visible) shown++;
    });
    var ordered = rows.slice();
    if (state.sort) {
      var sign = state.dir === "desc" ? -1 : 1;
      ordered.sort(function (a, b) {
        var x = value(a, state.sort), y = value(b, state.sort);
        if (x < y) return -sign;
        if (x > y) return sign;
        return Number(a.dataset.id) - Number(b.dataset.id);
      });
    }
    ordered.forEach(function (row) { body.appendChild(row); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      if (!th.dataset.sort) return;
      if (th.dataset.sort !== state.sort) { th.removeAttribute("aria-sort"); return; }
      th.setAttribute("aria-sort", state.dir === "desc" ? "descending" : "ascending");
    });
    document.getElementById("shown").textContent = shown + " of " + rows.length;
    document.getElementById("empty").hidden = shown !== 0;
  }
  Object.keys(controls).forEach(function (k) {
    controls[k].addEventListener("change", function () { state[k] = controls[k].value; writeHash(); render(); });
  });
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
    if (!th.dataset.sort) return;
    th.addEventListener("click", function () {
      var key = th.dataset.sort;
      state.dir = state.sort === key && state.dir === "asc" ? "desc" : "asc";
      state.sort = key;
      writeHash();
      render();
    });
  });
  window.addEventListener("hashchange", function () { readHash(); render(); });
  readHash();
  render();
  document.body.dataset.ready = "true";
})();
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _agents_table(agents: list[dict[str, Any]]) -> str:
    head = (
        "<tr><th>Agent</th><th>Status</th>"
        + "".join(f'<th class="num">{SEVERITY_LABELS[s]}</th>' for s in SEVERITIES)
        + '<th class="num">Total</th></tr>'
    )
    rows = []
    for a in agents:
        ok = a.get("status") == "ok"
        status = _e(a.get("status"))
        if not ok and a.get("reason"):
            status += f": {_e(a['reason'])}"
        if a.get("invalid"):
            status += f" ({_e(a['invalid'])} invalid findings dropped)"
        cells = "".join(f'<td class="num">{_e(a.get(s, 0))}</td>' for s in SEVERITIES)
        rows.append(
            f'<tr data-agent="{_e(a.get("agent"))}"><td>{_e(a.get("agent"))}</td>'
            f'<td class="{"status-ok" if ok else "status-bad"}">{status}</td>{cells}'
            f'<td class="num">{_e(a.get("findings", 0))}</td></tr>'
        )
    return f'<table id="agents"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _snippet(f: dict[str, Any], sources: dict[str, list[str]]) -> str:
    """The code around a finding's lines (escaped), or nothing when the file or line is unknown."""
    lines = sources.get(str(f.get("file")))
    hits = {n for n in f.get("lines") or [f.get("line")] if isinstance(n, int) and n > 0}
    if not lines or not hits:
        return ""
    first, last = max(1, min(hits) - CONTEXT_LINES), min(len(lines), max(hits) + CONTEXT_LINES)
    if first > last:
        return ""
    width = len(str(last))
    shown = "".join(
        f'<span class="hit">{n:>{width}}  {_e(lines[n - 1])}</span>'
        if n in hits
        else f"{n:>{width}}  {_e(lines[n - 1])}\n"
        for n in range(first, last + 1)
    )
    return f'<pre class="code">{shown}</pre>'


def _finding_row(index: int, f: dict[str, Any], sources: dict[str, list[str]] | None = None) -> str:
    severity = f.get("severity", "observation")
    raised = "".join(
        f"<li><b>{_e(r.get('agent'))}</b>"
        f"{' line ' + _e(r.get('line')) if r.get('line') else ''}: {_e(r.get('detail') or r.get('title'))}</li>"
        for r in f.get("raised", [])
    )
    consensus = int(f.get("consensus", 1))
    where = _e(f.get("file")) + (f":{_e(f['line'])}" if f.get("line") else "")
    return (
        f'<tr data-id="{index}" data-consensus="{consensus}" data-severity="{_e(severity)}" '
        f'data-rank="{SEVERITIES.index(severity) if severity in SEVERITIES else 3}" data-file="{_e(f.get("file"))}" '
        f'data-line="{_e(f.get("line") or 0)}" data-title="{_e(f.get("title"))}" '
        f'data-agents="{_e(", ".join(f.get("agents", [])))}">'
        f'<td class="num"><span class="badge{" multi" if consensus >= 2 else ""}">{consensus}</span></td>'
        f'<td class="sev sev-{_e(severity)}">{_e(severity)}</td>'
        f"<td><code>{where}</code></td>"
        f'<td><details><summary class="title">{_e(f.get("title"))}</summary>'
        f'{_snippet(f, sources or {})}<ul class="raised">{raised}</ul></details></td>'
        f'<td class="agents">{_e(", ".join(f.get("agents", [])))}</td></tr>'
    )


def render_html(
    result: dict[str, Any],
    *,
    title: str,
    task_id: str | None = None,
    generated_at: str = "",
    sources: dict[str, str] | None = None,
) -> str:
    """The report for a consensus result (`mcs.consensus.aggregate`); with `sources` (path -> the reviewed
    file's text), each finding shows the code around its lines."""
    source_lines = {path: text.splitlines() for path, text in (sources or {}).items()}
    findings = result.get("findings", [])
    summary = result.get("summary", {})
    files = sorted({f.get("file", "") for f in findings})
    top = max((int(f.get("consensus", 1)) for f in findings), default=1)
    cards = "".join(
        f'<div class="card" id="total-{key}"><b>{_e(summary.get(key, 0))}</b>{label}</div>'
        for key, label in (
            ("findings", "unique findings"),
            ("consensus", "with consensus (2+ reviewers)"),
            ("critical", "critical"),
            ("recommendation", "recommendations"),
            ("observation", "observations"),
            ("agents_reporting", f"of {summary.get('agents', 0)} agents reported"),
        )
    )
    severity_options = '<option value="">all</option>' + "".join(
        f'<option value="{s}">{s}</option>' for s in SEVERITIES
    )
    file_options = '<option value="">all files</option>' + "".join(
        f'<option value="{_e(f)}">{_e(f)}</option>' for f in files
    )
    consensus_options = "".join(
        f'<option value="{n}">{"any" if n == 1 else f"{n}+ reviewers"}</option>' for n in range(1, max(top, 2) + 1)
    )
    # (column, key, numeric?) -- the Severity column sorts by rank, most severe first when ascending
    headers = [
        ("Consensus", "consensus", True),
        ("Severity", "rank", False),
        ("Location", "file", False),
        ("Finding", "title", False),
        ("Agents", "agents", False),
    ]
    head = "".join(
        f'<th data-sort="{key}"{" class=num" if numeric else ""}>{label}</th>' for label, key, numeric in headers
    )
    rows = "".join(_finding_row(i, f, source_lines) for i, f in enumerate(findings))
    meta = " · ".join(_e(x) for x in (generated_at, f"task {task_id}" if task_id else "") if x)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
 content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<title>{_e(title)}</title><style>{CSS}</style></head>
<body>
<h1>{_e(title)}</h1>
<p class="meta">{meta}</p>
<div class="cards">{cards}</div>
<h2>Agents</h2>
{_agents_table(result.get("agents", []))}
<h2>Findings <small id="shown">{len(findings)} of {len(findings)}</small></h2>
<div class="controls">
<label>Severity <select id="f-severity">{severity_options}</select></label>
<label>File <select id="f-file">{file_options}</select></label>
<label>Consensus <select id="f-consensus">{consensus_options}</select></label>
</div>
<table id="findings"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>
<p id="empty" hidden>No finding matches these filters.</p>
<script>{SCRIPT}</script>
</body></html>
"""


def render_json(result: dict[str, Any], **meta: Any) -> str:
    """The JSON twin of the report: the consensus result with who, what and when."""
    return json.dumps({**meta, **result}, indent=2, ensure_ascii=False) + "\n"
