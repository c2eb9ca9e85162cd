"""git_info's dirty flag: changed code makes a tree dirty, changed outputs under results/ do not
(a figure rewriting its own tracked files must not mark the code that made it as dirty)."""

from __future__ import annotations

import subprocess

from normlab.tracking.provenance import git_info


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_results_changes_do_not_make_the_tree_dirty(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "results").mkdir()
    (tmp_path / "src" / "code.py").write_text("x = 1\n")
    (tmp_path / "results" / "fig.txt").write_text("old\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sub = tmp_path / "src"  # git_info is called from inside the package, not the top
    assert git_info(sub)["git_dirty"] is False
    (tmp_path / "results" / "fig.txt").write_text("new\n")
    assert git_info(sub)["git_dirty"] is False
    (tmp_path / "src" / "code.py").write_text("x = 2\n")
    assert git_info(sub)["git_dirty"] is True
