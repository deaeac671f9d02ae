"""Model-folder helpers: vocab reading, tokenizers, char vocab, random BERTs, folder checks, sources."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from nbutils.checkpoints.convert import resolve_model_source
from nbutils.checkpoints.model_folder import check_model_dir
from nbutils.checkpoints.random_bert import make_random_bert
from nbutils.core.errors import NbutilsError
from nbutils.text.vocab import build_char_vocab, build_tokenizer, read_vocab, write_tokenizer_files

FIXTURES = Path(__file__).parent / "fixtures" / "tf"
TEXTS = ["北京是中国的首都", "iPhone 15 发布会，苹果股价上涨3%", "Café\u2028naïve  ABC！", "[MASK]在哪里？"]


def test_real_vocab_keeps_whitespace_like_tokens(real_vocab_dir):
    tokens = read_vocab(real_vocab_dir / "vocab.txt")
    assert len(tokens) == 21128
    assert tokens[343] == "\u2028" and tokens[13502] == "##\u2028"  # lines 344 and 13503
    assert tokens[0] == "[PAD]" and tokens[100:104] == ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.mark.parametrize(
    ("text", "message"),
    [("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\na\n", r":7: token 'a' repeats line 6"),
     ("[PAD]\n[UNK]\n\n[CLS]\n[SEP]\n[MASK]\n", r":3: empty token"),
     ("[PAD]\n[UNK]\na\n", r"special tokens \['\[CLS\]', '\[SEP\]', '\[MASK\]'\] are missing")],
)
def test_bad_vocab_files_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "vocab.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NbutilsError, match=message) as err:
        read_vocab(path)
    assert str(path) in str(err.value)


def test_build_tokenizer_splits_chinese_characters(vocab_dir):
    tokenizer = build_tokenizer(vocab_dir / "vocab.txt")
    assert len(tokenizer) == len(read_vocab(vocab_dir / "vocab.txt"))
    assert tokenizer.tokenize("北京是中国的首都") == list("北京是中国的首都")
    ids = tokenizer("[MASK]在哪里")["input_ids"]
    assert ids[:2] == [tokenizer.cls_token_id, tokenizer.mask_token_id] and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.convert_ids_to_tokens(ids[:2]) == ["[CLS]", "[MASK]"]


def test_tokenizer_files_written_without_transformers_load_to_the_same_tokenizer(vocab_dir, tmp_path):
    from transformers import AutoTokenizer

    write_tokenizer_files(vocab_dir / "vocab.txt", tmp_path, model_max_length=128)
    mine = AutoTokenizer.from_pretrained(tmp_path)
    reference = build_tokenizer(vocab_dir / "vocab.txt", model_max_length=128)
    reference.save_pretrained(tmp_path / "ref")
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == json.loads((tmp_path / "ref" / "tokenizer.json").read_text())
    assert mine.model_max_length == 128 and len(mine) == len(reference)
    for a, b in zip(TEXTS, TEXTS[::-1], strict=True):
        assert mine(a, b)["input_ids"] == reference(a, b)["input_ids"]
        assert mine(a)["token_type_ids"] == reference(a)["token_type_ids"]


def test_char_vocab_covers_training_text_without_unk(tmp_path):
    texts = ["苹果发布iPhone新品", "苹果股价上涨", "NBA总决赛"]
    path = build_char_vocab(texts, tmp_path / "vocab.txt")
    tokens = read_vocab(path)
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokens[5:7] == ["果", "苹"]  # most frequent first, ties in code-point order
    assert {"i", "##p", "##h", "n", "##b", "##a"} <= set(tokens)  # lower-cased, as the tokenizer sees it
    tokenizer = build_tokenizer(path)
    for text in texts:
        assert tokenizer.unk_token_id not in tokenizer(text)["input_ids"]
    rare = read_vocab(build_char_vocab(texts, tmp_path / "v2.txt", min_count=2))
    assert "苹" in rare and "股" not in rare
    with pytest.raises(NbutilsError):
        build_char_vocab([], tmp_path / "v3.txt")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, vocab_dir) -> Path:
    return make_random_bert(vocab_dir / "vocab.txt", tmp_path_factory.mktemp("m") / "model", hidden_size=16,
                            num_layers=1, num_heads=2, intermediate_size=32, max_position_embeddings=32, seed=1)


def test_make_random_bert_is_a_complete_seeded_folder(tiny_model, vocab_dir, tmp_path):
    check_model_dir(tiny_model)
    config = json.loads((tiny_model / "config.json").read_text())
    assert config["architectures"] == ["BertForPreTraining"] and config["vocab_size"] == len(read_vocab(vocab_dir / "vocab.txt"))
    assert (tiny_model / "vocab.txt").read_bytes() == (vocab_dir / "vocab.txt").read_bytes()
    with pytest.raises(NbutilsError, match="already exists"):
        make_random_bert(vocab_dir / "vocab.txt", tiny_model, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    again = make_random_bert(vocab_dir / "vocab.txt", tmp_path / "again", hidden_size=16, num_layers=1, num_heads=2,
                             intermediate_size=32, max_position_embeddings=32, seed=1)
    a, b = load_file(tiny_model / "model.safetensors"), load_file(again / "model.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    with pytest.raises(NbutilsError, match="multiple"):
        make_random_bert(vocab_dir / "vocab.txt", tmp_path / "bad", hidden_size=10, num_layers=1, num_heads=3, intermediate_size=8)


@pytest.mark.parametrize("damage", ["config", "weights", "tokenizer", "vocab_size"])
def test_check_model_dir_catches_incomplete_or_mismatched_folders(tiny_model, tmp_path, damage):
    folder = tmp_path / "m"
    shutil.copytree(tiny_model, folder)
    if damage == "config":
        (folder / "config.json").unlink()
        message = "no config.json"
    elif damage == "weights":
        (folder / "model.safetensors").unlink()
        message = "no weights"
    elif damage == "tokenizer":
        (folder / "tokenizer.json").unlink()
        (folder / "vocab.txt").unlink()
        message = "no tokenizer"
    else:
        config = json.loads((folder / "config.json").read_text())
        tokens = config["vocab_size"]
        config["vocab_size"] = tokens - 128
        (folder / "config.json").write_text(json.dumps(config))
        message = f"{tokens} tokens but config.json says vocab_size={tokens - 128}.*learns nothing"
    with pytest.raises(NbutilsError, match=message):
        check_model_dir(folder)


def test_resolve_model_source_from_hf_folder_tf_checkpoint_and_bad_sources(tiny_model, tmp_path):
    out = resolve_model_source(tiny_model, tmp_path / "copy")
    assert (out / "model.safetensors").read_bytes() == (tiny_model / "model.safetensors").read_bytes()
    report = json.loads((out / "conversion_report.json").read_text())
    assert report["source_kind"] == "Hugging Face folder" and report["model_class"] == "BertForPreTraining"
    assert report["tensor_count"] == 30 and report["bytes"] == 4 * sum(
        int(np.prod(v.shape)) for v in load_file(tiny_model / "model.safetensors").values())
    out = resolve_model_source(FIXTURES / "pretrain" / "bert_model.ckpt.index", tmp_path / "converted")
    assert json.loads((out / "conversion_report.json").read_text())["tensor_count"] == 46
    with pytest.raises(NbutilsError, match="already exists"):
        resolve_model_source(tiny_model, tmp_path / "copy")
    with pytest.raises(NbutilsError, match="not a model folder"):
        resolve_model_source(tmp_path / "nope", tmp_path / "x")
    # offline here; with internet the id does not exist: an NbutilsError either way
    with pytest.raises(NbutilsError, match="could not download"):
        resolve_model_source("nbutils-tests/no-such-model-3f9a", tmp_path / "hub")
    assert not (tmp_path / "hub").exists()


def test_masked_lm_top_k_returns_k_tokens_per_mask(tiny_model):
    from nbutils.pretraining.fill_mask import masked_lm_top_k

    top = masked_lm_top_k(tiny_model, "北京是中国的[MASK]都。", k=5)
    assert len(top) == 1 and len(top[0]) == 5
    probs = [p for _, p in top[0]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1
    with pytest.raises(NbutilsError, match="no \\[MASK\\]"):
        masked_lm_top_k(tiny_model, "没有掩码", k=5)
