"""A base whose embedding table is padded beyond its tokenizer (32,000 pieces, 32,128 rows): the chat
tokens a chat stage adds land on padding rows the model already has. Those rows are new all the same:
they start at the mean of the trained rows (padding left out), train under LoRA, resume exactly,
merge and export, and a later stage of the lineage (DPO on the SFT model, a student of it) never
starts them again. A tokenizer larger than the model's table is refused before any compute."""

import json
import math

import pytest
import torch

from conftest import CHATS, tiny_model_config, write_jsonl
from tenali_model.checkpoint import load_meta, load_model, save_checkpoint
from tenali_model.model import Transformer
from tenali_model.posttrain import dpo
from tenali_model.posttrain.config import DPOConfig, LoraSettings, SFTConfig
from tenali_model.posttrain.loop import build_student
from tenali_model.posttrain.sft import main as sft_main
from tenali_model.posttrain.sft import train as sft_train
from tenali_model.tokenizer import ASSISTANT, EOT, SPECIAL_TOKENS, SYSTEM, USER, add_chat_tokens, load_tokenizer
from tm_helpers import FINANCE_TEXT, assert_same_tensors

tokenizers = pytest.importorskip("tokenizers")

PAD_ROWS = 64
PAIRS = [{"prompt": "What did Apple close at?", "chosen": "$189.25.", "rejected": "$142.10."},
         {"prompt": "CPI?", "chosen": "3.4% year over year.", "rejected": "9.9%."}]


def _byte_level(texts, vocab_size=320, specials=("<s>", "</s>")):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials),
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    return tok


def _padded_parent(folder, n: int, tied: bool, seed: int = 0):
    """An imported-base-like checkpoint: n trained rows, then PAD_ROWS padding rows far from them (as
    an untrained padding row is: a random or zero vector, not one the layers were trained on)."""
    torch.manual_seed(seed)
    model = Transformer(tiny_model_config(n + PAD_ROWS, tie_embeddings=tied))
    with torch.no_grad():
        for w in {id(w): w for w in (model.tok_embeddings.weight, model.lm_head.weight)}.values():
            w[n:] = 5.0 + torch.randn_like(w[n:])
    return save_checkpoint(folder, step=0, model=model)


@pytest.fixture(scope="module")
def padded(tmp_path_factory):
    root = tmp_path_factory.mktemp("padded-vocab")
    texts = FINANCE_TEXT * 10 + [m.get("content", "") for c in CHATS for m in c.get("messages", [])]
    tok = _byte_level(texts)
    tok.save(str(root / "base.json"))
    chat_json, added = add_chat_tokens(tok.to_str())
    assert added == list(SPECIAL_TOKENS)
    (root / "chat.json").write_text(chat_json)
    n = tok.get_vocab_size()
    return {"root": root, "n": n, "chat": root / "chat.json", "untied": _padded_parent(root / "untied", n, False),
            "tied": _padded_parent(root / "tied", n, True), "chats": write_jsonl(root / "chats.jsonl", CHATS * 4),
            "pairs": write_jsonl(root / "pairs.jsonl", PAIRS)}


def _sft(padded, out, parent="untied", **kw):
    cfg = dict(init_from=str(padded.get(parent, parent)), out_dir=str(out),
               train_files=[padded["chats"]], tokenizer=str(padded["chat"]), steps=6, batch_size=2, lr=1e-2,
               min_lr=1e-3, warmup_steps=2, log_every=2, ckpt_every=3, device="cpu", num_threads=1, seed=3,
               lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    cfg.update(kw)
    return SFTConfig(**cfg)


def _dpo(padded, parent, out, **kw):
    cfg = dict(init_from=str(parent), out_dir=str(out), train_files=[padded["pairs"]], tokenizer=str(padded["chat"]),
               steps=2, batch_size=2, lr=1e-3, min_lr=1e-4, warmup_steps=0, log_every=1, device="cpu", num_threads=1)
    cfg.update(kw)
    return DPOConfig(**cfg)


def _rows(ckpt):
    m = load_model(ckpt)
    return m.tok_embeddings.weight.detach(), m.lm_head.weight.detach()


@pytest.mark.parametrize("tied", [False, True])
def test_chat_tokens_on_padding_rows_start_at_the_mean_of_the_trained_rows(padded, tied, tmp_path):
    n, parent = padded["n"], padded["tied" if tied else "untied"]
    emb, head = _rows(parent)
    for name, lora in (("lora", LoraSettings(r=4, alpha=8)), ("full", None)):
        start = sft_train(_sft(padded, tmp_path / name, parent=parent, lora=lora), stop_at=0)["checkpoint"]
        new_emb, new_head = _rows(start)  # the step-0 checkpoint: the weights the stage starts from
        assert new_emb.shape[0] == n + PAD_ROWS  # the padded table keeps its size
        torch.testing.assert_close(new_emb[:n], emb[:n], rtol=0, atol=0)
        torch.testing.assert_close(new_emb[n + 5:], emb[n + 5:], rtol=0, atol=0)  # padding no token uses
        for row in new_emb[n:n + 5]:  # the mean of the trained rows, padding left out
            torch.testing.assert_close(row, emb[:n].mean(0))
        if not tied:
            torch.testing.assert_close(new_head[:n], head[:n], rtol=0, atol=0)
            for row in new_head[n:n + 5]:
                torch.testing.assert_close(row, head[:n].mean(0))


def test_lora_sft_trains_the_chat_rows_of_a_padded_table_resumes_merges_and_exports(padded, tmp_path):
    transformers = pytest.importorskip("transformers")
    n, chat = padded["n"], load_tokenizer(padded["chat"])
    full = sft_train(_sft(padded, tmp_path / "full", lora=LoraSettings(r=4, alpha=8, dropout=0.0, train_head=False)))
    assert full["complete"]
    # LoRA freezes the table and the (untied, untrained) head, but not the 5 rows of the chat tokens
    plain = build_student(_sft(padded, tmp_path / "x", lora=LoraSettings(r=4, alpha=8, train_head=False)),
                          padded["untied"], torch.device("cpu"))
    from tenali_model.posttrain.lora import count_trainable

    assert full["trainable_params"] == count_trainable(plain) + 2 * 5 * 64
    ckpt = tmp_path / "full" / "step_00000006"
    meta = load_meta(ckpt)
    assert meta["vocab_extended"] == {"from": n, "to": n + 5, "tokens": list(SPECIAL_TOKENS), "init": "mean",
                                      "embedding_rows": n + PAD_ROWS}
    assert meta["chat_vocab_size"] == n + 5
    assert json.loads((tmp_path / "full" / "adapters" / "step_00000006" / "adapter_config.json").read_text())[
        "trainable_rows"] == {"tok_embeddings.weight": list(range(n, n + 5)), "lm_head.weight": list(range(n, n + 5))}
    (emb, head), (new, new_head) = _rows(padded["untied"]), _rows(ckpt)
    assert new.shape[0] == n + PAD_ROWS
    torch.testing.assert_close(new[:n], emb[:n], rtol=0, atol=0)  # frozen under LoRA
    torch.testing.assert_close(new[n + 5:], emb[n + 5:], rtol=0, atol=0)
    torch.testing.assert_close(new_head[:n], head[:n], rtol=0, atol=0)
    user, assistant = chat.special(USER), chat.special(ASSISTANT)
    mean = emb[:n].mean(0)
    for i in (user, assistant):
        assert (new[i] - mean).abs().max() > 1e-3 and (new[i] - emb[i]).abs().max() > 1e-3
        assert (new[i] - mean).abs().max() < 1.0  # trained from the mean, not from the padding row (~5)
    assert (new[user] - new[assistant]).abs().max() > 1e-3  # the markers read differently now

    # killed after 3 steps and rerun: the same weights and adapter, bit for bit
    sft_train(_sft(padded, tmp_path / "split", lora=LoraSettings(r=4, alpha=8, dropout=0.0, train_head=False)),
              stop_at=3)
    second = sft_train(_sft(padded, tmp_path / "split", lora=LoraSettings(r=4, alpha=8, dropout=0.0, train_head=False)))
    assert second["resumed_from_step"] == 3
    assert_same_tensors(tmp_path / "full", tmp_path / "split", ["step_00000006/model.safetensors",
                        "adapters/step_00000006/new_tokens.safetensors",
                        "adapters/step_00000006/adapter_model.safetensors"])

    # exported with the chat tokenizer, transformers computes what the merged checkpoint computes
    from tenali_model.chat import encode_chat
    from tenali_model.hf import export_hf

    out = export_hf(ckpt, tmp_path / "hf", tokenizer_model=padded["chat"])
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert hf_model.config.vocab_size == n + PAD_ROWS
    ids = encode_chat(chat, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "CPI?"}],
                      add_generation_prompt=True).ids
    assert chat.special(SYSTEM) in ids and assistant in ids
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf_model(x).logits, load_model(ckpt)(x)[0], rtol=0, atol=1e-4)


def test_dpo_and_a_student_after_sft_keep_the_rows_sft_trained(padded, tmp_path):
    """The lineage records the rows it fitted (meta.json "chat_vocab_size"): DPO from the SFT model,
    and a chat stage on a student initialised from it, start from the trained rows, not the mean."""
    n = padded["n"]
    sft = sft_train(_sft(padded, tmp_path / "sft", steps=3, ckpt_every=3))["checkpoint"]
    trained, _ = _rows(sft)
    assert (trained[n:n + 5] - trained[:n].mean(0)).abs().max() > 1e-3
    lora = LoraSettings(r=4, alpha=8, dropout=0.0)
    start = dpo.train(_dpo(padded, sft, tmp_path / "dpo0", lora=lora), stop_at=0)["checkpoint"]
    torch.testing.assert_close(_rows(start)[0], trained, rtol=0, atol=0)
    s = dpo.train(_dpo(padded, sft, tmp_path / "dpo", lora=lora))
    meta = load_meta(s["checkpoint"])
    assert "vocab_extended" not in meta and meta["chat_vocab_size"] == n + 5
    lora_only = build_student(_dpo(padded, sft, tmp_path / "unused", lora=lora), sft, torch.device("cpu"))
    assert s["trainable_params"] == policy_lora_params(lora_only)  # no row of the table trains in DPO
    torch.testing.assert_close(_rows(s["checkpoint"])[0], trained, rtol=0, atol=0)

    from tenali_model.posttrain.student import init_student

    student = init_student(sft, tmp_path / "student", 1)
    assert load_meta(student)["chat_vocab_size"] == n + 5
    again = sft_train(_sft(padded, tmp_path / "again", parent=student), stop_at=0)["checkpoint"]
    torch.testing.assert_close(_rows(again)[0], trained, rtol=0, atol=0)

    # a stage that records nothing of its own (distillation) carries the parent's record on
    from tenali_model.posttrain.loop import Stage, stage_meta

    stage = Stage(cfg=_sft(padded, tmp_path / "unused3", parent=student), model=None, parent=student, batches=None,
                  loss_fn=None, tokens_of=None)
    assert stage_meta(stage)["chat_vocab_size"] == n + 5


def policy_lora_params(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if ".lora_" in name) + model.lm_head.weight.numel()


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_straight_from_a_padded_base_fits_policy_and_reference_alike(padded, tmp_path, lora):
    s = dpo.train(_dpo(padded, padded["untied"], tmp_path / "dpo",
                       lora=LoraSettings(r=4, alpha=8, dropout=0.0) if lora else None))
    meta = load_meta(s["checkpoint"])
    assert meta["vocab_extended"]["from"] == padded["n"] and meta["chat_vocab_size"] == padded["n"] + 5
    first = json.loads((tmp_path / "dpo" / "metrics.jsonl").read_text().splitlines()[0])
    # before the first update the policy is the reference: margin 0, loss -log sigmoid(0)
    assert first["margin"] == pytest.approx(0.0, abs=1e-5) and first["loss"] == pytest.approx(math.log(2), abs=1e-5)


@pytest.mark.parametrize("tied", [False, True])
def test_fsdp_fits_the_padded_state_as_one_process_fits_the_module(padded, tied):
    """Under FSDP rank 0 fits the state dict it read (`grown_state`) before sharding it."""
    from tenali_model.checkpoint import read_weights
    from tenali_model.posttrain.vocab import extend_vocab, grown_state

    parent, n = padded["tied" if tied else "untied"], padded["n"]
    model = load_model(parent)
    state, _ = read_weights(parent)
    grown = grown_state(state, model.config, n + 5, n)
    assert extend_vocab(model, n + 5, n) == list(range(n, n + 5))
    expected = model.state_dict()
    for k in expected:
        torch.testing.assert_close(grown[k], expected[k], rtol=0, atol=0, msg=k)
    assert (grown["lm_head.weight"] is grown["tok_embeddings.weight"]) == tied


def test_the_base_tokenizer_length_is_inferred_from_the_chat_tokenizer(tmp_path):
    """Without a record, the new ids are those add_chat_tokens appended: the trailing run of chat
    pieces above the tokenizer model's own vocabulary, so a base's own <|endoftext|> (GPT-2 ends its
    vocabulary with it) keeps its trained row."""
    from tenali_model.posttrain.vocab import chat_tokens_start, new_token_ids

    texts = FINANCE_TEXT * 10
    for specials, kept in ((("<s>", "</s>"), []), (("<s>", EOT), [EOT])):
        tok = _byte_level(texts, specials=specials)
        n = tok.get_vocab_size()
        chat_json, added = add_chat_tokens(tok.to_str())
        assert added == [t for t in SPECIAL_TOKENS if t not in kept]
        (tmp_path / "chat.json").write_text(chat_json)
        chat = load_tokenizer(tmp_path / "chat.json")
        assert chat_tokens_start(chat) == n
        assert new_token_ids(chat, n + PAD_ROWS) == list(range(n, n + len(added)))
        assert new_token_ids(chat, n) == list(range(n, n + len(added)))  # not padded: grown rows only
        assert new_token_ids(chat, n + PAD_ROWS, fitted=n + len(added)) == []  # fitted by an earlier stage
    assert chat_tokens_start(load_tokenizer(_sp_dir(tmp_path))) == load_tokenizer(_sp_dir(tmp_path)).vocab_size


def _sp_dir(tmp_path):
    from tm_helpers import train_sentencepiece

    path = tmp_path / "sp" / "tokenizer.model"
    if not path.exists():
        path.parent.mkdir()
        train_sentencepiece(path)
    return path


def test_a_tokenizer_larger_than_the_model_is_refused_before_any_compute(padded, tmp_path, capsys):
    n = padded["n"]
    torch.manual_seed(0)
    small = save_checkpoint(tmp_path / "small", step=0, model=Transformer(tiny_model_config(n - 10)))
    SFTConfig(init_from=str(small), out_dir=str(tmp_path / "out"), train_files=[padded["chats"]],
              tokenizer=str(padded["chat"]), steps=2, warmup_steps=0, device="cpu").to_json(tmp_path / "sft.json")
    assert sft_main(["--config", str(tmp_path / "sft.json")]) == 2
    err = capsys.readouterr().err
    assert f"has {n + 5} ids but the parent" in err and f"only {n - 10} embeddings" in err
    assert "not only the chat special tokens" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("tied", [False, True])
def test_a_chat_evaluation_of_a_padded_base_starts_the_chat_rows_as_sft_does(padded, tied, tmp_path):
    """The pipeline's chat evaluation of a base grew rows only beyond the table: on a padded table the
    chat tokens kept their untrained padding rows, so it scored another model than the one SFT starts."""
    from tenali_model.posttrain.vocab import fit_for_chat

    parent = padded["tied" if tied else "untied"]
    model = load_model(parent)
    ids = fit_for_chat(model, load_tokenizer(padded["chat"]), load_meta(parent))
    assert ids == list(range(padded["n"], padded["n"] + 5))
    start = sft_train(_sft(padded, tmp_path / "sft", parent=parent, lora=None), stop_at=0)["checkpoint"]
    emb, head = _rows(start)
    torch.testing.assert_close(model.tok_embeddings.weight.detach(), emb, rtol=0, atol=0)
    torch.testing.assert_close(model.lm_head.weight.detach(), head, rtol=0, atol=0)
    # a chat stage's checkpoint has its rows fitted: nothing is started again
    sft_model = load_model(start)
    assert fit_for_chat(sft_model, load_tokenizer(padded["chat"]), load_meta(start)) == []
