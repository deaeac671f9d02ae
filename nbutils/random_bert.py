"""A randomly initialised small BERT of a real vocabulary: the demo and smoke profiles' model
(notebook 01 exports it to Google's layout and converts it back) and the tests' model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nbutils.errors import NbutilsError
from nbutils.io import atomic_dir
from nbutils.vocab import build_tokenizer
from nbutils.weights import quiet_weight_files, write_weights_origin


@quiet_weight_files()  # no "Writing model shards" bar for one small file
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
        write_weights_origin(tmp, pretrained=False,
                             how=f"random initialisation (seed {seed}) by nbutils.random_bert.make_random_bert")
    return Path(out_dir)
