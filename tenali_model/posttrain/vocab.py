"""A parent checkpoint fitted to a tokenizer that has the chat pieces its base model lacked.

A Hugging Face base (the continued-pretraining path) comes with its own tokenizer, which has no
``<|user|>``, ``<|assistant|>``, ``<|system|>``, ``<|endoftext|>`` or ``<|pad|>``. The pipeline adds
them as special tokens at the end of the id space (`tenali_model.tokenizer.add_chat_tokens`); the
first chat stage (SFT, or DPO started from a base-vocabulary model) then finds a tokenizer with
more ids than its parent has embeddings. `added_token_ids` decides whether that can be fixed (every
extra id is one of those chat pieces) and `extend_vocab` grows the embedding table and, when untied,
the output head to the new vocabulary.

New rows start at the mean of the existing rows (of each table on its own): the usual practice
(e.g. transformers' ``resize_token_embeddings(mean_resizing=True)``; Hewitt, "Initializing new word
embeddings for pretrained language models", 2021). As output rows, a mean row gives each new token
the average of the existing logits, which by Jensen's inequality is at most the log of their mean
exponential, so each new token starts with no more than about 1/V of the probability and the
distribution over the old vocabulary barely moves (a random or zero row can give a new token a
large share and disturb every prediction until it is trained down). As input rows, the mean sits
inside the distribution of embeddings the layers were trained on (norm and direction), where a
random vector of the wrong scale would not. The rows start equal; training separates them.

Under LoRA the embedding table (and an untied head that is not trained) is frozen, which would
leave the new rows at their mean for good: every chat marker would read the same to the model.
`train_rows` makes just those rows trainable (a gradient mask on the table), and the LoRA adapter
saves and restores them (posttrain/lora.py).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from ..tokenizer import SPECIAL_TOKENS, TextTokenizer
from .data import DataError


def added_token_ids(tok: TextTokenizer, model_vocab: int, model_name: str = "the model") -> list[int]:
    """Ids the tokenizer has beyond the model's embeddings (empty when it fits); a DataError when one
    of them is not a chat special piece, since only those can be added by resizing."""
    if tok.vocab_size <= model_vocab:
        return []
    extra = list(range(model_vocab, tok.vocab_size))
    foreign = [(i, tok.id_to_token(i)) for i in extra if tok.id_to_token(i) not in SPECIAL_TOKENS]
    if foreign:
        shown = ", ".join(f"{i}={t!r}" for i, t in foreign[:5])
        raise DataError(
            f"tokenizer {tok.name or ''} has {tok.vocab_size} ids but {model_name} only {model_vocab} embeddings, and "
            f"the extra ids are not only the chat special tokens ({shown}{', ...' if len(foreign) > 5 else ''}): "
            "use the tokenizer the parent was trained with (for a base model's lineage: its tokenizer with "
            f"{', '.join(SPECIAL_TOKENS)} added, as the pipeline's tokenizer asset writes it)")
    return extra


def _grown(weight: torch.Tensor, rows: int) -> torch.Tensor:
    mean = weight.detach().float().mean(0, keepdim=True).to(weight.dtype)
    return torch.cat([weight.detach(), mean.expand(rows, -1)], 0)


@torch.no_grad()
def extend_vocab(model: nn.Module, vocab_size: int) -> list[int]:
    """Grow a Transformer's embedding table (and untied head) to vocab_size in place, new rows at the
    mean of the old ones (module doc); updates model.config. Returns the new ids."""
    old = model.config.vocab_size
    if vocab_size < old:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {vocab_size}")
    if vocab_size == old:
        return []
    emb, head = model.tok_embeddings, model.lm_head
    grown = grown_state({"tok_embeddings.weight": emb.weight, "lm_head.weight": head.weight}, model.config,
                        vocab_size)
    model.tok_embeddings = nn.Embedding(vocab_size, emb.embedding_dim, device=emb.weight.device, dtype=emb.weight.dtype)
    model.tok_embeddings.weight.copy_(grown["tok_embeddings.weight"])
    model.tok_embeddings.weight.requires_grad_(emb.weight.requires_grad)
    model.config = dataclasses.replace(model.config, vocab_size=vocab_size)
    model.lm_head = nn.Linear(head.in_features, vocab_size, bias=False, device=head.weight.device,
                              dtype=head.weight.dtype)
    if model.config.tie_embeddings:
        model.tie_weights()
    else:
        model.lm_head.weight.copy_(grown["lm_head.weight"])
        model.lm_head.weight.requires_grad_(head.weight.requires_grad)
    return list(range(old, vocab_size))


def grown_state(state: dict[str, torch.Tensor], config, vocab_size: int) -> dict[str, torch.Tensor]:
    """A full state dict (config's shape) with its embedding table and head grown to vocab_size: new
    rows at the mean of the old ones, a tied head the same tensor as the table. `extend_vocab` grows
    a module with it; under FSDP rank 0 grows the weights it read with it before they are sharded."""
    rows = vocab_size - config.vocab_size
    if rows < 0:
        raise ValueError(f"cannot shrink the vocabulary from {config.vocab_size} to {vocab_size}")
    if rows == 0:
        return state
    state = dict(state)
    state["tok_embeddings.weight"] = _grown(state["tok_embeddings.weight"], rows)
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    else:
        state["lm_head.weight"] = _grown(state["lm_head.weight"], rows)
    return state


def train_rows(model: nn.Module, ids: list[int]) -> dict[str, list[int]]:
    """Let only rows `ids` of a frozen embedding table / head train (a gradient mask); tables that
    already train in full are left alone. Records them as ``model.trainable_rows`` for the adapter
    (name -> ids) and returns that mapping."""
    rows = dict(getattr(model, "trainable_rows", {}))
    for name, param in (("tok_embeddings.weight", model.tok_embeddings.weight), ("lm_head.weight", model.lm_head.weight)):
        if param.requires_grad or not ids:  # trains in full already (or is the tied table, done)
            continue
        mask = torch.zeros(param.shape[0], 1, dtype=param.dtype, device=param.device)
        mask[ids] = 1
        param.requires_grad_(True)
        # the hook runs before the gradient is accumulated (and before DDP reduces it); rows outside
        # `ids` get exactly zero, so AdamW (no weight decay on embeddings) never moves them
        param.register_hook(lambda g, m=mask: g * m)
        param.trainable_row_count = len(ids)
        rows[name] = list(ids)
    model.trainable_rows = rows
    return rows

