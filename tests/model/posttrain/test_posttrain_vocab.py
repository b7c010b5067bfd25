"""Chat tokens added to a base model's tokenizer: the parent's embeddings grow to it (mean rows), the new
rows train under LoRA, runs resume exactly, DPO's reference grows alike, and a mismatch that growing
cannot fix is refused before any compute."""

import json
import math

import pytest
import torch

from conftest import CHATS, tiny_model_config, write_jsonl
from tenali_model.chat import HF_CHAT_TEMPLATE, encode_chat, render_text
from tenali_model.checkpoint import load_meta, load_model, save_checkpoint
from tenali_model.model import Transformer
from tenali_model.posttrain import dpo
from tenali_model.posttrain.config import DPOConfig, LoraSettings, SFTConfig
from tenali_model.posttrain.data import DataError
from tenali_model.posttrain.sft import main as sft_main
from tenali_model.posttrain.sft import train as sft_train
from tenali_model.posttrain.vocab import added_token_ids, extend_vocab
from tenali_model.tokenizer import ASSISTANT, EOT, SPECIAL_TOKENS, SYSTEM, USER, add_chat_tokens, load_tokenizer
from tm_helpers import FINANCE_TEXT, assert_same_tensors

tokenizers = pytest.importorskip("tokenizers")


def _byte_level(texts, vocab_size=320):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return tok


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A base-model lineage: a byte-level tokenizer without chat pieces, its chat version, and an untied
    Tenali checkpoint whose vocabulary is the base tokenizer's."""
    root = tmp_path_factory.mktemp("base-vocab")
    texts = FINANCE_TEXT * 10 + [m.get("content", "") for c in CHATS for m in c.get("messages", [])]
    tok = _byte_level(texts)
    tok.save(str(root / "base.json"))
    chat_json, added = add_chat_tokens(tok.to_str())
    (root / "chat.json").write_text(chat_json)
    torch.manual_seed(0)
    model = Transformer(tiny_model_config(tok.get_vocab_size(), tie_embeddings=False))
    parent = save_checkpoint(root / "parent", step=0, model=model)
    return {"root": root, "base_vocab": tok.get_vocab_size(), "added": added, "parent": parent,
            "chat": root / "chat.json"}


def test_the_chat_tokens_are_appended_and_old_ids_keep_their_meaning(base):
    assert base["added"] == list(SPECIAL_TOKENS)  # all missing, in the one order
    plain, chat = load_tokenizer(base["root"] / "base.json"), load_tokenizer(base["chat"])
    n = base["base_vocab"]
    assert chat.vocab_size == n + len(SPECIAL_TOKENS) and plain.missing_special() == list(SPECIAL_TOKENS)
    assert [chat.token_id(t) for t in SPECIAL_TOKENS] == list(range(n, n + len(SPECIAL_TOKENS)))
    for text in FINANCE_TEXT:
        assert chat.encode(text) == plain.encode(text)
    assert chat.encode("<|user|>CPI?<|assistant|>") == [chat.special(USER), *plain.encode("CPI?"), chat.special(ASSISTANT)]
    assert add_chat_tokens(base["chat"].read_text()) == (base["chat"].read_text(), [])  # nothing left to add


@pytest.mark.parametrize("tied", [False, True])
def test_new_rows_are_the_mean_and_take_at_most_one_over_v_of_the_probability(tied):
    torch.manual_seed(1)
    model = Transformer(tiny_model_config(300, tie_embeddings=tied)).eval()
    x = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        before = model(x)[0]
    emb, head = model.tok_embeddings.weight.detach().clone(), model.lm_head.weight.detach().clone()
    assert extend_vocab(model, 305) == list(range(300, 305)) and model.config.vocab_size == 305
    assert (model.lm_head.weight is model.tok_embeddings.weight) == tied
    torch.testing.assert_close(model.tok_embeddings.weight[:300], emb, rtol=0, atol=0)
    for row in model.tok_embeddings.weight[300:]:
        torch.testing.assert_close(row, emb.mean(0))
    for row in model.lm_head.weight[300:]:
        torch.testing.assert_close(row, head.mean(0))
    with torch.no_grad():
        after = model(x)[0]
    torch.testing.assert_close(after[..., :300], before, rtol=0, atol=0)  # old logits unchanged
    # mean row -> mean logit <= log(mean exp): each new token gets at most 1/V of the old mass
    p_new = torch.softmax(after, -1)[..., 300:]
    assert float(p_new.max()) <= 1 / 300 + 1e-7


def test_a_tokenizer_whose_extra_ids_are_not_the_chat_tokens_is_refused(base, tmp_path, capsys):
    other = _byte_level(FINANCE_TEXT * 10, vocab_size=base["base_vocab"] + 40)
    other.save(str(tmp_path / "other.json"))
    tok = load_tokenizer(tmp_path / "other.json")
    assert tok.vocab_size > base["base_vocab"]
    with pytest.raises(DataError, match=r"extra ids are not only the chat special tokens.*use the tokenizer the parent"):
        added_token_ids(tok, base["base_vocab"])
    assert added_token_ids(load_tokenizer(base["chat"]), base["base_vocab"]) == list(
        range(base["base_vocab"], base["base_vocab"] + 5))
    f = write_jsonl(tmp_path / "chats.jsonl", CHATS)
    SFTConfig(init_from=str(base["parent"]), out_dir=str(tmp_path / "out"), train_files=[f],
              tokenizer=str(tmp_path / "other.json"), steps=2, warmup_steps=0, device="cpu").to_json(tmp_path / "sft.json")
    assert sft_main(["--config", str(tmp_path / "sft.json")]) == 2
    assert "not only the chat special tokens" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def plain_count(model) -> int:
    from tenali_model.posttrain.lora import count_trainable

    return count_trainable(model)


def _sft(base, files, out, **kw):
    cfg = dict(init_from=str(base["parent"]), out_dir=str(out), train_files=files, tokenizer=str(base["chat"]),
               steps=8, batch_size=2, lr=1e-2, min_lr=1e-3, warmup_steps=2, log_every=2, ckpt_every=4,
               device="cpu", num_threads=1, seed=3, lora=LoraSettings(r=4, alpha=8))
    cfg.update(kw)
    return SFTConfig(**cfg)


def test_lora_sft_grows_the_vocabulary_trains_the_new_rows_resumes_and_exports(base, tmp_path):
    transformers = pytest.importorskip("transformers")
    f = write_jsonl(tmp_path / "chats.jsonl", CHATS * 4)
    full = sft_train(_sft(base, [f], tmp_path / "full"))
    assert full["complete"] and full["final_loss"] < full["initial_loss"]
    n, chat = base["base_vocab"], load_tokenizer(base["chat"])
    assert full["vocab_extended_to"] == n + 5
    # LoRA freezes the embedding table but not its 5 new rows; the (trained) head has 5 rows more
    from tenali_model.posttrain.loop import build_student

    cfg = _sft(base, [f], tmp_path / "unused")
    grown, plain = build_student(cfg, base["parent"], torch.device("cpu"), n + 5), build_student(
        cfg, base["parent"], torch.device("cpu"))
    assert full["trainable_params"] == plain_count(grown) == plain_count(plain) + 2 * 5 * 64
    first = sft_train(_sft(base, [f], tmp_path / "split"), stop_at=4)
    assert first["step"] == 4
    second = sft_train(_sft(base, [f], tmp_path / "split"))
    assert second["resumed_from_step"] == 4 and second["step"] == 8
    assert_same_tensors(tmp_path / "full", tmp_path / "split", ["step_00000008/model.safetensors",
                        "adapters/step_00000008/new_tokens.safetensors", "adapters/step_00000008/adapter_model.safetensors"])

    ckpt = tmp_path / "full" / "step_00000008"
    meta = load_meta(ckpt)
    assert meta["vocab_extended"] == {"from": n, "to": n + 5, "tokens": list(SPECIAL_TOKENS), "init": "mean"}
    parent, merged = load_model(base["parent"]), load_model(ckpt)
    assert merged.config.vocab_size == n + 5
    old, new = parent.tok_embeddings.weight.detach(), merged.tok_embeddings.weight.detach()
    torch.testing.assert_close(new[:n], old, rtol=0, atol=0)  # frozen under LoRA
    user, assistant = chat.special(USER), chat.special(ASSISTANT)
    mean = old.mean(0)
    assert (new[user] - mean).abs().max() > 1e-3 and (new[assistant] - mean).abs().max() > 1e-3
    assert (new[user] - new[assistant]).abs().max() > 1e-3  # the markers read differently now
    assert json.loads((tmp_path / "full" / "adapters" / "step_00000008" / "adapter_config.json").read_text())[
        "trainable_rows"]["tok_embeddings.weight"] == list(range(n, n + 5))

    # exported with the chat tokenizer: transformers loads it, and its chat template renders the added tokens
    from tenali_model.hf import export_hf

    out = export_hf(ckpt, tmp_path / "hf", tokenizer_model=base["chat"])
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hf_tok.chat_template == HF_CHAT_TEMPLATE and hf_tok.eos_token == EOT
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "CPI?"}]
    text = hf_tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == render_text(messages, add_generation_prompt=True)
    ids = hf_tok(text, add_special_tokens=False)["input_ids"]
    assert ids == encode_chat(chat, messages, add_generation_prompt=True).ids
    assert [ids[0], ids[-1]] == [chat.special(SYSTEM), assistant] and min(ids[0], ids[-1]) >= n
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(x).logits, merged(x)[0], rtol=0, atol=1e-4)


def test_dpo_from_a_base_vocabulary_grows_policy_and_reference_alike(base, tmp_path):
    pairs = [{"prompt": "What did Apple close at?", "chosen": "$189.25.", "rejected": "$142.10."},
             {"prompt": "CPI?", "chosen": "3.4% year over year.", "rejected": "9.9%."}]
    f = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    cfg = DPOConfig(init_from=str(base["parent"]), out_dir=str(tmp_path / "dpo"), train_files=[f],
                    tokenizer=str(base["chat"]), steps=2, batch_size=2, lr=1e-3, min_lr=1e-4, warmup_steps=0,
                    log_every=1, device="cpu", num_threads=1)
    s = dpo.train(cfg)
    assert s["complete"] and load_meta(s["checkpoint"])["vocab_extended"]["to"] == base["base_vocab"] + 5
    first = json.loads((tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()[0])
    # before the first update the policy is the reference: margin 0, loss -log sigmoid(0)
    assert first["margin"] == pytest.approx(0.0, abs=1e-5) and first["loss"] == pytest.approx(math.log(2), abs=1e-5)


def test_full_sft_on_two_fsdp_ranks_grows_the_vocabulary_like_one_process(base, tmp_path):
    """The 7B's path (a Hugging Face base, its tokenizer with the chat tokens added, then a full
    fine-tune too large for one GPU): under FSDP rank 0 grows the weights it read before sharding
    them (`vocab.grown_state`); the run must end where one process growing the module ends."""
    from test_posttrain_fsdp import assert_same_model, torchrun

    f = write_jsonl(tmp_path / "chats.jsonl", CHATS * 4)
    kw = dict(lora=None, steps=4, ckpt_every=4)
    one = sft_train(_sft(base, [f], tmp_path / "one", grad_accum=2, **kw))
    out = torchrun("tenali_model.posttrain.sft", _sft(base, [f], tmp_path / "two", parallelism="fsdp", **kw),
                   tmp_path / "sft.json")
    assert "fsdp" in out
    two = tmp_path / "two" / "step_00000004"
    assert load_model(two).config.vocab_size == base["base_vocab"] + len(SPECIAL_TOKENS)
    assert load_meta(two)["vocab_extended"] == load_meta(one["checkpoint"])["vocab_extended"]
    assert_same_model(one["checkpoint"], two)


def test_rows_frozen_behind_the_mask_are_not_decayed():
    """An untied head that LoRA leaves frozen (train_head false) trains only its new rows, behind a
    gradient mask: AdamW's decoupled weight decay must not shrink the others (it would, by lr x wd
    a step, and a resumed run rebuilds them from the parent undecayed)."""
    from tenali_model.posttrain.lora import apply_lora
    from tenali_model.posttrain.vocab import train_rows
    from tenali_model.train import param_groups

    torch.manual_seed(0)
    model = Transformer(tiny_model_config(64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, tie_embeddings=False,
                                          max_seq_len=16))
    new = extend_vocab(model, 66)
    model = apply_lora(model, LoraSettings(train_head=False, base_dtype="float32", dropout=0.0))
    train_rows(model, new)
    head, before = model.lm_head.weight, model.lm_head.weight.detach().clone()
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-2)
    x = torch.randint(0, 66, (2, 16))
    model(x, x, with_logits=False)[1].backward()
    optimizer.step()
    assert torch.equal(head[:64], before[:64])
    assert not torch.equal(head[64:], before[64:])
