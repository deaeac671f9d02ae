"""nbutils.data.fetch: fetching from the real mirror with sha256 checks, rejection of corrupt files,
atomic writes, the offline message, and the ``nbutils data`` command line. No network access:
downloads go to a fake downloader or to a refused local port."""

from __future__ import annotations

import os
import shutil
import urllib.error
from dataclasses import replace
from pathlib import Path

import pytest

from nbutils import cli
from nbutils.core.errors import NbutilsError
from nbutils.core.io import read_json
from nbutils.data import fetch

TITLES = ("train.txt", "dev.txt", "test.txt", "class.txt")


@pytest.fixture(autouse=True)
def _no_env_mirror(monkeypatch):
    monkeypatch.delenv("NBUTILS_DATA_MIRROR", raising=False)


def no_network(url, dst):
    raise AssertionError(f"tests must not download {url}")


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def corrupt_copy(real_titles_dir: Path, tmp_path: Path, name: str) -> Path:
    mirror = tmp_path / "mirror" / "thucnews-titles"
    mirror.mkdir(parents=True)
    for file in TITLES:
        (mirror / file).write_bytes((real_titles_dir / file).read_bytes())
    target = mirror / name
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit
    target.write_bytes(bytes(data))
    return mirror


def test_fetch_titles_from_the_real_mirror_parent(real_titles_dir, tmp_path):
    lines = []
    dest = fetch.fetch("thucnews-titles", tmp_path / "raw", mirrors=[real_titles_dir.parent],
                       downloader=no_network, log=lines.append)
    assert dest == tmp_path / "raw" / "thucnews-titles"
    for name in TITLES:
        assert (dest / name).read_bytes() == (real_titles_dir / name).read_bytes()
    assert listing(dest) == sorted([*TITLES, "fetch.json"])  # no temporary files left
    record = read_json(dest / "fetch.json")["files"]
    assert record["dev.txt"]["verified"] and record["dev.txt"]["source"] == str(real_titles_dir / "dev.txt")
    assert record["train.txt"]["sha256"] == fetch.sha256_file(real_titles_dir / "train.txt")
    assert sum(" from " in line and "sha256 verified" in line for line in lines) == 4

    # a second fetch keeps the verified files and says so
    lines.clear()
    fetch.fetch("thucnews-titles", tmp_path / "raw", mirrors=[real_titles_dir.parent], downloader=no_network,
                log=lines.append)
    assert sum("already present, sha256 verified" in line for line in lines) == 4
    assert read_json(dest / "fetch.json")["files"]["dev.txt"]["source"] == str(real_titles_dir / "dev.txt")


def test_mirror_may_be_the_resource_folder_itself_via_env(real_titles_dir, real_vocab_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("NBUTILS_DATA_MIRROR", os.pathsep.join([str(real_titles_dir), str(real_vocab_dir.parent)]))
    titles = fetch.fetch("thucnews-titles", tmp_path, downloader=no_network, log=lambda _: None)
    assert (titles / "class.txt").read_bytes() == (real_titles_dir / "class.txt").read_bytes()
    vocab = fetch.fetch("bert-base-chinese-vocab", tmp_path, downloader=no_network, log=lambda _: None)
    assert (vocab / "vocab.txt").read_bytes() == (real_vocab_dir / "vocab.txt").read_bytes()
    assert all(f["verified"] for f in read_json(vocab / "fetch.json")["files"].values())


def test_corrupt_mirror_file_is_rejected_and_nothing_is_left(real_titles_dir, tmp_path):
    mirror = corrupt_copy(real_titles_dir, tmp_path, "test.txt")
    with pytest.raises(NbutilsError, match="test.txt: sha256 mismatch") as err:
        fetch.fetch("thucnews-titles", tmp_path / "raw", mirrors=[mirror.parent], downloader=no_network,
                    log=lambda _: None)
    assert "ebecc8c8" in str(err.value) and err.value.fix
    assert listing(tmp_path / "raw") == []  # not even the verified train/dev files, nor temp files


def test_unknown_train_version_is_accepted_as_unverified(real_titles_dir, tmp_path):
    mirror = corrupt_copy(real_titles_dir, tmp_path, "train.txt")
    lines = []
    dest = fetch.fetch("thucnews-titles", tmp_path / "raw", mirrors=[mirror], downloader=no_network,
                       log=lines.append)
    digest = fetch.sha256_file(mirror / "train.txt")
    assert any(f"sha256 {digest} unverified" in line for line in lines)
    assert read_json(dest / "fetch.json")["files"]["train.txt"] == {
        "sha256": digest, "source": str(mirror / "train.txt"), "verified": False,
        "note": f"sha256 {digest} unverified (not a known version of train.txt)"}
    assert "unverified: train.txt" in lines[-1]


def test_present_file_with_a_wrong_hash_is_fetched_again(real_titles_dir, tmp_path):
    dest = tmp_path / "thucnews-titles"
    dest.mkdir()
    (dest / "class.txt").write_text("damaged")
    fetch.fetch("thucnews-titles", tmp_path, mirrors=[real_titles_dir], downloader=no_network, log=lambda _: None)
    assert (dest / "class.txt").read_bytes() == (real_titles_dir / "class.txt").read_bytes()


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_copy_failing_midway_leaves_no_partial_file(real_titles_dir, tmp_path, monkeypatch, error):
    real_copy = fetch.copy_hashing
    calls = []

    def copy_then_fail(src, dst):
        calls.append(1)
        if len(calls) < 3:
            return real_copy(src, dst)
        dst.write(src.read(1000))  # half a file on disk, then the failure
        dst.flush()
        raise error

    monkeypatch.setattr(fetch, "copy_hashing", copy_then_fail)
    with pytest.raises(type(error)):
        fetch.fetch("thucnews-titles", tmp_path / "raw", mirrors=[real_titles_dir], downloader=no_network,
                    log=lambda _: None)
    assert len(calls) == 3
    assert listing(tmp_path / "raw") == []


def test_download_is_verified_and_recorded(real_titles_dir, tmp_path):
    urls = []

    def from_disk(url, dst):
        urls.append(url)
        with open(real_titles_dir / url.rsplit("/", 1)[1], "rb") as src:
            return fetch.copy_hashing(src, dst)

    dest = fetch.fetch("thucnews-titles", tmp_path, mirrors=[], downloader=from_disk, log=lambda _: None)
    assert urls == [f"https://raw.githubusercontent.com/649453932/Bert-Chinese-Text-Classification-Pytorch/"
                    f"master/THUCNews/data/{name}" for name in TITLES]
    assert read_json(dest / "fetch.json")["files"]["dev.txt"]["source"] == urls[1]

    def wrong_bytes(url, dst):
        dst.write(b"<html>rate limited</html>")
        return fetch.hashlib.sha256(b"<html>rate limited</html>").hexdigest()

    with pytest.raises(NbutilsError, match="sha256 mismatch"):
        fetch.fetch("thucnews-titles", tmp_path / "other", mirrors=[], downloader=wrong_bytes,
                    log=lambda _: None)
    assert listing(tmp_path / "other") == []


def test_offline_without_mirror_says_how_to_provide_one(tmp_path):
    def offline(url, dst):
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(NbutilsError) as err:
        fetch.fetch("bert-base-chinese-vocab", tmp_path, mirrors=[], downloader=offline, log=lambda _: None)
    text = str(err.value)
    assert "could not download https://huggingface.co/google-bert/bert-base-chinese/resolve/main/vocab.txt" in text
    assert "nbutils data fetch bert-base-chinese-vocab --from DIR" in text
    assert "export NBUTILS_DATA_MIRROR=DIR" in text
    assert f"download these files by hand into {tmp_path / 'bert-base-chinese-vocab'}/" in text
    assert listing(tmp_path) == []


def test_real_urllib_against_a_refused_local_port(tmp_path, monkeypatch):
    res = fetch.RESOURCES["bert-base-chinese-vocab"]
    local = replace(res, files=(replace(res.files[0], url="http://127.0.0.1:9/vocab.txt"),))
    monkeypatch.setitem(fetch.RESOURCES, res.name, local)
    with pytest.raises(NbutilsError, match="could not download http://127.0.0.1:9/vocab.txt") as err:
        fetch.fetch(res.name, tmp_path, mirrors=[tmp_path / "empty-mirror"], log=lambda _: None)
    assert "--from DIR" in err.value.fix
    assert listing(tmp_path) == []


def test_unknown_resource_lists_the_known_ones(tmp_path):
    with pytest.raises(NbutilsError, match="unknown resource") as err:
        fetch.fetch("imagenet", tmp_path, mirrors=[], downloader=no_network)
    assert "thucnews-titles" in err.value.fix


def test_cli_fetch_and_check(real_titles_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fetch, "download", no_network)
    assert cli.main(["data", "fetch", "thucnews-titles", "--from", str(real_titles_dir.parent),
                     "--dest", str(tmp_path)]) == 0
    assert "all sha256 verified" in capsys.readouterr().out

    assert cli.main(["data", "check", str(tmp_path / "thucnews-titles")]) == 0
    out = capsys.readouterr().out
    assert "format titles, 10 classes, 53,590 rows" in out
    assert "train 33,590  dev 10,000  test 10,000" in out
    assert "bad rows skipped: 0" in out and "leakage" in out

    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "thucnews-titles", bad)
    with open(bad / "dev.txt", "a", encoding="utf-8") as fh:
        fh.write("没有标签的一行\n")
    assert cli.main(["data", "check", str(bad)]) == 2
    assert f"{bad / 'dev.txt'}:10001: no TAB separator" in capsys.readouterr().err
    assert cli.main(["data", "check", str(bad), "--skip-bad-rows"]) == 0
    assert "bad rows skipped: 1" in capsys.readouterr().out


def test_cli_offline_error_is_printed_without_traceback(tmp_path, capsys, monkeypatch):
    def offline(url, dst):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(fetch, "download", offline)
    assert cli.main(["data", "fetch", "thucnews-titles", "--dest", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "NBUTILS_DATA_MIRROR" in err and "how to fix" in err
