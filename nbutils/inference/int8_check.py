"""Is an export's int8 graph exact enough for ``--backend auto``? Checked once, at export, on real texts.

Dynamic int8 quantization moves every logit a little; a text whose top two labels are close gets
the other label. How many texts that hits depends on the model (a fine-tuned classifier's labels
are rarely close, a random model's often are), so it is measured, not assumed: at export the
int8 graph and the fp32 graph classify up to ``CHECK_TEXTS`` real texts, cut exactly as
``nbutils predict`` cuts them, and ``onnx_export.json`` records how many labels agree. ``auto``
offers onnx-int8 only when that agreement reaches ``backends.AGREEMENT_BAR``; an explicit
``--backend onnx-int8`` still runs it (the user asked).

Quantizing less does not rescue a model whose labels flip: on a random bert-base-sized model,
leaving out the embeddings, the attention outputs, the feed-forward outputs, the first or last
layers, or quantizing a single layer only, all kept 97-99% of the labels
(``benchmarks/bench_int8_variants.py``, docs/serving.md). So the export gates int8 instead of
searching for a partial quantization.

Where the texts come from, in order: ``check_texts`` (a text file with one text per line, or a
dataset folder/file: its dev split, else its test split); else the dataset of the pipeline run
the model folder belongs to (``runs/<run>/manifest.json``); else none, and int8 is written but
not offered to ``auto`` (the export says how to check it).
"""

from __future__ import annotations

import json
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.inference.onnx_files import CHECK_KEY  # noqa: F401 (the report's key, named here too)

CHECK_TEXTS = 1000  # at most this many texts (evenly drawn) decide whether int8 is offered


def texts_from_path(path: str | Path, n: int = CHECK_TEXTS) -> tuple[list[str], str]:
    """Texts to check with, from a text file (one per line) or a dataset (its dev split)."""
    from nbutils.data.dataset import load_dataset

    path = Path(path)
    if not path.exists():
        raise NbutilsError(f"{path}: not found (the texts to check the int8 graph with)",
                           fix="pass a text file with one text per line, or a dataset folder, to --check-texts")
    if path.is_file() and path.suffix in (".txt", ""):
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not texts:
            raise NbutilsError(f"{path}: no texts in it", fix="one text per line (--check-texts)")
        return _spread(texts, n), f"{path} ({len(texts)} lines)"
    return _dataset_texts(load_dataset(path), n, str(path))


def texts_from_run(model_dir: Path, n: int = CHECK_TEXTS) -> tuple[list[str], str] | None:
    """The dev texts of the dataset the pipeline run of ``model_dir`` trained on (None when the
    folder is not ``runs/<run>/<stage>/model`` or the dataset is gone)."""
    from nbutils.core.paths import REPO_ROOT
    from nbutils.data.dataset import load_dataset

    manifest = model_dir.resolve().parent.parent / "manifest.json"
    try:
        params = json.loads(manifest.read_text(encoding="utf-8"))["parameters"]
        data_dir = Path(params["data_dir"])
        data_dir = data_dir if data_dir.is_absolute() else REPO_ROOT / data_dir
        dataset = load_dataset(data_dir, params.get("data_format", "auto"),
                               text_column=params.get("data_text_column", "text"),
                               label_column=params.get("data_label_column", "label"),
                               on_bad_rows=params.get("data_on_bad_rows", "raise"),
                               label_delimiter=params.get("data_label_delimiter", ""))
    except (OSError, ValueError, KeyError, TypeError, NbutilsError):
        return None
    return _dataset_texts(dataset, n, f"{data_dir} (the run's dataset, {manifest.parent.name})")


def _dataset_texts(dataset, n: int, where: str) -> tuple[list[str], str]:
    split = next((s for s in ("dev", "test") if len(dataset.texts(s))), None)
    if split is None:
        raise NbutilsError(f"{where}: no dev or test texts to check the int8 graph with",
                           fix="pass a text file with one text per line to --check-texts")
    texts = list(dataset.texts(split))
    return _spread(texts, n), f"{where}, {split} split"


def _spread(texts: list[str], n: int) -> list[str]:
    """At most ``n`` texts, evenly over the list (not only its first part)."""
    if len(texts) <= n:
        return texts
    step = len(texts) / n
    return [texts[int(i * step)] for i in range(n)]


def int8_agreement(export_dir: Path, texts: list[str], source: str) -> dict:
    """Classify ``texts`` with the fp32 and the int8 graph of ``export_dir`` (as ``nbutils
    predict`` would) and say how many labels agree, and whether ``auto`` may offer int8."""
    import numpy as np

    from nbutils.inference.backends import AGREEMENT_BAR, estimated_agreement
    from nbutils.inference.predict import OnnxPredictor

    predictors = [OnnxPredictor(export_dir, backend) for backend in ("onnx", "onnx-int8")]
    cut = predictors[0].truncator(None, None)
    ids = predictors[0].tokenizer(texts, add_special_tokens=True, verbose=False,
                                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    ids = [cut.cut(row) for row in ids]
    fp32, int8 = (np.asarray(p.logits(ids, 64), dtype=np.float64) for p in predictors)
    if predictors[0].thresholds is not None:  # multi-label: the label sets, thresholded
        from nbutils.inference.predict import sigmoid

        limits = np.asarray(predictors[0].thresholds, dtype=np.float64)
        same = ((sigmoid(fp32) >= limits) == (sigmoid(int8) >= limits)).all(axis=1)
        estimated = float(same.mean())
    else:
        same = fp32.argmax(-1) == int8.argmax(-1)
        estimated = estimated_agreement(fp32, int8)
    agreement = float(same.mean())
    offered = min(agreement, estimated) >= AGREEMENT_BAR
    return {"texts": len(texts), "source": source, "agreement": agreement,
            "estimated_agreement": estimated, "bar": AGREEMENT_BAR, "offered_to_auto": bool(offered)}


def unchecked(fix: str) -> dict:
    """The record of an int8 graph that no texts checked: not offered to ``auto``."""
    return {"texts": 0, "source": None, "offered_to_auto": False, "fix": fix}
