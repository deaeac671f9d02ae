"""Does quantizing less of a model keep more of its labels? Dynamic int8 variants of one ONNX graph.

Each variant quantizes a different part of the fp32 graph (``onnxruntime.quantization.quantize_dynamic``:
everything, MatMuls only, all but the feed-forward outputs / attention outputs / first or last
layers, one layer alone, per-channel weights, unsigned weights) and classifies the same test
titles; the script prints each variant's label agreement with the fp32 graph and its speed ratio
to it (one pass over the titles each, batches of 64 sorted by length, in one process).

    python benchmarks/bench_int8_variants.py --random 768x12 --n 1000          # bert-base size, random
    python benchmarks/bench_int8_variants.py --export DIR --n 1000             # an existing export

The random model is made as in ``bench_backends.py`` (real vocabulary, random weights, spread head).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from nbutils.checkpoints.random_bert import make_random_classifier
from nbutils.core.paths import REPO_ROOT
from nbutils.data.dataset import load_dataset
from nbutils.inference.onnx_export import export_onnx
from nbutils.inference.onnx_files import onnx_session
from nbutils.inference.predict import padded_batches
from nbutils.text.tokenization import load_tokenizer

ROLES = ("query", "key", "value", "attention output", "feed-forward in", "feed-forward out")


def layer_matmuls(graph_path: Path) -> list[list[str]]:
    """Names of the weight MatMuls per encoder layer, in graph order (six per BERT layer)."""
    model = onnx.load(str(graph_path))
    weights = {init.name for init in model.graph.initializer}
    names = [n.name for n in model.graph.node if n.op_type == "MatMul" and any(i in weights for i in n.input)]
    if len(names) % len(ROLES):
        raise SystemExit(f"{len(names)} weight MatMuls: not {len(ROLES)} per layer, cannot group them")
    return [names[i:i + len(ROLES)] for i in range(0, len(names), len(ROLES))]


def variants(layers: list[list[str]]) -> dict[str, dict]:
    role = lambda k: [layer[k] for layer in layers]  # noqa: E731
    everything_but = lambda keep: [n for i, layer in enumerate(layers) if i not in keep for n in layer]  # noqa: E731
    last = len(layers) - 1
    return {
        "everything (the export's default)": {},
        "MatMuls only (embeddings fp32)": {"op_types_to_quantize": ["MatMul"]},
        "all but feed-forward outputs": {"nodes_to_exclude": role(5)},
        "all but attention outputs": {"nodes_to_exclude": role(3)},
        "all but both outputs": {"nodes_to_exclude": role(3) + role(5)},
        "all but first and last layer": {"nodes_to_exclude": layers[0] + layers[last]},
        "all but the last two layers": {"nodes_to_exclude": [n for layer in layers[-2:] for n in layer]},
        "first layer only": {"nodes_to_exclude": everything_but({0})},
        "middle layer only": {"nodes_to_exclude": everything_but({len(layers) // 2})},
        "last layer only": {"nodes_to_exclude": everything_but({last})},
        "per-channel weights, reduced range": {"per_channel": True, "reduce_range": True},
        "unsigned weights (u8)": {"weight_type": QuantType.QUInt8},
    }


def classify(path: Path, ids, threads: int) -> tuple[np.ndarray, float]:
    session = onnx_session(path, threads)
    out = []
    rows_all = []
    start = time.perf_counter()
    for rows, batch, mask in padded_batches(ids, 64, 0):
        out.append(session.run(None, {"input_ids": batch, "attention_mask": mask})[0])
        rows_all.append(rows)
    seconds = time.perf_counter() - start
    logits = np.empty((len(ids), out[0].shape[1]), dtype=np.float32)
    for rows, block in zip(rows_all, out, strict=True):
        logits[rows] = block
    return logits, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(REPO_ROOT / "data/raw/thucnews-titles"))
    parser.add_argument("--vocab", default=str(REPO_ROOT / "data/raw/bert-base-chinese-vocab/vocab.txt"))
    parser.add_argument("--export", default="", help="an `nbutils export-onnx` folder (else --random)")
    parser.add_argument("--random", default="768x12", help="HIDDENxLAYERS of a random BERT to export")
    parser.add_argument("--n", type=int, default=1000, help="test titles (drawn evenly)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    ds = load_dataset(args.data)
    test = ds.texts("test")
    rows = np.sort(np.random.default_rng(0).permutation(len(test))[: min(args.n, len(test))])
    with tempfile.TemporaryDirectory() as tmp:
        export = Path(args.export) if args.export else Path(tmp) / "export"
        if not args.export:
            hidden, layers = (int(x) for x in args.random.split("x"))
            make_random_classifier(args.vocab, ds.label_names, Path(tmp) / "model", hidden_size=hidden,
                                   num_layers=layers, num_heads=max(1, hidden // 64), intermediate_size=4 * hidden,
                                   head_std=2.0, prediction_max_length=512)
            export_onnx(Path(tmp) / "model" / "clf", export, int8=False)
        tokenizer = load_tokenizer(export)
        ids = tokenizer([test[i] for i in rows], truncation=True, max_length=512)["input_ids"]
        reference, ref_s = classify(export / "model.onnx", ids, args.threads)
        print(f"{len(ids)} test titles, {args.threads} thread(s); fp32 graph {len(ids) / ref_s:.1f} texts/s", flush=True)
        for name, options in variants(layer_matmuls(export / "model.onnx")).items():
            path = Path(tmp) / "variant.onnx"
            quantize_dynamic(export / "model.onnx", path, **{"weight_type": QuantType.QInt8, **options})
            logits, seconds = classify(path, ids, args.threads)
            agree = float((logits.argmax(-1) == reference.argmax(-1)).mean())
            print(f"  {name:<38} labels agree {agree:.2%}   speed x{ref_s / seconds:.2f} fp32", flush=True)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
