"""Post-training configs: versioned JSON, one dataclass per stage, validated before any compute.

POST-TRAINING CONFIG, format version 1 (`<Stage>Config.to_json` / `<Stage>Config.from_json`):
a JSON object whose keys are exactly the config's fields (as `TrainConfig`: unknown keys, missing
required keys and other versions are errors, so a pipeline built against another version fails
loudly). Fields every stage has:

    init_from      the parent: a Tenali checkpoint directory or an out_dir (its latest checkpoint);
                   an imported Hugging Face base is a Tenali checkpoint too (tenali import-hf)
    out_dir        where this stage's checkpoints, adapters and metrics.jsonl go (resume point)
    batch_size, grad_accum, seq_len (0 = the model's max_seq_len), weight_decay, beta1, beta2,
    grad_clip, seed, log_every, eval_every, eval_batches, ckpt_every, keep_last, device, dtype,
    num_threads: as in TrainConfig
    lora           null = full fine-tuning, or {"r", "alpha", "dropout", "target_modules",
                   "train_head", "base_dtype"} (defaults: the seed's r=16, alpha=32, dropout 0.05
                   on wq/wk/wv/wo/w1/w2/w3, output head trained; frozen weights in bf16 when the
                   stage computes in bf16, a third of the memory for the same results, see lora.py)
    parallelism    over several torchrun ranks: "ddp" (every rank holds the whole model and
                   optimizer), "fsdp" (FSDP2: weights, gradients and AdamW state sharded over the
                   ranks, as tenali_model.parallel does for pretraining; full fine-tuning only, which
                   is what needs it: a 7B's float32 weights, gradients and AdamW state are 110 GB) or "auto"
                   (fsdp for full fine-tuning of models of 1B parameters or more, else ddp; LoRA
                   always ddp: its frozen weights fit one GPU and only the adapters carry state)
    activation_checkpointing   recompute each block's activations in the backward pass
    checkpoint_format  as TrainConfig's: "auto" (sharded under FSDP), "full" or "sharded", for every
                   checkpoint but the stage's last; LoRA stages save full (their adapters are small)
    compile        torch.compile the policy's training forward (as TrainConfig's; under FSDP each
                   block in place, before sharding); validation, DPO's reference and a teacher run
                   eager. For GPUs: on a CPU inductor was slower than eager in pretraining

SFT and DPO add steps, lr, min_lr, warmup_steps and schedule ("cosine", "linear", "constant" or
"onecycle"); distillation has `phases` instead, each with its own steps, lr, min_lr, warmup_steps,
schedule, temperature and alpha (`seed_phases` gives the seed design's two).

Like tenali_model.config, this module imports only the standard library.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from ..config import ConfigError, JsonConfig, _check_keys, check_run_choices

POSTTRAIN_CONFIG_FORMAT_VERSION = 1
SCHEDULES = ("cosine", "linear", "constant", "onecycle")
LORA_TARGETS = ["wq", "wk", "wv", "wo", "w1", "w2", "w3"]


@dataclass(kw_only=True)
class LoraSettings:
    """Low-rank adapters (peft) on the attention and MLP projections."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    train_head: bool = True  # the output head (with tied embeddings: the shared table) trains fully
    # the frozen projections under the adapters: "bfloat16" holds them in a third of what float32
    # weights plus autocast's bf16 copies take (same results: posttrain/lora.py); needs bf16 compute.
    # "auto": bfloat16 when the stage computes in bf16 (dtype), else float32
    base_dtype: str = "auto"

    def validate(self, prefix: str = "lora.") -> None:
        if self.r <= 0 or self.alpha <= 0:
            raise ConfigError(f"{prefix}r and {prefix}alpha must be > 0, got {self.r}, {self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{prefix}dropout must be in [0, 1), got {self.dropout}")
        if self.base_dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"{prefix}base_dtype must be 'auto', 'float32' or 'bfloat16', got {self.base_dtype!r}")
        unknown = sorted(set(self.target_modules) - set(LORA_TARGETS))
        if unknown or not self.target_modules:
            raise ConfigError(f"{prefix}target_modules must be a non-empty subset of {LORA_TARGETS}, "
                              f"got {self.target_modules}")


@dataclass(kw_only=True)
class Phase:
    """A run of steps with one learning-rate schedule (and, for distillation, T and alpha)."""

    steps: int
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_steps: int = 0
    schedule: str = "cosine"
    temperature: float = 1.0  # distillation only
    alpha: float = 0.0  # distillation only: weight of the KL term (1 - alpha on cross-entropy)

    def validate(self, prefix: str = "") -> None:
        if self.steps <= 0:
            raise ConfigError(f"{prefix}steps must be > 0, got {self.steps}")
        if self.warmup_steps < 0 or self.warmup_steps > self.steps:
            raise ConfigError(f"{prefix}warmup_steps must be in [0, steps={self.steps}], got {self.warmup_steps}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"{prefix}lr must be a finite number > 0, got {self.lr}")
        if not 0 <= self.min_lr <= self.lr:
            raise ConfigError(f"{prefix}min_lr must be in [0, lr={self.lr}], got {self.min_lr}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{prefix}schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if not 0 < self.temperature < math.inf:
            raise ConfigError(f"{prefix}temperature must be a finite number > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            raise ConfigError(f"{prefix}alpha must be in [0, 1], got {self.alpha}")


def seed_phases(steps: int, lr: float = 6e-4, min_lr: float = 6e-5) -> list[Phase]:
    """The 51M seed's distillation: half the steps at T 2.5 / alpha 0.7, half at T 3.0 / alpha 0.4,
    each a one-cycle schedule (30% warm-up)."""
    first = steps // 2
    return [Phase(steps=n, lr=lr, min_lr=min_lr, warmup_steps=max(1, int(0.3 * n)), schedule="onecycle",
                  temperature=t, alpha=a)
            for n, t, a in ((first, 2.5, 0.7), (steps - first, 3.0, 0.4)) if n > 0]


@dataclass(kw_only=True)
class StageConfig(JsonConfig):
    """Fields every post-training stage shares (see the module doc)."""

    STAGE: ClassVar[str] = ""
    init_from: str
    out_dir: str
    format_version: int = POSTTRAIN_CONFIG_FORMAT_VERSION
    batch_size: int = 8
    grad_accum: int = 1
    seq_len: int = 0
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 1337
    log_every: int = 10
    eval_every: int = 0
    eval_batches: int = 20
    ckpt_every: int = 0
    keep_last: int = 3
    device: str = "auto"
    dtype: str = "auto"
    num_threads: int = 0
    lora: LoraSettings | None = None
    parallelism: str = "auto"
    activation_checkpointing: bool = False
    compile: bool = False
    checkpoint_format: str = "auto"

    # --- the optimisation schedule -------------------------------------------------------------

    def plan_phases(self) -> list[Phase]:
        raise NotImplementedError

    @property
    def total_steps(self) -> int:
        return sum(p.steps for p in self.plan_phases())

    def data_files(self) -> list[str]:
        """Every input file, recorded in each checkpoint's meta."""
        raise NotImplementedError

    # --- validation ----------------------------------------------------------------------------

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field (no file is read here but the names)."""
        if self.format_version != POSTTRAIN_CONFIG_FORMAT_VERSION:
            raise ConfigError(f"format_version {self.format_version} is not supported (this "
                              f"tenali_model reads post-training config version {POSTTRAIN_CONFIG_FORMAT_VERSION})")
        if not self.init_from:
            raise ConfigError("init_from is empty: name the parent checkpoint (or its out_dir)")
        if not self.out_dir:
            raise ConfigError("out_dir is empty")
        out, parent = Path(self.out_dir).resolve(), Path(self.init_from).resolve()
        if out == parent:
            raise ConfigError(f"out_dir and init_from are both {self.out_dir}: give the stage its own out_dir")
        # out_dir/step_N (or out_dir/latest): a checkpoint of out_dir itself, which the stage would take for its
        # own to resume. Deeper folders are not (the pipeline keeps a distillation's student_init there).
        if parent.parent == out:
            raise ConfigError(f"init_from {self.init_from} is a checkpoint folder of out_dir {self.out_dir}: give "
                              "the stage its own out_dir")
        for name in ("batch_size", "grad_accum", "log_every", "eval_batches"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("seq_len", "eval_every", "ckpt_every", "keep_last", "num_threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("weight_decay", "grad_clip"):  # NaN (JSON carries it) passes a `< 0` check
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"beta1/beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        check_run_choices(self)
        if self.lora is not None:
            self.lora.validate()
            if self.checkpoint_format == "sharded":
                raise ConfigError("checkpoint_format 'sharded' is for full fine-tuning; a LoRA stage saves its "
                                  "adapters and merged weights whole: set it to 'auto' or 'full', or drop lora")
            if self.lora.base_dtype == "bfloat16" and self.dtype == "float32":
                raise ConfigError("lora.base_dtype 'bfloat16' needs bf16 compute: set dtype to 'bfloat16' "
                                  "or 'auto' (bf16 on a GPU that has it), or base_dtype to 'auto' or 'float32'")
            if self.parallelism == "fsdp":
                raise ConfigError("parallelism 'fsdp' is for full fine-tuning; LoRA trains under ddp (its "
                                  "frozen weights fit one GPU, a 7B's in 28 GB, and only the adapters carry "
                                  "optimizer state): set parallelism to 'ddp' or 'auto', or drop lora")
        phases = self.plan_phases()
        if not phases:
            raise ConfigError("phases is empty")
        for i, p in enumerate(phases):
            p.validate("" if isinstance(self, ScheduledConfig) else f"phases[{i}].")

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        if not isinstance(d, dict):
            raise ConfigError(f"{cls.STAGE} config must be a JSON object, got {type(d).__name__}")
        version = d.get("format_version", POSTTRAIN_CONFIG_FORMAT_VERSION)
        if version != POSTTRAIN_CONFIG_FORMAT_VERSION:
            raise ConfigError(f"{cls.STAGE} config format_version {version} is not supported (this "
                              f"tenali_model reads version {POSTTRAIN_CONFIG_FORMAT_VERSION})")
        return _build(cls, d, f"{cls.STAGE} config", "")



@dataclass(kw_only=True)
class ScheduledConfig(StageConfig):
    """A stage with one learning-rate schedule (SFT, DPO)."""

    steps: int = 100
    lr: float = 1e-4
    min_lr: float = 1e-5
    warmup_steps: int = 10
    schedule: str = "cosine"

    def plan_phases(self) -> list[Phase]:
        return [Phase(steps=self.steps, lr=self.lr, min_lr=self.min_lr, warmup_steps=self.warmup_steps,
                      schedule=self.schedule)]


@dataclass(kw_only=True)
class SFTConfig(ScheduledConfig):
    """Instruction tuning on chat files (posttrain.data: Alpaca or OpenAI `messages`, JSONL/Parquet)."""

    STAGE: ClassVar[str] = "sft"
    train_files: list[str]
    tokenizer: str  # tokenizer.model / tokenizer.json, or a folder holding one
    val_files: list[str] = field(default_factory=list)
    packing: bool = True  # pack conversations into rows (attention kept inside each) or pad each

    def data_files(self) -> list[str]:
        return [*self.train_files, *self.val_files]

    def validate(self) -> None:
        super().validate()
        if not self.train_files:
            raise ConfigError("train_files is empty")
        if not self.tokenizer:
            raise ConfigError("tokenizer is empty: name the tokenizer.model / tokenizer.json the "
                              "parent was trained with")


@dataclass(kw_only=True)
class DPOConfig(ScheduledConfig):
    """Preference tuning on chosen/rejected pairs (posttrain.data: JSONL) against a frozen reference."""

    STAGE: ClassVar[str] = "dpo"
    train_files: list[str]
    tokenizer: str
    val_files: list[str] = field(default_factory=list)
    beta: float = 0.1
    reference: str = ""  # the frozen reference checkpoint; "" = init_from
    lr: float = 5e-6
    min_lr: float = 5e-7

    def data_files(self) -> list[str]:
        return [*self.train_files, *self.val_files]

    def validate(self) -> None:
        super().validate()
        if not self.train_files:
            raise ConfigError("train_files is empty")
        if not self.tokenizer:
            raise ConfigError("tokenizer is empty")
        if not 0 < self.beta < math.inf:  # an infinite beta makes a zero margin's loss NaN
            raise ConfigError(f"beta must be a finite number > 0, got {self.beta}")


@dataclass(kw_only=True)
class DistillConfig(StageConfig):
    """A student (init_from) trained on token shards against a teacher's next-token distribution."""

    STAGE: ClassVar[str] = "distill"
    train_shards: list[str]
    teacher: str  # a Tenali checkpoint (or out_dir) or a Hugging Face causal-LM directory
    phases: list[Phase] = field(default_factory=list)
    val_shards: list[str] = field(default_factory=list)
    teacher_dtype: str = "auto"  # "auto" = bfloat16 on CUDA, float32 on CPU

    def plan_phases(self) -> list[Phase]:
        return list(self.phases)

    def data_files(self) -> list[str]:
        return [*self.train_shards, *self.val_shards]

    def validate(self) -> None:
        super().validate()
        if not self.train_shards:
            raise ConfigError("train_shards is empty")
        if not self.teacher:
            raise ConfigError("teacher is empty: a Tenali checkpoint or a Hugging Face model directory")
        if self.teacher_dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"teacher_dtype must be 'auto', 'float32' or 'bfloat16', got {self.teacher_dtype!r}")


# --- JSON -> dataclass, every value type-checked -----------------------------------------------

_NESTED = {"LoraSettings": LoraSettings, "Phase": Phase}


def _build(cls, d: dict, what: str, prefix: str):
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    _check_keys(what, d, names, required)
    kw = {}
    for f in fields(cls):
        if f.name in d:
            kw[f.name] = _convert(f.type, d[f.name], f"{prefix}{f.name}")
    try:
        return cls(**kw)
    except TypeError as e:
        raise ConfigError(f"{what}: {e}") from e


def _convert(type_name: str, value: Any, name: str) -> Any:
    """A JSON value checked against a field's annotation (so "10" steps fails loudly)."""
    if type_name.endswith(" | None"):
        return None if value is None else _convert(type_name[:-len(" | None")], value, name)
    if type_name.startswith("list["):
        inner = type_name[5:-1]
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {value!r}")
        return [_convert(inner, v, f"{name}[{i}]") for i, v in enumerate(value)]
    if type_name in _NESTED:
        if not isinstance(value, dict):
            raise ConfigError(f"{name} must be an object, got {value!r}")
        return _build(_NESTED[type_name], value, name, f"{name}.")
    expected = {"str": str, "int": int, "float": float, "bool": bool}[type_name]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{name} must be {expected.__name__}, got {value!r}")
    return value
