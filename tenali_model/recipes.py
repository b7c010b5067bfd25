"""Pretraining recipes: the hyperparameters each model preset starts from.

A preset says what the model is; a recipe says how to pretrain it: context, batch, learning rate,
warmup, and which of the trainer's switches to turn on. The pipeline's pretraining
(`tenali_pipeline.resources.TrainingResource`) takes every value it is not given from the recipe of
the model it trains, so a production run of the 7B gets the seed's settings instead of the demo's,
and `tenali plan` plans the batch the run will use.

Where the numbers come from:
- tiny, demo: what the CPU demo and the tests have always used (lr 3e-3 on a 1M-parameter model;
  2,048 tokens per rank per step; grad_accum 1, so the batch grows with the ranks).
- 7b: the seed (4,096-token context, 4M-token batches, AdamW 3e-4 with cosine decay, here to a
  tenth, 2,000 warmup steps, bf16). One sequence per GPU per micro-step: `tenali plan --config 7b --gpus 8`
  puts it at 43.9 GiB per H100 under FSDP without activation checkpointing, two need checkpointing.
- 125m, 350m, 1b: GPT-3's table for the nearest sizes (Brown et al. 2020, table 2.1: 6e-4 and 0.5M
  tokens for 125M, 3e-4 and 0.5M for 350M, 2e-4 and 1M for 1.3B; warmup over 375M tokens: 715 and
  358 steps at those batches of 2,048-token sequences).
- 51m: the seed's design (256-token context, z-loss; 1e-4, PaLM's coefficient) with a learning rate
  above GPT-3 Small's, as smaller models take; a starting point, not tuned here.
Micro-batches are sized with `tenali plan` for an 80 GB GPU; the batch in sequences divides by the
micro-batch times 1, 2, 4 and 8 ranks (tests check both), so any of those GPU counts runs the same
optimisation. None of these has been tuned on a GPU in this project yet: they are where to start.
"""

from __future__ import annotations

import dataclasses
import math

from .config import ConfigError, ModelConfig, MODEL_PRESETS, num_params


@dataclasses.dataclass(frozen=True)
class TrainRecipe:
    micro_batch: int  # sequences per rank per micro-step (TrainConfig.batch_size)
    seq_len: int
    global_batch_seqs: int  # sequences per optimizer step over all ranks; 0 = micro_batch x ranks
    lr: float  # peak; cosine decay to lr / 10
    warmup_steps: int
    z_loss: float = 0.0
    compile: bool = False
    activation_checkpointing: bool = False
    eval_every: int = 1000
    ckpt_every: int = 1000

    def global_batch_tokens(self, seq_len: int | None = None) -> int:
        """Tokens per optimizer step (0: set by the ranks), at `seq_len` if the run shortens it."""
        return self.global_batch_seqs * (seq_len or self.seq_len)

    def train_config(self, seq_len: int | None = None) -> dict:
        """The recipe as TrainConfig fields (the same names as TrainingResource's settings), at
        `seq_len` if the run shortens it (the batch keeps its sequence count)."""
        seq_len = seq_len or self.seq_len
        return {"batch_size": self.micro_batch, "seq_len": seq_len,
                "global_batch_tokens": self.global_batch_tokens(seq_len), "lr": self.lr,
                "warmup_steps": self.warmup_steps, "z_loss": self.z_loss, "compile": self.compile,
                "activation_checkpointing": self.activation_checkpointing, "eval_every": self.eval_every,
                "ckpt_every": self.ckpt_every}


RECIPES: dict[str, TrainRecipe] = {
    "tiny": TrainRecipe(micro_batch=16, seq_len=128, global_batch_seqs=0, lr=3e-3, warmup_steps=30,
                        eval_every=100, ckpt_every=100),
    "demo": TrainRecipe(micro_batch=16, seq_len=128, global_batch_seqs=0, lr=3e-3, warmup_steps=30,
                        eval_every=100, ckpt_every=100),
    "51m": TrainRecipe(micro_batch=128, seq_len=256, global_batch_seqs=1024, lr=1e-3, warmup_steps=1000,
                       z_loss=1e-4, compile=True),
    "125m": TrainRecipe(micro_batch=32, seq_len=2048, global_batch_seqs=256, lr=6e-4, warmup_steps=715,
                        compile=True),
    "350m": TrainRecipe(micro_batch=16, seq_len=2048, global_batch_seqs=256, lr=3e-4, warmup_steps=715,
                        compile=True),
    "1b": TrainRecipe(micro_batch=8, seq_len=2048, global_batch_seqs=512, lr=2e-4, warmup_steps=358,
                      compile=True, eval_every=500, ckpt_every=500),
    "7b": TrainRecipe(micro_batch=1, seq_len=4096, global_batch_seqs=1024, lr=3e-4, warmup_steps=2000,
                      compile=True, eval_every=200, ckpt_every=200),
}


def recipe_for(model: str | ModelConfig) -> tuple[str, TrainRecipe]:
    """(preset name, recipe) for a preset name or a model shape. A shape that is no preset (an
    imported base, a custom config) gets the recipe of the preset nearest in size (parameters
    outside the embeddings, on a log scale: vocabularies differ more than bodies)."""
    if isinstance(model, str):
        if model not in RECIPES:
            raise ConfigError(f"no training recipe for model {model!r}; known: {sorted(RECIPES)}")
        return model, RECIPES[model]
    for name, cfg in MODEL_PRESETS.items():
        if dataclasses.replace(cfg, vocab_size=model.vocab_size) == model:
            return name, RECIPES[name]
    size = _body(model)
    name = min((n for n in MODEL_PRESETS if n != "tiny"),
               key=lambda n: abs(math.log(_body(MODEL_PRESETS[n]) / size)))
    return name, RECIPES[name]


def _body(cfg: ModelConfig) -> int:
    """Parameters outside the token embedding and the lm head."""
    return num_params(cfg) - cfg.vocab_size * cfg.dim * (1 if cfg.tie_embeddings else 2)


def describe(fields: dict) -> str:
    """One line of the settings that decide a run's cost and course (TrainConfig field names), as
    `tenali info`, `tenali plan` and the pretraining step print them."""
    tokens = f"{fields['global_batch_tokens']:,} tokens" if fields["global_batch_tokens"] else "batch x seq_len x ranks"
    return (f"seq_len {fields['seq_len']:,}, {fields['batch_size']} per rank, {tokens} per step, "
            f"lr {fields['lr']:g}, warmup {fields['warmup_steps']:,}" + "".join(
                f", {name}" for key, name in (("compile", "compile"), ("activation_checkpointing",
                                                                     "activation checkpointing")) if fields[key]))
