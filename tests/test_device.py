"""Device choice: what it picks on this machine and how it refuses impossible requests."""

from __future__ import annotations

import pytest
import torch

from nbutils.core.errors import NbutilsError
from nbutils.runtime.device import DeviceChoice, choose_device, cpu_has_native_bf16


def test_auto_matches_hardware():
    choice = choose_device("auto")
    assert isinstance(choice, DeviceChoice)
    assert choice.attn_implementation == "sdpa"
    if torch.cuda.is_available():
        assert choice.device == "cuda" and (choice.bf16 or choice.fp16)
        assert choice.bf16 == torch.cuda.is_bf16_supported()
    else:
        assert choice.device in {"cpu", "mps"}
        assert not choice.fp16
        # bf16 autocast only where the CPU multiplies bf16 natively (emulated bf16 is slower)
        assert choice.bf16 == (choice.device == "cpu" and cpu_has_native_bf16())
    assert choice.reason and choice.device in choice.describe()


@pytest.mark.parametrize("native", [True, False])
def test_cpu_precision_follows_the_instruction_set(native, monkeypatch):
    import nbutils.runtime.device

    monkeypatch.setattr(nbutils.runtime.device, "cpu_has_native_bf16", lambda: native)
    choice = choose_device("CPU")
    assert choice.device == "cpu" and "asked for cpu" in choice.reason
    if native:
        assert choice.precision == "bf16" and "natively" in choice.reason
    else:
        assert choice.precision == "fp32" and "no native bf16" in choice.reason
    # work that keeps fp32 on CPUs (pre-training, prediction) says so
    kept = choose_device("cpu", task="pretrain")
    assert kept.precision == "fp32" and ("keeps fp32" in kept.reason) == native
    assert choose_device("cpu", "bf16", task="pretrain").precision == "bf16"  # an explicit ask wins


def test_cpu_precision_override():
    fp32 = choose_device("cpu", "FP32")
    assert fp32.precision == "fp32" and fp32.torch_dtype == torch.float32
    assert fp32.training_args() == {"use_cpu": True, "bf16": False, "fp16": False, "optim": "adamw_torch_fused"}
    bf16 = choose_device("cpu", "bf16")
    assert bf16.precision == "bf16" and "asked for bf16" in bf16.reason
    assert bf16.training_args() == {"use_cpu": True, "bf16": True, "fp16": False, "optim": "adamw_torch_fused"}
    with pytest.raises(NbutilsError, match="'fp16' is for CUDA GPUs"):
        choose_device("cpu", "fp16")
    with pytest.raises(NbutilsError, match="unknown precision 'half'"):
        choose_device("cpu", "half")
    with pytest.raises(NbutilsError, match="unknown precision 16"):
        choose_device("cpu", 16)  # e.g. `precision: 16` in a YAML profile


def test_cpu_bf16_trains_with_bf16_products_and_fp32_weights(tmp_path):
    # what Trainer does with choose_device(...).training_args(): autocast, fp32 master weights
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, num_labels=2)
    model = BertForSequenceClassification(config)
    seen = []
    model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    data = [{"input_ids": torch.tensor([1, 5 + i % 7, 2]), "labels": i % 2} for i in range(16)]
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=8,
                             report_to="none", disable_tqdm=True, save_strategy="no",
                             **choose_device("cpu", "bf16").training_args())
    before = model.classifier.weight.detach().clone()
    Trainer(model=model, args=args, train_dataset=data).train()
    assert seen and set(seen) == {torch.bfloat16}
    assert model.classifier.weight.dtype == torch.float32
    assert not torch.equal(before, model.classifier.weight)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(NbutilsError, match="no CUDA GPU"):
        choose_device("cuda")


def test_unknown_preference():
    with pytest.raises(NbutilsError, match="unknown device 'tpu'"):
        choose_device("tpu")


def test_fused_adamw_matches_the_plain_update():
    # the fused optimizer is a speed choice only: same algorithm, same numbers
    torch.manual_seed(0)
    weights = [torch.randn(50, 8, requires_grad=True), torch.randn(8, requires_grad=True)]
    twins = [w.detach().clone().requires_grad_(True) for w in weights]
    plain = torch.optim.AdamW(weights, lr=1e-2, weight_decay=0.01, foreach=False)
    fused = torch.optim.AdamW(twins, lr=1e-2, weight_decay=0.01, fused=True)
    for step in range(5):
        for params, opt in ((weights, plain), (twins, fused)):
            opt.zero_grad()
            loss = sum((p.sin() * (step + 1)).sum() for p in params)
            loss.backward()
            opt.step()
    for a, b in zip(weights, twins, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_cpu_name_counts_threads_in_english():
    import torch

    from nbutils.runtime.device import choose_device

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert choose_device("cpu", "fp32").name == "CPU (1 thread)"
        torch.set_num_threads(2)
        assert choose_device("cpu", "fp32").name == "CPU (2 threads)"
    finally:
        torch.set_num_threads(before)
