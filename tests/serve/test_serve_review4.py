"""OpenAI clients' inputs that the server answered wrongly: a 500 without OpenAI's error shape, an
option that changes the answer ignored, an error about a type the client did not send."""

import pytest

CHAT = [{"role": "user", "content": "What did Apple close at?"}]
HALF_EMOJI = '"Apple \\ud83d closed"'  # JSON for a string holding a lone surrogate (half of 🙂)


@pytest.mark.parametrize("url, body, param", [
    ("/v1/completions", '{"prompt": %s, "max_tokens": 2}' % HALF_EMOJI, "prompt"),
    ("/v1/completions", '{"prompt": [%s], "max_tokens": 2}' % HALF_EMOJI, "prompt.0"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": %s}], "max_tokens": 2}' % HALF_EMOJI,
     "messages.0.content"),
    ("/v1/chat/completions", '{"messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}], '
                             '"max_tokens": 2}' % HALF_EMOJI, "messages.0.content.0.text"),
    ("/v1/completions", '{"prompt": "Apple", "max_tokens": 2, "stop": %s}' % HALF_EMOJI, "stop"),
    ("/v1/completions", '{"prompt": "Apple", "max_tokens": 2, "stop": ["x", %s]}' % HALF_EMOJI, "stop.1"),
])
def test_a_lone_surrogate_is_refused_naming_the_field(client, url, body, param):
    """The tokenizer failed on it: a bare "Internal Server Error" 500 (a stop string held one that
    could never match)."""
    resp = client.post(url, content=body.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == param and "surrogate" in err["message"] and err["message"].startswith(param)


@pytest.mark.parametrize("extra, param", [
    ({"function_call": {"name": "get_price"}, "functions": [{"name": "get_price", "parameters": {}}]}, "function_call"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}}, "modalities"),
    ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
])
def test_a_forced_function_call_or_an_audio_answer_is_refused(client, extra, param):
    """A client forcing a call (the deprecated function_call) or asking for audio got plain text as if
    it were what it asked for."""
    resp = client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 2, **extra})
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["param"] == param and param in resp.json()["error"]["message"]


def test_function_call_auto_and_text_modalities_are_answered(client):
    resp = client.post("/v1/chat/completions", json={"messages": CHAT, "max_tokens": 2, "function_call": "auto",
                                                     "functions": [{"name": "f"}], "modalities": ["text"],
                                                     "audio": None})
    assert resp.status_code == 200, resp.text


def test_an_error_in_a_field_of_several_types_is_about_the_type_sent(client):
    """prompt takes a string or a list: a list of token-id lists was told "Input should be a valid string"."""
    resp = client.post("/v1/completions", json={"prompt": [[1, 2]], "max_tokens": 2})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == "prompt.0" and "integer" in err["message"] and "string" not in err["message"]


@pytest.mark.parametrize("field", ["temperature", "top_p", "frequency_penalty"])
def test_nan_is_refused_as_not_a_number(client, field):
    """Python's JSON reads NaN; it was refused as "less than or equal to 2" (or 1)."""
    body = '{"prompt": "Apple", "max_tokens": 2, "%s": NaN}' % field
    resp = client.post("/v1/completions", content=body.encode(), headers={"content-type": "application/json"})
    assert resp.status_code == 422, resp.text
    err = resp.json()["error"]
    assert err["param"] == field and "finite" in err["message"]
