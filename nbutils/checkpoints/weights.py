"""Model weights: where a folder's weights come from (pre-trained or random), and loading or saving
them without noise: no tqdm bar per weight file during training, and transformers' LOAD REPORT
table reduced to one line when it lists only the expected new task head, while real mismatches
(weights missing, unused or of another shape) stay loud.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import warnings
from pathlib import Path


@contextlib.contextmanager
def quiet_weight_files():
    """No tqdm bars for reading or writing weight files ("Loading weights", "Writing model
    shards") inside the block: a Trainer saves a checkpoint at every evaluation, and each save
    stacked another finished bar under the training bar. Training bars are the Trainer's own and
    stay. Usable as a decorator; the previous setting comes back afterwards."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def describe_loading(info: dict, model_dir, *, new_ok: tuple[str, ...] = ("classifier.",),
                     unused_ok: tuple[str, ...] = ("cls.",)) -> tuple[str, bool]:
    """One line for ``from_pretrained(..., output_loading_info=True)``'s findings, and whether
    anything in it is a real mismatch.

    A pre-trained encoder given a new task head always shows the same two things: the new head
    (``new_ok``: ``classifier.*``) is missing from the checkpoint, and the checkpoint's
    pre-training heads (``unused_ok``: ``cls.*``, masked-LM and next-sentence) are unused. That
    is expected and gets one line. Anything else missing (initialised at random!), unused or of
    another shape is listed in full.
    """
    missing = sorted(info.get("missing_keys") or [])
    unused = sorted(info.get("unexpected_keys") or [])
    mismatched = sorted(k[0] if isinstance(k, (tuple, list)) else k for k in info.get("mismatched_keys") or [])
    bad_missing = [k for k in missing if not k.startswith(new_ok)]
    bad_unused = [k for k in unused if not k.startswith(unused_ok)]
    bad_shape = [k for k in mismatched if not k.startswith(new_ok)]
    if bad_missing or bad_unused or bad_shape:
        parts = [f"WARNING: {model_dir} does not fit the model it was loaded into:"]
        if bad_missing:
            parts.append(f"  {len(bad_missing)} weights MISSING from the checkpoint, initialised at random: {bad_missing}")
        if bad_shape:
            parts.append(f"  {len(bad_shape)} weights of ANOTHER SHAPE, initialised at random: {bad_shape}")
        if bad_unused:
            parts.append(f"  {len(bad_unused)} checkpoint weights UNUSED: {bad_unused}")
        parts.append("  (is this the checkpoint you meant? a different architecture or an unconverted "
                     "checkpoint trains a partly random model)")
        return "\n".join(parts), True
    said = []
    head = sorted({k.rsplit(".", 1)[0] for k in missing + mismatched})
    if mismatched:
        said.append(f"the checkpoint's own {', '.join(head)} (another number of classes) replaced by a new one")
    elif head:
        said.append(f"new {', '.join(head)} head initialised (trained next)")
    if unused:
        groups = sorted({".".join(k.split(".")[:2]) for k in unused})
        said.append(f"the checkpoint's pre-training heads ({', '.join(groups)}: {len(unused)} tensors) left unused")
    if not said:
        return f"loaded {model_dir}: every weight matched", False
    return (f"loaded {model_dir}: {'; '.join(said)}: expected when a pre-trained encoder gets a new "
            "task head (transformers' LOAD REPORT table of these keys is left out)"), False


# Inside say_loading_once(): the load messages already printed in that block (else None).
_SAID: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar("nbutils_load_messages", default=None)


@contextlib.contextmanager
def say_loading_once():
    """Inside the block, :func:`load_pretrained` prints each distinct load message once: the
    freezing comparison loads the same encoder for every strategy and seed, and the same three
    lines six times say nothing new. Warnings about real mismatches are not affected."""
    token = _SAID.set(set())
    try:
        yield
    finally:
        _SAID.reset(token)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


def load_pretrained(model_cls, model_dir, *, new_ok: tuple[str, ...] = ("classifier.",),
                    unused_ok: tuple[str, ...] = ("cls.",), **kwargs):
    """``model_cls.from_pretrained(model_dir, **kwargs)`` with transformers' red LOAD REPORT table
    replaced by :func:`describe_loading`: one printed line when the differences are the expected
    new head, a warning listing every weight when they are not."""
    from transformers.utils import logging as hf_logging

    logger = hf_logging.get_logger("transformers.modeling_utils")  # where the LOAD REPORT is logged
    # A filter, not a higher level: transformers 5 runs extra tensor-parallel checks (and warns)
    # when that logger's level is WARNING or above.
    drop_report = _DropLoadReport()
    logger.addFilter(drop_report)
    try:
        model, info = model_cls.from_pretrained(str(model_dir), output_loading_info=True, **kwargs)
    finally:
        logger.removeFilter(drop_report)
    text, mismatch = describe_loading(info, model_dir, new_ok=new_ok, unused_ok=unused_ok)
    if int(os.environ.get("RANK", "0")) == 0:  # once under torchrun, not once per process
        said = _SAID.get()
        if mismatch:
            warnings.warn(text, stacklevel=2)
        elif said is None or text not in said:
            print(text)
            if said is not None:
                said.add(text)
    return model


WEIGHTS_ORIGIN = "weights_origin.json"  # in a model folder: were these weights ever pre-trained?


def write_weights_origin(model_dir: str | Path, *, pretrained: bool, how: str) -> Path:
    """Record where a model folder's weights come from, so fine-tuning can say it loudly when
    they were never pre-trained (the demo's random BERT) instead of quietly scoring low."""
    from nbutils.core.io import write_json

    return write_json(Path(model_dir) / WEIGHTS_ORIGIN, {"pretrained": pretrained, "how": how})


def weights_origin(model_dir: str | Path) -> dict:
    """``{"pretrained": True | False | None, "how": text}`` for a model folder (None: no record,
    as for a checkpoint converted or downloaded from elsewhere, which is taken as pre-trained)."""
    path = Path(model_dir) / WEIGHTS_ORIGIN
    if path.is_file():
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return {"pretrained": record.get("pretrained"), "how": str(record.get("how", ""))}
        except (OSError, ValueError, AttributeError):
            pass
    return {"pretrained": None, "how": f"no {WEIGHTS_ORIGIN}: a checkpoint from elsewhere, taken as pre-trained"}


def random_weights_warning(model_dir: str | Path) -> str | None:
    """A loud one-paragraph warning when ``model_dir`` holds never-pre-trained weights, else None."""
    origin = weights_origin(model_dir)
    if origin["pretrained"] is not False:
        return None
    return (f"WARNING: {model_dir} holds RANDOM weights that were never pre-trained ({origin['how']}). "
            "Fine-tuning them measures the architecture, not BERT: expect accuracy well below a "
            "pre-trained model, even below a TF-IDF baseline. Run notebook 03 (masked-LM pre-training) "
            "first, or set checkpoint_source in notebook 01 to a pre-trained checkpoint.")
