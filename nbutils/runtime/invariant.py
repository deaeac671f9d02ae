"""Training numerics that do not depend on the CPU thread count.

Why: the adaptive thread policy (``nbutils.runtime.governor``) moves torch between 1 and N
threads during training, as the machine's load changes. Most CPU kernels give the same bits for
any thread count (elementwise ops; reductions that keep more than one output, which torch splits
over the outputs, never over the summed dimension; bf16 matrix products through oneDNN), but a
few split a sum by thread, and over thousands of steps those last bits grow into a different
model. Measured on torch 2.13 CPU, 1 against 2 threads (``tests/test_thread_invariance.py``
finds them: it trains with 1 and with alternating 1/2 threads and compares every parameter):

- **LayerNorm backward**: the kernel sums the weight and bias gradients over the rows in one
  buffer per thread and then adds the buffers, so the rows' grouping follows the thread count.
  Here the forward and the input gradient stay torch's (one row per output), and the two
  parameter gradients are column sums of a ``[rows, hidden]`` matrix, which torch splits over
  the columns only (:class:`ThreadInvariantLayerNorm`).
- **softmax backward (fp32)**: the vectorised kernel handles rows in chunks whose ends follow
  the thread split, and a row at a chunk's end is summed in another order. Attention here
  computes it as ``p * (g - sum(g * p))`` with a per-row sum (:func:`_InvariantSoftmax`); the
  forward stays torch's softmax. This is also why CPU ``scaled_dot_product_attention``
  differed with attention dropout: with dropout it runs that same softmax backward.
- **MKL's fp32 matrix products** (``sgemm``): MKL picks its blocking and kernels by thread
  count. Its strict Conditional Numerical Reproducibility mode (``MKL_CBWR=AUTO,STRICT``, put
  into the environment with the thread policy on ``import nbutils``, before MKL starts) makes
  ``?gemm`` give the same bits for any thread count, but only where the product has at least
  ~64 rows and columns: a random sweep of smaller ones still found some differing (e.g. the
  classifier's 7 x 128 x 10 product on the last, short batch). So an fp32 ``nn.Linear`` whose
  product has fewer than :data:`SMALL_GEMM` rows or columns (forward or backward) runs it on one
  MKL thread (``mkl_set_num_threads_local``; such products are cheap), and the others keep
  every thread (:class:`ThreadInvariantLinear`). bf16 products (autocast) go through oneDNN
  and are left alone: on an AMD EPYC (AVX512-BF16) it split none of 300 random shapes by
  thread, but on an Intel Xeon with AMX it splits the summed dimension of some weight-gradient
  products (``benchmarks/check_invariance_isa.py``). So this is checked on the machine, not
  assumed: while the thread governor runs, ``nbutils.runtime.thread_check`` compares every
  product shape the run meets (``linear`` and the attention products below call it) and the
  first batch at each count, and holds one count where the bits differ. Attention's batched
  products (one small matrix per text and head) are split over the batch, never inside one.

What was not changed, because it is already thread-invariant (same tests): full reductions of
these sizes (loss means, the gradient norm that clipping uses), embeddings' backward (each
thread owns a range of rows), dropout masks (MKL's random stream skips ahead per chunk), the
fused AdamW update, GELU, cross-entropy, and attention without dropout and every forward.

Models stay plain Hugging Face BERTs: LayerNorm and Linear modules change class in place (same
weights, same state dict), and attention switches to a registered implementation name that transformers
never writes to ``config.json``; saved folders load anywhere without nbutils. Only CPU training
is affected: on a GPU, and without gradients (evaluation, prediction, ONNX export), the usual
kernels run.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

from nbutils.runtime.thread_check import active as active_check

ATTENTION = "sdpa_thread_invariant"  # registered attention implementation name (never saved)
# MKL: bitwise reproducible ?gemm for any thread count (Intel oneMKL developer guide, "Conditional
# Numerical Reproducibility"); read once, when MKL starts: nbutils.runtime.threads puts it into the
# environment before torch loads.
MKL_CBWR = ("MKL_CBWR", "AUTO,STRICT")
_MKL_CBWR_AUTO, _MKL_CBWR_STRICT, _MKL_CBWR_ALL = 2, 0x10000, -1
# An fp32 matrix product with fewer rows or columns than this runs on one MKL thread (module doc).
SMALL_GEMM = 64


def numerics_environment(environ) -> dict[str, str]:
    """The variables to add before torch loads (none where the user set MKL_CBWR)."""
    name, value = MKL_CBWR
    return {} if environ.get(name, "").strip() else {name: value}


def _mkl_library():
    """torch's CPU library, which carries MKL statically (None where there is none)."""
    import ctypes
    import os

    import torch

    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        path = os.path.join(os.path.dirname(torch.__file__), "lib", name)
        if os.path.exists(path):
            try:
                library = ctypes.CDLL(path)
                library.mkl_serv_cbwr_get  # noqa: B018 -- present only where MKL is linked in
                return library
            except (OSError, AttributeError):
                return None
    return None


def mkl_strict_reproducible() -> bool | None:
    """Whether MKL runs in strict reproducible mode; if MKL has not started yet, switch it on.
    None: no MKL in this torch (then fp32 products are not MKL's and this does not apply)."""
    library = _mkl_library()
    if library is None:
        return None
    if library.mkl_serv_cbwr_get(_MKL_CBWR_ALL) & _MKL_CBWR_STRICT:
        return True
    # Refused (a negative status) once MKL has done any work in this process.
    return library.mkl_serv_cbwr_set(_MKL_CBWR_AUTO | _MKL_CBWR_STRICT) == 0


class _OneMklThread:
    """Within: MKL matrix products of the calling thread run on one thread (then as before).
    ``MKL_Set_Num_Threads_Local`` is MKL's C entry (by value; the lower-case symbol is Fortran's)."""

    def __init__(self, library):
        self.library = library

    def __enter__(self):
        self.previous = self.library.MKL_Set_Num_Threads_Local(1)

    def __exit__(self, *exc):
        self.library.MKL_Set_Num_Threads_Local(self.previous)  # 0: back to the global count


def _functions():
    """The autograd functions and classes, built on first use so importing this module is cheap."""
    global _BUILT
    if _BUILT is None:
        import torch

        _BUILT = {**_normalisation_functions(torch), **_linear_functions(torch)}
    return _BUILT


def _normalisation_functions(torch) -> dict[str, Any]:
    """LayerNorm and softmax whose backward sums run in the same order at any thread count."""
    class InvariantLayerNorm(torch.autograd.Function):
        """torch's layer norm forward and input gradient; weight and bias gradients as column sums."""

        @staticmethod
        def forward(ctx, x, weight, bias, normalized_shape, eps):
            out, mean, rstd = torch.native_layer_norm(x, normalized_shape, weight, bias, eps)
            ctx.save_for_backward(x, weight, bias, mean, rstd)
            ctx.normalized_shape = normalized_shape
            return out

        @staticmethod
        def backward(ctx, grad):
            x, weight, bias, mean, rstd = ctx.saved_tensors
            grad_x = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                # one row per output element: the same bits for any thread count
                grad_x = torch.ops.aten.native_layer_norm_backward(
                    grad, x, ctx.normalized_shape, mean, rstd, weight, bias, [True, False, False])[0]
            width = 1
            for size in ctx.normalized_shape:
                width *= size
            rows = grad.reshape(-1, width).float()
            # sum over dim 0 of [rows, width]: torch splits the `width` outputs between threads,
            # each output's sum runs in one thread in the same order
            if ctx.needs_input_grad[1]:
                # grad * (x - mean) * rstd, in one buffer (this backward is on every step's path)
                scaled = (x.float() - mean).mul_(rstd).reshape(-1, width).mul_(rows)
                grad_weight = scaled.sum(0).reshape(weight.shape).to(weight.dtype)
            if ctx.needs_input_grad[2]:
                grad_bias = rows.sum(0).reshape(bias.shape).to(bias.dtype)
            return grad_x, grad_weight, grad_bias, None, None

    class InvariantSoftmax(torch.autograd.Function):
        """torch's softmax over the last dimension; its backward as ``p * (g - sum(g * p))``."""

        @staticmethod
        def forward(ctx, scores):
            probs = torch.softmax(scores, dim=-1)
            ctx.save_for_backward(probs)
            return probs

        @staticmethod
        def backward(ctx, grad):
            (probs,) = ctx.saved_tensors
            p, g = probs.float(), grad.float()  # fp32 arithmetic for bf16 too, as torch's kernel
            return (p * (g - (g * p).sum(-1, keepdim=True))).to(probs.dtype)

    class ThreadInvariantLayerNorm(torch.nn.LayerNorm):
        """``nn.LayerNorm`` (same parameters and state dict) whose CPU training backward is
        thread-invariant; everything else runs torch's kernel."""

        def forward(self, x):
            if (torch.is_grad_enabled() and x.device.type == "cpu" and self.weight is not None
                    and self.bias is not None):
                return InvariantLayerNorm.apply(x, self.weight, self.bias, tuple(self.normalized_shape), self.eps)
            return super().forward(x)

    return {"softmax": InvariantSoftmax, "layer_norm_class": ThreadInvariantLayerNorm}


def _linear_functions(torch) -> dict[str, Any]:
    """``F.linear`` and ``nn.Linear`` with their small fp32 products on one MKL thread."""
    library = _mkl_library()
    one_thread = _OneMklThread(library) if library is not None else contextlib.nullcontext()

    def small(rows: int, columns: int) -> bool:
        return min(rows, columns) < SMALL_GEMM

    class SmallLinear(torch.autograd.Function):
        """``F.linear`` whose small products (forward and backward) run on one MKL thread."""

        @staticmethod
        def forward(ctx, x, weight, bias):
            ctx.save_for_backward(x, weight)
            ctx.has_bias = bias is not None
            with one_thread:
                return torch.nn.functional.linear(x, weight, bias)

        @staticmethod
        def backward(ctx, grad):
            x, weight = ctx.saved_tensors
            rows = grad.reshape(-1, grad.shape[-1])
            grad_x = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                with one_thread if small(rows.shape[0], weight.shape[1]) else contextlib.nullcontext():
                    grad_x = grad.matmul(weight)
            if ctx.needs_input_grad[1]:
                with one_thread if small(weight.shape[0], weight.shape[1]) else contextlib.nullcontext():
                    grad_weight = rows.t().matmul(x.reshape(-1, x.shape[-1]))
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_bias = rows.sum(0)  # one sum per output column: thread-invariant
            return grad_x, grad_weight, grad_bias

    def linear(x, weight, bias):
        """``F.linear``, with fp32 CPU products that have few rows or columns on one MKL thread."""
        check = active_check()
        if check is not None and x.device.type == "cpu":
            check.product("linear", linear, x, weight, bias, inputs=("input", "weight", "bias"),
                          fp32_linear=x.dtype == torch.float32)
        if (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and small(x.numel() // max(1, x.shape[-1]), min(weight.shape))):
            if torch.is_grad_enabled():
                return SmallLinear.apply(x, weight, bias)
            with one_thread:
                return torch.nn.functional.linear(x, weight, bias)
        return torch.nn.functional.linear(x, weight, bias)

    class ThreadInvariantLinear(torch.nn.Linear):
        """``nn.Linear`` (same parameters and state dict) whose fp32 CPU products with few rows or
        columns run on one MKL thread; everything else runs as before."""

        def forward(self, x):
            return linear(x, self.weight, self.bias)

    return {"linear_class": ThreadInvariantLinear, "linear": linear}


_BUILT: dict[str, Any] | None = None


def _scores(query, key):
    import torch

    return torch.matmul(query, key.transpose(2, 3))


def thread_invariant_attention(module, query, key, value, attention_mask, dropout: float = 0.0,
                               scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """Bidirectional attention for BERT training on CPU (the registered ``ATTENTION``): the
    matrix products and softmax forward are torch's (batched over heads: the same bits for any
    thread count), the softmax backward is :class:`_functions` ``softmax``. Without gradients,
    or off the CPU, it is transformers' ``sdpa`` unchanged."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if not torch.is_grad_enabled() or query.device.type != "cpu" or getattr(module, "is_causal", False):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    scaling = query.size(-1) ** -0.5 if scaling is None else scaling
    check = active_check()
    if check is not None:  # the batched products at this shape give the same bits at each thread count?
        check.product("attention scores", _scores, query, key, inputs=("query", "key"))
    scores = _scores(query, key) * scaling
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:  # sdpa's mask: True where a key may be seen
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    probs = _functions()["softmax"].apply(scores)
    if dropout > 0.0:
        probs = torch.nn.functional.dropout(probs, p=dropout, training=True)
    if check is not None:
        check.product("attention output", torch.matmul, probs, value, inputs=("probabilities", "value"))
    out = torch.matmul(probs, value)
    return out.transpose(1, 2).contiguous(), None


def register_attention() -> str:
    """Register ``ATTENTION`` with transformers (attention and mask interfaces); idempotent."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(ATTENTION, thread_invariant_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, sdpa_mask)
    return ATTENTION


def linear_as(module, x, weight, bias):
    """``F.linear(x, weight, bias)`` computed as the Linear ``module`` computes its own product:
    thread-invariantly if :func:`make_thread_invariant` changed its class. For a product with
    other weights than the module's own, e.g. a slice of its rows."""
    import torch

    if isinstance(module, _functions()["linear_class"]):
        return _functions()["linear"](x, weight, bias)
    return torch.nn.functional.linear(x, weight, bias)


def make_thread_invariant(model, device: str = "cpu"):
    """Make ``model``'s CPU training give the same bits for any thread count (module doc): its
    LayerNorms change class in place, its attention implementation becomes ``ATTENTION``. Off
    the CPU it returns ``model`` untouched. Returns the model."""
    import torch

    if device != "cpu":
        return model
    if mkl_strict_reproducible() is False:
        warnings.warn("MKL started before nbutils could switch on its reproducible mode (torch was imported "
                      "before nbutils): fp32 matrix products may differ in their last bits between thread "
                      "counts. Import nbutils first, or export MKL_CBWR=AUTO,STRICT.", stacklevel=2)
    layer_norm_class = _functions()["layer_norm_class"]
    linear_class = _functions()["linear_class"]
    for module in model.modules():
        if type(module) is torch.nn.LayerNorm:
            module.__class__ = layer_norm_class
        elif type(module) is torch.nn.Linear:
            module.__class__ = linear_class
    # every config the attention modules read (ELECTRA's generator has its own)
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None}
    for config in configs.values():
        if getattr(config, "_attn_implementation", None) == "sdpa":
            register_attention()
            config._attn_implementation = ATTENTION  # config.json never stores it (transformers' rule)
    return model
