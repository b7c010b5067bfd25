"""Checkpoints: save, find and load them, atomically and without unpickling code.

CHECKPOINT LAYOUT, version 1 (a contract between the trainer, the pipeline and serving):

    <out_dir>/
      latest                  text file: the directory name of the newest complete checkpoint
      step_00001000/          one directory per saved step (8-digit, zero-padded)
        model.safetensors     weights (float32 as trained); with tied embeddings only
                              tok_embeddings.weight is stored, lm_head.weight is the same tensor
        config.json           the ModelConfig fields + "checkpoint_format_version": 1
        train_state.pt        optimizer state, step, tokens_seen, loader state, RNG states
                              (python, numpy, torch, cuda); only tensors, dicts, lists, numbers and
                              strings, so torch.load(weights_only=True) reads it. The trainer stores
                              the full (unsharded) optimizer state keyed by parameter name, as
                              torch.distributed.checkpoint.state_dict gives it, so a run can resume
                              under another parallelism (DDP <-> FSDP) or world size; index-keyed
                              state (optimizer.state_dict()) is read too
        meta.json             checkpoint_format_version, step, tokens_seen, loss, val_loss,
                              model_sha256 (of model.safetensors), train_state_sha256 (of
                              train_state.pt; absent in older checkpoints), num_params, created
                              (UTC ISO 8601), and the training config when known

A sharded checkpoint (sharded.py: what an FSDP run saves before its last step) holds the same
files except model.safetensors: its weights and optimizer state are one file per rank under
`sharded/` (torch.distributed.checkpoint), listed with their sha256s in meta.json's "sharded" entry,
and train_state.pt's "optimizer" holds only the param_groups. `read_weights` and everything built on
it read either kind. A run's last checkpoint is always consolidated: under FSDP the trainer gathers
the full weights and optimizer state to rank 0 for it.

A checkpoint directory is written under a temporary name in out_dir and renamed into place, then
`latest` is replaced atomically: a reader sees either the old checkpoint or the complete new one.
Loading verifies model.safetensors and train_state.pt against meta.json's sha256s and never
unpickles code.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, atomic_write_text
from .model import Transformer

CHECKPOINT_FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d{8,})$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete, corrupt or of another format version."""


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain Transformer inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "module"):  # DistributedDataParallel
            model = model.module
        elif hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        else:
            return model


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# --- RNG state as plain tensors / lists, so train_state.pt loads with weights_only=True --------

def capture_rng() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    np_state = np.random.get_state()
    rng = {
        "python": {"version": version, "state": list(state), "gauss": gauss},
        "numpy": {"kind": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]),
                  "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def rank_rng(state: dict, rank: int, world_size: int) -> dict[str, Any]:
    """This rank's RNG state from a train_state: its own when the checkpoint holds one per rank
    from a run over as many ranks (ranks draw different amounts, e.g. LoRA dropout on rows padded
    to their own lengths, and each CUDA device has its own generator), else rank 0's."""
    per_rank = state.get("rng_per_rank")
    return per_rank[rank] if per_rank and len(per_rank) == world_size else state["rng"]


def restore_rng(rng: dict[str, Any]) -> None:
    py = rng["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    nps = rng["numpy"]
    np.random.set_state((nps["kind"], nps["keys"].numpy().astype(np.uint32), nps["pos"],
                         nps["has_gauss"], nps["cached_gaussian"]))
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(rng["cuda"])


# --- saving ------------------------------------------------------------------------------------

class Shape:
    """What save_checkpoint reads from a model, its config and parameter count, for weights passed as
    model_state without a model holding them (merged LoRA weights; a student made of its teacher's)."""

    def __init__(self, config: ModelConfig, n_params: int):
        self.config, self._n = config, n_params

    def num_params(self) -> int:
        return self._n


def save_checkpoint(out_dir: str | os.PathLike, *, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None = None, tokens_seen: int = 0,
                    loader_state: dict | None = None, loss: float | None = None,
                    val_loss: float | None = None, train_config: dict | None = None,
                    extra_state: dict | None = None, keep_last: int = 0,
                    model_state: dict | None = None, optimizer_state: dict | None = None,
                    extra_meta: dict | None = None, rng_per_rank: list[dict] | None = None,
                    into: Path | None = None, sharded: dict | None = None) -> Path:
    """Write <out_dir>/step_<step>/ atomically, point `latest` at it, prune old ones.

    model_state / optimizer_state: full state dicts gathered beforehand (FSDP, or name-keyed
    optimizer state); by default model.state_dict() and optimizer.state_dict().
    extra_meta: more meta.json entries (e.g. where an imported model came from).
    rng_per_rank: every rank's `capture_rng()` (index = rank) when several ranks train; `rng`
    holds this process's either way (restore with `rank_rng`).
    keep_last > 0 keeps that many newest step directories, and always the one `latest` names and the
    best by val_loss (named by the `best` pointer file, written when any checkpoint has a val_loss).
    into, sharded (sharded.save_sharded): the folder from `new_save_dir` where the weights were
    written as shards, and meta.json's "sharded" entry (their format and sha256s); no
    model.safetensors is written then.
    Returns the checkpoint directory.
    """
    out_dir = Path(out_dir)
    model = unwrap(model)
    cfg: ModelConfig = model.config
    final = out_dir / step_dir_name(step)
    tmp = new_save_dir(out_dir, step) if into is None else Path(into)
    try:
        if sharded is None:
            source = model.state_dict() if model_state is None else model_state
            state = {k: v.detach().to("cpu").contiguous() for k, v in source.items()}
            if cfg.tie_embeddings:
                state.pop("lm_head.weight", None)  # the same tensor as tok_embeddings.weight
            weights = tmp / "model.safetensors"
            save_file(state, str(weights), metadata={"format": "pt"})
            _fsync(weights)
            digest = sha256_file(weights)
        else:
            digest = None

        atomic_write_text(tmp / "config.json", json.dumps(
            {**asdict(cfg), "checkpoint_format_version": CHECKPOINT_FORMAT_VERSION}, indent=2) + "\n")
        train_state = {
            "checkpoint_format_version": CHECKPOINT_FORMAT_VERSION,
            "step": int(step),
            "tokens_seen": int(tokens_seen),
            "optimizer": (optimizer_state if optimizer_state is not None
                          else optimizer.state_dict() if optimizer is not None else None),
            "loader": loader_state,
            "rng": capture_rng(),
            **({"rng_per_rank": rng_per_rank} if rng_per_rank else {}),
            **(extra_state or {}),
        }
        torch.save(train_state, tmp / "train_state.pt")
        _fsync(tmp / "train_state.pt")
        # torch.load reads a flipped byte in a tensor record without complaint (no CRC check), so
        # the optimizer state is checksummed like the weights
        state_digest = sha256_file(tmp / "train_state.pt")
        meta = {
            "checkpoint_format_version": CHECKPOINT_FORMAT_VERSION,
            "step": int(step),
            "tokens_seen": int(tokens_seen),
            "loss": loss,
            "val_loss": val_loss,
            "model_sha256": digest,
            "train_state_sha256": state_digest,
            "num_params": model.num_params(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if sharded is not None:
            meta["sharded"] = sharded
        if train_config is not None:
            meta["train_config"] = train_config
        meta.update(extra_meta or {})
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2) + "\n")

        if final.exists():  # re-saving a step: move the old one aside, never leave a gap in `latest`
            old = Path(tempfile.mkdtemp(prefix=f".old-{final.name}-", dir=out_dir))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(out_dir)
    except BaseException as e:
        full = _disk_full(e, out_dir, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise CheckpointError(f"no space left on the filesystem of {out_dir} while saving step {step}: "
                                  f"{full}. Free space there, point out_dir at a larger volume, or keep fewer "
                                  f"checkpoints (keep_last, now {keep_last or 'all'}); any checkpoints saved "
                                  "before are intact, and a rerun resumes from the newest") from e
        raise
    atomic_write_text(out_dir / "latest", final.name + "\n")
    best = best_checkpoint(out_dir)
    if best is not None:
        atomic_write_text(out_dir / "best", best.name + "\n")
    if keep_last > 0:
        prune_checkpoints(out_dir, keep_last)
    return final


def new_save_dir(out_dir: str | os.PathLike, step: int) -> Path:
    """A fresh temporary folder in out_dir for the checkpoint of `step`, what earlier killed saves
    left cleared first. Only the one process that saves into out_dir calls this."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_interrupted_saves(out_dir)
    return Path(tempfile.mkdtemp(prefix=f".tmp-{step_dir_name(step)}-", dir=out_dir))


# A filesystem with less than this free when a save fails is taken as full: torch.save reports ENOSPC
# as RuntimeError("... unexpected pos ..."), not as an OSError.
FULL_BELOW_BYTES = 16 * 2**20


def _disk_full(error: BaseException, out_dir: Path, tmp: Path) -> str:
    """Why the save failed for want of space ("" if not that): an ENOSPC/EDQUOT OSError, or any error
    while the filesystem has almost nothing free. Measured before the partial save is removed."""
    import errno

    try:
        free = shutil.disk_usage(out_dir).free
        written = sum(f.stat().st_size for f in tmp.rglob("*") if f.is_file())
    except OSError:
        return ""
    quota = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not quota and free >= FULL_BELOW_BYTES:
        return ""
    what = "disk quota exceeded" if quota and error.errno == errno.EDQUOT else "disk full"
    return f"{what}, {free / 2**20:.1f} MiB free after {written / 2**20:.1f} MiB of the checkpoint was written"


def check_space(out_dir: str | os.PathLike, need: int) -> str:
    """Before training: CheckpointError when out_dir's filesystem cannot hold one checkpoint of `need`
    bytes (the first save would fail after hours of training); a warning to print ("" if none) when it
    holds fewer than two (a save writes the new checkpoint before pruning old ones)."""
    try:
        free = shutil.disk_usage(out_dir).free
    except OSError:
        return ""
    if free < need:
        raise CheckpointError(f"{out_dir} has {_size(free)} free but one checkpoint of this model takes about "
                              f"{_size(need)} (float32 weights and AdamW state): the first save would fail. "
                              "Free space there or point out_dir at a larger volume")
    if free < 2 * need:
        return (f"note: {out_dir} has {_size(free)} free, room for one checkpoint of about {_size(need)} but not "
                "two: a save writes the new one before removing old ones (keep_last), so the second save may fail")
    return ""


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def best_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the lowest finite val_loss in its meta.json (the newest of equals);
    None when no checkpoint recorded one (val_loss is recorded at the steps evaluated)."""
    best, score = None, math.inf
    for p in list_checkpoints(out_dir):
        try:
            v = load_meta(p).get("val_loss")
        except CheckpointError:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= score:
            best, score = p, v
    return best


def clear_interrupted_saves(out_dir: Path) -> None:
    """What a save killed half-way leaves in out_dir: `.tmp-*` folders (a checkpoint never
    completed: removed; a 7B's holds tens of GB) and `.old-*` folders (a step being re-saved, moved
    aside: put back when its replacement never arrived, else removed). Only the one process that
    saves into out_dir calls this, before it saves."""
    for p in out_dir.glob(".tmp-step_*"):
        shutil.rmtree(p, ignore_errors=True)
    for p in out_dir.glob(".old-step_*"):
        for inner in p.glob("step_*"):
            if not (out_dir / inner.name).exists():
                os.replace(inner, out_dir / inner.name)
        shutil.rmtree(p, ignore_errors=True)


def prune_checkpoints(out_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest keep_last complete checkpoints, the one `latest` names and the best
    (lowest val_loss, `best_checkpoint`: the one to release may be older than the last few).

    Each is first renamed to a `.tmp-` folder (gone from every listing at once, never left
    half-deleted under its own name), then removed as far as the filesystem lets: a reader still
    holding a file open (an upload, an evaluation; NFS then refuses to remove the folder) must not
    fail the training run that just saved. What stays behind goes with the next save."""
    out_dir = Path(out_dir)
    keep = {p.name for p in list_checkpoints(out_dir)[-keep_last:]}
    latest = out_dir / "latest"
    if latest.exists():
        keep.add(latest.read_text().strip())
    best = best_checkpoint(out_dir)
    if best is not None:
        keep.add(best.name)
    removed = []
    for p in list_checkpoints(out_dir):
        if p.name not in keep:
            trash = Path(tempfile.mkdtemp(prefix=f".tmp-{p.name}-pruned-", dir=out_dir))
            try:
                os.replace(p, trash / p.name)
            except OSError:
                shutil.rmtree(trash, ignore_errors=True)
                continue  # left for a later save to prune
            shutil.rmtree(trash, ignore_errors=True)
            removed.append(p)
    return removed


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories
    finally:
        os.close(fd)


# --- finding -----------------------------------------------------------------------------------

def list_checkpoints(out_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint directories (meta.json present), oldest step first."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in out_dir.iterdir()
             if (m := _STEP_DIR.match(p.name)) and (p / "meta.json").is_file()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The directory `latest` names; if that is missing or incomplete, the newest complete one."""
    out_dir = Path(out_dir)
    pointer = out_dir / "latest"
    if pointer.is_file():
        candidate = out_dir / pointer.read_text().strip()
        if (candidate / "meta.json").is_file():
            return candidate
    found = list_checkpoints(out_dir)
    return found[-1] if found else None


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory itself, the latest checkpoint of an out_dir, or the one an out_dir's
    `latest` or `best` pointer file names (given as the path)."""
    path = Path(path)
    if path.name in ("latest", "best") and path.is_file():  # `run/latest`: what a reader of the folder reaches for
        path = path.parent / path.read_text().strip()
    elif path.name == "best" and not path.exists() and latest_checkpoint(path.parent) is not None:
        raise CheckpointError(f"{path.parent} has no `best` pointer: none of its checkpoints recorded a val_loss "
                              f"(the run had no validation data); name {path.parent / 'latest'} instead")
    if (path / "meta.json").is_file():
        return path
    found = latest_checkpoint(path)
    if found is None:
        raise CheckpointError(f"{path} is neither a checkpoint directory (step_*/ with meta.json) nor a "
                              "training out_dir holding one")
    return found


# --- loading -----------------------------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint file {path} is not valid JSON: {e}") from e


def _check_version(path: Path, d: dict) -> None:
    version = d.get("checkpoint_format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint_format_version {version!r} is not supported "
                              f"(this tenali_model reads version {CHECKPOINT_FORMAT_VERSION})")


def load_meta(ckpt_dir: str | os.PathLike) -> dict:
    path = Path(ckpt_dir) / "meta.json"
    meta = _read_json(path)
    _check_version(path, meta)
    return meta


def load_config(ckpt_dir: str | os.PathLike) -> ModelConfig:
    path = Path(ckpt_dir) / "config.json"
    d = _read_json(path)
    _check_version(path, d)
    d.pop("checkpoint_format_version")
    return ModelConfig.from_dict(d)


def is_sharded(ckpt_dir: str | os.PathLike, meta: dict | None = None) -> bool:
    """Whether a checkpoint keeps its weights as shards (sharded.py: meta.json's "sharded" entry) rather
    than in model.safetensors."""
    meta = load_meta(ckpt_dir) if meta is None else meta
    return bool(meta.get("sharded")) and not (Path(ckpt_dir) / "model.safetensors").is_file()


def read_weights(ckpt_dir: str | os.PathLike, verify: bool = True) -> tuple[dict, dict]:
    """(full state dict, meta) of a checkpoint, the sha256 checked first; with tied embeddings
    lm_head.weight is filled in as the embedding tensor. A sharded checkpoint (sharded.py) is read
    whole by this process."""
    ckpt_dir = Path(ckpt_dir)
    meta = load_meta(ckpt_dir)
    weights = ckpt_dir / "model.safetensors"
    if is_sharded(ckpt_dir, meta):
        from .sharded import read_sharded_weights, verify_shards
        if verify:
            verify_shards(ckpt_dir, meta)
        state = read_sharded_weights(ckpt_dir)
    elif not weights.is_file():
        raise CheckpointError(f"checkpoint {ckpt_dir}: model.safetensors is missing")
    else:
        state = _read_safetensors(ckpt_dir, weights, meta, verify)
    if load_config(ckpt_dir).tie_embeddings and "tok_embeddings.weight" in state:
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    return state, meta


def _read_safetensors(ckpt_dir: Path, weights: Path, meta: dict, verify: bool) -> dict:
    if verify:
        digest = sha256_file(weights)
        if digest != meta.get("model_sha256"):
            raise CheckpointError(
                f"checkpoint {ckpt_dir}: model.safetensors sha256 mismatch: meta.json records "
                f"{meta.get('model_sha256')}, the file hashes to {digest} (corrupt or replaced)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {ckpt_dir}: cannot read model.safetensors: {e}") from e
    return state


def load_weights(model: torch.nn.Module, ckpt_dir: str | os.PathLike, verify: bool = True) -> dict:
    """Load model.safetensors into an existing model (checking the sha256 first); returns meta."""
    state, meta = read_weights(ckpt_dir, verify)
    model = unwrap(model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt_dir}: weights do not match the model: "
                              f"missing {missing}, unexpected {unexpected}")
    return meta


def empty_model(cfg: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
                ) -> Transformer:
    """The Transformer `cfg` describes, its weights allocated but not initialised (load_state_dict
    fills them next: no random init to throw away). With `dtype` the parameters and rope tables are
    in it (as `model.to(dtype)` casts them) and load_state_dict casts each weight as it copies it in,
    so a bf16 model is never held in float32 first."""
    with torch.device("meta"):
        model = Transformer(cfg)
    if dtype is not None:
        model = model.to(dtype)
    model = model.to_empty(device=device)
    model.tie_weights()
    model.init_rope()
    return model


def load_model(ckpt_dir: str | os.PathLike, device: str | torch.device = "cpu",
               verify: bool = True, dtype: torch.dtype | None = None) -> Transformer:
    """Build the Transformer a checkpoint describes and load its (verified) weights, in `dtype` when
    given (else the checkpoint's float32); eval mode."""
    ckpt_dir = resolve_checkpoint(ckpt_dir)
    model = empty_model(load_config(ckpt_dir), device, dtype)
    load_weights(model, ckpt_dir, verify=verify)
    return model.eval()


def load_train_state(ckpt_dir: str | os.PathLike, mmap: bool = False, verify: bool = True) -> dict:
    """train_state.pt read with weights_only=True (plain containers and tensors only), its sha256
    checked first against meta.json's train_state_sha256 when verify (checkpoints from before that
    entry are read unchecked).

    mmap=True maps the tensors instead of reading them: ranks that only need the step, loader and
    RNG state then never page in the (possibly huge) optimizer state (pass verify=False there too
    once another rank has verified the file: hashing reads all of it).
    """
    path = Path(ckpt_dir) / "train_state.pt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {ckpt_dir}: train_state.pt is missing")
    if verify:
        expected = load_meta(ckpt_dir).get("train_state_sha256")
        if expected is not None and (digest := sha256_file(path)) != expected:
            raise CheckpointError(
                f"checkpoint {ckpt_dir}: train_state.pt sha256 mismatch: meta.json records {expected}, "
                f"the file hashes to {digest} (corrupt or replaced)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # a truncated zip, or a forbidden pickled global
        raise CheckpointError(f"checkpoint {ckpt_dir}: cannot read train_state.pt: {e}") from e
    _check_version(path, state)
    return state


def verify_checkpoint(ckpt_dir: str | os.PathLike, part: tuple[int, int] = (0, 1)) -> dict:
    """Check a checkpoint whole without loading it: meta.json and config.json readable and of this
    format version, model.safetensors (or a sharded checkpoint's files) and train_state.pt matching
    their sha256s, train_state.pt readable (mapped, not read); returns meta. Raises CheckpointError
    naming what is wrong.

    part=(rank, world_size): the share of the hashing this rank does, so that the ranks of a run
    together hash each file once, in parallel (a 7B's checkpoint is 83 GB): rank 0 model.safetensors,
    the last rank train_state.pt, and shard files round-robin. Every rank checks what is cheap."""
    rank, world = part
    ckpt_dir = Path(ckpt_dir)
    meta = load_meta(ckpt_dir)
    load_config(ckpt_dir)
    weights = ckpt_dir / "model.safetensors"
    if is_sharded(ckpt_dir, meta):
        from .sharded import verify_shards
        verify_shards(ckpt_dir, meta, part)
    elif not weights.is_file():
        raise CheckpointError(f"checkpoint {ckpt_dir}: model.safetensors is missing")
    elif rank == 0 and (digest := sha256_file(weights)) != meta.get("model_sha256"):
        raise CheckpointError(
            f"checkpoint {ckpt_dir}: model.safetensors sha256 mismatch: meta.json records "
            f"{meta.get('model_sha256')}, the file hashes to {digest} (corrupt or replaced)")
    if rank == world - 1:  # hashed, and read (mapped) to see that it loads
        load_train_state(ckpt_dir, mmap=True)
    return meta
