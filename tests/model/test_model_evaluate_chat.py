"""Chat evaluation: assistant-token loss, completion log-likelihoods and greedy answers."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from tm_helpers import train_sentencepiece

from tenali_model.chat import encode_chat, prompt_ids
from tenali_model.config import preset
from tenali_model.evaluate_chat import answer, assistant_loss, completion_logprobs
from tenali_model.model import Transformer
from tenali_model.tokenizer import EOT, USER, load_tokenizer


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    train_sentencepiece(path)
    return load_tokenizer(path)


@pytest.fixture(scope="module")
def model(tok):
    torch.manual_seed(0)
    return Transformer(dataclasses.replace(preset("tiny"), vocab_size=tok.vocab_size)).eval()


CHATS = [
    [{"role": "user", "content": "What did Apple close at?"}, {"role": "assistant", "content": "$189.25."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "CPI?"},
     {"role": "assistant", "content": "CPI rose 3.4% year over year."}],
    [{"role": "user", "content": "Yield?"}, {"role": "assistant", "content": "4.50%"},
     {"role": "user", "content": "And the 2-year?"}, {"role": "assistant", "content": "4.87%"}],
]


@torch.no_grad()
def test_assistant_loss_counts_exactly_the_answer_tokens(tok, model):
    got = assistant_loss(model, tok, CHATS, batch_size=2)
    total, count = 0.0, 0
    for c in CHATS:  # one conversation at a time, by hand
        e = encode_chat(tok, c)
        logits, _ = model(torch.tensor([e.ids[:-1]]))
        for pos in range(len(e.ids) - 1):
            if e.target_mask[pos + 1]:
                total += float(F.cross_entropy(logits[0, pos], torch.tensor(e.ids[pos + 1])))
                count += 1
    assert got["tokens"] == count == sum(sum(encode_chat(tok, c).target_mask) for c in CHATS)
    assert got["loss"] == pytest.approx(total / count, rel=1e-5)
    assert got["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    # Right padding in a batch changes nothing.
    assert assistant_loss(model, tok, CHATS, batch_size=1)["loss"] == pytest.approx(got["loss"], rel=1e-5)


@torch.no_grad()
def test_completion_logprobs_match_a_hand_computation(tok, model):
    msgs = CHATS[0][:1]
    got = completion_logprobs(model, tok, msgs, ["$189.25.", "$200.00."])
    prompt = prompt_ids(tok, msgs)
    for text, lp in zip(["$189.25.", "$200.00."], got):
        ids = prompt + tok.encode(text) + [tok.special(EOT)]
        logits, _ = model(torch.tensor([ids[:-1]]))
        logp = logits[0].log_softmax(-1)
        want = sum(float(logp[i - 1, ids[i]]) for i in range(len(prompt), len(ids)))
        assert lp == pytest.approx(want, rel=1e-5)


def test_answer_stops_at_a_stop_token(tok, model):
    # Make <|user|> the model's certain next token: the answer must end right there, empty.
    m = Transformer(model.config).eval()
    user = tok.special(USER)

    def force(_module, _inp, out):
        out = out.clone()
        out[..., user] += 100.0
        return out
    handle = m.lm_head.register_forward_hook(force)
    try:
        assert answer(m, tok, CHATS[0][:1], max_new_tokens=8) == ""
    finally:
        handle.remove()
    text = answer(model, tok, CHATS[0][:1], max_new_tokens=8)
    assert isinstance(text, str) and EOT not in text
    with pytest.raises(ValueError, match="leaves no room"):
        answer(model, tok, CHATS[0][:1], max_new_tokens=model.config.max_seq_len)
