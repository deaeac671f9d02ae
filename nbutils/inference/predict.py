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

CLI: ``nbutils predict --model DIR [--file F] [--output CSV] [--backend auto|torch-fp32|torch-bf16|onnx|onnx-int8]
[TEXT ...]``: ``auto`` (default) measures which backend is fastest while agreeing with fp32
(:mod:`nbutils.inference.backends`); the ONNX backends read an ``nbutils export-onnx`` folder.
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
from nbutils.inference.backends import BACKENDS
from nbutils.inference.backends import normalize as normalize_backend
from nbutils.runtime.memory import trim_heap


class Predictor:
    """A loaded model + tokenizer + truncation settings, reusable across calls (e.g. a widget).

    ``backend`` (see :mod:`nbutils.inference.backends`): ``auto`` (default) picks the fastest
    engine whose labels agree with torch-fp32 by a probe on the first texts it is given (or a
    cached decision); ``torch-fp32``, ``torch-bf16``, ``onnx``, ``onnx-int8`` are taken as asked.
    ``model_dir`` is a fine-tuned model folder or a folder written by ``nbutils export-onnx``
    (ONNX backends only). :attr:`decision` says which backend runs and why, once known."""

    @quiet_weight_files()  # no "Loading weights" bar under the prediction box at every headline
    def __init__(self, model_dir: str | Path, device: str = "auto", backend: str = "auto",
                 threads: int | None = None, probe_seconds: float | None = None):
        import torch

        from nbutils.inference.backends import ONNX_BACKENDS, Decision, normalize
        from nbutils.runtime.device import choose_device

        self.model_dir = Path(model_dir)
        self.requested = normalize(backend)
        # ONNX Runtime follows the process's thread policy (OMP_NUM_THREADS / torch.set_num_threads)
        # rather than its default of one spinning thread per core, which fights other processes.
        self.threads = threads or torch.get_num_threads()
        self.probe_seconds = probe_seconds
        self.decision: Decision | None = None
        self._forward = None
        self.model = None
        if self._is_export_folder():
            if self.requested not in (*ONNX_BACKENDS, "auto"):
                raise NbutilsError(f"{self.model_dir} is an ONNX export (no PyTorch weights): backend "
                                   f"{self.requested} cannot run it",
                                   fix="use --backend auto, onnx or onnx-int8, or pass the fine-tuned model folder")
            self.choice = choose_device("cpu", "fp32", task="predict")
            self._load_export_metadata()
        else:
            # the weights are loaded in fp32: the reference, and torch-bf16 autocasts them
            self.choice = choose_device(device, "fp32", task="predict")
            self._load_torch()
        if self.requested != "auto":
            self._forward = self._engine(self.requested)
            self.decision = Decision(self.requested, "asked for", requested=self.requested)

    def _is_export_folder(self) -> bool:
        weights = ("model.safetensors", "pytorch_model.bin")
        return (self.model_dir / "model.onnx").is_file() and not any(
            (self.model_dir / n).is_file() for n in weights)

    def _load_torch(self) -> None:
        from safetensors import SafetensorError

        from nbutils.checkpoints.model_folder import check_model_dir
        from nbutils.text.tokenization import check_vocab_matches, load_tokenizer

        try:
            check_model_dir(self.model_dir)  # reads the weights' header
        except (SafetensorError, OSError) as err:
            raise _corrupt_weights(self.model_dir, err) from None
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
        self.model = model.to(self.choice.device).eval()
        self.label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self.max_positions = model.config.max_position_embeddings
        self.train_config = training_cut(self.model_dir)
        self.thresholds = decision_thresholds(model.config, self.train_config, self.label_names)
        self.temperature = load_temperature(self.model_dir)

    def _load_export_metadata(self) -> None:
        from transformers import AutoConfig

        from nbutils.text.tokenization import load_tokenizer

        config = AutoConfig.from_pretrained(str(self.model_dir))
        if not getattr(config, "id2label", None) or config.num_labels < 2:
            raise NbutilsError(f"{self.model_dir}/config.json has no classification labels",
                               fix="export a fine-tuned model")
        self.label_names = [config.id2label[i] for i in range(config.num_labels)]
        self.max_positions = config.max_position_embeddings
        self.tokenizer = load_tokenizer(self.model_dir)
        self.train_config = training_cut(self.model_dir)
        self.thresholds = decision_thresholds(config, self.train_config, self.label_names)
        self.temperature = load_temperature(self.model_dir)  # copied by export_onnx

    @property
    def backend(self) -> str:
        """The backend that runs (``auto`` until the first texts decided it)."""
        return self.decision.backend if self.decision else self.requested

    def _engine(self, name: str):
        """A function (ids, mask) -> logits running backend ``name``; errors say what to use."""
        from nbutils.inference.backends import REFERENCE

        if name in ("onnx", "onnx-int8"):
            return self._onnx_engine(name)
        if self.model is None:
            raise NbutilsError(f"{self.model_dir} has no PyTorch weights", fix="use --backend onnx")
        if name == REFERENCE:
            return _torch_forward(self.model, self.choice.device)
        why_not = self._bf16_unavailable()
        if why_not:
            raise NbutilsError(f"backend torch-bf16: {why_not}",
                               fix="use --backend auto (it picks the fastest exact-enough backend) or torch-fp32")
        # the same fp32 weights, products in bf16 (autocast): the residual stream, layer norms and
        # softmax stay fp32, which keeps far more labels than bf16 weights do (docs/serving.md)
        return _torch_forward(self.model, self.choice.device, bf16_products=True)

    def _bf16_unavailable(self) -> str:
        """Why torch-bf16 would not run natively here ('' when it would)."""
        import torch

        from nbutils.runtime.device import cpu_has_native_bf16

        if self.choice.device == "cuda":
            return "" if torch.cuda.is_bf16_supported() else f"{self.choice.name} has no bf16"
        if self.choice.device == "cpu":
            return "" if cpu_has_native_bf16() else (
                "this CPU has no native bf16 instructions (AVX512-BF16/AMX): it would be emulated, slowly")
        return f"not offered on {self.choice.device}"

    def _onnx_engine(self, name: str):
        from nbutils.inference.backends import onnx_folder
        from nbutils.inference.onnx_files import onnx_file, onnx_session

        if self.choice.device != "cpu":
            raise NbutilsError(f"backend {name} runs ONNX Runtime on the CPU, but device {self.choice.device} "
                               "was chosen", fix="pass --device cpu, or use --backend auto")
        if not self.model_dir.is_dir():
            raise NbutilsError(f"{self.model_dir}: folder not found",
                               fix="export a fine-tuned model first: nbutils export-onnx MODEL")
        folder = onnx_folder(self.model_dir)
        if folder is None:
            raise NbutilsError(
                f"{self.model_dir} is a PyTorch model folder and no ONNX export of it was found",
                fix=f"nbutils export-onnx {self.model_dir} (into the cache, found here next time), or "
                    f"nbutils export-onnx {self.model_dir} OUT, then --model OUT")
        session = onnx_session(onnx_file(folder, name), self.threads)
        return lambda ids, mask: session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

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
        """Logits in input order; batches are formed from length-sorted texts. Under ``auto`` the
        first call decides the backend (:meth:`decide`) on these texts."""
        if self._forward is None:
            self.decide(input_ids, batch_size)
        return self._batched_logits(self._forward, input_ids, batch_size)

    def _batched_logits(self, forward, input_ids, batch_size: int):
        import numpy as np

        out = np.empty((len(input_ids), len(self.label_names)), dtype=np.float32)
        for rows, ids, mask in padded_batches(input_ids, batch_size, self.tokenizer.pad_token_id or 0):
            out[rows] = forward(ids, mask)
        return out

    def decide(self, input_ids: list[list[int]], batch_size: int = 64):
        """``auto``: the backend for texts like ``input_ids`` (a cached decision, else a probe on
        their first batch), printed once on stderr and kept in :attr:`decision`."""
        from nbutils.inference import backends

        candidates, skipped = self._candidates()
        reference = candidates[0]
        lengths = [len(ids) for ids in input_ids[: backends.PROBE_TEXTS]]
        key = backends.decision_key(self.model_dir, self.choice.name.split(" (")[0], self.threads,
                                    candidates, lengths)
        decision = backends.cached_decision(key) if len(candidates) > 1 else None
        if len(candidates) == 1:  # nothing to measure
            decision = backends.Decision(reference, "the only candidate; not tried: " + "; ".join(skipped), key=key)
            self._forward = self._engine(reference)
        elif decision is not None:
            decision.reason = f"cached decision from {backends.cache_dir() / backends.CACHE_FILE}: {decision.reason}"
            self._forward = self._engine(decision.backend)
        else:
            engines = {name: self._engine(name) for name in candidates}
            runners = {name: (lambda rows, f=engine: self._batched_logits(f, rows, batch_size))
                       for name, engine in engines.items()}
            seconds = self.probe_seconds or backends.PROBE_SECONDS
            results = backends.probe(runners, input_ids, seconds=seconds, max_texts=max(batch_size, 8))
            logits_cache = {}
            best, why = backends.choose(results, reference)
            # a winner timed on fewer texts than the first batch: its labels again, on as many of
            # the batch as another ``seconds`` allow (a bert-base on 512-token texts: a handful)
            while best != reference and "verified_on" not in results[best]:
                size = backends.verify_size(results, best, reference, seconds, min(len(input_ids), max(batch_size, 8)))
                if size <= results[best]["texts"]:
                    break
                backends.verify(results, best, runners, input_ids[:size], reference, logits_cache)
                best, why = backends.choose(results, reference)
            if skipped:
                why += "; not tried: " + "; ".join(skipped)
            decision = backends.Decision(best, why, probe=results, key=key)
            self._forward = engines[best]
            backends.store_decision(decision)
        self.decision = decision
        backends.say(decision)
        return decision

    def _candidates(self) -> tuple[list[str], list[str]]:
        """The backends ``auto`` tries here (the reference first) and why the others are not."""
        from nbutils.inference.backends import onnx_folder

        candidates, skipped = [], []
        if self.thresholds is not None:  # the probe compares single labels, not thresholded sets
            reference = "torch-fp32" if self.model is not None else "onnx"
            return [reference], ["the other backends (a multi-label model: auto keeps the reference)"]
        if self.model is not None:
            candidates.append("torch-fp32")
            why_not = self._bf16_unavailable()
            (skipped.append(f"torch-bf16 ({why_not})") if why_not else candidates.append("torch-bf16"))
        if self.choice.device != "cpu":
            skipped.append(f"onnx, onnx-int8 (ONNX Runtime runs on the CPU, device is {self.choice.device})")
        elif onnx_folder(self.model_dir) is None:
            skipped.append(f"onnx, onnx-int8 (no ONNX export of this model; `nbutils export-onnx "
                           f"{self.model_dir}` writes one into the cache)")
        else:
            from nbutils.inference.onnx_files import BACKEND_FILES, why_not_offered

            folder = onnx_folder(self.model_dir)
            for name, file in BACKEND_FILES.items():
                why_not = f"no {file} in {folder}" if not (folder / file).is_file() else (
                    why_not_offered(folder) if name == "onnx-int8" else "")
                (skipped.append(f"{name} ({why_not})") if why_not else candidates.append(name))
        return candidates, skipped

    def __call__(self, texts, *, batch_size: int = 64, max_length: int | None = None,
                 truncation: str | None = None, count_tokens: bool = False):
        """The whole table for texts in memory (a list); for a file use :meth:`frames` and
        :func:`write_predictions`, which hold one chunk at a time. ``count_tokens``: see
        :meth:`chunk_frame`."""
        import pandas as pd

        texts = _as_texts(texts)
        if batch_size < 1:
            raise NbutilsError(f"batch_size={batch_size}", fix="use a positive batch size")
        if not texts:
            return self.empty_frame()
        from nbutils.text.tokenization import char_chunks

        cut = self.truncator(max_length, truncation)
        frames = [self.chunk_frame(texts[start:end], cut, batch_size, count_tokens=count_tokens)
                  for start, end in char_chunks(texts)]
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        frame.attrs["backend"] = self.decision.as_dict()
        return frame

    def frames(self, texts: Iterable, *, batch_size: int = 64, max_length: int | None = None,
               truncation: str | None = None, max_texts: int | None = None,
               max_chars: int | None = None, count_tokens: bool = False) -> Iterator:
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
            yield self.chunk_frame(chunk, cut, batch_size, count_tokens=count_tokens)

    def empty_frame(self):
        import pandas as pd

        multi = ["scores", "n_labels"] if self.thresholds is not None else []
        columns = ["text", "label", *multi, "confidence", *[f"prob_{n}" for n in self.label_names]]
        return pd.DataFrame(columns=columns + ["n_tokens", "truncated", "empty"])

    def chunk_frame(self, texts: list[str], cut, batch_size: int, *, count_tokens: bool = False):
        """The table of one chunk: cut as in training (a long text only from windows of characters
        at its kept ends, :class:`~nbutils.text.tokenization.Truncator`), sorted by length into
        padded batches, rows in input order. ``n_tokens`` is the whole text's token count, empty
        for a text cut from its windows (always one longer than ``max_length``; ``truncated`` says
        of every text whether it was cut) unless ``count_tokens`` tokenizes every text whole."""
        import numpy as np
        import pandas as pd

        input_ids, counts = cut.cut_with_counts(texts, whole=count_tokens)
        n_tokens = pd.array(counts, dtype="Int64")
        cut_tokens = np.array([len(ids) for ids in input_ids], dtype=np.int64)
        # calibration.json's temperature: the confidence is calibrated, the label is unchanged
        logits = self.logits(input_ids, batch_size) / self.temperature
        frame = prediction_frame(texts, logits, self.label_names, thresholds=self.thresholds)
        frame = frame.rename(columns={"pred": "label"})
        frame["n_tokens"] = n_tokens
        frame["truncated"] = (n_tokens > cut_tokens).fillna(True).to_numpy(dtype=bool)
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


def _load_classifier(model_dir: Path, attn_implementation, dtype=None):
    """The model and transformers' loading info; a truncated or corrupt weights file is named."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    try:
        return AutoModelForSequenceClassification.from_pretrained(
            str(model_dir), attn_implementation=attn_implementation, output_loading_info=True,
            **({"dtype": dtype} if dtype is not None else {}))
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
    """A :class:`Predictor` of an ``nbutils export-onnx`` folder with an ONNX backend, as asked."""

    def __init__(self, export_dir: str | Path, backend: str = "onnx", threads: int | None = None):
        from nbutils.inference.backends import ONNX_BACKENDS, normalize

        if normalize(backend) not in ONNX_BACKENDS:
            raise NbutilsError(f"unknown ONNX backend {backend!r}", fix=f"use one of {', '.join(ONNX_BACKENDS)}")
        super().__init__(export_dir, "cpu", backend, threads)


def _torch_forward(model, device: str, *, bf16_products: bool = False):
    """(ids, mask) int64 arrays -> fp32 logits array, with ``model`` on ``device``; with
    ``bf16_products`` under bf16 autocast (as fine-tuning evaluates where the device has bf16)."""
    import contextlib

    import torch

    def forward(ids, mask):
        cast = torch.autocast(device, dtype=torch.bfloat16) if bf16_products else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            logits = model(input_ids=torch.from_numpy(ids).to(device),
                           attention_mask=torch.from_numpy(mask).to(device)).logits
        return logits.float().cpu().numpy()

    return forward


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


CALIBRATION_FILE = "calibration.json"  # {"temperature": T, ...}, written by fine-tuning (fitted on dev)


def load_temperature(model_dir: Path) -> float:
    """The temperature ``T`` that :class:`Predictor` divides logits by (``calibration.json`` next to
    the model, fitted on the dev split by fine-tuning); 1.0 (no scaling) when the folder has none."""
    path = Path(model_dir) / CALIBRATION_FILE
    if not path.exists():
        return 1.0
    try:
        temperature = float(json.loads(path.read_text(encoding="utf-8"))["temperature"])
    except (ValueError, KeyError, TypeError) as err:
        raise NbutilsError(f"{path}: no readable temperature ({type(err).__name__}: {err})",
                           fix=f"delete {path.name} to predict uncalibrated, or fine-tune again to "
                               "write it") from None
    if not 0 < temperature < float("inf"):
        raise NbutilsError(f"{path}: temperature {temperature} is not a positive number",
                           fix=f"delete {path.name} to predict uncalibrated, or fine-tune again")
    return temperature


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


@functools.lru_cache(maxsize=2)
def _cached_predictor(model_dir: str, device: str, backend: str) -> Predictor:
    return Predictor(model_dir, device, backend)


def load_predictor(model_dir: str, device: str = "auto", backend: str = "auto") -> Predictor:
    """A cached Predictor: a prediction widget does not reload the model (nor re-decide the
    backend) on every keystroke. ``backend``: see :class:`Predictor`."""
    from nbutils.inference.backends import normalize

    return _cached_predictor(model_dir, device, normalize(backend))


def predict(
    texts: str | Sequence[str],
    model_dir: str | Path,
    *,
    batch_size: int = 64,
    max_length: int | None = None,
    device: str = "auto",
    truncation: str | None = None,
    backend: str = "auto",
    count_tokens: bool = False,
):
    """Classify ``texts``: a DataFrame in input order with ``text, label, confidence,
    prob_<name>..., n_tokens, truncated``. For a multi-label model ``label`` holds the labels whose
    score reaches the threshold chosen on dev, joined by ``|`` (highest score first, empty when
    none does), ``scores`` the same labels with their scores (JSON), ``n_labels`` their number,
    ``confidence`` the highest score and ``prob_<name>`` each label's sigmoid score.
    ``max_length``/``truncation`` default to the settings the model was fine-tuned with.
    ``backend``: ``auto`` (the fastest backend whose labels agree with torch-fp32, measured on the
    first texts; see :mod:`nbutils.inference.backends`), ``torch-fp32``, ``torch-bf16``,
    ``onnx``, ``onnx-int8``; ``frame.attrs["backend"]`` says which ran and why. ``n_tokens`` may
    be empty for a text cut to ``max_length`` (a long one, tokenized only at the ends it keeps;
    ``truncated`` says whether a text was cut) unless ``count_tokens``, which tokenizes every text
    whole: slower on long texts."""
    predictor = load_predictor(str(Path(model_dir).resolve()), device, backend)
    return predictor(texts, batch_size=batch_size, max_length=max_length, truncation=truncation,
                     count_tokens=count_tokens)


def examples_table(texts: Sequence[str], model_dir: str | Path, *, device: str = "auto", max_chars: int = 40,
                   backend: str = "auto"):
    """:func:`predict` on ``texts`` as notebook 04 shows it: the label, confidence and token count
    per text, long texts cut to ``max_chars`` characters for display."""
    table = predict(texts, model_dir, device=device, backend=backend, count_tokens=True)  # a few texts
    table["text"] = [t if len(t) <= max_chars else t[: max_chars - 3] + "..." for t in table["text"]]
    multi = ["scores"] if "scores" in table.columns else []
    return table[["text", "label", *multi, "confidence", "n_tokens", "truncated"]]


def classify_box(model_dir: str | Path, *, device: str = "auto", top: int = 3, backend: str = "auto"):
    """A text box that classifies what is typed into it (on Enter) with the model in ``model_dir``
    and prints the label, its confidence and the ``top`` most likely classes (JupyterLab), and
    the backend that ran (``auto``: decided on the first text, or taken from the cache)."""
    import ipywidgets as widgets

    box = widgets.Text(placeholder="输入新闻标题，回车分类", continuous_update=False,  # classify on Enter
                       layout=widgets.Layout(width="60%"))
    out = widgets.Output()

    def classify(change):
        frame = predict([box.value], model_dir, device=device, backend=backend)
        row = frame.iloc[0]
        probs = row.filter(like="prob_").astype(float).sort_values(ascending=False).head(top)
        out.clear_output()
        with out:
            print(f"{row['label']}  ({row['confidence']:.3f})")
            print("  ".join(f"{k.removeprefix('prob_')} {v:.3f}" for k, v in probs.items()))
            print(f"backend: {frame.attrs['backend']['backend']}")

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
    backend: str = "auto",
    count_tokens: bool = False,
) -> int:
    """Classify every line of a UTF-8 text file (one text per line) into the CSV ``output``
    (the columns of :func:`predict`, row i = line i); returns the number of rows. The file is
    read, predicted and written a chunk at a time (:meth:`Predictor.frames`,
    :func:`write_predictions`), so memory does not grow with the number of lines. The backend
    that ran and why go to ``<output stem>.backend.json`` beside it."""
    from nbutils.data.dataset import text_lines

    lines = text_lines(path)
    _refuse_existing(output, overwrite)
    predictor = load_predictor(str(Path(model_dir).resolve()), device, backend)
    rows = write_predictions(predictor.frames(lines, batch_size=batch_size, max_length=max_length,
                                              truncation=truncation, count_tokens=count_tokens),
                             output, overwrite=overwrite)
    write_decision(predictor, output)
    return rows


def write_decision(predictor: Predictor, output: str | Path) -> Path:
    """The backend that produced ``output`` and why, in ``<output stem>.backend.json`` (written
    atomically after the predictions; replaced together with them)."""
    from nbutils.core.io import write_json
    from nbutils.inference.backends import sidecar_path

    return write_json(sidecar_path(output), {"predictions": Path(output).name, "model": str(predictor.model_dir),
                                             "threads": predictor.threads, **predictor.decision.as_dict()})


def _refuse_existing(output: str | Path | None, overwrite: bool) -> None:
    """Before any work: an earlier result is replaced only when asked (checked again at the end)."""
    from nbutils.inference.backends import sidecar_path

    for path in (output, output and sidecar_path(output)):
        if path and not overwrite and Path(path).exists():
            raise NbutilsError(f"{path} already exists", fix="choose another path or pass --overwrite")


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


def predict_parser() -> argparse.ArgumentParser:
    """``nbutils predict``'s options (``--explain`` is served by ``nbutils.explain.attributions``)."""
    parser = argparse.ArgumentParser(prog="nbutils predict", description="Classify texts with a fine-tuned model.")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    parser.add_argument("--model", required=True, help="fine-tuned model folder (e.g. runs/<run>/finetune/model)")
    parser.add_argument("--file", help="a UTF-8 file with one text per line ('-' = stdin)")
    parser.add_argument("--output", help="write all columns as CSV here instead of printing a table")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per text instead of a table")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass (default: 64)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per text (default: as in training, from finetune_config.json)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu | mps (default: auto)")
    parser.add_argument("--count-tokens", action="store_true",
                        help="fill n_tokens for every text, by tokenizing each whole (slower on long texts; "
                             "by default a long text is tokenized only at the ends it keeps and its n_tokens "
                             "is left empty: truncated says whether a text was cut)")
    parser.add_argument("--backend", default="auto", type=normalize_backend, metavar="|".join(BACKENDS),
                        help="auto (default): the fastest backend whose labels agree with torch-fp32, measured "
                             "on the first texts and cached per model and machine; torch-fp32, torch-bf16 "
                             "(CPUs with native bf16, GPUs); onnx, onnx-int8 (an `nbutils export-onnx` folder, "
                             "or the export of MODEL in the cache). The choice is printed on stderr and, "
                             "with --output, stored in <output stem>.backend.json")
    explain = parser.add_argument_group("explanations (docs/explain.md)")
    explain.add_argument("--explain", action="store_true",
                         help="also score each character for the predicted class (integrated "
                              "gradients with a PyTorch backend, occlusion with the ONNX backends)")
    explain.add_argument("--explain-method", default="auto",
                         choices=("auto", "integrated-gradients", "occlusion", "attention"),
                         help="how to score characters (default auto; attention is a control, not an explanation)")
    explain.add_argument("--explain-steps", type=int, default=32,
                         help="integrated-gradients steps per text (default 32): time grows with it")
    explain.add_argument("--explain-max", type=int, default=200,
                         help="refuse more texts than this with --explain (default 200)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = predict_parser().parse_args(argv)
    if args.explain:
        raise NbutilsError("--explain is served by the `nbutils predict` command "
                           "(nbutils.explain.attributions.predict_main)",
                           fix="run `nbutils predict --explain ...`")
    return run_predict(args)


def run_predict(args: argparse.Namespace) -> int:
    """``nbutils predict`` without ``--explain``: a table, JSON lines or a CSV file."""
    if args.max_length is not None and args.max_length < 1:
        raise NbutilsError(f"--max-length {args.max_length}: must be a positive number of tokens",
                           fix="omit it to cut texts as in training, or pass e.g. --max-length 128")
    texts = cli_texts(args)
    _refuse_existing(args.output, args.overwrite)
    predictor = load_predictor(str(Path(args.model).resolve()), args.device, args.backend)
    frames = predictor.frames(texts, batch_size=args.batch_size, max_length=args.max_length,
                              count_tokens=args.count_tokens)
    if args.output:
        rows = write_predictions(frames, args.output, overwrite=args.overwrite)
        sidecar = write_decision(predictor, args.output)
        print(f"wrote {rows} predictions to {args.output} (backend {predictor.backend}: {sidecar})")
    elif args.json:
        for frame in frames:
            for row in frame.to_dict(orient="records"):
                print(json.dumps(row, ensure_ascii=False, default=_plain))
    else:
        _print_tables(frames)
    return 0


def _plain(value):
    import pandas as pd

    if value is pd.NA:  # n_tokens of a text cut from its windows
        return None
    return value.item() if hasattr(value, "item") else str(value)


def cli_texts(args: argparse.Namespace) -> Iterator[str]:
    """The TEXT arguments, then the lines of ``--file`` (read as they are needed, never whole);
    an error when there are none."""
    from nbutils.data.dataset import text_lines

    from_file = (_stdin_lines() if args.file == "-" else text_lines(args.file)) if args.file else iter(())
    texts = itertools.chain(args.texts, from_file)
    first = next(texts, None)
    if first is None:
        if args.file:
            raise NbutilsError(f"no texts to classify: --file {args.file} is empty",
                               fix="pass a UTF-8 file with one text per line")
        raise NbutilsError("no texts to classify", fix="pass TEXT arguments or --file")
    return itertools.chain([first], texts)
