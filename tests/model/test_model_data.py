"""The token-shard format (version 1) and the loaders."""

import struct

import numpy as np
import pytest
import torch

from tenali_model.config import ConfigError
from tenali_model.data import (HEADER_BYTES, SHARD_MAGIC, TokenLoader, TokenStream, dtype_for_vocab,
                               iter_eval_windows, read_shard, shard_token_count, write_shard)


def test_round_trip_uint16(tmp_path):
    toks = np.arange(1000) % 500
    path = tmp_path / "a.bin"
    write_shard(path, toks, vocab_size=500)
    got = read_shard(path)
    assert isinstance(got, np.memmap) and got.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(got, toks)
    assert shard_token_count(path) == 1000
    assert path.stat().st_size == HEADER_BYTES + 2 * 1000
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # atomic: no temp file left


def test_header_layout(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, [1, 2, 3], vocab_size=70_000)
    raw = path.read_bytes()
    assert raw[:8] == SHARD_MAGIC
    assert struct.unpack("<IIQ", raw[8:24]) == (1, 4, 3)
    assert raw[24:HEADER_BYTES] == b"\0" * (HEADER_BYTES - 24)
    assert np.frombuffer(raw[HEADER_BYTES:], dtype="<u4").tolist() == [1, 2, 3]


def test_dtype_selection(tmp_path):
    assert dtype_for_vocab(65536) == np.dtype("<u2")
    assert dtype_for_vocab(65537) == np.dtype("<u4")
    write_shard(tmp_path / "small.bin", [0, 65535])  # inferred from the largest id
    write_shard(tmp_path / "big.bin", [0, 65536])
    assert read_shard(tmp_path / "small.bin").dtype.itemsize == 2
    big = read_shard(tmp_path / "big.bin")
    assert big.dtype.itemsize == 4 and big.tolist() == [0, 65536]


def test_write_rejects_bad_tokens(tmp_path):
    with pytest.raises(ValueError, match="outside vocab_size"):
        write_shard(tmp_path / "a.bin", [1, 600], vocab_size=512)
    with pytest.raises(ValueError, match="negative"):
        write_shard(tmp_path / "a.bin", [-1, 2])
    with pytest.raises(ValueError, match="1-D"):
        write_shard(tmp_path / "a.bin", np.zeros((2, 2), dtype=np.int64))
    assert not list(tmp_path.iterdir())


def test_bad_magic(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, [1, 2, 3])
    raw = bytearray(path.read_bytes())
    raw[:8] = b"NOTASHRD"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=r"a\.bin: bad magic"):
        read_shard(path)


def test_truncated_and_trailing(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, np.arange(100))
    full = path.read_bytes()
    path.write_bytes(full[:-3])
    with pytest.raises(ValueError, match=r"a\.bin: truncated: header says 100 tokens"):
        read_shard(path)
    with pytest.raises(ValueError, match="truncated"):
        shard_token_count(path)
    path.write_bytes(full + b"xx")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_shard(path)
    path.write_bytes(full[:100])
    with pytest.raises(ValueError, match="too small for the 256-byte header"):
        read_shard(path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "a.bin"
    write_shard(path, [1, 2])
    raw = bytearray(path.read_bytes())
    raw[8:12] = struct.pack("<I", 2)
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="format version 2"):
        read_shard(path)


def test_missing_and_empty_shards(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        read_shard(tmp_path / "nope.bin")
    write_shard(tmp_path / "empty.bin", np.zeros(0, dtype=np.int64))
    assert len(read_shard(tmp_path / "empty.bin")) == 0


# --- loaders -----------------------------------------------------------------------------------

def make_stream(tmp_path, sizes=(500, 0, 700, 300)):
    """Shards holding consecutive integers, so every token tells its position in the stream."""
    paths, start = [], 0
    for i, n in enumerate(sizes):
        p = tmp_path / f"s{i}.bin"
        write_shard(p, np.arange(start, start + n), vocab_size=5000)
        paths.append(p)
        start += n
    return paths, start


def test_stream_reads_across_shard_boundaries(tmp_path):
    paths, total = make_stream(tmp_path)
    stream = TokenStream(paths)
    assert stream.total == total
    np.testing.assert_array_equal(stream.read(490, 320), np.arange(490, 810))


def test_batches_are_windows_with_shifted_targets(tmp_path):
    paths, total = make_stream(tmp_path)
    loader = TokenLoader(paths, seq_len=16, batch_size=4, seed=3)
    x, y = loader.next_batch()
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all(x[:, 0] % 16 == 0)  # windows start on multiples of seq_len
    assert torch.all(torch.diff(torch.cat([x, y[:, -1:]], 1), dim=1) == 1)


def test_loader_is_deterministic_and_covers_an_epoch(tmp_path):
    paths, total = make_stream(tmp_path)
    n_windows = (total - 1) // 16
    a = TokenLoader(paths, 16, 4, seed=3)
    b = TokenLoader(paths, 16, 4, seed=3)
    first = a.next_window_indices(n_windows)
    assert first == b.next_window_indices(n_windows)
    assert sorted(first) == list(range(n_windows))  # each window once per epoch
    second = a.next_window_indices(n_windows)
    assert a.epoch == 1 and sorted(second) == sorted(first) and second != first
    assert TokenLoader(paths, 16, 4, seed=4).next_window_indices(n_windows) != first


def test_exact_resume(tmp_path):
    paths, _ = make_stream(tmp_path)
    loader = TokenLoader(paths, 16, 5, seed=1)
    for _ in range(17):  # past an epoch boundary (93 windows / 5 per batch)
        loader.next_batch()
    state = loader.state_dict()
    expected = [loader.next_batch() for _ in range(30)]
    resumed = TokenLoader(paths, 16, 5, seed=1)
    resumed.load_state_dict(state)
    for (x0, y0), (x1, y1) in zip(expected, (resumed.next_batch() for _ in range(30))):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)


def test_ranks_take_disjoint_windows(tmp_path):
    paths, total = make_stream(tmp_path)
    per_rank = ((total - 1) // 16) // 3
    seen = [set(TokenLoader(paths, 16, 2, rank=r, world_size=3, seed=5).next_window_indices(per_rank))
            for r in range(3)]
    assert all(len(s) == per_rank for s in seen)
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])


def test_resume_with_another_world_size_keeps_global_position(tmp_path):
    paths, _ = make_stream(tmp_path)
    two = [TokenLoader(paths, 16, 1, rank=r, world_size=2, seed=5) for r in range(2)]
    consumed = {i for loader in two for i in loader.next_window_indices(10)}
    one = TokenLoader(paths, 16, 1, seed=5)
    one.load_state_dict(two[0].state_dict())
    assert one.position == 20
    rest = one.next_window_indices(one.per_rank - 20)
    assert not consumed & set(rest)


def test_loader_state_checks(tmp_path):
    # ConfigError, not a plain ValueError: the trainer turns it into exit 2 with the message (and the fix)
    # instead of a traceback when a run is resumed with another seq_len or seed.
    paths, _ = make_stream(tmp_path)
    with pytest.raises(ValueError, match="too few"):
        TokenLoader(paths, 5000, 2)
    state = TokenLoader(paths, 16, 2, seed=1).state_dict()
    with pytest.raises(ConfigError, match="seq_len 16.*new out_dir"):
        TokenLoader(paths, 8, 2, seed=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="seed 1.*new out_dir"):
        TokenLoader(paths, 16, 2, seed=2).load_state_dict(state)


def test_token_ids_outside_the_vocab_are_named(tmp_path):
    # Shards from another tokenizer: a clear error naming the shard, not an IndexError in the embedding.
    paths, total = make_stream(tmp_path)  # ids 0..1499, one per position
    loader = TokenLoader(paths, 16, 100, seed=0, vocab_size=1488)  # a whole epoch: the last window ends on 1488
    with pytest.raises(ConfigError, match=r"s3\.bin: token id 1488 at index 288 is outside the model's vocab_size 1488"):
        loader.next_batch()
    x, _ = TokenLoader(paths, 16, 100, seed=0, vocab_size=total).next_batch()  # all in range: no error
    assert x.shape == (100, 16)
    with pytest.raises(ConfigError, match=r"s3\.bin: token id 1300 at index 100"):
        list(iter_eval_windows(paths, 16, 8, vocab_size=1300))
    assert len(list(iter_eval_windows(paths, 16, 8, max_batches=2, vocab_size=1300))) == 2  # ids < 1300 there


def test_eval_windows_sequential(tmp_path):
    paths, total = make_stream(tmp_path)
    n_windows = (total - 1) // 16
    batches = list(iter_eval_windows(paths, 16, 8))
    assert len(batches) == -(-n_windows // 8) and batches[-1][0].shape[0] == n_windows % 8
    firsts = torch.cat([x[:, 0] for x, _ in batches])
    assert firsts.tolist() == [16 * i for i in range(n_windows)]
    assert len(list(iter_eval_windows(paths, 16, 8, max_batches=3))) == 3
    split = [list(iter_eval_windows(paths, 16, 8, rank=r, world_size=2)) for r in range(2)]
    assert len(split[0]) + len(split[1]) == len(batches)
    assert torch.equal(split[1][0][0], batches[1][0])
