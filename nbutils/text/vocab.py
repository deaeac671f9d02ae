"""WordPiece vocabularies: read and check vocab.txt, build a BERT tokenizer from it, write the
tokenizer files of a model folder, and make a character vocabulary when no real one is at hand.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.core.io import atomic_file

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


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


def tokenizer_vocab_size(model_dir: str | Path) -> int:
    """Number of token ids the folder's tokenizer can produce (tokenizer.json, else vocab.txt)."""
    model_dir = Path(model_dir)
    tok_json = model_dir / "tokenizer.json"
    if tok_json.is_file():
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        ids = set(data.get("model", {}).get("vocab", {}).values()) | {t["id"] for t in data.get("added_tokens", [])}
        return max(ids) + 1 if ids else 0
    return len(read_vocab(model_dir / "vocab.txt"))
