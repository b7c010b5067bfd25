"""Pretraining loop: one file, plain PyTorch, single process or torchrun.

    python -m tenali_model.train --config train.json [--stop-at-step K]
    torchrun --standalone --nproc_per_node=8 -m tenali_model.train --config train.json

The config is a `TrainConfig` JSON file (see config.py). A run resumes by itself from
<out_dir>/latest (weights, optimizer, step, data position, RNG), so a killed or preempted job
rerun with the same config continues instead of restarting; with a fixed seed on CPU the result
is bit-identical to an uninterrupted run. The config's schedule, weight decay and betas apply from the
resumed step on; where they or the tokens per step differ from the checkpoint's run, a note says so.
out_dir must be shared by all ranks (and nodes).

Features are switched by config, not by forks of this loop: `parallelism` (DDP or FSDP2, see
parallel.py), `activation_checkpointing` (model.py), `global_batch_tokens` (the step's size in
tokens over all ranks; grad_accum follows from it and the world size, so the same config means
the same optimisation on 1 or 64 GPUs), `dtype` (bf16 autocast / FSDP mixed precision).

Rank 0 appends one JSON object per line to <out_dir>/metrics.jsonl:
  {"kind": "train", "step", "loss", "lr", "grad_norm", "tokens_seen", "tokens_per_sec", "elapsed",
   "mfu" (only on GPUs whose peak is known: plan.peak_bf16_flops)}
  {"kind": "val", "step", "val_loss", "elapsed"}
("loss" is the optimised objective: cross-entropy, plus the z-loss term when z_loss > 0; val_loss
is always plain cross-entropy in nats/token. mfu = tokens_per_sec * plan.flops_per_token /
(peak bf16 FLOP/s * world_size), with flops_per_token = 6 * (non-embedding params + lm head)
+ 12 * n_layers * dim * seq_len.) When launched by Dagster Pipes, rank 0 alone opens
the Pipes session, streams progress as log lines and reports one asset materialization at the end
(its asset key is the Pipes extra "asset_key" when the launching step targets several assets),
after writing the same report to <out_dir>/report.json for a launcher whose Pipes channel lost it (report.py).
Exit status: 0 done, 2 bad config, missing/corrupt shards, checkpoints in out_dir of which none
verifies (a corrupt newest one alone is skipped, with a warning, for the one before) or no space left
to save one (a retry would fail the same way), 1 anything else.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import math
import os
import random
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from . import file_waits, preemption
from .checkpoint import (CheckpointError, capture_rng, check_space, latest_checkpoint,
                         list_checkpoints, load_config, load_meta, load_train_state, read_weights, rank_rng,
                         resolve_checkpoint, restore_rng, save_checkpoint, verify_checkpoint)
from .config import ConfigError, TrainConfig, atomic_write_text, num_params, resolve_parallelism
from .data import TokenLoader, iter_eval_windows, shard_token_count
from .evaluate import loss_sum
from .memory import device_memory
from .model import Transformer
from .parallel import (build_model, clip_grad_norm, full_state, grad_sync, load_full_state, reshard,
                       wrap_ddp, zero_grads)
from .pipes_s3 import PatientS3, pipes_s3_config
from .plan import checkpoint_bytes, compile_scope, flops_per_token, gather_check, memory_check, peak_bf16_flops
from .report import publish as publish_report
from .sharded import load_checkpoint_state, save_sharded, saves_sharded

try:  # optional: only present where Dagster launches us; never import dagster itself here
    import dagster_pipes
except ImportError:  # pragma: no cover - the GPU image may not ship it
    dagster_pipes = None


# --- setup -------------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str) -> Dist:
    """Read torchrun's RANK/WORLD_SIZE/LOCAL_RANK; NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_pref == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but CUDA is not available")
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Dist(rank, local_rank, world, device)


def use_bf16(device: torch.device, dtype: str) -> bool:
    """bf16 compute where asked for or, on 'auto', on CUDA GPUs that support it."""
    return dtype == "bfloat16" or (
        dtype == "auto" and device.type == "cuda" and torch.cuda.is_bf16_supported())


def autocast_context(device: torch.device, dtype: str):
    """bf16 autocast (weights and optimizer stay float32) when use_bf16; otherwise float32."""
    if not use_bf16(device, dtype):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def device_peak_flops(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of the device (None on CPUs and unknown GPUs: no MFU then)."""
    if device.type != "cuda":
        return None
    return peak_bf16_flops(torch.cuda.get_device_name(device))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to lr over warmup_steps, then cosine decay to min_lr at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if step >= cfg.steps:
        return cfg.min_lr
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices; leave norms, biases and embeddings (and the lm head tied to it) alone, and any
    table that trains only some rows behind a gradient mask (posttrain.vocab.train_rows): decoupled
    decay would shrink the rows the mask freezes."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in model.parameters():  # shared (tied) parameters appear once
        if p.requires_grad:
            masked = getattr(p, "trainable_row_count", None) is not None
            (no_decay if p.dim() < 2 or id(p) in embeddings or masked else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def fused_adamw(device: torch.device) -> bool:
    """AdamW's single-kernel implementation where torch has one: CUDA, and CPU (3.6x faster than the
    default for-each one there for the demo model's parameters: bench/bench_train_parts.py)."""
    return device.type in ("cuda", "cpu")


def keep_configured_hyperparameters(optimizer: torch.optim.Optimizer, configured: list[tuple], say) -> None:
    """Put the config's weight decay and betas (`configured`: each group's, taken before the load)
    back after loading a checkpoint's optimizer state, whose param groups carry the values it was
    saved with: a resume that changes them must train with them, as meta.json will record."""
    saved = [(g["weight_decay"], tuple(g["betas"])) for g in optimizer.param_groups]
    if saved != configured:  # group 0 is the decayed one (param_groups)
        say(f"note: the checkpoint was trained with weight_decay {saved[0][0]}, betas {saved[0][1]}; "
            f"continuing with the config's weight_decay {configured[0][0]}, betas {configured[0][1]}")
    for group, (weight_decay, betas) in zip(optimizer.param_groups, configured):
        group["weight_decay"], group["betas"] = weight_decay, betas


def optimizer_step(model: nn.Module, raw_model: nn.Module, optimizer: torch.optim.Optimizer, mode: str,
                   next_batch, grad_accum: int, device: torch.device, autocast, z_loss: float,
                   grad_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step over grad_accum micro-batches from next_batch() -> (x, y) on the CPU:
    forward with the fused loss (no logits), backward (DDP syncs on the last micro-batch only),
    clipping (grad_clip <= 0: measured, not clipped), AdamW, zero_grad. `model` is what is called
    (compiled, DDP-wrapped), `raw_model` the module itself. Returns (sum of the micro-batch losses,
    gradient norm) as device tensors, so nothing waits for the GPU here. bench/bench_mfu.py times
    exactly this."""
    loss_acc = torch.zeros((), device=device)
    for micro in range(grad_accum):
        x, y = (t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t
                for t in next_batch())
        with grad_sync(model, mode, last_micro_step=micro == grad_accum - 1):
            with autocast:
                loss = model(x, y, z_loss=z_loss, with_logits=False)[1]  # fused loss, no logits
            (loss / grad_accum).backward()
        loss_acc += loss.detach()
    grad_norm = clip_grad_norm(raw_model, grad_clip if grad_clip > 0 else float("inf"))
    optimizer.step()
    zero_grads(optimizer, mode)
    return loss_acc, grad_norm


def gather_rng(d: Dist) -> list[dict] | None:
    """Every rank's RNG state, for rank 0's checkpoint (a collective); None on one rank."""
    if d.world_size == 1:
        return None
    states: list = [None] * d.world_size
    dist.all_gather_object(states, capture_rng())
    return states


def resume_notes(saved: dict, saved_world_size: int | None, cfg: TrainConfig, seq_len: int,
                 world_size: int, tokens_per_step: int, step: int) -> list[str]:
    """What a resumed run changes against the run that saved the checkpoint (`saved`: its training
    config from meta.json; `saved_world_size`: its loader's) and would otherwise change unsaid: the
    learning-rate schedule (steps, warmup_steps, lr, min_lr) and the tokens per optimizer step."""
    notes = []
    changed = [k for k in ("steps", "warmup_steps", "lr", "min_lr") if k in saved and saved[k] != getattr(cfg, k)]
    if changed:
        before = SimpleNamespace(**{k: saved.get(k, getattr(cfg, k))
                                    for k in ("steps", "warmup_steps", "lr", "min_lr")})
        notes.append("note: the learning-rate schedule changed since the checkpoint ("
                     + ", ".join(f"{k} {saved[k]} -> {getattr(cfg, k)}" for k in changed)
                     + f"): step {step + 1} trains at lr {lr_at(step, cfg):.2e} where the checkpoint's "
                     f"schedule gives {lr_at(step, before):.2e}")
    if saved_world_size and {"batch_size", "grad_accum", "global_batch_tokens"} <= saved.keys():
        before = saved["global_batch_tokens"] or (
            saved["batch_size"] * (saved.get("seq_len") or seq_len) * saved_world_size * saved["grad_accum"])
        if before != tokens_per_step:
            keep = (f"set global_batch_tokens to {before} to keep it"
                    if before % (cfg.batch_size * seq_len * world_size) == 0 else
                    f"batch_size * seq_len * {world_size} rank(s) does not divide it: change batch_size to keep it")
            notes.append(f"note: {tokens_per_step:,} tokens per step where the checkpoint trained with "
                         f"{before:,} ({saved_world_size} rank(s) then, {world_size} now); {keep}")
    return notes


def check_finite(loss: float, grad_norm: float, step: int, out_dir: Path) -> None:
    """Raise before a diverged model is logged as trained or saved: a non-finite loss, or a
    non-finite gradient norm (the step just taken then wrote NaN into the weights)."""
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {grad_norm}"
        last = latest_checkpoint(out_dir)
        raise FloatingPointError(f"{what} at step {step}; "
                                 + (f"the last good checkpoint is {last}" if last else "no checkpoint was saved")
                                 + " (lower the learning rate, or check the data)")


def check_inputs(cfg: TrainConfig, world_size: int = 1) -> int:
    """Validate the config and every shard header before any work; returns train token count."""
    cfg.validate()
    cfg.resolved_grad_accum(world_size)  # global_batch_tokens must divide evenly
    missing = [p for p in [*cfg.train_shards, *cfg.val_shards] if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"token shard(s) not found: {missing}")
    try:  # a read-only mount or a path through a file: say so now, not in a traceback at the first save
        Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=cfg.out_dir):
            pass
    except OSError as e:
        raise ConfigError(f"out_dir {cfg.out_dir} cannot be written: {e}") from None
    total = sum(shard_token_count(p) for p in cfg.train_shards)  # ValueError on a bad header
    val_total = sum(shard_token_count(p) for p in cfg.val_shards)
    seq_len = cfg.resolved_seq_len()
    if cfg.val_shards and val_total < seq_len + 1:  # else no val loss is ever logged, silently
        raise ConfigError(f"val shards hold {val_total} tokens: too few for one window of {seq_len + 1} tokens "
                          "(give longer val shards, a shorter seq_len, or no val_shards)")
    if (total - 1) // seq_len < world_size:
        raise ConfigError(f"train shards hold {total} tokens: too few for one window of "
                          f"{seq_len + 1} tokens per rank ({world_size} ranks)")
    return total


def check_host_memory(d: Dist, need: int, say) -> None:
    """Rank 0 of a GPU training, before its model is built: ConfigError when its host cannot hold a
    consolidated checkpoint of `need` bytes (`plan.gather_check`), a note when it may not. On a CPU the
    training's own memory check already weighs the machine's RAM."""
    if not d.is_main or d.device.type != "cuda":
        return
    host = torch.device("cpu")
    total, now = device_memory(host, available=False), device_memory(host, available=True)
    if total is None or now is None:
        return
    error, warning = gather_check(need, total=total[0], available=now[0], where=f"rank 0's host ({total[1]})")
    if error:
        raise ConfigError(error)
    if warning:
        say(warning)


def resume_checkpoint(out_dir: Path, d: Dist, say) -> Path | None:
    """The checkpoint to resume from: the one `latest` names or, when that fails verification (a
    flipped byte, a file lost by the storage), the newest older one that passes, with a warning; None
    when out_dir holds none. Rank 0 lists the candidates; every rank hashes its share of each
    candidate's files (`verify_checkpoint`'s part) and all agree on the first that passes (collectives).
    CheckpointError, naming each one and why, when checkpoints exist but none passes."""
    candidates = None
    if d.is_main:
        newest, found = latest_checkpoint(out_dir), list_checkpoints(out_dir)
        older = found[:found.index(newest)] if newest in found else []
        candidates = [] if newest is None else [str(newest), *map(str, reversed(older))]
    if d.world_size > 1:
        shared = [candidates]
        dist.broadcast_object_list(shared, src=0, group=file_waits.group())
        candidates = shared[0]
    choice, problems = None, []
    for ckpt in map(Path, candidates):
        try:
            verify_checkpoint(ckpt, part=(d.rank, d.world_size))
            error = None
        except CheckpointError as e:
            error = str(e)
        errors = [error]
        if d.world_size > 1:
            errors = [None] * d.world_size
            dist.all_gather_object(errors, error, group=file_waits.group())
        if not any(errors):
            choice = ckpt
            break
        problem = next(e for e in errors if e)
        problems.append(problem)
        say(f"warning: cannot resume from {ckpt.name}: {problem}")
    if choice is None and problems:
        raise CheckpointError(f"no checkpoint in {out_dir} can be resumed: " + "; ".join(problems)
                              + " (move them out of the way to start afresh)")
    if choice is not None and problems:
        say(f"warning: resuming from the older {choice.name} instead")
    return choice


# --- metrics -----------------------------------------------------------------------------------

class MetricsLog:
    """metrics.jsonl on rank 0. On resume, lines past the checkpoint's step (written by a run that
    died before its next checkpoint) are dropped so the file reads as one clean history."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        self.records: list[dict] = []
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a killed run
                if rec.get("step", 0) <= resume_step:
                    self.records.append(rec)
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, rec: dict) -> None:
        self.records.append(rec)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def train_losses(self) -> list[float]:
        return [r["loss"] for r in self.records if r.get("kind") == "train"]

    def val_losses(self) -> list[float]:
        return [r["val_loss"] for r in self.records if r.get("kind") == "val"]

    def loss_table(self, max_rows: int = 20) -> str:
        """Markdown table of the loss curve, subsampled to about max_rows rows."""
        val = {r["step"]: r["val_loss"] for r in self.records if r.get("kind") == "val"}
        train = [r for r in self.records if r.get("kind") == "train"]
        stride = max(1, math.ceil(len(train) / max_rows))
        rows = train[::stride]
        if train and rows[-1] is not train[-1]:
            rows.append(train[-1])
        lines = ["| step | loss | val_loss |", "|---:|---:|---:|"]
        for r in rows:
            v = val.get(r["step"])
            lines.append(f"| {r['step']} | {r['loss']:.4f} | {'' if v is None else f'{v:.4f}'} |")
        return "\n".join(lines)


# --- the loop ----------------------------------------------------------------------------------

def train(cfg: TrainConfig, pipes=None, stop_at: int | None = None) -> dict:
    """Train (or continue training) as cfg says; returns the summary reported to Pipes.

    stop_at: leave after that step with a checkpoint, as a preempted job would (tests and
    time-boxed jobs); rerunning continues to cfg.steps.
    """
    d = setup_distributed(cfg.device)
    try:
        check_inputs(cfg, d.world_size)
        return _train(cfg, d, pipes, stop_at)
    finally:
        if d.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, d: Dist, pipes, stop_at: int | None) -> dict:
    t_session = time.time()
    say = _printer(d, pipes)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # same on every rank, so replicas start identical

    mcfg = cfg.model_config()
    seq_len = cfg.resolved_seq_len()
    grad_accum = cfg.resolved_grad_accum(d.world_size)
    mode = resolve_parallelism(cfg.parallelism, num_params(mcfg), d.world_size)
    if (room := device_memory(d.device, available=False)) is not None:  # before the model: not an OOM kill
        error, warning = memory_check(
            mcfg, parallelism=mode, world_size=d.world_size, micro_batch=cfg.batch_size, seq_len=seq_len,
            local_processes=1 if d.device.type == "cuda" else int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
            activation_checkpointing=cfg.activation_checkpointing, available=room[0], where=room[1],
            grad_accum=grad_accum, compile=cfg.compile, bf16=use_bf16(d.device, cfg.dtype))
        if error:
            raise ConfigError(error)
        if warning:
            say(warning)
    check_host_memory(d, checkpoint_bytes(num_params(mcfg)), say)

    out_dir = Path(cfg.out_dir)
    if d.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if note := check_space(out_dir, checkpoint_bytes(num_params(mcfg))):  # fail before training, not at a save
            say(note)

    ckpt = resume_checkpoint(out_dir, d, say)  # verified by rank 0: read below without hashing again
    if ckpt is not None:
        saved = load_config(ckpt)
        if saved != mcfg:
            raise ConfigError(f"{ckpt} holds a different model ({saved}) than the config asks for "
                              f"({mcfg}); use a new out_dir")
    model = build_model(mcfg, mode, d.device, world_size=d.world_size,
                        activation_checkpointing=cfg.activation_checkpointing,
                        bf16=use_bf16(d.device, cfg.dtype),
                        compile_blocks=compile_scope(cfg.compile, mode) == "blocks")
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr,
                                  betas=(cfg.beta1, cfg.beta2), eps=1e-8, fused=fused_adamw(d.device))
    loader = TokenLoader(cfg.train_shards, seq_len, cfg.batch_size, d.rank, d.world_size, cfg.seed,
                         vocab_size=mcfg.vocab_size)

    step, tokens_seen, elapsed_before, saved_world_size = 0, 0, 0.0, None
    # Under FSDP rank 0 alone reads the weights and optimizer state and broadcasts them; the other
    # ranks map train_state.pt only for its small entries.
    reads_state = mode != "fsdp" or d.is_main
    if ckpt is not None:
        state = load_train_state(ckpt, mmap=mode == "fsdp", verify=False)
        has_optimizer = state["optimizer"] is not None  # None in an imported (hf.py) checkpoint
        configured = [(g["weight_decay"], g["betas"]) for g in optimizer.param_groups]
        load_checkpoint_state(ckpt, model, optimizer if has_optimizer else None, mode, d.is_main,
                              state["optimizer"])
        keep_configured_hyperparameters(optimizer, configured, say)
        if state.get("loader"):
            loader.load_state_dict(state["loader"])
        restore_rng(rank_rng(state, d.rank, d.world_size))
        step, tokens_seen = state["step"], state["tokens_seen"]
        elapsed_before = float(state.get("elapsed", 0.0))
        saved_world_size = (state.get("loader") or {}).get("world_size")
        del state
        say(f"resuming from {ckpt} at step {step} ({tokens_seen:,} tokens seen)")
    elif cfg.init_from:  # continued pretraining: the parent's weights, a fresh optimizer and data
        parent = resolve_checkpoint(cfg.init_from)
        load_full_state(model, mode, read_weights(parent)[0] if reads_state else None)
        say(f"starting from {parent}")
    elif mode == "fsdp":  # rank 0's initialisation: the weights one process would start from
        load_full_state(model, mode, Transformer(mcfg).state_dict() if d.is_main else None)
    # what the lineage recorded and later stages read: the rows a chat stage fitted (posttrain/vocab.py),
    # carried from the parent (or, resuming, from this run's own checkpoint)
    lineage_meta = {k: v for k, v in load_meta(ckpt or resolve_checkpoint(cfg.init_from)).items()
                    if k == "chat_vocab_size"} if ckpt is not None or cfg.init_from else {}
    resumed_from = step
    last_saved = step if ckpt is not None else None
    metrics = MetricsLog(out_dir / "metrics.jsonl", resume_step=step) if d.is_main else None

    raw_model = model  # FSDP shards in place: raw_model is the sharded module itself
    if compile_scope(cfg.compile, mode) == "model":  # under FSDP build_model compiled each block
        model = torch.compile(model)
    if mode == "ddp":
        model = wrap_ddp(model, d.device)
    autocast = autocast_context(d.device, cfg.dtype)
    n_params = raw_model.num_params()
    tokens_per_step = cfg.batch_size * seq_len * grad_accum * d.world_size
    if ckpt is not None and step < cfg.steps:
        for note in resume_notes(load_meta(ckpt).get("train_config") or {}, saved_world_size, cfg,
                                 seq_len, d.world_size, tokens_per_step, step):
            say(note)
    if cfg.warmup_steps >= cfg.steps > step:
        say(f"note: warmup_steps ({cfg.warmup_steps}) is not below steps ({cfg.steps}): the run ends while the "
            "learning rate is still warming up and it never decays; lower warmup_steps or raise steps")
    flops_tok = flops_per_token(mcfg, seq_len)
    peak = device_peak_flops(d.device)

    def mfu(tokens_per_sec: float) -> float | None:
        return tokens_per_sec * flops_tok / (peak * d.world_size) if peak else None

    say(f"model {n_params:,} params | {d.world_size} rank(s) on {d.device.type}, {mode}"
        f"{' + activation checkpointing' if cfg.activation_checkpointing else ''}"
        f"{(' + torch.compile per block' if mode == 'fsdp' else ' + torch.compile') if cfg.compile else ''} | "
        f"{tokens_per_step:,} tokens/step (grad_accum {grad_accum}) | steps {step} -> {cfg.steps}")

    t_start, tokens_at_start = time.time(), tokens_seen

    def elapsed() -> float:
        """Wall seconds of the whole run, across resumes."""
        return elapsed_before + time.time() - t_start

    def evaluate() -> float | None:
        if not cfg.val_shards:
            return None
        windows = iter_eval_windows(cfg.val_shards, seq_len, cfg.batch_size, cfg.eval_batches,
                                    d.rank, d.world_size, vocab_size=mcfg.vocab_size)
        if mode == "fsdp":  # every rank must run the same number of forwards (they all-gather)
            windows = pad_batches(windows, eval_batches_per_rank(cfg, seq_len, d.world_size), seq_len)
        total, count = loss_sum(raw_model, windows, d.device, autocast)
        reshard(raw_model)  # frees the root's gathered weights, which no backward will reshard
        if d.world_size > 1:
            t = torch.tensor([total, count], dtype=torch.float64, device=d.device)
            dist.all_reduce(t)
            total, count = t[0].item(), t[1].item()
        return total / count if count else None

    sharded_saves = saves_sharded(cfg.checkpoint_format, mode)

    def checkpoint(loss: float | None, val_loss: float | None) -> None:
        rngs = gather_rng(d)
        common = dict(step=step, tokens_seen=tokens_seen, loss=loss, val_loss=val_loss,
                      train_config=cfg.to_dict(), extra_state={"elapsed": elapsed()}, keep_last=cfg.keep_last,
                      rng_per_rank=rngs, extra_meta=lineage_meta)
        t0 = time.time()
        if sharded_saves and step < cfg.steps:  # a collective: every rank writes its own shard
            path = save_sharded(out_dir, model=raw_model, optimizer=optimizer,
                                loader_state=loader.state_dict() if d.is_main else None, **common)
        else:  # the run's last (or format "full"): consolidated, what evaluation and export read
            if mode == "fsdp" or d.is_main:  # a collective under FSDP; rank 0 gets the full state
                model_state, optimizer_state = full_state(raw_model, optimizer, mode)
            if d.is_main:
                path = save_checkpoint(out_dir, model=raw_model, model_state=model_state,
                                       optimizer_state=optimizer_state, loader_state=loader.state_dict(),
                                       **common)
        if d.is_main:
            say(f"saved {path} in {time.time() - t0:.1f} s")
        file_waits.barrier()  # the others wait while rank 0 writes (and hashes) a consolidated checkpoint

    t_log, tokens_log = time.time(), tokens_seen
    last_loss = val_loss = None
    val_step = None
    end = cfg.steps if stop_at is None else min(stop_at, cfg.steps)
    while step < end:
        lr = lr_at(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_acc, grad_norm = optimizer_step(model, raw_model, optimizer, mode, loader.next_batch,
                                             grad_accum, d.device, autocast, cfg.z_loss, cfg.grad_clip)
        step += 1
        tokens_seen += tokens_per_step

        stopping = preemption.requested(d.world_size)  # SIGTERM/SIGINT: save this step, then stop
        saving = (cfg.ckpt_every and step % cfg.ckpt_every == 0) or step == end or stopping
        if saving or step % cfg.log_every == 0:
            loss_mean = loss_acc / grad_accum
            if d.world_size > 1:
                dist.all_reduce(loss_mean)
                loss_mean = loss_mean / d.world_size
            last_loss = loss_mean.item()
            check_finite(last_loss, grad_norm.item(), step, out_dir)  # before a NaN model is saved
        if step % cfg.log_every == 0 or step == end or stopping:
            now = time.time()
            tps = (tokens_seen - tokens_log) / max(now - t_log, 1e-9)
            if d.is_main:
                rec = {"kind": "train", "step": step, "loss": last_loss, "lr": lr,
                       "grad_norm": grad_norm.item(), "tokens_seen": tokens_seen,
                       "tokens_per_sec": tps, "elapsed": elapsed()}
                if peak:
                    rec["mfu"] = mfu(tps)
                metrics.append(rec)
                say(f"step {step}/{cfg.steps} | loss {last_loss:.4f} | lr {lr:.2e} | "
                    f"grad {grad_norm.item():.3f} | {tps:,.0f} tok/s"
                    + (f" | mfu {rec['mfu']:.1%}" if peak else ""))
            t_log, tokens_log = time.time(), tokens_seen
        if (cfg.eval_every and step % cfg.eval_every == 0) or step == cfg.steps:
            val_loss, val_step = evaluate(), step
            if val_loss is not None and d.is_main:
                metrics.append({"kind": "val", "step": step, "val_loss": val_loss, "elapsed": elapsed()})
                say(f"step {step} | val_loss {val_loss:.4f}")
        if saving:
            checkpoint(last_loss, val_loss if val_step == step else None)
            last_saved = step
        if stopping and step < end:  # at the end anyway: finish as usual (report, exit 0)
            raise preemption.Stopped(stopping, step, str(out_dir))
        if step % cfg.log_every == 0 or val_step == step or last_saved == step:
            t_log, tokens_log = time.time(), tokens_seen  # keep eval/save time out of tok/s

    train_seconds = time.time() - t_start
    if last_saved != step:  # only when no step ran and no checkpoint existed (stop_at=0)
        if val_step != step:
            val_loss, val_step = evaluate(), step
        checkpoint(last_loss, val_loss)
    ckpt_path = out_dir / (out_dir / "latest").read_text().strip() if d.is_main else None

    if not d.is_main:
        return {}
    tps_run = (tokens_seen - tokens_at_start) / max(train_seconds, 1e-9)
    summary = _summary(cfg, metrics, step, tokens_seen, ckpt_path, n_params, d.world_size,
                       resumed_from, tps_run, time.time() - t_session)
    summary.update(mfu=mfu(tps_run) if step > resumed_from else None, parallelism=mode,
                   global_batch_tokens=tokens_per_step)
    publish_report(pipes, out_dir, summary, ckpt_path, metrics.loss_table())  # and report.json
    return summary


def eval_batches_per_rank(cfg, seq_len: int, world_size: int) -> int:
    """The most validation batches any rank gets from iter_eval_windows (cfg: its val_shards,
    batch_size and eval_batches; a TrainConfig or a distillation config)."""
    n_windows = max(0, sum(shard_token_count(p) for p in cfg.val_shards) - 1) // seq_len
    n_batches = min(math.ceil(n_windows / cfg.batch_size), cfg.eval_batches)
    return math.ceil(n_batches / world_size)


def pad_batches(batches, count: int, seq_len: int):
    """The batches, then all-ignored ones (targets -1: no loss, no tokens) up to `count`."""
    n = 0
    for n, batch in enumerate(batches, 1):
        yield batch
    for _ in range(count - n):
        yield torch.zeros(1, seq_len, dtype=torch.long), torch.full((1, seq_len), -1, dtype=torch.long)


def _summary(cfg, metrics: MetricsLog, step, tokens_seen, ckpt_path, n_params, world_size,
             resumed_from, tokens_per_sec, wall_seconds) -> dict:
    losses, vals = metrics.train_losses(), metrics.val_losses()
    tail = losses[-5:]
    return {
        "step": step,
        "steps_target": cfg.steps,
        "complete": step >= cfg.steps,
        "tokens_seen": tokens_seen,
        "initial_loss": losses[0] if losses else None,
        "final_loss": sum(tail) / len(tail) if tail else None,
        "val_loss": vals[-1] if vals else None,
        "min_val_loss": min(vals) if vals else None,
        "checkpoint": str(ckpt_path),
        "num_params": n_params,
        "tokens_per_sec": tokens_per_sec,
        "wall_seconds": wall_seconds,
        "world_size": world_size,
        "resumed_from_step": resumed_from,
    }


def _printer(d: Dist, pipes):
    """Rank 0 prints, or streams to Pipes when launched by Dagster (whose log shows it, so printing
    too would show every line twice); other ranks stay quiet."""
    def say(msg: str) -> None:
        if d.is_main:
            if pipes is not None:
                pipes.log.info(msg)
            else:
                print(msg, flush=True)
    return say


# --- entry point -------------------------------------------------------------------------------

def open_pipes(rank: int):
    """The Dagster Pipes session on rank 0 when Dagster launched us; else a no-op context.

    Only rank 0 may open it: several ranks reporting the same asset fail the Dagster step.
    """
    if rank != 0 or dagster_pipes is None:
        return contextlib.nullcontext(None)
    params = dagster_pipes.PipesEnvVarParamsLoader()
    if not params.is_dagster_pipes_process():
        return contextlib.nullcontext(None)
    # The cluster launchers pass context and messages through S3 ({"bucket", "key"} and
    # {"bucket", "key_prefix"}); a local launch passes a file path or stdio. boto3 is only needed,
    # and only imported, in the S3 case; it honours AWS_ENDPOINT_URL_S3 for MinIO and tests.
    s3 = None
    if "bucket" in params.load_context_params() or "bucket" in params.load_messages_params():
        try:
            import boto3
        except ImportError:
            raise SystemExit("tenali_model.train: error: Dagster passed Pipes params on S3 but boto3 is "
                             "not installed in this image: pip install boto3") from None
        s3 = boto3.client("s3", config=pipes_s3_config())
    return dagster_pipes.open_dagster_pipes(
        params_loader=params,
        context_loader=(dagster_pipes.PipesS3ContextLoader(s3) if "bucket" in params.load_context_params()
                        else None),
        message_writer=(dagster_pipes.PipesS3MessageWriter(PatientS3(s3), interval=5)  # outages: pipes_s3
                        if "bucket" in params.load_messages_params() else None))


def die_with_torchrun() -> None:
    """Under torchrun, have the kernel end this worker when the torchrun agent that started it dies:
    the agent puts each worker in a session of its own, so an agent killed outright (kill -9, an OOM
    kill) would leave its workers training and writing checkpoints into out_dir next to a rerun's. The
    kernel sends SIGTERM: once training has begun that is a stop request (preemption.py), so the workers
    save the step they are at and leave, or the watchdog ends one stuck in a collective."""
    if "TORCHELASTIC_RUN_ID" not in os.environ or not sys.platform.startswith("linux"):
        return
    agent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != agent:  # it died before the call took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    die_with_torchrun()
    p = argparse.ArgumentParser(prog="python -m tenali_model.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="TrainConfig JSON file")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="leave after this step with a checkpoint; rerun to continue")
    args = p.parse_args(argv)
    with open_pipes(int(os.environ.get("RANK", "0"))) as pipes:
        try:
            cfg = TrainConfig.from_json(args.config)
            check_inputs(cfg, int(os.environ.get("WORLD_SIZE", "1")))
        except (ConfigError, OSError, ValueError) as e:
            msg = f"tenali_model.train: error: {e}"
            print(msg, file=sys.stderr)
            if pipes is not None:
                pipes.log.error(msg)
            return 2
        try:
            with preemption.handling():
                train(cfg, pipes=pipes, stop_at=args.stop_at_step)
        except (ConfigError, CheckpointError) as e:  # e.g. out_dir holds another model, or none readable
            msg = f"tenali_model.train: error: {e}"
            print(msg, file=sys.stderr)
            if pipes is not None:
                pipes.log.error(msg)
            return 2
        except preemption.Stopped as e:
            return stopped(e, "tenali_model.train", pipes)
    return 0


def stopped(e: preemption.Stopped, prog: str, pipes) -> int:
    """Say (rank 0) that a signal stopped the run after a checkpoint; its exit status."""
    if int(os.environ.get("RANK", "0")) == 0:
        msg = f"{prog}: {e}"
        print(msg, file=sys.stderr, flush=True)
        if pipes is not None:
            pipes.log.warning(msg)
    return e.exit_code


def as_worker(entry) -> int:
    """Run `entry` (a module's main) under torchelastic's `@record`: an exception that escapes it is
    written to torchrun's error file, so torchrun's "Root Cause" report, the last lines of the log a
    launcher's failure message quotes, ends with the worker's traceback instead of "error_file: <N/A>".
    (Only for the `python -m` entry points: `@record` also turns on faulthandler for the process.)"""
    from torch.distributed.elastic.multiprocessing.errors import record

    return record(entry)()


if __name__ == "__main__":
    sys.exit(as_worker(main))
