"""Pick the device and numeric precision for training or prediction, and say why.

One decision shared by fine-tuning, layer freezing, pre-training and prediction: CUDA with
bf16 where the card supports it (fp16 with loss scaling on older cards), Apple MPS in fp32,
otherwise the CPU: bf16 autocast where the CPU multiplies bf16 natively (AVX512-BF16 on Intel
Cooper Lake / AMD Zen 4 and later, AMX on Intel Sapphire Rapids and later) for the tasks where
it paid (:data:`CPU_BF16_BY_TASK`), fp32 elsewhere. Mixed precision keeps fp32 master weights
either way; only matrix products run in bf16. Callers name their task
(``choose_device(device, precision, task="pretrain")``) instead of keeping their own rule.
Attention always uses PyTorch's fused ``sdpa`` kernels. Device and precision can be overridden
(device "cuda", "cpu", "mps" or "auto"; precision "bf16", "fp16", "fp32" or "auto"); asking for
something the machine cannot do is a user-fixable error rather than a silent fallback.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nbutils.core.errors import NbutilsError

PREFERENCES = ("auto", "cuda", "gpu", "cpu", "mps")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Whether precision="auto" picks bf16 autocast on a CPU with native bf16, per task:
# - finetune: yes (python benchmarks/bench_train.py measures it against --precision fp32);
# - pretrain: no: bf16 autocast was no faster for the demo BERT's masked-LM steps (846 vs 860
#   texts/s over 1,500 steps) and ended 3,000-step demo runs at a higher held-out loss (5.63 and
#   5.68 against 5.53 and 5.55 in fp32);
# - predict: no: casting the weights to bf16 can flip close calls, so CPU labels equal the fp32
#   model's.
# An explicit precision="bf16" is always taken as asked.
CPU_BF16_BY_TASK = {"finetune": True, "pretrain": False, "predict": False}


def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX tiles).

    There bf16 autocast speeds fine-tuning up (``python benchmarks/bench_train.py`` against
    ``--precision fp32`` measures it); x86 CPUs without them would emulate bf16, so fp32 is
    kept. The probes are torch's own x86 ones (private, present since torch 2.1; absent ones
    count as "no"), so ARM CPUs with bf16 (Graviton3, recent Apple chips) are not detected.
    """
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


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
        """For notebooks and logs: what was chosen and why; then the CPU thread policy
        (``nbutils.runtime.threads``), which decides CPU speed, and on a busy machine by a lot."""
        import torch

        from nbutils.runtime.threads import current_policy

        gpus = f" x{self.n_gpus}" if self.n_gpus > 1 else ""
        return (
            f"device: {self.device}{gpus} ({self.name}), precision: {self.precision}, "
            f"attention: {self.attn_implementation} -- {self.reason}\n"
            + current_policy().describe(torch.get_num_threads())
            + (f"\n{NUMERICS_LINE}" if self.device == "cpu" else "")
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


# The training configs' option, with its default (FinetuneConfig / PretrainConfig.invariant_numerics).
NUMERICS_LINE = ("numerics: thread-invariant CPU training (invariant_numerics = True, the default; "
                 "False: torch's stock kernels and one thread count held; nbutils.runtime.invariant)")


def choose_device(preference: str = "auto", precision: str = "auto", *, task: str = "finetune") -> DeviceChoice:
    """Choose device and precision for ``task`` (finetune | pretrain | predict): ``auto`` prefers
    CUDA (bf16 > fp16), then MPS, then CPU (bf16 where native and :data:`CPU_BF16_BY_TASK` says
    it pays, else fp32). ``precision`` other than ``auto`` is taken as asked."""
    import torch

    if task not in CPU_BF16_BY_TASK:
        raise NbutilsError(f"unknown task {task!r}", fix=f"use one of {', '.join(CPU_BF16_BY_TASK)}")
    cpu_bf16 = CPU_BF16_BY_TASK[task]

    pref = str(preference or "auto").strip().lower()
    if pref not in PREFERENCES:
        raise NbutilsError(
            f"unknown device {preference!r}",
            fix=f"use one of {', '.join(PREFERENCES)}",
        )
    if pref == "gpu":
        pref = "cuda"
    prec = str(precision or "auto").strip().lower()
    if prec not in PRECISIONS:
        raise NbutilsError(f"unknown precision {precision!r}", fix=f"use one of {', '.join(PRECISIONS)}")

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
    asked = f"asked for {pref}; " if pref != "auto" else ""

    if cuda_ok and pref in ("auto", "cuda"):
        n_gpus = torch.cuda.device_count()
        name = torch.cuda.get_device_name(0)
        bf16_ok = torch.cuda.is_bf16_supported()
        if prec == "auto":
            prec = "bf16" if bf16_ok else "fp16"
            why = ("CUDA GPU supports bf16: half the memory of fp32, fp32's range, no loss scaling" if bf16_ok
                   else "CUDA GPU without bf16 (pre-Ampere): fp16 with dynamic loss scaling")
        elif prec == "bf16" and not bf16_ok:
            raise NbutilsError(f"precision 'bf16' was requested but {name} has no bf16 support",
                               fix="use precision='fp16' (or 'auto') on pre-Ampere cards")
        else:
            why = {"bf16": "asked for bf16", "fp16": "asked for fp16: dynamic loss scaling",
                   "fp32": "asked for fp32: about half the speed of bf16/fp16 on tensor cores"}[prec]
        return DeviceChoice("cuda", prec == "bf16", prec == "fp16", "sdpa", n_gpus, name, asked + why)

    if mps_ok and pref in ("auto", "mps"):
        if prec in ("bf16", "fp16"):
            raise NbutilsError(f"precision {prec!r} is not supported on Apple MPS here",
                               fix="use precision='fp32' (or 'auto') on MPS")
        why = "Apple GPU (MPS) found; fp32 because mixed precision training on MPS is unreliable"
        return DeviceChoice("mps", False, False, "sdpa", 0, "Apple MPS", asked + why)

    if prec == "fp16":
        raise NbutilsError("precision 'fp16' is for CUDA GPUs; on a CPU it is slow and needs loss scaling",
                           fix="use precision='bf16' or 'fp32' (or 'auto') on a CPU")
    native = cpu_has_native_bf16()
    if prec == "auto":
        prec = "bf16" if native and cpu_bf16 else "fp32"
        why = ("fp32: this CPU has no native bf16 instructions (bf16 would be emulated)" if not native
               else "bf16 autocast: this CPU multiplies bf16 natively (AVX512-BF16/AMX); weights stay fp32"
               if cpu_bf16 else "fp32: the CPU has native bf16, but this task keeps fp32 on CPUs")
    elif prec == "bf16":
        why = "asked for bf16 autocast" + ("" if native else "; this CPU has no native bf16, so it is emulated")
    else:
        why = "asked for fp32"
    if pref == "auto":
        why = "no CUDA or MPS device found; " + why
    threads = torch.get_num_threads()
    name = f"CPU ({threads} thread{'' if threads == 1 else 's'})"
    return DeviceChoice("cpu", prec == "bf16", False, "sdpa", 0, name, asked + why)


def main(argv: list[str] | None = None) -> int:
    """``nbutils threads``: the device line and CPU thread policy in effect here, and the load."""
    import argparse
    import json

    argparse.ArgumentParser(prog="nbutils threads", description=main.__doc__).parse_args(argv)
    from nbutils.runtime.threads import current_policy, machine_load

    print(choose_device().describe())
    print(f"load average (1, 5, 15 min): {machine_load()}")
    print(json.dumps({**current_policy().as_dict(), "load_average": machine_load()}))
    return 0
