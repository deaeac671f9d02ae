"""Checkpoint conversion: Google TF layout (written by real TensorFlow) <-> Hugging Face BERT."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from nbutils.checkpoints.convert import convert, export, verify_conversion
from nbutils.checkpoints.tfcheckpoint import TFCheckpoint, write_checkpoint
from nbutils.checkpoints.weights import weights_origin
from nbutils.cli import main as cli
from nbutils.core.errors import NbutilsError

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
PRETRAIN = FIXTURES / "pretrain"
CHINESE = "北京是中国的首都，我爱天安门。"

# An explicit sample of Google -> Hugging Face names (the rest follow the same pattern), so the
# mapping is checked against names written down here, not derived from the code under test.
KNOWN = {
    "bert/embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", False),
    "bert/embeddings/LayerNorm/gamma": ("bert.embeddings.LayerNorm.weight", False),
    "bert/encoder/layer_0/attention/self/query/kernel": ("bert.encoder.layer.0.attention.self.query.weight", True),
    "bert/encoder/layer_1/attention/output/LayerNorm/beta": ("bert.encoder.layer.1.attention.output.LayerNorm.bias", False),
    "bert/encoder/layer_1/intermediate/dense/kernel": ("bert.encoder.layer.1.intermediate.dense.weight", True),
    "bert/encoder/layer_1/output/dense/kernel": ("bert.encoder.layer.1.output.dense.weight", True),
    "bert/pooler/dense/kernel": ("bert.pooler.dense.weight", True),
    "cls/predictions/transform/dense/kernel": ("cls.predictions.transform.dense.weight", True),
    "cls/predictions/output_bias": ("cls.predictions.bias", False),
    "cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
    "cls/seq_relationship/output_bias": ("cls.seq_relationship.bias", False),
}


def tf_expected(folder: str) -> dict[str, np.ndarray]:
    meta = json.loads((FIXTURES / folder / "expected.json").read_text())
    arrays = np.load(FIXTURES / folder / "expected.npz")
    return {name: arrays[m["key"]] for name, m in meta.items()}


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("conv") / "model"
    convert(PRETRAIN, out)
    return out


def test_converted_tensors_equal_tensorflows_byte_for_byte(converted):
    tf = tf_expected("pretrain")
    hf = load_file(converted / "model.safetensors")
    report = json.loads((converted / "conversion_report.json").read_text())
    assert len(hf) == len(tf) == report["tensor_count"] == 46
    by_tf = {m["tf_name"]: m for m in report["mapped"]}
    assert set(by_tf) == set(tf)
    for tf_name, (hf_name, transposed) in KNOWN.items():
        assert by_tf[tf_name]["hf_name"] == hf_name and by_tf[tf_name]["transposed"] == transposed
    for tf_name, value in tf.items():
        m = by_tf[tf_name]
        want = np.ascontiguousarray(value.T) if m["transposed"] else value
        assert hf[m["hf_name"]].tobytes() == want.tobytes(), tf_name
    # every 2-D kernel is transposed, nothing else is
    assert {m["tf_name"] for m in report["mapped"] if m["transposed"]} == {n for n in tf if n.endswith("/kernel")}


def test_converted_folder_loads_offline_with_nothing_missing(converted):
    result = verify_conversion(converted)
    assert result["ok"], result
    assert result["model_class"] == "BertForPreTraining"
    assert result["identical"] == 46 and result["mlm_decoder_tied_to_embeddings"]
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "bert" and config["vocab_size"] == 44 and config["num_hidden_layers"] == 2
    from transformers import AutoModel, AutoTokenizer

    AutoModel.from_pretrained(converted)
    tokenizer = AutoTokenizer.from_pretrained(converted)
    assert len(tokenizer) == 44
    assert tokenizer.tokenize("北京是中国的首都") == list("北京是中国的首都")
    assert tokenizer.convert_tokens_to_ids("\u2028") == 7  # whitespace-like token kept, not stripped


def test_report_lists_counts_bytes_and_checksums(converted):
    report = json.loads((converted / "conversion_report.json").read_text())
    with TFCheckpoint(PRETRAIN) as ckpt:
        assert report["checkpoint_bytes"] == ckpt.data_bytes == report["bytes"]
        for m in report["mapped"]:
            assert m["crc32c_masked"] == ckpt.infos[m["tf_name"]].crc32c
    assert report["skipped"] == [] and report["initialized_fresh"] == []
    assert report["output"]["model.safetensors"]["bytes"] == (converted / "model.safetensors").stat().st_size


@pytest.mark.parametrize(
    "spelling",
    ["pretrain/bert_model.ckpt", "pretrain/bert_model.ckpt.index", "pretrain/bert_model.ckpt.data-00000-of-00001", "zip"],
)
def test_every_source_spelling_gives_the_same_model(spelling, converted, tmp_path):
    if spelling == "zip":  # laid out like Google's chinese_L-12_H-768_A-12.zip: one top folder
        src = tmp_path / "chinese_tiny.zip"
        with zipfile.ZipFile(src, "w") as zf:
            for f in PRETRAIN.iterdir():
                zf.write(f, f"chinese_tiny/{f.name}")
    else:
        src = FIXTURES / spelling
    report = convert(src, tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (converted / "model.safetensors").read_bytes()
    if spelling == "zip":  # paths in the report point into the zip, and verification reopens it
        assert report["bert_config"] == f"{src}!/chinese_tiny/bert_config.json"
        assert verify_conversion(tmp_path / "out")["ok"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out"] + (["chinese_tiny.zip"] if spelling == "zip" else []))


def test_optimizer_slots_and_global_step_are_skipped_and_listed(converted, tmp_path):
    report = convert(FIXTURES / "pretrain_adam", tmp_path / "out")
    skipped = set(report["skipped_training_state"])
    assert "global_step" in skipped
    assert len(skipped) == 46 * 2 + 1
    assert all(n == "global_step" or n.endswith(("/adam_m", "/adam_v")) for n in skipped)
    # same weights as the slot-free checkpoint (the generator saved the same variables)
    assert (tmp_path / "out" / "model.safetensors").read_bytes() == (converted / "model.safetensors").read_bytes()


def test_run_classifier_checkpoint_becomes_sequence_classification(tmp_path):
    with pytest.raises(NbutilsError, match="bert_config.json not found"):
        convert(FIXTURES / "classifier", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    report = convert(FIXTURES / "classifier", tmp_path / "out", config=PRETRAIN / "bert_config.json", vocab=PRETRAIN / "vocab.txt")
    assert report["model_class"] == "BertForSequenceClassification" and report["num_labels"] == 3
    tf = tf_expected("classifier")
    hf = load_file(tmp_path / "out" / "model.safetensors")
    assert hf["classifier.weight"].tobytes() == tf["output_weights"].tobytes()  # [labels, hidden]: no transpose
    assert hf["classifier.bias"].tobytes() == tf["output_bias"].tobytes()
    assert not any(k.startswith("cls.") for k in hf)
    result = verify_conversion(tmp_path / "out")
    assert result["ok"] and result["model_class"] == "BertForSequenceClassification"


def write_variant(tmp_path: Path, *, drop=(), add=None, config=None, vocab_lines=None) -> Path:
    """A copy of the pretrain fixture with tensors removed/added or config/vocab changed."""
    folder = tmp_path / "variant"
    folder.mkdir()
    with TFCheckpoint(PRETRAIN) as ckpt:
        tensors = {n: ckpt.get_tensor(n) for n in ckpt if not any(n.startswith(d) for d in drop)}
    tensors.update(add or {})
    write_checkpoint(folder / "bert_model.ckpt", tensors)
    cfg = json.loads((PRETRAIN / "bert_config.json").read_text())
    cfg.update(config or {})
    (folder / "bert_config.json").write_text(json.dumps(cfg))
    text = (PRETRAIN / "vocab.txt").read_text(encoding="utf-8")
    if vocab_lines is not None:
        text = "".join(line + "\n" for line in text.split("\n")[:vocab_lines])
    (folder / "vocab.txt").write_text(text, encoding="utf-8")
    return folder


def test_missing_head_is_a_table_not_a_silent_random_init(tmp_path):
    src = write_variant(tmp_path, drop=["cls/seq_relationship"])
    with pytest.raises(NbutilsError) as err:
        convert(src, tmp_path / "out")
    message = str(err.value)
    assert "2 parameter(s) of BertForPreTraining are not in the checkpoint" in message
    assert "cls.seq_relationship.weight" in message and "cls/seq_relationship/output_weights" in message
    assert "--init-fresh" in message
    assert not (tmp_path / "out").exists()
    report = convert(src, tmp_path / "out", init_fresh=["cls.seq_relationship"])
    assert report["initialized_fresh"] == ["cls.seq_relationship.weight", "cls.seq_relationship.bias"]
    hf = load_file(tmp_path / "out" / "model.safetensors")
    assert np.all(hf["cls.seq_relationship.bias"] == 0) and hf["cls.seq_relationship.weight"].std() > 0


def test_unused_tensor_is_a_table_unless_ignored(tmp_path):
    src = write_variant(tmp_path, add={"bert/encoder/layer_0/extra_adapter/kernel": np.ones((8, 4), np.float32)})
    with pytest.raises(NbutilsError, match=r"1 checkpoint tensor\(s\) match no parameter[\s\S]*extra_adapter"):
        convert(src, tmp_path / "out")
    report = convert(src, tmp_path / "out", ignore=["bert/encoder/layer_0/extra_adapter"])
    assert report["ignored"] == ["bert/encoder/layer_0/extra_adapter/kernel"]


def test_config_that_does_not_fit_the_checkpoint(tmp_path):
    src = write_variant(tmp_path, config={"num_hidden_layers": 1, "intermediate_size": 16})
    with pytest.raises(NbutilsError) as err:
        convert(src, tmp_path / "out")
    message = str(err.value)
    assert "shapes differ" in message and "bert/encoder/layer_0/intermediate/dense/kernel" in message and "(8, 16)" in message
    assert "match no parameter" in message and "bert/encoder/layer_1/output/dense/kernel" in message
    assert not (tmp_path / "out").exists()


def test_vocab_that_does_not_fit_the_config(tmp_path):
    src = write_variant(tmp_path, vocab_lines=40)
    with pytest.raises(NbutilsError, match=r"has 40 tokens but .*vocab_size=44.*learns nothing"):
        convert(src, tmp_path / "out")


def test_failed_conversion_leaves_nothing_and_existing_output_is_kept(tmp_path):
    src = tmp_path / "ckpt"
    shutil.copytree(PRETRAIN, src)
    data = src / "bert_model.ckpt.data-00000-of-00001"
    blob = bytearray(data.read_bytes())
    blob[-3] ^= 0xFF  # inside the last tensor
    data.write_bytes(bytes(blob))
    out_parent = tmp_path / "runs"
    out_parent.mkdir()
    with pytest.raises(NbutilsError, match="CRC32C mismatch for tensor"):
        convert(src, out_parent / "model")
    assert list(out_parent.iterdir()) == []  # no model, no temp folder

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("earlier result")
    with pytest.raises(NbutilsError, match="already exists"):
        convert(PRETRAIN, existing)
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    convert(PRETRAIN, existing, overwrite=True)
    assert (existing / "model.safetensors").exists() and not (existing / "keep.txt").exists()


def test_cli_convert_and_errors(tmp_path, capsys):
    assert cli(["convert", str(PRETRAIN / "bert_model.ckpt.index"), str(tmp_path / "out")]) == 0
    assert "converted 46 tensors" in capsys.readouterr().out
    assert cli(["convert", str(tmp_path / "nope"), str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert "no such checkpoint" in err and "Traceback" not in err
    assert cli(["convert", str(PRETRAIN), str(tmp_path / "out")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_export_of_converted_fixture_gives_back_googles_tensors(converted, tmp_path):
    assert cli(["export", str(converted), str(tmp_path / "google")]) == 0
    with TFCheckpoint(tmp_path / "google") as mine, TFCheckpoint(PRETRAIN) as original:
        assert list(mine) == list(original)
        for name in original:
            assert mine.infos[name].dtype == original.infos[name].dtype
            assert mine.storage(name).tobytes() == original.storage(name).tobytes(), name
    cfg = json.loads((tmp_path / "google" / "bert_config.json").read_text())
    original_cfg = json.loads((PRETRAIN / "bert_config.json").read_text())
    assert {k: v for k, v in original_cfg.items() if k != "directionality"} == cfg
    assert (tmp_path / "google" / "vocab.txt").read_bytes() == (PRETRAIN / "vocab.txt").read_bytes()


@pytest.fixture(scope="module")
def random_bert(tmp_path_factory, vocab_dir):
    from nbutils.checkpoints.random_bert import make_random_bert

    out = tmp_path_factory.mktemp("rand") / "hf"
    return make_random_bert(vocab_dir / "vocab.txt", out, hidden_size=32, num_layers=2, num_heads=2,
                            intermediate_size=64, max_position_embeddings=64, seed=3)


def test_round_trip_random_bert_export_convert_identical_tensors_and_logits(random_bert, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForPreTraining

    export(random_bert, tmp_path / "google")
    assert sorted(p.name for p in (tmp_path / "google").iterdir()) == [
        "bert_config.json", "bert_model.ckpt.data-00000-of-00001", "bert_model.ckpt.index", "vocab.txt",
        "weights_origin.json"]  # random weights stay labelled random through Google's layout
    report = convert(tmp_path / "google", tmp_path / "back")
    assert report["weights_origin"]["pretrained"] is False
    assert weights_origin(tmp_path / "back")["pretrained"] is False
    before, after = load_file(random_bert / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(before) == set(after)
    for name in before:
        assert before[name].tobytes() == after[name].tobytes(), name

    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "back")
    assert tokenizer(CHINESE)["input_ids"] == AutoTokenizer.from_pretrained(random_bert)(CHINESE)["input_ids"]
    batch = tokenizer(CHINESE, return_tensors="pt")
    outputs = []
    for folder in (random_bert, tmp_path / "back"):
        model = BertForPreTraining.from_pretrained(folder).eval()
        with torch.no_grad():
            out = model(**batch)
        outputs.append((out.prediction_logits, out.seq_relationship_logits))
    assert torch.equal(outputs[0][0], outputs[1][0]) and torch.equal(outputs[0][1], outputs[1][1])


def test_round_trip_of_a_sequence_classifier(random_bert, tmp_path):
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(random_bert, num_labels=5).eval()
    model.save_pretrained(tmp_path / "cls")
    AutoTokenizer.from_pretrained(random_bert).save_pretrained(tmp_path / "cls")
    export(tmp_path / "cls", tmp_path / "google")
    with TFCheckpoint(tmp_path / "google") as ckpt:
        assert ckpt.infos["output_weights"].shape == (5, 32) and not any(n.startswith("cls/") for n in ckpt)
    report = convert(tmp_path / "google", tmp_path / "back")
    assert report["model_class"] == "BertForSequenceClassification" and report["num_labels"] == 5
    before, after = load_file(tmp_path / "cls" / "model.safetensors"), load_file(tmp_path / "back" / "model.safetensors")
    assert set(before) == set(after) and all(before[k].tobytes() == after[k].tobytes() for k in before)
    # compare the folders as loaded (a freshly initialised in-memory head can differ in the last bit)
    exported = BertForSequenceClassification.from_pretrained(tmp_path / "cls").eval()
    back = BertForSequenceClassification.from_pretrained(tmp_path / "back").eval()
    batch = AutoTokenizer.from_pretrained(tmp_path / "back")(CHINESE, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(exported(**batch).logits, back(**batch).logits)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_checkpoints_keep_their_dtype(tmp_path, dtype):
    folder = tmp_path / "half"
    shutil.copytree(PRETRAIN, folder, ignore=shutil.ignore_patterns("bert_model.ckpt.*", "expected.*"))
    with TFCheckpoint(PRETRAIN) as ckpt:
        values = {n: ckpt.get_tensor(n) for n in ckpt}
    if dtype == "float16":
        half = {n: v.astype(np.float16) for n, v in values.items()}
    else:  # bfloat16 = the top 16 bits of float32 (truncation)
        half = {n: ("bfloat16", (v.view(np.uint32) >> 16).astype(np.uint16)) for n, v in values.items()}
    write_checkpoint(folder / "bert_model.ckpt", half)
    convert(folder, tmp_path / "out")
    header_len = int.from_bytes((tmp_path / "out" / "model.safetensors").read_bytes()[:8], "little")
    header = json.loads((tmp_path / "out" / "model.safetensors").read_bytes()[8 : 8 + header_len])
    assert {v["dtype"] for k, v in header.items() if k != "__metadata__"} == {"F16" if dtype == "float16" else "BF16"}
    result = verify_conversion(tmp_path / "out")
    assert result["ok"], result


@pytest.mark.slow
def test_notebook_01_smoke_demo_runs_end_to_end(tmp_path, vocab_dir, titles_dir):
    import papermill as pm

    from nbutils.core.paths import REPO_ROOT

    pm.execute_notebook(
        str(REPO_ROOT / "notebooks" / "01_convert_checkpoint.ipynb"), str(tmp_path / "out.ipynb"),
        kernel_name="python3", execution_timeout=300, progress_bar=False,
        parameters={"run_dir": str(tmp_path / "run"), "headless": True, "checkpoint_source": "",
                    "demo_vocab_dir": str(vocab_dir), "data_dir": str(titles_dir), "demo_hidden_size": 32,
                    "demo_num_layers": 2, "demo_num_heads": 2, "demo_intermediate_size": 64, "demo_max_position": 64},
    )
    run = tmp_path / "run" / "convert"
    report = json.loads((run / "conversion_report.json").read_text())
    assert report["verification"]["ok"] and report["tensor_count"] == 46
    assert (run / "google_checkpoint" / "bert_model.ckpt.index").is_file()
    assert (run / "model" / "model.safetensors").is_file()
    text = (tmp_path / "out.ipynb").read_text()
    assert "These weights are RANDOM" in text and "bert/encoder/layer_1/output/dense/kernel" in text
