"""The thread governor (``nbutils.runtime.governor``) inside Hugging Face Trainer, as one callback.

Every training path here (fine-tuning, masked-LM and ELECTRA pre-training, the freezing
comparison through fine-tuning) calls ``govern_threads(trainer)`` after building its Trainer,
and ``thread_schedule(trainer)`` for its metrics.json. The callback times each optimizer step
(``on_step_begin`` to ``on_step_end``: forward, backward and update of every micro-batch, not the
evaluations in between, which keep whatever count is current), counts the padded tokens the
model saw in that step through a forward pre-hook, and calls ``torch.set_num_threads`` when the
governor says so. Under a pinned count (``OMP_NUM_THREADS``, ``torch_threads``), with the
policy off, on one CPU or off the CPU it adds nothing.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from nbutils.runtime.governor import ThreadGovernor
from nbutils.runtime.invariant import mkl_strict_reproducible
from nbutils.runtime.thread_check import ThreadCheck, activate, check_counts
from nbutils.runtime.threads import current_policy, governor_threads


class ThreadGovernorCallback(TrainerCallback):
    """Applies ``ThreadGovernor``'s count around each training step."""

    def __init__(self, governor: ThreadGovernor, verbose: bool = True, check: ThreadCheck | None = None):
        self.governor = governor
        self.verbose = verbose
        # compares the bits at each count the governor may use (nbutils.runtime.thread_check)
        self.check = check or ThreadCheck(check_counts(governor.max_threads), hold=max(1, governor.max_threads - 1),
                                          trust_mkl_fp32=mkl_strict_reproducible() is True, clock=governor.clock)
        self._tokens = 0
        self._check_seconds = 0.0
        self._hook = None

    def _count_tokens(self, module, args, kwargs) -> None:
        if self.check.busy:
            return  # the check's own forward passes
        if module.training:
            self.check.batch(module, args, kwargs)  # the first training batch at each count
        ids = kwargs.get("input_ids", args[0] if args else None)
        shape = getattr(ids, "shape", None)
        if shape is not None and len(shape) >= 1:
            n = 1
            for dim in shape:
                n *= int(dim)
            self._tokens += n

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        import torch

        torch.set_num_threads(self.governor.threads)
        activate(self.check)
        if model is not None and self._hook is None:
            self._hook = model.register_forward_pre_hook(self._count_tokens, with_kwargs=True)

    def on_step_begin(self, args, state, control, **kwargs):
        self._tokens = 0
        self._check_seconds = self.check.seconds
        self.governor.step_begin()

    def on_step_end(self, args, state, control, **kwargs):
        import torch

        before = self.governor.threads
        if self.check.held:
            before = self.governor.hold(self.check.hold)  # the check has set this count already
        # the step's time without the checks it ran (a new shape's check is no slower step)
        after = self.governor.step_end(self._tokens or 1, exclude=self.check.seconds - self._check_seconds)
        if after != before:
            torch.set_num_threads(after)

    def on_train_end(self, args, state, control, **kwargs):
        global _last_count
        _last_count = self.governor.home
        activate(None)
        if self.check.held:
            self.governor.hold(self.check.hold)
            import torch

            torch.set_num_threads(self.check.hold)  # evaluation and prediction after training too
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        # the count stays: evaluation and prediction after training run at what the governor found best
        if self.verbose and state.is_world_process_zero:
            print(self.governor.summary(), flush=True)
            print(f"CPU threads, bits: {self.check.reason()} (checks took {self.check.seconds:.1f} s)", flush=True)


# The count the last training in this process ended at: the next one (the freezing comparison
# trains many models in a row) starts there instead of paying the slow steps again under load.
_last_count: int | None = None


def make_governor() -> ThreadGovernor | None:
    """A governor for this process's policy, or None where the count is pinned or fixed. It
    starts where the previous training in this process ended, else at all threads."""
    count = governor_threads()
    return ThreadGovernor(count, start=_last_count) if count else None


def govern_threads(trainer, governor: ThreadGovernor | None = None, *,
                   verbose: bool = True) -> ThreadGovernorCallback | None:
    """Add the thread governor to ``trainer`` when the thread policy is adaptive (see module doc);
    ``verbose``: print its summary when training ends (metrics.json records it either way)."""
    if trainer.args.device.type != "cpu":
        return None
    governor = governor or make_governor()
    if governor is None:
        return None
    callback = ThreadGovernorCallback(governor, verbose=verbose and trainer.is_world_process_zero())
    trainer.add_callback(callback)
    return callback


def thread_schedule(trainer) -> dict[str, Any]:
    """For metrics.json: the policy, and the governor's schedule where one ran."""
    import torch

    record: dict[str, Any] = {"source": current_policy().source, "torch_threads": torch.get_num_threads()}
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ThreadGovernorCallback):
            record.update(callback.governor.record())
            record["bits"] = callback.check.record()
            break
    else:
        record["policy"] = "fixed"
    return record
