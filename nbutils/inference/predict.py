"""Classify new texts with a fine-tuned model folder: ``nbutils.predict(texts, model_dir)``
(re-exported from :func:`nbutils.inference.predict.predict`).

Fast because it does the obvious things a per-text pipeline does not: tokenize all texts in one
batched call of the fast tokenizer, sort them by length so each batch pads only to its own
longest text, run batches under ``torch.inference_mode`` (bf16 on a GPU that has it), and put
the rows back in input order. Texts are cut exactly as in training (``finetune_config.json``
saved with the model), so an empty string or a 10,000-character article is just another row.

Memory is bounded by a chunk (at most 4,096 texts / ~250k characters), not by the input: a list
is tokenized and run chunk by chunk, and a file (``predict_file``, ``nbutils predict --file``)
is also read and written chunk by chunk (``Predictor.frames`` -> ``write_predictions``: rows go
to a temporary file renamed into place at the end), so 100k long articles take the memory of 10k.

CLI: ``nbutils predict --model DIR [--file F] [--output CSV] [--backend torch|onnx|onnx-int8] [TEXT ...]``
(the ONNX backends read a folder written by ``nbutils export-onnx``, see ``nbutils.inference.onnx_export``).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from nbutils.checkpoints.weights import quiet_weight_files
from nbutils.core.errors import NbutilsError
from nbutils.runtime.memory import trim_heap


class Predictor:
    """A loaded model + tokenizer + truncation settings, reusable across calls (e.g. a widget)."""

    @quiet_weight_files()  # no "Loading weights" bar under the prediction box at every headline
    def __init__(self, model_dir: str | Path, device: str = "auto"):
        from safetensors import SafetensorError

        from nbutils.checkpoints.model_folder import check_model_dir
        from nbutils.runtime.device import choose_device
        from nbutils.text.tokenization import check_vocab_matches, load_tokenizer

        self.model_dir = Path(model_dir)
        try:
            check_model_dir(self.model_dir)  # reads the weights' header
        except (SafetensorError, OSError) as err:
            raise _corrupt_weights(self.model_dir, err) from None
        # On a CPU the weights stay fp32 (the "predict" policy in nbutils.runtime.device); GPUs predict
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
        self.thresholds = decision_thresholds(model.config, self.train_config, self.label_names)

    def truncator(self, max_length: int | None, truncation: str | None):
        from nbutils.text.tokenization import Truncator

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
        """The whole table for texts in memory (a list); for a file use :meth:`frames` and
        :func:`write_predictions`, which hold one chunk at a time."""
        import pandas as pd

        texts = _as_texts(texts)
        if batch_size < 1:
            raise NbutilsError(f"batch_size={batch_size}", fix="use a positive batch size")
        if not texts:
            return self.empty_frame()
        from nbutils.text.tokenization import char_chunks

        cut = self.truncator(max_length, truncation)
        frames = [self.chunk_frame(texts[start:end], cut, batch_size) for start, end in char_chunks(texts)]
        return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)

    def frames(self, texts: Iterable, *, batch_size: int = 64, max_length: int | None = None,
               truncation: str | None = None, max_texts: int | None = None,
               max_chars: int | None = None) -> Iterator:
        """Tables of consecutive chunks of ``texts`` (any iterable, e.g. a file's lines), in input
        order, reading the next chunk only when the previous table has been taken: memory holds
        one chunk (at most ``max_texts`` texts and, beyond its first text, ``max_chars``
        characters; default ``nbutils.text.tokenization.CHUNK_TEXTS``/``CHUNK_CHARS``), however many
        texts there are. The chunks are those :meth:`__call__` forms
        from a list (:func:`nbutils.text.tokenization.char_chunks`), so the rows are the same."""
        from nbutils.text.tokenization import CHUNK_CHARS, CHUNK_TEXTS, iter_chunks

        if batch_size < 1:
            raise NbutilsError(f"batch_size={batch_size}", fix="use a positive batch size")
        cut = self.truncator(max_length, truncation)
        for chunk in iter_chunks((_as_text(t) for t in texts), max_texts or CHUNK_TEXTS, max_chars or CHUNK_CHARS):
            yield self.chunk_frame(chunk, cut, batch_size)

    def empty_frame(self):
        import pandas as pd

        multi = ["scores", "n_labels"] if self.thresholds is not None else []
        columns = ["text", "label", *multi, "confidence", *[f"prob_{n}" for n in self.label_names]]
        return pd.DataFrame(columns=columns + ["n_tokens", "truncated", "empty"])

    def chunk_frame(self, texts: list[str], cut, batch_size: int):
        """The table of one chunk: tokenized in one call (whole texts, for ``n_tokens``), cut as
        in training, sorted by length into padded batches, rows in input order."""
        import numpy as np

        full = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        input_ids = [cut.cut(ids) for ids in full]
        n_tokens = np.array([len(ids) for ids in full], dtype=np.int64)
        cut_tokens = np.array([len(ids) for ids in input_ids], dtype=np.int64)
        del full
        frame = prediction_frame(texts, self.logits(input_ids, batch_size), self.label_names,
                                 thresholds=self.thresholds)
        frame = frame.rename(columns={"pred": "label"})
        frame["n_tokens"] = n_tokens
        frame["truncated"] = n_tokens > cut_tokens
        # an empty or blank text still gets a label (the model's prior), which means nothing: flag it
        frame["empty"] = [not t.strip() for t in texts]
        # the chunk's token lists and activations are freed: give their pages back, or the heap's
        # fragments make the resident memory creep up with every chunk (nbutils.runtime.memory)
        trim_heap()
        return frame


# joins the labels of one text in a table cell (multi-label predictions and true labels)
LABEL_JOIN = "|"
# --- multi-label decisions: a label is given when its sigmoid score reaches its threshold
THRESHOLD_RULES = ("per_label", "global", "fixed")
FIXED_THRESHOLD = 0.5


def sigmoid(logits):
    """Independent per-label probabilities of multi-label logits (float64, no overflow warning)."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def threshold_vector(thresholds: dict, rule: str, label_names: Sequence[str]):
    """One threshold per label under ``rule`` (``per_label`` | ``global`` | ``fixed``), from the
    thresholds fine-tuning chose on dev (``nbutils.training.metrics.choose_thresholds``)."""
    import numpy as np

    if rule not in THRESHOLD_RULES:
        raise NbutilsError(f"unknown threshold rule {rule!r}", fix=f"use one of {', '.join(THRESHOLD_RULES)}")
    if rule == "per_label":
        return np.array([thresholds["per_label"][str(n)] for n in label_names], dtype=np.float64)
    return np.full(len(label_names), float(thresholds[rule]), dtype=np.float64)




def prediction_frame(texts, logits, label_names, labels=None, thresholds=None):
    """Rows of text, (label), pred, confidence, prob_<name>... from logits.

    With ``thresholds`` (one per label) the logits are multi-label: ``prob_<name>`` are independent
    sigmoid scores, ``pred`` the labels at or above their threshold joined by ``|`` (highest score
    first; empty when none passes), ``scores`` the same labels with their scores (JSON),
    ``n_labels`` their number and ``confidence`` the highest score; ``labels`` are 0/1 rows then.
    """
    import numpy as np
    import pandas as pd

    if thresholds is not None:
        return _multi_label_frame(texts, logits, label_names, labels, thresholds)
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


def _multi_label_frame(texts, logits, label_names, labels, thresholds):
    import numpy as np
    import pandas as pd

    scores = sigmoid(logits)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.shape != (len(label_names),):
        raise NbutilsError(f"{len(thresholds)} thresholds for {len(label_names)} labels",
                           fix="pass one threshold per label, in the model's label order")
    text = np.empty(len(texts), dtype=object)
    text[:] = list(texts)
    frame = pd.DataFrame({"text": text})
    if labels is not None:
        frame["label"] = [LABEL_JOIN.join(label_names[i] for i in np.flatnonzero(np.asarray(row) > 0.5))
                          for row in labels]
    chosen = [sorted(np.flatnonzero(row >= thresholds), key=lambda i, row=row: -row[i]) for row in scores]
    frame["pred"] = [LABEL_JOIN.join(label_names[i] for i in ids) for ids in chosen]
    frame["scores"] = [json.dumps({label_names[i]: round(float(row[i]), 4) for i in ids}, ensure_ascii=False)
                       for ids, row in zip(chosen, scores, strict=True)]
    frame["n_labels"] = [len(ids) for ids in chosen]
    frame["confidence"] = scores.max(-1) if scores.shape[-1] else np.zeros(len(scores))
    for i, name in enumerate(label_names):
        frame[f"prob_{name}"] = scores[:, i]
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
    return [_as_text(t) for t in texts]


def _as_text(text) -> str:
    return "" if text is None else str(text)


class OnnxPredictor(Predictor):
    """``Predictor`` (same tokenization, truncation, batching and output table) whose forward
    pass is an ONNX Runtime session over ``model.onnx`` or ``model.int8.onnx``."""

    def __init__(self, export_dir: str | Path, backend: str = "onnx", threads: int | None = None):
        import torch
        from transformers import AutoConfig

        from nbutils.inference.onnx_export import onnx_file, onnx_session
        from nbutils.text.tokenization import load_tokenizer

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
        self.thresholds = decision_thresholds(config, self.train_config, self.label_names)
        # Follow the process's thread policy (OMP_NUM_THREADS / torch.set_num_threads) rather than
        # ONNX Runtime's default of one spinning thread per core, which fights other processes.
        self.threads = threads or torch.get_num_threads()
        self.session = onnx_session(path, self.threads)

    def logits(self, input_ids: list[list[int]], batch_size: int):
        import numpy as np

        out = np.empty((len(input_ids), len(self.label_names)), dtype=np.float32)
        for rows, ids, mask in padded_batches(input_ids, batch_size, self.tokenizer.pad_token_id or 0):
            out[rows] = self.session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        return out


def decision_thresholds(model_config, train_config: dict, label_names: Sequence[str]):
    """A multi-label model's threshold per label (those fine-tuning chose on dev under its rule,
    saved in ``finetune_config.json``); ``None`` for a single-label model (the argmax decides)."""
    if getattr(model_config, "problem_type", None) != "multi_label_classification":
        return None
    info = train_config.get("multi_label")
    if not info:
        import numpy as np

        print(f"note: no thresholds saved with this multi-label model; every label is given from score "
              f"{FIXED_THRESHOLD}")
        return np.full(len(label_names), FIXED_THRESHOLD)
    return threshold_vector(info["thresholds"], info["threshold_rule"], label_names)


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
    prob_<name>..., n_tokens, truncated``. For a multi-label model ``label`` holds the labels whose
    score reaches the threshold chosen on dev, joined by ``|`` (highest score first, empty when
    none does), ``scores`` the same labels with their scores (JSON), ``n_labels`` their number,
    ``confidence`` the highest score and ``prob_<name>`` each label's sigmoid score.
    ``max_length``/``truncation`` default to the
    settings the model was fine-tuned with. ``backend="onnx"`` or ``"onnx-int8"`` runs an
    ``nbutils export-onnx`` folder with ONNX Runtime (same tokenization and output)."""
    predictor = load_predictor(str(Path(model_dir).resolve()), device, backend)
    return predictor(texts, batch_size=batch_size, max_length=max_length, truncation=truncation)



def examples_table(texts: Sequence[str], model_dir: str | Path, *, device: str = "auto", max_chars: int = 40):
    """:func:`predict` on ``texts`` as notebook 04 shows it: the label, confidence and token count
    per text, long texts cut to ``max_chars`` characters for display."""
    table = predict(texts, model_dir, device=device)
    table["text"] = [t if len(t) <= max_chars else t[: max_chars - 3] + "..." for t in table["text"]]
    multi = ["scores"] if "scores" in table.columns else []
    return table[["text", "label", *multi, "confidence", "n_tokens", "truncated"]]


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

def write_predictions(frames: Iterable, output: str | Path, *, overwrite: bool = False) -> int:
    """Write prediction tables (e.g. :meth:`Predictor.frames`) to one CSV as they come; returns
    the number of rows. The rows go to a hidden temporary file next to ``output``, renamed to
    ``output`` after the last table: an error or Ctrl-C on the way removes it and leaves no
    half-written file, and an earlier ``output`` is replaced only with ``overwrite``."""
    from nbutils.core.io import atomic_file

    rows = 0
    with atomic_file(output, overwrite=overwrite) as tmp, open(tmp, "w", encoding="utf-8", newline="") as file:
        for frame in frames:
            frame.to_csv(file, index=False, header=rows == 0, lineterminator="\n")
            rows += len(frame)
        if rows == 0:
            raise NbutilsError(f"no texts to classify: nothing written to {output}",
                               fix="pass a file with at least one line")
    return rows


def predict_file(
    path: str | Path,
    model_dir: str | Path,
    output: str | Path,
    *,
    overwrite: bool = False,
    batch_size: int = 64,
    max_length: int | None = None,
    device: str = "auto",
    truncation: str | None = None,
    backend: str = "torch",
) -> int:
    """Classify every line of a UTF-8 text file (one text per line) into the CSV ``output``
    (the columns of :func:`predict`, row i = line i); returns the number of rows. The file is
    read, predicted and written a chunk at a time (:meth:`Predictor.frames`,
    :func:`write_predictions`), so memory does not grow with the number of lines."""
    from nbutils.data.dataset import text_lines

    lines = text_lines(path)
    _refuse_existing(output, overwrite)
    predictor = load_predictor(str(Path(model_dir).resolve()), device, backend)
    return write_predictions(predictor.frames(lines, batch_size=batch_size, max_length=max_length,
                                              truncation=truncation), output, overwrite=overwrite)


def _refuse_existing(output: str | Path | None, overwrite: bool) -> None:
    """Before any work: an earlier result is replaced only when asked (checked again at the end)."""
    if output and not overwrite and Path(output).exists():
        raise NbutilsError(f"{output} already exists", fix="choose another path or pass --overwrite")


def _stdin_lines() -> Iterator[str]:
    for line in sys.stdin:
        yield line.rstrip("\r\n")


def _print_tables(frames: Iterable) -> None:
    """The label, confidence and (cut) text of each row, a chunk's table at a time."""
    empty = 0
    for i, frame in enumerate(frames):
        scores = ["scores"] if "scores" in frame.columns else []  # multi-label: each given label's score
        shown = frame[["label", *scores, "confidence", "text"]].copy()
        shown["text"] = [t if len(t) <= 60 else t[:57] + "..." for t in shown["text"]]
        shown.loc[frame["empty"].to_numpy(dtype=bool), "text"] = "(empty text: the label means nothing)"
        shown["confidence"] = shown["confidence"].map("{:.3f}".format)
        print(shown.to_string(index=False, header=i == 0))
        empty += int(frame["empty"].sum())
    if empty:
        print(f"note: {empty} empty or blank text(s); see the 'empty' column of --output")


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
    if args.max_length is not None and args.max_length < 1:
        raise NbutilsError(f"--max-length {args.max_length}: must be a positive number of tokens",
                           fix="omit it to cut texts as in training, or pass e.g. --max-length 128")
    from nbutils.data.dataset import text_lines

    # the file is read as the predictions need it (a chunk at a time), never whole
    from_file = (_stdin_lines() if args.file == "-" else text_lines(args.file)) if args.file else iter(())
    texts = itertools.chain(args.texts, from_file)
    first = next(texts, None)
    if first is None:
        if args.file:
            raise NbutilsError(f"no texts to classify: --file {args.file} is empty",
                               fix="pass a UTF-8 file with one text per line")
        raise NbutilsError("no texts to classify", fix="pass TEXT arguments or --file")
    _refuse_existing(args.output, args.overwrite)
    predictor = load_predictor(str(Path(args.model).resolve()), args.device, args.backend)
    frames = predictor.frames(itertools.chain([first], texts), batch_size=args.batch_size,
                              max_length=args.max_length)
    if args.output:
        rows = write_predictions(frames, args.output, overwrite=args.overwrite)
        print(f"wrote {rows} predictions to {args.output}")
    else:
        _print_tables(frames)
    return 0
