"""TensorBoard event files for every training run, so runs can be compared side by side.

The project's own curves (live figures, history.csv) stay the record of one run; TensorBoard is
for putting many runs next to each other: ``tensorboard --logdir runs/`` lists every run's
``<stage>/tensorboard`` folder (fine-tuning, pre-training, each freezing strategy and seed) as
its own line, named by its path.

Training goes through Hugging Face Trainer, so the events come from its built-in
``TensorBoardCallback`` (train/loss, train/learning_rate, train/grad_norm, eval/accuracy,
eval/macro_f1, ...), pointed at the run's folder instead of Trainer's default
``output_dir/runs/<date>_<host>`` (a checkpoint folder that is deleted or moved). Final numbers
that Trainer never logs (test accuracy, held-out MLM scores) are added with ``write_scalars``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nbutils.core.run_contract import TENSORBOARD

LOG_DIR = TENSORBOARD  # inside each stage's output folder: <run>/<stage>/tensorboard


def tensorboard_callback(log_dir: str | Path, *, text: Mapping[str, str] | None = None):
    """Trainer's TensorBoardCallback writing to ``log_dir`` (created on the main process only).

    ``text`` entries (e.g. the freezing strategy and seed) are written once as text summaries,
    so a run is identifiable inside TensorBoard, not only by its folder name.
    """
    from transformers.integrations import TensorBoardCallback

    class _RunCallback(TensorBoardCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            super().on_train_begin(args, state, control, **kwargs)
            if self.tb_writer is not None:
                for key, value in (text or {}).items():
                    self.tb_writer.add_text(key, str(value))

    callback = _RunCallback()
    # transformers 5 has no TrainingArguments.logging_dir: the callback reads its folder from
    # TENSORBOARD_LOGGING_DIR at construction; setting it here avoids a process-wide variable.
    callback.logging_dir = str(log_dir)
    return callback


def write_scalars(log_dir: str | Path, scalars: Mapping[str, float], step: int) -> None:
    """Add scalars (e.g. ``{"test/accuracy": 0.86}``) at ``step`` to the events in ``log_dir``."""
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for tag, value in scalars.items():
            if value is not None:
                writer.add_scalar(tag, float(value), step)


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in ``log_dir``'s event files: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for events in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in accumulator.Scalars(tag))
    return out


def read_texts(log_dir: str | Path) -> dict[str, str]:
    """The text summaries in ``log_dir`` (``{tag: last text}``), e.g. a freezing run's strategy."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, str] = {}
    for events in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"tensors": 0})
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            last = accumulator.Tensors(tag)[-1].tensor_proto
            out[tag.removesuffix("/text_summary")] = last.string_val[0].decode("utf-8")
    return out
