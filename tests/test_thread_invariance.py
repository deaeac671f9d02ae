"""Training gives the same bits whatever the CPU thread count (nbutils.runtime.invariant).

The adaptive thread policy moves torch between 1 and N threads during training; results may
only follow the machine's load if some kernel sums in a thread-dependent order. Each case
trains a small BERT a few steps as Trainer does (autocast where the run uses bf16, backward,
gradient clipping, fused AdamW) once at 1 thread and once switching 2, 1, 2, ... threads as the
governor would, over batches of uneven sizes and padding, then compares every parameter and
the evaluation logits bit for bit. The stock-torch control shows the comparison can fail: it is
the same run without ``make_thread_invariant``, and its parameters differ.
"""

from __future__ import annotations

import json

import pytest
import torch

import nbutils  # noqa: F401 -- the thread policy (MKL's reproducible mode) before any matrix product
from nbutils.runtime.invariant import ATTENTION, make_thread_invariant, mkl_strict_reproducible

# (batch, tokens): the demo's batch of titles, uneven last batches, a long one
SHAPES = [(32, 24), (7, 13), (32, 40), (64, 17), (3, 9)]
VOCAB = 3000


def _model(task: str):
    from transformers import BertConfig, BertForSequenceClassification

    from nbutils.pretraining.mlm import _mlm_class

    torch.manual_seed(0)
    dropout = 0.0 if task == "pretrain" else 0.1  # as the demo: no dropout in pre-training
    config = BertConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=512, max_position_embeddings=64, num_labels=10,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    config._attn_implementation = "sdpa"  # as nbutils.runtime.device chooses
    model = (_mlm_class() if task.startswith("pretrain") else BertForSequenceClassification)(config).train()
    if task == "pretrain_corpus":  # the head's softmax over the labelled tokens only, as notebook 03's default
        model.restrict_output_vocabulary(int(i) for b in _batches(task) for i in b["labels"][b["labels"] != -100])
    return model


def _batches(task: str) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for rows, tokens in SHAPES:
        ids = torch.randint(1, VOCAB, (rows, tokens), generator=generator)
        mask = torch.ones(rows, tokens, dtype=torch.long)
        mask[: rows // 3, tokens - tokens // 4:] = 0  # padded texts
        if task.startswith("pretrain"):
            labels = torch.full((rows, tokens), -100)
            chosen = (torch.rand(rows, tokens, generator=generator) < 0.15) & (mask == 1)
            labels[chosen] = ids[chosen]
        else:
            labels = torch.randint(0, 10, (rows,), generator=generator)
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return batches


def _train(task: str, precision: str, threads: list[int], invariant: bool):
    """Parameters after training on every batch, and the logits of one evaluation batch."""
    before = torch.get_num_threads()
    model = _model(task)
    if invariant:
        make_thread_invariant(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    torch.manual_seed(5)  # dropout masks
    try:
        for step, batch in enumerate(_batches(task)):
            torch.set_num_threads(threads[step % len(threads)])
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # Trainer's max_grad_norm
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        batch = _batches(task)[1]
        with torch.no_grad(), autocast:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    finally:
        torch.set_num_threads(before)
    return {name: p.detach().clone() for name, p in model.named_parameters()}, logits


def _differences(task: str, precision: str, invariant: bool) -> list[str]:
    one, one_logits = _train(task, precision, [1], invariant)
    switching, switching_logits = _train(task, precision, [2, 1], invariant)
    differ = [name for name in one if not torch.equal(one[name], switching[name])]
    return differ + ([] if torch.equal(one_logits, switching_logits) else ["logits"])


CASES = [("pretrain", "fp32"), ("finetune", "bf16"), ("finetune", "fp32"), ("pretrain", "bf16"),
         ("pretrain_corpus", "fp32")]


@pytest.mark.parametrize(("task", "precision"), CASES)
def test_training_is_bit_identical_at_any_thread_count(task, precision):
    differ = _differences(task, precision, invariant=True)
    assert not differ, f"{task} {precision}: {len(differ)} tensors differ between 1 and 2 threads: {differ[:6]}"


def test_stock_torch_differs_between_thread_counts():
    """The control: without make_thread_invariant the same comparison finds differences (LayerNorm's
    weight gradients first); if a torch release fixes its kernels, this says so."""
    differ = _differences("finetune", "bf16", invariant=False)
    assert any("LayerNorm" in name for name in differ), differ


def test_mkl_runs_in_reproducible_mode():
    assert mkl_strict_reproducible() in (True, None)  # None: a torch without MKL


def test_saved_model_stays_a_plain_hugging_face_bert(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = _model("finetune")
    stock_keys = list(model.state_dict())
    make_thread_invariant(model)
    assert model.config._attn_implementation == ATTENTION
    assert list(model.state_dict()) == stock_keys
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert ATTENTION not in json.dumps(saved)
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="sdpa")
    assert loaded.config._attn_implementation == "sdpa"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))


def test_off_the_cpu_nothing_changes():
    model = _model("finetune")
    make_thread_invariant(model, device="cuda")
    assert model.config._attn_implementation == "sdpa"
    assert all(type(m) is torch.nn.LayerNorm for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
