"""One tokenizer interface for the model side: Tenali's sentencepiece model or a Hugging Face tokenizer.json.

Post-training, generation and serving need only encode, decode and the ids of the special pieces.
Tenali's own tokenizer is a sentencepiece model (``tokenizer.model``, trained by the pipeline); a
base model imported from Hugging Face brings its ``tokenizer.json`` (read with the ``tokenizers``
library, no transformers needed). `load_tokenizer` picks by what the folder or file holds.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

EOT = "<|endoftext|>"
USER = "<|user|>"
ASSISTANT = "<|assistant|>"
PAD = "<|pad|>"
SYSTEM = "<|system|>"
# Order matters: the tokenizer trainer gives them ids in this order (appending keeps earlier ids).
SPECIAL_TOKENS = (EOT, USER, ASSISTANT, PAD, SYSTEM)


class TokenizerError(ValueError):
    pass


class TextTokenizer:
    """encode/decode text; `special(token)` gives a special piece's id or raises naming the token."""

    def __init__(self, sp=None, hf=None, name: str = ""):
        if (sp is None) == (hf is None):
            raise TokenizerError("give exactly one of a sentencepiece processor or a tokenizers.Tokenizer")
        self._sp, self._hf, self.name = sp, hf, name
        if hf is not None:  # a tokenizer.json saved with truncation or padding on would cut or pad every encode()
            hf.no_truncation()
            hf.no_padding()

    @functools.cached_property
    def vocab_size(self) -> int:
        """One more than the largest id: a tokenizer.json's ids can have gaps, and its entry count would then
        leave its top ids (often the special ones, eos) outside the vocabulary (as `sharding.Encoder` counts)."""
        if self._sp is not None:
            return self._sp.vocab_size()
        ids = self._hf.get_vocab(with_added_tokens=True).values()
        return max(self._hf.get_vocab_size(with_added_tokens=True), max(ids, default=-1) + 1)

    def encode(self, text: str) -> list[int]:
        """The ids of `text`, a special string in it as its one id and each text between them encoded
        alone: as training encodes each document and each chat message, and as the exported
        tokenizer.json and llama.cpp do (hf.py). Sentencepiece over the whole string would give the text
        after a marker no dummy prefix ("<|user|>What" -> "What", never seen in training) and a lone
        "▁" before a marker that starts the text."""
        if self._hf is not None or self._special_split is None:  # tokenizers splits at its added tokens itself
            return self._encode_text(text)
        ids: list[int] = []
        for i, part in enumerate(self._special_split.split(text)):  # odd parts are the special strings
            if i % 2:
                ids.append(self._sp.piece_to_id(part))
            elif part:
                ids.extend(self._sp.encode(part))
        return ids

    def _encode_text(self, text: str) -> list[int]:
        """encode() of a text that holds no special string."""
        if self._sp is not None:
            return list(self._sp.encode(text))
        return list(self._hf.encode(text, add_special_tokens=False).ids)

    @functools.cached_property
    def _special_split(self) -> re.Pattern | None:
        """The special strings as one pattern, longest first so the longest match wins; None if none."""
        strings = self.special_strings
        return re.compile("(" + "|".join(map(re.escape, strings)) + ")") if strings else None

    @functools.cached_property
    def special_strings(self) -> list[str]:
        """Strings the encoder turns into a special id wherever text holds them: Tenali's chat and
        end-of-text pieces (sentencepiece user-defined symbols), and a Hugging Face tokenizer's special
        added tokens (an imported base's "</s>", "<|eot_id|>", ...). Longest first."""
        out = {t for t in SPECIAL_TOKENS if self.token_id(t) is not None}
        if self._hf is not None:
            out |= {t.content for t in self._hf.get_added_tokens_decoder().values() if t.special}
        return sorted(out, key=len, reverse=True)

    def encode_content(self, text: str) -> list[int]:
        """encode() for text that must stay text (a chat message): the special strings in it are
        removed first (`without_special`), as the pipeline removes them from documents, so a message
        holding "<|system|>" or "<|endoftext|>" can never forge a turn or end an answer."""
        return self._encode_text(without_special(text, self.special_strings))

    def decode(self, ids) -> str:
        ids = [int(i) for i in ids]
        if self._sp is not None:
            return self._sp.decode(ids)
        return self._hf.decode(ids, skip_special_tokens=False)

    def token_id(self, token: str) -> int | None:
        """Id of a single-piece token, or None when the vocabulary lacks it."""
        if self._sp is not None:
            i = self._sp.piece_to_id(token)
            return None if i == self._sp.unk_id() and token != self._sp.id_to_piece(i) else int(i)
        i = self._hf.token_to_id(token)
        return None if i is None else int(i)

    def special(self, token: str) -> int:
        i = self.token_id(token)
        if i is None:
            raise TokenizerError(
                f"The tokenizer {self.name or ''} has no {token!r} piece; chat and end-of-text markup needs "
                f"{', '.join(SPECIAL_TOKENS)} as single pieces (Tenali's tokenizer asset adds them; for a Hugging "
                "Face base model add them as special tokens and resize the embeddings).")
        return i

    @property
    def eot_id(self) -> int:
        return self.special(EOT)

    def id_to_token(self, i: int) -> str | None:
        """The piece an id stands for, or None past the vocabulary."""
        if self._sp is not None:
            return self._sp.id_to_piece(int(i)) if 0 <= i < self._sp.vocab_size() else None
        return self._hf.id_to_token(int(i))

    def missing_special(self) -> list[str]:
        """The chat and end-of-text pieces this tokenizer lacks (a base model's usually lacks them)."""
        return [t for t in SPECIAL_TOKENS if self.token_id(t) is None]


def without_special(text: str, strings) -> str:
    """text with every one of `strings` removed, again until none is left: removing one can join the
    halves of another ("<|us<|pad|>er|>")."""
    while any(s in text for s in strings):
        for s in strings:
            text = text.replace(s, "")
    return text


def load_tokenizer(path: str | os.PathLike) -> TextTokenizer:
    """A ``tokenizer.model`` / ``tokenizer.json`` file, or a folder holding one (sentencepiece preferred)."""
    p = Path(path)
    if p.is_dir():
        for name in ("tokenizer.model", "tokenizer.json", "hf/tokenizer.json"):
            if (p / name).exists():
                return load_tokenizer(p / name)
        raise TokenizerError(f"{p} holds no tokenizer.model or tokenizer.json: pass the tokenizer file with --tokenizer.")
    if not p.exists():
        raise TokenizerError(f"tokenizer file {p} does not exist")
    # A file that does not parse raises RuntimeError (sentencepiece) or a bare Exception (tokenizers),
    # which the commands' error handling (TokenizerError) let through as a traceback.
    if p.suffix == ".json":
        from tokenizers import Tokenizer

        try:
            return TextTokenizer(hf=Tokenizer.from_file(str(p)), name=str(p))
        except Exception as e:
            raise TokenizerError(f"{p} is not a Hugging Face tokenizer.json ({e})") from e
    import sentencepiece as spm

    try:
        return TextTokenizer(sp=spm.SentencePieceProcessor(model_file=str(p)), name=str(p))
    except Exception as e:
        raise TokenizerError(f"{p} is not a sentencepiece tokenizer model ({e})") from e


def add_chat_tokens(tokenizer_json: str | bytes) -> tuple[str, list[str]]:
    """A Hugging Face tokenizer.json with every missing `SPECIAL_TOKENS` piece added as a special
    added token, and the list of those added (empty when none was missing).

    The new pieces get the ids after the last existing one, in `SPECIAL_TOKENS` order, so every id
    the tokenizer already had keeps its meaning: shards encoded with the original stay valid, and a
    model trained on them needs only new embedding rows (`tenali_model.posttrain.vocab`). Added
    tokens are matched whole on the raw text (``normalized=False``), before the model's own
    pre-tokenisation, as the chat template expects one id per marker.
    """
    from tokenizers import AddedToken, Tokenizer

    text = tokenizer_json.decode() if isinstance(tokenizer_json, bytes) else tokenizer_json
    tok = Tokenizer.from_str(text)
    missing = [t for t in SPECIAL_TOKENS if tok.token_to_id(t) is None]
    if not missing:
        return text, []
    before = tok.get_vocab_size(with_added_tokens=True)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in missing])
    ids = [tok.token_to_id(t) for t in missing]
    if ids != list(range(before, before + len(missing))):  # e.g. holes in the id space
        raise TokenizerError(f"adding {missing} gave ids {ids}, not {before}..{before + len(missing) - 1}: this "
                             "tokenizer's id space has gaps; add the tokens by hand and resize the model to match.")
    return tok.to_str(), missing


def tokenizer_from_bytes(model_bytes: bytes, name: str = "") -> TextTokenizer:
    import sentencepiece as spm

    return TextTokenizer(sp=spm.SentencePieceProcessor(model_proto=model_bytes), name=name)
