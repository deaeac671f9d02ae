"""Model FLOPs of BERT training and model FLOPs utilisation (MFU).

MFU = model FLOPs trained per second / the card's dense peak (Chowdhery et al. 2022, PaLM,
appendix B). Only the model's own arithmetic counts: padding tokens, recomputation and
framework overhead are not model FLOPs, so padding and slow kernels lower MFU instead of
inflating it.

A multiply-add is 2 FLOPs. For one sequence of ``s`` tokens through an encoder of ``L``
layers, hidden size ``h`` and feed-forward size ``f``, the forward pass costs

- ``2 * s * N`` in the weight matrices, with ``N = L * (4 h^2 + 2 h f)`` the parameters of the
  Q, K, V, output and feed-forward matrices (BERT's non-embedding parameters, less biases and
  LayerNorms, which are not matrix products);
- ``4 * L * s^2 * h`` in attention: scores ``Q K^T`` and the weighted sum ``A V``, each
  ``2 s^2 h`` per layer;
- ``2 * (h^2 + h * C)`` in the pooler and the ``C``-class classifier, on the [CLS] token only.

Embedding lookups, softmax, LayerNorm, GELU and the loss are not matrix products and are left
out, as is usual. Training costs 3x the forward pass (the backward pass computes the gradient
with respect to both the input and the weights of every product), so per sequence

    6 * N * s + 12 * L * h * s^2 + 6 * (h^2 + h * C)

which is the familiar ``6 * parameters * tokens`` plus the attention term. For bert-base (L 12,
h 768, f 3072) at s = 128 the attention term adds ``2s / (4h + 2f)`` = 2.8% to ``6 N s``. tests/test_mfu.py checks
the formula against ``torch.utils.flop_counter.FlopCounterMode`` on a small BERT.
"""

from __future__ import annotations

from collections.abc import Iterable

# Dense (no sparsity) tensor-core peaks in TFLOPS by a substring of the device name, from the
# vendors' data sheets: bf16 and TF32. Order matters: the first match wins ("H100 PCIe" before
# "H100"). A card not listed has no MFU unless a peak is given (bench_gpu_mfu.py --peak-tflops).
PEAK_TFLOPS = (
    # name,       bf16,  tf32
    ("H100 PCIe", 756.0, 378.0),
    ("H100 NVL", 835.0, 418.0),
    ("H100", 989.0, 495.0),  # SXM
    ("GH200", 989.0, 495.0),
    ("H200", 989.0, 495.0),
    ("A100", 312.0, 156.0),
    ("L40S", 362.0, 183.0),
    ("L4", 121.0, 60.0),
)


def peak_tflops(device_name: str, kind: str = "bf16") -> float | None:
    """The card's dense ``kind`` ("bf16" or "tf32") peak in TFLOPS, or None if not listed."""
    column = {"bf16": 1, "tf32": 2}[kind]
    return next((row[column] for row in PEAK_TFLOPS if row[0] in device_name), None)


def matmul_params(layers: int, hidden: int, intermediate: int) -> int:
    """Parameters of the encoder's weight matrices (Q, K, V, output, two feed-forward)."""
    return layers * (4 * hidden * hidden + 2 * hidden * intermediate)


def train_flops(lengths: Iterable[int], *, layers: int, hidden: int, intermediate: int,
                num_labels: int = 0) -> float:
    """Model FLOPs of one training step (forward + backward) over sequences of ``lengths``
    real tokens each (padding excluded); ``num_labels`` > 0 adds the pooler and classifier."""
    n = matmul_params(layers, hidden, intermediate)
    head = 6.0 * (hidden * hidden + hidden * num_labels) if num_labels else 0.0
    return float(sum(6.0 * n * s + 12.0 * layers * hidden * s * s + head for s in lengths))


def config_train_flops(config, lengths: Iterable[int]) -> float:
    """:func:`train_flops` for a ``transformers.BertConfig`` (sequence classifier)."""
    return train_flops(lengths, layers=config.num_hidden_layers, hidden=config.hidden_size,
                       intermediate=config.intermediate_size, num_labels=config.num_labels)


def mfu(flops_per_second: float, peak_tflops_value: float | None) -> float | None:
    """Model FLOPs utilisation as a share (0.4 = 40%), or None without a known peak."""
    return flops_per_second / (peak_tflops_value * 1e12) if peak_tflops_value else None
