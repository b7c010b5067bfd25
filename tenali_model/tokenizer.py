"""One tokenizer interface for the model side: Tenali's sentencepiece model or a Hugging Face tokenizer.json.

Post-training, generation and serving need only encode, decode and the ids of the special pieces.
Tenali's own tokenizer is a sentencepiece model (``tokenizer.model``, trained by the pipeline); a
base model imported from Hugging Face brings its ``tokenizer.json`` (read with the ``tokenizers``
library, no transformers needed). `load_tokenizer` picks by what the folder or file holds.
"""

from __future__ import annotations

import os
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

    @property
    def vocab_size(self) -> int:
        return self._sp.vocab_size() if self._sp is not None else self._hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        if self._sp is not None:
            return list(self._sp.encode(text))
        return list(self._hf.encode(text, add_special_tokens=False).ids)

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
    if p.suffix == ".json":
        from tokenizers import Tokenizer

        return TextTokenizer(hf=Tokenizer.from_file(str(p)), name=str(p))
    import sentencepiece as spm

    return TextTokenizer(sp=spm.SentencePieceProcessor(model_file=str(p)), name=str(p))


def tokenizer_from_bytes(model_bytes: bytes, name: str = "") -> TextTokenizer:
    import sentencepiece as spm

    return TextTokenizer(sp=spm.SentencePieceProcessor(model_proto=model_bytes), name=name)
