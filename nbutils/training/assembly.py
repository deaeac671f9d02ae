"""The Trainer wiring every training path shares: fine-tuning, layer freezing (through
fine-tuning), masked-LM and ELECTRA pre-training.

Each path loads its own model and data and picks its own ``TrainingArguments``; what they share is
put together here, once:

- numerics: ``make_thread_invariant`` right after loading (``runtime.invariant``: the same bits at
  any CPU thread count, so the adaptive thread governor cannot change a result), unless the
  config's ``invariant_numerics`` is switched off;
- callbacks: the live figure (``training.live.LiveCurves``) and TensorBoard events
  (``training.tensorboard_logs``), then the path's own;
- the progress style for where it runs (notebook bars or headless lines), and the thread
  governor (``runtime.governor_callback.govern_threads``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def prepare_for_training(model, device: str, *, invariant_numerics: bool = True):
    """Apply the training numerics to ``model`` in place (see the module's docstring); returns it."""
    if invariant_numerics:
        from nbutils.runtime.invariant import make_thread_invariant

        make_thread_invariant(model, device)
    return model


def assemble_trainer(model, args, *, curves, tensorboard_dir: str | Path, headless: bool,
                     callbacks: Sequence = (), tensorboard_text: Mapping[str, str] | None = None,
                     tensorboard_task: str = "finetune",
                     trainer_class=None, govern_threads: bool = True, progress_lines: int = 10,
                     **trainer_kwargs: Any):
    """A ``Trainer`` (or ``trainer_class``) for ``model`` with the shared callbacks, progress style
    and thread governor; ``trainer_kwargs`` go to the Trainer as they are. ``tensorboard_task``
    (``mlm``, ``electra``, ``finetune``) namespaces its losses in TensorBoard. ``govern_threads=False``
    (stock numerics, whose bits depend on the thread count) holds one thread count throughout.
    ``progress_lines``: headless progress lines; 0 prints none (nor the governor's summary), for a
    caller that prints one line per training itself (the freezing comparison)."""
    from transformers import Trainer

    from nbutils.runtime import governor_callback
    from nbutils.training.live import use_progress_style
    from nbutils.training.tensorboard_logs import tensorboard_callback

    shared = [curves, tensorboard_callback(tensorboard_dir, task=tensorboard_task, text=tensorboard_text)]
    trainer = (trainer_class or Trainer)(model=model, args=args, callbacks=[*shared, *callbacks],
                                         **trainer_kwargs)
    use_progress_style(trainer, headless, progress_lines)
    if govern_threads:  # adaptive CPU thread count
        governor_callback.govern_threads(trainer, verbose=progress_lines > 0 or not headless)
    return trainer
