"""Token shards: the on-disk format and the loaders that read them.

TOKEN SHARD FORMAT, version 1 (a contract between the pipeline's shards asset and the trainer):

    A shard is one file, conventionally named *.bin, little-endian throughout:
      bytes 0..7     magic b"TENALITK"
      bytes 8..11    uint32 format version (= 1)
      bytes 12..15   uint32 itemsize: 2 (tokens are uint16) or 4 (tokens are uint32)
      bytes 16..23   uint64 token count N
      bytes 24..255  zero
      bytes 256..    N tokens, itemsize bytes each
    uint16 is used when the vocabulary fits (vocab_size <= 65536), uint32 otherwise.
    The file size must be exactly 256 + N * itemsize; anything else is a truncated or corrupt shard.
    Documents inside a shard are separated by whatever end-of-text token the tokenizer defines;
    the format itself knows nothing about documents.

A list of shards is read as one token stream, memory-mapped (never loaded whole). Training samples
non-overlapping windows of seq_len + 1 tokens (inputs and next-token targets) in a deterministic
order per epoch, so a run can stop anywhere and resume exactly from (epoch, position).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .config import ConfigError, atomic_write_bytes

if TYPE_CHECKING:  # torch only where tensors are made: shard writers (the pipeline's encoder processes) skip it
    import torch

SHARD_MAGIC = b"TENALITK"
SHARD_FORMAT_VERSION = 1
HEADER_BYTES = 256
_HEADER = struct.Struct("<8sIIQ")  # magic, version, itemsize, token count
_DTYPES = {2: np.dtype("<u2"), 4: np.dtype("<u4")}


def dtype_for_vocab(vocab_size: int) -> np.dtype:
    """uint16 while every id fits in 16 bits, else uint32."""
    return _DTYPES[2] if vocab_size <= 65536 else _DTYPES[4]


def write_shard(path: str | os.PathLike, tokens: np.ndarray | Sequence[int],
                vocab_size: int | None = None) -> None:
    """Write tokens as a version-1 shard, atomically (temp file in the same directory, then rename).

    The item size follows vocab_size when given, else the largest token id.
    """
    path = Path(path)
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"{path}: tokens must be 1-D, got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise ValueError(f"{path}: tokens must be integers, got {tokens.dtype}")
    lo = int(tokens.min()) if tokens.size else 0
    hi = int(tokens.max()) if tokens.size else 0
    if lo < 0:
        raise ValueError(f"{path}: negative token id {lo}")
    if vocab_size is not None:
        if hi >= vocab_size:
            raise ValueError(f"{path}: token id {hi} is outside vocab_size {vocab_size}")
        dtype = dtype_for_vocab(vocab_size)
    else:
        dtype = dtype_for_vocab(hi + 1)
    if hi >= 2**32:
        raise ValueError(f"{path}: token id {hi} does not fit in uint32")
    data = np.ascontiguousarray(tokens.astype(dtype, copy=False))
    header = _HEADER.pack(SHARD_MAGIC, SHARD_FORMAT_VERSION, dtype.itemsize, data.size)
    header += b"\0" * (HEADER_BYTES - len(header))

    atomic_write_bytes(path, header, memoryview(data).cast("B"))


def _read_header(path: Path) -> tuple[np.dtype, int]:
    """Validate the header and the file size; return (dtype, token count)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FileNotFoundError(f"token shard {path} does not exist") from None
    if size < HEADER_BYTES:
        raise ValueError(f"token shard {path}: {size} bytes is too small for the "
                         f"{HEADER_BYTES}-byte header (truncated or not a shard)")
    with open(path, "rb") as f:
        magic, version, itemsize, count = _HEADER.unpack(f.read(_HEADER.size))
    if magic != SHARD_MAGIC:
        raise ValueError(f"token shard {path}: bad magic {magic!r}, expected {SHARD_MAGIC!r}")
    if version != SHARD_FORMAT_VERSION:
        raise ValueError(f"token shard {path}: format version {version} is not supported "
                         f"(this reader knows version {SHARD_FORMAT_VERSION})")
    if itemsize not in _DTYPES:
        raise ValueError(f"token shard {path}: itemsize {itemsize} is not 2 or 4")
    expected = HEADER_BYTES + count * itemsize
    if size != expected:
        what = "truncated" if size < expected else "has trailing bytes"
        raise ValueError(f"token shard {path}: {what}: header says {count} tokens "
                         f"({expected} bytes) but the file has {size} bytes")
    return _DTYPES[itemsize], count


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Memory-map a shard's tokens (read-only np.memmap; an empty shard gives an empty array)."""
    path = Path(path)
    dtype, count = _read_header(path)
    if count == 0:
        return np.zeros(0, dtype=dtype)  # mmap cannot map zero bytes
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))


def shard_token_count(path: str | os.PathLike) -> int:
    """Token count from the header (the file size is checked too)."""
    return _read_header(Path(path))[1]


class TokenStream:
    """Several shards read as one long token array, without loading them."""

    def __init__(self, shard_paths: Sequence[str | os.PathLike]):
        if not shard_paths:
            raise ValueError("no token shards given")
        self.paths = [Path(p) for p in shard_paths]
        self.shards = [read_shard(p) for p in self.paths]
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards])  # start of each shard
        self.total = int(self.offsets[-1])

    def read(self, start: int, length: int, vocab_size: int | None = None) -> np.ndarray:
        """Tokens [start, start + length) as int64, crossing shard boundaries as needed.

        vocab_size: raise ConfigError naming the shard on an id >= vocab_size (else the embedding
        lookup fails with a bare IndexError on CPU, a device-side assert on CUDA)."""
        out = np.empty(length, dtype=np.int64)
        filled = 0
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while filled < length:
            shard = self.shards[i]
            lo = start + filled - int(self.offsets[i])
            n = min(length - filled, len(shard) - lo)
            out[filled:filled + n] = shard[lo:lo + n]
            filled += n
            i += 1
        if vocab_size is not None and length and int(out.max()) >= vocab_size:
            pos = start + int(np.argmax(out >= vocab_size))
            j = int(np.searchsorted(self.offsets, pos, side="right")) - 1
            raise ConfigError(
                f"token shard {self.paths[j]}: token id {int(out[pos - start])} at index "
                f"{pos - int(self.offsets[j])} is outside the model's vocab_size {vocab_size}: the shards "
                "were encoded with another tokenizer (re-encode them, or set vocab_size to the tokenizer's)")
        return out


class TokenLoader:
    """Training batches of (inputs, next-token targets), resumable exactly.

    The stream is cut into n = (N - 1) // seq_len non-overlapping windows of seq_len + 1 tokens
    (neighbours share one boundary token). Each epoch visits them in a permutation seeded by
    seed + epoch; rank r of world_size takes permutation entries r, r + world_size, ... (the
    permutation is trimmed to a multiple of world_size so all ranks take the same number of steps).
    A batch that runs past the end of an epoch continues in the next one.
    """

    def __init__(self, shard_paths: Sequence[str | os.PathLike], seq_len: int, batch_size: int,
                 rank: int = 0, world_size: int = 1, seed: int = 0, vocab_size: int | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.stream = TokenStream(shard_paths)
        self.seq_len, self.batch_size = seq_len, batch_size
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.vocab_size = vocab_size  # when given, every batch is checked against it (see TokenStream.read)
        self.n_windows = (self.stream.total - 1) // seq_len if self.stream.total > 0 else 0
        self.per_rank = self.n_windows // world_size
        if self.per_rank == 0:
            raise ValueError(
                f"shards hold {self.stream.total} tokens: too few for one window of {seq_len + 1} "
                f"tokens per rank with world_size {world_size}")
        self.epoch, self.position = 0, 0
        self._order = self._epoch_order(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        perm = np.random.default_rng(self.seed + epoch).permutation(self.n_windows)
        return perm[: self.per_rank * self.world_size][self.rank::self.world_size]

    def next_window_indices(self, count: int) -> list[int]:
        """Advance by `count` windows and return their indices (also used by tests)."""
        out = []
        for _ in range(count):
            if self.position >= self.per_rank:
                self.epoch, self.position = self.epoch + 1, 0
                self._order = self._epoch_order(self.epoch)
            out.append(int(self._order[self.position]))
            self.position += 1
        return out

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, y) int64 tensors of shape [batch_size, seq_len]; y is x shifted by one token."""
        T = self.seq_len
        idx = self.next_window_indices(self.batch_size)
        import torch

        buf = torch.from_numpy(np.stack([self.stream.read(i * T, T + 1, self.vocab_size) for i in idx]))
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "seq_len": self.seq_len, "world_size": self.world_size, "n_windows": self.n_windows}

    def load_state_dict(self, state: dict) -> None:
        """Continue where a saved loader stopped. Same data and world size: exactly the same
        batches follow. A different world size keeps the same global position in the epoch."""
        # ConfigError (a ValueError): the trainer reports it and exits 2 instead of a traceback.
        if state["seq_len"] != self.seq_len:
            raise ConfigError(f"loader state was saved with seq_len {state['seq_len']}, "
                              f"this loader uses {self.seq_len}: resume with seq_len {state['seq_len']}, "
                              "or start in a new out_dir")
        if state["seed"] != self.seed:
            raise ConfigError(f"loader state was saved with seed {state['seed']}, "
                              f"this loader uses {self.seed}: resume with seed {state['seed']}, "
                              "or start in a new out_dir")
        if state["n_windows"] != self.n_windows:
            warnings.warn(f"token shards changed since the loader state was saved "
                          f"({state['n_windows']} windows then, {self.n_windows} now): "
                          "resume is not exact")
        position = int(state["position"])
        if state["world_size"] != self.world_size:
            position = position * int(state["world_size"]) // self.world_size
        self.epoch, self.position = int(state["epoch"]), position
        self._order = self._epoch_order(self.epoch)


def iter_eval_windows(shard_paths: Sequence[str | os.PathLike], seq_len: int, batch_size: int,
                      max_batches: int | None = None, rank: int = 0,
                      world_size: int = 1, vocab_size: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Sequential non-overlapping windows from the start of the stream, for a stable val loss.

    The last batch may be smaller. With world_size > 1, batch b goes to rank b % world_size.
    vocab_size: raise ConfigError on a token id outside it (see TokenStream.read).
    """
    import torch

    stream = TokenStream(shard_paths)
    n_windows = (stream.total - 1) // seq_len if stream.total > 0 else 0
    n_batches = (n_windows + batch_size - 1) // batch_size
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    for b in range(rank, n_batches, world_size):
        starts = range(b * batch_size, min((b + 1) * batch_size, n_windows))
        buf = torch.from_numpy(np.stack([stream.read(i * seq_len, seq_len + 1, vocab_size) for i in starts]))
        yield buf[:, :-1].contiguous(), buf[:, 1:].contiguous()
