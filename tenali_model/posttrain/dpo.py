"""Preference tuning with DPO (Rafailov et al. 2023) against a frozen reference model.

    python -m tenali_model.posttrain.dpo --config dpo.json [--stop-at-step K]

For a prompt x with a chosen answer y_w and a rejected one y_l, with log-probabilities summed over
the answer's assistant tokens (policy pi, frozen reference ref: `reference`, default init_from):

    loss = -log sigmoid(beta * ((log pi(y_w|x) - log pi(y_l|x)) - (log ref(y_w|x) - log ref(y_l|x))))

The config is a `DPOConfig` JSON file; pairs are JSONL (posttrain/data.py), validated whole before
any compute. Full fine-tuning or LoRA as in SFT. With LoRA and the default reference, the reference
pass is the policy itself with its adapters off (lora.StartingPoint): no second model in memory.
metrics.jsonl train records add "margin" (the policy's log-ratio margin over the reference's, per
pair), "accuracy" (share of pairs whose margin is positive) and "logp_gap" (log pi(y_w) - log
pi(y_l)); val records give the same on val_files.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ..checkpoint import load_config, load_model, resolve_checkpoint
from ..config import ConfigError
from ..tokenizer import load_tokenizer
from ..train import Dist, use_bf16
from .config import DPOConfig, Phase
from .data import DataError, PairBatches, collate_pairs, encode_pairs, load_pairs, pad_id_of
from .loop import (Stage, build_student, eval_starts, fit_vocab, load_parent, load_sharded, projections_to_bf16,
                   stage_main, stage_parallelism, train_stage)


def sequence_logps(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per row: the sum of log p(label) over labels != -1, from the model's chunked per-token path
    (`forward(..., token_logps=True)`): neither the policy nor the reference holds [rows, T, vocab]
    logits (13 GB each in float32 for 16 rows of 4,096 tokens with a 50k vocabulary)."""
    return model(x, y, token_logps=True)[1].sum(-1)


def dpo_loss(policy_logps: torch.Tensor, ref_logps: torch.Tensor, beta: float
             ) -> tuple[torch.Tensor, int, dict]:
    """(sum of per-pair losses, pairs, sums of margin / accuracy / logp_gap); rows: B chosen then B rejected."""
    B = policy_logps.shape[0] // 2
    gap = policy_logps[:B] - policy_logps[B:]
    margin = gap - (ref_logps[:B] - ref_logps[B:])
    loss = -F.logsigmoid(beta * margin)
    return loss.sum(), B, {"margin": margin.sum().detach(), "accuracy": (margin > 0).sum().detach(),
                           "logp_gap": gap.sum().detach()}


def prepare(cfg: DPOConfig, d: Dist) -> Stage:
    parent, mcfg, seq_len = load_parent(cfg, d.device)
    reference = resolve_checkpoint(cfg.reference or cfg.init_from)
    if load_config(reference).vocab_size != mcfg.vocab_size:
        raise ConfigError(f"reference {reference} has another vocabulary than the policy {parent}")
    tok = load_tokenizer(cfg.tokenizer)
    # chat tokens added to a base model's tokenizer: policy and reference grow alike (the same mean rows;
    # a reference that is another checkpoint fits by its own lineage's record)
    vocab_size, new_from, extended = fit_vocab(tok, mcfg, parent)
    ref_vocab, ref_from, _ = fit_vocab(tok, load_config(reference), reference)
    pairs, stats = encode_pairs(tok, load_pairs(cfg.train_files), seq_len)
    val_pairs, _ = encode_pairs(tok, load_pairs(cfg.val_files), seq_len) if cfg.val_files else ([], None)
    if not pairs:
        raise DataError(f"no preference pair keeps an answer token within seq_len {seq_len}")
    pad = pad_id_of(tok)
    batches = PairBatches(pairs, cfg.batch_size, pad, rank=d.rank, world_size=d.world_size, seed=cfg.seed)
    mode = stage_parallelism(cfg, mcfg, d.world_size)
    policy = build_student(cfg, parent, d, vocab_size, mode, new_from)
    start = None
    if mode == "fsdp":  # sharded too: a 7B reference held whole would take a GPU's memory
        ref = load_sharded(reference, d, cfg.dtype, ref_vocab, new_from=ref_from)
        ref, held = ref.eval().requires_grad_(False), "sharded copy"
    elif cfg.lora is not None and reference.resolve() == parent.resolve():
        # the policy with its adapters off and its head as it started is the parent: no second model
        from .lora import StartingPoint
        start, ref, held = StartingPoint(policy), None, "the policy without its adapters"
    else:
        held = "copy"
        ref = load_model(reference, device=d.device).requires_grad_(False)
        if ref_vocab:
            from .vocab import extend_vocab
            extend_vocab(ref, ref_vocab, ref_from)
        if use_bf16(d.device, cfg.dtype):  # the same log-probabilities for half the projections' memory
            projections_to_bf16(ref)

    def reference_logps(x, y):
        if start is None:
            return sequence_logps(ref, x, y)
        with start.active() as parent_again:
            return sequence_logps(parent_again, x, y)

    def loss_fn(model, batch: dict, phase: Phase | None = None):
        with torch.no_grad():
            ref_logps = reference_logps(batch["x"], batch["y"])
        return dpo_loss(sequence_logps(model, batch["x"], batch["y"]), ref_logps, cfg.beta)

    def evaluate(model) -> dict:
        sums = {"val_loss": 0.0, "val_margin": 0.0, "val_accuracy": 0.0, "val_logp_gap": 0.0, "count": 0}
        for start, counted in eval_starts(len(val_pairs), cfg.batch_size, cfg.eval_batches, d, mode):
            batch = {k: v.to(d.device) for k, v in
                     collate_pairs(val_pairs[start:start + cfg.batch_size], pad).items()}
            s, n, stats = loss_fn(model, batch)
            if not counted:
                continue
            sums["val_loss"] += s.item()
            sums["val_margin"] += stats["margin"].item()
            sums["val_accuracy"] += stats["accuracy"].item()
            sums["val_logp_gap"] += stats["logp_gap"].item()
            sums["count"] += n
        return sums

    return Stage(cfg=cfg, model=policy, parent=parent, batches=batches, loss_fn=loss_fn,
                 tokens_of=lambda b: b["x"].numel(), evaluate=evaluate if val_pairs else None,
                 extra_meta={"tokenizer": str(cfg.tokenizer), "reference": str(reference), "reference_held": held,
                             "beta": cfg.beta, **extended},
                 summary_extra={"train_pairs": stats.examples, "truncated": stats.truncated,
                               "dropped": stats.dropped}, mode=mode)


def train(cfg: DPOConfig, pipes=None, stop_at: int | None = None) -> dict:
    """Run (or continue) DPO as cfg says; returns the summary reported to Pipes."""
    return train_stage(cfg, prepare, pipes, stop_at)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, "python -m tenali_model.posttrain.dpo", __doc__, DPOConfig, prepare)


if __name__ == "__main__":
    from ..train import as_worker

    sys.exit(as_worker(main))
