"""Which characters made the model choose its class: a score per character of each text.

Methods (``method=``):

- ``"integrated-gradients"`` (the default with the PyTorch backend): Integrated Gradients
  (Sundararajan et al. 2017) on the word embeddings, by captum's ``LayerIntegratedGradients``.
  The baseline is the same text with every text token replaced by ``[PAD]`` ([CLS], [SEP] and
  the positions stay), the output explained is the predicted class's (calibrated) probability.
  Chosen as the default because it sees every token in one pass of ``n_steps`` batched
  forward/backward evaluations, whatever the text's length, and its scores add up to the change
  in probability from the baseline to the text (completeness; the gap is reported as ``delta``).
- ``"occlusion"`` (the default with the ONNX backends, which have no gradients): the drop in the
  predicted class's probability when one token is replaced by ``[PAD]``; one forward pass per
  token, batched. Tested against captum's ``FeatureAblation``.
- ``"attention"``: the last layer's attention from [CLS] to each token, averaged over heads. Not
  an explanation: the control that benchmarks/bench_faithfulness.py compares the others with.

WordPiece tokens map back to characters through the fast tokenizer's offsets: a token's score
is spread evenly over the characters it covers; characters the model never saw (whitespace, or
cut off by the training truncation) score 0. ``docs/explain.md`` has the faithfulness numbers.
Multi-label models are refused with a clear error (not yet supported).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace

from nbutils.core.errors import NbutilsError
from nbutils.explain import MULTI_LABEL, is_multi_label, refuse_multi_label

METHODS = ("auto", "integrated-gradients", "occlusion", "attention")
MAX_TEXTS = 200  # a cap on one call: IG costs n_steps forward+backward passes per text
N_STEPS = 32  # Riemann steps of Integrated Gradients (captum's default is 50)


@dataclass
class Attribution:
    """One text's explanation: the predicted class, its runner-up, and a score per character."""

    text: str
    label: str  # the predicted class (the one explained)
    confidence: float  # its (calibrated) probability
    runner_up: str  # the second most likely class
    runner_up_confidence: float
    method: str
    scores: list[float] = field(default_factory=list)  # one per character of text
    truncated: bool = False  # characters past the training cut score 0
    delta: float | None = None  # IG: sum of scores minus the probability change it explains

    def top(self, k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` characters with the highest scores: (position, character, score)."""
        order = sorted(range(len(self.text)), key=lambda i: -self.scores[i])[:k]
        return [(i, self.text[i], self.scores[i]) for i in order]

    def as_dict(self) -> dict:
        return {**asdict(self), "chars": list(self.text)}


@dataclass
class _Encoded:
    ids: list[int]
    spans: list[tuple[int, int]]  # per token: characters [start, end); (0, 0) for special tokens
    truncated: bool


def _encode(predictor, texts: Sequence[str], max_length: int | None = None) -> list[_Encoded]:
    """Token ids cut exactly as in training, with each kept token's character span."""
    cut = predictor.truncator(max_length, None)
    enc = predictor.tokenizer(list(texts), add_special_tokens=True, truncation=False, verbose=False,
                              return_offsets_mapping=True, return_attention_mask=False,
                              return_token_type_ids=False)
    out = []
    for ids, offsets in zip(enc["input_ids"], enc["offset_mapping"], strict=True):
        keep = cut.cut(list(range(len(ids))))  # the positions the training truncation keeps
        out.append(_Encoded([ids[k] for k in keep], [tuple(offsets[k]) for k in keep], len(keep) < len(ids)))
    return out


def _text_positions(encoded: _Encoded) -> list[int]:
    return [k for k, (start, end) in enumerate(encoded.spans) if end > start]


def char_scores(text: str, encoded: _Encoded, token_scores) -> list[float]:
    """Token scores spread evenly over the characters each token covers; 0 elsewhere."""
    scores = [0.0] * len(text)
    for k in _text_positions(encoded):
        start, end = encoded.spans[k]
        share = float(token_scores[k]) / (end - start)
        for i in range(start, end):
            scores[i] += share
    return scores


def _probabilities(predictor, input_ids: list[list[int]], batch_size: int):
    import numpy as np

    logits = np.asarray(predictor.logits(input_ids, batch_size), dtype=np.float64) / predictor.temperature
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return probs / probs.sum(1, keepdims=True)


def occlusion_token_scores(predictor, encoded: list[_Encoded], targets, batch_size: int = 64):
    """Per text, per token: p(target | text) - p(target | text with that token -> [PAD])."""
    pad = predictor.tokenizer.pad_token_id or 0
    variants, owners = [], []
    for j, e in enumerate(encoded):
        variants.append(e.ids)
        owners.append((j, None))
        for k in _text_positions(e):
            variants.append(e.ids[:k] + [pad] + e.ids[k + 1:])
            owners.append((j, k))
    probs = _probabilities(predictor, variants, batch_size)
    scores = [[0.0] * len(e.ids) for e in encoded]
    full = {}
    for (j, k), row in zip(owners, probs, strict=True):
        if k is None:
            full[j] = row[targets[j]]
        else:
            scores[j][k] = float(full[j] - row[targets[j]])
    return scores


def _torch_model(predictor):
    model = getattr(predictor, "model", None)
    if model is None:
        raise NbutilsError(f"integrated gradients need the PyTorch model; the {predictor.backend} "
                           "backend has no gradients",
                           fix="use method='occlusion' (`nbutils predict --explain --explain-method "
                               "occlusion`), or the torch backend on the fine-tuned model folder")
    return model


def ig_token_scores(predictor, encoded: list[_Encoded], targets, *, n_steps: int = N_STEPS,
                    batch_size: int = 16):
    """Per text, per token: Integrated Gradients of the target's probability on the word
    embeddings (captum), baseline [PAD] for every text token; and each text's completeness gap."""
    import numpy as np
    import torch
    from captum.attr import LayerIntegratedGradients

    from nbutils.inference.predict import padded_batches

    model = _torch_model(predictor)
    device = next(model.parameters()).device
    temperature = predictor.temperature

    def forward(input_ids, attention_mask):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
        return torch.softmax(logits / temperature, dim=-1)

    lig = LayerIntegratedGradients(forward, model.get_input_embeddings())
    pad = predictor.tokenizer.pad_token_id or 0
    scores: list = [None] * len(encoded)
    deltas: list = [None] * len(encoded)
    for rows, ids, mask in padded_batches([e.ids for e in encoded], batch_size, pad):
        ids_t = torch.from_numpy(ids).to(device)
        mask_t = torch.from_numpy(mask).to(device)
        baseline = ids_t.clone()
        for r, j in enumerate(rows):
            baseline[r, _text_positions(encoded[j])] = pad
        attributions, delta = lig.attribute(
            ids_t, baselines=baseline, additional_forward_args=(mask_t,),
            target=[int(targets[j]) for j in rows], n_steps=n_steps,
            internal_batch_size=batch_size * n_steps, return_convergence_delta=True)
        per_token = attributions.sum(-1).detach().float().cpu().numpy()
        for r, j in enumerate(rows):
            scores[j] = per_token[r, : len(encoded[j].ids)]
            deltas[j] = float(np.asarray(delta.detach().cpu())[r])
    return scores, deltas


def attention_token_scores(predictor, encoded: list[_Encoded], batch_size: int = 64):
    """Per text, per token: last-layer attention from [CLS], averaged over heads (a control)."""
    import torch

    from nbutils.inference.predict import padded_batches

    model = _torch_model(predictor)
    device = next(model.parameters()).device
    previous = model.config._attn_implementation
    model.set_attn_implementation("eager")  # SDPA kernels return no attention weights
    scores: list = [None] * len(encoded)
    try:
        with torch.inference_mode():
            for rows, ids, mask in padded_batches([e.ids for e in encoded], batch_size,
                                                  predictor.tokenizer.pad_token_id or 0):
                out = model(input_ids=torch.from_numpy(ids).to(device),
                            attention_mask=torch.from_numpy(mask).to(device), output_attentions=True)
                cls_row = out.attentions[-1][:, :, 0, :].float().mean(1).cpu().numpy()
                for r, j in enumerate(rows):
                    scores[j] = cls_row[r, : len(encoded[j].ids)]
    finally:
        model.set_attn_implementation(previous)
    return scores


def _check_request(texts, method: str, max_texts: int, n_steps: int) -> str:
    if method not in METHODS:
        raise NbutilsError(f"unknown attribution method {method!r}", fix=f"use one of {', '.join(METHODS)}")
    if len(texts) > max_texts:
        raise NbutilsError(
            f"{len(texts):,} texts to explain, more than the cap of {max_texts:,} (each costs "
            f"{n_steps} forward and backward passes with integrated gradients)",
            fix="explain fewer texts, or raise the cap (max_texts=, `--explain-max N`)")
    if n_steps < 2:
        raise NbutilsError(f"n_steps={n_steps}", fix="use at least 2 steps (e.g. 32)")
    return method


def explain(texts: str | Sequence[str], model_dir: str | Path | None = None, *, predictor=None,
            method: str = "auto", n_steps: int = N_STEPS, max_texts: int = MAX_TEXTS,
            batch_size: int = 16, backend: str = "torch", device: str = "auto",
            targets: Sequence[int] | None = None) -> list[Attribution]:
    """A score per character of each text for its predicted class (or ``targets``, class ids).

    ``method="auto"``: integrated gradients with the torch backend, occlusion with the ONNX ones.
    At most ``max_texts`` texts per call; ``n_steps`` bounds the integrated-gradients cost."""
    import numpy as np

    from nbutils.inference.predict import _as_texts, load_predictor

    texts = _as_texts(texts)
    _check_request(texts, method, max_texts, n_steps)
    if predictor is None:
        if model_dir is None:
            raise NbutilsError("explain() needs a model folder or a predictor", fix="pass model_dir=")
        predictor = load_predictor(str(Path(model_dir).resolve()), device, backend)
    if is_multi_label(predictor):
        refuse_multi_label(SimpleNamespace(problem_type=MULTI_LABEL), "explaining predictions")
    if method == "auto":
        method = "integrated-gradients" if getattr(predictor, "model", None) is not None else "occlusion"
    if not texts:
        return []
    encoded = _encode(predictor, texts)
    probs = _probabilities(predictor, [e.ids for e in encoded], batch_size)
    order = np.argsort(-probs, axis=1)
    targets = list(order[:, 0]) if targets is None else [int(t) for t in targets]
    deltas = [None] * len(texts)
    if method == "integrated-gradients":
        token_scores, deltas = ig_token_scores(predictor, encoded, targets, n_steps=n_steps,
                                               batch_size=batch_size)
    elif method == "occlusion":
        token_scores = occlusion_token_scores(predictor, encoded, targets)
    else:
        token_scores = attention_token_scores(predictor, encoded)
    names = predictor.label_names
    out = []
    for j, text in enumerate(texts):
        second = next(int(c) for c in order[j] if int(c) != targets[j])
        out.append(Attribution(
            text=text, label=names[targets[j]], confidence=float(probs[j, targets[j]]),
            runner_up=names[second], runner_up_confidence=float(probs[j, second]), method=method,
            scores=char_scores(text, encoded[j], token_scores[j]), truncated=encoded[j].truncated,
            delta=deltas[j]))
    return out


# --- showing them --------------------------------------------------------------------------------

def _colour(score: float, scale: float) -> str:
    """Red for characters that raise the class's probability, blue for those that lower it."""
    strength = min(1.0, abs(score) / scale) if scale > 0 else 0.0
    rgb = (220, 50, 47) if score > 0 else (38, 139, 210)
    return f"rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.85 * strength:.2f})"


def to_html(attribution: Attribution, *, max_chars: int | None = None) -> str:
    """The class, its confidence and the runner-up, then the text with each character's background
    coloured by its score (red: for the predicted class, blue: against it)."""
    text = attribution.text if max_chars is None else attribution.text[:max_chars]
    scale = max((abs(s) for s in attribution.scores), default=0.0)
    chars = "".join(
        f'<span title="{s:+.3f}" style="background:{_colour(s, scale)}">{html.escape(c)}</span>'
        for c, s in zip(text, attribution.scores, strict=False))
    more = "…" if len(text) < len(attribution.text) else ""
    return (f'<div style="font-size:0.85em;color:#555">{html.escape(attribution.label)} '
            f'({attribution.confidence:.3f}); runner-up {html.escape(attribution.runner_up)} '
            f'({attribution.runner_up_confidence:.3f}); {attribution.method}</div>'
            f'<div style="font-size:1.15em;line-height:1.7">{chars}{more}</div>')


def to_text(attribution: Attribution, *, top: int = 5, colour: bool = False) -> str:
    """Two lines for a terminal: the text (characters for the class in bold red with ``colour``),
    then the class, confidence, runner-up and the ``top`` characters with their scores."""
    scale = max((abs(s) for s in attribution.scores), default=0.0)
    if colour and scale > 0:
        shown = "".join(f"\033[1;31m{c}\033[0m" if s >= 0.3 * scale else
                        (f"\033[34m{c}\033[0m" if s <= -0.3 * scale else c)
                        for c, s in zip(attribution.text, attribution.scores, strict=True))
    else:
        shown = attribution.text
    best = ", ".join(f"{c} {s:+.3f}" for _, c, s in attribution.top(top) if c.strip())
    return (f"{shown}\n  {attribution.label} {attribution.confidence:.3f} (runner-up "
            f"{attribution.runner_up} {attribution.runner_up_confidence:.3f}); top characters "
            f"({attribution.method}): {best}")


# --- the command line ----------------------------------------------------------------------------

def predict_main(argv: list[str] | None = None) -> int:
    """``nbutils predict``: without ``--explain`` it is ``nbutils.inference.predict``'s command; with it,
    each text's prediction and its character scores, as two lines (a terminal colours the
    characters for the class red) or, with ``--json``, one JSON object per text."""
    import itertools
    import sys

    from nbutils.inference.predict import cli_texts, load_predictor, predict_parser, run_predict

    args = predict_parser().parse_args(argv)
    if not args.explain:
        return run_predict(args)
    if args.output:
        raise NbutilsError("--output writes the prediction table; it has no place for character scores",
                           fix="drop --output and use --explain --json > FILE.jsonl, or drop --explain")
    texts = list(itertools.islice(cli_texts(args), args.explain_max + 1))
    # auto would pick the fastest engine, often ONNX, which has no gradients: explanations use
    # the PyTorch model unless an ONNX backend is asked for by name
    backend = "torch" if args.backend == "auto" else args.backend
    predictor = load_predictor(str(Path(args.model).resolve()), args.device, backend)
    method = args.explain_method
    if method in ("integrated-gradients", "attention") and getattr(predictor, "model", None) is None:
        raise NbutilsError(f"--explain-method {method} needs the PyTorch model; the {args.backend} "
                           "backend has no gradients or attention weights",
                           fix="use --explain-method occlusion (the default with ONNX), or "
                               "--backend torch with the fine-tuned model folder")
    attributions = explain(texts, predictor=predictor, method=method, n_steps=args.explain_steps,
                           max_texts=args.explain_max, batch_size=min(args.batch_size, 16))
    colour = sys.stdout.isatty()
    for a in attributions:
        if args.json:
            print(json.dumps(a.as_dict(), ensure_ascii=False))
        else:
            print(to_text(a, colour=colour))
    return 0


__all__ = ["Attribution", "METHODS", "char_scores", "explain", "predict_main", "to_html", "to_text"]
