"""Model and training configuration: small dataclasses, plain JSON.

The training config is one of the three contracts between the Dagster pipeline and the GPU box
(with the token-shard format in `data.py` and the checkpoint layout in `checkpoint.py`).

TRAINING CONFIG, format version 1 (`TrainConfig.to_json` / `TrainConfig.from_json`):
a JSON object whose keys are exactly the `TrainConfig` fields. `format_version` must be 1.
`model` is either a preset name from `MODEL_PRESETS` (e.g. "tiny") or an object: every
`ModelConfig` field, or {"preset": "demo", <any ModelConfig field to override>...}.
A top-level `vocab_size` > 0 overrides the model's vocabulary (the tokenizer decides it).
Unknown keys, missing required keys (`train_shards`, `out_dir`) and other versions are errors,
so a pipeline built against another version fails loudly instead of training the wrong thing.
Optional fields may be added within version 1 (parallelism, activation_checkpointing,
global_batch_tokens and init_from were): old files read unchanged, and a newer file fails loudly on an older reader.

This module imports only the standard library: the pipeline can build configs without torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

TRAIN_CONFIG_FORMAT_VERSION = 1
# parallelism "auto" shards models of this many parameters or more with FSDP (below: DDP).
FSDP_AUTO_MIN_PARAMS = 1_000_000_000
# The training loss (loss.py) computes the lm head's logits this many elements at a time: 2^24
# float32 values are 64 MiB, a few percent of any GPU and small enough on CPU; the demo model
# (vocab 4096) then takes 4096 rows at a time, a 7B step (vocab 50k) 335. Here so plan.py can read
# it without importing torch.
LOSS_CHUNK_ELEMENTS = 1 << 24


class ConfigError(ValueError):
    """A config that cannot be used; the message names the offending field."""


@dataclass
class ModelConfig:
    """Shape of a decoder-only LLaMA-style Transformer."""

    vocab_size: int = 512
    dim: int = 64
    n_layers: int = 2
    n_heads: int = 4
    n_kv_heads: int = 0  # grouped-query attention; 0 = n_heads (plain multi-head)
    ffn_hidden: int = 0  # 0 = derived from dim (SwiGLU: 8/3*dim, GELU: 4*dim), rounded up
    multiple_of: int = 32  # ffn_hidden is rounded up to this, for friendly matmul shapes
    max_seq_len: int = 128
    norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_embeddings: bool = True
    activation: str = "swiglu"  # "swiglu" | "gelu"

    def __post_init__(self) -> None:
        if self.n_kv_heads == 0:
            self.n_kv_heads = self.n_heads
        if self.ffn_hidden == 0:
            self.ffn_hidden = self.derived_ffn_hidden()
        self.validate()

    def derived_ffn_hidden(self) -> int:
        """The MLP width ffn_hidden=0 stands for. SwiGLU has three matrices instead of two: 8/3*dim
        keeps the MLP at ~8*dim^2 params."""
        hidden = 8 * self.dim / 3 if self.activation == "swiglu" else 4 * self.dim
        return self.multiple_of * math.ceil(hidden / self.multiple_of)

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def validate(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_hidden",
                     "multiple_of", "max_seq_len"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"model.{name} must be > 0, got {getattr(self, name)}")
        if self.dim % self.n_heads:
            raise ConfigError(f"model.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.head_dim % 2:
            raise ConfigError(f"model head_dim ({self.head_dim}) must be even for RoPE")
        if self.n_heads % self.n_kv_heads:
            raise ConfigError(
                f"model.n_heads ({self.n_heads}) must be a multiple of n_kv_heads ({self.n_kv_heads})")
        if self.activation not in ("swiglu", "gelu"):
            raise ConfigError(f"model.activation must be 'swiglu' or 'gelu', got {self.activation!r}")
        for name in ("norm_eps", "rope_theta"):  # 0, negative or NaN: NaN activations from the first step
            if not (0 < getattr(self, name) < math.inf):
                raise ConfigError(f"model.{name} must be a finite number > 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """A ModelConfig from a dict: all fields, or {"preset": name, **overrides}."""
        d = dict(d)
        base: dict[str, Any] = {}
        if "preset" in d:
            named = preset(d.pop("preset"))
            base = asdict(named)
            if named.ffn_hidden == named.derived_ffn_hidden():
                base["ffn_hidden"] = 0  # derived from the shape: derived again from the overridden one
        _check_keys("model", d, {f.name for f in fields(cls)}, required=set())
        for f in fields(cls):
            if f.name in d:
                d[f.name] = _check_type(f, d[f.name], prefix="model.")
        base.update(d)
        return cls(**base)


# Named shapes. vocab_size is a default: the trained tokenizer usually overrides it.
MODEL_PRESETS: dict[str, ModelConfig] = {
    # Unit tests and smoke runs: trains in seconds on a laptop CPU.
    "tiny": ModelConfig(vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=128),
    # The demo profile: trains on CPU in minutes on the sample corpus.
    "demo": ModelConfig(vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, max_seq_len=128),
    # The 51M seed design: pre-norm RMSNorm, RoPE, GELU MLP, tied embeddings, 256-token context;
    # 50.8M parameters with a 50k vocabulary (dim 512, 8 layers, 8 heads, MLP 4x).
    "51m": ModelConfig(vocab_size=50000, dim=512, n_layers=8, n_heads=8, n_kv_heads=8, ffn_hidden=2048,
                       max_seq_len=256, activation="gelu"),
    # LLaMA-shaped scaling ladder at 2048 context and a 50k vocabulary (SwiGLU, RMSNorm, RoPE, tied
    # embeddings); analytic sizes: 123.4M, 334.4M, 1.076B parameters.
    # GPT-3 Small's shape (dim 768, 12 layers, 12 heads); plain multi-head attention at this size.
    "125m": ModelConfig(vocab_size=50000, dim=768, n_layers=12, n_heads=12, n_kv_heads=12, ffn_hidden=2048,
                        max_seq_len=2048),
    # GPT-3 Medium's shape (dim 1024, 24 layers, 16 heads) with 8 KV heads: half the KV cache.
    "350m": ModelConfig(vocab_size=50000, dim=1024, n_layers=24, n_heads=16, n_kv_heads=8, ffn_hidden=2816,
                        max_seq_len=2048),
    # Llama-3.2-1B's shape (dim 2048, 16 layers, 32 heads, 8 KV heads, MLP 8192). Over 1B parameters,
    # so `parallelism: "auto"` shards it with FSDP.
    "1b": ModelConfig(vocab_size=50000, dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_hidden=8192,
                      max_seq_len=2048),
    # LLaMA-2-7B-like: 32 layers, dim 4096, 32 heads, 4096 context, 50k vocab, untied head.
    "7b": ModelConfig(vocab_size=50000, dim=4096, n_layers=32, n_heads=32, n_kv_heads=32,
                      ffn_hidden=11008, max_seq_len=4096, tie_embeddings=False),
}


def preset(name: str) -> ModelConfig:
    """A fresh copy of a named preset (callers may mutate it)."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"unknown model preset {name!r}; known: {sorted(MODEL_PRESETS)}")
    return dataclasses.replace(MODEL_PRESETS[name])


def resolve_parallelism(choice: str, n_params: int, world_size: int) -> str:
    """"single" (one process, no wrapper), "ddp" or "fsdp", from the config's `parallelism`."""
    if world_size <= 1:
        return "single"
    if choice == "auto":
        return "fsdp" if n_params >= FSDP_AUTO_MIN_PARAMS else "ddp"
    return choice


def num_embedding_params(cfg: ModelConfig) -> int:
    """The token-embedding table (a lookup: no FLOPs). A tied lm head shares it, an untied one does not."""
    return cfg.vocab_size * cfg.dim


def num_params(cfg: ModelConfig) -> int:
    """Analytic parameter count; equals sum(p.numel()) of the built model (tied weights once)."""
    d, hd = cfg.dim, cfg.head_dim
    attn = d * cfg.n_heads * hd + 2 * d * cfg.n_kv_heads * hd + cfg.n_heads * hd * d
    mlp = (3 if cfg.activation == "swiglu" else 2) * d * cfg.ffn_hidden
    per_layer = attn + mlp + 2 * d  # two RMSNorm weights
    embed = cfg.vocab_size * d
    head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
    return embed + cfg.n_layers * per_layer + d + head  # + final norm


# The fields pretraining's and post-training's configs both take from a fixed set.
RUN_CHOICES = {"device": ("auto", "cpu", "cuda"), "dtype": ("auto", "float32", "bfloat16"),
               "parallelism": ("auto", "ddp", "fsdp"), "checkpoint_format": ("auto", "full", "sharded")}


def check_run_choices(config) -> None:
    """ConfigError naming the first RUN_CHOICES field of `config` outside its set, and the set."""
    for name, allowed in RUN_CHOICES.items():
        if (value := getattr(config, name)) not in allowed:
            listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f" or '{allowed[-1]}'"
            raise ConfigError(f"{name} must be {listed}, got {value!r}")


class JsonConfig:
    """to_json / from_json for a config dataclass that has to_dict / from_dict (training and post-training)."""

    def to_json(self, path: str | os.PathLike) -> None:
        """Write atomically (temp file in the same directory, then rename)."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls, path: str | os.PathLike):
        """Read and validate; errors name the file."""
        try:
            d = json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from e
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e


@dataclass
class TrainConfig(JsonConfig):
    """Everything one training run needs; serialised as the training-config contract."""

    train_shards: list[str]
    out_dir: str
    format_version: int = TRAIN_CONFIG_FORMAT_VERSION
    model: ModelConfig | str = "tiny"  # a ModelConfig or a MODEL_PRESETS name
    vocab_size: int = 0  # > 0 overrides the model's vocab_size (the tokenizer decides it)
    val_shards: list[str] = field(default_factory=list)
    steps: int = 1000  # optimizer steps in total (a resumed run continues up to this)
    batch_size: int = 8  # sequences per rank per micro-step
    seq_len: int = 0  # 0 = model max_seq_len
    grad_accum: int = 1  # micro-steps per optimizer step
    lr: float = 3e-4
    min_lr: float = 3e-5
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0  # 0 = off
    z_loss: float = 0.0  # coefficient of mean(logsumexp^2); 0 = off
    seed: int = 1337
    log_every: int = 10
    eval_every: int = 0  # 0 = only at the end
    eval_batches: int = 20
    ckpt_every: int = 0  # 0 = only at the end
    keep_last: int = 3  # 0 = keep all
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" (autocast; weights stay float32)
    compile: bool = False
    num_threads: int = 0  # 0 = torch default
    # How the model is spread over ranks: "ddp" replicates it, "fsdp" shards parameters, gradients and
    # optimizer state (FSDP2); "auto" = fsdp for models of FSDP_AUTO_MIN_PARAMS parameters or more.
    # One process always trains unwrapped.
    parallelism: str = "auto"
    activation_checkpointing: bool = False  # recompute each block's activations in the backward pass
    # How checkpoints before the run's last are written: "sharded" = each rank writes its own shard in
    # parallel (sharded.py; fast, nothing gathered), "full" = one model.safetensors gathered to rank 0;
    # "auto" = sharded under FSDP. The last checkpoint is always full.
    checkpoint_format: str = "auto"
    # Tokens per optimizer step over all ranks; > 0 derives grad_accum from it (world-size independent).
    # 0 = batch_size * seq_len * world_size * grad_accum.
    global_batch_tokens: int = 0
    # Continued pretraining: start from this checkpoint's weights (a Tenali checkpoint or out_dir, e.g.
    # a Hugging Face base imported with `tenali import-hf`) with a fresh optimizer; the model shape
    # is the checkpoint's (leave `model` at its default or give the same shape). "" = random init.
    init_from: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ModelConfig.from_dict(self.model)

    def model_config(self) -> ModelConfig:
        """The resolved ModelConfig (preset looked up, vocab override applied; init_from's shape)."""
        if self.init_from:
            cfg = checkpoint_model_config(self.init_from)
            if (isinstance(self.model, ModelConfig) and self.model != cfg) or (
                    isinstance(self.model, str) and self.model != "tiny" and preset(self.model) != cfg):
                raise ConfigError(f"model {self.model} differs from the shape of init_from {self.init_from} "
                                  f"({cfg}); leave model out when init_from is set")
            if self.vocab_size not in (0, cfg.vocab_size):
                raise ConfigError(f"vocab_size {self.vocab_size} differs from init_from's {cfg.vocab_size}")
            return cfg
        cfg = preset(self.model) if isinstance(self.model, str) else dataclasses.replace(self.model)
        if self.vocab_size > 0:
            cfg = dataclasses.replace(cfg, vocab_size=self.vocab_size)
        return cfg

    def resolved_seq_len(self) -> int:
        return self.seq_len or self.model_config().max_seq_len

    def resolved_grad_accum(self, world_size: int) -> int:
        """Micro-steps per optimizer step: from global_batch_tokens when set, else grad_accum."""
        if self.global_batch_tokens <= 0:
            return self.grad_accum
        per_micro = self.batch_size * self.resolved_seq_len() * world_size
        accum, rest = divmod(self.global_batch_tokens, per_micro)
        if rest or accum == 0:
            raise ConfigError(
                f"global_batch_tokens ({self.global_batch_tokens}) must be a positive multiple of "
                f"batch_size * seq_len * world_size = {self.batch_size} * {self.resolved_seq_len()} * "
                f"{world_size} = {per_micro}: "
                + (f"the smallest is {per_micro:,}" if accum == 0 else
                   f"the nearest are {accum * per_micro:,} and {(accum + 1) * per_micro:,}"))
        if self.grad_accum not in (1, accum):
            raise ConfigError(f"grad_accum ({self.grad_accum}) contradicts global_batch_tokens "
                              f"({self.global_batch_tokens}), which needs {accum}; set one of them")
        return accum

    def validate(self) -> None:
        """Raise ConfigError naming the first bad field."""
        if self.format_version != TRAIN_CONFIG_FORMAT_VERSION:
            raise ConfigError(f"format_version {self.format_version} is not supported "
                              f"(this tenali_model reads version {TRAIN_CONFIG_FORMAT_VERSION})")
        mcfg = self.model_config()
        if not self.train_shards:
            raise ConfigError("train_shards is empty")
        if not self.out_dir:
            raise ConfigError("out_dir is empty")
        for name in ("steps", "batch_size", "grad_accum", "log_every", "eval_batches"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("seq_len", "warmup_steps", "eval_every", "ckpt_every", "keep_last", "num_threads",
                     "vocab_size"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        # `not 0 <= x < inf`, not `x < 0`: NaN (which JSON can carry) passes every comparison and would
        # turn the weights into NaN at the first step.
        for name in ("weight_decay", "grad_clip", "z_loss", "min_lr"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ConfigError(f"{name} must be a finite number >= 0, got {getattr(self, name)}")
        if not 0 < self.lr < math.inf:
            raise ConfigError(f"lr must be a finite number > 0, got {self.lr}")
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr ({self.min_lr}) must be <= lr ({self.lr})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"beta1/beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.resolved_seq_len() > mcfg.max_seq_len:
            raise ConfigError(f"seq_len ({self.seq_len}) exceeds model max_seq_len ({mcfg.max_seq_len})")
        check_run_choices(self)
        if self.global_batch_tokens < 0:
            raise ConfigError(f"global_batch_tokens must be >= 0, got {self.global_batch_tokens}")
        if not 0 <= self.seed < 2**32:  # np.random.seed (train.py) takes no other value
            raise ConfigError(f"seed must be in [0, 2**32), got {self.seed}")

    # --- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["train_shards"] = [str(p) for p in self.train_shards]
        d["val_shards"] = [str(p) for p in self.val_shards]
        d["out_dir"] = str(self.out_dir)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        if not isinstance(d, dict):
            raise ConfigError(f"training config must be a JSON object, got {type(d).__name__}")
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        _check_keys("training config", d, names, required)
        version = d.get("format_version", TRAIN_CONFIG_FORMAT_VERSION)
        if version != TRAIN_CONFIG_FORMAT_VERSION:
            raise ConfigError(f"training config format_version {version} is not supported "
                              f"(this tenali_model reads version {TRAIN_CONFIG_FORMAT_VERSION})")
        d = dict(d)
        if not isinstance(d.get("model", "tiny"), (str, dict)):
            raise ConfigError("model must be a preset name or an object of ModelConfig fields")
        for f in fields(cls):
            if f.name in d and f.name != "model":
                d[f.name] = _check_type(f, d[f.name])
        if isinstance(d.get("model"), str):
            preset(d["model"])  # fail early on an unknown preset name
        try:
            return cls(**d)
        except TypeError as e:  # e.g. a nested model field with a bad name
            raise ConfigError(str(e)) from e



def checkpoint_model_config(path: str | os.PathLike) -> ModelConfig:
    """The ModelConfig of a checkpoint directory, or of an out_dir's latest one (config.json only)."""
    p = Path(path)
    if not (p / "meta.json").is_file() and (p / "latest").is_file():
        p = p / (p / "latest").read_text().strip()
    try:
        d = json.loads((p / "config.json").read_text())
    except FileNotFoundError:
        raise ConfigError(f"init_from {path}: not a checkpoint directory or out_dir "
                          f"({p / 'config.json'} is missing)") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"init_from {path}: config.json is not valid JSON: {e}") from e
    d.pop("checkpoint_format_version", None)
    return ModelConfig.from_dict(d)


def _check_type(f: dataclasses.Field, value: Any, prefix: str = "") -> Any:
    """JSON values checked against the field's default type (so "10" steps fails loudly)."""
    if f.type.startswith("list"):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{prefix}{f.name} must be a list of strings, got {value!r}")
        return value
    expected = {"str": str, "int": int, "float": float, "bool": bool}[f.type]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{prefix}{f.name} must be {expected.__name__}, got {value!r}")
    return value


def _check_keys(what: str, d: dict[str, Any], known: set[str], required: set[str]) -> None:
    unknown = sorted(set(d) - known)
    missing = sorted(required - set(d))
    problems = []
    if unknown:
        problems.append(f"unknown field(s) {unknown}")
    if missing:
        problems.append(f"missing required field(s) {missing}")
    if problems:
        raise ConfigError(f"{what}: " + "; ".join(problems) + f" (known fields: {sorted(known)})")


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to a temp file next to `path`, fsync, then os.replace: readers never see half."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path: str | os.PathLike, *chunks: bytes | memoryview) -> None:
    """Write `chunks` in order to a temp file next to `path`, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
