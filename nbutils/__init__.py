"""Helpers behind the notebooks, one subpackage per concern, from the bottom up:

core (errors, atomic io, paths, run contract) < runtime (device, CPU threads, memory) < text
(vocabularies, tokenization) < data (datasets, statistics) < checkpoints (TF reader, conversion,
model folders) < inference (predict, ONNX) < training (fine-tune, freezing, baseline) <
pretraining (masked LM, ELECTRA) < explain < pipeline (the headless runner) < reporting <
stages (one object per notebook). ``tests/test_architecture.py`` keeps imports going downwards.

Importing the package changes nothing in the process: the CPU thread policy and allocator
settings are applied by the entry points (the ``nbutils`` CLI, the runner's kernels, and the
first code cell of each notebook via :func:`nbutils.runtime.threads.apply_thread_policy`).
"""

from nbutils.core.errors import NbutilsError

__version__ = "0.1.0"
__all__ = ["NbutilsError", "__version__", "predict"]


def predict(texts, model_dir, **kwargs):
    """Classify ``texts`` with the fine-tuned model in ``model_dir`` (see nbutils.inference.predict.predict)."""
    from nbutils.inference.predict import predict as _predict

    return _predict(texts, model_dir, **kwargs)
