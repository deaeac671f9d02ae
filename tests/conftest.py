"""Shared test fixtures: where the THUCNews titles and the BERT vocabulary come from.

Real data is never committed. Tests find it, in this order:

1. the read-only mirror ``../shared`` (or ``$NBUTILS_SHARED_DIR``): our machines and CI;
2. ``data/raw/`` after ``make data`` (downloads where there is internet);
3. the small synthetic fixture committed in ``tests/fixtures/`` (``thucnews-mini``: 1,400
   generated headlines in the titles layout; ``vocab-mini``: a character vocab.txt for them),
   so the suite runs on a fresh clone, offline.

``titles_dir`` / ``vocab_dir`` take the first that exists. Tests of properties only the real
files have (their sizes and checksums, the 21,128-token vocabulary, accuracy on real headlines)
ask for ``real_titles_dir`` / ``real_vocab_dir`` and are skipped, saying why, when only the
fixture is there. ``NBUTILS_TEST_DATA=fixture`` forces the fixture (to check a fresh clone
here); ``NBUTILS_TEST_DATA=real`` makes a missing real source an error instead (CI).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nbutils.core.paths import REPO_ROOT
from nbutils.runtime import configure_process
from nbutils.runtime.invariant import mkl_strict_reproducible

# The test session is an entry point like the CLI: the thread policy and MKL's reproducible mode
# go into the environment before any test imports torch (tests of what happens without them
# start fresh processes with a cleaned environment). MKL reads MKL_CBWR when it first works;
# switching the mode on now keeps a test that changes the environment from deciding it for the
# whole worker.
configure_process(quiet=True)
mkl_strict_reproducible()

FIXTURES = Path(__file__).resolve().parent / "fixtures"
# (folder in the mirror, folder in data/raw, committed fixture)
SOURCES = {
    "titles": ("data/thucnews-titles", "thucnews-titles", FIXTURES / "thucnews-mini"),
    "vocab": ("models/bert-base-chinese-vocab", "bert-base-chinese-vocab", FIXTURES / "vocab-mini"),
}
REQUIRED_FILE = {"titles": "train.txt", "vocab": "vocab.txt"}


def _mode() -> str:
    mode = os.environ.get("NBUTILS_TEST_DATA", "auto")
    if mode not in ("auto", "fixture", "real"):
        raise pytest.UsageError(f"NBUTILS_TEST_DATA={mode!r}: use auto, fixture or real")
    return mode


def _shared_dir() -> Path:
    return Path(os.environ.get("NBUTILS_SHARED_DIR", REPO_ROOT.parent / "shared")).resolve()


def real_source(kind: str) -> Path | None:
    """The real data folder for ``kind`` (mirror first, then data/raw), or None."""
    if _mode() == "fixture":
        return None
    mirror_rel, raw_name, _ = SOURCES[kind]
    for folder in (_shared_dir() / mirror_rel, REPO_ROOT / "data" / "raw" / raw_name):
        if (folder / REQUIRED_FILE[kind]).is_file():
            return folder
    return None


def _data_dir(kind: str) -> Path:
    found = real_source(kind)
    if found is None and _mode() == "real":
        pytest.fail(f"NBUTILS_TEST_DATA=real but no real {kind} data: no {_shared_dir() / SOURCES[kind][0]} "
                    f"and no data/raw/{SOURCES[kind][1]} (run `make data`)")
    return found or SOURCES[kind][2]


def _real_dir(kind: str) -> Path:
    found = _data_dir(kind)
    if found == SOURCES[kind][2]:
        pytest.skip(f"needs the real {kind} data (only the synthetic fixture is here): run `make data` "
                    "(downloads) or set NBUTILS_SHARED_DIR to the mirror")
    return found


def pytest_report_header(config) -> list[str]:
    return [f"test data: {kind} from {real_source(kind) or SOURCES[kind][2]} (NBUTILS_TEST_DATA={_mode()})"
            for kind in SOURCES]


@pytest.fixture(scope="session")
def titles_dir() -> Path:
    """THUCNews titles: train/dev/test.txt (headline<TAB>label_id) + class.txt, real or fixture."""
    return _data_dir("titles")


@pytest.fixture(scope="session")
def vocab_dir() -> Path:
    """A BERT vocab.txt: the real bert-base-chinese one (21,128 tokens) or the fixture's."""
    return _data_dir("vocab")


@pytest.fixture(scope="session")
def real_titles_dir() -> Path:
    """The real THUCNews titles (33,590 / 10,000 / 10,000); skipped without them."""
    return _real_dir("titles")


@pytest.fixture(scope="session")
def real_vocab_dir() -> Path:
    """The real bert-base-chinese vocab.txt and Google's bert_config.json; skipped without them."""
    return _real_dir("vocab")


@pytest.fixture(scope="session", autouse=True)
def private_nbutils_cache(tmp_path_factory):
    """Backend decisions and cached ONNX exports (nbutils.inference.backends) go to a folder of
    this test run, never the user's ~/.cache/nbutils; notebooks run by tests inherit it."""
    before = os.environ.get("NBUTILS_CACHE_DIR")
    os.environ["NBUTILS_CACHE_DIR"] = str(tmp_path_factory.mktemp("nbutils-cache"))
    yield Path(os.environ["NBUTILS_CACHE_DIR"])
    if before is None:
        os.environ.pop("NBUTILS_CACHE_DIR", None)
    else:
        os.environ["NBUTILS_CACHE_DIR"] = before


# The longest test files (most run notebooks end to end), longest first, so that under `make test`
# (`pytest -n 2 --dist loadfile --no-loadscope-reorder`) they start early and the short files fill
# the other worker around them, instead of a long one starting last and setting the wall time.
LONGEST_FIRST = ("test_e2e_smoke.py", "test_browser.py", "test_e2e_multilabel.py", "test_e2e_own_data.py",
                 "test_threads.py", "test_reliability_runner.py", "test_ddp.py", "test_report.py")


def pytest_collection_modifyitems(config, items) -> None:
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside each file is kept
