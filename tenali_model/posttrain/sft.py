"""Instruction tuning (SFT): chat files in, loss on assistant tokens only, full or LoRA.

    python -m tenali_model.posttrain.sft --config sft.json [--stop-at-step K]
    torchrun --standalone --nproc_per_node=8 -m tenali_model.posttrain.sft --config sft.json

The config is an `SFTConfig` JSON file (posttrain/config.py); the data formats are in
posttrain/data.py. Every file is read, validated and encoded before any compute and before
anything is written: a bad record exits with status 2 and a message naming file, line and field.
Conversations are rendered with the one chat template (tenali_model.chat) and packed without
attention crossing them (`packing: true`) or padded one per row. With `lora` set, only the adapters
(and the output head) train; each checkpoint holds the merged weights, the adapter is saved alone
under <out_dir>/adapters/step_N (posttrain/lora.py).

val_loss is the mean cross-entropy per assistant token of val_files (nats), so its exp is the
perplexity on held-out instructions.
"""

from __future__ import annotations

import sys

from ..tokenizer import load_tokenizer
from ..train import Dist
from .config import Phase, SFTConfig
from .data import (DataError, RowBatches, collate, encode_sft, load_chats, pack, pad_id_of,
                   single_rows)
from .loop import (Stage, build_student, eval_starts, fit_vocab, load_parent, stage_main, stage_parallelism,
                   train_stage)


def sft_loss(model, batch: dict, phase: Phase | None = None):
    """(sum of cross-entropy over the answer tokens, their count, {}), through the model's fused
    loss (no [tokens, vocab] logits held; `tenali_model/loss.py`)."""
    y = batch["y"]
    n = int((y != -1).sum())
    _, mean = model(batch["x"], y, doc_ids=batch.get("doc_ids"), with_logits=False)
    return mean * n, n, {}


def prepare(cfg: SFTConfig, d: Dist) -> Stage:
    parent, mcfg, seq_len = load_parent(cfg, d.device)
    tok = load_tokenizer(cfg.tokenizer)
    vocab_size, new_from, extended = fit_vocab(tok, mcfg, parent)  # chat tokens added to a base model's tokenizer
    train_examples, stats = encode_sft(tok, load_chats(cfg.train_files), seq_len)
    val_examples, _ = encode_sft(tok, load_chats(cfg.val_files), seq_len) if cfg.val_files else ([], None)
    if not train_examples:
        raise DataError(f"no training example has an assistant token within seq_len {seq_len}")
    pad = pad_id_of(tok)
    rows = pack(train_examples, seq_len) if cfg.packing else single_rows(train_examples)
    batches = RowBatches(rows, cfg.batch_size, pad, cfg.packing, rank=d.rank, world_size=d.world_size,
                         seed=cfg.seed)
    val_rows = pack(val_examples, seq_len) if cfg.packing else single_rows(val_examples)
    mode = stage_parallelism(cfg, mcfg, d.world_size)

    def evaluate(model) -> dict:
        total, count = 0.0, 0
        for start, counted in eval_starts(len(val_rows), cfg.batch_size, cfg.eval_batches, d, mode):
            batch = {k: v.to(d.device) for k, v in
                     collate(val_rows[start:start + cfg.batch_size], pad, cfg.packing).items()}
            s, n, _ = sft_loss(model, batch)
            if counted:
                total, count = total + s.item(), count + n
        return {"val_loss": total, "count": count}

    model = build_student(cfg, parent, d, vocab_size, mode, new_from)
    return Stage(cfg=cfg, model=model, parent=parent, batches=batches, loss_fn=sft_loss,
                 tokens_of=lambda b: b["x"].numel(), evaluate=evaluate if val_rows else None,
                 extra_meta={"tokenizer": str(cfg.tokenizer), "packing": cfg.packing, **extended},
                 summary_extra={"train_examples": stats.examples, "truncated": stats.truncated,
                                "dropped": stats.dropped, "train_rows": len(rows),
                                "assistant_tokens": stats.target_tokens,
                                **({"vocab_extended_to": vocab_size} if vocab_size else {})}, mode=mode)


def train(cfg: SFTConfig, pipes=None, stop_at: int | None = None) -> dict:
    """Run (or continue) instruction tuning as cfg says; returns the summary reported to Pipes."""
    return train_stage(cfg, prepare, pipes, stop_at)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, "python -m tenali_model.posttrain.sft", __doc__, SFTConfig, prepare)


if __name__ == "__main__":
    from ..train import as_worker

    sys.exit(as_worker(main))
