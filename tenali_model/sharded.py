"""Sharded checkpoints: every rank writes its own shard of the weights and optimizer state.

Why: a consolidated checkpoint gathers the whole state to rank 0 and writes it from one process. For
a 7B model that is 83 GB (float32 weights plus AdamW's two moments) through one CPU and one file,
minutes a save, longer than the 30 s torchrun allows between SIGTERM and SIGKILL, so a preempted
FSDP run lost everything since its last periodic save. Sharded, each of 8 ranks writes an eighth,
in parallel, with nothing gathered.

Layout: a normal checkpoint directory (checkpoint.py) whose weights are under `sharded/` instead of
model.safetensors:

    step_00001000/
      sharded/.metadata           torch.distributed.checkpoint (DCP) metadata: which slices of
      sharded/__<rank>_0.distcp   which tensors each file holds; one file per rank, holding the
                                  rank's slices of "model.<name>" and "optimizer.<name>.<state>"
      config.json, meta.json      as always; meta.json's "sharded" lists each file's sha256
      train_state.pt              as always, its "optimizer" holding only the param_groups

DCP reshards on load: such a checkpoint resumes under any world size and parallelism, and one
process reads it whole (`read_weights`), so evaluation, export and serving take it like any other.
The trainer writes intermediate FSDP checkpoints this way (TrainConfig.checkpoint_format "auto")
and the run's last one consolidated, so a finished run always ends in one model.safetensors.

DCP's loader unpickles its metadata with plain pickle and non-tensor entries with
torch.load(weights_only=False); here the metadata goes through an allowlist of DCP's own record
types and non-tensor entries through weights_only=True, so loading never runs pickled code (the
trainer's shards hold only tensors anyway).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint._traverse import set_element
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import StorageMeta
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)

from . import file_waits
from .checkpoint import (CheckpointError, _disk_full, is_sharded, load_config, load_meta, new_save_dir, read_weights,
                         save_checkpoint, sha256_file)
from .model import Transformer
from .parallel import betas_as_tuples, load_full_state, reshard

SHARDED_DIR = "sharded"
FORMAT = "torch.distributed.checkpoint"
_METADATA = ".metadata"

# Every global DCP's metadata pickle refers to, as torch 2.13 writes it for the trainer's state (checked
# by the tests on every save they make): its record dataclasses, torch.Size and dtypes, the layout
# helper, a path. Anything else is refused, naming it: a torch that records a new type fails loudly here.
_SAFE_GLOBALS = {
    ("torch.distributed.checkpoint.metadata", n) for n in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata",
        "ChunkStorageMetadata", "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING")
} | {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
     ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
     ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE_GLOBALS or (module == "torch" and isinstance(getattr(torch, name, None),
                                                                               torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a DCP metadata type")


class SafeReader(FileSystemReader):
    """FileSystemReader whose metadata is unpickled through the allowlist above. Only the global
    .metadata is read (the signature has no **kwargs, so DCP tries no per-rank fallback file)."""

    def read_metadata(self):
        path = Path(self.path) / _METADATA
        try:
            with open(path, "rb") as f:
                metadata = _MetadataUnpickler(f).load()
        except FileNotFoundError:
            raise CheckpointError(f"sharded checkpoint {path.parent}: {_METADATA} is missing") from None
        except Exception as e:  # a refused global, a truncated file
            raise CheckpointError(f"sharded checkpoint {path.parent}: cannot read {_METADATA}: {e}") from e
        if getattr(metadata, "storage_meta", None) is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor entries read with weights_only=True (DCP's default planner allows any pickle)."""

    def load_bytes(self, read_item, value) -> None:
        obj = torch.load(value, weights_only=True)
        if self.flatten_state_dict:
            set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
        else:
            self.state_dict[read_item.dest_index.fqn] = obj


def saves_sharded(checkpoint_format: str, parallelism: str) -> bool:
    """Whether a run's checkpoints before its last are sharded: `checkpoint_format` (TrainConfig's, a
    post-training stage's) "sharded", or "auto" under FSDP."""
    return checkpoint_format == "sharded" or (checkpoint_format == "auto" and parallelism == "fsdp")


def _model_state(model: torch.nn.Module) -> dict:
    """The model's own (sharded under FSDP) state dict, the tied head left out: it is the embedding."""
    state = get_model_state_dict(model)
    if model.config.tie_embeddings:
        state.pop("lm_head.weight", None)
    return state


def _rank_world() -> tuple[int, int]:
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def save_sharded(out_dir: str | os.PathLike, *, step: int, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, **save_kwargs) -> Path | None:
    """Write <out_dir>/step_<step>/ as a sharded checkpoint, atomically (the same temporary folder and
    rename as save_checkpoint). A collective: every rank calls it with its (FSDP-sharded, or whole)
    model and optimizer; each writes and hashes its own file, rank 0 the rest. save_kwargs go to
    save_checkpoint (tokens_seen, loader_state, loss, ...). Returns the directory on rank 0, else None.
    """
    out_dir = Path(out_dir)
    rank, world = _rank_world()
    tmp = [str(new_save_dir(out_dir, step)) if rank == 0 else None]
    if world > 1:
        dist.broadcast_object_list(tmp, src=0, group=file_waits.group())
    tmp = Path(tmp[0])
    try:
        reshard(model)
        optim = get_optimizer_state_dict(model, optimizer)
        with _quiet_if(world == 1):
            dcp.save({"model": _model_state(model), "optimizer": optim["state"]},
                     storage_writer=FileSystemWriter(tmp / SHARDED_DIR), no_dist=world == 1,
                     process_group=file_waits.group())
        # each rank hashes the file it wrote, in parallel: nothing is read twice or through one process
        digests = {p.name: sha256_file(p) for p in (tmp / SHARDED_DIR).glob(f"__{rank}_*.distcp")}
        if world > 1:
            gathered = [None] * world
            dist.all_gather_object(gathered, digests, group=file_waits.group())
            digests = {k: v for d in gathered for k, v in d.items()}
        if rank != 0:
            return None
        if unseen := sorted(n for n in digests if not (tmp / SHARDED_DIR / n).is_file()):
            raise CheckpointError(f"rank 0 does not see {', '.join(unseen)} that other ranks wrote to {tmp}: "
                                  f"out_dir ({out_dir}) must be one filesystem shared by every rank (a network "
                                  "volume on several nodes), or set checkpoint_format to 'full'")
        digests[_METADATA] = sha256_file(tmp / SHARDED_DIR / _METADATA)
        return save_checkpoint(out_dir, step=step, model=model, into=tmp,
                               optimizer_state={"param_groups": optim["param_groups"]},
                               sharded={"format": FORMAT, "sha256": dict(sorted(digests.items()))},
                               **save_kwargs)
    except BaseException as e:
        full = "" if isinstance(e, CheckpointError) else _disk_full(e, out_dir, tmp)
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise CheckpointError(f"no space left on the filesystem of {out_dir} while rank {rank} saved its shard "
                                  f"of step {step}: {full}. Free space there, point out_dir at a larger volume, or "
                                  "keep fewer checkpoints (keep_last); any checkpoints saved before are intact, and "
                                  "a rerun resumes from the newest") from e
        raise


def verify_shards(ckpt_dir: str | os.PathLike, meta: dict | None = None, part: tuple[int, int] = (0, 1)) -> None:
    """Every file meta.json lists is there and matches its sha256, and no other file is. part=(rank,
    world_size): hash only this rank's share of the files (every world_size-th, by name)."""
    ckpt_dir = Path(ckpt_dir)
    meta = load_meta(ckpt_dir) if meta is None else meta
    listed = (meta.get("sharded") or {}).get("sha256")
    if not listed:
        raise CheckpointError(f"checkpoint {ckpt_dir}: meta.json lists no shard files for {SHARDED_DIR}/")
    folder = ckpt_dir / SHARDED_DIR
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    if missing := sorted(set(listed) - present):
        raise CheckpointError(f"checkpoint {ckpt_dir}: {SHARDED_DIR}/ is missing {', '.join(missing)}")
    if extra := sorted(present - set(listed)):
        raise CheckpointError(f"checkpoint {ckpt_dir}: {SHARDED_DIR}/ holds files meta.json does not list: "
                              f"{', '.join(extra)}")
    rank, world = part
    for name in sorted(listed)[rank::world]:
        if (digest := sha256_file(folder / name)) != (expected := listed[name]):
            raise CheckpointError(f"checkpoint {ckpt_dir}: {SHARDED_DIR}/{name} sha256 mismatch: meta.json "
                                  f"records {expected}, the file hashes to {digest} (corrupt or replaced)")


@contextlib.contextmanager
def _quiet_if(no_dist: bool):
    """DCP warns on every single-process save or load, even when asked for one (no_dist=True)."""
    with warnings.catch_warnings():
        if no_dist:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def _load(ckpt_dir: Path, state: dict, no_dist: bool) -> None:
    reader = SafeReader(ckpt_dir / SHARDED_DIR)
    reader.read_metadata()  # its CheckpointError as is, before DCP wraps it in every rank's traceback
    try:
        with _quiet_if(no_dist):
            dcp.load(state, storage_reader=reader, planner=SafeLoadPlanner(), no_dist=no_dist,
                     process_group=None if no_dist else file_waits.group())
    except (CheckpointException, Exception) as e:  # CheckpointException: each rank's failure (a BaseException)
        lines = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {ckpt_dir}: cannot read {SHARDED_DIR}/: {lines[-1] if lines else e!r}"
                              ) from e


def read_sharded_weights(ckpt_dir: str | os.PathLike) -> dict:
    """The full weights of a sharded checkpoint, in this process alone (no collective), on the CPU;
    tied lm_head.weight left out (read_weights fills it in)."""
    ckpt_dir = Path(ckpt_dir)
    cfg = load_config(ckpt_dir)
    with torch.device("meta"):
        shapes = Transformer(cfg).state_dict()
    state = {k: torch.empty(v.shape, dtype=v.dtype) for k, v in shapes.items()
             if not (cfg.tie_embeddings and k == "lm_head.weight")}
    _load(ckpt_dir, {"model": state}, no_dist=True)
    return state


def load_sharded(ckpt_dir: str | os.PathLike, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer | None = None, param_groups: list | None = None) -> None:
    """Load a sharded checkpoint into a model (FSDP-sharded, DDP or plain) and its optimizer, each rank
    reading only the slices it holds: a collective when torch.distributed is initialised."""
    ckpt_dir = Path(ckpt_dir)
    reshard(model)
    model_state = _model_state(model)
    state = {"model": model_state}
    if optimizer is not None:
        optim = get_optimizer_state_dict(model, optimizer)  # creates AdamW's state to load into
        state["optimizer"] = optim["state"]
    _load(ckpt_dir, state, no_dist=not dist.is_initialized())
    # strict=False for the tied head alone, left out of model_state (it is the embedding); every other
    # key came from this model and DCP refused to load if the checkpoint lacked one
    set_model_state_dict(model, model_state, options=StateDictOptions(strict=False))
    if model.config.tie_embeddings and model.lm_head.weight is not model.tok_embeddings.weight:
        raise RuntimeError("loading lost the tie between lm_head and tok_embeddings")
    if optimizer is not None:
        set_optimizer_state_dict(model, optimizer, {"state": state["optimizer"], "param_groups": param_groups})
        betas_as_tuples(optimizer)


def load_checkpoint_state(ckpt_dir: str | os.PathLike, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                          mode: str, is_main: bool, optimizer_state: dict | None) -> None:
    """A resumed run's weights and optimizer state, from a sharded checkpoint (each rank reads its own
    slices) or a consolidated one (under FSDP rank 0 alone reads it and broadcasts; elsewhere every
    rank reads it). optimizer_state: train_state.pt's "optimizer", verified already; with `optimizer`
    None (a checkpoint with no optimizer state, such as an imported one) the weights alone. A
    collective under FSDP and for sharded checkpoints."""
    if is_sharded(ckpt_dir):
        load_sharded(ckpt_dir, model, optimizer, optimizer_state["param_groups"] if optimizer is not None else None)
    else:
        reads = mode != "fsdp" or is_main
        load_full_state(model, mode, read_weights(ckpt_dir, verify=False)[0] if reads else None, optimizer,
                        optimizer_state if reads else None)
