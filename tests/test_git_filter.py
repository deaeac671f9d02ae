"""Saving a notebook in JupyterLab does not dirty git: `make setup` installs nbstripout as the git
filter that .gitattributes names, so outputs never reach a diff, the index or a commit. (`git status`
may still list a saved notebook by its changed size until the next `git add`, which finds nothing
to stage.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest

from nbutils.core.paths import REPO_ROOT


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def test_gitattributes_sends_notebooks_through_nbstripout():
    lines = (REPO_ROOT / ".gitattributes").read_text(encoding="utf-8").splitlines()
    assert "*.ipynb filter=nbstripout" in lines


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")  # CI and dev machines have it
def test_saved_outputs_stay_out_of_git_after_make_git_filter(tmp_path):
    repo = tmp_path / "clone"
    (repo / "notebooks").mkdir(parents=True)
    for name in ("Makefile", ".gitattributes"):
        shutil.copy(REPO_ROOT / name, repo / name)
    notebook = repo / "notebooks" / "04_finetune.ipynb"
    shutil.copy(REPO_ROOT / "notebooks" / "04_finetune.ipynb", notebook)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "test@example.com")
    git(repo, "config", "user.name", "test")
    subprocess.run(["make", "-C", str(repo), "git-filter", "PYTHON=python"], check=True,
                   capture_output=True, text=True)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "notebooks without outputs")

    # What JupyterLab writes on save: outputs and execution counts.
    nb = nbformat.read(notebook, as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 7
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="trained 2100 steps\n")]
    nbformat.write(nb, notebook)

    assert git(repo, "diff") == ""  # the saved outputs are no change to git
    git(repo, "add", "-A")
    assert git(repo, "status", "--porcelain") == ""  # nothing to commit
    committed = nbformat.reads(git(repo, "show", ":notebooks/04_finetune.ipynb"), as_version=4)
    assert not any(c.get("outputs") for c in committed.cells if c.cell_type == "code")
    assert "trained 2100 steps" in notebook.read_text(encoding="utf-8")  # the saved file keeps them
