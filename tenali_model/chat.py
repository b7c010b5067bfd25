"""The one chat template, shared by instruction tuning, preference tuning, generation and serving.

A conversation is a list of ``{"role": "system" | "user" | "assistant", "content": str}``. In tokens:

    [<|system|> system-text] <|user|> user-text <|assistant|> answer <|endoftext|> <|user|> ... <|assistant|>

Each marker is one id (a special piece of the tokenizer) and each content is encoded on its own, with
the special strings removed first (`TextTokenizer.encode_content`, as the pipeline removes them from
documents), so markup can never be forged by text that contains "<|user|>": the tokenizer would
otherwise read it as the marker. An answer ends with
``<|endoftext|>``, which is the stop token at generation.

Loss mask: the tokens the model must learn to produce are exactly each assistant content and its
closing ``<|endoftext|>``, except for an assistant message with ``"weight": 0`` (OpenAI's fine-tuning
format: a turn kept as context, not learnt). The ``<|assistant|>`` marker is given by the template
(the prompt ends with it), so it is not a target; the label for position i is token i+1, so the
mask is applied to targets, not to inputs (a one-off error here is a classic SFT bug: tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .tokenizer import ASSISTANT, EOT, SYSTEM, USER, TextTokenizer

ROLES = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}


class ChatFormatError(ValueError):
    pass


def validate_messages(messages: Sequence[Mapping], where: str = "messages") -> list[dict]:
    """Check roles and contents; return plain dicts. Errors name the message index and field."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatFormatError(f"{where}: expected a non-empty list of messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatFormatError(f"{where}[{i}]: expected an object with 'role' and 'content'")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or role not in ROLES:  # a list/dict role is unhashable: TypeError
            raise ChatFormatError(f"{where}[{i}].role: {role!r} is not one of {sorted(ROLES)}")
        if not isinstance(content, str):
            raise ChatFormatError(f"{where}[{i}].content: expected a string, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise ChatFormatError(f"{where}[{i}].role: a system message may only come first")
        weight = m.get("weight")  # OpenAI's fine-tuning format; None (a Parquet column's null) is absent
        if weight is not None and (role != "assistant" or isinstance(weight, str) or weight not in (0, 1)):
            raise ChatFormatError(f"{where}[{i}].weight: only an assistant message has a weight, 0 (not learnt) "
                                  f"or 1, got {weight!r} on a message of role {role!r}")
        out.append({"role": role, "content": content, **({"weight": 0} if weight == 0 else {})})
    return out


@dataclass
class EncodedChat:
    ids: list[int]
    # target_mask[i] is True when ids[i] is a token the model is trained to produce (an assistant
    # content token or the <|endoftext|> closing it, weight 0 aside); as a label it belongs to position i - 1.
    target_mask: list[bool]


def encode_chat(tok: TextTokenizer, messages: Sequence[Mapping], add_generation_prompt: bool = False) -> EncodedChat:
    """Token ids of a conversation and which of them are assistant targets.

    add_generation_prompt: end with ``<|assistant|>`` so that the model writes the next answer
    (generation and serving); the conversation must then end with a user turn.
    """
    messages = validate_messages(messages)
    eot = tok.special(EOT)
    ids: list[int] = []
    mask: list[bool] = []
    for m in messages:
        marker = tok.special(ROLES[m["role"]])
        content = tok.encode_content(m["content"]) if m["content"] else []
        ids.append(marker)
        mask.append(False)
        if m["role"] == "assistant":
            ids += content + [eot]
            mask += [m.get("weight", 1) != 0] * (len(content) + 1)
        else:
            ids += content
            mask += [False] * len(content)
    if add_generation_prompt:
        if messages[-1]["role"] == "assistant":
            raise ChatFormatError("messages: the last message is the assistant's; a generation prompt needs a user turn last")
        ids.append(tok.special(ASSISTANT))
        mask.append(False)
    return EncodedChat(ids, mask)


def prompt_ids(tok: TextTokenizer, messages: Sequence[Mapping]) -> list[int]:
    """The ids to generate the next assistant answer from."""
    return encode_chat(tok, messages, add_generation_prompt=True).ids


def stop_ids(tok: TextTokenizer) -> list[int]:
    """Tokens that end an answer: end of text, or the model starting a turn by itself (another
    assistant marker included: the answer is over either way)."""
    out = [tok.special(EOT)]
    for t in (USER, SYSTEM, ASSISTANT):
        i = tok.token_id(t)
        if i is not None:
            out.append(i)
    return out


def render_text(messages: Iterable[Mapping], add_generation_prompt: bool = False) -> str:
    """The same template as a string (for model cards and a Hugging Face chat_template).

    Encoding this string in one piece can tokenise content boundaries differently from
    `encode_chat`; training and serving use `encode_chat`.
    """
    parts = []
    for m in validate_messages(list(messages)):
        parts.append(ROLES[m["role"]] + m["content"] + (EOT if m["role"] == "assistant" else ""))
    if add_generation_prompt:
        parts.append(ASSISTANT)
    return "".join(parts)


def _hf_template(content: str) -> str:
    return ("{% for m in messages %}"
            "{% if m['role'] == 'system' %}" + SYSTEM + content +
            "{% elif m['role'] == 'user' %}" + USER + content +
            "{% else %}" + ASSISTANT + content + EOT + "{% endif %}"
            "{% endfor %}"
            "{% if add_generation_prompt %}" + ASSISTANT + "{% endif %}")


# The template in Jinja for a Hugging Face export (tokenizer_config.json "chat_template"): each content
# right after its marker. Right for a tokenizer that encodes a text after a special token as it
# encodes it alone (Tenali's converted sentencepiece, hf.build_tokenizer; byte-level BPE; a base's).
HF_CHAT_TEMPLATE = _hf_template("{{ m['content'] }}")
# The same with a space before each non-empty content, for a tokenizer that gives a text its leading
# "▁" only at the start of the whole string (Metaspace, prepend_scheme "first", as some Hugging Face
# tokenizers and Tenali's own earlier exports do), while `encode_chat` encodes each content alone, "▁" first; the space puts it back.
# `hf.write_tokenizer` picks whichever of the two gives `encode_chat`'s ids.
HF_CHAT_TEMPLATE_SPACED = _hf_template("{% if m['content'] %} {{ m['content'] }}{% endif %}")
