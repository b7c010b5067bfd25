"""LoRA through peft on Tenali's own modules: inject, save the adapter alone, merge into a checkpoint.

peft's `inject_adapter_in_model` puts low-rank adapters on the named nn.Linear projections
(wq/wk/wv/wo of attention, w1/w2/w3 of the MLP) and freezes everything else. The output head is
trained in full when `train_head` is set, by unfreezing `lm_head.weight` itself rather than through
peft's `modules_to_save` (which trains a copy of the module and so would silently untie a head tied
to the embedding): with tied embeddings the trained head is the shared table, as in the base model.

ADAPTER DIRECTORY (written atomically, beside the stage's checkpoints under <out_dir>/adapters/):
    adapter_model.safetensors   peft's get_peft_model_state_dict on Tenali names
                                (layers.N.attn.wq.lora_A.weight, ...)
    head.safetensors            lm_head.weight when the head is trained (tok_embeddings.weight when tied)
    new_tokens.safetensors      when the stage added tokens (posttrain/vocab.py) to a table that is
                                otherwise frozen: "<table>.ids" and "<table>.rows" for each such table
    adapter_config.json         peft's LoraConfig fields + {"train_head", "tie_embeddings"}
Every checkpoint of a LoRA stage also holds the merged weights (W + B A * alpha / r) in its
model.safetensors, so evaluation, export and serving never need peft.

`base_dtype: "bfloat16"` (what "auto" picks when the stage computes in bf16) holds the frozen
projections under the adapters in bf16 (the adapters, the head, the embedding and the norms stay
float32). Under bf16 autocast a float32 frozen weight costs its 4 bytes plus the 2-byte bf16 copy
autocast makes at each use, which autograd keeps for the backward pass; a bf16 one costs its 2
bytes: a third of the memory for the bulk of the model (a 7B's projections: 13 GB instead of 39).
The forward then runs on the bf16-rounded weights, exactly what bf16 autocast computes with anyway.
The merge is made against the parent's float32 weights, read again from its model.safetensors
(`parent_projections`), so the merged checkpoint does not carry the rounding into weights the
adapter never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ..checkpoint import clear_interrupted_saves
from ..config import atomic_write_text
from .config import LoraSettings

ADAPTER = "default"


def apply_lora(model: nn.Module, settings: LoraSettings) -> nn.Module:
    """Inject LoRA into `model` in place (a Transformer); only adapters (and the head) stay trainable."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=list(settings.target_modules), bias="none")
    model = inject_adapter_in_model(config, model, adapter_name=ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    if settings.train_head:
        model.lm_head.weight.requires_grad_(True)
    if settings.base_dtype == "bfloat16":  # "auto" is resolved by the caller (posttrain.loop)
        for _, layer in lora_layers(model):
            layer.get_base_layer().to(torch.bfloat16)
    model.lora_settings = settings
    model.peft_lora_config = config
    return model


def lora_layers(model: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous()
            for k, v in get_peft_model_state_dict(model, adapter_name=ADAPTER).items()}


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    name = "tok_embeddings.weight" if model.config.tie_embeddings else "lm_head.weight"
    return {name: model.lm_head.weight.detach().cpu().contiguous()}


def save_adapter(model: nn.Module, path: str | os.PathLike) -> Path:
    """The adapter (and trained head) alone, as a directory written under a temp name then renamed."""
    settings: LoraSettings = model.lora_settings
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clear_interrupted_saves(path.parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent))
    try:
        save_file(adapter_state(model), str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        if settings.train_head:
            save_file(head_state(model), str(tmp / "head.safetensors"), metadata={"format": "pt"})
        if getattr(model, "trainable_rows", None):
            save_file(rows_state(model), str(tmp / "new_tokens.safetensors"), metadata={"format": "pt"})
        cfg = model.peft_lora_config.to_dict()
        cfg = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}
        cfg = json.loads(json.dumps(cfg, default=str))
        cfg.update(train_head=settings.train_head, tie_embeddings=model.config.tie_embeddings,
                   trainable_rows=getattr(model, "trainable_rows", {}))
        atomic_write_text(tmp / "adapter_config.json", json.dumps(cfg, indent=2) + "\n")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_adapter(model: nn.Module, path: str | os.PathLike) -> None:
    """Load a saved adapter (and head) into a model that `apply_lora` prepared the same way."""
    from peft import set_peft_model_state_dict

    path = Path(path)
    if not (path / "adapter_model.safetensors").is_file():
        raise FileNotFoundError(f"LoRA adapter {path}/adapter_model.safetensors is missing")
    result = set_peft_model_state_dict(model, load_file(str(path / "adapter_model.safetensors")),
                                       adapter_name=ADAPTER)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise ValueError(f"adapter {path} does not fit this model: unexpected {unexpected[:5]}")
    if (path / "head.safetensors").is_file():
        head = next(iter(load_file(str(path / "head.safetensors")).values()))
        with torch.no_grad():
            model.lm_head.weight.copy_(head)
    if (path / "new_tokens.safetensors").is_file():
        state = load_file(str(path / "new_tokens.safetensors"))
        params = dict(model.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            for name in {k.rsplit(".", 1)[0] for k in state}:
                ids = state[f"{name}.ids"].long()
                if name not in params or int(ids.max()) >= params[name].shape[0]:
                    raise ValueError(f"adapter {path} trained rows of {name} that this model does not have: "
                                     "extend its vocabulary to the tokenizer first")
                params[name][ids.to(params[name].device)] = state[f"{name}.rows"].to(params[name])


def rows_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained rows of tables that train only some rows (new tokens), with their ids."""
    params = dict(model.named_parameters(remove_duplicate=False))
    out = {}
    for name, ids in model.trainable_rows.items():
        index = torch.tensor(ids, dtype=torch.long)
        out[f"{name}.ids"] = index
        out[f"{name}.rows"] = params[name].detach()[index.to(params[name].device)].cpu().contiguous()
    return out


def parent_projections(model: nn.Module, parent: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The parent checkpoint's weights of every projection that carries an adapter, read from its
    model.safetensors (only those tensors; the file was checked against its sha256 when loaded)."""
    from safetensors import safe_open

    with safe_open(str(Path(parent) / "model.safetensors"), framework="pt") as f:
        return {f"{name}.weight": f.get_tensor(f"{name}.weight") for name, _ in lora_layers(model)}


@torch.no_grad()
def merged_state_dict(model: nn.Module, base_weights: dict[str, torch.Tensor] | None = None
                      ) -> dict[str, torch.Tensor]:
    """The plain Transformer's state dict with every adapter folded in: W + delta (on W's device).

    base_weights: the projections' weights to fold the adapters into instead of the model's own
    (the parent's float32 ones when the model holds them in bf16); the result is in their dtype."""
    merged: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        if ".lora_" in key:
            continue
        merged[key.replace(".base_layer.", ".")] = value.detach()
    for name, layer in lora_layers(model):
        base = layer.get_base_layer().weight
        if base_weights is not None:
            base = base_weights[f"{name}.weight"].to(base.device)
        merged[f"{name}.weight"] = base.detach() + layer.get_delta_weight(ADAPTER).to(base.dtype)
    return merged


class StartingPoint:
    """The model as `apply_lora` left it, without a copy of its frozen weights: DPO's reference when
    it is the policy's own parent (what TRL does with peft too). `active()` turns the adapters off
    and swaps every other trained tensor (the head, a grown table's rows: copied here, a small share
    of the model) back to its starting value, for a forward under no_grad; then restores both.

    The adapters are turned off through peft's `_disable_adapters` flag, which its `enable_adapters`
    sets too; `enable_adapters` itself also flips the adapters' requires_grad, which a DDP wrapper
    should not see change between its steps. (test_posttrain_distill_dpo checks that the reference
    pass equals a separate copy of the parent bit for bit, which fails if peft stops reading it.)"""

    def __init__(self, model: nn.Module):
        self.model = model
        self.layers = [layer for _, layer in lora_layers(model)]
        self.start = {name: p.detach().clone() for name, p in model.named_parameters()
                      if p.requires_grad and ".lora_" not in name}

    @contextlib.contextmanager
    def active(self):
        params = dict(self.model.named_parameters())
        trained = {}
        try:
            with torch.no_grad():
                for name, start in self.start.items():
                    trained[name], params[name].data = params[name].data, start
                for layer in self.layers:
                    layer._disable_adapters = True
                yield self.model
        finally:
            for layer in self.layers:
                layer._disable_adapters = False
            for name, data in trained.items():
                params[name].data = data


def count_trainable(model: nn.Module) -> int:
    """Trainable parameters; a table that trains only some rows (posttrain/vocab.py) counts those rows."""
    def n(p):
        rows = getattr(p, "trainable_row_count", None)
        return p.numel() if rows is None else rows * p.shape[1]
    return sum(n(p) for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
