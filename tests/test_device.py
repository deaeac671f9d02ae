"""Device choice: what it picks on this machine and how it refuses impossible requests."""

from __future__ import annotations

import pytest
import torch

from nbutils.device import DeviceChoice, choose_device
from nbutils.errors import NbutilsError


def test_auto_matches_hardware():
    choice = choose_device("auto")
    assert isinstance(choice, DeviceChoice)
    assert choice.attn_implementation == "sdpa"
    if torch.cuda.is_available():
        assert choice.device == "cuda" and (choice.bf16 or choice.fp16)
        assert choice.bf16 == torch.cuda.is_bf16_supported()
    else:
        assert choice.device in {"cpu", "mps"}
        assert not choice.bf16 and not choice.fp16
    assert choice.reason and choice.device in choice.describe()


def test_cpu_training_args_are_fp32():
    choice = choose_device("CPU")
    assert choice.device == "cpu" and choice.precision == "fp32"
    assert choice.training_args() == {"use_cpu": True, "bf16": False, "fp16": False,
                                      "optim": "adamw_torch_fused"}
    assert choice.torch_dtype == torch.float32
    assert "fp32" in choice.describe() and "asked for cpu" in choice.reason


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
