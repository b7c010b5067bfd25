"""The lake: round trips, listing, key safety, atomic writes and staged folders, locally and on S3 (moto)."""

import datetime as dt
import os
import tempfile
import time
from pathlib import Path

import polars as pl
import pytest

import tenali_pipeline.lake as lake_module
from tenali_pipeline.lake import Lake


def _frame() -> pl.DataFrame:
    return pl.DataFrame({
        "ticker": ["AAPL", "MSFT", None],
        "date": [dt.date(2020, 1, 2), dt.date(2020, 1, 3), dt.date(2020, 1, 6)],
        "close": [1.5, 2.25, float("nan")],
        "ts": pl.Series([dt.datetime(2020, 1, 2, 21)] * 3).dt.replace_time_zone("UTC"),
    })


def _all_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


# ---- local ----------------------------------------------------------------------------------
@pytest.fixture
def lake(tmp_path) -> Lake:
    return Lake(str(tmp_path / "lake"))


def test_parquet_round_trip_keeps_schema_and_values(lake):
    df = _frame()
    uri = lake.write_parquet("clean/market/prices.parquet", df)
    assert uri == str(Path(lake.root, "clean/market/prices.parquet"))
    assert Path(uri).is_file()
    back = lake.read_parquet("clean/market/prices.parquet")
    assert back.schema == df.schema
    assert back.equals(df)  # nulls and NaN included


def test_bytes_and_json_round_trip(lake):
    data = bytes(range(256)) * 3
    lake.write_bytes("tokenizer/tenali.model", data)
    assert lake.read_bytes("tokenizer/tenali.model") == data
    obj = {"b": [1, 2.5, None], "a": {"nested": "é"}, "when": dt.date(2020, 1, 2)}
    lake.write_json("shards/manifest.json", obj)
    assert lake.read_json("shards/manifest.json") == {"a": {"nested": "é"}, "b": [1, 2.5, None], "when": "2020-01-02"}


def test_rewrite_replaces(lake):
    lake.write_bytes("x/y.bin", b"first version, longer")
    lake.write_bytes("x/y.bin", b"second")
    assert lake.read_bytes("x/y.bin") == b"second"


def test_list_is_recursive_sorted_and_relative(lake):
    for key in ("raw/b/2.parquet", "raw/a/1.parquet", "raw/a/sub/3.bin", "rawish/4.bin", "clean/5.bin"):
        lake.write_bytes(key, b"x")
    assert lake.list("raw") == ["raw/a/1.parquet", "raw/a/sub/3.bin", "raw/b/2.parquet"]
    assert lake.list("raw/a") == ["raw/a/1.parquet", "raw/a/sub/3.bin"]
    assert lake.list("nothing/here") == []
    assert lake.list("") == ["clean/5.bin", "raw/a/1.parquet", "raw/a/sub/3.bin", "raw/b/2.parquet", "rawish/4.bin"]


def test_exists(lake):
    assert not lake.exists("a/b.bin")
    lake.write_bytes("a/b.bin", b"1")
    assert lake.exists("a/b.bin")
    assert lake.exists("a")  # a folder with files
    assert not lake.exists("a/c.bin")


@pytest.mark.parametrize("key", ["../escape.bin", "a/../../b", "a/..", "/etc/passwd"])
def test_keys_escaping_the_root_are_rejected(lake, key):
    for call in (lambda: lake.write_bytes(key, b"x"), lambda: lake.read_bytes(key), lambda: lake.exists(key),
                 lambda: lake.list(key), lambda: lake.read_parquet(key)):
        with pytest.raises(ValueError, match=r"\.\."):
            call()
    assert not (Path(lake.root).parent / "escape.bin").exists()


def test_dots_inside_names_are_fine(lake):
    lake.write_bytes("a/b..c/..d.bin", b"ok")
    assert lake.read_bytes("a/b..c/..d.bin") == b"ok"


@pytest.mark.parametrize("read", ["read_bytes", "read_parquet", "read_json"])
def test_missing_key_says_to_materialise(lake, read):
    with pytest.raises(FileNotFoundError, match="materialise") as e:
        getattr(lake, read)("corpus/train.parquet")
    assert lake.uri("corpus/train.parquet") in str(e.value)


def test_successful_write_leaves_no_temporary_files(lake):
    lake.write_bytes("d/one.bin", b"1")
    lake.write_parquet("d/two.parquet", _frame())
    lake.write_json("d/three.json", [1])
    lake.write_bytes("d/one.bin", b"11")
    assert _all_files(Path(lake.root) / "d") == ["one.bin", "three.json", "two.parquet"]


def test_failed_replace_keeps_the_old_file(lake, monkeypatch):
    lake.write_parquet("t/prices.parquet", _frame())
    before = (Path(lake.root) / "t/prices.parquet").read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(lake_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        lake.write_parquet("t/prices.parquet", _frame().head(1))
    monkeypatch.undo()
    assert (Path(lake.root) / "t/prices.parquet").read_bytes() == before
    assert lake.read_parquet("t/prices.parquet").height == 3
    assert _all_files(Path(lake.root) / "t") == ["prices.parquet"]


def test_write_failing_mid_file_keeps_the_old_file(lake, monkeypatch):
    lake.write_bytes("t/blob.bin", b"old")
    real_fsync = os.fsync

    def failing_fsync(fd):
        # the new bytes are already in the temporary file when this fails
        raise OSError("I/O error")

    monkeypatch.setattr(lake_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="I/O error"):
        lake.write_bytes("t/blob.bin", b"new" * 1000)
    monkeypatch.setattr(lake_module.os, "fsync", real_fsync)
    assert lake.read_bytes("t/blob.bin") == b"old"
    assert _all_files(Path(lake.root) / "t") == ["blob.bin"]


def test_dataframe_write_failing_keeps_the_old_table(lake, monkeypatch):
    lake.write_parquet("t/prices.parquet", _frame())

    def failing_write(self, file, *args, **kwargs):
        file.write(b"PAR1 half a table")
        raise RuntimeError("serialisation failed")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", failing_write)
    with pytest.raises(RuntimeError, match="serialisation failed"):
        lake.write_parquet("t/prices.parquet", _frame().head(1))
    monkeypatch.undo()
    assert lake.read_parquet("t/prices.parquet").equals(_frame())
    assert _all_files(Path(lake.root) / "t") == ["prices.parquet"]


def test_staged_dir_replaces_the_folder_whole(lake):
    with lake.staged_dir("tokenizer") as d:
        (d / "old_only.txt").write_text("stale")
        (d / "tenali.model").write_bytes(b"v1")
    with lake.staged_dir("tokenizer") as d:
        assert list(d.iterdir()) == []  # a fresh, empty folder
        (d / "tenali.model").write_bytes(b"v2")
        (d / "sub").mkdir()
        (d / "sub" / "report.json").write_text("{}")
    assert lake.list("tokenizer") == ["tokenizer/sub/report.json", "tokenizer/tenali.model"]
    assert lake.read_bytes("tokenizer/tenali.model") == b"v2"
    assert _all_files(Path(lake.root)) == ["tokenizer", "tokenizer/sub", "tokenizer/sub/report.json",
                                           "tokenizer/tenali.model"]


def test_staged_dir_failure_leaves_the_old_folder(lake):
    with lake.staged_dir("shards") as d:
        (d / "train_00000.bin").write_bytes(b"good")
    with pytest.raises(RuntimeError, match="encoder crashed"):
        with lake.staged_dir("shards") as d:
            (d / "train_00000.bin").write_bytes(b"half")
            raise RuntimeError("encoder crashed")
    assert lake.list("shards") == ["shards/train_00000.bin"]
    assert lake.read_bytes("shards/train_00000.bin") == b"good"
    assert _all_files(Path(lake.root)) == ["shards", "shards/train_00000.bin"]


def test_staged_dir_failure_on_first_write_creates_nothing(lake):
    with pytest.raises(KeyError):
        with lake.staged_dir("checkpoints/run") as d:
            (d / "x").write_text("x")
            raise KeyError("boom")
    assert not lake.exists("checkpoints/run")
    assert lake.list("checkpoints") == []


def test_local_dir_and_download_dir_are_the_folder(lake, tmp_path):
    lake.write_bytes("shards/a.bin", b"a")
    assert lake.local_dir("shards") == Path(lake.root) / "shards"
    assert lake.download_dir("shards", tmp_path / "unused") == Path(lake.root) / "shards"
    assert not (tmp_path / "unused").exists()


def test_root_is_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lake = Lake("relative/lake/")
    assert lake.is_local and lake.root == str(tmp_path / "relative" / "lake")


# ---- S3 through moto's server ---------------------------------------------------------------
@pytest.fixture(scope="module")
def s3_endpoint():
    pytest.importorskip("flask", reason="moto's server mode needs flask (pip install 'moto[server]')")
    pytest.importorskip("flask_cors", reason="moto's server mode needs flask-cors (pip install 'moto[server]')")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                            "AWS_EC2_METADATA_DISABLED": "true"}.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            host, port = server.get_host_and_port()
            url = f"http://{host}:{port}"
            boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(Bucket="tenali-test")
            yield url
        finally:
            server.stop()


@pytest.fixture
def s3_lake(s3_endpoint, request):
    # one prefix per test: the bucket is shared by the module
    return Lake(f"s3://tenali-test/{request.node.name.replace('[', '_').rstrip(']')}/", s3_endpoint_url=s3_endpoint)


def test_s3_round_trips(s3_lake, s3_endpoint):
    assert not s3_lake.is_local
    assert s3_lake.root.endswith("/test_s3_round_trips")
    df = _frame()
    assert s3_lake.write_parquet("clean/m.parquet", df) == f"{s3_lake.root}/clean/m.parquet"
    assert s3_lake.read_parquet("clean/m.parquet").equals(df)
    s3_lake.write_bytes("tokenizer/tenali.model", b"\x00\x01model")
    assert s3_lake.read_bytes("tokenizer/tenali.model") == b"\x00\x01model"
    s3_lake.write_json("shards/manifest.json", {"totals": {"train": 3}})
    assert s3_lake.read_json("shards/manifest.json") == {"totals": {"train": 3}}
    s3_lake.write_bytes("tokenizer/tenali.model", b"v2")
    assert s3_lake.read_bytes("tokenizer/tenali.model") == b"v2"
    assert s3_lake.list("") == ["clean/m.parquet", "shards/manifest.json", "tokenizer/tenali.model"]
    assert s3_lake.list("clean") == ["clean/m.parquet"]
    assert s3_lake.list("missing") == []
    assert s3_lake.exists("clean/m.parquet") and not s3_lake.exists("clean/n.parquet")
    # a second Lake on the same prefix (another process) sees the same keys
    other = Lake(s3_lake.root, s3_endpoint_url=s3_endpoint, s3_region="us-east-1")
    assert other.read_bytes("tokenizer/tenali.model") == b"v2"


def test_s3_missing_key_and_bad_keys(s3_lake):
    for read in (s3_lake.read_bytes, s3_lake.read_parquet):
        with pytest.raises(FileNotFoundError, match="materialise"):
            read("corpus/val.parquet")
    with pytest.raises(ValueError, match=r"\.\."):
        s3_lake.write_bytes("../other-prefix/x", b"x")
    with pytest.raises(ValueError, match="download_dir"):
        s3_lake.local_dir("shards")


def test_s3_staged_dir_removes_stale_files_and_download_dir(s3_lake, tmp_path):
    with s3_lake.staged_dir("shards") as d:
        (d / "train_00000.bin").write_bytes(b"a")
        (d / "train_00001.bin").write_bytes(b"b")
        (d / "old" / "x.bin").parent.mkdir()
        (d / "old" / "x.bin").write_bytes(b"stale")
    s3_lake.write_bytes("shardsX/keep.bin", b"neighbour")  # shares the name's prefix, not the folder
    with s3_lake.staged_dir("shards") as d:
        (d / "train_00000.bin").write_bytes(b"A")
        (d / "manifest.json").write_text("{}")
    assert s3_lake.list("shards") == ["shards/manifest.json", "shards/train_00000.bin"]
    assert s3_lake.read_bytes("shards/train_00000.bin") == b"A"
    assert s3_lake.read_bytes("shardsX/keep.bin") == b"neighbour"

    with pytest.raises(RuntimeError):
        with s3_lake.staged_dir("shards") as d:
            (d / "train_00000.bin").write_bytes(b"broken")
            raise RuntimeError("failed half way")
    assert s3_lake.read_bytes("shards/train_00000.bin") == b"A"
    assert s3_lake.list("shards") == ["shards/manifest.json", "shards/train_00000.bin"]

    dest = s3_lake.download_dir("shards", tmp_path / "dl")
    assert dest == tmp_path / "dl"
    assert _all_files(dest) == ["manifest.json", "train_00000.bin"]
    assert (dest / "train_00000.bin").read_bytes() == b"A"


def test_s3_download_cache_refetches_rebuilt_files_and_drops_stale_ones(s3_lake, tmp_path):
    cache = tmp_path / "cache"
    with s3_lake.staged_dir("shards") as out:
        (out / "manifest.json").write_text('{"sha": "aaaa"}')
        (out / "train_00000.bin").write_bytes(b"1234")
        (out / "train_00001.bin").write_bytes(b"5678")
    local = s3_lake.download_dir("shards", cache)
    assert (local / "manifest.json").read_text() == '{"sha": "aaaa"}'
    time.sleep(1.1)  # S3 times have one-second resolution
    with s3_lake.staged_dir("shards") as out:  # rebuilt: same sizes, new content, one shard fewer
        (out / "manifest.json").write_text('{"sha": "bbbb"}')
        (out / "train_00000.bin").write_bytes(b"abcd")
    local = s3_lake.download_dir("shards", cache)
    assert (local / "manifest.json").read_text() == '{"sha": "bbbb"}'
    assert (local / "train_00000.bin").read_bytes() == b"abcd"
    assert not (local / "train_00001.bin").exists()
    before = (local / "manifest.json").stat().st_mtime_ns
    s3_lake.download_dir("shards", cache)  # unchanged: the cached copy is kept
    assert (local / "manifest.json").stat().st_mtime_ns == before


def test_local_staged_dir_restores_the_old_folder_when_the_swap_fails(tmp_path, monkeypatch):
    lake = Lake(str(tmp_path / "lake"))
    with lake.staged_dir("shards") as out:
        (out / "a.bin").write_bytes(b"old")
    real_rename = Path.rename

    def failing_rename(self, target):
        if ".tmp-" in self.name:
            raise OSError("disk full")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="disk full"):
        with lake.staged_dir("shards") as out:
            (out / "a.bin").write_bytes(b"new")
    assert (tmp_path / "lake" / "shards" / "a.bin").read_bytes() == b"old"


# ---- S3: what a failed or cancelled upload leaves, and where uploads stage ---------------------
class Cancelled(BaseException):
    """What a Dagster cancel raises in the run's main thread (a BaseException, like KeyboardInterrupt)."""


def _cancel_while_reading(monkeypatch, matches, after_reads: int) -> None:
    """Reads of a file the lake opens whose name `matches` raise `Cancelled` after `after_reads` chunks:
    a run cancelled half way through an upload."""
    real_open = open

    class Reader:
        def __init__(self, f):
            self._f, self._reads = f, 0

        def read(self, *args):
            self._reads += 1
            if self._reads > after_reads:
                raise Cancelled("run cancelled mid-upload")
            return self._f.read(*args)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._f.close()

        def __getattr__(self, name):
            return getattr(self._f, name)

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Reader(f) if "r" in mode and matches(Path(path).name) else f

    monkeypatch.setattr(lake_module, "open", fake_open, raising=False)


def _open_uploads(s3_lake, s3_endpoint) -> list:
    import boto3

    bucket, _, prefix = s3_lake.root[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix + "/").get("Uploads", [])


def test_s3_cancelled_upload_keeps_the_old_object(s3_lake, s3_endpoint, tmp_path, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"A" * 1000)
    s3_lake.upload_dir(old, "checkpoints/run/step_10")
    monkeypatch.setattr(lake_module, "_CHUNK", 64 << 10)
    new = tmp_path / "new"
    new.mkdir()
    (new / "model.safetensors").write_bytes(b"B" * (300 << 10))
    _cancel_while_reading(monkeypatch, lambda name: name == "model.safetensors", after_reads=2)
    with pytest.raises(Cancelled):
        s3_lake.upload_dir(new, "checkpoints/run/step_10")
    # not a truncated "B" * 128 KiB: the multipart upload was aborted, not completed
    assert s3_lake.read_bytes("checkpoints/run/step_10/model.safetensors") == b"A" * 1000
    assert _open_uploads(s3_lake, s3_endpoint) == []


def test_s3_cancelled_parquet_writer_keeps_the_old_table(s3_lake, s3_endpoint, monkeypatch):
    import numpy as np

    s3_lake.write_parquet("clean/t.parquet", _frame())
    monkeypatch.setattr(lake_module, "_CHUNK", 16 << 10)
    big = pl.DataFrame({"x": np.random.default_rng(0).random(40_000)})  # ~300 KiB, incompressible
    _cancel_while_reading(monkeypatch, lambda name: name.startswith(".parquet-"), after_reads=2)
    with pytest.raises(Cancelled):
        with s3_lake.parquet_writer("clean/t.parquet") as w:
            w.write(big)
    assert s3_lake.read_parquet("clean/t.parquet").equals(_frame())
    assert _open_uploads(s3_lake, s3_endpoint) == []


def test_s3_large_file_goes_up_in_parts(s3_lake, s3_endpoint, tmp_path, monkeypatch):
    import hashlib

    import boto3

    monkeypatch.setattr(lake_module, "_CHUNK", 5 << 20)  # S3's smallest part
    data = os.urandom(11 << 20)
    src = tmp_path / "ckpt"
    src.mkdir()
    (src / "model.safetensors").write_bytes(data)
    s3_lake.upload_dir(src, "checkpoints/big")
    assert s3_lake.read_bytes("checkpoints/big/model.safetensors") == data
    bucket, _, prefix = s3_lake.root[len("s3://"):].partition("/")
    head = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1").head_object(
        Bucket=bucket, Key=f"{prefix}/checkpoints/big/model.safetensors")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    sums = s3_lake.read_json(f"checkpoints/big/{lake_module.CHECKSUMS}")["files"]
    assert sums == {"model.safetensors": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}


def _record_writes(monkeypatch, fail_on: str | None = None) -> list:
    """Every object write and delete of the lake, in order; the upload of `fail_on` fails."""
    events, real_put, real_write, real_delete = [], Lake._put_file, Lake.write_bytes, Lake.delete

    def put(self, local, key):
        events.append(("put", key.split("/", 1)[1]))
        if fail_on and key.endswith("/" + fail_on):
            raise ConnectionError("upload failed")
        return real_put(self, local, key)

    def write(self, key, data):
        events.append(("put", key.split("/", 1)[1]))
        return real_write(self, key, data)

    def delete(self, keys):
        events.append(("delete", sorted(k.split("/", 1)[1] for k in keys)))
        return real_delete(self, keys)

    monkeypatch.setattr(Lake, "_put_file", put)
    monkeypatch.setattr(Lake, "write_bytes", write)
    monkeypatch.setattr(Lake, "delete", delete)
    return events


def test_s3_staged_dir_uploads_data_then_index_files_then_deletes(s3_lake, monkeypatch):
    with s3_lake.staged_dir("shards") as out:
        (out / "train_a_00000.bin").write_bytes(b"old")
        (out / "manifest.json").write_text('{"v": 1}')
    events = _record_writes(monkeypatch)
    with s3_lake.staged_dir("shards") as out:
        for name in ("train_b_00000.bin", "val_x_00000.bin", "sub/a.bin", "meta.json", "report.json", "manifest.json"):
            (out / name).parent.mkdir(exist_ok=True)
            (out / name).write_text("{}")
    assert events == [("put", p) for p in ("sub/a.bin", "train_b_00000.bin", "val_x_00000.bin", "meta.json",
                                          "report.json", "manifest.json", lake_module.CHECKSUMS)] + [
        ("delete", ["train_a_00000.bin"])]
    assert s3_lake.list("shards") == [f"shards/{n}" for n in ("manifest.json", "meta.json", "report.json",
                                                              "sub/a.bin", "train_b_00000.bin", "val_x_00000.bin")]


@pytest.mark.parametrize("failing", ["train_b_00000.bin", "report.json", "manifest.json"])
def test_s3_staged_dir_failing_part_way_keeps_the_old_manifest_and_its_files(s3_lake, monkeypatch, failing):
    import json

    with s3_lake.staged_dir("shards") as out:
        (out / "train_a_00000.bin").write_bytes(b"old")
        (out / "manifest.json").write_text(json.dumps({"v": 1, "files": ["train_a_00000.bin"]}))
    _record_writes(monkeypatch, fail_on=failing)
    with pytest.raises(ConnectionError):
        with s3_lake.staged_dir("shards") as out:
            (out / "train_b_00000.bin").write_bytes(b"new")
            (out / "report.json").write_text("{}")
            (out / "manifest.json").write_text(json.dumps({"v": 2, "files": ["train_b_00000.bin"]}))
    # readers still find the old manifest, and every file it names
    assert s3_lake.read_json("shards/manifest.json") == {"v": 1, "files": ["train_a_00000.bin"]}
    assert s3_lake.read_bytes("shards/train_a_00000.bin") == b"old"


@pytest.fixture
def no_system_temp(tmp_path, monkeypatch):
    """A system temp folder nothing can be created in (in production: a small tmpfs, a full disk)."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))


def _s3_lake_at(endpoint, request, **kwargs) -> Lake:
    return Lake(f"s3://tenali-test/{request.node.name.replace('[', '_').rstrip(']')}", s3_endpoint_url=endpoint,
                **kwargs)


def test_s3_staging_lives_in_the_cache_folder(s3_endpoint, request, tmp_path, no_system_temp):
    cache = tmp_path / "cache"
    lake = _s3_lake_at(s3_endpoint, request, cache_dir=cache)
    with lake.staged_dir("shards") as out:
        assert out.is_relative_to(cache)
        (out / "train_00000.bin").write_bytes(b"a")
    with lake.parquet_writer("clean/t.parquet", schema={"a": pl.Int64}) as w:
        assert w.path.is_relative_to(cache)
        w.write(pl.DataFrame({"a": [1]}))
    assert lake.read_bytes("shards/train_00000.bin") == b"a"
    assert lake.read_parquet("clean/t.parquet")["a"].to_list() == [1]
    assert [p for p in cache.rglob("*") if p.is_file()] == []  # staged copies are gone


def test_s3_upload_dir_uploads_straight_from_the_folder(s3_endpoint, request, tmp_path, no_system_temp):
    # neither the system temp folder nor the default cache (under it) can hold a staged copy
    lake = _s3_lake_at(s3_endpoint, request)
    src = tmp_path / "step_00000010"
    src.mkdir()
    (src / "model.safetensors").write_bytes(b"weights")
    (src / "meta.json").write_text('{"step": 10}')
    lake.upload_dir(src, "checkpoints/run/step_00000010")
    assert lake.list("checkpoints/run") == ["checkpoints/run/step_00000010/meta.json",
                                            "checkpoints/run/step_00000010/model.safetensors"]
    assert lake.read_bytes("checkpoints/run/step_00000010/model.safetensors") == b"weights"


def test_s3_shard_check_reads_through_the_shard_cache(s3_endpoint, request, tmp_path, monkeypatch):
    import json

    from tenali_model.data import write_shard

    from tenali_pipeline.defs.shards.assets import shard_counts_match
    from tenali_pipeline.resources import LakeResource

    lake = _s3_lake_at(s3_endpoint, request)
    with lake.staged_dir("shards") as out:
        write_shard(out / "train_00000.bin", list(range(10)))
        write_shard(out / "val_news_00000.bin", list(range(4)))
        (out / "manifest.json").write_text(json.dumps({
            "splits": {"train": [{"file": "train_00000.bin", "tokens": 10}],
                       "val": [{"file": "val_news_00000.bin", "tokens": 4, "domain": "news"}]},
            "totals": {"train": 10, "val": 4}}))
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(blocker / "tmp"))  # no per-check temp copy
    cache = tmp_path / "cache"
    resource = LakeResource(root=lake.root, s3_endpoint_url=s3_endpoint, cache_dir=str(cache))
    result = shard_counts_match(lake=resource)
    assert result.passed, result.metadata
    assert sorted(p.name for p in (cache / "shards").iterdir()) == ["manifest.json", "train_00000.bin",
                                                                   "val_news_00000.bin"]


def test_the_resource_gives_its_lake_its_cache_folder(tmp_path):
    """What S3 writes stage (LakeResource.cache(), $TENALI_HOME/cache in the profiles), not the system
    temp folder."""
    from tenali_pipeline.resources import LakeResource
    resource = LakeResource(root=str(tmp_path / "lake"), cache_dir=str(tmp_path / "cache"))
    assert resource.lake().cache_dir == (tmp_path / "cache").absolute() == resource.cache().absolute()
