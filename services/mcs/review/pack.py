"""The `mcs-review` payload: the code to review, packed as JSON, and its safe unpacking.

    {"root": "myproject", "files": [{"path": "pkg/mod.py", "content": "..."}], "prompt": "...",
     "findings_format": {...}}

Analyzer agents read `files`; paths are relative, use `/`, and never contain `..`, and `unpack()` refuses
anything that would land outside its directory. LLM agents (`mcs agent llm`) read only `prompt`: the
review instructions followed by every file with numbered lines (so the model can cite lines), unless
packed with `with_prompt_code=False` (analyzers only; half the size).
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

TASK_TYPE = "mcs-review"
DEFAULT_INCLUDE = ("*.py", "*.pyi")
# Directories never packed: version control, virtualenvs, caches, build output, dependencies.
SKIP_DIRS = frozenset(
    {
        ".git", ".hg", ".svn", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".nox",
        ".mypy_cache", ".ruff_cache", ".pytest_cache", ".eggs", "build", "dist", "site-packages",
    }
)  # fmt: skip
BINARY_SNIFF = 8192  # bytes read to tell a binary file (a NUL byte) from text
DEFAULT_MAX_BYTES = 1024 * 1024  # the server's default MCS_MAX_BODY_BYTES
ENVELOPE_BYTES = 1024  # room for the rest of the submit request around the payload
MAX_FILES = 5000

PROMPT = (
    "Review the code in `files` (paths relative to the project root) for bugs, security problems and "
    'maintainability issues. Answer with JSON only: {"findings": [{"file": path, "line": number or '
    'null, "severity": "critical" | "recommendation" | "observation", "title": a short name of '
    'the problem, "detail": one or two sentences}]}. critical: a bug or vulnerability; recommendation: '
    "should be fixed; observation: worth knowing. Prefer plain titles other reviewers would use too, such as "
    "'Use of eval', 'Unused import: NAME', 'Undefined name: NAME', 'Bare except', 'Unreachable code', "
    "'Subprocess call with shell=True', 'Possible hardcoded password'."
)
FINDINGS_FORMAT = {
    "findings": [
        {"file": "str", "line": "int|null", "severity": "critical|recommendation|observation", "title": "str",
         "detail": "str"}
    ]
}  # fmt: skip


class PackError(Exception):
    """The code cannot be packed (nothing to review, or too large for one request)."""


class UnpackError(ValueError):
    """A payload that is not a well-formed `mcs-review` payload."""


@dataclass
class Packed:
    root: str
    files: list[dict[str, str]] = field(default_factory=list)
    skipped_binary: list[str] = field(default_factory=list)
    skipped_ignored: int = 0
    with_prompt_code: bool = True

    def prompt(self) -> str:
        """The instructions, then (with_prompt_code) each file with its lines numbered."""
        if not self.with_prompt_code:
            return PROMPT
        parts = [PROMPT, f"\nThe project `{self.root}` has {len(self.files)} files; each line starts with its number."]
        for f in self.files:
            numbered = "\n".join(f"{n:>5}| {line}" for n, line in enumerate(f["content"].splitlines(), start=1))
            parts.append(f"\n=== {f['path']} ===\n{numbered}")
        return "\n".join(parts)

    def payload(self) -> dict[str, Any]:
        return {"root": self.root, "files": self.files, "prompt": self.prompt(), "findings_format": FINDINGS_FORMAT}

    def size(self) -> int:
        """Bytes of the payload as the client sends it (compact UTF-8 JSON)."""
        return len(json.dumps(self.payload(), ensure_ascii=False, separators=(",", ":")).encode())


def _gitignore(root: Path) -> list[str]:
    """The simple patterns of the root's .gitignore (negations and comments ignored)."""
    try:
        lines = (root / ".gitignore").read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith(("#", "!"))]


def _ignored(rel: str, name: str, is_dir: bool, patterns: list[str]) -> bool:
    for pattern in patterns:
        dir_only = pattern.endswith("/")
        p = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        if "/" in p.lstrip("/"):  # anchored to the root
            if fnmatch.fnmatch(rel, p.lstrip("/")):
                return True
        elif fnmatch.fnmatch(name, p):
            return True
    return False


def pack(
    path: Path,
    *,
    include: tuple[str, ...] = DEFAULT_INCLUDE,
    max_bytes: int = DEFAULT_MAX_BYTES,
    with_prompt_code: bool = True,
) -> Packed:
    """The files under `path` (a directory or one file) that match `include`, skipping version control,
    virtualenvs, caches, build output, .gitignore'd paths and binaries. PackError when nothing is left or
    the payload would not fit in a request of `max_bytes`."""
    path = path.resolve()
    if not path.exists():
        raise PackError(f"{path} does not exist")
    root = path if path.is_dir() else path.parent
    packed = Packed(root=root.name or "root", with_prompt_code=with_prompt_code)
    candidates: list[Path] = []
    if path.is_file():
        candidates.append(path)
    else:
        patterns = _gitignore(root)
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            keep = []
            for d in sorted(dirnames):
                rel = (here / d).relative_to(root).as_posix()
                if d in SKIP_DIRS or d.endswith(".egg-info") or (here / d / "pyvenv.cfg").exists():
                    packed.skipped_ignored += 1
                elif _ignored(rel, d, True, patterns):
                    packed.skipped_ignored += 1
                else:
                    keep.append(d)
            dirnames[:] = keep
            for name in sorted(filenames):
                rel = (here / name).relative_to(root).as_posix()
                if not any(fnmatch.fnmatch(name, pat) for pat in include):
                    continue
                if _ignored(rel, name, False, patterns):
                    packed.skipped_ignored += 1
                    continue
                candidates.append(here / name)
    resolved_root = root.resolve()
    for file in candidates:
        rel = file.relative_to(root).as_posix()
        if not file.is_file():
            continue
        if file.is_symlink() and resolved_root not in file.resolve().parents:
            # A link out of the project (to ~/.ssh/..., say) would send that file to every reviewer.
            packed.skipped_ignored += 1
            continue
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise PackError(f"cannot read {rel}: {exc.strerror}") from exc
        if b"\0" in data[:BINARY_SNIFF]:
            packed.skipped_binary.append(rel)
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            packed.skipped_binary.append(rel)
            continue
        packed.files.append({"path": rel, "content": text})
    if not packed.files:
        raise PackError(f"no files to review under {path} (looked for {', '.join(include)})")
    if len(packed.files) > MAX_FILES:
        raise PackError(f"{len(packed.files)} files is more than {MAX_FILES}; review a subdirectory")
    size = packed.size()
    if size + ENVELOPE_BYTES > max_bytes:
        raise PackError(
            f"the code packs to {size / 1024:.0f} KiB, over the server's request limit of {max_bytes / 1024:.0f} KiB"
            " (MCS_MAX_BODY_BYTES); review a subdirectory"
            + (", or leave the code out of the LLM prompt (--no-prompt-code)" if with_prompt_code else "")
            + ", or raise MCS_MAX_BODY_BYTES on the server and pass --max-bytes"
        )
    return packed


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate, which JSON can carry
        return False
    return True


def _safe_relative(raw: Any) -> PurePosixPath:
    """A file path of the payload, checked: a non-empty relative POSIX path to a file, written the way
    `pack()` writes it (no `.` or `..` parts, no empty parts, no trailing `/`, no backslash, no control
    character), so that each file has exactly one name. UnpackError says what is wrong."""
    if not isinstance(raw, str) or not raw.strip():
        raise UnpackError(f"bad file path {raw!r}: it must be a non-empty string")
    if "\\" in raw or not _encodable(raw) or any(ord(c) < 32 or ord(c) == 127 for c in raw):
        raise UnpackError(f"bad file path {raw!r}: backslashes, control characters and invalid UTF-8 are refused")
    rel = PurePosixPath(raw)
    if rel.is_absolute() or raw.startswith("~") or ".." in raw.split("/") or ":" in raw.split("/")[0]:
        raise UnpackError(f"file path {raw!r} must be relative and stay inside the project")
    if not rel.parts or rel.as_posix() != raw or "." in raw.split("/"):
        raise UnpackError(
            f"bad file path {raw!r}: it must name a file, with no '.' or empty parts and no trailing '/'"
            + (f" (write {rel.as_posix()!r})" if rel.parts and rel.as_posix() != raw else "")
        )
    return rel


def unpack(payload: Any, dest: Path) -> list[str]:
    """Write the payload's files under `dest`; returns their relative paths. UnpackError (a payload that
    will never unpack, whatever the retry) if the payload is malformed, names a file twice, or a path
    would escape `dest`."""
    if not isinstance(payload, dict) or not isinstance(payload.get("files"), list):
        raise UnpackError("payload must be an object with a `files` list (see `mcs review`)")
    if len(payload["files"]) > MAX_FILES:
        raise UnpackError(f"{len(payload['files'])} files is more than {MAX_FILES}")
    written: list[str] = []
    seen: set[str] = set()
    dest = dest.resolve()
    for entry in payload["files"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("content"), str):
            raise UnpackError("each file must be {path, content} with string content")
        rel = _safe_relative(entry.get("path"))
        if rel.as_posix() in seen:
            raise UnpackError(f"file path {rel} is given twice")
        seen.add(rel.as_posix())
        if not _encodable(entry["content"]):
            raise UnpackError(f"the content of {rel} is not valid UTF-8 text")
        target = (dest / rel).resolve()
        if dest not in target.parents:
            raise UnpackError(f"file path {rel} would land outside the project")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(entry["content"], encoding="utf-8")
        except OSError as exc:  # `a` and `a/b` both given, a name too long, ...
            raise UnpackError(f"cannot write {rel}: {exc.strerror or exc}") from None
        written.append(rel.as_posix())
    return written
