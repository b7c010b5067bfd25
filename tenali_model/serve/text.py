"""Token ids -> text deltas for streaming: whole characters only, and stop strings cut exactly.

Two things make naive streaming wrong. With byte fallback a character such as "é" or "🙂" can
arrive as several byte tokens, and decoding a prefix gives U+FFFD until the last byte is in; so
text is released only when it no longer ends in a replacement character (and a window of earlier
tokens is decoded with it, since sentencepiece drops the leading space of the first piece decoded;
a completion's first tokens are decoded after the prompt's last few, as vLLM's prefix_offset and
read_offset do, so "Apple closed" + "▁at" continues with " at", not "at").
A stop string may span several tokens, so the tail that could still become a stop string is held
back until it is clearly not one; when a stop string appears the text ends right before it.
"""

from __future__ import annotations

from typing import Collection, Sequence

REPLACEMENT = "\ufffd"


class IncrementalDetokenizer:
    """Feed ids one at a time; get back the newly completed text (possibly "")."""

    def __init__(self, tokenizer, prefix_window: int = 6, context: Sequence[int] = ()):
        """context: ids that precede the first one fed (a completion's prompt; only its last
        prefix_window are kept); their text is never released, only decoded before the new ids."""
        self.tok = tokenizer
        self.ids: list[int] = [int(i) for i in context][-prefix_window:] if prefix_window else []
        self.prefix_offset = 0  # decode from here (context so the first piece's space is right)
        self.read_offset = len(self.ids)  # text up to here has been released (or is the context's)
        self.window = prefix_window

    def add(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prefix = self.tok.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.tok.decode(self.ids[self.prefix_offset:])
        if len(full) <= len(prefix) or full.endswith(REPLACEMENT):
            return ""  # an incomplete UTF-8 sequence (or nothing visible yet): wait for more bytes
        new = full[len(prefix):]
        self.read_offset = len(self.ids)
        self.prefix_offset = max(self.prefix_offset, self.read_offset - self.window)
        return new

    def flush(self) -> str:
        """Whatever is left at the end (an unfinished byte sequence decodes as U+FFFD)."""
        prefix = self.tok.decode(self.ids[self.prefix_offset:self.read_offset])
        full = self.tok.decode(self.ids[self.prefix_offset:])
        self.read_offset = len(self.ids)
        return full[len(prefix):] if len(full) > len(prefix) else ""


class StopMatcher:
    """Holds back text that may be the start of a stop string; reports when one is complete."""

    def __init__(self, stops: Sequence[str] = ()):
        self.stops = [s for s in stops if s]
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to release now; sets `stopped` when a stop string appeared."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            out, self.pending, self.stopped = self.pending[:min(hits)], "", True
            return out
        hold = 0  # the longest tail of pending that is a proper prefix of some stop string
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(s[:n]):
                    hold = n
                    break
        out = self.pending[:len(self.pending) - hold]
        self.pending = self.pending[len(out):]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.stopped else self.pending), ""
        return out


class TextStream:
    """Detokenizer + stop strings: `add(id)` -> text delta; `finished` once a stop string matched."""

    def __init__(self, tokenizer, stops: Sequence[str] = (), context: Sequence[int] = (),
                 skip: Collection[int] = ()):
        """context: the prompt ids a completion continues (their text is not repeated); none for chat,
        whose answer starts a new turn and so without a leading space. skip: ids that add no text (the
        special pieces: a "<|pad|>" is not part of an answer; vLLM's skip_special_tokens)."""
        self.detok = IncrementalDetokenizer(tokenizer, context=[i for i in context if i not in skip])
        self.matcher = StopMatcher(stops)
        self.skip = frozenset(skip)

    @property
    def stopped(self) -> bool:
        return self.matcher.stopped

    def add(self, token_id: int) -> str:
        if token_id in self.skip:
            return ""
        return self.matcher.feed(self.detok.add(token_id))

    def flush(self) -> str:
        return self.matcher.feed(self.detok.flush()) + self.matcher.flush()
