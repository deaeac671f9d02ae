"""Helpers behind the notebooks: data, checkpoint conversion, training, prediction, reports.

Heavy dependencies (torch, transformers) are imported lazily by the modules that need them,
so ``nbutils data fetch`` and the runner start in well under a second. Importing the package
puts the CPU thread policy (``nbutils.threads``) into the environment first.
"""

from nbutils.errors import NbutilsError
from nbutils.threads import apply_thread_policy

# Before anything loads torch: OpenMP reads its settings once, when torch loads (nbutils.threads).
apply_thread_policy()

__version__ = "0.1.0"
__all__ = ["NbutilsError", "__version__", "predict"]


def predict(texts, model_dir, **kwargs):
    """Classify ``texts`` with the fine-tuned model in ``model_dir`` (see nbutils.prediction.predict)."""
    from nbutils.prediction import predict as _predict

    return _predict(texts, model_dir, **kwargs)
