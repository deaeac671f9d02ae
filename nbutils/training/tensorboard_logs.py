"""TensorBoard event files for every training run, so runs can be compared side by side.

The project's own curves (live figures, history.csv) stay the record of one run; TensorBoard is
for putting runs next to each other. Each training writes one TensorBoard run, named by what it
is, never ``.../tensorboard``:

    <run>/tensorboard/pretrain                     masked-LM or ELECTRA pre-training (notebook 03)
    <run>/tensorboard/finetune                     fine-tuning (notebook 04)
    <run>/freezing/tensorboard/<strategy>-seed<n>  each layer-freezing run (notebook 05)

``tensorboard --logdir runs/<run>/tensorboard`` shows the stages; the freezing runs have a root
of their own, ``tensorboard --logdir runs/<run>/freezing/tensorboard``, so their short runs are
compared with each other, not squashed beside a long fine-tuning (``--logdir runs/`` still
shows everything).

Losses are namespaced by task (``mlm/loss``, ``electra/loss``, ``finetune/loss``, with each
task's ``learning_rate`` and ``grad_norm``), so a masked-LM loss of 5 to 9 never shares a chart
with a classification loss. Every score on held-out data is in one ``eval/`` family: the dev
curve during fine-tuning (``eval/accuracy``, ``eval/macro_f1``, ``eval/finetune_loss``) and the
held-out masked-LM scores of pre-training (``eval/mlm_loss``, ``eval/mlm_masked_token_accuracy``);
the final test scores are ``test/accuracy`` and ``test/macro_f1``.

Training goes through Hugging Face Trainer, so the events come from its ``TensorBoardCallback``,
with the tags renamed as above and pointed at these folders instead of Trainer's default
``output_dir/runs/<date>_<host>`` (a checkpoint folder that is deleted or moved). A training
that starts from step 0 replaces its run's earlier events; a resumed one adds to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from nbutils.core.run_contract import TENSORBOARD

TASKS = ("mlm", "electra", "finetune")
_SPEED = ("_runtime", "_per_second", "total_flos")  # Trainer's timing entries: not curves


def log_dir(out_dir: str | Path) -> Path:
    """The TensorBoard run of a stage writing ``out_dir``: ``<run>/tensorboard/<stage>``
    (``runs/x/finetune`` -> ``runs/x/tensorboard/finetune``)."""
    out_dir = Path(out_dir)
    return out_dir.parent / TENSORBOARD / out_dir.name


def tag(task: str, key: str) -> str | None:
    """The TensorBoard tag of a Trainer log entry for ``task``; None for timing entries."""
    if key.endswith(_SPEED):
        return None
    if key.startswith("eval_"):
        name = key.removeprefix("eval_")
        return f"eval/{name}" if task == "finetune" and name != "loss" else f"eval/{task}_{name}"
    if key.startswith("test_"):
        return f"test/{key.removeprefix('test_')}"
    return f"{task}/{key}"  # the final average train_loss stays apart from the loss curve


def tensorboard_callback(log_dir: str | Path, *, task: str = "finetune", text: Mapping[str, str] | None = None):
    """Trainer's TensorBoardCallback writing ``task``'s tags (:func:`tag`) to ``log_dir``.

    ``text`` entries (e.g. the freezing strategy and seed) are written once as text summaries,
    so a run is identifiable inside TensorBoard, not only by its folder name. A training that
    starts at step 0 first removes the folder's earlier event files (a replaced run).
    """
    from transformers.integrations import TensorBoardCallback

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {TASKS}")

    class _RunCallback(TensorBoardCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero and state.global_step == 0 and self.tb_writer is None:
                for old in Path(self.logging_dir).glob("events.out.tfevents.*"):
                    old.unlink()
            super().on_train_begin(args, state, control, **kwargs)
            if self.tb_writer is not None:
                for key, value in (text or {}).items():
                    self.tb_writer.add_text(key, str(value))

        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            if self.tb_writer is None:
                self._init_summary_writer(args)
            for key, value in logs.items():
                name = tag(task, key)
                if name and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.tb_writer.add_scalar(name, value, state.global_step)
            self.tb_writer.flush()

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
