"""LoRA adapter federation: a transformer classifier whose adapters alone travel.

``bert_lora``: a small BERT sequence classifier
(:class:`transformers.BertForSequenceClassification`, built from a
:class:`~transformers.BertConfig`, nothing downloaded) wrapped by peft with
LoRA (Hu et al., ICLR 2022) on the attention ``query`` and ``value``
projections (rank ``LORA_RANK``, α = 2·rank) and a trainable classification
head (peft's ``SEQ_CLS`` task keeps the head in ``modules_to_save``).

What travels is what :meth:`AdapterClassifier.state_dict` returns: peft's
adapter state dict (``get_peft_model_state_dict``): the LoRA A/B matrices
and the head, about 1% of the model here. fedstale's ArrayRecords, codec,
strategies and checkpoints all go through ``state_dict`` /
``load_state_dict``, so FedAsync, FedBuff and the robust reducers merge
adapters and nothing else; the frozen base never leaves the process that
built it.

The frozen base must be the same on the server and on every client: it is
built under its own fixed seed (``BASE_SEED``) whatever the run's seed, so
every process builds the same weights. (For a pretrained base, load it the
same way everywhere, e.g. ``from_pretrained`` of one local folder.)

Inputs are token ids (N, L) with 0 as padding
(:mod:`fedstale.data.text`); the attention mask is ``ids != 0``.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ..data.spec import DatasetSpec

BASE_SEED = 1234
"""Seed of the frozen base (the same in every process)."""
LORA_RANK = 4
HIDDEN, LAYERS, HEADS, INTERMEDIATE = 64, 2, 2, 128


class AdapterClassifier(nn.Module):
    """A peft LoRA model whose ``state_dict`` is its adapters (and head) only."""

    def __init__(self, peft_model: nn.Module) -> None:
        super().__init__()
        self.peft_model = peft_model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Class logits for token ids (N, L)."""
        mask = (input_ids != 0).long()
        return self.peft_model(input_ids=input_ids, attention_mask=mask).logits

    def state_dict(self, *args: Any, **kwargs: Any) -> OrderedDict[str, torch.Tensor]:  # type: ignore[override]
        """The adapter weights (LoRA A/B and the head), as peft saves them."""
        from peft import get_peft_model_state_dict  # pylint: disable=import-outside-toplevel

        return OrderedDict(get_peft_model_state_dict(self.peft_model))

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        """Load adapter weights; with ``strict``, exactly the adapter keys must be given."""
        from peft import set_peft_model_state_dict  # pylint: disable=import-outside-toplevel

        expected = set(self.state_dict())
        if strict and set(state_dict) != expected:
            missing, unexpected = expected - set(state_dict), set(state_dict) - expected
            raise RuntimeError(
                f"adapter state: missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}"
            )
        return set_peft_model_state_dict(self.peft_model, dict(state_dict))

    def base_parameters(self) -> int:
        """Parameters of the frozen base (never sent)."""
        return sum(p.numel() for p in self.peft_model.parameters() if not p.requires_grad)


def build_bert_lora(spec: DatasetSpec) -> nn.Module:
    """A tiny BERT classifier for token ids of length ``spec.input_shape[0]``, with LoRA adapters."""
    # pylint: disable=import-outside-toplevel
    from peft import LoraConfig, get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    from ..data.text import VOCAB_SIZE

    if len(spec.input_shape) != 1:
        raise ValueError(
            f"model.name: bert_lora takes token ids (a text dataset), not inputs of shape "
            f"{spec.input_shape}; use data.dataset: text"
        )
    config = BertConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        intermediate_size=INTERMEDIATE,
        max_position_embeddings=max(64, spec.input_shape[0]),
        num_labels=spec.num_classes,
    )
    with torch.random.fork_rng():
        torch.manual_seed(BASE_SEED)
        base = BertForSequenceClassification(config)
    lora = LoraConfig(
        task_type="SEQ_CLS",
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        lora_dropout=0.0,
        target_modules=["query", "value"],
    )
    return AdapterClassifier(get_peft_model(base, lora))
