"""Packing code for `mcs review` and unpacking it on the agent side (mcs.review.pack)."""

from __future__ import annotations

import json
import re

import pytest

from mcs.review.pack import PackError, UnpackError, pack, unpack


def write(root, rel, content="x = 1\n", mode="w"):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "wb":
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def test_packs_python_and_skips_vcs_venvs_dependencies_caches_binaries_and_gitignored(tmp_path):
    write(tmp_path, "app/main.py", "print('hi')\n")
    write(tmp_path, "app/types.pyi")
    write(tmp_path, "README.md", "# not code")
    write(tmp_path, ".git/hooks/x.py")
    write(tmp_path, "node_modules/pkg/y.py")
    write(tmp_path, ".venv/lib/z.py")
    write(tmp_path, "myenv/pyvenv.cfg", "home = /usr")  # a virtualenv under any name
    write(tmp_path, "myenv/lib/site.py")
    write(tmp_path, "app/__pycache__/main.cpython-311.py")
    write(tmp_path, "build/lib/app.py")
    write(tmp_path, "app/blob.py", b"\x00\x01binary", mode="wb")
    write(tmp_path, "app/latin.py", "caf\xe9 = 1\n".encode("latin-1"), mode="wb")
    write(tmp_path, ".gitignore", "# comment\nsecret_*.py\ngenerated/\n/app/skip_me.py\n")
    write(tmp_path, "app/secret_keys.py")
    write(tmp_path, "generated/out.py")
    write(tmp_path, "app/skip_me.py")

    packed = pack(tmp_path)
    assert sorted(f["path"] for f in packed.files) == ["app/main.py", "app/types.pyi"]
    assert sorted(packed.skipped_binary) == ["app/blob.py", "app/latin.py"]
    assert packed.payload()["files"][0] == {"path": "app/main.py", "content": "print('hi')\n"}
    assert packed.payload()["root"] == tmp_path.name
    assert "findings" in packed.payload()["prompt"]  # what an LLM reviewer is asked to answer


def test_include_adds_patterns_and_a_single_file_can_be_reviewed(tmp_path):
    write(tmp_path, "a.py")
    write(tmp_path, "web/app.js", "let x = 1;")
    assert sorted(f["path"] for f in pack(tmp_path, include=("*.py", "*.js")).files) == ["a.py", "web/app.js"]
    assert [f["path"] for f in pack(tmp_path / "a.py").files] == ["a.py"]


def test_nothing_to_review_and_too_large_are_clear_errors(tmp_path):
    write(tmp_path, "notes.txt")
    with pytest.raises(PackError, match="no files to review"):
        pack(tmp_path)
    write(tmp_path, "big.py", "x = 1  # " + "y" * 300_000 + "\n")
    with pytest.raises(PackError, match=r"over the server's request limit of 256 KiB \(MCS_MAX_BODY_BYTES\)"):
        pack(tmp_path, max_bytes=256 * 1024)
    assert pack(tmp_path).size() > 300_000  # fits the default 1 MiB
    with pytest.raises(PackError, match="does not exist"):
        pack(tmp_path / "missing")


def test_size_is_the_bytes_the_client_sends(tmp_path):
    write(tmp_path, "u.py", "name = 'é✓'\n")
    packed = pack(tmp_path)
    assert packed.size() == len(json.dumps(packed.payload(), ensure_ascii=False, separators=(",", ":")).encode())


def test_unpack_round_trips(tmp_path):
    write(tmp_path / "src", "pkg/a.py", "a = 1\n")
    write(tmp_path / "src", "b.py", "b = 'é'\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    assert sorted(unpack(pack(tmp_path / "src").payload(), dest)) == ["b.py", "pkg/a.py"]
    assert (dest / "pkg/a.py").read_text() == "a = 1\n" and (dest / "b.py").read_text() == "b = 'é'\n"


@pytest.mark.parametrize(
    "payload, message",
    [
        ("just text", "payload must be an object"),
        ({"files": "a.py"}, "payload must be an object"),
        ({"files": [{"path": "a.py"}]}, "string content"),
        ({"files": [{"path": "../escape.py", "content": ""}]}, "must be relative"),
        ({"files": [{"path": "a/../../escape.py", "content": ""}]}, "must be relative"),
        ({"files": [{"path": "/etc/passwd", "content": ""}]}, "must be relative"),
        ({"files": [{"path": "C:/x.py", "content": ""}]}, "must be relative"),
        ({"files": [{"path": "a\\..\\..\\x.py", "content": ""}]}, "bad file path"),
        ({"files": [{"path": "", "content": ""}]}, "bad file path"),
        ({"files": [{"path": 7, "content": ""}]}, "bad file path"),
    ],
)
def test_unpack_refuses_malformed_payloads_and_paths_that_escape(tmp_path, payload, message):
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(UnpackError, match=message):
        unpack(payload, dest)
    assert not (tmp_path / "escape.py").exists()


def test_unpack_refuses_a_symlink_that_leads_out(tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "link").symlink_to(tmp_path)
    with pytest.raises(UnpackError, match="outside the project"):
        unpack({"files": [{"path": "link/escape.py", "content": "boom"}]}, dest)
    assert not (tmp_path / "escape.py").exists()


def test_a_symlink_out_of_the_project_is_not_packed(tmp_path):
    outside = tmp_path / "secret.py"
    outside.write_text("TOKEN = 'do not send me'\n")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "app.py").write_text("import os\n")
    (project / "inner.py").write_text("x = 1\n")
    (project / "leak.py").symlink_to(outside)
    (project / "alias.py").symlink_to(project / "inner.py")  # inside the project: fine
    packed = pack(project)
    assert sorted(f["path"] for f in packed.files) == ["alias.py", "app.py", "inner.py"]
    assert "do not send me" not in json.dumps(packed.payload())


@pytest.mark.parametrize(
    "path, message",
    [
        (".", "must name a file"),
        ("./", "must name a file"),
        ("..", "must be relative"),
        ("../", "must be relative"),
        ("/", "must be relative"),
        ("//x.py", "must be relative"),
        ("   ", "must be a non-empty string"),
        (None, "must be a non-empty string"),
        ("./a.py", "write 'a.py'"),
        ("a//b.py", "write 'a/b.py'"),
        ("a/./b.py", "write 'a/b.py'"),
        ("pkg/", "write 'pkg'"),
        ("pkg\\a.py", "backslashes"),
        ("a\nb.py", "control characters"),
        ("\ud800.py", "invalid UTF-8"),
    ],
)
def test_unpack_refuses_paths_that_do_not_name_one_file_with_a_reason(tmp_path, path, message):
    """`.` and `./` used to raise IndexError, which an agent retries as if the payload might get better."""
    with pytest.raises(UnpackError, match=re.escape(message)):
        unpack({"files": [{"path": "ok.py", "content": ""}, {"path": path, "content": "x"}]}, tmp_path)


def test_unpack_refuses_a_file_given_twice(tmp_path):
    payload = {"files": [{"path": "a.py", "content": "x = 1"}, {"path": "a.py", "content": "x = 2"}]}
    with pytest.raises(UnpackError, match="a.py is given twice"):
        unpack(payload, tmp_path)


def test_unpack_refuses_content_that_is_not_utf8_text(tmp_path):
    with pytest.raises(UnpackError, match="the content of a.py is not valid UTF-8 text"):
        unpack({"files": [{"path": "a.py", "content": "x = '\ud800'"}]}, tmp_path)


def test_unpack_a_file_and_a_folder_of_the_same_name_is_a_payload_error(tmp_path):
    payload = {"files": [{"path": "a", "content": "x"}, {"path": "a/b.py", "content": "y"}]}
    with pytest.raises(UnpackError, match="cannot write a/b.py"):
        unpack(payload, tmp_path)
