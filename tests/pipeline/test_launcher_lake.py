"""How launched training moves folders through an S3 lake (moto on 127.0.0.1): checkpoints and shards
go up as multipart uploads streamed in chunks, with sha256 sums that every download verifies."""

import hashlib

import numpy as np
import pytest
from launcher_fakes import BUCKET, s3  # noqa: F401

from tenali_pipeline.lake import CHECKSUMS, ChecksumError, Lake


@pytest.fixture
def lake(s3):
    endpoint, _ = s3
    return Lake(f"s3://{BUCKET}/lake", s3_endpoint_url=endpoint)


def test_a_checkpoint_folder_goes_up_in_parts_and_comes_back_verified(lake, s3, tmp_path):
    _, client = s3
    big = np.random.default_rng(0).integers(0, 255, size=(21 << 20), dtype=np.uint8).tobytes()  # > 2 parts
    src = tmp_path / "step_00000010"
    src.mkdir()
    (src / "model.safetensors").write_bytes(big)
    (src / "meta.json").write_text('{"step": 10}')
    lake.upload_dir(src, "checkpoints/pretrain/run/step_00000010")
    head = client.head_object(Bucket=BUCKET, Key="lake/checkpoints/pretrain/run/step_00000010/model.safetensors")
    assert head["ContentLength"] == len(big)
    assert "-" in head["ETag"] and int(head["ETag"].strip('"').split("-")[1]) >= 2  # a multipart upload
    sums = lake.read_json(f"checkpoints/pretrain/run/step_00000010/{CHECKSUMS}")["files"]
    assert sums["model.safetensors"] == {"sha256": hashlib.sha256(big).hexdigest(), "size": len(big)}
    # the checksum file is bookkeeping: listings and downloads show the folder's own files only
    assert lake.list("checkpoints/pretrain/run") == ["checkpoints/pretrain/run/step_00000010/meta.json",
                                                     "checkpoints/pretrain/run/step_00000010/model.safetensors"]
    out = lake.download_dir("checkpoints/pretrain/run/step_00000010", tmp_path / "dl")
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "model.safetensors"]
    assert (out / "model.safetensors").read_bytes() == big


def test_a_file_changed_behind_the_lakes_back_fails_the_download(lake, s3, tmp_path):
    _, client = s3
    with lake.staged_dir("shards") as out:
        (out / "train_00000.bin").write_bytes(b"0123456789")
    client.put_object(Bucket=BUCKET, Key="lake/shards/train_00000.bin", Body=b"9876543210")  # same size
    with pytest.raises(ChecksumError, match=r"train_00000\.bin: sha256 .* does not match"):
        lake.download_dir("shards", tmp_path / "cache")
    assert not (tmp_path / "cache" / "train_00000.bin").exists()  # nothing half-trusted left behind
    with lake.staged_dir("shards") as out:  # re-materialised: verified again
        (out / "train_00000.bin").write_bytes(b"abcdefghij")
    assert (lake.download_dir("shards", tmp_path / "cache") / "train_00000.bin").read_bytes() == b"abcdefghij"
