"""What a masked-LM head predicts for each ``[MASK]`` of a text: a quick look at what a
(pre-)trained BERT knows, used by notebooks 01 and 03.
"""

from __future__ import annotations

import json
from pathlib import Path

from nbutils.checkpoints.weights import quiet_weight_files
from nbutils.core.errors import NbutilsError


@quiet_weight_files()  # notebooks 01 and 03 call it per probe: no "Loading weights" bar each time
def masked_lm_top_k(model_dir: str | Path, text: str, k: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``k`` (token, probability) for each [MASK] in ``text``, from the folder's MLM head."""
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer, BertForPreTraining

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    # a pre-training folder loads as itself (no "unused NSP head" noise); others as MaskedLM
    pretraining = "BertForPreTraining" in config.get("architectures", [])
    model = (BertForPreTraining if pretraining else AutoModelForMaskedLM).from_pretrained(model_dir).eval()
    batch = tokenizer(text, return_tensors="pt")
    positions = (batch["input_ids"][0] == tokenizer.mask_token_id).nonzero().flatten()
    if len(positions) == 0:
        raise NbutilsError(f"no {tokenizer.mask_token} in {text!r}", fix=f"put {tokenizer.mask_token} where a token should be predicted")
    with torch.no_grad():
        output = model(**batch)
        logits = output.prediction_logits if pretraining else output.logits
        probs = logits[0, positions].softmax(-1)
    top = probs.topk(k, dim=-1)
    return [
        [(tokenizer.convert_ids_to_tokens(int(i)), float(p)) for p, i in zip(ps, ids, strict=True)]
        for ps, ids in zip(top.values, top.indices, strict=True)
    ]
