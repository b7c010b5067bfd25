"""Review 4 (post-training): data that slipped past the checks (named with file and line), and a resume
with LoRA settings its checkpoint was not trained with."""

import re

import pytest

from conftest import CHATS, write_jsonl
from tenali_model.chat import encode_chat
from tenali_model.config import ConfigError
from tenali_model.posttrain.config import LoraSettings, SFTConfig
from tenali_model.posttrain.data import DataError, encode_pairs, encode_sft, load_chats, load_pairs
from tenali_model.posttrain.sft import train


@pytest.mark.parametrize("record,field", [
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<|endoftext|>"}]},
     "field messages[1].content"),
    ({"instruction": "Q?", "output": " <|endoftext|>\n"}, "field 'output'"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<|end<|pad|>oftext|>"}]},
     "field messages[1].content"),
])
def test_an_answer_made_only_of_chat_markers_is_refused_as_empty(record, field, tmp_path, tok):
    """Message text loses its chat markers when encoded (encode_content), so such an answer trains only
    the closing <|endoftext|> (an immediate stop), exactly what an empty answer is refused for."""
    f = write_jsonl(tmp_path / "c.jsonl", [CHATS[1], record])
    with pytest.raises(DataError, match=rf"c.jsonl:line 2: {re.escape(field)}.*empty once its chat markers"):
        load_chats([f])
    # what it would have trained: the end-of-text token alone
    chat = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<|endoftext|>"}]
    (ex,), _ = encode_sft(tok, [chat], 64)
    assert [y for y in ex.labels if y != -1] == [tok.eot_id]


@pytest.mark.parametrize("side", ["chosen", "rejected"])
def test_a_preference_answer_made_only_of_chat_markers_is_refused(side, tmp_path):
    record = {"prompt": "CPI?", "chosen": "3.4%.", "rejected": "Inflation is a number."}
    record[side] = "<|endoftext|>"
    f = write_jsonl(tmp_path / "p.jsonl", [record])
    with pytest.raises(DataError, match=rf"p.jsonl:line 1: field '{side}': is empty once its chat markers"):
        load_pairs([f])


def test_a_line_nested_too_deeply_names_its_file_and_line(tmp_path):
    """json raises RecursionError, not JSONDecodeError, past Python's nesting limit: it escaped as a
    traceback without the file or line."""
    f = write_jsonl(tmp_path / "deep.jsonl", [CHATS[1], '{"messages": ' + "[" * 100_000])
    with pytest.raises(DataError, match=r"deep.jsonl:line 2: not valid JSON \(nested too deeply"):
        load_chats([f])


@pytest.mark.parametrize("change,message", [({"lora": LoraSettings(r=4, alpha=16)}, r"lora.alpha 8 -> 16"),
                                            ({"lora": LoraSettings(r=8, alpha=8)}, r"lora.r 4 -> 8"),
                                            ({"lora": None}, r"lora on -> off")])
def test_resuming_with_other_lora_settings_is_refused(change, message, tok_dir, parent, chat_file, tmp_path):
    """A LoRA run resumed with another alpha went on silently with its trained adapter scaled by another
    factor; with another rank or without LoRA it crashed on a size mismatch or an IndexError."""
    def cfg(**kw):
        base = dict(init_from=str(parent), out_dir=str(tmp_path / "out"), train_files=[chat_file],
                    tokenizer=str(tok_dir), steps=4, warmup_steps=1, batch_size=2, log_every=1, device="cpu",
                    num_threads=1, seed=3, lora=LoraSettings(r=4, alpha=8))
        return SFTConfig(**{**base, **kw})

    train(cfg(), stop_at=2)
    with pytest.raises(ConfigError, match=rf"no longer describes \({message}\): put the lora settings back"):
        train(cfg(**change))
    # what may change on a resume still resumes (dropout, the schedule)
    assert train(cfg(lora=LoraSettings(r=4, alpha=8, dropout=0.0), lr=2e-4))["resumed_from_step"] == 2


def test_an_assistant_message_with_weight_0_is_context_not_a_target(tok, tmp_path):
    """OpenAI's fine-tuning format marks a turn not to learn with "weight": 0; it was trained all the same
    (the weight was dropped with the other extra keys)."""
    record = {"messages": [{"role": "user", "content": "CPI?"},
                           {"role": "assistant", "content": "Inflation is a number.", "weight": 0},
                           {"role": "user", "content": "The figure, please."},
                           {"role": "assistant", "content": "3.4% year over year.", "weight": 1}]}
    f = write_jsonl(tmp_path / "w.jsonl", [record])
    (chat,) = load_chats([f])
    (ex,), _ = encode_sft(tok, [chat], 128)
    # by hand: the labels are the second answer and its end-of-text, nothing of the first
    assert [y for y in ex.labels if y != -1] == tok.encode_content("3.4% year over year.") + [tok.eot_id]
    assert set(tok.encode_content("Inflation is a number.")) - set(ex.labels)
    # the first answer is still in the context the second is learnt from
    plain = [{k: v for k, v in m.items() if k != "weight"} for m in record["messages"]]
    assert ex.input_ids == encode_chat(tok, plain).ids[:-1]


@pytest.mark.parametrize("messages,message", [
    ([{"role": "user", "content": "q", "weight": 0}, {"role": "assistant", "content": "a"}],
     r"messages\[0\].weight: only an assistant message has a weight"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0.5}],
     r"messages\[1\].weight: .* got 0.5"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}],
     r"messages: has no assistant message with weight 1"),
])
def test_bad_or_all_zero_weights_are_named(messages, message, tmp_path):
    f = write_jsonl(tmp_path / "w.jsonl", [CHATS[1], {"messages": messages}])
    with pytest.raises(DataError, match=r"w.jsonl:line 2: field " + message):
        load_chats([f])


def test_a_preference_side_with_only_weight_0_answers_is_named(tok, tmp_path):
    base = {"prompt": "CPI?", "rejected": "Inflation is a number."}
    ok = {**base, "chosen": [{"role": "assistant", "content": "Let me check.", "weight": 0},
                             {"role": "user", "content": "Go on."}, {"role": "assistant", "content": "3.4%."}]}
    bad = {**base, "chosen": [{"role": "assistant", "content": "3.4%.", "weight": 0}]}
    f = write_jsonl(tmp_path / "p.jsonl", [ok, bad])
    with pytest.raises(DataError, match=r"p.jsonl:line 2: field chosen: has no assistant message with weight 1"):
        load_pairs([f])
    # the weighted-out turn is context of the chosen side, not part of its log-probability sum
    (pair,) = load_pairs([write_jsonl(tmp_path / "q.jsonl", [ok])])
    ((chosen, _),), _ = encode_pairs(tok, [pair], 128)
    assert [y for y in chosen.labels if y != -1] == tok.encode_content("3.4%.") + [tok.eot_id]


@pytest.mark.parametrize("lora", [None, LoraSettings(r=4, alpha=8)], ids=["full", "lora"])
def test_a_resumed_stage_trains_with_the_configs_weight_decay_and_betas(lora, tok_dir, parent, chat_file, tmp_path,
                                                                        monkeypatch, capsys):
    """The optimizer state a checkpoint holds brings back the weight decay and betas it was saved with;
    a resume whose config changes them trains with the config's (as pretraining does)."""
    import torch

    def cfg(**kw):
        base = dict(init_from=str(parent), out_dir=str(tmp_path / "out"), train_files=[chat_file],
                    tokenizer=str(tok_dir), steps=4, warmup_steps=1, batch_size=2, log_every=1, ckpt_every=2,
                    device="cpu", num_threads=1, seed=3, lora=lora)
        return SFTConfig(**{**base, **kw})

    train(cfg(weight_decay=0.1), stop_at=2)
    seen = []
    real = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        seen.append({(g["weight_decay"], tuple(g["betas"])) for g in self.param_groups if g["weight_decay"]}
                    | {("betas", tuple(g["betas"])) for g in self.param_groups})
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    capsys.readouterr()
    assert train(cfg(weight_decay=0.05, beta1=0.8, beta2=0.99))["resumed_from_step"] == 2
    assert seen and all(s == {(0.05, (0.8, 0.99)), ("betas", (0.8, 0.99))} for s in seen), seen
    assert "continuing with the config's weight_decay 0.05, betas (0.8, 0.99)" in capsys.readouterr().out
