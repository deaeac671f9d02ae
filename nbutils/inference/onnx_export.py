"""Serve a fine-tuned classifier on CPUs with ONNX Runtime: export it, optionally int8, predict.

``export_onnx(model_dir, out_dir)`` writes a folder a server can load without PyTorch weights:

    model.onnx          fp32 graph from ``torch.onnx.export(dynamo=True)`` (torch.export based;
                        the TorchScript exporter is deprecated), dynamic batch and sequence axes
    model.int8.onnx     the same graph with int8 weights (``onnxruntime.quantization``'s
                        dynamic quantization: activations quantized per batch at run time)
    config.json, tokenizer files, finetune_config.json, calibration.json   copied from the
                        model folder, so texts are tokenized and cut, and confidences
                        calibrated, exactly as ``nbutils predict`` does
    onnx_export.json    what was exported, versions, and the checked logits difference

Export checks its own result: ONNX Runtime and PyTorch run the same padded batches and the
largest logits difference is recorded (an fp32 export further off than ``FP32_TOLERANCE`` is
an error). ``nbutils.inference.predict.OnnxPredictor`` is its ``Predictor`` with the forward pass
swapped for an ONNX Runtime session (:func:`onnx_session`);
``nbutils.predict(texts, export_dir, backend="onnx-int8")`` uses it.

CLI: ``nbutils export-onnx MODEL [OUT] [--no-int8] [--overwrite]`` and
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

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "onnx_export.json"
BACKEND_FILES = {"onnx": ONNX_FILE, "onnx-int8": INT8_FILE}
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


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
                overwrite: bool = False) -> dict:
    """Export the fine-tuned classifier in ``model_dir`` to ``out_dir`` (see the module doc).

    The folder appears only when everything succeeded (written aside, then renamed); an existing
    ``out_dir`` is refused unless ``overwrite``. Returns the report written to onnx_export.json.
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
        write_json(tmp / REPORT_FILE, report)
    return report


def onnx_file(export_dir: Path, backend: str) -> Path:
    if backend not in BACKEND_FILES:
        raise NbutilsError(f"unknown ONNX backend {backend!r}", fix=f"use one of {', '.join(BACKEND_FILES)}")
    if not export_dir.is_dir():
        raise NbutilsError(f"{export_dir}: folder not found",
                           fix="export a fine-tuned model first: nbutils export-onnx MODEL OUT")
    path = export_dir / BACKEND_FILES[backend]
    if path.is_file():
        return path
    if (export_dir / "model.safetensors").is_file() or (export_dir / "pytorch_model.bin").is_file():
        fix = f"this is a PyTorch model folder: nbutils export-onnx {export_dir} OUT, then --model OUT"
    elif backend == "onnx-int8":
        fix = "export again without --no-int8, or use --backend onnx"
    else:
        fix = "export the fine-tuned model: nbutils export-onnx MODEL OUT"
    raise NbutilsError(f"{export_dir}: no {path.name}", fix=fix)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="nbutils export-onnx",
        description="Export a fine-tuned classifier to ONNX (fp32 + dynamic int8) for ONNX Runtime.")
    parser.add_argument("model", help="fine-tuned model folder (e.g. runs/<run>/finetune/model)")
    parser.add_argument("out", nargs="?", default=None,
                        help="new folder for model.onnx, model.int8.onnx and the tokenizer (default: the "
                             "cache, where `nbutils predict --backend auto|onnx|onnx-int8 --model MODEL` finds it)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8-quantized copy")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT folder")
    args = parser.parse_args(argv)
    from nbutils.inference.backends import export_cache

    out = args.out
    if out is None:
        if not Path(args.model).is_dir():
            raise NbutilsError(f"{args.model}: model folder not found", fix="pass a fine-tuned model folder")
        out = export_cache(Path(args.model))
    report = export_onnx(args.model, out, int8=not args.no_int8, overwrite=args.overwrite)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["max_abs_logit_diff"].items())
    print(f"wrote {', '.join(report['files'].values())} to {out} "
          f"(largest logits difference vs PyTorch: {diffs})")
    model = args.model if args.out is None else out
    print(f"predict with: nbutils predict --backend auto (or onnx-int8) --model {model} TEXT ...")
    return 0
