"""Padding-free (packed) batches for sequence classification.

Hugging Face's ``DataCollatorWithFlattening`` concatenates a batch of texts into one row of
tokens with ``position_ids`` restarting at 0 for each text, so no padding token is computed.
It is built for language models (a label per token); a classifier needs one label per text and
the [CLS] token of each text. :class:`PackedClassificationCollator` keeps the library collator
for the flattening and adds those two; :class:`PackedBertForSequenceClassification` reads them.

Attention must not mix texts. transformers builds the block-diagonal mask from the restarting
``position_ids`` (``masking_utils.find_packed_sequence_indices``) for every attention
implementation: ``flash_attention_2`` runs it as variable-length attention from the collator's
``cu_seq_lens_*`` (no wasted work), ``flex_attention`` skips the masked blocks, while ``sdpa``
and ``eager`` compute the full square over the whole packed row and mask it (correct, but
quadratic in the packed length: for checking, not for speed). tests/test_mfu.py checks that a
packed batch gives the padded batch's logits and loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import BertForSequenceClassification, DataCollatorWithFlattening
from transformers.modeling_outputs import SequenceClassifierOutput

# What the collator adds for the flash-attention kernels (sequence boundaries); the other
# attention implementations read the boundaries from position_ids instead.
FLASH_KWARGS = ("cu_seq_lens_q", "cu_seq_lens_k", "max_length_q", "max_length_k")


class PackedClassificationCollator:
    """Features ``{"input_ids": [...], "labels": int}`` -> one packed row: ``input_ids`` and
    ``position_ids`` of shape ``[1, tokens]``, ``labels`` ``[texts]`` and ``cls_index``
    ``[texts]`` (where each text's [CLS] sits in the row), plus the flash-attention boundaries
    when ``flash_kwargs``."""

    def __init__(self, flash_kwargs: bool = False):
        self.flash_kwargs = flash_kwargs
        self.flatten = DataCollatorWithFlattening(return_flash_attn_kwargs=True)

    def __call__(self, features: Sequence[dict]) -> dict:
        if any(len(f["input_ids"]) == 0 for f in features):
            raise ValueError("a text with no tokens cannot be packed: every text needs at least [CLS]")
        batch = self.flatten([{"input_ids": f["input_ids"]} for f in features])
        starts = torch.as_tensor(batch["cu_seq_lens_q"][:-1]).to(torch.long)
        packed = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "cls_index": starts,
                  "labels": torch.tensor([int(f["labels"]) for f in features], dtype=torch.long)}
        if self.flash_kwargs:
            packed.update({key: batch[key] for key in FLASH_KWARGS})
        return packed


class PackedBertForSequenceClassification(BertForSequenceClassification):
    """BERT sequence classifier over packed rows: the encoder runs on ``[1, tokens]``, the pooler
    and classifier on each text's [CLS] (``cls_index``). Same weights and state dict as
    ``BertForSequenceClassification``; single-label classification only."""

    def forward(self, input_ids=None, position_ids=None, cls_index=None, labels=None, **kwargs):
        if cls_index is None or position_ids is None:
            raise ValueError("packed batches need position_ids and cls_index (PackedClassificationCollator)")
        if not str(self.config._attn_implementation).startswith("flash"):
            for key in FLASH_KWARGS:  # the boundaries come from position_ids there
                kwargs.pop(key, None)
        kwargs.pop("num_items_in_batch", None)
        hidden = self.bert(input_ids=input_ids, position_ids=position_ids, **kwargs).last_hidden_state
        cls = hidden[0].index_select(0, cls_index)
        pooled = self.bert.pooler(cls.unsqueeze(1))
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits.float(), labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)
