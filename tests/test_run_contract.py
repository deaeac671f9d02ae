"""The run-directory contract (nbutils/core/run_contract.py) is the one place that names the files
passed between notebooks: CONTRIBUTING shows it, RunPaths and the report use it, and no other
module or notebook spells a contract file name itself."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import nbformat
import pytest

from nbutils.core import run_contract
from nbutils.core.paths import REPO_ROOT, RunPaths
from nbutils.core.run_contract import FILE, FILES
from nbutils.reporting import report

# names that only the contract may spell as a string literal (model/, history.csv, ... are names
# shared by several stages' writers, so they are constants there)
# (a TensorBoard run is named after its stage folder: those names are everywhere, not file names)
CONTRACT_NAMES = {f.name for f in FILES if "<" not in f.name and f.name != run_contract.MODEL
                  and f.name not in run_contract.STAGES} | {run_contract.LOSS_FIGURE, run_contract.CURVES_FIGURE}


def test_contributing_shows_the_contract_table():
    text = (REPO_ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- run-contract:begin -->\n(.*?)\n<!-- run-contract:end -->", text, re.S)
    assert block, "CONTRIBUTING.md lost its run-contract markers"
    assert block.group(1) == run_contract.markdown_table(), (
        "CONTRIBUTING.md's file table differs from nbutils/core/run_contract.py: paste the output of "
        "`python -m nbutils.core.run_contract` between the markers")


def test_run_paths_and_report_take_their_names_from_the_contract(tmp_path):
    paths = RunPaths(tmp_path)
    assert paths.converted_model == tmp_path / "convert" / "model"
    assert paths.manifest == tmp_path / "manifest.json"
    for key, (rel, writer) in report.SOURCES.items():
        assert rel == FILE[key].relpath and paths.file(key) == tmp_path / rel
        assert writer == "the runner (`nbutils run`)" or (REPO_ROOT / writer).is_file(), writer
    assert report.REQUIRED_COLUMNS["predictions"] == run_contract.PREDICTION_COLUMNS
    with pytest.raises(KeyError, match="not a file of the run-directory contract"):
        paths.file("stats")


def test_every_stage_and_reader_is_a_notebook_the_runner_runs():
    notebooks = {p.stem for p in (REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    staged = {w for s, w in run_contract.STAGES.items() if s not in ("", "figures", "notebooks", "tensorboard")}
    assert staged == notebooks
    for f in FILES:
        assert f.stage in run_contract.STAGES and all(r in run_contract.STAGES for r in f.readers), f.key
        assert f.written_by in ("", *run_contract.STAGES), f.key
    assert len(FILE) == len(FILES)  # keys are unique


def _string_literals(source: str) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(source))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def _notebook_code(path: Path) -> str:
    nb = nbformat.read(path, as_version=4)
    # IPython magics are not Python; none of ours use them, but be safe
    return "\n".join(c.source for c in nb.cells if c.cell_type == "code" and not c.source.startswith("%"))


def test_no_module_or_notebook_spells_a_contract_file_name():
    offenders = []
    sources = {p: p.read_text(encoding="utf-8") for p in (REPO_ROOT / "nbutils").glob("*.py")
               if p.name != "run_contract.py"}
    sources.update({p: _notebook_code(p) for p in (REPO_ROOT / "notebooks").glob("*.ipynb")})
    for path, source in sources.items():
        offenders += [f"{path.relative_to(REPO_ROOT)}: {name!r}"
                      for name in sorted(_string_literals(source) & CONTRACT_NAMES)]
    assert not offenders, "use nbutils.core.run_contract / RunPaths.file instead of: " + "; ".join(offenders)


def test_notebooks_ask_only_for_files_the_contract_names():
    for path in (REPO_ROOT / "notebooks").glob("*.ipynb"):
        for key in re.findall(r"paths\.file\(\"(\w+)\"\)", _notebook_code(path)):
            assert key in FILE, f"{path.name}: paths.file({key!r})"
