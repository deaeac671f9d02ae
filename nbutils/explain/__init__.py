"""Why did the model say that, and how sure is it?

- :mod:`nbutils.explain.calibration`: expected calibration error, reliability diagrams, and the
  temperature that fine-tuning fits on the dev split (``model/calibration.json``, applied by
  ``nbutils predict``, the ONNX backends and the notebook's prediction box);
- :mod:`nbutils.explain.attributions`: a score per character for the predicted class
  (Integrated Gradients on the embeddings with captum, or occlusion for the ONNX backends);
- :mod:`nbutils.explain.faithfulness`: ERASER comprehensiveness of those scores against random
  characters and against attention weights;
- :mod:`nbutils.explain.label_errors`: likely label errors of the train split from out-of-fold
  probabilities, ranked by confident learning (cleanlab).

docs/explain.md says how each is measured and what works for multi-label models.
"""

from __future__ import annotations

from nbutils.core.errors import NbutilsError

MULTI_LABEL = "multi_label_classification"


def is_multi_label(predictor) -> bool:
    """Whether a loaded ``Predictor`` (PyTorch or ONNX) is a multi-label model (it has thresholds)."""
    config = getattr(getattr(predictor, "model", None), "config", None)
    return (getattr(predictor, "thresholds", None) is not None
            or getattr(config, "problem_type", None) == MULTI_LABEL)


def refuse_multi_label(config, what: str) -> None:
    """A clear error for the pieces that do not handle multi-label models yet."""
    if getattr(config, "problem_type", None) == MULTI_LABEL or getattr(config, "multi_label", False):
        raise NbutilsError(f"{what} is not yet for multi-label models (this one scores each label "
                           "on its own, with a sigmoid)",
                           fix="use a single-label model; docs/explain.md lists what works for "
                               "multi-label models")
