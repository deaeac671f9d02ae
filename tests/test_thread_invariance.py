"""Training gives the same bits whatever the CPU thread count (nbutils.runtime.invariant), and
where this CPU's kernels do not allow it, the run holds one count (nbutils.runtime.thread_check).

The adaptive thread policy moves torch between 1 and N threads during training; results may
only follow the machine's load if some kernel sums in a thread-dependent order. Each case
trains a small BERT a few steps as Trainer does (autocast where the run uses bf16, backward,
gradient clipping, fused AdamW) switching 2, 1, 2, ... threads as the governor would, over
batches of uneven sizes and padding, with the check active as in training, and compares every
parameter and the evaluation logits bit for bit with a run at one pinned count: 1 where every
check agreed, else the count the check held (2 here, so the steps that ran at 1 before it held
must give the bits of 2). Which case a precision falls in depends on the CPU (on an Intel Xeon
with AMX, bf16 weight gradients of some shapes differ; on an AMD EPYC with AVX512-BF16 none
did). The stock-torch control shows the comparison can fail: it is the same run without
``make_thread_invariant``, and its parameters differ; under the check that run holds, and then
equals the pinned run, on any CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

import nbutils  # noqa: F401 -- the thread policy (MKL's reproducible mode) before any matrix product
from nbutils.runtime.invariant import ATTENTION, make_thread_invariant, mkl_strict_reproducible
from nbutils.runtime.thread_check import ThreadCheck, activate

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


def _train(task: str, precision: str, threads: list[int], invariant: bool, check: ThreadCheck | None = None):
    """Parameters after training on every batch, and the logits of one evaluation batch. With a
    ``check``, as the thread governor trains: the check runs, and once it holds, so does the count."""
    before = torch.get_num_threads()
    model = _model(task)
    if invariant:
        make_thread_invariant(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    torch.manual_seed(5)  # dropout masks
    activate(check)
    try:
        for step, batch in enumerate(_batches(task)):
            torch.set_num_threads(check.hold if check is not None and check.held else threads[step % len(threads)])
            with autocast:
                if check is not None:
                    check.batch(model, (), batch)  # as the callback's forward pre-hook: the first batch
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
        activate(None)
        torch.set_num_threads(before)
    return {name: p.detach().clone() for name, p in model.named_parameters()}, logits


def _compare(a, b) -> list[str]:
    (params_a, logits_a), (params_b, logits_b) = a, b
    differ = [name for name in params_a if not torch.equal(params_a[name], params_b[name])]
    return differ + ([] if torch.equal(logits_a, logits_b) else ["logits"])


def _differences(task: str, precision: str, invariant: bool) -> list[str]:
    """Without the check: 1 thread against switching 2, 1, 2, ..."""
    return _compare(_train(task, precision, [1], invariant), _train(task, precision, [2, 1], invariant))


def _governed(task: str, precision: str, invariant: bool) -> tuple[ThreadCheck, list[str]]:
    """Switching 2, 1, 2, ... under the check (holding 2), against the run pinned where it ends up."""
    check = ThreadCheck((1, 2), hold=2)
    switching = _train(task, precision, [2, 1], invariant, check)
    pinned = _train(task, precision, [check.hold if check.held else 1], invariant)
    return check, _compare(pinned, switching)


CASES = [("pretrain", "fp32"), ("finetune", "bf16"), ("finetune", "fp32"), ("pretrain", "bf16"),
         ("pretrain_corpus", "fp32")]


@pytest.mark.parametrize(("task", "precision"), CASES)
def test_training_is_bit_identical_at_any_thread_count(task, precision):
    check, differ = _governed(task, precision, invariant=True)
    print(f"{task} {precision}: {check.case}: {check.reason()}")
    where = f"held at {check.hold}" if check.held else "at 1 thread"
    assert not differ, (f"{task} {precision}: {len(differ)} tensors differ between the governed run and the run "
                        f"{where}: {differ[:6]}")
    assert check.batches == 1 or check.held  # the first batch was checked, unless a product held first
    if check.held:
        assert check.differs["tensors"], check.differs  # it names what differed


def test_stock_torch_differs_between_thread_counts():
    """The control: without make_thread_invariant the same comparison finds differences (LayerNorm's
    weight gradients first); if a torch release fixes its kernels, this says so."""
    differ = _differences("finetune", "bf16", invariant=False)
    assert any("LayerNorm" in name for name in differ), differ


def test_where_the_bits_differ_the_run_holds_one_count():
    """The second branch on any CPU: stock torch's LayerNorm backward differs at 1 and 2 threads (the
    control above); the check finds it in the first batch, and the run, which then holds 2 threads,
    is bit for bit the run pinned at 2."""
    check, differ = _governed("finetune", "fp32", invariant=False)
    assert check.held and any("LayerNorm" in name for name in check.differs["tensors"]), check.record()
    assert "the model's forward and backward" in check.differs["what"]
    assert not differ, differ


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


def test_the_check_finds_a_product_that_depends_on_the_thread_count():
    """A product whose result follows the thread count (as oneDNN's split sums do on some CPUs):
    found at its first shape, on any CPU; an honest one at the same shape is not."""
    def honest(a, b):
        return a @ b

    def thread_dependent(a, b):
        return a @ b + 1e-3 * torch.get_num_threads()

    a, b = torch.randn(8, 16, requires_grad=True), torch.randn(16, 4, requires_grad=True)
    check = ThreadCheck((1, 2), hold=1)
    before = torch.get_num_threads()
    check.product("honest", honest, a, b, inputs=("a", "b"))
    assert not check.held and check.products == 1
    check.product("honest", honest, a, b, inputs=("a", "b"))  # the same shape: not checked again
    assert check.products == 1
    check.product("thread-dependent", thread_dependent, a, b, inputs=("a", "b"))
    assert check.held and check.differs["tensors"] == ["output"], check.differs
    assert "thread-dependent [8, 16] float32 x [16, 4] float32" in check.reason()
    assert torch.get_num_threads() == 1  # the count it holds, from the moment it found it
    torch.set_num_threads(before)
