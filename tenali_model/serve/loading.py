"""What `tenali serve` loads: a release folder, a Hugging Face export, a Tenali checkpoint, or a lake.

- a release folder (``releases/<id>/`` in the lake, written by the pipeline's ``model_release``
  asset): a Hugging Face model directory (config.json, model.safetensors, tokenizer files) plus
  the sentencepiece ``tokenizer.model``, a model card README.md and ``release.json`` (evaluation
  figures, lineage), which the chat page shows;
- any Llama/Arcee transformers directory of this architecture (weights renamed in memory, see hf.py);
- a Tenali checkpoint directory or training out_dir (its latest), with ``--tokenizer`` unless the
  folder holds a tokenizer.model;
- a local lake root: its ``releases/LATEST.json`` names the release to serve.

Weights are read and cast to the serving dtype on the CPU and moved to the device once, so the
device never holds a float32 copy of a model served in bfloat16 (a 7B: 14 GB on the GPU, not 28).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, empty_model, load_meta, load_model, resolve_checkpoint
from ..model import Transformer
from ..tokenizer import TextTokenizer, TokenizerError, load_tokenizer

RELEASES = "releases"
LATEST_RELEASE = f"{RELEASES}/LATEST.json"


class LoadError(ValueError):
    """Nothing servable at the given path; the message says what was expected."""


@dataclass
class Served:
    model: Transformer
    tokenizer: TextTokenizer
    name: str
    source: str
    release: dict = field(default_factory=dict)  # release.json (evaluation figures, lineage), if any
    # the model's own end-of-text ids (a Hugging Face config's eos_token_id): they end an answer too
    eos_ids: tuple[int, ...] = ()


def latest_release_dir(lake_root: str | os.PathLike) -> Path:
    """The folder `releases/LATEST.json` names under a local lake root."""
    root = str(lake_root)
    if root.startswith("s3://"):
        raise LoadError(f"the lake {root} is on S3: copy the release folder (releases/<id>/) to local disk "
                        "and pass it to `tenali serve PATH`")
    pointer = Path(root) / LATEST_RELEASE
    if not pointer.is_file():
        raise LoadError(f"{pointer} does not exist: materialise the model_release asset first "
                        "(`tenali demo` does), name the lake that holds it (`tenali serve --lake ROOT` or "
                        "TENALI_LAKE_ROOT), or pass a "
                        "checkpoint or release folder to `tenali serve PATH`")
    try:
        latest = json.loads(pointer.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LoadError(f"{pointer} is not valid JSON ({e}): materialise the model_release asset again to rewrite "
                        "it, or pass a release folder to `tenali serve PATH`") from None
    release_id = latest.get("release_id") if isinstance(latest, dict) else None
    if not isinstance(release_id, str) or not release_id:
        raise LoadError(f"{pointer} names no release (no \"release_id\" string): materialise the model_release "
                        "asset again to rewrite it, or pass a release folder to `tenali serve PATH`")
    if Path(release_id).name != release_id or release_id in (".", ".."):  # a path would leave releases/
        raise LoadError(f"{pointer} names release {release_id!r}, which is not a folder name under {RELEASES}/: "
                        "materialise the model_release asset again to rewrite it")
    folder = Path(root) / RELEASES / release_id
    if not (folder / "release.json").is_file():
        raise LoadError(f"{pointer} names release {release_id!r}, but {folder} holds no release.json")
    return folder


def _to_device(model: Transformer, device: str | torch.device) -> Transformer:
    """One move to the device, in the serving dtype already."""
    if torch.device(device) != torch.device("cpu"):
        model = model.to(device)
        model.tie_weights()
    return model.eval()


def load_hf_model(hf_dir: str | os.PathLike, device: str | torch.device = "cpu",
                  dtype: torch.dtype | None = None) -> Transformer:
    """A Transformer from a Llama/Arcee transformers directory, renamed in memory (no copy on disk);
    dtype None: float32."""
    from ..hf import _read_hf_weights, hf_names, model_config_from_hf

    hf_dir = Path(hf_dir)
    # A corrupt or hand-edited folder is named with its file, not a bare JSON/safetensors/torch
    # error (a truncated model.safetensors was a SafetensorError traceback from `tenali serve`).
    config = _read_json(hf_dir / "config.json")
    try:
        cfg = model_config_from_hf(config)
    except (TypeError, ValueError, KeyError) as e:
        raise LoadError(f"{hf_dir / 'config.json'} is not a usable model config: {type(e).__name__}: {e}") from e
    from safetensors import SafetensorError  # its own error, not an OSError or ValueError

    try:
        theirs = _read_hf_weights(hf_dir)
    except (OSError, ValueError, KeyError, SafetensorError) as e:
        raise LoadError(f"{hf_dir}: the weights cannot be read ({type(e).__name__}: {e}); copy the folder again") from e
    state = {ours: theirs[name] for ours, name in hf_names(cfg).items() if name in theirs}
    if cfg.tie_embeddings and "tok_embeddings.weight" in state:
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    model = empty_model(cfg, "cpu", dtype)  # cast as the weights are copied in; moved once below
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor whose shape is not the config's
        raise LoadError(f"{hf_dir}: weights do not match config.json: {e}") from e
    if missing or unexpected:
        raise LoadError(f"{hf_dir}: weights do not match the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
    del state, theirs
    return _to_device(model, device)


def _read_json(path: Path) -> dict:
    """A JSON object from path, or a LoadError naming the file."""
    try:
        value = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise LoadError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise LoadError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def hf_eos_ids(folder: Path) -> tuple[int, ...]:
    """eos_token_id from a Hugging Face folder's config.json and generation_config.json (an int or a
    list); () when neither names one."""
    ids: list[int] = []
    for name in ("config.json", "generation_config.json"):
        try:
            value = json.loads((folder / name).read_text()).get("eos_token_id")
        except (OSError, ValueError, AttributeError):
            continue
        for i in value if isinstance(value, list) else [value]:
            if isinstance(i, int) and not isinstance(i, bool) and i >= 0 and i not in ids:
                ids.append(i)
    return tuple(ids)


def load_served(path: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                name: str | None = None) -> Served:
    p = Path(path).expanduser()
    if not p.exists():
        raise LoadError(f"{p} does not exist: pass a release folder, a checkpoint directory or a lake root")
    if (p / LATEST_RELEASE).is_file() and not (p / "config.json").is_file():
        p = latest_release_dir(p)
    release: dict = {}
    if (p / "release.json").is_file():
        release = _read_json(p / "release.json")
    try:
        if (p / "config.json").is_file() and not (p / "meta.json").is_file() and "model_type" in (p / "config.json").read_text():
            model = load_hf_model(p, device, dtype)
            eos_ids = hf_eos_ids(p)
            default_name = release.get("model_name") or p.name
        else:
            ckpt = resolve_checkpoint(p)
            model = _to_device(load_model(ckpt, dtype=dtype), device)
            eos_ids = ()
            default_name = f"{p.name}-{ckpt.name}" if ckpt != p else p.name
            release = release or {"checkpoint": {k: v for k, v in load_meta(ckpt).items() if k != "train_config"}}
        tok = load_tokenizer(tokenizer if tokenizer else p)
    except (CheckpointError, TokenizerError, KeyError) as e:
        raise LoadError(str(e)) from e
    if tok.vocab_size > model.config.vocab_size:
        raise LoadError(f"the tokenizer has {tok.vocab_size} pieces but the model only {model.config.vocab_size} "
                        "embeddings: they do not belong together")
    return Served(model=model, tokenizer=tok, name=name or default_name, source=str(p), release=release,
                  eos_ids=eos_ids)
