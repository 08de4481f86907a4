"""Consensus aggregation of a fanout's results: pure, no I/O, so the store can call it inside the
transaction that settles the parent.

Each child's result is expected to be `{"findings": [{file, line, severity, title, detail}, ...]}` with
`severity` one of critical | recommendation | observation. Findings from different agents that name the
same problem merge into one, which lists the agents that raised it and their count (`consensus`).

Two findings name the same problem when all of these hold:

- the same file (paths compared after `./` and `\\` clean-up);
- lines at most `LINE_WINDOW` apart (or neither has a line: a file-level finding);
- similar titles: the Jaccard similarity of their word sets (lower-cased, punctuation and a few stop words
  dropped, simple endings -s/-ed/-ing folded) is at least `MIN_TITLE_SIMILARITY`, or the shorter title's
  words (at least `MIN_CONTAINED_WORDS` of them) all appear in the longer one. With 0.6, "Unused import:
  os" meets "unused import os" (1.0) and "os imported but unused" (0.75), but not "Unused import: sys"
  (0.5): different names are different problems. "Use of eval" meets "Use of eval on untrusted input"
  (contained), as a model's wordier title should.

A merged finding takes the title most of its agents used (ties: the shortest), the most severe severity
any of them gave, and lists every agent's own report in `raised`.

Consensus is a count of independent reviewers. A finding may name its `lineage`, the tool whose rule
produced it: ruff's S rules are ports of bandit's and its F rules of pyflakes', so a ruff S105 and a bandit
B105 on one line are one opinion seen twice. A merged finding's `consensus` counts its distinct lineages (a
finding without one is its own agent's); `agents` still lists every agent that raised it.

Clustering is deterministic and independent of the order results arrive in: all matching pairs of one
file are joined best first (most similar titles, then closest lines), and two groups join only if no
agent is in both (an agent that reports two findings means two problems).

A text answer (`{"answer": "..."}`, what `mcs agent llm` returns) counts when the text holds that JSON,
bare or in a ```json block. A child that completed with anything else is listed with `status: "malformed"`
and a reason; a single bad finding is dropped and counted in its agent's `invalid`. Nothing a child returns
can make the aggregation fail.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

SEVERITIES = ("critical", "recommendation", "observation")  # most severe first
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}
LINE_WINDOW = 3  # lines: findings this close (or closer) can be the same problem
MIN_TITLE_SIMILARITY = 0.6  # Jaccard similarity of title words needed to merge
MIN_CONTAINED_WORDS = 2  # a title this long or longer merges with one that contains all its words
MAX_FINDINGS_PER_AGENT = 2000  # more are cut off (and said so): settling runs inside a write transaction
MAX_TITLE_WORDS = 40  # words of a title compared
# Each finding is compared with at most this many others near it. Past that (hundreds of findings on the
# same few lines, which no real review produces) some duplicates stay apart, but one child's result can
# never hold the database's write lock for long: the worst case is bounded by this times the findings.
MAX_COMPARISONS_PER_FINDING = 64
MAX_TEXT = 2000  # characters kept of a title or detail
MAX_LINEAGE = 64  # characters kept of a finding's lineage
MAX_REASONS = 5  # invalid-finding reasons kept per agent
MAX_ANSWER = 1_000_000  # characters of a text answer searched for findings JSON

_STOP_WORDS = frozenset({"a", "an", "the", "of", "in", "is", "to", "for", "on", "at", "be", "and", "or", "by", "with"})
# Word endings folded so that "imported"/"import", "names"/"name" compare equal.
_SUFFIXES = ("ing", "ed", "s")
_WORD = re.compile(r"[a-z0-9_]+")


def _stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def title_words(title: str) -> frozenset[str]:
    """The words a title is compared by."""
    head, colon, name = title.lower().rpartition(":")
    if not colon:
        head, name = name, ""
    # After a colon comes a name ("Unused variable: a"): every word of it counts, stop word or not.
    words = [w for w in _WORD.findall(head) if w not in _STOP_WORDS] + _WORD.findall(name)
    return frozenset(_stem(w) for w in words[:MAX_TITLE_WORDS])


def title_similarity(a: str, b: str) -> float:
    """Jaccard similarity of two titles' word sets, 0.0 to 1.0."""
    return _jaccard(title_words(a), title_words(b), a, b)


def normalize_path(path: str) -> str:
    path = path.strip().replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return re.sub(r"/{2,}", "/", path)


@dataclass(frozen=True)
class Finding:
    agent: str
    file: str
    line: int | None
    severity: str
    title: str
    detail: str
    words: frozenset[str] = field(compare=False, repr=False)
    lineage: str | None = None

    @property
    def reviewer(self) -> str:
        """Who independently stands behind this finding: its rule's lineage, or else its agent."""
        return f"lineage:{self.lineage}" if self.lineage else f"agent:{self.agent}"

    def as_raised(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "line": self.line,
            "severity": self.severity,
            "title": self.title,
            "detail": self.detail,
            **({"lineage": self.lineage} if self.lineage else {}),
        }


class InvalidFinding(ValueError):
    pass


def parse_finding(agent: str, raw: Any) -> Finding:
    """One finding as an agent reported it, checked and normalised; InvalidFinding says what is wrong."""
    if not isinstance(raw, dict):
        raise InvalidFinding(f"a finding is {type(raw).__name__}, not an object")
    file = raw.get("file")
    if not isinstance(file, str) or not file.strip():
        raise InvalidFinding("finding without a file")
    line = raw.get("line")
    if line is not None and (isinstance(line, bool) or not isinstance(line, int) or line < 0):
        raise InvalidFinding(f"line {line!r} is not a non-negative integer")
    severity = raw.get("severity")
    if not isinstance(severity, str) or severity.strip().lower() not in SEVERITY_RANK:
        raise InvalidFinding(f"severity {severity!r} is not one of {', '.join(SEVERITIES)}")
    title = raw.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InvalidFinding("finding without a title")
    detail = raw.get("detail", "")
    if detail is None:
        detail = ""
    if not isinstance(detail, str):
        raise InvalidFinding("detail is not a string")
    lineage = raw.get("lineage")
    if lineage is not None and (not isinstance(lineage, str) or not lineage.strip()):
        raise InvalidFinding("lineage is not a non-empty string")
    title = title.strip()[:MAX_TEXT]
    return Finding(
        agent=agent,
        file=normalize_path(file)[:MAX_TEXT],
        line=line or None,  # 0 means "no particular line", as null does
        severity=severity.strip().lower(),
        title=title,
        detail=detail.strip()[:MAX_TEXT],
        words=title_words(title),
        lineage=lineage.strip().lower()[:MAX_LINEAGE] if lineage else None,
    )


def _similarity(a: Finding, b: Finding) -> float:
    return _jaccard(a.words, b.words, a.title, b.title)


def _jaccard(wa: frozenset[str], wb: frozenset[str], a: str, b: str) -> float:
    if not wa and not wb:  # titles of punctuation or stop words only: equal or not at all
        return 1.0 if a.strip().lower() == b.strip().lower() else 0.0
    return len(wa & wb) / len(wa | wb)


def same_problem(a: Finding, b: Finding) -> float:
    """The title similarity if `a` and `b` name the same problem, else 0.0."""
    if a.file != b.file:
        return 0.0
    if (a.line is None) != (b.line is None):
        return 0.0
    if a.line is not None and b.line is not None and abs(a.line - b.line) > LINE_WINDOW:
        return 0.0
    sim = _similarity(a, b)
    if sim >= MIN_TITLE_SIMILARITY:
        return sim
    shorter, longer = sorted((a.words, b.words), key=len)
    if len(shorter) >= MIN_CONTAINED_WORDS and shorter <= longer:
        return sim  # ranks below closer matches: pairs join most similar first
    return 0.0


def _candidate_pairs(findings: list[Finding]) -> list[tuple[float, int, int, int]]:
    """Every pair (i, j) of findings of one file, from different agents, that names the same problem,
    as (-similarity, line distance, i, j); `findings` is sorted by line, so only a window is compared."""
    pairs = []
    for i, a in enumerate(findings):
        for j in range(i + 1, min(len(findings), i + 1 + MAX_COMPARISONS_PER_FINDING)):
            b = findings[j]
            if (a.line is None) != (b.line is None):
                break  # file-level findings sort first: none of the rest can match `a`
            if a.line is not None and b.line is not None and b.line - a.line > LINE_WINDOW:
                break
            if a.agent == b.agent:
                continue
            sim = same_problem(a, b)
            if sim:
                pairs.append((-sim, abs((a.line or 0) - (b.line or 0)), i, j))
    pairs.sort()
    return pairs


def _clusters(findings: list[Finding]) -> list[list[Finding]]:
    """Group one file's findings: the most similar, then closest, pairs join first; two groups join only
    if no agent is in both (an agent that reports two findings means two problems)."""
    findings = sorted(findings, key=lambda f: (f.line is not None, f.line or 0, f.agent, f.title, f.detail))
    group = list(range(len(findings)))
    agents = [{f.agent} for f in findings]

    def root(i: int) -> int:
        while group[i] != i:
            group[i] = group[group[i]]
            i = group[i]
        return i

    for _, _, i, j in _candidate_pairs(findings):
        ri, rj = root(i), root(j)
        if ri == rj or agents[ri] & agents[rj]:
            continue
        keep, gone = min(ri, rj), max(ri, rj)
        group[gone] = keep
        agents[keep] |= agents[gone]
    out: dict[int, list[Finding]] = {}
    for i, finding in enumerate(findings):
        out.setdefault(root(i), []).append(finding)
    return list(out.values())


def merge(findings: list[Finding]) -> list[dict[str, Any]]:
    """Merge findings that name the same problem; each merged finding lists its agents and consensus
    count. Ordered by severity (most severe first), then consensus (most independent reviewers first), file,
    line and title."""
    by_file: dict[str, list[Finding]] = {}
    for finding in findings:
        by_file.setdefault(finding.file, []).append(finding)
    merged = [_merged(members) for file in sorted(by_file) for members in _clusters(by_file[file])]
    merged.sort(
        key=lambda m: (SEVERITY_RANK[m["severity"]], -m["consensus"], m["file"], m["line"] or 0, m["title"].lower())
    )
    for number, m in enumerate(merged, start=1):
        m["id"] = f"F{number}"
    return merged


def _merged(cluster: list[Finding]) -> dict[str, Any]:
    members = sorted(cluster, key=lambda f: (SEVERITY_RANK[f.severity], f.agent))
    # The title most agents used (ties: the shortest) names it; the most severe report with that title gives
    # the detail. The severity is the most severe any agent gave.
    votes = Counter(m.title.lower() for m in members)
    title = min(votes, key=lambda t: (-votes[t], len(t), t))
    lead = next(m for m in members if m.title.lower() == title)
    lines = sorted({m.line for m in members if m.line is not None})
    agents = sorted({m.agent for m in cluster})
    return {
        "id": "",
        "file": lead.file,
        "line": lines[0] if lines else None,
        "lines": lines,
        "severity": members[0].severity,
        "title": lead.title,
        "detail": lead.detail,
        "agents": agents,
        "consensus": len({m.reviewer for m in cluster}),
        "raised": [m.as_raised() for m in sorted(members, key=lambda f: f.agent)],
    }


def _agent_summary(child: dict[str, Any]) -> tuple[dict[str, Any], list[Finding]]:
    agent = str(child.get("agent") or "?")
    summary: dict[str, Any] = {"agent": agent, "task_id": child.get("task_id"), "state": child.get("state")}
    summary |= {"status": "ok", "findings": 0, **{s: 0 for s in SEVERITIES}, "invalid": 0}
    if child.get("state") != "completed":
        summary["status"] = child.get("state") or "unknown"
        summary["reason"] = _short(child.get("error"))
        return summary, []
    raw, problem = findings_of(child.get("result"))
    if raw is None:
        summary["status"] = "malformed"
        summary["reason"] = problem
        return summary, []
    found: list[Finding] = []
    reasons: list[str] = []
    if len(raw) > MAX_FINDINGS_PER_AGENT:
        summary["truncated"] = len(raw) - MAX_FINDINGS_PER_AGENT
        raw = raw[:MAX_FINDINGS_PER_AGENT]
    seen: set[tuple[str, int | None, frozenset[str], str]] = set()
    for item in raw:
        try:
            finding = parse_finding(agent, item)
            key = (finding.file, finding.line, finding.words, finding.title.lower())
            if key in seen:  # the same report twice from one agent is one finding
                summary["duplicates"] = summary.get("duplicates", 0) + 1
                continue
            seen.add(key)
            found.append(finding)
        except InvalidFinding as exc:
            summary["invalid"] += 1
            if len(reasons) < MAX_REASONS:
                reasons.append(str(exc))
    if reasons:
        summary["invalid_reasons"] = reasons
    counts = Counter(f.severity for f in found)
    summary["findings"] = len(found)
    summary |= {s: counts.get(s, 0) for s in SEVERITIES}
    return summary, found


_FENCED = re.compile(r"```(?:json)?\s*\n(.*?)```", re.DOTALL)


def _json_in_text(text: str) -> Any:
    """The JSON a model's answer holds: the whole text, a fenced ```json block, or the outermost {...}."""
    candidates = [text.strip(), *(m.group(1).strip() for m in _FENCED.finditer(text))]
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def findings_of(result: Any) -> tuple[list[Any] | None, str | None]:
    """(the raw findings list, None), or (None, why not). Takes `{"findings": [...]}`, and also the
    `{"answer": "<text>"}` of `mcs agent llm`, when the text holds that JSON (bare, or in a ```json block)."""
    if not isinstance(result, dict):
        return None, "result is not an object"
    if "findings" in result:
        raw = result["findings"]
        return (raw, None) if isinstance(raw, list) else (None, "findings is not a list")
    if isinstance(result.get("answer"), str):
        parsed = _json_in_text(result["answer"][:MAX_ANSWER])
        if isinstance(parsed, dict) and isinstance(parsed.get("findings"), list):
            return parsed["findings"], None
        return None, 'the answer holds no JSON {"findings": [...]}'
    return None, "result has no findings list"


def _short(value: Any, limit: int = 300) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def aggregate(children: list[dict[str, Any]]) -> dict[str, Any]:
    """A fanout parent's consensus result from its children (`{agent, task_id, state, result|error}`):
    merged `findings`, per-agent counts in `agents`, totals in `summary`, and the `children` unchanged."""
    agents: list[dict[str, Any]] = []
    everything: list[Finding] = []
    for child in children:
        summary, found = _agent_summary(child if isinstance(child, dict) else {})
        agents.append(summary)
        everything.extend(found)
    findings = merge(everything)
    severity_totals = Counter(f["severity"] for f in findings)
    return {
        "aggregate": "consensus",
        "summary": {
            "findings": len(findings),
            "consensus": sum(1 for f in findings if f["consensus"] >= 2),
            **{s: severity_totals.get(s, 0) for s in SEVERITIES},
            "agents": len(agents),
            "agents_reporting": sum(1 for a in agents if a["status"] == "ok"),
        },
        "findings": findings,
        "agents": agents,
        "children": children,
    }
