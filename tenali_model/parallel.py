"""Parallelism: how the Transformer is spread over ranks, and how its full state goes in and out.

    single  one process: the plain module.
    ddp     DistributedDataParallel: every rank holds the whole model and optimizer; gradients are
            all-reduced in buckets while the backward pass runs (once per optimizer step: the
            trainer skips the sync on the other micro-steps).
    fsdp    FSDP2 (`torch.distributed.fsdp.fully_shard`): every block is its own unit, then the root
            (embedding, final norm, lm head). Parameters, gradients and AdamW state are sharded over
            the ranks; a unit's parameters are all-gathered just before its forward and backward and
            freed after, and its gradients reduce-scattered (every micro-step: skipping that would
            keep unsharded gradients for the whole model, which is what FSDP is there to avoid).
            With bf16 the all-gathered copies are bf16 and gradients are reduced in float32
            (MixedPrecisionPolicy); the sharded master weights stay float32.
            With `compile`, each block is compiled in place before it is sharded (`Module.compile`:
            parameter names unchanged): the all-gather and reduce-scatter hooks stay eager around
            the compiled blocks (FSDP2 keeps dynamo out of them), and the root, whose chunked loss
            is written for eager, is not compiled. single and ddp compile the whole model instead.

The config key `parallelism` picks one ("auto": fsdp from config.FSDP_AUTO_MIN_PARAMS parameters up;
one process is always "single"). Checkpoints stay one consolidated file whatever the mode:
`full_state` gathers the weights and optimizer state to rank 0's CPU, `load_full_state` puts such a
state (from a checkpoint, or rank 0's fresh initialisation) back, broadcast from rank 0 under FSDP.
Optimizer state travels keyed by parameter name (torch.distributed.checkpoint.state_dict), so a
checkpoint written under one mode resumes under another.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.nn.parallel import DistributedDataParallel as DDP

from . import file_waits
from .config import ModelConfig
from .model import Transformer


def fsdp_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401  (torch >= 2.6)
    except ImportError:
        return False
    return True


def build_model(mcfg: ModelConfig, mode: str, device: torch.device, *, world_size: int = 1,
                activation_checkpointing: bool = False, bf16: bool = False,
                compile_blocks: bool = False) -> nn.Module:
    """The Transformer ready for `mode`, before any wrapper that changes its call (DDP, compile).

    single/ddp: built and randomly initialised on the CPU with the current torch seed, then moved
    (every rank builds the same weights). fsdp: built on the meta device, sharded, then allocated on
    `device`, weights still empty: fill them with `load_full_state` (which broadcasts rank 0's).
    compile_blocks (fsdp only): torch.compile every block in place before sharding it.
    """
    if mode != "fsdp":
        model = Transformer(mcfg).to(device)
        model.set_activation_checkpointing(activation_checkpointing)
        return model
    if not fsdp_available():
        raise RuntimeError("parallelism 'fsdp' needs torch.distributed.fsdp.fully_shard (torch >= 2.6)")
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    with torch.device("meta"):
        model = Transformer(mcfg)
    model.set_activation_checkpointing(activation_checkpointing)
    if compile_blocks:
        for block in model.layers:
            block.compile()
    mesh = init_device_mesh(device.type, (world_size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None,
                              reduce_dtype=torch.float32 if bf16 else None)
    for block in model.layers:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)  # the root: embedding, final norm, head
    model.to_empty(device=device)
    model.tie_weights()  # a no-op when the tie survived (FSDP swaps tensors in place)
    if model.config.tie_embeddings and model.lm_head.weight is not model.tok_embeddings.weight:
        raise RuntimeError("FSDP lost the tie between lm_head and tok_embeddings")
    model.init_rope()
    return model


def reshard(model: nn.Module) -> None:
    """Put every FSDP unit back to its sharded parameters. A forward without backward (evaluation
    under no_grad) leaves the root unit unsharded: its parameters are then full copies that the
    optimizer does not hold, which torch.distributed.checkpoint's state dicts cannot map. No-op
    outside FSDP."""
    if not fsdp_available():
        return
    from torch.distributed.fsdp import FSDPModule
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    # Gradients as views into the all-reduce buckets: no second copy of every gradient.
    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
               gradient_as_bucket_view=True)


def grad_sync(model: nn.Module, mode: str, last_micro_step: bool):
    """Context for one micro-step's backward: DDP all-reduces only on the last micro-step."""
    if mode == "ddp" and not last_micro_step:
        return model.no_sync()
    return contextlib.nullcontext()


def zero_grads(optimizer: torch.optim.Optimizer, mode: str) -> None:
    """After the optimizer step. DDP's gradients are views into its all-reduce buckets, which stay
    allocated anyway (plan.Memory counts them): zeroed in place they stay views, where set to None the
    next no_sync micro-step would allocate every gradient anew beside the buckets (4 bytes a parameter
    more under accumulation). Elsewhere None frees them."""
    optimizer.zero_grad(set_to_none=mode != "ddp")


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip to max_norm (inf = measure only) and return the global gradient norm as a plain tensor
    (FSDP's norm is a DTensor over the shards: it is reduced to the full value here)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if hasattr(norm, "full_tensor") else norm


# --- full state in and out -----------------------------------------------------------------------

_FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state(model: nn.Module, optimizer: torch.optim.Optimizer, mode: str
               ) -> tuple[dict, dict]:
    """(model state, optimizer state), full and on the CPU, keyed by parameter name.

    fsdp: a collective (every rank must call it); rank 0 gets the state, the others empty dicts.
    single/ddp: no communication; call it where the state is needed (rank 0).
    """
    return (get_model_state_dict(model, options=_FULL),
            get_optimizer_state_dict(model, optimizer, options=_FULL))


def load_full_state(model: nn.Module, mode: str, model_state: dict | None,
                    optimizer: torch.optim.Optimizer | None = None,
                    optimizer_state: dict | None = None) -> None:
    """Load a full state written by `full_state` (or an index-keyed optimizer.state_dict()).

    fsdp: a collective; only rank 0's states are read (the others may pass None) and broadcast.
    single/ddp: every rank passes the states it read.
    """
    fsdp = mode == "fsdp"
    if fsdp:  # rank 0 read (or initialised) the states first: the others wait for it off NCCL's clock
        file_waits.barrier()
    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=fsdp)
    if model_state is not None or fsdp:
        if model.config.tie_embeddings and model_state and "lm_head.weight" not in model_state:
            model_state = {**model_state, "lm_head.weight": model_state["tok_embeddings.weight"]}
        set_model_state_dict(model, model_state or {}, options=options)
    if optimizer is not None and (optimizer_state is not None or fsdp):
        if optimizer_state:
            optimizer_state = named_optimizer_state(model, optimizer, optimizer_state)
        set_optimizer_state_dict(model, optimizer, optimizer_state or {}, options=options)
        betas_as_tuples(optimizer)


def betas_as_tuples(optimizer: torch.optim.Optimizer) -> None:
    """After loading a saved optimizer state: the loader hands AdamW's betas back as lists."""
    for group in optimizer.param_groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])


def named_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> dict:
    """An optimizer state keyed by parameter name; index-keyed state (optimizer.state_dict(), as
    earlier trainers saved it) is translated through the optimizer's parameter order."""
    groups = state.get("param_groups", [])
    if not groups or all(isinstance(p, str) for g in groups for p in g["params"]):
        return state
    names = {id(p): n for n, p in model.named_parameters()}  # tied parameters: the first name
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    index_to_name = {i: order[n] for n, i in enumerate(p for g in groups for p in g["params"])}
    return {"state": {index_to_name[i]: s for i, s in state["state"].items()},
            "param_groups": [{**g, "params": [index_to_name[i] for i in g["params"]]} for g in groups]}
