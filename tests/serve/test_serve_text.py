"""Streaming text: whole characters only (byte-fallback tokens), stop strings cut exactly."""

import pytest

from tenali_model.serve.text import REPLACEMENT, StopMatcher, TextStream
from tenali_model.tokenizer import load_tokenizer

TEXTS = ["Émissions d'obligations: 3,5 milliards d'euros — Ünïcödé and 日本 text, plus 🙂.",
         "Apple (AAPL) closed at $189.25 on 2024-05-01.\nThe curve stayed inverted 🙂🙂 for months."]


@pytest.fixture(scope="module")
def tok(tok_path):
    return load_tokenizer(tok_path)


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_join_to_the_decoded_text_and_never_split_a_character(tok, text):
    ids = tok.encode(text)
    assert any(tok.decode([i]) == REPLACEMENT or not tok.decode([i]) for i in ids), "no byte-fallback token in the test"
    stream = TextStream(tok)
    deltas = [stream.add(i) for i in ids] + [stream.flush()]
    assert "".join(deltas) == tok.decode(ids)
    assert not any(REPLACEMENT in d for d in deltas)


@pytest.mark.parametrize("stop", ["milliards", "— Ü", "🙂", "d'e"])
def test_a_stop_string_spanning_tokens_ends_the_text_right_before_it(tok, stop):
    text = TEXTS[0]
    ids = tok.encode(text)
    stream = TextStream(tok, [stop, "never appears"])
    out = []
    for i in ids:
        out.append(stream.add(i))
        if stream.stopped:
            break
    assert stream.stopped
    assert "".join(out) == text[:text.index(stop)]


def test_text_that_only_looks_like_a_stop_prefix_is_released():
    m = StopMatcher(["STOP"])
    assert m.feed("a ST") == "a "  # "ST" may become STOP: held
    assert m.feed("x") == "STx"  # it did not
    assert m.feed("S") == "" and m.flush() == "S" and not m.stopped
    m = StopMatcher(["ab", "b"])
    assert m.feed("xab") == "x" and m.stopped  # the earliest stop wins


@pytest.mark.parametrize("text", ["Apple closed at the high", TEXTS[0], TEXTS[1]])
def test_a_continuation_decodes_after_its_prompt(tok, text):
    """Given the prompt's ids as context, the deltas are the continuation's text as it reads after the
    prompt (a first "▁word" keeps its space), and the prompt's own text is never repeated."""
    ids = tok.encode(text)
    for cut in (2, len(ids) // 2, len(ids) - 3):
        prompt, cont = ids[:cut], ids[cut:]
        stream = TextStream(tok, context=prompt)
        got = "".join([stream.add(i) for i in cont] + [stream.flush()])
        assert got == tok.decode(ids)[len(tok.decode(prompt)):]
    prompt = tok.encode("Apple closed")
    stream = TextStream(tok, context=prompt)
    assert stream.add(tok.encode("Apple closed at")[len(prompt)]) == " at"
