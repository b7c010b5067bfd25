"""Generation: the KV-cache path must produce what the plain path produces."""

import pytest
import torch

from tenali_model.config import ModelConfig, preset
from tenali_model.generate import apply_penalties, generate, sample_next
from tenali_model.model import Transformer


def model_with_spread_logits() -> Transformer:
    """Random weights with a larger scale, so greedy choices are not near-ties."""
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**vars(preset("tiny")), "vocab_size": 97}))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.2)
    return model.eval()


def test_cached_greedy_equals_uncached_greedy():
    model = model_with_spread_logits()
    prompt = torch.randint(0, 97, (3, 7))
    cached = generate(model, prompt, 40, temperature=0)
    plain = generate(model, prompt, 40, temperature=0, use_cache=False)
    assert cached.shape == (3, 47)
    assert torch.equal(cached[:, :7], prompt)
    assert torch.equal(cached, plain)


def test_sampling_is_seeded_and_cache_independent():
    model = model_with_spread_logits()
    prompt = torch.randint(0, 97, (2, 5))
    a = generate(model, prompt, 20, temperature=0.8, top_k=20, top_p=0.9, seed=123)
    b = generate(model, prompt, 20, temperature=0.8, top_k=20, top_p=0.9, seed=123)
    c = generate(model, prompt, 20, temperature=0.8, top_k=20, top_p=0.9, seed=123, use_cache=False)
    assert torch.equal(a, b) and torch.equal(a, c)


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[0.0, 3.0, 2.9, -1.0]])
    greedy = sample_next(logits, temperature=0)
    assert greedy.item() == 1
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, 1.0, top_k=1, generator=g).item() for _ in range(20)} == {1}
    assert {sample_next(logits, 1.0, top_p=0.01, generator=g).item() for _ in range(20)} == {1}
    assert {sample_next(logits, 1.0, top_k=2, generator=g).item() for _ in range(50)} == {1, 2}


def test_eos_stops_and_pads():
    model = model_with_spread_logits()
    prompt = torch.randint(0, 97, (2, 4))
    free = generate(model, prompt, 12, temperature=0)
    eos = int(free[0, 6])  # the third generated token of row 0
    out = generate(model, prompt, 12, temperature=0, eos_id=eos)
    first = (out[0, 4:] == eos).nonzero()[0].item() + 4
    assert torch.equal(out[0, :first + 1], free[0, :first + 1])
    assert torch.all(out[0, first:] == eos)


def test_long_generation_falls_back_to_cropped_context():
    model = model_with_spread_logits()
    out = generate(model, torch.zeros(1, 120, dtype=torch.long), 20, temperature=0)
    assert out.shape == (1, 140)  # past max_seq_len 128: uncached, context cropped


def test_penalties_follow_openai_formula():
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    counts = torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    out = apply_penalties(logits, counts, frequency_penalty=0.5, presence_penalty=0.25)
    # mu[j] - c[j] * frequency - (c[j] > 0) * presence
    torch.testing.assert_close(out, torch.tensor([[1.0, 2.0 - 0.5 - 0.25, 3.0 - 1.5 - 0.25, 4.0]]))
    assert apply_penalties(logits, counts) is logits  # no penalties: untouched


def test_presence_penalty_stops_repeats_and_counts_only_generated_tokens():
    model = model_with_spread_logits()
    prompt = torch.randint(0, 97, (2, 6))
    free = generate(model, prompt, 30, temperature=0)
    assert any(len(set(row[6:].tolist())) < 30 for row in free)  # greedy repeats itself
    out = generate(model, prompt, 30, temperature=0, presence_penalty=1e4)
    for row in out[:, 6:]:
        assert len(set(row.tolist())) == 30  # every generated token is new
    # The prompt does not count: the first generated token is the unpenalised greedy choice.
    assert torch.equal(out[:, 6], free[:, 6])
    # Cached and uncached paths agree under penalties too, with sampling.
    a = generate(model, prompt, 20, temperature=0.9, seed=3, frequency_penalty=0.7, presence_penalty=0.3)
    b = generate(model, prompt, 20, temperature=0.9, seed=3, frequency_penalty=0.7, presence_penalty=0.3,
                 use_cache=False)
    assert torch.equal(a, b)


def test_negative_frequency_penalty_encourages_repetition():
    model = model_with_spread_logits()
    prompt = torch.randint(0, 97, (1, 5))
    out = generate(model, prompt, 20, temperature=0, frequency_penalty=-1e4)
    assert (out[0, 6:] == out[0, 5]).all()  # the first token, rewarded ever more, forever


def test_several_stop_ids():
    model = model_with_spread_logits()
    prompt = torch.randint(0, 97, (2, 4))
    free = generate(model, prompt, 12, temperature=0)
    stop_a, stop_b = int(free[0, 7]), int(free[1, 5])  # a token from each row
    out = generate(model, prompt, 12, temperature=0, stop_ids=[stop_a, stop_b], pad_id=0)
    for row, ref in zip(out, free):
        gen = row[4:].tolist()
        first = next(i for i, t in enumerate(gen) if t in (stop_a, stop_b))
        assert gen[:first + 1] == ref[4:4 + first + 1].tolist()  # identical up to the stop token
        assert all(t == 0 for t in gen[first + 1:])  # then padding
    assert out.shape[1] < 16  # both rows stopped early: generation ended
    # eos_id and stop_ids together; padding defaults to eos_id
    both = generate(model, prompt, 12, temperature=0, eos_id=stop_a, stop_ids=[stop_b])
    row0 = both[0, 4:].tolist()
    stop = next(i for i, t in enumerate(row0) if t in (stop_a, stop_b))
    assert all(t == stop_a for t in row0[stop + 1:])


def test_empty_prompt_is_refused_clearly():
    model = model_with_spread_logits()
    for use_cache in (True, False):
        with pytest.raises(ValueError, match="at least one token"):
            generate(model, torch.zeros(2, 0, dtype=torch.long), 3, use_cache=use_cache)
