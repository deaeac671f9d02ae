"""The files of an ``nbutils export-onnx`` folder and how prediction opens them: the graphs, an
ONNX Runtime session with the process's thread count, and whether the int8 graph is offered to
``--backend auto`` (the check recorded at export, :mod:`nbutils.inference.int8_check`)."""

from __future__ import annotations

import json
from pathlib import Path

from nbutils.core.errors import NbutilsError

ONNX_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "onnx_export.json"
BACKEND_FILES = {"onnx": ONNX_FILE, "onnx-int8": INT8_FILE}
CHECK_KEY = "int8_check"  # the report's entry: the int8 graph's label agreement with fp32 on real texts


def onnx_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no spinning between runs: idle ONNX Runtime threads that spin take the cores from whatever
    # runs next (PyTorch in auto's probe, other processes on a shared machine)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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


def why_not_offered(export_dir: Path) -> str:
    """Why ``auto`` leaves this export's int8 graph out ('' when it may try it)."""
    try:
        report = json.loads((export_dir / REPORT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        report = {}
    check = report.get(CHECK_KEY)
    if not isinstance(check, dict):
        return (f"its labels were never checked against fp32 (an export without {CHECK_KEY}): export again "
                "with --check-texts FILE")
    if check.get("offered_to_auto"):
        return ""
    if not check.get("texts"):
        return f"its labels were not checked at export: {check.get('fix', 'export again with --check-texts FILE')}"
    return (f"its labels agreed with fp32 on {check['agreement']:.2%} of {check['texts']} texts at export "
            f"(estimated {check['estimated_agreement']:.2%}; bar {check['bar']:.1%}); --backend onnx-int8 "
            "still runs it")
