"""Shared test fixtures. Real data lives in ../shared (a read-only mirror), never in git."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbutils.paths import REPO_ROOT


def _shared_dir() -> Path:
    return Path(os.environ.get("NBUTILS_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = _shared_dir()
    if not path.is_dir():
        pytest.fail(f"shared mirror not found at {path}; set NBUTILS_SHARED_DIR")
    return path


@pytest.fixture(scope="session")
def titles_dir(shared_dir: Path) -> Path:
    """The real THUCNews titles mirror: train/dev/test.txt (headline<TAB>label_id) + class.txt."""
    return shared_dir / "data" / "thucnews-titles"


@pytest.fixture(scope="session")
def vocab_dir(shared_dir: Path) -> Path:
    """The real bert-base-chinese vocab.txt (21,128 tokens) and Google's bert_config.json."""
    return shared_dir / "models" / "bert-base-chinese-vocab"
