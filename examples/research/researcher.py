"""The research example's researcher: searches one local corpus of text files for the workflow's question
(offline keyword scoring) and returns its best passages. Which corpus: $RESEARCH_CORPUS, else the folder
of corpora/ named like the agent (MCS_AGENT_ID, from its env file):

    mcs admin agent create sqlite --capability research --out sqlite.env
    mcs agent run examples/research/researcher.py:search --capability research --env-file sqlite.env
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mcs.agent import PermanentError, Task

CORPORA = Path(__file__).resolve().parent / "corpora"
STOPWORDS = frozenset("the and for are was what which when how why who does with from that this into not".split())
TOP = 2  # passages returned per researcher


def _words(text: str) -> list[str]:
    return [w for w in re.findall(r"[a-z0-9_]+", text.lower()) if len(w) > 2 and w not in STOPWORDS]


def _stem(word: str) -> str:
    return word[:-1] if word.endswith("s") and len(word) > 4 else word


def _corpus() -> Path:
    chosen = os.environ.get("RESEARCH_CORPUS") or CORPORA / os.environ.get("MCS_AGENT_ID", "")
    path = Path(chosen)
    if not path.is_dir() or path == CORPORA:
        raise PermanentError(f"no corpus at {path}: set RESEARCH_CORPUS or name the agent after a corpora/ folder")
    return path


def search(task: Task) -> dict[str, Any]:
    asked = (task.inputs.get("workflow") or {}).get("question") or (task.payload or {}).get("question")
    if not asked:
        raise PermanentError("no question: give the workflow a `question` input")
    wanted = {_stem(w) for w in _words(asked)}
    corpus = _corpus()
    scored = []
    for doc in sorted(corpus.glob("*.txt")):
        text = " ".join(doc.read_text().split())
        sentences = re.split(r"(?<=[.!?])\s+", text)
        ranked = sorted(sentences, key=lambda s: -sum(_stem(w) in wanted for w in _words(s)))
        score = sum(_stem(w) in wanted for w in _words(text))
        if score:
            scored.append({"source": f"{corpus.name}/{doc.name}", "score": score, "passage": " ".join(ranked[:2])})
    scored.sort(key=lambda f: (-f["score"], f["source"]))
    return {"question": asked, "corpus": corpus.name, "findings": scored[:TOP]}
