"""Generation: the KV-cache path must produce what the plain path produces."""

import torch

from tenali_model.config import ModelConfig, preset
from tenali_model.generate import generate, sample_next
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
