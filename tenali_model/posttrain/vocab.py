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

PADDED TABLES. Many bases have more embedding rows than tokenizer pieces (32,000 pieces, 32,128 rows:
sizes rounded for the GPU). The chat tokens then land on padding rows, which no training ever gave
a meaning: they are new all the same. The rule (`new_token_ids`): every id at or above the length
the tokenizer had before the chat tokens were appended is new, whether its row is padding or
grown, unless the lineage already fitted it. New rows start at the mean of the rows below that
length (padding rows, random or zero, are left out of the mean) and train under LoRA. The length is
read from the parent's meta.json when a chat stage wrote it (`FITTED_KEY`: SFT and DPO record the
size of their tokenizer, and every later checkpoint of the lineage, a distillation stage's or a
student's, carries it on), so a later stage never re-initialises rows an earlier one trained.
Without a record (an imported base, continued pretraining) it is inferred from the chat tokenizer
(`chat_tokens_start`): the ids `add_chat_tokens` appended are the run of chat pieces, in
`SPECIAL_TOKENS` order, that ends the id space above the tokenizer model's own vocabulary.
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
    _only_chat_tokens(tok, extra, f"has {tok.vocab_size} ids but {model_name} only {model_vocab} embeddings, and the "
                      "extra ids", "(for a base model's lineage: its tokenizer with "
                      f"{', '.join(SPECIAL_TOKENS)} added, as the pipeline's tokenizer asset writes it)")
    return extra


def _only_chat_tokens(tok: TextTokenizer, ids: list[int], what: str, advice: str) -> None:
    """A DataError naming the first few of `ids` that are not chat special pieces (only those can be
    given new rows): "tokenizer T <what> are not only the chat special tokens (...): use ... <advice>"."""
    foreign = [(i, tok.id_to_token(i)) for i in ids if tok.id_to_token(i) not in SPECIAL_TOKENS]
    if foreign:
        shown = ", ".join(f"{i}={t!r}" for i, t in foreign[:5])
        raise DataError(f"tokenizer {tok.name or ''} {what} are not only the chat special tokens ({shown}"
                        f"{', ...' if len(foreign) > 5 else ''}): use the tokenizer the parent was trained with {advice}")


FITTED_KEY = "chat_vocab_size"  # meta.json: ids below it have rows the lineage fitted (module doc)


def chat_tokens_start(tok: TextTokenizer) -> int:
    """The id at which the chat pieces `add_chat_tokens` appended to a Hugging Face tokenizer begin
    (the base tokenizer's own length); the whole vocabulary when none were appended (sentencepiece:
    Tenali's tokenizer has its chat pieces among its own). They are the trailing run of chat pieces
    in `SPECIAL_TOKENS` order above the tokenizer model's own vocabulary (ids a tokenizer model has
    were not added)."""
    hf = getattr(tok, "_hf", None)
    if hf is None:
        return tok.vocab_size
    order = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    floor, i, last = hf.get_vocab_size(with_added_tokens=False), tok.vocab_size, len(SPECIAL_TOKENS)
    while i > floor:
        rank = order.get(tok.id_to_token(i - 1))
        if rank is None or rank >= last:
            break
        i, last = i - 1, rank
    return i


def fitted_vocab(meta: dict, model_vocab: int) -> int | None:
    """How many leading rows a checkpoint's lineage fitted to a chat tokenizer (from its meta.json),
    or None when no chat stage ran in it. A chat stage's checkpoint written before the record
    existed counts as fitted throughout (its rows trained as they were)."""
    if meta.get(FITTED_KEY) is not None:
        return int(meta[FITTED_KEY])
    if meta.get("stage") in ("sft", "dpo"):
        return model_vocab
    return None


def new_token_ids(tok: TextTokenizer, model_vocab: int, fitted: int | None = None,
                  model_name: str = "the model") -> list[int]:
    """The ids whose rows a chat stage must start at the mean and train: every id from the base
    tokenizer's length (`fitted` when the lineage recorded it, else `chat_tokens_start`) up, be its
    row padding the model already has or one to grow. A DataError when an id beyond the model's
    rows, or a new one, is not a chat special piece."""
    added_token_ids(tok, model_vocab, model_name)
    start = min(model_vocab, chat_tokens_start(tok) if fitted is None else fitted)
    extra = list(range(start, tok.vocab_size))
    _only_chat_tokens(tok, extra, f"has ids from {start} on that {model_name} has no trained rows for, and they",
                      "(its chat tokens added)")
    return extra


def _grown(weight: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """Rows [start, end) at the mean of rows [0, start); rows past end (padding) as they were."""
    w = weight.detach()
    mean = w[:start].float().mean(0, keepdim=True).to(weight.dtype)
    return torch.cat([w[:start], mean.expand(end - start, -1), w[end:]], 0)


def fit_for_chat(model: nn.Module, tok: TextTokenizer, meta: dict) -> list[int]:
    """Start a loaded checkpoint's rows for `tok`'s chat tokens as a chat stage starts them (rows
    grown, or a padded table's padding rows, at the mean; rows a chat stage already trained kept), so
    that a chat evaluation of a base scores the model SFT will start from. Returns the new ids."""
    vocab = model.config.vocab_size
    ids = new_token_ids(tok, vocab, fitted_vocab(meta, vocab))
    return extend_vocab(model, tok.vocab_size, new_from=ids[0]) if ids else []


@torch.no_grad()
def extend_vocab(model: nn.Module, vocab_size: int, new_from: int | None = None) -> list[int]:
    """Fit a Transformer's embedding table (and untied head) to a vocabulary of vocab_size in place:
    rows [new_from, vocab_size) (default: from the current size, i.e. only grown rows) at the mean of
    the rows below new_from (module doc), the table grown when vocab_size exceeds it; updates
    model.config. Returns the new ids."""
    old = model.config.vocab_size
    if vocab_size < old and new_from is None:
        raise ValueError(f"cannot shrink the vocabulary from {old} to {vocab_size}")
    start = old if new_from is None else new_from
    if start >= vocab_size:
        return []
    emb, head = model.tok_embeddings, model.lm_head
    grown = grown_state({"tok_embeddings.weight": emb.weight, "lm_head.weight": head.weight}, model.config,
                        vocab_size, start)
    rows = max(old, vocab_size)
    model.tok_embeddings = nn.Embedding(rows, emb.embedding_dim, device=emb.weight.device, dtype=emb.weight.dtype)
    model.tok_embeddings.weight.copy_(grown["tok_embeddings.weight"])
    model.tok_embeddings.weight.requires_grad_(emb.weight.requires_grad)
    model.config = dataclasses.replace(model.config, vocab_size=rows)
    model.lm_head = nn.Linear(head.in_features, rows, bias=False, device=head.weight.device,
                              dtype=head.weight.dtype)
    if model.config.tie_embeddings:
        model.tie_weights()
    else:
        model.lm_head.weight.copy_(grown["lm_head.weight"])
        model.lm_head.weight.requires_grad_(head.weight.requires_grad)
    return list(range(start, vocab_size))


def grown_state(state: dict[str, torch.Tensor], config, vocab_size: int, new_from: int | None = None
                ) -> dict[str, torch.Tensor]:
    """A full state dict (config's shape) with its embedding table and head fitted as `extend_vocab`
    fits a module: rows [new_from, vocab_size) at the mean of those below new_from (default: the
    current size), the tables grown to vocab_size when larger, a tied head the same tensor as the
    table. Under FSDP rank 0 fits the weights it read with it before they are sharded."""
    if vocab_size < config.vocab_size and new_from is None:
        raise ValueError(f"cannot shrink the vocabulary from {config.vocab_size} to {vocab_size}")
    start = config.vocab_size if new_from is None else new_from
    if start >= vocab_size:
        return state
    state = dict(state)
    state["tok_embeddings.weight"] = _grown(state["tok_embeddings.weight"], start, vocab_size)
    if config.tie_embeddings:
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    else:
        state["lm_head.weight"] = _grown(state["lm_head.weight"], start, vocab_size)
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

