"""Hugging Face export/import: transformers loads our checkpoints with the same logits, generates,
reads the tokenizer with sentencepiece's ids, and the import gives back identical weights."""

import json
import re

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

from tenali_model.checkpoint import load_model, load_train_state, save_checkpoint  # noqa: E402
from tenali_model.config import ModelConfig  # noqa: E402
from tenali_model.data import write_shard  # noqa: E402
from tenali_model.generate import generate  # noqa: E402
from tenali_model.hf import (ConversionError, build_tokenizer, export_hf, import_hf,  # noqa: E402
                             write_tokenizer)
from tenali_model.model import Transformer  # noqa: E402
from tenali_model.train import train  # noqa: E402
from tm_helpers import FINANCE_TEXT, tiny_config, train_sentencepiece  # noqa: E402

MARKUP = re.compile(r"(<\|[a-z]+\|>)")


def training_ids(sp, text: str) -> list[int]:
    """How training encodes text: the markers as their ids, every text between them encoded alone."""
    return [i for part in MARKUP.split(text) if part
            for i in ([sp.piece_to_id(part)] if MARKUP.fullmatch(part) else sp.encode(part))]


TEXTS = FINANCE_TEXT + [
    "the market<|endoftext|>next document",  # markup in the middle and at the end
    "question<|user|> What moved SPY?<|assistant|> Rates.<|endoftext|>",
    "line one\nline two\n\n  indented\n",  # "\n" is a user-defined piece; spaces after it
    "digits 1234567890 and $94,930.25 split one by one",
    "tabs\tand trailing spaces   ",
    "x<|pad|><|pad|>",
    "literal <unk> stays text",
    "",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for a few steps on text encoded by a pipeline-style tokenizer."""
    root = tmp_path_factory.mktemp("hf")
    sp_path = root / "tokenizer.model"
    train_sentencepiece(sp_path)
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    eot = sp.piece_to_id("<|endoftext|>")
    ids = np.concatenate([np.array(sp.encode(t) + [eot]) for t in FINANCE_TEXT * 40])
    write_shard(root / "train.bin", ids, vocab_size=sp.vocab_size())
    cfg = tiny_config({"train": [str(root / "train.bin")], "val": []}, root / "run", steps=30,
                      eval_every=0, ckpt_every=0,
                      model={"preset": "tiny", "vocab_size": sp.vocab_size(), "max_seq_len": 64,
                             "rope_theta": 5000.0, "norm_eps": 1e-6})
    train(cfg)
    return {"root": root, "ckpt": root / "run", "sp": sp, "sp_path": sp_path}


def test_export_matches_transformers_logits_and_generation(trained):
    out = export_hf(trained["ckpt"], trained["root"] / "hf", tokenizer_model=trained["sp_path"])
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and config["hidden_act"] == "silu"
    assert (config["rope_theta"], config["rms_norm_eps"], config["num_key_value_heads"],
            config["tie_word_embeddings"]) == (5000.0, 1e-6, 2, True)
    sp = trained["sp"]
    assert config["eos_token_id"] == sp.piece_to_id("<|endoftext|>")
    assert config["pad_token_id"] == sp.piece_to_id("<|pad|>")

    ours = load_model(trained["ckpt"])
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(theirs).__name__ == "LlamaForCausalLM"
    assert theirs.config.num_key_value_heads == 2
    x = torch.tensor([sp.encode(FINANCE_TEXT[0])[:40], sp.encode(FINANCE_TEXT[1])[:40]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x)[0], rtol=0, atol=1e-4)

    # transformers' greedy generate continues exactly as ours does (same logits at every step)
    prompt = x[:, :8]
    hf_out = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12,
                             do_sample=False, eos_token_id=None, pad_token_id=config["pad_token_id"])
    assert torch.equal(hf_out, generate(ours, prompt, 12, temperature=0))

    # the tokenizer: AutoTokenizer reads it, with our special tokens and sentencepiece's ids; the trained
    # file itself is beside it (llama.cpp's converter reads it)
    assert (out / "tokenizer.model").read_bytes() == trained["sp_path"].read_bytes()
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == ("<|endoftext|>", "<|pad|>", None)
    assert tok.eos_token_id == config["eos_token_id"] and tok.pad_token_id == config["pad_token_id"]
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert ids == training_ids(sp, text), text
        assert tok.decode(ids) == sp.decode(ids)
        assert tok.decode(ids) == text or MARKUP.search(text), text  # a marker's text gets its dummy prefix
    # the text after a marker has its own dummy prefix (a new document, a new message): decoded as a space
    assert tok.decode(tok.encode("a<|endoftext|>b"), skip_special_tokens=True) == "a b"


def test_the_exported_chat_template_gives_the_ids_serving_encodes(trained, tmp_path):
    """apply_chat_template on the export gives encode_chat's ids (training's and serving's): the converted
    tokenizer gives each message its own dummy prefix, as encode_chat does, so the plain template is
    right (with a tokenizer that did not, every message's first word would lose its leading piece,
    "AAPL" for "▁AAPL", and the model would see prompts it was never trained on). generate() stops
    where serving stops."""
    from tenali_model.chat import HF_CHAT_TEMPLATE, encode_chat, stop_ids
    from tenali_model.tokenizer import load_tokenizer

    out = export_hf(trained["ckpt"], tmp_path / "hf", tokenizer_model=trained["sp_path"])
    hf_tok, ours = transformers.AutoTokenizer.from_pretrained(out), load_tokenizer(trained["sp_path"])
    conversations = [
        [{"role": "user", "content": "AAPL close on 2012-05-01?"}],
        [{"role": "system", "content": "Answer with the figure."}, {"role": "user", "content": "What did SPY do?"},
         {"role": "assistant", "content": "It rose 1.2%."}, {"role": "user", "content": " and QQQ?"}],
        [{"role": "user", "content": ""}],
        [{"role": "user", "content": "line one\nline two"}],
    ]
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["chat_template"] == HF_CHAT_TEMPLATE
    # listed as special for llama.cpp's converter, which otherwise reads tokenizer.model's user-defined
    # markers as ordinary text; "\n" is ordinary text and not listed
    listed = {v["content"] for v in config["added_tokens_decoder"].values() if v["special"]}
    assert listed == {"<|endoftext|>", "<|user|>", "<|assistant|>", "<|pad|>", "<|system|>"}
    assert all(hf_tok.convert_tokens_to_ids(v["content"]) == int(k) for k, v in config["added_tokens_decoder"].items())
    for messages in conversations:
        ids = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
        assert ids["input_ids"] == encode_chat(ours, messages, add_generation_prompt=True).ids, messages
    stops = json.loads((out / "generation_config.json").read_text())["eos_token_id"]
    assert sorted(stops) == sorted(stop_ids(ours))

def test_tokenizer_encodes_as_training_does_and_differs_from_whole_text_sentencepiece_only_after_markers(trained):
    """Training encodes each document and each chat message alone, dummy prefix included, and puts
    the markers' ids between them; the converted tokenizer does the same for any text (as llama.cpp
    does), a leading space or "\n" included. Sentencepiece run over a whole text with markers in it is
    the odd one out, pinned here: the text right after a marker gets no dummy prefix there."""
    from tenali_model.tokenizer import load_tokenizer

    sp, tok = trained["sp"], build_tokenizer(trained["sp_path"].read_bytes())
    ours = load_tokenizer(trained["sp_path"])  # what `tenali serve` encodes a raw completion prompt with
    for text in [*TEXTS, " leading space", "<|user|>hello", "\nstarts with a newline", "<|user|>  two spaces"]:
        assert tok.encode(text).ids == training_ids(sp, text) == ours.encode(text), text
    lead = " leading space"  # the dummy prefix and the space: two pieces, as sentencepiece encodes it
    assert tok.encode(lead).ids == sp.encode(lead) and tok.decode(tok.encode(lead).ids) == sp.decode(sp.encode(lead))
    after = "the market<|endoftext|>next document"
    pieces, tokens = [sp.id_to_piece(i) for i in sp.encode(after)], tok.encode(after).tokens
    k = pieces.index("<|endoftext|>")
    assert tokens[:k + 1] == pieces[:k + 1] and tokens[k + 1].startswith("▁") and not pieces[k + 1].startswith("▁")
    assert tok.encode("x " + after).ids != sp.encode("x " + after)


def test_import_gives_back_identical_weights(trained):
    out = trained["root"] / "hf_roundtrip"
    export_hf(trained["ckpt"], out)
    assert not (out / "tokenizer.json").exists()  # no tokenizer asked for
    ckpt = import_hf(out, trained["root"] / "imported")
    assert ckpt.name == "step_00000000"
    a, b = load_model(trained["ckpt"]), load_model(ckpt)
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert b.lm_head.weight is b.tok_embeddings.weight
    assert load_train_state(ckpt)["optimizer"] is None
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["imported_from"]["architecture"] == ["LlamaForCausalLM"]


@pytest.mark.parametrize("kw, arch", [({"activation": "gelu"}, "ArceeForCausalLM"),
                                      ({"tie_embeddings": False}, "LlamaForCausalLM")])
def test_gelu_and_untied_models(tmp_path, kw, arch):
    """A GELU model (no gate) goes out as Arcee, whose MLP is down(act(up(x))) with hidden_act
    gelu_pytorch_tanh; an untied head is stored as lm_head.weight. Logits match either way."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=300, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=32, **kw)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ckpt = save_checkpoint(tmp_path / "ck", step=1, model=model)
    out = export_hf(ckpt, tmp_path / "hf")
    theirs = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(theirs).__name__ == arch
    x = torch.randint(0, 300, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, model(x)[0], rtol=0, atol=1e-4)
    back = load_model(import_hf(out, tmp_path / "back"))
    assert back.config == cfg
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), back.state_dict().values()))


def test_refusals(trained, tmp_path):
    with pytest.raises(FileExistsError):
        export_hf(trained["ckpt"], trained["root"])  # not empty
    hf_dir = tmp_path / "hf"
    export_hf(trained["ckpt"], hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    for change, message in [({"attention_bias": True}, "attention_bias"),
                            ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "RoPE scaling"),
                            ({"model_type": "gpt2"}, "model_type"),
                            # transformers 5 applies rope_parameters' theta, 4.x the top-level one
                            ({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}, "rope_theta"),
                            ({"intermediate_size": None}, "lacks"),
                            ({"hidden_act": "gelu"}, "hidden_act")]:
        (hf_dir / "config.json").write_text(json.dumps({**config, **change}))
        with pytest.raises(ConversionError, match=message):
            import_hf(hf_dir, tmp_path / "nope")
    unigram = tmp_path / "unigram.model"
    train_sentencepiece(unigram, model_type="unigram")
    with pytest.raises(ConversionError, match="model_type is unigram"):
        build_tokenizer(unigram.read_bytes())
    folded = tmp_path / "nfkc.model"
    train_sentencepiece(folded, normalization_rule_name="nmt_nfkc", remove_extra_whitespaces=True)
    with pytest.raises(ConversionError, match="normalizer is 'nmt_nfkc'.*remove_extra_whitespaces"):
        build_tokenizer(folded.read_bytes())
    with pytest.raises(ConversionError, match="tokenizer has 400 pieces"):
        write_tokenizer(trained["sp_path"], tmp_path, vocab_size=100)  # more ids than embeddings


@pytest.mark.parametrize("arch, edit", [
    ("llama", lambda c: {**c, "rope_theta": None}),  # a full dump: the top-level key present but null
    ("arcee", lambda c: {k: v for k, v in c.items() if k not in ("rms_norm_eps", "max_position_embeddings")}),
])
def test_import_reads_configs_as_transformers_does(tmp_path, arch, edit):
    """A config.json as transformers 5 writes it (rope_theta in rope_parameters), edited as other tools
    leave it: the imported model's logits equal what transformers loads from the same directory."""
    torch.manual_seed(0)
    Config, Model = ((transformers.LlamaConfig, transformers.LlamaForCausalLM) if arch == "llama" else
                     (transformers.ArceeConfig, transformers.ArceeForCausalLM))
    extra = {} if arch == "llama" else {"hidden_act": "gelu_pytorch_tanh"}
    hf_model = Model(Config(vocab_size=120, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                            num_attention_heads=4, num_key_value_heads=2, rope_theta=500.0, bos_token_id=None,
                            eos_token_id=None, pad_token_id=None, **extra))
    hf_model.save_pretrained(tmp_path / "hf")
    config = tmp_path / "hf" / "config.json"
    config.write_text(json.dumps(edit(json.loads(config.read_text()))))
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ours = load_model(import_hf(tmp_path / "hf", tmp_path / "ours")).eval()
    assert (ours.config.rope_theta, ours.config.norm_eps, ours.config.max_seq_len) == (
        500.0, theirs.config.rms_norm_eps, theirs.config.max_position_embeddings)
    x = torch.randint(0, 120, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(theirs(x).logits, ours(x)[0], rtol=0, atol=1e-4)
