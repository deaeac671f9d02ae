"""The fine-tuned model folder's ``README.md``: a Hugging Face model card, so it can be shared as is.

The YAML metadata is written by ``huggingface_hub.ModelCardData`` (the Hub's own schema:
``model-index`` with the dev and test results, ``base_model``, ``pipeline_tag``), plus the class
list (``labels``), the data and the training parameters. The body says what the model is, how to
use it, its scores and its limits (texts longer than max_length are cut, by how much on the train
split; random weights; distillation; one domain). Everything comes from fine-tuning's
``metrics.json``, so the card and the numbers cannot disagree.
"""

from __future__ import annotations

from pathlib import Path

CARD = "README.md"
TRAINING_KEYS = ("max_length", "truncation", "epochs", "max_steps", "batch_size", "gradient_accumulation_steps",
                 "learning_rate", "weight_decay", "warmup_ratio", "label_smoothing", "max_train_samples",
                 "seed", "precision")


def _hub_like(source: str) -> bool:
    """A hub id (``bert-base-chinese``, ``org/name``), not a local folder."""
    return not Path(source).exists() and source.count("/") <= 1 and not source.startswith((".", "~"))


def card_metadata(metrics: dict) -> dict:
    """The YAML metadata as a dict (``huggingface_hub.ModelCardData``)."""
    from huggingface_hub import EvalResult, ModelCardData

    data = metrics.get("data") or {}
    dataset_name = Path(str(data.get("source") or "dataset")).name
    results = [EvalResult(task_type="text-classification", dataset_type=str(data.get("format") or "custom"),
                          dataset_name=dataset_name, dataset_split=split, metric_type=name,
                          metric_value=round(float(metrics[split][key]), 6))
               for split in ("dev", "test") if metrics.get(split)
               for name, key in (("accuracy", "accuracy"), ("f1", "macro_f1")) if key in metrics[split]]
    config = metrics.get("config") or {}
    source = str(metrics.get("model_source") or "")
    card = ModelCardData(
        language="zh", library_name="transformers", pipeline_tag="text-classification",
        tags=["bert", "text-classification", "nbutils"], metrics=["accuracy", "f1"],
        base_model=source if source and _hub_like(source) else None, model_name=f"{dataset_name} classifier",
        eval_results=results or None, labels=list(metrics.get("label_names") or []),
        training_data={k: data[k] for k in ("source", "format", "sizes") if k in data},
        training_parameters={k: config[k] for k in TRAINING_KEYS if k in config},
    )
    return card.to_dict()


def _limits(metrics: dict) -> list[str]:
    config, fit = metrics.get("config") or {}, metrics.get("length_fit") or {}
    limits = [f"Texts longer than {config.get('max_length')} tokens ([CLS] and [SEP] included) are cut "
              f"({config.get('truncation', 'head')} kept)"
              + (f"; that cut {fit['truncated_share']:.1%} of the train texts" if "truncated_share" in fit else "")
              + "."]
    if fit.get("warning"):
        limits.append(f"The settings did not fit the data: {fit['warning']}.")
    if (metrics.get("model_weights") or {}).get("pretrained") is False:
        limits.append("Fine-tuned from random weights that were never pre-trained: the scores are of the "
                      "architecture trained from scratch, not of a pre-trained BERT.")
    if metrics.get("distillation"):
        limits.append("Trained with soft targets from a TF-IDF linear SVM (knowledge distillation, train "
                      "split only); the scores are the model's alone.")
    names = metrics.get("label_names") or []
    limits.append(f"It knows {len(names)} classes: any text gets one of them, including texts of none.")
    limits.append("Scored on held-out splits of the same data only; other sources and periods may score lower.")
    return limits


def model_card(metrics: dict) -> str:
    """The card's text: YAML front matter, then Markdown."""
    import yaml

    meta = card_metadata(metrics)
    names = metrics.get("label_names") or []
    data = metrics.get("data") or {}
    sizes = data.get("sizes") or {}
    lines = ["---", yaml.safe_dump(meta, allow_unicode=True, sort_keys=False).rstrip(), "---", "",
             f"# {Path(str(data.get('source') or 'dataset')).name} classifier", "",
             f"A BERT text classifier fine-tuned from `{metrics.get('model_source')}` on "
             f"`{data.get('source', 'its dataset')}`"
             + (f" ({', '.join(f'{s} {n:,}' for s, n in sizes.items())} examples)" if sizes else "") + ".", "",
             "## Labels", "", "| id | label |", "| --- | --- |", *[f"| {i} | {n} |" for i, n in enumerate(names)],
             "", "## Results", "", "| split | examples | accuracy | macro F1 |", "| --- | --- | --- | --- |"]
    for split in ("dev", "test"):
        m = metrics.get(split) or {}
        if "accuracy" in m and "macro_f1" in m:
            lines.append(f"| {split} | {int(m.get('n', 0)):,} | {m['accuracy']:.2%} | {m['macro_f1']:.2%} |")
    lines += ["", "## Use", "", "```python", "from transformers import pipeline", "",
              'classify = pipeline("text-classification", model="path/to/this/folder")',
              'classify("央行宣布下调存款准备金率")', "```", "",
              "Or `nbutils predict --model path/to/this/folder TEXT`, which cuts long texts as in training "
              "(`finetune_config.json`).", "", "## Training", "",
              "| parameter | value |", "| --- | --- |",
              *[f"| {k} | {v} |" for k, v in meta.get("training_parameters", {}).items()],
              "", "## Limits", "", *[f"- {line}" for line in _limits(metrics)], ""]
    return "\n".join(lines)


__all__ = ["CARD", "card_metadata", "model_card"]
