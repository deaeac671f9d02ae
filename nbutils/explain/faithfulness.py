"""Do the attributions point at what the model used? ERASER comprehensiveness (DeYoung et al.
2020): delete the ``k`` characters an explanation ranks highest for the predicted class and
measure how far that class's probability falls; compare with deleting ``k`` random characters of
the same text. A faithful explanation's characters cost the model far more than random ones
(ratio > 1); the last layer's attention weights are the control that is often taken for an
explanation (Jain & Wallace 2019). benchmarks/bench_faithfulness.py runs it on the test split.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nbutils.core.errors import NbutilsError


def delete_chars(text: str, positions) -> str:
    """``text`` without the characters at ``positions``."""
    drop = set(int(p) for p in positions)
    return "".join(c for i, c in enumerate(text) if i not in drop)


def top_positions(scores: Sequence[float], text: str, k: int) -> list[int]:
    """The ``k`` positions with the highest scores among non-blank characters (ties: leftmost)."""
    candidates = [i for i, c in enumerate(text) if c.strip()]
    return sorted(candidates, key=lambda i: (-scores[i], i))[:k]


def random_positions(text: str, k: int, rng) -> list[int]:
    candidates = [i for i, c in enumerate(text) if c.strip()]
    return [int(i) for i in rng.choice(candidates, size=min(k, len(candidates)), replace=False)]


@dataclass
class Comprehensiveness:
    """Mean probability drop of the predicted class: top-k attributed vs k random characters."""

    method: str
    k: int
    texts: int
    drop_top: float
    drop_random: float

    @property
    def ratio(self) -> float:
        return self.drop_top / self.drop_random if self.drop_random > 0 else float("inf")

    def as_dict(self) -> dict:
        return {"method": self.method, "k": self.k, "texts": self.texts, "drop_top": self.drop_top,
                "drop_random": self.drop_random, "ratio": self.ratio}


def comprehensiveness(predictor, attributions, k: int, *, seed: int = 0,
                      batch_size: int = 64) -> Comprehensiveness:
    """ERASER comprehensiveness at ``k`` characters for ``attributions`` (one method's, from
    :func:`nbutils.explain.attributions.explain`) with ``predictor``'s calibrated probabilities.
    Texts with no more than ``k`` non-blank characters are left out (deleting all says nothing)."""
    import numpy as np

    if k < 1:
        raise NbutilsError(f"k={k}", fix="delete at least one character")
    rng = np.random.default_rng(seed)
    kept = [a for a in attributions if sum(1 for c in a.text if c.strip()) > k]
    if not kept:
        raise NbutilsError(f"no text has more than {k} characters", fix="use a smaller k")
    columns = [f"prob_{name}" for name in predictor.label_names]
    variants = []
    for a in kept:
        variants += [a.text, delete_chars(a.text, top_positions(a.scores, a.text, k)),
                     delete_chars(a.text, random_positions(a.text, k, rng))]
    table = predictor(variants, batch_size=batch_size)
    probs = table[columns].to_numpy().reshape(len(kept), 3, len(columns))
    target = np.array([predictor.label_names.index(a.label) for a in kept])
    rows = np.arange(len(kept))
    full, top, random = (probs[rows, i, target] for i in range(3))
    return Comprehensiveness(kept[0].method, k, len(kept), float((full - top).mean()),
                             float((full - random).mean()))


def faithfulness_line(path) -> str | None:
    """One sentence from benchmarks/bench_faithfulness.py's JSON (``--out``): for the middle k
    measured, each method's comprehensiveness ratio against random characters; None without it."""
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    measured = sorted({row["k"] for row in summary["rows"]})
    k = measured[len(measured) // 2]  # the middle k (3 of 1, 3, 5)
    ratio = {row["method"]: row["ratio"] for row in summary["rows"] if row["k"] == k}
    model = summary.get("model", {})
    described = ", ".join(f"{method} {value:.1f}x" for method, value in ratio.items())
    return (f"Faithfulness (ERASER comprehensiveness, `{path.name}`): deleting the {k} characters "
            f"a method ranks highest lowers the predicted class's probability, against deleting "
            f"{k} random characters of the same title, by {described} as much (attention weights "
            f"are the control), on {summary['test_texts']:,} test titles with a "
            f"{model.get('hidden_size')}-wide, {model.get('num_hidden_layers')}-layer fine-tuned "
            f"BERT; `{summary['command']}`.")


__all__ = ["Comprehensiveness", "faithfulness_line", "comprehensiveness", "delete_chars", "random_positions", "top_positions"]
