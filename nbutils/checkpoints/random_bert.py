"""A randomly initialised small BERT of a real vocabulary: the demo and smoke profiles' model
(notebook 01 exports it to Google's layout and converts it back) and the tests' model.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from nbutils.checkpoints.weights import quiet_weight_files, write_weights_origin
from nbutils.core.errors import NbutilsError
from nbutils.core.io import atomic_dir, write_json
from nbutils.text.vocab import build_tokenizer


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
                             how=f"random initialisation (seed {seed}) by nbutils.checkpoints.random_bert.make_random_bert")
    return Path(out_dir)


def make_random_classifier(
    vocab_file: str | Path,
    label_names,
    out_dir: str | Path,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    head_std: float | None = None,
    prediction_max_length: int | None = None,
) -> Path:
    """A random BERT of ``vocab_file``'s vocabulary (``out_dir/base``) with a random
    classification head for ``label_names``, saved in ``out_dir/clf``: a model to time and
    compare prediction with (its labels are meaningless). ``head_std`` spreads the head's weights
    (no near-ties between labels); ``prediction_max_length`` also writes the
    ``finetune_config.json`` fine-tuning saves, so prediction cuts texts to that length."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out_dir = Path(out_dir)
    base = make_random_bert(vocab_file, out_dir / "base", hidden_size=hidden_size, num_layers=num_layers,
                            num_heads=num_heads, intermediate_size=intermediate_size)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(label_names), id2label=dict(enumerate(label_names)),
        label2id={n: i for i, n in enumerate(label_names)})
    if head_std is not None:
        with torch.no_grad():
            model.classifier.weight.normal_(0, head_std)
    clf = out_dir / "clf"
    model.save_pretrained(clf)
    AutoTokenizer.from_pretrained(base).save_pretrained(clf)
    if prediction_max_length is not None:
        write_json(clf / "finetune_config.json",
                   {"max_length": prediction_max_length, "truncation": "head", "head_tokens": 0})
    return clf
