"""Model folders: build tokenizers and small BERTs, check a folder, and turn any model source
(hub id, Hugging Face folder, Google TF checkpoint) into one Hugging Face folder.

Every later notebook reads exactly one Hugging Face folder; this module is where the "model
learns nothing" mismatches (wrong vocab for the weights, a checkpoint that never loaded) are
caught before any training time is spent.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from nbutils.errors import NbutilsError
from nbutils.io import atomic_dir, atomic_file

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_DTYPE_BYTES = {"F64": 8, "I64": 8, "F32": 4, "I32": 4, "F16": 2, "BF16": 2, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def read_vocab(vocab_file: str | Path) -> list[str]:
    """vocab.txt tokens, line N = id N. Lines are split on "\\n" only and never stripped:
    Google's Chinese vocab holds whitespace-like tokens (U+2028 at lines 344 and 13503)."""
    path = Path(vocab_file)
    if not path.is_file():
        raise NbutilsError(f"{path}: vocabulary file not found", fix="point at the vocab.txt that came with the model")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise NbutilsError(f"{path}: not UTF-8 (byte {err.start})", fix="vocab.txt must be UTF-8, one token per line") from None
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t[:-1] if t.endswith("\r") else t for t in tokens]
    seen: dict[str, int] = {}
    for line, token in enumerate(tokens, start=1):
        if token == "":
            raise NbutilsError(f"{path}:{line}: empty token", fix="remove the blank line (ids would shift)")
        if token in seen:
            raise NbutilsError(f"{path}:{line}: token {token!r} repeats line {seen[token]}", fix="a vocabulary lists each token once")
        seen[token] = line
    missing = [t for t in SPECIAL_TOKENS if t not in seen]
    if missing:
        raise NbutilsError(f"{path}: special tokens {missing} are missing", fix="use a BERT WordPiece vocab.txt")
    return tokens


def build_tokenizer(vocab_file: str | Path, do_lower_case: bool = True, model_max_length: int = 512):
    """A transformers (fast, Rust-backed) BERT tokenizer from vocab.txt, splitting Chinese characters."""
    from transformers import BertTokenizer

    vocab = {token: i for i, token in enumerate(read_vocab(vocab_file))}
    return BertTokenizer(
        vocab=vocab,
        do_lower_case=do_lower_case,
        tokenize_chinese_chars=True,
        model_max_length=model_max_length,
    )


def _wordpiece_tokenizer(tokens: list[str], do_lower_case: bool):
    """The Rust tokenizer transformers' BertTokenizer builds (same normaliser, splitting, specials)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    vocab = {token: i for i, token in enumerate(tokens)}
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=do_lower_case)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0",
        pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def write_tokenizer_files(vocab_file: str | Path, out_dir: str | Path, *, do_lower_case: bool = True,
                          model_max_length: int = 512) -> None:
    """Write tokenizer.json, tokenizer_config.json and vocab.txt as ``build_tokenizer(...).save_pretrained``
    would, without importing transformers (its import is most of a conversion's run time).
    tests/test_models.py checks both load to identical encodings."""
    out_dir = Path(out_dir)
    tokens = read_vocab(vocab_file)
    _wordpiece_tokenizer(tokens, do_lower_case).save(str(out_dir / "tokenizer.json"))
    config = {
        "backend": "tokenizers", "tokenizer_class": "BertTokenizer", "do_lower_case": do_lower_case,
        "tokenize_chinese_chars": True, "strip_accents": None, "model_max_length": model_max_length,
        "cls_token": "[CLS]", "mask_token": "[MASK]", "pad_token": "[PAD]", "sep_token": "[SEP]", "unk_token": "[UNK]",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(vocab_file, out_dir / "vocab.txt")


def build_char_vocab(texts: Iterable[str], out_file: str | Path, min_count: int = 1) -> Path:
    """Write a fallback vocab.txt of the characters in ``texts`` (when no real vocab is at hand).

    Words are split exactly as the BERT tokenizer will split them (same normaliser and
    pre-tokeniser); a character that starts a word becomes ``c``, one inside a word ``##c``, so
    every training word tokenizes into characters instead of [UNK]. Most frequent first.
    """
    from tokenizers import normalizers, pre_tokenizers

    normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts: Counter[str] = Counter()
    for text in texts:
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            counts[word[0]] += 1
            counts.update("##" + ch for ch in word[1:])
    tokens = sorted((t for t, c in counts.items() if c >= min_count and t not in SPECIAL_TOKENS), key=lambda t: (-counts[t], t))
    if not tokens:
        raise NbutilsError(f"no characters occur at least {min_count} time(s) in the texts", fix="pass training texts / lower min_count")
    out_file = Path(out_file)
    with atomic_file(out_file) as tmp:
        tmp.write_text("".join(t + "\n" for t in (*SPECIAL_TOKENS, *tokens)), encoding="utf-8", newline="\n")
    return out_file


def make_random_bert(
    vocab_file: str | Path,
    out_dir: str | Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int = 512,
    seed: int = 0,
    overwrite: bool = False,
) -> Path:
    """Save a randomly initialised BertForPreTraining of ``vocab_file``'s vocabulary (+ tokenizer)."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    if hidden_size % num_heads:
        raise NbutilsError(f"hidden_size {hidden_size} is not a multiple of num_heads {num_heads}", fix="pick sizes that divide")
    tokenizer = build_tokenizer(vocab_file, model_max_length=max_position_embeddings)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
    )
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        torch.manual_seed(seed)
        model = BertForPreTraining(config)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        shutil.copyfile(vocab_file, tmp / "vocab.txt")
    return Path(out_dir)


def tokenizer_vocab_size(model_dir: str | Path) -> int:
    """Number of token ids the folder's tokenizer can produce (tokenizer.json, else vocab.txt)."""
    model_dir = Path(model_dir)
    tok_json = model_dir / "tokenizer.json"
    if tok_json.is_file():
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        ids = set(data.get("model", {}).get("vocab", {}).values()) | {t["id"] for t in data.get("added_tokens", [])}
        return max(ids) + 1 if ids else 0
    return len(read_vocab(model_dir / "vocab.txt"))


def _embedding_rows(model_dir: Path) -> int | None:
    """Rows of the word-embedding matrix in model.safetensors (header only, no weights loaded)."""
    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    with safe_open(weights, framework="numpy") as fh:
        for key in fh.keys():
            if key.endswith("embeddings.word_embeddings.weight"):
                return fh.get_slice(key).get_shape()[0]
    return None


def check_model_dir(model_dir: str | Path) -> None:
    """Raise NbutilsError unless ``model_dir`` is a complete, consistent Hugging Face BERT folder."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise NbutilsError(f"{model_dir}: model folder not found", fix="run notebook 01 (convert) first, or pass a model folder")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        hint = " (this looks like a Google TF checkpoint: convert it with `nbutils convert`)" if (model_dir / "bert_config.json").exists() else ""
        raise NbutilsError(f"{model_dir}: no config.json{hint}", fix="point at a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise NbutilsError(f"{config_path}:{err.lineno}: invalid JSON ({err.msg})", fix="re-create the model folder") from None
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise NbutilsError(f"{model_dir}: no weights ({' / '.join(WEIGHT_FILES)})", fix="the folder is incomplete; convert or download it again")
    if not ((model_dir / "tokenizer.json").is_file() or (model_dir / "vocab.txt").is_file()):
        raise NbutilsError(f"{model_dir}: no tokenizer (tokenizer.json or vocab.txt)", fix="save the tokenizer into the model folder")
    vocab_size = config.get("vocab_size")
    tokens = tokenizer_vocab_size(model_dir)
    if tokens != vocab_size:
        raise NbutilsError(
            f"{model_dir}: the tokenizer has {tokens} tokens but config.json says vocab_size={vocab_size}: "
            "the vocabulary does not belong to these weights (the classic 'model learns nothing' mismatch)",
            fix="use the vocab.txt shipped with the checkpoint",
        )
    rows = _embedding_rows(model_dir)
    if rows is not None and rows != vocab_size:
        raise NbutilsError(
            f"{model_dir / 'model.safetensors'}: word embeddings have {rows} rows but config.json says vocab_size={vocab_size}",
            fix="config.json does not belong to these weights; convert or download the model again",
        )


def _looks_like_tf_checkpoint(path: Path) -> bool:
    if path.suffix == ".zip":
        return True
    if path.is_dir():
        return any(path.glob("*.index")) and not (path / "config.json").exists()
    return path.name.endswith((".index", ".meta")) or ".data-" in path.name or path.with_name(path.name + ".index").exists()


def resolve_model_source(source: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Make ``out_dir`` a Hugging Face BERT folder from any source and return it.

    ``source``: a Google TF checkpoint (folder, prefix, .index, .data-*, .zip) -> converted;
    a Hugging Face folder -> checked and copied; otherwise a Hugging Face hub id -> downloaded
    (needs internet).
    """
    from nbutils.convert import convert

    out_dir = Path(out_dir)
    path = Path(source).expanduser()
    if _looks_like_tf_checkpoint(path):
        convert(path, out_dir, overwrite=overwrite)
    elif path.is_dir():
        check_model_dir(path)
        with atomic_dir(out_dir, overwrite=overwrite) as tmp:
            shutil.copytree(path, tmp, dirs_exist_ok=True)
            _write_copy_report(tmp, str(source), "Hugging Face folder")
    elif path.exists() or str(source).startswith((".", "/", "~")) or str(source).count("/") > 1:
        raise NbutilsError(
            f"{source}: not a model folder, TF checkpoint or hub id",
            fix="pass a Hugging Face folder, Google's checkpoint folder/zip/.index, or a hub id like bert-base-chinese",
        )
    else:
        _download(str(source), out_dir, overwrite=overwrite)
    check_model_dir(out_dir)
    return out_dir


def _download(repo_id: str, out_dir: Path, *, overwrite: bool) -> None:
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
                "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        try:
            snapshot_download(repo_id, local_dir=tmp, allow_patterns=patterns)
        except Exception as err:  # offline, unknown repo, auth: all user-fixable
            raise NbutilsError(
                f"could not download {repo_id!r} from the Hugging Face hub ({type(err).__name__}: {str(err).splitlines()[0][:200]})",
                fix="without internet, download Google's checkpoint zip (e.g. chinese_L-12_H-768_A-12.zip) elsewhere "
                "and pass its path, or pass a local Hugging Face model folder",
            ) from None
        shutil.rmtree(tmp / ".cache", ignore_errors=True)
        _write_copy_report(tmp, repo_id, "Hugging Face hub")


def _write_copy_report(model_dir: Path, source: str, kind: str) -> None:
    """conversion_report.json for a model that needed no conversion (same keys as convert's)."""
    import crc32c
    from safetensors import safe_open

    from nbutils.io import write_json

    report = {"source": source, "source_kind": kind, "tensor_count": 0, "bytes": 0,
              "mapped": [], "skipped": [], "initialized_fresh": [], "output": {}}
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    report["model_class"] = (config.get("architectures") or ["BertModel"])[0]
    for weights in sorted(model_dir.glob("*.safetensors")):
        with safe_open(weights, framework="numpy") as fh:
            for key in fh.keys():
                shape = fh.get_slice(key).get_shape()
                report["tensor_count"] += 1
                report["bytes"] += int(np.prod(shape, dtype=np.int64)) * _DTYPE_BYTES.get(fh.get_slice(key).get_dtype(), 4)
        crc = 0
        with open(weights, "rb") as fh:
            while chunk := fh.read(1 << 24):
                crc = crc32c.crc32c(chunk, crc)
        report["output"][weights.name] = {"bytes": weights.stat().st_size, "crc32c": f"{crc:08x}"}
    write_json(model_dir / "conversion_report.json", report)


def masked_lm_top_k(model_dir: str | Path, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``k`` (token, probability) for each [MASK] in ``text``, from the folder's MLM head."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    # a pre-training folder loads as itself (no "unused NSP head" noise); others as MaskedLM
    pretraining = "BertForPreTraining" in config.get("architectures", [])
    model = (BertForPreTraining if pretraining else AutoModelForMaskedLM).from_pretrained(model_dir).eval()
    batch = tokenizer(text, return_tensors="pt")
    positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(positions) == 0:
        raise NbutilsError(f"no {tokenizer.mask_token} in {text!r}", fix=f"put {tokenizer.mask_token} where a token should be predicted")
    with torch.no_grad():
        output = model(**batch)
        logits = output.prediction_logits if pretraining else output.logits
        probs = logits[0, positions].softmax(-1)
    top = probs.topk(k, dim=-1)
    return [
        [(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, ids, strict=True)]
        for ps, ids in zip(top.values, top.indices, strict=True)
    ]
