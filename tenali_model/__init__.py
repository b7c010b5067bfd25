"""Tenali's model side: the Transformer, its trainer, checkpoints, evaluation and generation.

This package is what runs on the GPU box: it never imports dagster (only, optionally,
dagster_pipes). The pipeline talks to it through three versioned contracts, each documented
where it is defined:
  - the training config        tenali_model.config      (TrainConfig, format_version 1)
  - the token-shard format     tenali_model.data        (SHARD_FORMAT_VERSION 1)
  - the checkpoint layout      tenali_model.checkpoint  (CHECKPOINT_FORMAT_VERSION 1)

Beside them: parallel (DDP / FSDP2), plan (memory, time, cost, MFU), hf (transformers export and
import) and cli (`python -m tenali_model COMMAND`, the model side of the `tenali` command).

Importing the package itself is cheap (no torch); import the submodules you need.
"""

from .config import (MODEL_PRESETS, TRAIN_CONFIG_FORMAT_VERSION, ConfigError, ModelConfig,
                     TrainConfig, num_params)

__all__ = ["MODEL_PRESETS", "TRAIN_CONFIG_FORMAT_VERSION", "ConfigError", "ModelConfig",
           "TrainConfig", "num_params"]
