"""Tiny parameterised notebooks for the runner's tests (tests/test_runner.py,
tests/test_reliability_runner.py): a title, a ``parameters`` cell, one code cell."""

from __future__ import annotations

from pathlib import Path

import nbformat


def write_notebook(path: Path, body: str, parameters: str) -> Path:
    """Write a notebook the runner can execute: markdown title, ``parameters`` (tagged), ``body``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path
