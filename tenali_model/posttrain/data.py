"""Chat and preference files: reading, validation, encoding, packing and resumable batches.

INSTRUCTION FILES (SFT): JSONL (one JSON object per line; blank lines skipped) or Parquet (one row
per example), local paths (the pipeline downloads S3 objects first). Each record is one of

    OpenAI chat   {"messages": [{"role": "system" | "user" | "assistant", "content": str}, ...]}
                  (a system message only first; at least one assistant message; an assistant message
                  with "weight": 0 is context only, no loss, as in OpenAI's fine-tuning format)
    Alpaca        {"instruction": str, "input": str (optional), "output": str, "system": str (optional)}
                  -> [system], user: instruction (+ "\\n\\n" + input when non-empty), assistant: output

PREFERENCE FILES (DPO): JSONL (or Parquet) records {"prompt": str} or {"messages": [... ending with a user turn]},
plus "chosen" and "rejected": each an answer string, or a list of messages continuing the chat.

Every file is read and checked whole before any compute; the first problem raises DataError naming
the file, the line (Parquet: the row) and the field. Conversations are rendered with the one chat
template (`tenali_model.chat.encode_chat`); the loss is on assistant tokens only: the label at
position i is token i + 1, kept only where token i + 1 is a target (`target_mask`), else -1.

Rows are either packed (several conversations per row up to seq_len, each its own document id, so
attention never crosses them: Transformer(doc_ids=...)) or padded (one conversation per row). Both
give the same per-token losses. A conversation longer than seq_len + 1 tokens is cut at the end
(counted in `EncodeStats.truncated`); one left without any target is dropped (`dropped`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch

from ..chat import ChatFormatError, encode_chat, prompt_ids, validate_messages
from ..tokenizer import PAD, SPECIAL_TOKENS, TextTokenizer, without_special


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, line and field."""


# --- reading -------------------------------------------------------------------------------------

def read_records(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """(where, record) for each record of a JSONL or Parquet file; where = "file:line N" / "file:row N"."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        with open(path, "rb") as f:  # decoded per line, so a bad byte is reported with its line
            for n, raw in enumerate(f, 1):
                where = f"{path}:line {n}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise DataError(f"{where}: not valid UTF-8 ({e.reason} at byte {e.start})") from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    # a lone bracket: a pretty-printed JSON document (e.g. Alpaca's .json array),
                    # which "Expecting value at column 1" alone does not explain
                    hint = ("; the file looks like one JSON document spread over lines, but records must be "
                            "JSON Lines: one object per line") if line.strip() in ("[", "{") else ""
                    raise DataError(f"{where}: not valid JSON ({e.msg} at column {e.colno}){hint}") from None
                except RecursionError:  # brackets nested past Python's limit: json raises no JSONDecodeError
                    raise DataError(f"{where}: not valid JSON (nested too deeply to read)") from None
                if not isinstance(rec, dict):
                    raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
                # null is an absent field, as in Parquet (pandas' to_json(lines=True) writes null for a
                # column a row does not use)
                yield where, {k: v for k, v in rec.items() if v is not None}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise DataError(f"{path}: cannot read Parquet: {e}") from e
        for n, rec in enumerate(rows, 1):
            # a column the row does not use reads as null (a file mixing the record formats, or
            # both 'prompt' and 'messages' columns): the field is absent, as in a JSONL record
            yield f"{path}:row {n}", {k: v for k, v in rec.items() if v is not None}
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (use .jsonl or .parquet)")


def _string(rec: Mapping, key: str, where: str, required: bool = True, nonempty: bool = False) -> str:
    value = rec.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        got = "missing" if key not in rec else f"a {type(value).__name__}"
        raise DataError(f"{where}: field {key!r}: expected a string, {got}")
    if nonempty and not without_special(value, SPECIAL_TOKENS).strip():  # as encode_content keeps it
        cause = " once its chat markers are removed" if value.strip() else ""
        raise DataError(f"{where}: field {key!r}: is empty{cause}")
    return value


def _messages(value, where: str, key: str = "messages") -> list[dict]:
    try:
        return validate_messages(value, where=f"{where}: field {key}")
    except ChatFormatError as e:
        raise DataError(str(e)) from None


def _answers_nonempty(msgs: list[dict], where: str, key: str) -> list[dict]:
    # an empty answer would train the model to stop at once (only <|endoftext|> is a target); so would
    # one made only of chat markers ("<|endoftext|>"), which encoding removes from message text
    for i, m in enumerate(msgs):
        if (m["role"] == "assistant" and m.get("weight", 1)
                and not without_special(m["content"], SPECIAL_TOKENS).strip()):
            raise DataError(f"{where}: field {key}[{i}].content: the assistant's answer is empty"
                            + (" once its chat markers are removed" if m["content"].strip() else ""))
    return msgs


def chat_from_record(rec: Mapping, where: str) -> list[dict]:
    """The conversation of an SFT record (OpenAI `messages` or Alpaca), validated."""
    if "messages" in rec:
        msgs = _messages(rec["messages"], where)
        if not any(m["role"] == "assistant" and m.get("weight", 1) for m in msgs):
            weighted = " with weight 1" if any(m["role"] == "assistant" for m in msgs) else ""
            raise DataError(f"{where}: field messages: has no assistant message{weighted} (nothing to learn)")
        return _answers_nonempty(msgs, where, "messages")
    if "instruction" in rec or "output" in rec:
        instruction = _string(rec, "instruction", where, nonempty=True)
        extra = _string(rec, "input", where, required=False)
        output = _string(rec, "output", where, nonempty=True)
        system = _string(rec, "system", where, required=False)
        user = instruction + ("\n\n" + extra if extra.strip() else "")
        msgs = [{"role": "system", "content": system}] if system else []
        return msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    raise DataError(f"{where}: expected a 'messages' field (OpenAI chat) or 'instruction' and 'output' "
                    f"fields (Alpaca); the record has {sorted(rec)}")


@dataclass
class Pair:
    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]


def pair_from_record(rec: Mapping, where: str) -> Pair:
    """The prompt and the two completions of a DPO record, validated."""
    if ("prompt" in rec) == ("messages" in rec):
        raise DataError(f"{where}: expected exactly one of 'prompt' (a string) or 'messages' (a chat "
                        f"ending with a user turn); the record has {sorted(rec)}")
    if "prompt" in rec:
        prompt = [{"role": "user", "content": _string(rec, "prompt", where, nonempty=True)}]
    else:
        prompt = _messages(rec["messages"], where)
        if prompt[-1]["role"] != "user":
            raise DataError(f"{where}: field messages: must end with a user turn (the answers follow it)")
    sides = []
    for key in ("chosen", "rejected"):
        value = rec.get(key)
        if isinstance(value, str):
            sides.append([{"role": "assistant", "content": _string(rec, key, where, nonempty=True)}])
        elif isinstance(value, list):
            msgs = _messages(value, where, key)
            if msgs[0]["role"] != "assistant" or any(m["role"] == "system" for m in msgs):
                raise DataError(f"{where}: field {key}[0].role: the completion must start with the assistant")
            if not any(m["role"] == "assistant" and m.get("weight", 1) for m in msgs):
                raise DataError(f"{where}: field {key}: has no assistant message with weight 1 (nothing to compare)")
            sides.append(_answers_nonempty(msgs, where, key))
        else:
            got = "missing" if key not in rec else f"a {type(value).__name__}"
            raise DataError(f"{where}: field {key!r}: expected a string or a list of messages, {got}")
    if sides[0] == sides[1]:
        raise DataError(f"{where}: fields 'chosen' and 'rejected' are identical (no preference to learn)")
    return Pair(prompt, sides[0], sides[1])


def load_chats(paths: Sequence[str | os.PathLike]) -> list[list[dict]]:
    """Every conversation of the SFT files, all validated (DataError at the first bad record)."""
    out = []
    for p in paths:
        n = len(out)
        out += [chat_from_record(rec, where) for where, rec in read_records(p)]
        if len(out) == n:
            raise DataError(f"{p}: holds no records")
    return out


def load_pairs(paths: Sequence[str | os.PathLike]) -> list[Pair]:
    """Every preference pair of the DPO files, all validated."""
    out = []
    for p in paths:
        n = len(out)
        out += [pair_from_record(rec, where) for where, rec in read_records(p)]
        if len(out) == n:
            raise DataError(f"{p}: holds no records")
    return out


# --- encoding ------------------------------------------------------------------------------------

@dataclass
class Example:
    """Model inputs and labels (-1 = no loss) of one sequence, equal lengths."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped: int = 0
    target_tokens: int = 0
    tokens: int = 0


def labels_from_mask(ids: Sequence[int], target: Sequence[bool]) -> Example:
    """Inputs ids[:-1]; label i = ids[i+1] where ids[i+1] is a target, else -1 (next-token, not one off)."""
    return Example(list(ids[:-1]), [int(t) if m else -1 for t, m in zip(ids[1:], target[1:])])


def encode_sft(tok: TextTokenizer, chats: Sequence[Sequence[Mapping]], seq_len: int
               ) -> tuple[list[Example], EncodeStats]:
    stats = EncodeStats()
    out = []
    for messages in chats:
        enc = encode_chat(tok, messages)
        ids, mask = enc.ids, enc.target_mask
        if len(ids) > seq_len + 1:
            ids, mask = ids[:seq_len + 1], mask[:seq_len + 1]
            stats.truncated += 1
        ex = labels_from_mask(ids, mask)
        n_targets = sum(1 for y in ex.labels if y != -1)
        if n_targets == 0:
            stats.dropped += 1
            continue
        out.append(ex)
        stats.examples += 1
        stats.target_tokens += n_targets
        stats.tokens += len(ex.input_ids)
    return out, stats


def encode_completion(tok: TextTokenizer, prompt: Sequence[Mapping], completion: Sequence[Mapping],
                      seq_len: int) -> Example | None:
    """The prompt and a completion with labels on the completion's assistant tokens only (not on any
    earlier assistant turn of the prompt). None when truncation leaves no target."""
    return _encode_completion(tok, prompt, completion, seq_len)[0]


def _encode_completion(tok: TextTokenizer, prompt: Sequence[Mapping], completion: Sequence[Mapping],
                       seq_len: int) -> tuple[Example | None, bool]:
    """(encode_completion's result, whether the chat was cut at seq_len + 1 tokens)."""
    enc = encode_chat(tok, [*prompt, *completion])
    start = len(prompt_ids(tok, prompt))
    if enc.ids[:start] != prompt_ids(tok, prompt):  # the template guarantees it; a fork would not
        raise DataError("the chat template does not render the prompt as a prefix of the chat")
    mask = [m and i >= start for i, m in enumerate(enc.target_mask)]
    ids = enc.ids[:seq_len + 1]
    ex = labels_from_mask(ids, mask[:seq_len + 1])
    return (ex if any(y != -1 for y in ex.labels) else None), len(enc.ids) > seq_len + 1


def encode_pairs(tok: TextTokenizer, pairs: Sequence[Pair], seq_len: int
                 ) -> tuple[list[tuple[Example, Example]], EncodeStats]:
    """Pairs cut at seq_len + 1 tokens are counted (`truncated`, as in SFT); a pair is dropped
    (`dropped`) when a side keeps no target or when the cut leaves both sides the same tokens (no
    preference left: a constant log 2 loss that would only dilute the step's mean)."""
    stats = EncodeStats()
    out = []
    for pair in pairs:
        c, c_cut = _encode_completion(tok, pair.prompt, pair.chosen, seq_len)
        r, r_cut = _encode_completion(tok, pair.prompt, pair.rejected, seq_len)
        stats.truncated += c_cut or r_cut
        if c is None or r is None or c == r:
            stats.dropped += 1
            continue
        out.append((c, r))
        stats.examples += 1
        stats.tokens += len(c.input_ids) + len(r.input_ids)
    return out, stats


# --- rows: packed or padded ----------------------------------------------------------------------

@dataclass
class Row:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    doc_ids: list[int] = field(default_factory=list)


def pack(examples: Sequence[Example], seq_len: int) -> list[Row]:
    """Greedy packing in order: each row holds whole conversations up to seq_len tokens."""
    rows: list[Row] = []
    cur = Row()
    for ex in examples:
        if len(ex.input_ids) > seq_len:
            raise ValueError(f"an example of {len(ex.input_ids)} tokens exceeds seq_len {seq_len}")
        if cur.input_ids and len(cur.input_ids) + len(ex.input_ids) > seq_len:
            rows.append(cur)
            cur = Row()
        doc = cur.doc_ids[-1] + 1 if cur.doc_ids else 0
        cur.input_ids += ex.input_ids
        cur.labels += ex.labels
        cur.doc_ids += [doc] * len(ex.input_ids)
    if cur.input_ids:
        rows.append(cur)
    return rows


def single_rows(examples: Sequence[Example]) -> list[Row]:
    return [Row(list(ex.input_ids), list(ex.labels), [0] * len(ex.input_ids)) for ex in examples]


def collate(rows: Sequence[Row], pad_id: int, packed: bool) -> dict[str, torch.Tensor]:
    """{"x", "y"[, "doc_ids"]} right-padded to the longest row (labels -1 and document -1 at pads)."""
    T = max(len(r.input_ids) for r in rows)
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), -1, dtype=torch.long)
    doc = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.input_ids)
        x[i, :n] = torch.tensor(r.input_ids)
        y[i, :n] = torch.tensor(r.labels)
        doc[i, :n] = torch.tensor(r.doc_ids)
    batch = {"x": x, "y": y}
    if packed:  # padding forms its own "document": it never attends into a conversation
        batch["doc_ids"] = doc
    return batch


def pad_id_of(tok: TextTokenizer) -> int:
    """<|pad|> when the tokenizer has it, else end-of-text (pads carry no loss either way)."""
    i = tok.token_id(PAD)
    return tok.eot_id if i is None else i


# --- resumable sampling --------------------------------------------------------------------------

class EpochSampler:
    """Item indices in a seeded permutation per epoch, split over ranks; resumable exactly
    (the same (epoch, position) bookkeeping as data.TokenLoader)."""

    def __init__(self, n_items: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0):
        self.n_items, self.batch_size = n_items, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.per_rank = n_items // world_size
        if self.per_rank == 0:
            raise DataError(f"{n_items} training rows are too few for {world_size} rank(s)")
        self.epoch, self.position = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng(self.seed + epoch).permutation(self.n_items)
        return perm[: self.per_rank * self.world_size][self.rank::self.world_size]

    def next_indices(self) -> list[int]:
        out = []
        for _ in range(self.batch_size):
            if self.position >= self.per_rank:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            out.append(int(self._order[self.position]))
            self.position += 1
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "n_items": self.n_items, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        if state["n_items"] != self.n_items or state["seed"] != self.seed:
            raise DataError(f"the saved data position is for {state['n_items']} rows with seed {state['seed']}, "
                            f"this run has {self.n_items} rows with seed {self.seed}: the data files or "
                            "config changed since the checkpoint; use a new out_dir")
        position = int(state["position"])
        if state["world_size"] != self.world_size:
            position = position * int(state["world_size"]) // self.world_size
        self.epoch, self.position = int(state["epoch"]), position
        self._order = self._epoch_order(self.epoch)


class RowBatches(EpochSampler):
    """SFT batches of rows (packed or padded)."""

    def __init__(self, rows: Sequence[Row], batch_size: int, pad_id: int, packed: bool, **kw):
        super().__init__(len(rows), batch_size, **kw)
        self.rows, self.pad_id, self.packed = rows, pad_id, packed

    def next_batch(self) -> dict[str, torch.Tensor]:
        return collate([self.rows[i] for i in self.next_indices()], self.pad_id, self.packed)


class PairBatches(EpochSampler):
    """DPO batches: B chosen rows then the B matching rejected rows, padded together."""

    def __init__(self, pairs: Sequence[tuple[Example, Example]], batch_size: int, pad_id: int, **kw):
        super().__init__(len(pairs), batch_size, **kw)
        self.pairs, self.pad_id = pairs, pad_id

    def next_batch(self) -> dict[str, torch.Tensor]:
        return collate_pairs([self.pairs[i] for i in self.next_indices()], self.pad_id)


def collate_pairs(pairs: Sequence[tuple[Example, Example]], pad_id: int) -> dict[str, torch.Tensor]:
    rows = single_rows([c for c, _ in pairs] + [r for _, r in pairs])
    return collate(rows, pad_id, packed=False)
