"""Knowledge distillation from the TF-IDF baseline into the fine-tuned BERT (train split only).

The demo's small BERT, pre-trained for minutes on 33k titles, knows less about which character
pairs mark a class than the character 1-2-gram linear SVM trained on the same titles. Hinton et
al. (2015): a student trained on a teacher's soft scores as well as the hard labels learns what
the teacher knows about how classes resemble each other. Here the teacher is the project's own
baseline (``nbutils.training.baseline.build_baseline``) and it is kept honest:

- it is fitted on the fine-tuning train split only (the texts and labels the model sees);
- its score for each train text comes from a copy fitted on the *other* folds (cross-fitting,
  ``sklearn.model_selection.cross_val_predict``): a teacher scoring texts it was fitted on is
  nearly always right with a huge margin, and its "soft" targets would be the hard labels again;
- the folds are grouped by text (``nbutils.data.dataset.grouped_stratified_folds``): a text and its
  duplicates share a fold, else the copy in another fold hands the "held-out" score its own
  label, and on data full of duplicates the out-of-fold accuracy reads far above the SVM's
  accuracy on unseen texts (tests/test_distill.py plants duplicates to show both);
- the SVM's margins become probabilities by one temperature fitted to those out-of-fold scores
  (lowest log-loss of the true train labels; Guo et al. 2017), again train data only;
- dev and test texts are never scored by the teacher, and the reported test accuracy is the
  student's alone (the teacher is not consulted at prediction time).

The loss is ``(1 - alpha) * CE(student, label) + alpha * T^2 * KL(teacher_T || student_T)``, where
``_T`` divides both sides' logits by the temperature ``T`` (Hinton et al.: ``T > 1`` shows the
student more of how the teacher ranks the wrong classes; ``T^2`` keeps the gradient scale). The train
split's labels reach the loss as rows ``[label, p_1 .. p_C]``; dev/test batches carry plain
labels and get the cross-entropy only, so evaluation losses stay comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nbutils.core.config_flags import config_from_params
from nbutils.core.errors import NbutilsError
from nbutils.training.metrics import fit_temperature  # the same fit as the classifier's calibration


@dataclass
class DistillConfig:
    """How much the student listens to the teacher, and how the teacher's scores are made."""

    alpha: float = 0.5  # weight of the teacher term; 0 = plain fine-tuning
    temperature: float = 1.0  # softening of teacher and student in the teacher term (1: the calibrated scores as they are)
    folds: int = 5  # cross-fitting folds: each train text is scored by a teacher fitted without it
    label_smoothing: float = 0.0  # on the hard-label term
    seed: int = 42

    def __post_init__(self):
        if not 0 <= self.alpha <= 1:
            raise NbutilsError(f"distillation alpha must be in [0, 1], got {self.alpha}",
                               fix="set finetune_distill_alpha between 0 (off) and 1 (teacher only)")
        if not self.temperature > 0:
            raise NbutilsError(f"distillation temperature must be positive, got {self.temperature}",
                               fix="set finetune_distill_temperature to 1 (off) or e.g. 2")
        if int(self.folds) < 2:
            raise NbutilsError(f"cross-fitting needs at least 2 folds, got {self.folds}",
                               fix="set finetune_distill_folds to 2 or more (5 is usual)")
        if not 0 <= self.label_smoothing < 1:
            raise NbutilsError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


def crossfit_teacher_probs(texts: Sequence[str], labels: Sequence[int], n_classes: int, *,
                           folds: int = 5, seed: int = 42) -> tuple:
    """Out-of-fold class probabilities of the TF-IDF SVM for every train text, and a summary.

    Each text's row comes from a baseline fitted on the other ``folds - 1`` folds (stratified,
    seeded, grouped by text: duplicates share a fold). Returns ``(probs [n, n_classes] float32,
    info)`` where ``info`` holds the fitted
    scale, the out-of-fold accuracy and the fit time.
    """
    import time

    import numpy as np
    from scipy.special import softmax
    from sklearn.model_selection import cross_val_predict

    from nbutils.data.dataset import grouped_stratified_folds, text_groups
    from nbutils.training.baseline import BaselineConfig, build_baseline

    labels = np.asarray([int(y) for y in labels])
    if len(texts) != len(labels):
        raise NbutilsError(f"teacher: {len(texts)} texts but {len(labels)} labels")
    groups = text_groups(texts)
    _, first = np.unique(groups, return_index=True)
    counts = np.bincount(labels[first], minlength=n_classes)  # distinct texts per class
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < folds:
        raise NbutilsError(
            f"cross-fitting with {folds} folds needs every class at least {folds} distinct texts in the "
            f"train split (smallest class: {int(present.min()) if len(present) else 0})",
            fix="lower finetune_distill_folds, use more training examples, or switch distillation off",
        )
    t0 = time.perf_counter()
    teacher = build_baseline(BaselineConfig(seed=seed))
    cv = grouped_stratified_folds(labels, groups, folds, seed)
    scores = cross_val_predict(teacher, list(texts), labels, cv=cv, method="decision_function")
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:  # two classes: LinearSVC returns one margin
        scores = np.stack([-scores, scores], axis=1)
    full = np.zeros((len(labels), n_classes))
    full[:, np.unique(labels)] = scores  # classes absent from train keep score 0
    scale = fit_temperature(full, labels)
    probs = softmax(scale * full, axis=1).astype(np.float32)
    info = {"teacher": "TF-IDF character 1-2-grams + linear SVM, cross-fitted on the train split",
            "folds": folds, "grouped_by_text": True, "duplicate_rows": int(len(labels) - len(first)),
            "scale": scale, "oof_accuracy": float((probs.argmax(1) == labels).mean()),
            "oof_log_loss": float(-np.log(probs[np.arange(len(labels)), labels] + 1e-12).mean()),
            "fit_s": time.perf_counter() - t0}
    return probs, info


class SvmTeacher:
    """What ``nbutils.training.finetune.finetune(teacher=...)`` calls: soft targets for the train split and the loss."""

    def __init__(self, config: DistillConfig | None = None):
        self.config = config or DistillConfig()
        self.info: dict = {}

    def targets(self, texts: Sequence[str], labels: Sequence[int], n_classes: int):
        probs, self.info = crossfit_teacher_probs(texts, labels, n_classes, folds=int(self.config.folds),
                                                  seed=self.config.seed)
        return probs

    def settings(self) -> dict:
        """What decides the targets (a resumed run must use the same)."""
        return {"teacher": "svm", **asdict(self.config)}

    def describe(self) -> dict:
        """Settings plus what the cross-fit measured (scale, out-of-fold accuracy, seconds)."""
        return {**self.settings(), **self.info}

    def loss(self, outputs, labels, num_items_in_batch=None):
        """Trainer's ``compute_loss_func``: rows ``[label, p...]`` mix CE and KL; plain labels get CE."""
        import torch.nn.functional as F

        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        logits = logits.float()
        if labels.dim() == 1:
            return F.cross_entropy(logits, labels.long(), label_smoothing=self.config.label_smoothing)
        hard = labels[:, 0].long()
        soft = labels[:, 1:].float()
        ce = F.cross_entropy(logits, hard, label_smoothing=self.config.label_smoothing)
        t = float(self.config.temperature)
        if t != 1.0:  # the teacher's calibrated log-probabilities are its logits up to a constant
            soft = F.softmax(soft.clamp_min(1e-12).log() / t, dim=-1)
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1), soft, reduction="batchmean") * t * t
        return (1 - self.config.alpha) * ce + self.config.alpha * kl




def teacher_from_params(params: Mapping[str, Any]) -> SvmTeacher | None:
    """Notebook 04's teacher: None unless ``finetune_distill_alpha > 0``; then an :class:`SvmTeacher`
    configured by the ``finetune_distill_*`` parameters (plus ``finetune_label_smoothing`` and
    ``seed``), and a line saying what it does."""
    if not params.get("finetune_distill_alpha", 0) > 0:
        return None
    config = config_from_params(DistillConfig, params, "finetune_distill_", "finetune_")
    if int(params.get("finetune_num_gpus", 1)) > 1:
        raise NbutilsError("distillation runs in one process only",
                           fix="set finetune_num_gpus to 1 or finetune_distill_alpha to 0")
    print(f"distillation: alpha {config.alpha} towards the TF-IDF SVM's out-of-fold scores "
          f"on the train split ({config.folds} folds); dev and test are never shown to the teacher")
    return SvmTeacher(config)


__all__ = ["DistillConfig", "SvmTeacher", "crossfit_teacher_probs", "fit_temperature", "teacher_from_params"]
