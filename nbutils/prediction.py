"""Classify new texts with a fine-tuned model folder: ``nbutils.predict(texts, model_dir)``
(re-exported from :func:`nbutils.prediction.predict`).

Fast because it does the obvious things a per-text pipeline does not: tokenize all texts in one
batched call of the fast tokenizer, sort them by length so each batch pads only to its own
longest text, run batches under ``torch.inference_mode`` (bf16 on a GPU that has it), and put
the rows back in input order. Texts are cut exactly as in training (``finetune_config.json``
saved with the model), so an empty string or a 10,000-character article is just another row.

CLI: ``nbutils predict --model DIR [--file F] [--output CSV] [--backend torch|onnx|onnx-int8] [TEXT ...]``
(the ONNX backends read a folder written by ``nbutils export-onnx``, see ``nbutils.onnx_export``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from nbutils.errors import NbutilsError
from nbutils.weights import quiet_weight_files


class Predictor:
    """A loaded model + tokenizer + truncation settings, reusable across calls (e.g. a widget)."""

    @quiet_weight_files()  # no "Loading weights" bar under the prediction box at every headline
    def __init__(self, model_dir: str | Path, device: str = "auto"):
        from safetensors import SafetensorError

        from nbutils.device import choose_device
        from nbutils.model_folder import check_model_dir
        from nbutils.tokenization import check_vocab_matches, load_tokenizer

        self.model_dir = Path(model_dir)
        try:
            check_model_dir(self.model_dir)  # reads the weights' header
        except (SafetensorError, OSError) as err:
            raise _corrupt_weights(self.model_dir, err) from None
        # On a CPU the weights stay fp32 (the "predict" policy in nbutils.device); GPUs predict
        # in half precision.
        self.choice = choose_device(device, task="predict")
        model, info = _load_classifier(self.model_dir, self.choice.attn_implementation)
        if any(key.startswith("classifier.") for key in info.get("missing_keys", ())):
            # transformers would add a random head and answer with LABEL_0/LABEL_1 at ~50%
            raise NbutilsError(
                f"{self.model_dir} was never fine-tuned: it has no classifier weights (only the "
                "pre-trained encoder), so every answer would come from a random head",
                fix="fine-tune it first (`nbutils train --model ... --out OUT` or notebook 04), then "
                    "predict with OUT/model (runs/<run>/finetune/model)")
        if not getattr(model.config, "id2label", None) or model.config.num_labels < 2:
            raise NbutilsError(f"{self.model_dir} has no classification labels", fix="fine-tune it first")
        self.tokenizer = load_tokenizer(self.model_dir)
        check_vocab_matches(model, self.tokenizer, self.model_dir)
        self.model = model.to(self.choice.device, dtype=self.choice.torch_dtype).eval()
        self.label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.max_positions = model.config.max_position_embeddings
        self.train_config = training_cut(self.model_dir)

    def truncator(self, max_length: int | None, truncation: str | None):
        from nbutils.tokenization import Truncator

        if max_length is not None and max_length < 1:
            raise NbutilsError(f"max_length={max_length}: must be a positive number of tokens",
                               fix="omit it to cut texts as in training, or pass e.g. --max-length 128")
        if max_length is None and not self.train_config.get("max_length"):
            # guessing would cut texts differently from training without a word
            raise NbutilsError(
                f"{self.model_dir / 'finetune_config.json'} is missing: the max_length and truncation "
                "this model was fine-tuned with are unknown",
                fix="pass --max-length (max_length=) as used in training, or predict with the folder "
                    "`nbutils train` / notebook 04 wrote (it holds finetune_config.json)")
        length = max_length or self.train_config["max_length"]
        return Truncator(
            self.tokenizer,
            length,
            truncation or self.train_config.get("truncation", "head"),
            self.train_config.get("head_tokens", 0) if max_length is None else 0,
        )

    def logits(self, input_ids: list[list[int]], batch_size: int):
        """Logits in input order; batches are formed from length-sorted texts."""
        import numpy as np
        import torch

        out = np.empty((len(input_ids), len(self.label_names)), dtype=np.float32)
        with torch.inference_mode():
            for rows, ids, mask in padded_batches(input_ids, batch_size, self.tokenizer.pad_token_id or 0):
                logits = self.model(input_ids=torch.from_numpy(ids).to(self.choice.device),
                                    attention_mask=torch.from_numpy(mask).to(self.choice.device)).logits
                out[rows] = logits.float().cpu().numpy()
        return out

    def __call__(self, texts, *, batch_size: int = 64, max_length: int | None = None,
                 truncation: str | None = None):
        import pandas as pd

        texts = _as_texts(texts)
        if batch_size < 1:
            raise NbutilsError(f"batch_size={batch_size}", fix="use a positive batch size")
        if not texts:
            columns = ["text", "label", "confidence", *[f"prob_{n}" for n in self.label_names]]
            return pd.DataFrame(columns=columns + ["n_tokens", "truncated", "empty"])
        import numpy as np

        from nbutils.tokenization import char_chunks

        cut = self.truncator(max_length, truncation)
        logits = np.empty((len(texts), len(self.label_names)), dtype=np.float32)
        n_tokens = np.empty(len(texts), dtype=np.int64)
        cut_tokens = np.empty(len(texts), dtype=np.int64)
        # Chunks of at most 4,096 texts and ~1M characters: the whole-text token lists (needed
        # for n_tokens) of 100k long articles at once would take gigabytes.
        for start, end in char_chunks(texts):
            full = self.tokenizer(texts[start:end], add_special_tokens=True, truncation=False, verbose=False,
                                  return_attention_mask=False, return_token_type_ids=False)["input_ids"]
            input_ids = [cut.cut(ids) for ids in full]
            logits[start:end] = self.logits(input_ids, batch_size)
            n_tokens[start:end] = [len(ids) for ids in full]
            cut_tokens[start:end] = [len(ids) for ids in input_ids]
        frame = prediction_frame(texts, logits, self.label_names)
        frame = frame.rename(columns={"pred": "label"})
        frame["n_tokens"] = n_tokens
        frame["truncated"] = n_tokens > cut_tokens
        # an empty or blank text still gets a label (the model's prior), which means nothing: flag it
        frame["empty"] = [not t.strip() for t in texts]
        return frame


def prediction_frame(texts, logits, label_names, labels=None):
    """Rows of text, (label), pred, confidence, prob_<name>... from logits."""
    import numpy as np
    import pandas as pd

    logits = np.asarray(logits, dtype=np.float64)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    pred = probs.argmax(-1)
    text = np.empty(len(texts), dtype=object)  # the caller's strings, not an Arrow copy of them
    text[:] = list(texts)
    frame = pd.DataFrame({"text": text})
    if labels is not None:
        frame["label"] = [label_names[i] for i in labels]
    frame["pred"] = [label_names[i] for i in pred]
    frame["confidence"] = probs.max(-1)
    for i, name in enumerate(label_names):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


def _load_classifier(model_dir: Path, attn_implementation):
    """The model and transformers' loading info; a truncated or corrupt weights file is named."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), attn_implementation=attn_implementation, output_loading_info=True)
    except (SafetensorError, OSError, RuntimeError, ValueError, EOFError) as err:
        raise _corrupt_weights(model_dir, err) from None


def _corrupt_weights(model_dir: Path, err: Exception) -> NbutilsError:
    weights = next((model_dir / n for n in ("model.safetensors", "pytorch_model.bin")
                    if (model_dir / n).is_file()), model_dir)
    size = f" ({weights.stat().st_size:,} bytes)" if weights.is_file() else ""
    return NbutilsError(f"{weights}{size} cannot be read ({type(err).__name__}: {str(err)[:200]}): "
                        "the file is truncated or corrupt (an interrupted copy or download?)",
                        fix="copy or download the model folder again and compare the file size")


def _as_texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    return ["" if t is None else str(t) for t in texts]


class OnnxPredictor(Predictor):
    """``Predictor`` (same tokenization, truncation, batching and output table) whose forward
    pass is an ONNX Runtime session over ``model.onnx`` or ``model.int8.onnx``."""

    def __init__(self, export_dir: str | Path, backend: str = "onnx", threads: int | None = None):
        import torch
        from transformers import AutoConfig

        from nbutils.onnx_export import onnx_file, onnx_session
        from nbutils.tokenization import load_tokenizer

        self.model_dir = Path(export_dir)
        self.backend = backend
        path = onnx_file(self.model_dir, backend)
        config = AutoConfig.from_pretrained(str(self.model_dir))
        if not getattr(config, "id2label", None) or config.num_labels < 2:
            raise NbutilsError(f"{self.model_dir}/config.json has no classification labels",
                               fix="export a fine-tuned model")
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.max_positions = config.max_position_embeddings
        self.tokenizer = load_tokenizer(self.model_dir)
        self.train_config = training_cut(self.model_dir)
        # Follow the process's thread policy (OMP_NUM_THREADS / torch.set_num_threads) rather than
        # ONNX Runtime's default of one spinning thread per core, which fights other jobs.
        self.threads = threads or torch.get_num_threads()
        self.session = onnx_session(path, self.threads)

    def logits(self, input_ids: list[list[int]], batch_size: int):
        import numpy as np

        out = np.empty((len(input_ids), len(self.label_names)), dtype=np.float32)
        for rows, ids, mask in padded_batches(input_ids, batch_size, self.tokenizer.pad_token_id or 0):
            out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def training_cut(model_dir: Path) -> dict:
    """How training cut texts (``finetune_config.json`` next to the model: max_length,
    truncation, head_tokens); empty when the folder has none."""
    cfg_path = model_dir / "finetune_config.json"
    return json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}


def padded_batches(input_ids: list[list[int]], batch_size: int, pad_id: int):
    """``(rows, ids, mask)`` per batch: texts sorted by length (stable) so a batch pads little,
    padded to its longest, as int64 arrays; ``rows`` are the batch's indices into ``input_ids``."""
    import numpy as np

    order = np.argsort([len(ids) for ids in input_ids], kind="stable")
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        width = max(len(input_ids[i]) for i in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            ids[r, : len(input_ids[i])] = input_ids[i]
            mask[r, : len(input_ids[i])] = 1
        yield rows, ids, mask


BACKENDS = ("torch", "onnx", "onnx-int8")


@functools.lru_cache(maxsize=2)
def load_predictor(model_dir: str, device: str = "auto", backend: str = "torch") -> Predictor:
    """A cached Predictor: a prediction widget does not reload the model on every keystroke.

    ``backend="onnx"``/``"onnx-int8"`` reads a folder written by ``nbutils export-onnx`` and runs
    ONNX Runtime on the CPU (``device`` is then ignored)."""
    if backend == "torch":
        return Predictor(model_dir, device)
    if backend not in BACKENDS:
        raise NbutilsError(f"unknown backend {backend!r}", fix=f"use one of {', '.join(BACKENDS)}")
    return OnnxPredictor(model_dir, backend)


def predict(
    texts: str | Sequence[str],
    model_dir: str | Path,
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    device: str = "auto",
    truncation: str | None = None,
    backend: str = "torch",
):
    """Classify ``texts``: a DataFrame in input order with ``text, label, confidence,
    prob_<name>..., n_tokens, truncated``. ``max_length``/``truncation`` default to the
    settings the model was fine-tuned with. ``backend="onnx"`` or ``"onnx-int8"`` runs an
    ``nbutils export-onnx`` folder with ONNX Runtime (same tokenization and output)."""
    predictor = load_predictor(str(Path(model_dir).resolve()), device, backend)
    return predictor(texts, batch_size=batch_size, max_length=max_length, truncation=truncation)



def examples_table(texts: Sequence[str], model_dir: str | Path, *, device: str = "auto", max_chars: int = 40):
    """:func:`predict` on ``texts`` as notebook 04 shows it: the label, confidence and token count
    per text, long texts cut to ``max_chars`` characters for display."""
    table = predict(texts, model_dir, device=device)
    table["text"] = [t if len(t) <= max_chars else t[: max_chars - 3] + "..." for t in table["text"]]
    return table[["text", "label", "confidence", "n_tokens", "truncated"]]


def classify_box(model_dir: str | Path, *, device: str = "auto", top: int = 3):
    """A text box that classifies what is typed into it (on Enter) with the model in ``model_dir``
    and prints the label, its confidence and the ``top`` most likely classes (JupyterLab)."""
    import ipywidgets as widgets

    box = widgets.Text(placeholder="输入新闻标题，回车分类", continuous_update=False,  # classify on Enter
                       layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def classify(change):
        row = predict([box.value], model_dir, device=device).iloc[0]
        probs = row.filter(like="prob_").astype(float).sort_values(ascending=False).head(top)
        out.clear_output()
        with out:
            print(f"{row['label']}  ({row['confidence']:.3f})")
            print("  ".join(f"{k.removeprefix('prob_')} {v:.3f}" for k, v in probs.items()))

    box.observe(classify, names="value")
    return widgets.VBox([box, out])

def _read_lines(path: str) -> list[str]:
    if path == "-":
        return [line.rstrip("\r\n") for line in sys.stdin]
    file = Path(path)
    if not file.exists():
        raise NbutilsError(f"{file}: file not found", fix="pass a text file with one text per line")
    if file.is_dir():
        raise NbutilsError(f"{file} is a folder", fix="pass a text file with one text per line")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise NbutilsError(f"{file}: not UTF-8 (byte {err.start})", fix="save the file as UTF-8") from None
    # split on newlines only: str.splitlines() also splits on U+2028, \x1c..\x1e and friends,
    # which can occur inside Chinese text and would shift every output row against its input line
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return lines[:-1] if lines and lines[-1] == "" else lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="nbutils predict", description="Classify texts with a fine-tuned model.")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    parser.add_argument("--model", required=True, help="fine-tuned model folder (e.g. runs/<run>/finetune/model)")
    parser.add_argument("--file", help="a UTF-8 file with one text per line ('-' = stdin)")
    parser.add_argument("--output", help="write all columns as CSV here instead of printing a table")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per text (default: as in training, from finetune_config.json)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu | mps (default: auto)")
    parser.add_argument("--backend", choices=BACKENDS, default="torch",
                        help="torch: a fine-tuned model folder; onnx / onnx-int8: a folder written by "
                             "`nbutils export-onnx` (ONNX Runtime on the CPU)")
    args = parser.parse_args(argv)
    from_file = _read_lines(args.file) if args.file else []
    texts = list(args.texts) + from_file
    if not texts:
        if args.file:
            raise NbutilsError(f"no texts to classify: --file {args.file} is empty",
                               fix="pass a UTF-8 file with one text per line")
        raise NbutilsError("no texts to classify", fix="pass TEXT arguments or --file")
    if args.max_length is not None and args.max_length < 1:
        raise NbutilsError(f"--max-length {args.max_length}: must be a positive number of tokens",
                           fix="omit it to cut texts as in training, or pass e.g. --max-length 128")
    frame = predict(texts, args.model, batch_size=args.batch_size, max_length=args.max_length,
                    device=args.device, backend=args.backend)
    if args.output:
        from nbutils.io import atomic_file

        with atomic_file(args.output, overwrite=args.overwrite) as tmp:
            frame.to_csv(tmp, index=False, encoding="utf-8")
        print(f"wrote {len(frame)} predictions to {args.output}")
    else:
        shown = frame[["label", "confidence", "text"]].copy()
        shown["text"] = [t if len(t) <= 60 else t[:57] + "..." for t in shown["text"]]
        shown.loc[frame["empty"].to_numpy(dtype=bool), "text"] = "(empty text: the label means nothing)"
        shown["confidence"] = shown["confidence"].map("{:.3f}".format)
        print(shown.to_string(index=False))
        if frame["empty"].any():
            print(f"note: {int(frame['empty'].sum())} empty or blank text(s); see the 'empty' column of --output")
    return 0
