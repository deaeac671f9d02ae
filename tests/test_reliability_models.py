"""Reliability, model kind (docs/reliability.md): resuming
on changed data, predicting with a model that cannot answer, converting what cannot load, and
``on_bad_rows`` reachable from the training CLI. Each test failed on the code before the fix.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import transformers

from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.core.io import write_json

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
LABELS = ["体育", "财经", "科技"]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, vocab_dir) -> Path:
    """A tiny pre-trained-style BERT (masked-LM head, no classifier): what 01/03 write."""
    return make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("m") / "base",
                            hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def classifier_dir(base_dir) -> Path:
    out = base_dir.parent / "clf"
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        base_dir, num_labels=3, id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)})
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    write_json(out / "finetune_config.json", {"max_length": 64, "truncation": "head", "head_tokens": 0})
    return out


# --- case 2: resume fingerprint by content ---------------------------------------------------


def _titles(folder: Path, train_labels: list[int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "class.txt").write_text("\n".join(LABELS), encoding="utf-8")
    (folder / "train.txt").write_text("".join(f"标题{i}\t{y}\n" for i, y in enumerate(train_labels)), encoding="utf-8")
    (folder / "dev.txt").write_text("开发\t0\n", encoding="utf-8")
    (folder / "test.txt").write_text("测试\t1\n", encoding="utf-8")
    return folder


def test_resume_is_refused_when_labels_shift_and_allowed_for_a_copy(tmp_path):
    from nbutils.data.dataset import load_dataset
    from nbutils.training.finetune import FinetuneConfig
    from nbutils.training.resume import FINGERPRINT, check_resume, run_fingerprint

    data = _titles(tmp_path / "data", [0, 1, 2, 0, 1, 2])
    config = FinetuneConfig(max_length=16)
    sizes = {"train": 6, "dev": 1, "test": 1}
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    write_json(ckpt / FINGERPRINT, run_fingerprint("model", load_dataset(data), config, sizes))

    copy = tmp_path / "elsewhere" / "same-data"
    shutil.copytree(data, copy)
    check_resume(ckpt, run_fingerprint("model", load_dataset(copy), config, sizes))  # same content: resumes

    _titles(data, [1, 2, 0, 1, 2, 0])  # every train label shifted by one, same path, same row counts
    with pytest.raises(NbutilsError, match="data_content"):
        check_resume(ckpt, run_fingerprint("model", load_dataset(data), config, sizes))


def test_resume_skips_a_checkpoint_cut_off_mid_save(tmp_path):
    """Kernel > Interrupt while Trainer saves leaves checkpoint-N without its trainer_state.json
    (written last): resuming from it would restart the step count at 0. The one before is used."""
    from nbutils.training.resume import last_checkpoint

    ckpt = tmp_path / "checkpoints"
    assert last_checkpoint(ckpt) is None
    for step in (10, 20):
        (ckpt / f"checkpoint-{step}").mkdir(parents=True)
        write_json(ckpt / f"checkpoint-{step}" / "trainer_state.json", {"global_step": step})
    (ckpt / "checkpoint-30").mkdir()  # interrupted before its trainer_state.json
    (ckpt / "checkpoint-30" / "model.safetensors").write_bytes(b"partial")
    (ckpt / "checkpoint-100").mkdir()
    (ckpt / "checkpoint-100" / "trainer_state.json").write_text('{"global_st', encoding="utf-8")  # cut off
    (ckpt / "checkpoint-9").mkdir()  # 9 < 20 numerically, though "checkpoint-9" sorts after as text
    write_json(ckpt / "checkpoint-9" / "trainer_state.json", {"global_step": 9})
    assert last_checkpoint(ckpt) == str(ckpt / "checkpoint-20")


# --- case 4: predict -------------------------------------------------------------------------


def test_predict_refuses_a_model_that_was_never_fine_tuned(base_dir):
    from nbutils.inference.predict import Predictor

    with pytest.raises(NbutilsError, match="never fine-tuned") as err:
        Predictor(base_dir)
    assert "nbutils train" in err.value.fix


def test_predict_refuses_to_guess_max_length_without_finetune_config(classifier_dir, tmp_path):
    from nbutils.inference.predict import Predictor

    bare = tmp_path / "bare"
    shutil.copytree(classifier_dir, bare)
    (bare / "finetune_config.json").unlink()
    predictor = Predictor(bare)
    with pytest.raises(NbutilsError, match="finetune_config.json is missing"):
        predictor(["体育新闻"])
    assert len(predictor(["体育新闻"], max_length=32)) == 1  # told explicitly: fine


def test_predict_flags_empty_texts_and_rejects_max_length_zero(classifier_dir, capsys):
    from nbutils.inference.predict import main, predict

    frame = predict(["", "   ", "体育新闻"], classifier_dir)
    assert frame["empty"].tolist() == [True, True, False]
    with pytest.raises(NbutilsError, match="positive"):
        predict(["体育新闻"], classifier_dir, max_length=0)
    with pytest.raises(NbutilsError, match="--max-length 0"):
        main(["--model", str(classifier_dir), "--max-length", "0", "体育新闻"])
    assert main(["--model", str(classifier_dir), "", "体育新闻"]) == 0
    out = capsys.readouterr().out
    assert "(empty text" in out and "1 empty" in out


def test_predict_names_a_truncated_weights_file(classifier_dir, tmp_path):
    from nbutils.inference.predict import Predictor

    broken = tmp_path / "broken"
    shutil.copytree(classifier_dir, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(NbutilsError, match="truncated or corrupt") as err:
        Predictor(broken)
    assert "model.safetensors" in err.value.message


def test_predict_file_dev_null_is_empty_not_missing(classifier_dir):
    from nbutils.inference.predict import main

    with pytest.raises(NbutilsError, match="/dev/null is empty"):
        main(["--model", str(classifier_dir), "--file", "/dev/null"])


# --- case 5: convert -------------------------------------------------------------------------


def test_convert_refuses_heads_that_do_not_divide_hidden(tmp_path):
    from nbutils.checkpoints.convert import convert

    cfg = json.loads((FIXTURES / "pretrain" / "bert_config.json").read_text())
    cfg["num_attention_heads"] = 3 if cfg["hidden_size"] % 3 else 5
    bad = tmp_path / "bert_config.json"
    bad.write_text(json.dumps(cfg))
    with pytest.raises(NbutilsError, match="not a multiple of num_attention_heads"):
        convert(FIXTURES / "pretrain", tmp_path / "out", config=bad)
    assert not (tmp_path / "out").exists()


def _zip(path: Path, members: dict[str, Path | bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, src in members.items():
            zf.writestr(name, src if isinstance(src, bytes) else src.read_bytes())
    return path


def _checkpoint_members(folder: str) -> dict[str, Path]:
    return {f"{folder}/{p.name}": p for p in (FIXTURES / "pretrain").iterdir() if p.is_file()
            and not p.name.startswith("expected")}


def test_convert_zip_with_two_checkpoints_is_refused_by_name(tmp_path):
    from nbutils.checkpoints.convert import convert

    src = _zip(tmp_path / "two.zip", {**_checkpoint_members("run_a"), **_checkpoint_members("run_b")})
    with pytest.raises(NbutilsError, match="holds 2 checkpoints") as err:
        convert(src, tmp_path / "out")
    assert f"{src}!/run_a/" in err.value.message and f"{src}!/run_b/" in err.value.message
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # temp unzip removed


def test_convert_zip_from_macos_ignores_the_junk(tmp_path):
    from nbutils.checkpoints.convert import convert

    members = _checkpoint_members("chinese_L-2")
    junk = {f"__MACOSX/chinese_L-2/._{Path(n).name}": b"\x00\x05\x16\x07 resource fork" for n in members}
    src = _zip(tmp_path / "mac.zip", {**junk, **members, "chinese_L-2/.DS_Store": b"\x00"})
    report = convert(src, tmp_path / "out")
    assert report["checkpoint_prefix"].startswith(f"{src}!/chinese_L-2/")
    assert "__MACOSX" not in json.dumps(report)
    # an error inside the zip names the member, not a temporary folder that no longer exists
    del members["chinese_L-2/vocab.txt"]
    with pytest.raises(NbutilsError) as err:
        convert(_zip(tmp_path / "novocab.zip", {**junk, **members}), tmp_path / "out2")
    assert f"{tmp_path / 'novocab.zip'}!/chinese_L-2/vocab.txt" in err.value.message
    assert ".unzip-" not in str(err.value)


# --- case 9: on_bad_rows from `nbutils train` ---------------------------------------------------


def test_train_cli_reaches_on_bad_rows(tmp_path, capsys):
    from nbutils.training.launch import _load_dataset, build_parser

    data = _titles(tmp_path / "data", [0, 1, 2])
    with (data / "train.txt").open("a", encoding="utf-8") as fh:
        fh.write("没有标签的一行\n")
    args = build_parser().parse_args(["--model", "m", "--data", str(data), "--out", "o", "--on-bad-rows", "skip"])
    dataset = _load_dataset(args.data, args.data_format, args.on_bad_rows)
    assert len(dataset.skipped) == 1 and dataset.sizes()["train"] == 3
    assert "left out 1 bad row" in capsys.readouterr().out
