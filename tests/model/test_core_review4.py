"""Review 4: sampling definitions checked against reference code written here."""

from fractions import Fraction

import pytest
import torch

from tenali_model.generate import sample_next


def _nucleus(probs: list[Fraction], top_p: Fraction) -> set[int]:
    """Reference top-p: the smallest most-likely-first prefix whose mass reaches top_p (at least one token)."""
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept, mass = set(), Fraction(0)
    for i in order:
        kept.add(i)
        mass += probs[i]
        if mass >= top_p:
            break
    return kept


@pytest.mark.parametrize("probs, top_p", [
    ([Fraction(1, 4)] * 4, Fraction(1, 2)),  # ties, the mass of two tokens is exactly top_p
    ([Fraction(1, 2), Fraction(1, 4), Fraction(1, 8), Fraction(1, 8)], Fraction(3, 4)),
    ([Fraction(1, 2), Fraction(1, 4), Fraction(1, 8), Fraction(1, 8)], Fraction(5, 8)),  # crossing token kept
    ([Fraction(1, 2), Fraction(1, 4), Fraction(1, 8), Fraction(1, 8)], Fraction(0)),  # top_p 0: greedy
])
def test_top_p_keeps_the_smallest_prefix_reaching_p(probs, top_p):
    logits = torch.tensor([[float(torch.tensor(float(p)).log()) for p in probs]])
    g = torch.Generator().manual_seed(0)
    seen = {sample_next(logits, 1.0, top_p=float(top_p), generator=g).item() for _ in range(300)}
    assert seen == _nucleus(probs, top_p)


@pytest.mark.parametrize("overrides", [{"dim": 256}, {"activation": "gelu"}, {"dim": 96, "multiple_of": 64}])
def test_a_preset_with_a_derived_mlp_derives_it_again_from_overridden_shape(overrides):
    """ffn_hidden = 0 means "derived from dim": {"preset": "demo", "dim": 256} must get the MLP a dim-256 model
    gets, not the demo's dim-128 width (a silently narrower MLP)."""
    from tenali_model.config import ModelConfig, preset

    fields = {**vars(preset("demo")), "ffn_hidden": 0, **overrides}
    assert ModelConfig.from_dict({"preset": "demo", **overrides}) == ModelConfig(**fields)
    # a preset's explicit width stays (350m's 2816 is not 8/3 * 1024 rounded)
    assert ModelConfig.from_dict({"preset": "350m", "n_layers": 2}).ffn_hidden == 2816


def test_vocab_size_of_a_tokenizer_json_with_gaps_covers_its_largest_id():
    """A tokenizer.json whose ids skip some numbers: vocab_size is what the model and the server's
    vocab_limit size by, so it must cover the top id (here eos, 7), not count entries (4)."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from tenali_model.tokenizer import TextTokenizer

    hf = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2, "</s>": 7}, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = TextTokenizer(hf=hf)
    assert tok.token_id("</s>") == 7
    assert tok.vocab_size == 8
