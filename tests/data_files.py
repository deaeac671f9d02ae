"""Writers of small dataset files for the data tests (tests/test_data.py,
tests/test_reliability_data.py)."""

from __future__ import annotations

from pathlib import Path


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    """``text`` as ``encoding`` bytes at ``path`` (folders made as needed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def titles(folder: Path, train: str, dev: str = "验证集标题\t0\n", test: str = "测试集标题\t1\n",
           classes: str = "finance\nrealty\nstocks") -> Path:
    """A THUCNews-titles folder: class.txt (no trailing newline, like the real file) and the splits."""
    write(folder / "class.txt", classes)
    write(folder / "train.txt", train)
    write(folder / "dev.txt", dev)
    write(folder / "test.txt", test)
    return folder
