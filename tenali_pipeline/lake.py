"""Where data lives: one lake root, a local folder by default and an ``s3://`` prefix in production.

Every stage reads and writes through `Lake`, never by building paths itself, so switching the
profile from demo to prod moves the whole graph to S3 without touching asset code. Writes are atomic:
locally a temporary name in the same folder then a rename; on S3 one object upload, which S3 makes
visible all at once. Re-writing a key replaces it, so re-running a partition leaves no duplicates.

Folders on S3 (shards, checkpoints): files are streamed up in chunks (Arrow's S3 output stream sends
them as multipart uploads, so a multi-GB checkpoint never sits in memory) and their sha256 sums are
written last into ``<folder>/.tenali-sha256.json``; `download_dir` verifies every downloaded file
against it (one retry, then an error naming the file) and writes it atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from tenali_model.config import atomic_write_bytes


class ParquetAppender:
    """Appends polars frames to one local Parquet file as row groups (zstd). The schema is ``schema``
    when given (an empty table is still a valid file), else the first frame's."""

    def __init__(self, path: Path, schema: pl.Schema | dict | None = None):
        self.path, self._writer, self.rows = path, None, 0
        self._schema = pl.DataFrame(schema=schema).to_arrow().schema if schema is not None else None

    def _open(self, schema) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self.path, schema, compression="zstd")

    def write(self, df: pl.DataFrame) -> None:
        table = df.to_arrow()
        if self._writer is None:
            self._open(self._schema if self._schema is not None else table.schema)
        if df.is_empty():
            return
        if table.schema != self._writer.schema:
            table = table.select(self._writer.schema.names).cast(self._writer.schema)
        self._writer.write_table(table)
        self.rows += df.height

    def close(self) -> None:
        if self._writer is None and self._schema is not None:
            self._open(self._schema)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._schema = None  # closed: a second close adds nothing


CHECKSUMS = ".tenali-sha256.json"  # per-folder sha256 sums on S3 (staged_dir / download_dir)
_CHUNK = 8 << 20


class ChecksumError(OSError):
    """A downloaded file does not match the sha256 recorded when its folder was uploaded."""


class Lake:
    """A key space rooted at a local folder or an S3 prefix.

    Keys are slash-separated relative paths such as ``"clean/market/prices.parquet"``.
    """

    def __init__(self, root: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None):
        self.root = root.rstrip("/") if root.startswith("s3://") else str(Path(root).expanduser().absolute())
        self.is_local = not self.root.startswith("s3://")
        if self.is_local:
            self._fs: pafs.FileSystem = pafs.LocalFileSystem()
            self._base = self.root
        else:
            bucket_prefix = self.root[len("s3://") :]
            kwargs: dict = {}
            if s3_endpoint_url:
                scheme, _, host = s3_endpoint_url.partition("://")
                kwargs.update(endpoint_override=host or scheme, scheme=scheme if host else "https")
            if s3_region:
                kwargs["region"] = s3_region
            self._fs = pafs.S3FileSystem(**kwargs)
            self._base = bucket_prefix

    # ---- keys -------------------------------------------------------------------------------
    def uri(self, key: str) -> str:
        """The full address of `key`, for metadata and for readers outside this class."""
        return f"{self.root}/{key}" if not self.is_local else str(Path(self.root, key))

    def _path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"lake keys are relative paths without '..': {key!r}")
        return f"{self._base}/{key}"

    def exists(self, key: str) -> bool:
        return self._fs.get_file_info(self._path(key)).type != pafs.FileType.NotFound

    def list(self, prefix: str) -> list[str]:
        """Keys of the files under `prefix`, sorted."""
        selector = pafs.FileSelector(self._path(prefix), recursive=True, allow_not_found=True)
        base = self._base + "/"
        return sorted(
            info.path[len(base) :] for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.File and not info.path.endswith("/" + CHECKSUMS)
        )

    def delete(self, keys: list[str]) -> None:
        """Remove these files (those already gone are skipped)."""
        for key in keys:
            try:
                self._fs.delete_file(self._path(key))
            except FileNotFoundError:
                pass

    # ---- bytes ------------------------------------------------------------------------------
    def write_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        if self.is_local:
            atomic_write_bytes(Path(path), data)
        else:
            with self._fs.open_output_stream(path, compression=None) as out:  # bytes as given, even for .gz
                out.write(data)
        return self.uri(key)

    def read_bytes(self, key: str) -> bytes:
        try:
            with self._fs.open_input_stream(self._path(key), compression=None) as f:
                return f.read()
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{self.uri(key)} does not exist: materialise the asset that writes it first."
            ) from e

    def write_json(self, key: str, obj) -> str:
        return self.write_bytes(key, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, key: str):
        return json.loads(self.read_bytes(key))

    # ---- tables -----------------------------------------------------------------------------
    def write_parquet(self, key: str, df: pl.DataFrame, *, row_group_size: int | None = None) -> str:
        """``row_group_size`` (rows): set it for tables read back in batches (`iter_parquet` reads a row
        group at a time, so its size bounds the reader's memory)."""
        buf = io.BytesIO()
        df.write_parquet(buf, compression="zstd", statistics=True, row_group_size=row_group_size)
        return self.write_bytes(key, buf.getvalue())

    @contextlib.contextmanager
    def parquet_writer(self, key: str, *, schema: pl.Schema | dict | None = None) -> Iterator[ParquetAppender]:
        """Yield an appender whose ``write(df)`` adds one row group to the table at `key`; the table
        appears at `key` only when the block ends without error (a local temporary file, renamed or
        uploaded in one go), so a table larger than memory is written without holding it. The local
        file lives beside the target on a local lake, in the system temp folder for S3. ``schema``
        makes an empty table a valid file."""
        target = Path(self._path(key)) if self.is_local else None
        folder = target.parent if target is not None else None
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".parquet-", suffix=".tmp", dir=folder)
        os.close(fd)
        appender = ParquetAppender(Path(tmp), schema)
        try:
            yield appender
            appender.close()
            if target is not None:
                os.replace(tmp, target)
            else:
                self._put_file(Path(tmp), key)
        finally:
            appender.close()
            if os.path.exists(tmp):
                os.unlink(tmp)

    def parquet_rows(self, key: str) -> int:
        """Rows of the table at `key`, from its footer (nothing else is read)."""
        with self._fs.open_input_file(self._path(key)) as f:
            return pq.ParquetFile(f).metadata.num_rows

    def parquet_schema(self, key: str) -> pl.Schema:
        """The polars schema of the table at `key`, from its footer."""
        with self._fs.open_input_file(self._path(key)) as f:
            return pl.from_arrow(pq.ParquetFile(f).schema_arrow.empty_table()).schema

    def iter_parquet(self, key: str, batch_rows: int = 10_000, columns: list[str] | None = None) -> Iterator[pl.DataFrame]:
        """The table at `key` in batches of at most ``batch_rows`` rows, a row group at a time."""
        try:
            f = self._fs.open_input_file(self._path(key))
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{self.uri(key)} does not exist: materialise the asset that writes it first."
            ) from e
        with f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=columns):
                yield pl.from_arrow(batch)

    def read_parquet(self, key: str) -> pl.DataFrame:
        try:
            table = pq.read_table(self._path(key), filesystem=self._fs)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{self.uri(key)} does not exist: materialise the asset that writes it first."
            ) from e
        return pl.from_arrow(table)

    def read_parquet_files(self, keys: list[str], schema: pl.Schema | dict | None = None) -> pl.DataFrame:
        """Many small tables with the same columns as one (a folder of daily files): read by one Arrow
        dataset, which fetches the files concurrently (on S3 too). No keys: an empty `schema` table."""
        if not keys:
            return pl.DataFrame(schema=schema)
        import pyarrow.dataset as pads

        try:
            table = pads.dataset([self._path(k) for k in keys], filesystem=self._fs, format="parquet").to_table()
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e}: a file listed under {self.uri(keys[0].rsplit('/', 1)[0])} vanished "
                                    "while it was read (a run rewriting it?); read again") from e
        return pl.from_arrow(table)

    # ---- folders of files (tokenizer, shards, checkpoints) ------------------------------------
    @contextlib.contextmanager
    def staged_dir(self, key: str) -> Iterator[Path]:
        """Yield a local folder to fill; on success it replaces the folder at `key` as a whole.

        Locally the swap is two renames, so readers never see half a folder; on S3 each file is
        one PUT and stale files under the prefix are removed afterwards. On error nothing changes.
        """
        if self.is_local:
            target = Path(self._path(key))
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
            try:
                yield tmp
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
                if target.exists():
                    target.rename(old)
                try:
                    tmp.rename(target)
                except BaseException:
                    if old.exists():  # put the previous folder back: never lose the key
                        old.rename(target)
                    raise
                shutil.rmtree(old, ignore_errors=True)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            with tempfile.TemporaryDirectory(prefix="tenali-stage-") as tmp:
                yield Path(tmp)
                sums = {}
                for f in sorted(Path(tmp).rglob("*")):
                    if f.is_file():
                        rel = f.relative_to(tmp).as_posix()
                        sums[rel] = {"sha256": self._put_file(f, f"{key}/{rel}"), "size": f.stat().st_size}
                self.write_json(f"{key}/{CHECKSUMS}", {"files": sums})
                for stale in set(self.list(key)) - {f"{key}/{rel}" for rel in sums}:
                    self._fs.delete_file(self._path(stale))

    def _put_file(self, local: Path, key: str) -> str:
        """Stream a local file to `key` in chunks; returns its sha256."""
        digest = hashlib.sha256()
        with open(local, "rb") as src, self._fs.open_output_stream(self._path(key), compression=None) as out:
            while chunk := src.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        return digest.hexdigest()

    def _get_file(self, key: str, out: Path, expected: str | None) -> None:
        """Stream `key` into `out` atomically, checking the sha256 when one was recorded (one retry)."""
        out.parent.mkdir(parents=True, exist_ok=True)
        for attempt in (1, 2):
            digest = hashlib.sha256()
            fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
            try:
                with os.fdopen(fd, "wb") as dst, self._fs.open_input_stream(self._path(key), compression=None) as src:
                    while chunk := src.read(_CHUNK):
                        digest.update(chunk)
                        dst.write(chunk)
                    dst.flush()
                    os.fsync(dst.fileno())
                if expected is None or digest.hexdigest() == expected:
                    os.replace(tmp, out)
                    return
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        raise ChecksumError(
            f"{self.uri(key)}: sha256 {digest.hexdigest()} does not match {expected} recorded in "
            f"{CHECKSUMS} when its folder was uploaded (changed outside the pipeline or corrupted): "
            "re-materialise the asset that writes it.")

    def local_dir(self, key: str) -> Path:
        """The local folder for `key`; a local lake only (training reads shards by path)."""
        if not self.is_local:
            raise ValueError(
                f"{self.uri(key)} is on S3: use Lake.download_dir to fetch it to a local folder first."
            )
        return Path(self._path(key))

    def download_dir(self, key: str, dest: Path) -> Path:
        """A local folder holding exactly the files under `key`: the lake's own folder when the lake
        is local, else `dest`, synced from S3. A cached file is kept only when its size and
        modification time match the object's (downloads are stamped with the object's time), so
        retries reuse the cache while a rebuilt shard or manifest is always fetched again; files no
        longer in the lake are removed."""
        if self.is_local:
            return self.local_dir(key)
        base = self._path(key) + "/"
        infos = [i for i in self._fs.get_file_info(pafs.FileSelector(self._path(key), recursive=True,
                                                                     allow_not_found=True))
                 if i.type == pafs.FileType.File and not i.path.endswith("/" + CHECKSUMS)]
        sums = self.read_json(f"{key}/{CHECKSUMS}")["files"] if self.exists(f"{key}/{CHECKSUMS}") else {}
        wanted = set()
        for info in infos:
            rel = info.path[len(base) :]
            out = dest / rel
            wanted.add(out)
            mtime = info.mtime.timestamp() if info.mtime else None
            if out.exists() and out.stat().st_size == info.size and mtime and abs(out.stat().st_mtime - mtime) < 1e-3:
                continue
            self._get_file(info.path[len(self._base) + 1 :], out, sums.get(rel, {}).get("sha256"))
            if mtime:
                os.utime(out, (mtime, mtime))
        if dest.exists():
            for stale in [p for p in dest.rglob("*") if p.is_file() and p not in wanted]:
                stale.unlink()
        return dest

    def upload_dir(self, local: Path, key: str) -> str:
        """Put the files of a local folder under `key` (nothing to do when it is already there)."""
        if self.is_local and Path(self._path(key)).resolve() == local.resolve():
            return self.uri(key)
        with self.staged_dir(key) as out:
            shutil.copytree(local, out, dirs_exist_ok=True)
        return self.uri(key)
