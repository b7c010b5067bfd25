"""Hugging Face export and import: a Tenali checkpoint <-> a transformers model directory.

    export_hf(CKPT, OUT_DIR, tokenizer_model="tokenizer.model")   # tenali export-hf CKPT OUT_DIR
    export_hf(CKPT, OUT_DIR, tokenizer_model="tokenizer.json")    # a base model's lineage
    import_hf(HF_DIR, OUT_DIR)                                     # tenali import-hf HF_DIR OUT_DIR

Architecture. The Transformer is a Llama: pre-norm RMSNorm, grouped-query attention without biases,
RoPE in the "rotate half" layout, no biases anywhere. So a SwiGLU model is exported as
`LlamaForCausalLM` with weights renamed one to one and none permuted (Meta's original checkpoints
rotate interleaved pairs and need a permutation of wq/wk; this model already rotates (i, i + d/2)
pairs as transformers does, which the export test checks by comparing logits):

    tok_embeddings            model.embed_tokens          layers.N.attn.wq  model.layers.N.self_attn.q_proj
    layers.N.attn_norm        .input_layernorm            layers.N.attn.wk  .self_attn.k_proj
    layers.N.mlp_norm         .post_attention_layernorm   layers.N.attn.wv  .self_attn.v_proj
    norm                      model.norm                  layers.N.attn.wo  .self_attn.o_proj
    lm_head (when untied)     lm_head                     layers.N.mlp.w1/w3/w2  .mlp.gate_proj/up_proj/down_proj

A GELU model (the "51m" seed design) has an MLP without a gate, which Llama cannot express. It is
exported as `ArceeForCausalLM` (transformers >= 4.53): Llama's attention and norms with an ungated
MLP down_proj(act(up_proj(x))), hidden_act "gelu_pytorch_tanh" = our tanh-approximated GELU;
w1 -> up_proj, w2 -> down_proj. Any other architecture is refused with a ConversionError.

config.json is written in the classic form (`rope_theta` at the top level, `rope_scaling` null) that
transformers 4.x and 5.x both read. Weights are written as float32 model.safetensors (tied embeddings
stored once, as transformers does).

Tokenizer. Given the sentencepiece model the pipeline trained, the export also writes tokenizer.json
(a `tokenizers` BPE built from the pieces and their scores: merges ordered by the merged piece's
score, byte fallback, the special tokens as added tokens, and sentencepiece's dummy prefix and
whitespace escaping as the normalisers Prepend("▁") and Replace(" ", "▁"), the layout of Llama 2's
own tokenizer.json), tokenizer_config.json naming `<|endoftext|>` the eos and `<|pad|>` the pad
token, and the sentencepiece file itself as tokenizer.model (as Llama folders carry it). It is read
with sentencepiece's own wire format, with no protobuf or sentencepiece import.
The ids are those training uses: each text between special tokens is encoded alone, with its own
dummy prefix, as the pipeline encodes each document and `encode_chat` each message. That is also
how llama.cpp tokenizes, so its converter (convert_hf_to_gguf.py) makes a GGUF that gives the same
ids, logits and greedy tokens (bench/llama_cpp_check.sh). It differs from sentencepiece run over a
whole string with a special token inside: there the text right after the token gets no dummy
prefix ("<|endoftext|>next" -> "next" vs "▁next"); the test pins this. "\n", a user-defined piece,
is an ordinary vocabulary entry that no merge joins (an added token would restart the dummy prefix
after every line). Only BPE models with the identity normaliser and remove_extra_whitespaces off
(the pipeline's settings) are converted; others are refused.
A model continued from a Hugging Face base is exported with the base's tokenizer.json instead (the
chat tokens added, `tenali_model.tokenizer.add_chat_tokens`): pass that file as tokenizer_model.

Import reads a LlamaForCausalLM or ArceeForCausalLM directory (model.safetensors, or shards listed in
model.safetensors.index.json) with no biases and default RoPE, and writes a step-0 Tenali checkpoint
(weights as float32, no optimizer state) that `load_model`, evaluation and fine-tuning use.

Needs safetensors, and `tokenizers` for the tokenizer; not transformers itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .checkpoint import empty_model, load_config, read_weights, resolve_checkpoint, save_checkpoint, sha256_file
from . import sentencepiece_proto as sp_proto
from .config import ModelConfig


class ConversionError(ValueError):
    """A model or tokenizer that cannot be converted faithfully; the message says why."""


EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

# Tenali name -> Hugging Face name, per block; {i} is the layer.
_BLOCK = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn.wq.weight": "self_attn.q_proj.weight",
    "attn.wk.weight": "self_attn.k_proj.weight",
    "attn.wv.weight": "self_attn.v_proj.weight",
    "attn.wo.weight": "self_attn.o_proj.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
}
_MLP = {
    "swiglu": {"mlp.w1.weight": "mlp.gate_proj.weight", "mlp.w3.weight": "mlp.up_proj.weight",
               "mlp.w2.weight": "mlp.down_proj.weight"},
    "gelu": {"mlp.w1.weight": "mlp.up_proj.weight", "mlp.w2.weight": "mlp.down_proj.weight"},
}
_ARCH = {  # activation -> (architecture, model_type, hidden_act)
    "swiglu": ("LlamaForCausalLM", "llama", "silu"),
    "gelu": ("ArceeForCausalLM", "arcee", "gelu_pytorch_tanh"),
}


def hf_names(cfg: ModelConfig) -> dict[str, str]:
    """Tenali parameter name -> Hugging Face name, for every stored tensor."""
    names = {"tok_embeddings.weight": "model.embed_tokens.weight", "norm.weight": "model.norm.weight"}
    if not cfg.tie_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(cfg.n_layers):
        for ours, theirs in {**_BLOCK, **_MLP[cfg.activation]}.items():
            names[f"layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    return names


def hf_config(cfg: ModelConfig, eos_id: int | None = None, pad_id: int | None = None,
              bos_id: int | None = None) -> dict:
    """config.json for transformers (classic keys, read by 4.x and 5.x)."""
    if cfg.activation not in _ARCH:
        raise ConversionError(f"activation {cfg.activation!r} has no Hugging Face equivalent")
    arch, model_type, act = _ARCH[cfg.activation]
    return {
        "architectures": [arch],
        "model_type": model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.dim,
        "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.n_kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": act,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "torch_dtype": "float32",
    }


# --- export --------------------------------------------------------------------------------------

def export_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike,
              tokenizer_model: str | os.PathLike | None = None) -> Path:
    """Write a transformers model directory for a Tenali checkpoint (or an out_dir's latest).

    out_dir must not exist or be empty; it is assembled in a temporary directory next to it and
    renamed into place. Returns out_dir.
    """
    ckpt_dir = resolve_checkpoint(ckpt_dir)
    cfg = load_config(ckpt_dir)
    if cfg.activation not in _ARCH:
        raise ConversionError(f"activation {cfg.activation!r} has no Hugging Face equivalent")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")
    state, meta = read_weights(ckpt_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        names = hf_names(cfg)
        tensors = {names[k]: v.to(torch.float32).contiguous() for k, v in state.items() if k in names}
        missing = sorted(set(names.values()) - set(tensors))
        if missing:
            raise ConversionError(f"checkpoint {ckpt_dir} lacks {missing}")
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        ids = {}
        if tokenizer_model is not None:
            ids = write_tokenizer(tokenizer_model, tmp, vocab_size=cfg.vocab_size,
                                  model_max_length=cfg.max_seq_len)
            if Path(tokenizer_model).suffix != ".json":  # the trained file itself, as Llama folders carry it:
                shutil.copyfile(tokenizer_model, tmp / "tokenizer.model")  # llama.cpp's converter reads it
        eos, pad = ids.get("eos_token_id"), ids.get("pad_token_id")
        (tmp / "config.json").write_text(json.dumps(hf_config(cfg, eos, pad), indent=2) + "\n")
        (tmp / "generation_config.json").write_text(json.dumps(
            {"bos_token_id": None, "eos_token_id": ids.get("stop_ids") or eos, "pad_token_id": pad}, indent=2) + "\n")
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


# --- import --------------------------------------------------------------------------------------

def model_config_from_hf(hf: dict) -> ModelConfig:
    """The ModelConfig a transformers config.json describes (Llama or Arcee), or ConversionError."""
    model_type = hf.get("model_type")
    activation = {"llama": "swiglu", "arcee": "gelu"}.get(model_type)
    if activation is None:
        raise ConversionError(f"model_type {model_type!r} is not supported (llama or arcee)")
    expected_act = _ARCH[activation][2]
    if hf.get("hidden_act", "silu" if activation == "swiglu" else None) != expected_act:
        raise ConversionError(f"{model_type} with hidden_act {hf.get('hidden_act')!r} is not "
                              f"supported (only {expected_act!r})")
    for key in ("attention_bias", "mlp_bias"):
        if hf.get(key):
            raise ConversionError(f"{key} is true: this model has no biases")
    rope = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    rope_type = rope.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    if rope_type != "default":
        raise ConversionError(f"RoPE scaling {rope_type!r} is not supported (plain RoPE only)")
    # transformers 4.x reads the top-level rope_theta, 5.x rope_parameters' (which wins when both are
    # there): two that differ describe two models, so refuse rather than pick one. A null is absent.
    thetas = {float(t) for t in (hf.get("rope_theta"), rope.get("rope_theta")) if t is not None}
    if len(thetas) > 1:
        raise ConversionError(f"rope_theta {hf['rope_theta']} differs from rope_parameters' "
                              f"{rope['rope_theta']}: transformers versions disagree on which applies")
    theta = thetas.pop() if thetas else 10000.0
    missing = [k for k in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size") if hf.get(k) is None]
    if missing:
        raise ConversionError(f"config.json lacks {missing}")
    heads = hf["num_attention_heads"]
    if hf.get("head_dim") not in (None, hf["hidden_size"] // heads):
        raise ConversionError(f"head_dim {hf['head_dim']} != hidden_size / num_attention_heads")
    # Absent keys take the transformers class's defaults, which differ between the two (ArceeConfig:
    # rms_norm_eps 1e-5, max_position_embeddings 4096; LlamaConfig: 1e-6, 2048).
    eps, max_pos = (1e-6, 2048) if model_type == "llama" else (1e-5, 4096)
    return ModelConfig(
        vocab_size=hf["vocab_size"], dim=hf["hidden_size"], n_layers=hf["num_hidden_layers"],
        n_heads=heads, n_kv_heads=hf.get("num_key_value_heads") or heads,
        ffn_hidden=hf["intermediate_size"], max_seq_len=hf.get("max_position_embeddings") or max_pos,
        norm_eps=float(eps if hf.get("rms_norm_eps") is None else hf["rms_norm_eps"]), rope_theta=theta,
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)), activation=activation)


def _read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    single = hf_dir / "model.safetensors"
    if single.is_file():
        return load_file(str(single))
    index = hf_dir / "model.safetensors.index.json"
    if not index.is_file():
        raise ConversionError(f"{hf_dir} has neither model.safetensors nor model.safetensors.index.json")
    files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_file(str(hf_dir / name)))
    return state


def import_hf(hf_dir: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    """Write <out_dir>/step_00000000 (a Tenali checkpoint) from a transformers model directory."""
    hf_dir = Path(hf_dir)
    try:
        hf = json.loads((hf_dir / "config.json").read_text())
    except FileNotFoundError:
        raise ConversionError(f"{hf_dir}/config.json is missing") from None
    cfg = model_config_from_hf(hf)
    theirs = _read_hf_weights(hf_dir)
    names = hf_names(cfg)
    if cfg.tie_embeddings:
        theirs.pop("lm_head.weight", None)  # some exporters store the tied copy too
    unknown = sorted(set(theirs) - set(names.values()))
    missing = sorted(set(names.values()) - set(theirs))
    if unknown or missing:
        raise ConversionError(f"{hf_dir}: weights do not match a {hf['model_type']} of this shape: "
                              f"missing {missing[:5]}, unexpected {unknown[:5]}")
    state = {ours: theirs[name].to(torch.float32) for ours, name in names.items()}
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["tok_embeddings.weight"]
    model = empty_model(cfg)
    model.load_state_dict(state, strict=True)
    weights = hf_dir / ("model.safetensors" if (hf_dir / "model.safetensors").is_file()
                        else "model.safetensors.index.json")
    return save_checkpoint(out_dir, step=0, model=model, extra_meta={
        "imported_from": {"path": str(hf_dir.resolve()), "architecture": hf.get("architectures"),
                          "sha256": sha256_file(weights)}})


# --- tokenizer -----------------------------------------------------------------------------------

# sentencepiece ModelProto field numbers (sentencepiece_proto.py)
_PIECES, _TRAINER, _NORMALIZER = sp_proto.PIECES, sp_proto.TRAINER, sp_proto.NORMALIZER
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = (sp_proto.NORMAL, sp_proto.UNKNOWN, sp_proto.CONTROL,
                                                              sp_proto.USER_DEFINED, sp_proto.UNUSED, sp_proto.BYTE)


def _fields(buf: bytes):
    try:
        yield from sp_proto.fields(buf)
    except ValueError as e:  # a wire type protobuf does not have
        raise ConversionError(str(e)) from None


def read_sentencepiece(data: bytes) -> dict:
    """The parts of a sentencepiece .model that a conversion needs, without protobuf:
    pieces [(piece, score, type)], model_type, byte_fallback, normalizer name, add_dummy_prefix,
    remove_extra_whitespaces, treat_whitespace_as_suffix (proto2 defaults when absent)."""
    pieces, trainer, normalizer = [], {}, {}
    for number, value in _fields(data):
        if number == _PIECES:
            piece, score, kind = "", 0.0, _NORMAL
            for n, v in _fields(value):
                if n == 1:
                    piece = v.decode("utf-8")
                elif n == 2:
                    score = struct.unpack("<f", v)[0]
                elif n == 3:
                    kind = v
            pieces.append((piece, score, kind))
        elif number == _TRAINER:
            trainer = dict(_fields(value))
        elif number == _NORMALIZER:
            normalizer = dict(_fields(value))
    if not pieces:
        raise ConversionError("not a sentencepiece model (no pieces)")
    name = normalizer.get(1, b"")
    return {
        "pieces": pieces,
        "model_type": {1: "unigram", 2: "bpe", 3: "word", 4: "char"}.get(trainer.get(3, 1), "?"),
        "byte_fallback": bool(trainer.get(35, 0)),
        "treat_whitespace_as_suffix": bool(trainer.get(24, 0)),
        "normalizer": name.decode() if isinstance(name, bytes) else str(name),
        "add_dummy_prefix": bool(normalizer.get(3, 1)),
        "remove_extra_whitespaces": bool(normalizer.get(4, 1)),
        "escape_whitespaces": bool(normalizer.get(5, 1)),
    }


def build_tokenizer(sp_model: bytes):
    """A `tokenizers.Tokenizer` that encodes like the sentencepiece BPE model (see the module doc)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers
    from tokenizers.models import BPE

    sp = read_sentencepiece(sp_model)
    problems = []
    if sp["model_type"] != "bpe":
        problems.append(f"model_type is {sp['model_type']} (only bpe)")
    if sp["normalizer"] not in ("identity", ""):
        problems.append(f"normalizer is {sp['normalizer']!r} (only identity)")
    if sp["remove_extra_whitespaces"]:
        problems.append("remove_extra_whitespaces is on")
    if sp["treat_whitespace_as_suffix"] or not sp["escape_whitespaces"]:
        problems.append("whitespace is not escaped as a '▁' prefix")
    if problems:
        raise ConversionError("cannot convert this sentencepiece model faithfully: " + "; ".join(problems))
    pieces = sp["pieces"]
    vocab = {piece: i for i, (piece, _, _) in enumerate(pieces)}
    normal = {piece for piece, _, kind in pieces if kind == _NORMAL}
    # sentencepiece BPE merges the adjacent pair whose result scores highest; as ranked merges:
    # every split of a piece into two pieces, ordered by the merged piece's score.
    ranked = []
    for i, (piece, score, kind) in enumerate(pieces):
        if kind != _NORMAL:
            continue
        for k in range(1, len(piece)):
            left, right = piece[:k], piece[k:]
            if left in normal and right in normal:
                ranked.append((-score, i, vocab[left], vocab[right], left, right))
    ranked.sort()
    unk = next((piece for piece, _, kind in pieces if kind == _UNKNOWN), None)
    tok = Tokenizer(BPE(vocab=vocab, merges=[(a, b) for *_, a, b in ranked], unk_token=unk,
                        fuse_unk=True, byte_fallback=sp["byte_fallback"]))
    escape = [normalizers.Replace(" ", "▁")]
    tok.normalizer = normalizers.Sequence(
        [normalizers.Prepend("▁"), *escape] if sp["add_dummy_prefix"] else escape)
    tok.pre_tokenizer = None
    steps = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if sp["add_dummy_prefix"]:
        steps.append(decoders.Strip(content=" ", left=1, right=0))
    tok.decoder = decoders.Sequence(steps)
    # Control pieces and markup such as <|endoftext|> are matched whole, before BPE, as sentencepiece
    # does, and are special (skipped by decode(skip_special_tokens=True)); the text after one is
    # encoded alone (module doc). A one-character user-defined piece ("\n") is a BPE symbol that no
    # merge joins, so it stays one token with no dummy prefix after it; a longer one, which no merge
    # builds, is matched whole as ordinary text.
    tok.add_tokens([AddedToken(piece, special=_is_markup(piece, kind), normalized=False)
                    for piece, _, kind in pieces
                    if kind == _CONTROL or (kind == _USER_DEFINED and (_is_markup(piece, kind) or len(piece) > 1))])
    return tok


def _is_markup(piece: str, kind: int) -> bool:
    return kind == _CONTROL or bool(re.fullmatch(r"<\|?[^\s<>]+\|?>", piece))


def write_tokenizer(sp_model_path: str | os.PathLike, out_dir: str | os.PathLike,
                    vocab_size: int | None = None, model_max_length: int | None = None) -> dict:
    """tokenizer.json + tokenizer_config.json in out_dir, loadable with transformers.AutoTokenizer
    (as PreTrainedTokenizerFast; the config is written in the form transformers 4.x and 5.x read).
    Given a sentencepiece model it is converted (module doc); given a tokenizer.json (a base model's,
    with the chat tokens added by `tenali_model.tokenizer.add_chat_tokens`) it is written as it is.
    Returns {"eos_token_id", "pad_token_id", "stop_ids"} (None where the model lacks the piece; stop_ids:
    the end of text and the turn markers, for a chat tokenizer)."""
    path = Path(sp_model_path)
    if path.suffix == ".json":
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
    else:
        tok = build_tokenizer(path.read_bytes())
    n = tok.get_vocab_size(with_added_tokens=True)
    if vocab_size is not None and n > vocab_size:
        raise ConversionError(f"the tokenizer has {n} pieces but the model only {vocab_size} embeddings")
    vocab = tok.get_vocab(with_added_tokens=True)
    eos = EOS_TOKEN if EOS_TOKEN in vocab else None
    pad = PAD_TOKEN if PAD_TOKEN in vocab else None
    special = {i: t for i, t in sorted(tok.get_added_tokens_decoder().items()) if t.special}
    markup = [t.content for t in special.values() if t.content not in (eos, pad)]
    out_dir = Path(out_dir)
    tok.save(str(out_dir / "tokenizer.json"))
    # a base model's BPE may name an unknown token; byte fallback and byte-level BPE never produce one
    unk = json.loads(tok.to_str()).get("model", {}).get("unk_token") if path.suffix == ".json" else None
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": eos,
        "pad_token": pad,
        "unk_token": unk,  # None for Tenali's: byte fallback, literal "<unk>" text stays text
        "additional_special_tokens": markup,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": model_max_length or int(1e30),
        # the special pieces, as transformers writes them: llama.cpp's converter reads their kind here (with
        # tokenizer.model beside, it would otherwise take Tenali's markers for ordinary text)
        "added_tokens_decoder": {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized,
                                          "rstrip": t.rstrip, "single_word": t.single_word, "special": t.special}
                                 for i, t in special.items()},
    }
    stops = None
    if all(t in vocab for t in (EOS_TOKEN, "<|user|>", "<|assistant|>")):
        config["chat_template"] = _chat_template(tok)
        # generate() stops where serving stops: the end of text, or the model opening a turn itself
        stops = [vocab[t] for t in (EOS_TOKEN, "<|user|>", "<|system|>", "<|assistant|>") if t in vocab]
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return {"eos_token_id": vocab.get(EOS_TOKEN), "pad_token_id": vocab.get(PAD_TOKEN), "stop_ids": stops}


def _chat_template(tok) -> str:
    """The chat template (chat.py) under which `apply_chat_template` gives `encode_chat`'s ids with this
    tokenizer: each content encoded as it is alone, after its marker's id. The plain template for
    Tenali's converted sentencepiece and for byte-level bases; the spaced one for a tokenizer that
    gives only the start of the whole text a dummy prefix. Probed on a sample text, both ways."""
    from .chat import HF_CHAT_TEMPLATE, HF_CHAT_TEMPLATE_SPACED

    probe = "AAPL closed at $189.25, up 1.2%."
    alone = tok.encode(probe, add_special_tokens=False).ids
    marker = tok.token_to_id("<|user|>")
    for template, sep in ((HF_CHAT_TEMPLATE, ""), (HF_CHAT_TEMPLATE_SPACED, " ")):
        if tok.encode("<|user|>" + sep + probe, add_special_tokens=False).ids == [marker, *alone]:
            return template
    warnings.warn("neither chat template gives encode_chat's ids with this tokenizer: the exported "
                  "chat_template may tokenise message boundaries differently from training and serving")
    return HF_CHAT_TEMPLATE
