"""The MFU arithmetic and packed batches that benchmarks/bench_gpu_mfu.py relies on, on CPU:
the FLOP formula against PyTorch's own FLOP counter, and a packed (padding-free) batch against
the same texts padded."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertForSequenceClassification

from nbutils.training.mfu import config_train_flops, matmul_params, mfu, peak_tflops, train_flops
from nbutils.training.packing import (
    PackedBertForSequenceClassification,
    PackedClassificationCollator,
)


def tiny_config(attn: str, **sizes) -> BertConfig:
    config = BertConfig(vocab_size=120, hidden_size=sizes.get("hidden", 32), num_hidden_layers=sizes.get("layers", 2),
                        num_attention_heads=2, intermediate_size=sizes.get("ff", 48), max_position_embeddings=64,
                        num_labels=sizes.get("labels", 3), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    config._attn_implementation = attn
    return config


# eager attention: its products are plain matmuls the counter sees (torch's fused CPU attention
# kernel, which sdpa picks without dropout, has no FLOP formula in FlopCounterMode)
@pytest.mark.parametrize("attn", ["eager"])
@pytest.mark.parametrize("sizes", [{}, {"hidden": 48, "layers": 3, "ff": 80, "labels": 10}], ids=["small", "other"])
def test_train_flops_equal_the_counted_flops_of_a_training_step(attn, sizes):
    torch.manual_seed(0)
    config = tiny_config(attn, **sizes)
    model = BertForSequenceClassification(config)
    batch, seq = 3, 17
    ids = torch.randint(5, config.vocab_size, (batch, seq))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=torch.arange(batch) % config.num_labels).loss.backward()
    assert counter.get_total_flops() > 0
    assert config_train_flops(config, [seq] * batch) == counter.get_total_flops()


def test_the_formula_is_six_params_tokens_plus_attention():
    # bert-base: 12 x (4 * 768^2 + 2 * 768 * 3072) = 84,934,656 matrix parameters
    n = matmul_params(12, 768, 3072)
    assert n == 12 * (4 * 768**2 + 2 * 768 * 3072)
    flops = train_flops([128], layers=12, hidden=768, intermediate=3072)
    assert flops == 6 * n * 128 + 12 * 12 * 768 * 128**2
    # attention's share at s tokens is 2s / (4h + 2f): it grows with the length
    assert flops / (6 * n * 128) - 1 == pytest.approx(2 * 128 / (4 * 768 + 2 * 3072))
    # per sequence: two texts of 64 tokens cost less than one of 128 (the attention square)
    assert train_flops([64, 64], layers=12, hidden=768, intermediate=3072) < flops


def test_peaks_and_mfu():
    assert peak_tflops("NVIDIA H100 PCIe") < peak_tflops("NVIDIA H100 80GB HBM3")
    assert peak_tflops("NVIDIA H200", "tf32") == pytest.approx(peak_tflops("NVIDIA H200") / 2, rel=0.01)
    assert peak_tflops("CPU") is None and mfu(1e12, None) is None
    assert mfu(400e12, peak_tflops("NVIDIA H100 80GB HBM3")) == pytest.approx(400 / 989)


def texts_and_padded(config, lengths):
    g = torch.Generator().manual_seed(1)
    features = [{"input_ids": torch.randint(5, config.vocab_size, (n,), generator=g).tolist(), "labels": i % 3}
                for i, n in enumerate(lengths)]
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, f in enumerate(features):
        ids[row, :len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[row, :len(f["input_ids"])] = 1
    return features, ids, mask


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_a_packed_batch_trains_like_the_padded_batch(attn):
    config = tiny_config(attn)
    torch.manual_seed(0)
    padded_model = BertForSequenceClassification(config)
    packed_model = PackedBertForSequenceClassification(config)
    packed_model.load_state_dict(padded_model.state_dict())
    features, ids, mask = texts_and_padded(config, [5, 9, 3, 12])
    batch = PackedClassificationCollator()(features)
    assert batch["input_ids"].shape == (1, 5 + 9 + 3 + 12)  # no padding token
    assert batch["cls_index"].tolist() == [0, 5, 14, 17]
    padded = padded_model(input_ids=ids, attention_mask=mask, labels=batch["labels"])
    packed = packed_model(**batch)
    torch.testing.assert_close(packed.logits, padded.logits, rtol=1e-5, atol=1e-5)
    padded.loss.backward()
    packed.loss.backward()
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-6, atol=1e-6)
    for (name, a), b in zip(packed_model.named_parameters(), padded_model.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_the_restarting_positions_texts_would_attend_to_each_other():
    """The check above can fail: one long sequence (positions 0..n-1) gives other logits."""
    config = tiny_config("sdpa")
    torch.manual_seed(0)
    model = PackedBertForSequenceClassification(config).eval()
    features, _, _ = texts_and_padded(config, [5, 9, 3])
    batch = PackedClassificationCollator()(features)
    with torch.no_grad():
        separate = model(**batch).logits
        mixed = model(**{**batch, "position_ids": torch.arange(batch["input_ids"].shape[1])[None]}).logits
    assert not torch.allclose(separate, mixed, atol=1e-3)


def test_flex_attention_reads_the_same_boundaries():
    """flex_attention (the GPU packed arm without flash-attn) forward on CPU (no backward there)."""
    config = tiny_config("flex_attention")
    torch.manual_seed(0)
    padded_model = BertForSequenceClassification(config).eval()
    packed_model = PackedBertForSequenceClassification(config).eval()
    packed_model.load_state_dict(padded_model.state_dict())
    features, ids, mask = texts_and_padded(config, [4, 11, 7])
    with torch.no_grad():
        packed = packed_model(**PackedClassificationCollator()(features)).logits
        padded = padded_model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(packed, padded, rtol=1e-5, atol=1e-5)


def test_flash_kwargs_only_when_asked_and_empty_texts_refused():
    features = [{"input_ids": [2, 7, 3], "labels": 1}, {"input_ids": [2, 3], "labels": 0}]
    assert "cu_seq_lens_q" not in PackedClassificationCollator()(features)
    flash = PackedClassificationCollator(flash_kwargs=True)(features)
    assert flash["cu_seq_lens_q"].tolist() == [0, 3, 5] and flash["max_length_q"] == 3
    with pytest.raises(ValueError, match="no tokens"):
        PackedClassificationCollator()([{"input_ids": [], "labels": 0}])


def test_the_benchmark_records_a_failing_arm_and_runs_the_others(tmp_path, vocab_dir, monkeypatch):
    """One run on a GPU should give every number it can: an arm that fails (out of memory, a missing
    kernel) is listed with its error, and the next arm still runs."""
    import importlib.util
    import json
    import sys

    from nbutils.core.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("bench_gpu_mfu", REPO_ROOT / "benchmarks" / "bench_gpu_mfu.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu_mfu", bench)  # its dataclasses look their module up
    spec.loader.exec_module(bench)
    real_run_arm = bench.run_arm

    def run_arm(arm, *args):
        if arm.name == "fp32-eager":
            raise torch.OutOfMemoryError("CUDA out of memory (planted)")
        return real_run_arm(arm, *args)

    monkeypatch.setattr(bench, "run_arm", run_arm)
    out = tmp_path / "mfu.json"
    report = bench.main(["--tiny", "--device", "cpu", "--batch-size", "4", "--arms", "fp32-eager,bf16-sdpa",
                         "--steps", "1", "--warmup", "1", "--workers", "0", "--vocab-dir", str(vocab_dir),
                         "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert [a["arm"] for a in report["failed_arms"]] == ["fp32-eager"]
    assert "OutOfMemoryError" in report["failed_arms"][0]["error"]
    assert [a["arm"] for a in report["arms"]] == ["bf16-sdpa"] and report["arms"][0]["samples_per_s"] > 0
    assert report["sweep"] == [] and report["batch_size"] == 4
