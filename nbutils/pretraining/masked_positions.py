"""The masked-LM model masked-LM pre-training trains: ``BertForMaskedLM`` with its prediction head
run only at the masked positions, and optionally only over the tokens of the pre-training texts.

Imported lazily by :mod:`nbutils.pretraining.mlm` (it loads torch and transformers).
"""

from __future__ import annotations

import torch
from transformers import BertForMaskedLM, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import MaskedLMOutput
from transformers.models.bert.modeling_bert import BertOnlyMLMHead

from nbutils.core.errors import NbutilsError
from nbutils.runtime.invariant import linear_as

# Output bias of the tokens outside: exp(-1e4 - max logit) is exactly 0 in fp32, and bf16/fp16 hold it.
OUTSIDE_BIAS = -1.0e4


class MaskedPositionsBertForMaskedLM(BertForMaskedLM):
    """``BertForMaskedLM`` whose prediction head runs only where a label is set.

    Same weights, same loss: the stock head scores all B*T positions and the loss then
    ignores the ~85% labelled -100; here those rows are dropped first, so the
    hidden -> vocabulary projection (the largest matrix product of a small BERT) does
    ~15% of the work. ``logits`` are then [n_masked, vocab], in row-major order of the
    masked positions. Without labels, or with ``masked_only_head = False``, it computes
    exactly what the parent does.

    :meth:`restrict_output_vocabulary` tells the head which tokens occur in the pre-training
    texts (no masked token can be anything else): the others get an output bias of
    ``OUTSIDE_BIAS``, so their probability is exactly 0 in fp32, and training then skips
    their decoder rows, which add exactly nothing to the softmax. That is most of the
    decoder, the costliest product of a small BERT: ~21k vocabulary rows, of which 33k
    headlines use ~6k. While training, ``logits`` are then [n_masked, n_corpus_tokens];
    evaluation (``eval()``) and the saved model score the whole vocabulary, with the same loss.

    It also keeps the checkpoint's pooler, which the stock class drops: MLM does not use
    it, but Google's checkpoints trained it (next-sentence prediction) and fine-tuning
    starts from it, so the adapted folder carries it through unchanged.
    """

    # Tell Trainer to pass num_items_in_batch, so gradient accumulation averages over all
    # masked tokens of the accumulated batch rather than over per-batch means.
    accepts_loss_kwargs = True
    masked_only_head = True

    def __init__(self, config):
        BertPreTrainedModel.__init__(self, config)
        self.bert = BertModel(config, add_pooling_layer=True)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()
        # Unused by the MLM loss: frozen, so optimizers and DDP leave it alone.
        self.bert.pooler.requires_grad_(False)
        # Set by restrict_output_vocabulary; buffers follow .to(device), and are never saved.
        self.register_buffer("output_token_ids", None, persistent=False)
        self.register_buffer("output_position", None, persistent=False)

    def restrict_output_vocabulary(self, token_ids):
        """Only ``token_ids`` can be predicted: the other tokens' output bias becomes
        ``OUTSIDE_BIAS`` (saved with the model), and training scores ``token_ids`` only."""
        bias = self.cls.predictions.bias
        ids = torch.as_tensor(sorted(set(int(i) for i in token_ids)), dtype=torch.long, device=bias.device)
        position = torch.full((self.config.vocab_size,), -1, dtype=torch.long, device=bias.device)
        position[ids] = torch.arange(len(ids), device=bias.device)
        with torch.no_grad():
            bias.masked_fill_(position < 0, OUTSIDE_BIAS)
        self.output_token_ids, self.output_position = ids, position

    def _masked_logits(self, hidden, labels):
        """Logits and targets of the masked positions: over the corpus tokens while training
        with a restricted vocabulary, else over the whole vocabulary."""
        if self.output_token_ids is None or not self.training:
            return self.cls(hidden), labels
        targets = self.output_position[labels]
        if bool((targets < 0).any()):
            raise NbutilsError("a masked token is outside the head's restricted vocabulary",
                               fix="restrict_output_vocabulary with the ids of the texts being trained on")
        predictions = self.cls.predictions
        ids = self.output_token_ids
        logits = linear_as(predictions.decoder, predictions.transform(hidden),
                           predictions.decoder.weight.index_select(0, ids), predictions.bias.index_select(0, ids))
        return logits, targets

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None,
                labels=None, num_items_in_batch=None, **kwargs):
        if labels is None or not self.masked_only_head:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask,
                                   token_type_ids=token_type_ids, labels=labels, **kwargs)
        hidden = self.bert(input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids, return_dict=True, **kwargs)[0]
        selected = labels != -100
        logits, targets = self._masked_logits(hidden[selected], labels[selected])
        # Sum then divide: an empty selection gives 0 instead of the stock head's NaN.
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else selected.sum()
        loss = loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
        return MaskedLMOutput(loss=loss, logits=logits)
