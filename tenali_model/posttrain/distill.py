"""Knowledge distillation: a student on the token shards against a teacher's next-token distribution.

    python -m tenali_model.posttrain.distill --config distill.json [--stop-at-step K]
    torchrun --standalone --nproc_per_node=8 -m tenali_model.posttrain.distill --config distill.json

Per token, with student logits s, teacher logits t, temperature T and weight alpha of the phase:

    loss = alpha * T^2 * KL(softmax(t / T) || softmax(s / T)) + (1 - alpha) * CE(s, next token)

(T^2 keeps the KL gradients' scale independent of T, as in Hinton et al. 2015.) The config's
`phases` give steps, T, alpha, lr and schedule per phase (config.seed_phases: the 51M seed's
T 2.5 / alpha 0.7 then T 3.0 / alpha 0.4, one-cycle each). The student starts from init_from (a
pretrained or freshly initialised Tenali checkpoint); the teacher is a Tenali checkpoint or a Hugging
Face causal-LM directory with the same vocabulary, which is checked from the config files before
any weight is loaded. Teacher logits are computed on the fly under no_grad, in bfloat16 on CUDA;
the student's are not held whole (`chunked_distill_loss`).

metrics.jsonl train records add "kl" and "ce" (per-token means); val_loss is the student's plain
cross-entropy on val_shards.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from ..checkpoint import load_config, load_model, resolve_checkpoint
from ..config import ConfigError
from ..data import TokenLoader, iter_eval_windows, shard_token_count
from ..evaluate import loss_sum
from ..loss import linear_distill_loss
from ..plan import flops_per_token
from ..train import Dist, eval_batches_per_rank, pad_batches
from .config import DistillConfig, Phase
from .data import DataError
from .loop import Stage, build_student, load_parent, stage_main, stage_parallelism, train_stage


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float, alpha: float) -> tuple[torch.Tensor, int, dict]:
    """(sum over tokens of the loss above, token count, {"kl": sum, "ce": sum}); targets -1 are skipped."""
    keep = targets.reshape(-1) != -1
    V = student_logits.size(-1)
    s = student_logits.reshape(-1, V)[keep].float()
    t = teacher_logits.reshape(-1, V)[keep].float()
    y = targets.reshape(-1)[keep]
    log_ps = F.log_softmax(s / temperature, dim=-1)
    log_pt = F.log_softmax(t / temperature, dim=-1)
    kl = F.kl_div(log_ps, log_pt, log_target=True, reduction="none").sum(-1)
    ce = F.cross_entropy(s, y, reduction="none")
    loss = alpha * temperature ** 2 * kl + (1 - alpha) * ce
    return loss.sum(), int(keep.sum()), {"kl": kl.sum().detach(), "ce": ce.sum().detach()}


def chunked_distill_loss(h: torch.Tensor, weight: torch.Tensor, teacher_logits: torch.Tensor,
                         targets: torch.Tensor, temperature: float, alpha: float) -> tuple[torch.Tensor, int, dict]:
    """`distill_loss` from the student's final hidden states h [B, T, D] and head weight [V, D]:
    the same value and gradients, with the head and the loss run a chunk of rows at a time
    (`loss.linear_distill_loss`), so the student's [B, T, V] logits, their two log-softmaxes and the
    KL terms are never held whole; the teacher's logits are (bf16 on CUDA)."""
    V = weight.shape[0]
    y = targets.reshape(-1)
    loss, kl, ce = linear_distill_loss(h.reshape(-1, h.shape[-1]), weight, teacher_logits.reshape(-1, V), y,
                                       temperature, alpha)
    return loss, int((y != -1).sum()), {"kl": kl, "ce": ce}


# --- the teacher ---------------------------------------------------------------------------------

def is_hf_dir(path: Path) -> bool:
    cfg = path / "config.json"
    if not cfg.is_file() or (path / "meta.json").is_file():
        return False
    try:
        return "model_type" in json.loads(cfg.read_text())
    except json.JSONDecodeError:
        return False


def teacher_shape(path: str) -> dict:
    """{"kind", "vocab_size", "max_seq_len", "flops_per_token"(per seq_len 1)} from config files only."""
    p = Path(path)
    if is_hf_dir(p):
        from ..hf import model_config_from_hf

        hf = json.loads((p / "config.json").read_text())
        try:
            mcfg = model_config_from_hf(hf)
        except Exception:  # another architecture: transformers can still run it
            mcfg = None
        vocab = hf.get("vocab_size") or hf.get("text_config", {}).get("vocab_size")
        return {"kind": "hf", "path": p, "vocab_size": vocab, "config": mcfg,
                "max_seq_len": hf.get("max_position_embeddings")}
    ckpt = resolve_checkpoint(p)
    mcfg = load_config(ckpt)
    return {"kind": "tenali", "path": ckpt, "vocab_size": mcfg.vocab_size, "config": mcfg,
            "max_seq_len": mcfg.max_seq_len}


class Teacher:
    """A frozen teacher: `logits(x)` under no_grad, in the teacher's dtype (bf16 on CUDA: the
    [B, T, V] logits are held for the whole step, 3.3 GB instead of 6.6 for 8 x 4,096 tokens of a
    50k vocabulary; the loss upcasts them a chunk at a time)."""

    def __init__(self, shape: dict, device: torch.device, dtype: torch.dtype):
        self.kind, self.device, self.dtype = shape["kind"], device, dtype
        if self.kind == "hf":
            import transformers

            self.model = transformers.AutoModelForCausalLM.from_pretrained(shape["path"], dtype=dtype)
        else:
            # built on the device in its dtype, the weights cast in one tensor at a time: no float32 copy
            self.model = load_model(shape["path"], device=device, dtype=dtype)
        self.model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "hf":
            return self.model(input_ids=x).logits.to(self.dtype)
        return self.model.lm_head(self.model(x, hidden=True)[0]).to(self.dtype)  # no float32 [B, T, V]


def prepare(cfg: DistillConfig, d: Dist) -> Stage:
    parent, mcfg, seq_len = load_parent(cfg, d.device)
    shape = teacher_shape(cfg.teacher)
    if shape["vocab_size"] != mcfg.vocab_size:
        raise ConfigError(f"teacher {cfg.teacher} has a vocabulary of {shape['vocab_size']} but the student "
                          f"{parent} has {mcfg.vocab_size}: distillation needs the same tokenizer on both "
                          "sides (re-encode the shards or pick a teacher trained with this tokenizer; a vocabulary "
                          "extended with the chat tokens counts as another one, so distil before instruction tuning, "
                          "or from a teacher extended the same way)")
    if shape["max_seq_len"] is not None and shape["max_seq_len"] < seq_len:
        raise ConfigError(f"seq_len {seq_len} exceeds the teacher's context of {shape['max_seq_len']} tokens")
    missing = [p for p in [*cfg.train_shards, *cfg.val_shards] if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"token shard(s) not found: {missing}")
    try:  # a bad header or too few tokens: a data error (exit 2) before any compute
        for p in cfg.val_shards:
            shard_token_count(p)
        loader = TokenLoader(cfg.train_shards, seq_len, cfg.batch_size, d.rank, d.world_size, cfg.seed,
                             vocab_size=mcfg.vocab_size)
    except ValueError as e:
        raise DataError(str(e)) from e
    bf16 = cfg.teacher_dtype == "bfloat16" or (cfg.teacher_dtype == "auto" and d.device.type == "cuda")
    mode = stage_parallelism(cfg, mcfg, d.world_size)
    student = build_student(cfg, parent, d, mode=mode)
    teacher = Teacher(shape, d.device, torch.bfloat16 if bf16 else torch.float32)

    class Batches:  # the token loader, as dicts
        def next_batch(self):
            x, y = loader.next_batch()
            return {"x": x, "y": y}

        state_dict, load_state_dict = loader.state_dict, loader.load_state_dict

    def loss_fn(model, batch: dict, phase: Phase):
        teacher_logits = teacher.logits(batch["x"])
        student = getattr(model, "module", model)  # DDP wraps the student
        if student.chunked_head():  # the student's logits are never held whole
            return model(batch["x"], head_loss=lambda h, weight: chunked_distill_loss(
                h, weight, teacher_logits, batch["y"], phase.temperature, phase.alpha))[1]
        student_logits = model(batch["x"])[0]
        return distill_loss(student_logits, teacher_logits, batch["y"], phase.temperature, phase.alpha)

    def evaluate(model) -> dict:
        # val_loss is the student's own cross-entropy: the fused loss, and no teacher forward
        windows = iter_eval_windows(cfg.val_shards, seq_len, cfg.batch_size, cfg.eval_batches, d.rank, d.world_size,
                                    vocab_size=mcfg.vocab_size)
        if mode == "fsdp":  # every rank runs as many forwards as the busiest (they all-gather)
            windows = pad_batches(windows, eval_batches_per_rank(cfg, seq_len, d.world_size), seq_len)
        total, count = loss_sum(model, windows, d.device)
        return {"val_loss": total, "count": count}

    student_flops = flops_per_token(mcfg, seq_len)
    teacher_flops = flops_per_token(shape["config"], seq_len) if shape["config"] else None
    return Stage(cfg=cfg, model=student, parent=parent, batches=Batches(), loss_fn=loss_fn,
                 tokens_of=lambda b: b["x"].numel(), evaluate=evaluate if cfg.val_shards else None,
                 extra_meta={"teacher": str(shape["path"]), "teacher_kind": shape["kind"],
                             "phases": [vars(p) for p in cfg.plan_phases()]},
                 summary_extra={"teacher": str(shape["path"]),
                                "teacher_student_flop_ratio": (teacher_flops / student_flops
                                                               if teacher_flops else None)}, mode=mode)


def train(cfg: DistillConfig, pipes=None, stop_at: int | None = None) -> dict:
    """Run (or continue) distillation as cfg says; returns the summary reported to Pipes."""
    return train_stage(cfg, prepare, pipes, stop_at)


def main(argv: list[str] | None = None) -> int:
    return stage_main(argv, "python -m tenali_model.posttrain.distill", __doc__, DistillConfig, prepare)


if __name__ == "__main__":
    from ..train import as_worker

    sys.exit(as_worker(main))
