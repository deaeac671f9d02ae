"""Pick the device and numeric precision for training or prediction, and say why.

One decision shared by fine-tuning, layer freezing, pre-training and prediction: CUDA with
bf16 where the card supports it (fp16 with loss scaling on older cards), Apple MPS in fp32,
otherwise CPU in fp32. Attention always uses PyTorch's fused ``sdpa`` kernels. The choice can
be overridden ("cuda", "cpu", "mps", or "auto"); asking for a device that is not there is a
user-fixable error rather than a silent fallback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nbutils.errors import NbutilsError

PREFERENCES = ("auto", "cuda", "gpu", "cpu", "mps")


@dataclass(frozen=True)
class DeviceChoice:
    """Where to run and in which precision, with the reason in words."""

    device: str  # "cuda", "cpu" or "mps"
    bf16: bool
    fp16: bool
    attn_implementation: str
    n_gpus: int
    name: str  # e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 threads)"
    reason: str

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    @property
    def torch_dtype(self):
        import torch

        return torch.bfloat16 if self.bf16 else torch.float16 if self.fp16 else torch.float32

    def describe(self) -> str:
        """One line for notebooks and logs: what was chosen and why."""
        gpus = f" x{self.n_gpus}" if self.n_gpus > 1 else ""
        return (
            f"device: {self.device}{gpus} ({self.name}), precision: {self.precision}, "
            f"attention: {self.attn_implementation} -- {self.reason}"
        )

    def training_args(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.TrainingArguments`` matching this choice."""
        return {"use_cpu": self.device == "cpu", "bf16": self.bf16, "fp16": self.fp16,
                "optim": "adamw_torch_fused" if self.fused_adamw else "adamw_torch"}

    @property
    def fused_adamw(self) -> bool:
        """One fused kernel for the AdamW update (CPU and CUDA). For a small BERT on CPU the
        per-tensor update over the 21,128-row embedding is a third of a training step; fused it
        is ~5x cheaper and numerically the same algorithm (benchmarks/bench_train.py)."""
        return self.device in ("cpu", "cuda")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "precision": self.precision}


def choose_device(preference: str = "auto") -> DeviceChoice:
    """Choose device and precision: ``auto`` prefers CUDA (bf16 > fp16), then MPS, then CPU."""
    import torch

    pref = (preference or "auto").strip().lower()
    if pref not in PREFERENCES:
        raise NbutilsError(
            f"unknown device {preference!r}",
            fix=f"use one of {', '.join(PREFERENCES)}",
        )
    if pref == "gpu":
        pref = "cuda"

    cuda_ok = torch.cuda.is_available()
    mps_ok = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()

    if pref == "cuda" and not cuda_ok:
        raise NbutilsError(
            "device 'cuda' was requested but torch sees no CUDA GPU "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})",
            fix="install a CUDA build of torch and check `nvidia-smi`, or use device='auto'/'cpu'",
        )
    if pref == "mps" and not mps_ok:
        raise NbutilsError(
            "device 'mps' was requested but Apple MPS is not available",
            fix="use device='auto' or 'cpu'",
        )

    if cuda_ok and pref in ("auto", "cuda"):
        n_gpus = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            bf16, fp16 = True, False
            why = "CUDA GPU supports bf16: half the memory of fp32, fp32's range, no loss scaling"
        else:
            bf16, fp16 = False, True
            why = "CUDA GPU without bf16 (pre-Ampere): fp16 with dynamic loss scaling"
        if pref == "cuda":
            why = "asked for cuda; " + why
        return DeviceChoice("cuda", bf16, fp16, "sdpa", n_gpus, name, why)

    if mps_ok and pref in ("auto", "mps"):
        why = "Apple GPU (MPS) found; fp32 because mixed precision training on MPS is unreliable"
        return DeviceChoice("mps", False, False, "sdpa", 0, "Apple MPS", why)

    threads = torch.get_num_threads()
    if pref == "cpu":
        why = "asked for cpu; fp32 (CPU half precision is slower than fp32 on most CPUs)"
    else:
        why = "no CUDA or MPS device found; CPU in fp32 (CPU half precision is rarely faster)"
    return DeviceChoice("cpu", False, False, "sdpa", 0, f"CPU ({threads} threads)", why)
