"""`mcs review` checks where the report goes before it spends a whole review on it."""

from __future__ import annotations

from click.testing import CliRunner

from mcs.cli import main


def test_an_unwritable_output_folder_is_one_line_before_anything_is_sent(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    project = tmp_path / "proj"
    project.mkdir()
    (project / "app.py").write_text("import os\n")
    # No server listens on port 9: reaching it would be a different error, so this proves nothing was sent.
    result = CliRunner().invoke(
        main, ["review", str(project), "-o", str(blocker / "sub"), "--url", "http://127.0.0.1:9"]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"error: cannot write the report to {blocker / 'sub'}: Not a directory"
    ]


def test_a_bad_sandbox_limit_stops_review_agents_before_any_agent_is_made():
    # No server listens on port 9: creating an agent would be a different error.
    result = CliRunner().invoke(
        main, ["review", "agents", "--url", "http://127.0.0.1:9"], env={"MCS_REVIEW_CPU": "lots"}
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == ["error: MCS_REVIEW_CPU='lots' is not a valid non-negative float"]
