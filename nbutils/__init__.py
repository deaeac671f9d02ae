"""Helpers behind the notebooks: data, checkpoint conversion, training, prediction, reports.

Heavy dependencies (torch, transformers) are imported lazily by the modules that need them,
so ``nbutils data fetch`` and the runner start in well under a second.
"""

from nbutils.errors import NbutilsError

__version__ = "0.1.0"
__all__ = ["NbutilsError", "__version__", "predict"]


def predict(texts, model_dir, **kwargs):
    """Classify ``texts`` with the fine-tuned model in ``model_dir`` (see nbutils.prediction.predict)."""
    from nbutils.prediction import predict as _predict

    return _predict(texts, model_dir, **kwargs)
