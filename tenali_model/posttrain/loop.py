"""The loop every post-training stage shares: parent weights in, resumable Tenali checkpoints out.

A stage gives a `Stage`: its config, the model (parent weights loaded, LoRA injected or not), a
resumable batch source, a loss function returning (sum of per-item losses, item count, extra sums)
and an optional evaluation. The loop does the rest the way tenali_model.train does it (and with its
helpers): torchrun ranks (single, DDP or FSDP2), bf16 autocast, AdamW on the trainable parameters
only, the phase schedule, gradient accumulation, clipping, metrics.jsonl, checkpoints with exact
resume, and one Dagster Pipes report from rank 0.

Under FSDP (full fine-tuning of large models, config `parallelism`) the policy is built on the meta
device and sharded before rank 0's weights are broadcast into it (`tenali_model.parallel`), DPO's
frozen reference is sharded the same way, checkpoints gather the full state to rank 0, and every rank
runs the same number of evaluation forwards (they all-gather). A distillation teacher is not sharded:
each rank holds it whole (in bf16 on CUDA).

The loss is normalised by the item count of the whole optimizer step over all micro-steps and ranks
(assistant tokens for SFT, tokens for distillation, pairs for DPO), so packed and padded batches, or
any split into micro-steps, optimise the same objective.

Checkpoints: each is a standard Tenali checkpoint whose model.safetensors holds the full (for LoRA:
merged) weights; meta.json adds "stage", "parent_checkpoint", "data_files" and, for LoRA, "adapter"
(the directory holding the adapter alone). train_state.pt holds the optimizer (trainable parameters
only), the data position and the RNG states, so a killed run rerun with the same config continues
exactly where the checkpoint left it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import re
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from .. import file_waits, preemption
from ..checkpoint import (CheckpointError, Shape, check_space, list_checkpoints, load_config,
                          load_meta, load_model, load_train_state, rank_rng, read_weights, resolve_checkpoint,
                          restore_rng, save_checkpoint, step_dir_name)
from ..config import ConfigError, ModelConfig, num_params, resolve_parallelism
from ..parallel import (build_model, clip_grad_norm, full_state, grad_sync, load_full_state, reshard, wrap_ddp,
                        zero_grads)
from ..plan import checkpoint_bytes
from ..report import publish as publish_report
from ..sharded import load_checkpoint_state, save_sharded, saves_sharded
from ..tokenizer import TokenizerError
from ..train import (Dist, MetricsLog, _printer, autocast_context, check_finite, check_host_memory, die_with_torchrun,
                     fused_adamw, gather_rng, keep_configured_hyperparameters, open_pipes, param_groups,
                     resume_checkpoint, setup_distributed, stopped, use_bf16)
from .config import Phase, StageConfig
from .lora import count_trainable, load_adapter, merged_state_dict, parent_projections, save_adapter

LossFn = Callable[[nn.Module, dict, Phase], tuple[torch.Tensor, int, dict]]


@dataclass
class Stage:
    cfg: StageConfig
    model: nn.Module  # a Transformer (LoRA injected when cfg.lora), on the device, parent weights in
    parent: Path  # the parent checkpoint directory
    batches: Any  # next_batch() -> dict of tensors; state_dict() / load_state_dict()
    loss_fn: LossFn
    tokens_of: Callable[[dict], int]  # tokens a batch feeds through the model (for tokens/s)
    evaluate: Callable[[nn.Module], dict[str, float]] | None = None  # sums over this rank + "count"
    extra_meta: dict = field(default_factory=dict)
    summary_extra: dict = field(default_factory=dict)
    mode: str | None = None  # "single", "ddp" or "fsdp" (stage_parallelism): how `model` was built;
    # None: a plain module, wrapped in DDP here when there are several ranks


# --- learning-rate schedules -----------------------------------------------------------------------

def phase_at(phases: list[Phase], step: int) -> tuple[int, Phase, int]:
    """(phase index, phase, step within it) for a global step (past the end: the last phase's end)."""
    start = 0
    for i, p in enumerate(phases):
        if step < start + p.steps:
            return i, p, step - start
        start += p.steps
    return len(phases) - 1, phases[-1], phases[-1].steps


def lr_in_phase(p: Phase, t: int, div_factor: float = 25.0) -> float:
    """Learning rate at step t of a phase.

    cosine: linear warm-up from 0 to lr, then cosine to min_lr (as tenali_model.train.lr_at).
    linear: the same warm-up, then a straight line to min_lr. constant: warm-up, then lr.
    onecycle: torch's OneCycleLR with cosine annealing (pct_start = warmup_steps / steps, tested
    against it): from lr / div_factor up to lr over the warm-up steps, then down to min_lr at the
    phase's last step.
    """
    if p.schedule == "onecycle":
        start = p.lr / div_factor
        up = max(1, p.warmup_steps - 1)  # the peak at step warmup_steps - 1, as OneCycleLR
        if t <= up:
            return start + (p.lr - start) * (1 - math.cos(math.pi * t / up)) / 2
        frac = min(1.0, (t - up) / max(1, p.steps - 1 - up))
        return p.min_lr + (p.lr - p.min_lr) * (1 + math.cos(math.pi * frac)) / 2
    if t < p.warmup_steps:
        return p.lr * (t + 1) / p.warmup_steps
    frac = min(1.0, (t - p.warmup_steps) / max(1, p.steps - p.warmup_steps))
    if p.schedule == "cosine":
        return p.min_lr + 0.5 * (p.lr - p.min_lr) * (1 + math.cos(math.pi * frac))
    if p.schedule == "linear":
        return p.lr + (p.min_lr - p.lr) * frac
    return p.lr


# --- checkpoints ---------------------------------------------------------------------------------

def adapter_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "adapters" / step_dir_name(step)


def _prune_adapters(out_dir: Path) -> None:
    keep = {p.name for p in list_checkpoints(out_dir)}
    root = out_dir / "adapters"
    if root.is_dir():
        for p in root.iterdir():
            if re.match(r"^step_\d{8,}$", p.name) and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)


def stage_meta(stage: Stage) -> dict:
    """meta.json entries of the stage's checkpoints; the parent's record of the rows its lineage fitted
    to a chat tokenizer (posttrain/vocab.py) is carried on unless the stage records its own."""
    from .vocab import FITTED_KEY, fitted_vocab

    cfg = stage.cfg
    fitted = fitted_vocab(load_meta(stage.parent), load_config(stage.parent).vocab_size)
    return {"stage": cfg.STAGE, "parent_checkpoint": str(stage.parent),
            "data_files": [str(Path(p).resolve()) for p in cfg.data_files()],
            "lora": None if cfg.lora is None else vars(cfg.lora),
            **({FITTED_KEY: fitted} if fitted is not None else {}), **stage.extra_meta}


LORA_SHAPE = ("r", "alpha", "target_modules", "train_head")  # what the saved adapter and optimizer state are


def check_same_lora(meta: dict, cfg: StageConfig, out_dir: Path) -> None:
    """Refuse to resume a checkpoint with LoRA switched on or off or another adapter (rank, alpha,
    targets, head): its adapter and optimizer state would not fit (a size mismatch, or an IndexError
    in the optimizer), or, for alpha, the trained adapter would be scaled by another factor unsaid."""
    if "lora" not in meta:  # a checkpoint written before the record
        return

    def shape(lora: dict | None) -> dict | None:
        return None if lora is None else {k: sorted(lora[k]) if k == "target_modules" else lora[k] for k in LORA_SHAPE}

    saved, now = shape(meta["lora"]), shape(None if cfg.lora is None else vars(cfg.lora))
    if saved != now:
        changed = (f"lora {'on' if saved else 'off'} -> {'on' if now else 'off'}" if (saved is None) != (now is None)
                   else ", ".join(f"lora.{k} {saved[k]} -> {now[k]}" for k in LORA_SHAPE if saved[k] != now[k]))
        raise ConfigError(f"{out_dir} holds a {cfg.STAGE} run its config no longer describes ({changed}): put the "
                          "lora settings back to resume it, or give the changed stage its own out_dir")


# --- the loop --------------------------------------------------------------------------------------

def run_stage(stage: Stage, d: Dist, pipes=None, stop_at: int | None = None) -> dict:
    t_session = time.time()
    cfg = stage.cfg
    say = _printer(d, pipes)
    phases = cfg.plan_phases()
    total = sum(p.steps for p in phases)
    out_dir = Path(cfg.out_dir)
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    raw, mode = stage.model, stage.mode or ("ddp" if d.world_size > 1 else "single")
    lora = cfg.lora is not None
    n_base_params = sum(p.numel() for n, p in
                        {id(p): (n, p) for n, p in raw.named_parameters() if ".lora_" not in n}.values())
    if d.is_main and (note := check_space(out_dir, checkpoint_bytes(n_base_params, count_trainable(raw)))):
        say(note)  # and CheckpointError (exit 2) when not even one checkpoint fits: before training, not at a save
    check_host_memory(d, checkpoint_bytes(n_base_params, count_trainable(raw)), say)
    optimizer = torch.optim.AdamW(param_groups(raw, cfg.weight_decay), lr=phases[0].lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused_adamw(d.device))

    step, tokens_seen, elapsed_before = 0, 0, 0.0
    ckpt = resume_checkpoint(out_dir, d, say)  # verified by rank 0 (or an older one): read without hashing again
    if ckpt is not None:
        meta = load_meta(ckpt)
        if meta.get("stage") != cfg.STAGE:
            raise ConfigError(f"{out_dir} holds checkpoints of stage {meta.get('stage')!r}, not "
                              f"{cfg.STAGE!r}; give this stage its own out_dir")
        check_same_lora(meta, cfg, out_dir)
        state = load_train_state(ckpt, mmap=mode == "fsdp", verify=False)
        configured = [(g["weight_decay"], g["betas"]) for g in optimizer.param_groups]
        if lora:
            load_adapter(raw, adapter_dir(out_dir, meta["step"]))
            optimizer.load_state_dict(state["optimizer"])
        else:  # sharded (each rank its slices) or consolidated (under FSDP rank 0 reads and broadcasts)
            load_checkpoint_state(ckpt, raw, optimizer, mode, d.is_main, state["optimizer"])
        keep_configured_hyperparameters(optimizer, configured, say)  # the state brought back the saved ones
        stage.batches.load_state_dict(state["loader"])
        restore_rng(rank_rng(state, d.rank, d.world_size))
        step, tokens_seen = state["step"], state["tokens_seen"]
        elapsed_before = float(state.get("elapsed", 0.0))
        say(f"resuming {cfg.STAGE} from {ckpt} at step {step}")
    resumed_from = step
    last_saved = step if ckpt is not None else None
    metrics = MetricsLog(out_dir / "metrics.jsonl", resume_step=step) if d.is_main else None
    model = torch.compile(raw) if cfg.compile and mode != "fsdp" else raw  # FSDP: blocks compiled when built
    if mode == "ddp":
        model = wrap_ddp(model, d.device)
    autocast = autocast_context(d.device, cfg.dtype)
    trainable = [p for p in raw.parameters() if p.requires_grad]
    say(f"{cfg.STAGE}: {n_base_params:,} params, {count_trainable(raw):,} trainable"
        f"{' (LoRA r=%d)' % cfg.lora.r if lora else ''} | {d.world_size} rank(s) on {d.device.type}, {mode}"
        f"{' + activation checkpointing' if cfg.activation_checkpointing else ''}"
        f"{(' + torch.compile per block' if mode == 'fsdp' else ' + torch.compile') if cfg.compile else ''} | "
        f"steps {step} -> {total}")

    t_start, tokens_at_start = time.time(), tokens_seen

    def elapsed() -> float:
        return elapsed_before + time.time() - t_start

    def reduce(values: dict[str, float]) -> dict[str, float]:
        if d.world_size == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=d.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist()))

    def evaluate() -> dict[str, float] | None:
        if stage.evaluate is None:
            return None
        was = raw.training
        raw.eval()
        with torch.no_grad(), autocast:
            sums = reduce(stage.evaluate(raw))
        reshard(raw)  # under FSDP: frees the root's gathered weights, which no backward will reshard
        raw.train(was)
        n = sums.pop("count")
        return {k: v / n for k, v in sums.items()} if n else None

    sharded_saves = not lora and saves_sharded(cfg.checkpoint_format, mode)

    def checkpoint(loss: float | None, val: dict | None) -> None:
        sharded = sharded_saves and step < total  # the stage's last checkpoint is consolidated
        if not sharded and not lora and (mode == "fsdp" or d.is_main):  # a collective under FSDP
            state, optimizer_state = full_state(raw, optimizer, mode)
        rngs = gather_rng(d)
        extra = stage_meta(stage) if d.is_main else None
        if lora and d.is_main:
            extra["adapter"] = str(save_adapter(raw, adapter_dir(out_dir, step)))
            base = parent_projections(raw, stage.parent) if raw.lora_settings.base_dtype == "bfloat16" else None
            state, optimizer_state = merged_state_dict(raw, base), optimizer.state_dict()
        if d.is_main:
            extra["val_metrics"] = val
        common = dict(step=step, tokens_seen=tokens_seen, loss=loss,
                      val_loss=None if val is None else val.get("val_loss"), train_config=cfg.to_dict(),
                      extra_state={"elapsed": elapsed()}, keep_last=cfg.keep_last, extra_meta=extra,
                      rng_per_rank=rngs, loader_state=stage.batches.state_dict() if d.is_main else None)
        if sharded:  # a collective: every rank writes its own shard
            path = save_sharded(out_dir, model=raw, optimizer=optimizer, **common)
        elif d.is_main:
            path = save_checkpoint(out_dir, model=Shape(raw.config, n_base_params), model_state=state,
                                   optimizer_state=optimizer_state, **common)
            if lora:
                _prune_adapters(out_dir)
        if d.is_main:
            say(f"saved {path}")
        file_waits.barrier()  # the others wait while rank 0 writes (and hashes) a consolidated checkpoint

    t_log, tokens_log = time.time(), tokens_seen
    last_loss, val, val_step = None, None, None
    end = total if stop_at is None else min(stop_at, total)
    model.train()
    while step < end:
        i_phase, phase, t = phase_at(phases, step)
        lr = lr_in_phase(phase, t)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), dtype=torch.float64, device=d.device)
        stat_sums: dict[str, torch.Tensor] = {}
        count = tokens = 0
        for micro in range(cfg.grad_accum):
            batch = {k: v.to(d.device, non_blocking=True) for k, v in stage.batches.next_batch().items()}
            with grad_sync(model, mode, last_micro_step=micro == cfg.grad_accum - 1):
                with autocast:
                    s, n, stats = stage.loss_fn(model, batch, phase)
                s.backward()
            loss_sum += s.detach().double()
            count += n
            for k, v in stats.items():
                stat_sums[k] = stat_sums.get(k, 0.0) + torch.as_tensor(v, device=d.device).detach().double()
            tokens += stage.tokens_of(batch)
        totals = reduce({"count": float(count), "tokens": float(tokens)})  # ranks pad to their own lengths
        n_items = totals["count"]
        tokens_seen += int(totals["tokens"])
        if n_items > 0:  # mean over every item of the step, on every rank (DDP averaged the sums)
            scale = d.world_size / n_items
            for p in trainable:
                if p.grad is not None:
                    p.grad.mul_(scale)
        grad_norm = clip_grad_norm(raw, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        optimizer.step()
        zero_grads(optimizer, mode)
        step += 1

        stopping = preemption.requested(d.world_size)  # SIGTERM/SIGINT: save this step, then stop
        saving = (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == end or stopping
        if saving or step % cfg.log_every == 0:
            sums = reduce({"loss": loss_sum.item(), **{k: v.item() for k, v in stat_sums.items()}})
            last_loss = sums.pop("loss") / max(n_items, 1)
            check_finite(last_loss, grad_norm.item(), step, out_dir)  # before a NaN model is saved
        if step % cfg.log_every == 0 or step == end or stopping:
            now = time.time()
            tps = (tokens_seen - tokens_log) / max(now - t_log, 1e-9)
            if d.is_main:
                rec = {"kind": "train", "step": step, "loss": last_loss, "lr": lr,
                       "grad_norm": grad_norm.item(), "tokens_seen": tokens_seen, "tokens_per_sec": tps,
                       "elapsed": elapsed(), "phase": i_phase,
                       **{k: v / max(n_items, 1) for k, v in sums.items()}}
                metrics.append(rec)
                extras = "".join(f" | {k} {v / max(n_items, 1):.4f}" for k, v in sums.items())
                say(f"{cfg.STAGE} step {step}/{total} | loss {last_loss:.4f}{extras} | lr {lr:.2e} | "
                    f"{tps:,.0f} tok/s")
            t_log, tokens_log = time.time(), tokens_seen
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == total:
            val, val_step = evaluate(), step
            if val is not None and d.is_main:
                metrics.append({"kind": "val", "step": step, **val, "elapsed": elapsed()})
                say(f"{cfg.STAGE} step {step} | " + " | ".join(f"{k} {v:.4f}" for k, v in val.items()))
        if saving:
            checkpoint(last_loss, val if val_step == step else None)
            last_saved = step
        if stopping and step < end:  # at the end anyway: finish as usual (report, exit 0)
            raise preemption.Stopped(stopping, step, str(out_dir))
        if step % cfg.log_every == 0 or val_step == step or last_saved == step:
            t_log, tokens_log = time.time(), tokens_seen

    train_seconds = time.time() - t_start
    if last_saved != step:  # stop_at=0 on a fresh out_dir: still leave a checkpoint
        if val_step != step:
            val, val_step = evaluate(), step
        checkpoint(last_loss, val)
    if not d.is_main:
        return {}
    ckpt_path = out_dir / (out_dir / "latest").read_text().strip()
    losses = metrics.train_losses()
    vals = [r for r in metrics.records if r.get("kind") == "val"]
    summary = {
        "stage": cfg.STAGE,
        "step": step,
        "steps_target": total,
        "complete": step >= total,
        "tokens_seen": tokens_seen,
        "initial_loss": losses[0] if losses else None,
        "final_loss": sum(losses[-5:]) / len(losses[-5:]) if losses else None,
        "checkpoint": str(ckpt_path),
        "parent_checkpoint": str(stage.parent),
        "num_params": n_base_params,
        "trainable_params": count_trainable(raw),
        "tokens_per_sec": (tokens_seen - tokens_at_start) / max(train_seconds, 1e-9),
        "wall_seconds": time.time() - t_session,
        "world_size": d.world_size,
        "parallelism": mode,
        "resumed_from_step": resumed_from,
        **{k: v for k, v in (vals[-1].items() if vals else []) if k not in ("kind", "step", "elapsed")},
        **stage.summary_extra,
    }
    if lora:
        summary["adapter"] = str(adapter_dir(out_dir, step))
    publish_report(pipes, out_dir, summary, ckpt_path, metrics.loss_table())  # and report.json
    return summary


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# --- shared setup and entry point ----------------------------------------------------------------

def load_parent(cfg: StageConfig, device: torch.device):
    """(parent checkpoint dir, its ModelConfig, the sequence length) after checking cfg against it;
    reads only config.json, so a bad config fails before any weight is loaded."""
    parent = resolve_checkpoint(cfg.init_from)
    mcfg = load_config(parent)
    seq_len = cfg.seq_len or mcfg.max_seq_len
    if seq_len > mcfg.max_seq_len:
        raise ConfigError(f"seq_len ({seq_len}) exceeds the parent model's max_seq_len ({mcfg.max_seq_len})")
    return parent, mcfg, seq_len


def projections_to_bf16(model: nn.Module) -> nn.Module:
    """Every block's attention and MLP projections in bf16, in place, for a frozen model run under
    bf16 autocast (DPO's reference): autocast rounds them to bf16 at each use anyway, so the model
    computes the same for half their memory (a 7B reference: 14.6 GB instead of 27.5)."""
    for block in model.layers:
        for module in block.modules():
            if isinstance(module, nn.Linear):
                module.to(torch.bfloat16)
    return model


def stage_parallelism(cfg: StageConfig, mcfg: ModelConfig, world_size: int) -> str:
    """"single", "ddp" or "fsdp" from the config's `parallelism` (LoRA: never fsdp, see config.py)."""
    if cfg.lora is not None:
        return "single" if world_size <= 1 else "ddp"
    return resolve_parallelism(cfg.parallelism, num_params(mcfg), world_size)


def load_sharded(ckpt: Path, d: Dist, dtype: str, vocab_size: int | None = None,
                 activation_checkpointing: bool = False, compile_blocks: bool = False,
                 new_from: int | None = None) -> nn.Module:
    """A checkpoint's model under FSDP2: built on the meta device, sharded over the ranks, then
    filled with the weights rank 0 alone read (fitted to vocab_size first, rows from new_from new, as
    `extend_vocab` would) and broadcast. A collective: every rank calls it."""
    from .vocab import grown_state

    mcfg = load_config(ckpt)
    state = read_weights(ckpt)[0] if d.is_main else None
    if vocab_size and (vocab_size != mcfg.vocab_size or new_from is not None):
        state = grown_state(state, mcfg, vocab_size, new_from) if state is not None else None
        mcfg = dataclasses.replace(mcfg, vocab_size=max(mcfg.vocab_size, vocab_size))
    model = build_model(mcfg, "fsdp", d.device, world_size=d.world_size,
                        activation_checkpointing=activation_checkpointing, bf16=use_bf16(d.device, dtype),
                        compile_blocks=compile_blocks)
    load_full_state(model, "fsdp", state)
    return model


def build_student(cfg: StageConfig, parent: Path, where: torch.device | Dist, vocab_size: int | None = None,
                  mode: str = "single", new_from: int | None = None) -> nn.Module:
    """The parent's weights in training mode, with LoRA injected when configured (seeded first, so
    the adapters start the same on every rank and in every run); under FSDP (`mode`, which needs the
    Dist as `where`) sharded over the ranks (`load_sharded`).

    vocab_size: grow the vocabulary to it first (the chat tokens a base model's tokenizer lacked,
    posttrain/vocab.py); with new_from, rows from it on are new too (chat tokens that landed on a
    padded table's rows; `fit_vocab`). Under LoRA the new rows of otherwise frozen tables then train
    too. The growth is deterministic, so a resumed run rebuilds the same start before loading its state."""
    from .vocab import extend_vocab, train_rows

    seed_everything(cfg.seed)
    if mode == "fsdp":
        return load_sharded(parent, where, cfg.dtype, vocab_size, cfg.activation_checkpointing,
                            compile_blocks=cfg.compile, new_from=new_from).train()
    device = where.device if isinstance(where, Dist) else where
    model = load_model(parent, device=device).train()
    model.set_activation_checkpointing(cfg.activation_checkpointing)
    new_ids = extend_vocab(model, vocab_size, new_from) if vocab_size else []
    if cfg.lora is not None:
        from .lora import apply_lora
        bf16 = use_bf16(device, cfg.dtype)
        if cfg.lora.base_dtype == "bfloat16" and not bf16:
            raise ConfigError(f"lora.base_dtype 'bfloat16' needs bf16 compute, and dtype {cfg.dtype!r} on "
                              f"{device.type} computes in float32: set dtype to 'bfloat16'")
        base_dtype = ("bfloat16" if bf16 else "float32") if cfg.lora.base_dtype == "auto" else cfg.lora.base_dtype
        model = apply_lora(model, dataclasses.replace(cfg.lora, base_dtype=base_dtype))
        train_rows(model, new_ids)
    return model


def eval_starts(n_rows: int, batch_size: int, eval_batches: int, d: Dist, mode: str
                ) -> list[tuple[int, bool]]:
    """This rank's validation batches as (first row, counted): batch b (of at most eval_batches)
    goes to rank b % world_size. Under FSDP every rank must run as many forwards as the busiest one
    (each forward all-gathers), so a rank short of batches repeats its first one, not counted."""
    starts = list(range(0, n_rows, batch_size))[:eval_batches]
    mine = [(s, True) for b, s in enumerate(starts) if b % d.world_size == d.rank]
    if mode == "fsdp" and starts:
        mine += [(starts[0], False)] * (math.ceil(len(starts) / d.world_size) - len(mine))
    return mine


def fit_vocab(tok, mcfg, parent: Path) -> tuple[int | None, int | None, dict]:
    """(vocabulary to fit the parent to, or None; the first new id; the record for meta.json) for a
    chat stage whose tokenizer may carry chat tokens the parent has no trained rows for: rows it
    lacks, or padding rows of a table larger than its base tokenizer (posttrain/vocab.py). A
    mismatch that cannot be fixed is a DataError. The record says the stage's rows are fitted to
    its tokenizer, so a later stage does not start them again."""
    from .vocab import FITTED_KEY, fitted_vocab, new_token_ids

    fitted = fitted_vocab(load_meta(parent), mcfg.vocab_size)
    ids = new_token_ids(tok, mcfg.vocab_size, fitted, f"the parent {parent}")
    record = {FITTED_KEY: max(tok.vocab_size, fitted or 0)}
    if not ids:
        return None, None, record
    extended = {"from": ids[0], "to": tok.vocab_size, "tokens": [tok.id_to_token(i) for i in ids], "init": "mean"}
    if ids[0] < mcfg.vocab_size:  # some landed on rows of a padded table
        extended["embedding_rows"] = max(mcfg.vocab_size, tok.vocab_size)
    return tok.vocab_size, ids[0], {**record, "vocab_extended": extended}


def train_stage(cfg: StageConfig, prepare: Callable[[StageConfig, Dist], Stage], pipes=None,
                stop_at: int | None = None) -> dict:
    """Validate, prepare (read and check all data: nothing is written before this succeeds), run."""
    cfg.validate()
    d = setup_distributed(cfg.device)
    try:
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        stage = prepare(cfg, d)
        return run_stage(stage, d, pipes, stop_at)
    finally:
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def stage_main(argv: list[str] | None, prog: str, doc: str, config_cls, prepare) -> int:
    """`python -m tenali_model.posttrain.<stage> --config F [--stop-at-step K]`; exit 0 done, 2 bad
    config or data (nothing written), 1 anything else."""
    from .data import DataError

    die_with_torchrun()

    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help=f"{config_cls.__name__} JSON file")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="leave after this step with a checkpoint; rerun to continue")
    args = p.parse_args(argv)
    with open_pipes(int(os.environ.get("RANK", "0"))) as pipes:
        try:
            cfg = config_cls.from_json(args.config)
            cfg.validate()
            with preemption.handling():
                train_stage(cfg, prepare, pipes=pipes, stop_at=args.stop_at_step)
        except (ConfigError, DataError, TokenizerError, CheckpointError, FileNotFoundError) as e:
            msg = f"{prog}: error: {e}"
            print(msg, file=sys.stderr)
            if pipes is not None:
                pipes.log.error(msg)
            return 2
        except preemption.Stopped as e:
            return stopped(e, prog, pipes)
    return 0
