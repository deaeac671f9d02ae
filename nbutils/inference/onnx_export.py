"""Serve a fine-tuned classifier on CPUs with ONNX Runtime: export it, optionally int8, predict.

``export_onnx(model_dir, out_dir)`` writes a folder a server can load without PyTorch weights:

    model.onnx          fp32 graph from ``torch.onnx.export(dynamo=True)`` (torch.export based;
                        the TorchScript exporter is deprecated), dynamic batch and sequence axes
    model.int8.onnx     the same graph with int8 weights (``onnxruntime.quantization``'s
                        dynamic quantization: activations quantized per batch at run time)
    config.json, tokenizer files, finetune_config.json, calibration.json   copied from the
                        model folder, so texts are tokenized and cut, and confidences
                        calibrated, exactly as ``nbutils predict`` does
    onnx_export.json    what was exported, versions, the checked logits difference, and how
                        many labels the int8 graph keeps on real texts (``int8_check``: whether
                        ``--backend auto`` may pick it; :mod:`nbutils.inference.int8_check`)

Export checks its own result: ONNX Runtime and PyTorch run the same padded batches and the
largest logits difference is recorded (an fp32 export further off than ``FP32_TOLERANCE`` is
an error). ``nbutils.inference.predict.OnnxPredictor`` is its ``Predictor`` with the forward pass
swapped for an ONNX Runtime session (:func:`onnx_session`);
``nbutils.predict(texts, export_dir, backend="onnx-int8")`` uses it.

CLI: ``nbutils export-onnx MODEL [OUT] [--check-texts PATH] [--no-int8] [--overwrite]`` and
``nbutils predict --backend onnx|onnx-int8 --model OUT ...``. Without OUT the export goes into the
cache (``nbutils.inference.backends.export_cache``), keyed by the model's content hash, where
``nbutils predict --model MODEL`` finds it: ``--backend auto`` then also tries the ONNX backends.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import warnings
from pathlib import Path

from nbutils.core.errors import NbutilsError
from nbutils.inference.onnx_files import (  # noqa: F401 (the export's public names, kept here too)
    BACKEND_FILES,
    CHECK_KEY,
    INT8_FILE,
    ONNX_FILE,
    REPORT_FILE,
    onnx_file,
    onnx_session,
)

# fp32 ONNX Runtime and eager PyTorch differ only by kernel summation order (~1e-6 on BERT),
# relative to the logits' size: the check allows FP32_TOLERANCE * max(1, largest |logit|).
FP32_TOLERANCE = 1e-4
OPSET = 18
# Files of a model folder that describe it (labels, tokenizer, truncation); weights are not copied.
_COPIED = ("config.json", "finetune_config.json", "calibration.json", "tokenizer.json",
           "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")


def load_classifier(model_dir: str | Path):
    """The fine-tuned classifier in ``model_dir`` (eval mode, fp32, SDPA attention) and its tokenizer.

    A folder without a trained classification head (a converted or pre-trained BERT) would load
    with a random head and export a model that guesses: that is an error here.
    """
    from transformers import AutoModelForSequenceClassification

    from nbutils.checkpoints.model_folder import check_model_dir
    from nbutils.text.tokenization import check_vocab_matches, load_tokenizer

    model_dir = Path(model_dir)
    check_model_dir(model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, info = AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), attn_implementation="sdpa", output_loading_info=True)
    head_missing = [key for key in info["missing_keys"] if key.startswith("classifier.")]
    if head_missing:
        raise NbutilsError(
            f"{model_dir} is not a fine-tuned classifier: it has no classification head "
            f"({', '.join(sorted(head_missing))} missing)",
            fix="fine-tune it first (notebook 04 or `nbutils train`) and export runs/<run>/finetune/model",
        )
    tokenizer = load_tokenizer(model_dir)
    check_vocab_matches(model, tokenizer, model_dir)
    return model.float().eval(), tokenizer


def _sample_batches(tokenizer, max_positions: int):
    """Padded batches of odd shapes for checking the export: batch 1, a padded batch, full length."""
    import torch

    generator = torch.Generator().manual_seed(0)
    low, high = 1000, min(len(tokenizer), 8000)
    shapes = [(1, 2), (3, 17), (2, max_positions)]
    batches = []
    for batch, length in shapes:
        ids = torch.randint(low, high, (batch, length), generator=generator)
        mask = torch.ones_like(ids)
        if batch > 1:
            mask[1:, length // 2:] = 0  # padded rows: the attention mask must be honoured
            ids[1:, length // 2:] = tokenizer.pad_token_id or 0
        batches.append((ids, mask))
    return batches


def _max_logit_difference(model, session, batches) -> tuple[float, float]:
    """The largest |logit difference| between PyTorch and ``session``, and the largest |logit|."""
    import numpy as np
    import torch

    worst = scale = 0.0
    with torch.inference_mode():
        for ids, mask in batches:
            expected = model(input_ids=ids, attention_mask=mask).logits.numpy()
            got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})[0]
            worst = max(worst, float(np.abs(expected - got).max()))
            scale = max(scale, float(np.abs(expected).max()))
    return worst, scale


def _export_graph(model, path: Path, sample) -> None:
    import torch

    batch = torch.export.Dim("batch", min=1, max=4096)
    sequence = torch.export.Dim("sequence", min=2, max=model.config.max_position_embeddings)
    ids, mask = sample
    # The exporter logs every stage and warns about optional torchvision ops; keep the CLI readable.
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (), str(path),
            kwargs={"input_ids": ids, "attention_mask": mask},
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            opset_version=OPSET, dynamo=True, external_data=False, verbose=False,
        )


def export_onnx(model_dir: str | Path, out_dir: str | Path, *, int8: bool = True,
                overwrite: bool = False, check_texts: str | Path | None = None) -> dict:
    """Export the fine-tuned classifier in ``model_dir`` to ``out_dir`` (see the module doc).

    ``check_texts`` (a text file, one text per line, or a dataset) are the texts the int8 graph's
    labels are checked on (default: the dataset of the model's pipeline run; see
    :mod:`nbutils.inference.int8_check`). The folder appears only when everything succeeded
    (written aside, then renamed); an existing ``out_dir`` is refused unless ``overwrite``.
    Returns the report written to onnx_export.json.
    """
    import onnx
    import onnxruntime
    import torch

    from nbutils.core.io import atomic_dir, write_json

    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if out_dir.resolve() == model_dir.resolve():
        raise NbutilsError(f"{out_dir} is the model folder itself", fix="export into a new folder")
    model, tokenizer = load_classifier(model_dir)
    batches = _sample_batches(tokenizer, model.config.max_position_embeddings)
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        _export_graph(model, tmp / ONNX_FILE, batches[1])
        fp32_diff, scale = _max_logit_difference(model, onnx_session(tmp / ONNX_FILE), batches)
        if not fp32_diff <= FP32_TOLERANCE * max(1.0, scale):
            raise NbutilsError(
                f"the exported graph's logits differ from PyTorch's by {fp32_diff:.2e} (logits up to "
                f"{scale:.1f}; allowed {FP32_TOLERANCE:g} x max(1, that)); nothing was written to {out_dir}",
                fix="report this with your torch/onnxruntime versions",
            )
        report = {
            "source": str(model_dir.resolve()),
            "files": {"fp32": ONNX_FILE},
            "opset": OPSET,
            "exporter": "torch.onnx.export(dynamo=True)",
            "max_abs_logit_diff": {"fp32": fp32_diff},
            "max_abs_logit": scale,
            "checked_shapes": [list(ids.shape) for ids, _ in batches],
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__,
                         "onnxruntime": onnxruntime.__version__},
        }
        if int8:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Dynamic quantization: int8 weights, activations scaled per batch at run time; no
            # calibration data needed, and CPUs with VNNI run the int8 products natively.
            quantize_dynamic(tmp / ONNX_FILE, tmp / INT8_FILE, weight_type=QuantType.QInt8)
            report["files"]["int8"] = INT8_FILE
            report["max_abs_logit_diff"]["int8"] = _max_logit_difference(
                model, onnx_session(tmp / INT8_FILE), batches)[0]
        for name in _COPIED:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        if int8:
            report[CHECK_KEY] = _check_int8(model_dir, tmp, check_texts)
        write_json(tmp / REPORT_FILE, report)
    return report


def _check_int8(model_dir: Path, export_dir: Path, check_texts) -> dict:
    """The int8 graph's label agreement with the fp32 graph on real texts (module int8_check)."""
    from nbutils.inference.int8_check import (
        int8_agreement,
        texts_from_path,
        texts_from_run,
        unchecked,
    )

    found = texts_from_path(check_texts) if check_texts else texts_from_run(model_dir)
    if found is None:
        return unchecked(f"no texts to check it with (the model folder is not part of a pipeline run): "
                         f"nbutils export-onnx {model_dir} --check-texts FILE_OR_DATASET --overwrite")
    return int8_agreement(export_dir, *found)


def describe_check(check: dict) -> str:
    if not check["texts"]:
        return f"int8: not offered to --backend auto; its labels were not checked ({check['fix']})"
    verdict = "offered to --backend auto" if check["offered_to_auto"] else "NOT offered to --backend auto"
    return (f"int8: labels agree with fp32 on {check['agreement']:.2%} of {check['texts']} texts of "
            f"{check['source']} (bar {check['bar']:.1%}): {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nbutils export-onnx",
        description="Export a fine-tuned classifier to ONNX (fp32 + dynamic int8) for ONNX Runtime.")
    parser.add_argument("model", help="fine-tuned model folder (e.g. runs/<run>/finetune/model)")
    parser.add_argument("out", nargs="?", default=None,
                        help="new folder for model.onnx, model.int8.onnx and the tokenizer (default: the "
                             "cache, where `nbutils predict --backend auto|onnx|onnx-int8 --model MODEL` finds it)")
    parser.add_argument("--check-texts", default=None, metavar="PATH",
                        help="texts to check the int8 graph's labels against fp32 on: a text file (one per "
                             "line) or a dataset (its dev split); default: the dataset of the model's "
                             "pipeline run. --backend auto uses int8 only where they agree on >= 99.5%%")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8-quantized copy")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    args = parser.parse_args(argv)
    from nbutils.inference.backends import export_cache

    out = args.out
    if out is None:
        if not Path(args.model).is_dir():
            raise NbutilsError(f"{args.model}: model folder not found", fix="pass a fine-tuned model folder")
        out = export_cache(Path(args.model))
    report = export_onnx(args.model, out, int8=not args.no_int8, overwrite=args.overwrite,
                         check_texts=args.check_texts)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["max_abs_logit_diff"].items())
    print(f"wrote {', '.join(report['files'].values())} to {out} "
          f"(largest logits difference vs PyTorch: {diffs})")
    check = report.get(CHECK_KEY)
    if check:
        print(describe_check(check))
    model = args.model if args.out is None else out
    print(f"predict with: nbutils predict --backend auto (or onnx-int8) --model {model} TEXT ...")
    return 0
