"""Where data lives: one lake root, a local folder by default and an ``s3://`` prefix in production.

Every stage reads and writes through `Lake`, never by building paths itself, so switching the
profile from demo to prod moves the whole graph to S3 without touching asset code. Writes are atomic:
locally a temporary name in the same folder then a rename; on S3 one object upload, which S3 makes
visible all at once. Re-writing a key replaces it, so re-running a partition leaves no duplicates.

Folders on S3 (shards, checkpoints): files go up from local disk through boto3, as S3 multipart
uploads of `_CHUNK`-sized parts (a multi-GB checkpoint never sits in memory) that are aborted on any
error or cancel, so a failed upload never replaces an object (`Lake._put_file`). Their sha256 sums
are written last into ``<folder>/.tenali-sha256.json``; `download_dir` verifies every downloaded file
against it (one retry, then an error naming the file) and writes it atomically. What is and is not
atomic for a whole folder on S3: see `Lake.staged_dir`.
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
from concurrent.futures import ThreadPoolExecutor
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
_CHUNK = 8 << 20  # read size, and S3 multipart part size (S3 wants >= 5 MiB parts, at most 10,000 of them)
_UPLOAD_THREADS = 4  # parts of one file in flight at once (memory: about this many parts)
_INDEX_LAST = ("report.json", "manifest.json")  # uploaded after every other file of a staged folder, in this order


def _upload_order(rel: str) -> tuple:
    """Sort key for a staged folder's files on S3: data files first, then the files that describe them
    (``*.json``: meta/config, then report.json, then manifest.json last), so a reader that finds a new
    index file also finds every file it names."""
    name = rel.rsplit("/", 1)[-1]
    return (2 + _INDEX_LAST.index(name) if name in _INDEX_LAST else int(name.endswith(".json"))), rel


class ChecksumError(OSError):
    """A downloaded file does not match the sha256 recorded when its folder was uploaded."""


class Lake:
    """A key space rooted at a local folder or an S3 prefix.

    Keys are slash-separated relative paths such as ``"clean/market/prices.parquet"``.
    """

    def __init__(self, root: str, *, s3_endpoint_url: str | None = None, s3_region: str | None = None,
                 cache_dir: str | os.PathLike | None = None):
        """``cache_dir``: the local folder for files on their way to or from S3 (staged folders, Parquet
        files being written); LakeResource's cache. Unset: the same default as LakeResource.cache()."""
        self.root = root.rstrip("/") if root.startswith("s3://") else str(Path(root).expanduser().absolute())
        self.is_local = not self.root.startswith("s3://")
        self.cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "tenali-cache").expanduser().absolute()
        self._s3_endpoint_url, self._s3_region, self._s3_client = s3_endpoint_url, s3_region, None
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
            # One write of the whole payload before close, so even a cancel that lands here completes the
            # object with all of `data` (files are streamed by `_put_file` instead, which can abort).
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
        file lives beside the target on a local lake, in the cache's staging folder for S3, where the
        upload (`_put_file`) is aborted on error: a failed or cancelled write leaves the old table.
        ``schema`` makes an empty table a valid file."""
        target = Path(self._path(key)) if self.is_local else None
        folder = target.parent if target is not None else self._staging()
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
    def _staging(self) -> Path:
        """Where S3 writes stage their local files: under the cache folder, which is sized for shards
        and checkpoints, unlike the system temp folder (often a small tmpfs or container layer)."""
        return self.cache_dir / ".staging"

    @contextlib.contextmanager
    def staged_dir(self, key: str) -> Iterator[Path]:
        """Yield a local folder to fill; on success it replaces the folder at `key`. On error inside the
        block nothing is written.

        Locally the swap is two renames, so readers see the old folder or the new one, never a mix, and
        a failed swap puts the old folder back.

        On S3 there is no folder to swap; what holds (see `_upload_tree`): each object is replaced
        whole or not at all (a failed upload is aborted, the old object stays); data files go up
        first, then ``*.json`` files with ``manifest.json`` last, then the checksum file, and files
        of the old version that the new one lacks are deleted only after all of that succeeded. So a
        reader that finds a new manifest finds every file it names. Not atomic: while the upload
        runs, and after it fails part-way, the folder mixes new data files (those sharing a name
        with old ones replace them) with the old index files; `download_dir` then fails the
        replaced files' checksums, and the next successful run completes the folder. The local copy
        is staged under the cache folder (``cache_dir``).
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
            self._staging().mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix="stage-", dir=self._staging()))
            try:
                yield tmp
                self._upload_tree(tmp, key)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def _upload_tree(self, local: Path, key: str) -> None:
        """Make the S3 folder at `key` hold exactly the files of `local`, in the order `staged_dir`
        documents: data files, ``*.json`` (manifest.json last), the checksum file, then deletions."""
        files = sorted((f.relative_to(local).as_posix() for f in local.rglob("*") if f.is_file()), key=_upload_order)
        sums = {}
        for rel in files:
            sums[rel] = {"sha256": self._put_file(local / rel, f"{key}/{rel}"), "size": (local / rel).stat().st_size}
        self.write_json(f"{key}/{CHECKSUMS}", {"files": sums})
        self.delete(sorted(set(self.list(key)) - {f"{key}/{rel}" for rel in sums}))

    def _s3(self):
        """The boto3 S3 client for uploads (created once, thread-safe)."""
        if self._s3_client is None:
            try:
                import boto3
            except ImportError as e:
                raise ImportError(
                    f"writing files to the S3 lake {self.root} needs boto3 (aborts failed multipart uploads "
                    "so they never replace an object): pip install 'tenali[aws]'") from e
            url = self._s3_endpoint_url
            if url and "://" not in url:
                url = f"https://{url}"  # as the Arrow filesystem reads a bare host
            self._s3_client = boto3.client("s3", endpoint_url=url or None, region_name=self._s3_region or None)
        return self._s3_client

    def _put_file(self, local: Path, key: str) -> str:
        """Upload a local file to `key`, read in chunks; returns its sha256.

        Not through Arrow's S3 output stream: closing it, which its ``with`` block always does, even on
        an exception, COMPLETES the multipart upload with whatever was written, so an interrupted
        upload (a Dagster cancel) would replace a good object with a truncated one. Here a file up to
        `_CHUNK` is one PUT, a larger one a multipart upload that is completed only after every part
        went up, and aborted on any error or cancel (BaseException), so the old object stays; parts
        left by a killed process are removed by the bucket's AbortIncompleteMultipartUpload rule
        (infra/aws/s3-lifecycle.json). A temporary key plus a server-side copy would also work, but
        S3 copies one object of at most 5 GB and the copy doubles the writes of a checkpoint. boto3's
        own `upload_file` (s3transfer) aborts on an error in its threads but cancels its transfer only
        on KeyboardInterrupt; Dagster's cancel raises DagsterExecutionInterruptedError (a
        BaseException), which would leave its threads completing the upload.
        """
        s3 = self._s3()
        bucket, _, name = self._path(key).partition("/")
        digest = hashlib.sha256()
        size = os.stat(local).st_size
        with open(local, "rb") as src:
            if size <= _CHUNK:
                data = src.read()
                digest.update(data)
                s3.put_object(Bucket=bucket, Key=name, Body=data)
                return digest.hexdigest()
            # as boto3's upload_file does: CRC32 per part unless checksums are set to "when_required"
            checksums = getattr(s3.meta.config, "request_checksum_calculation", None)
            extra = {"ChecksumAlgorithm": "CRC32"} if checksums == "when_supported" else {}
            part_size = max(_CHUNK, -(-size // 10_000))
            upload_id = s3.create_multipart_upload(Bucket=bucket, Key=name, **extra)["UploadId"]
            pool, futures = ThreadPoolExecutor(_UPLOAD_THREADS, thread_name_prefix="lake-upload"), []
            try:
                while chunk := src.read(part_size):
                    digest.update(chunk)
                    futures.append(pool.submit(s3.upload_part, Bucket=bucket, Key=name, UploadId=upload_id,
                                               PartNumber=len(futures) + 1, Body=chunk, **extra))
                    del chunk
                    if len(futures) > _UPLOAD_THREADS:  # bound memory: wait for the part before the window
                        futures[-_UPLOAD_THREADS - 1].result()
                parts = []
                for number, future in enumerate(futures, 1):
                    response = future.result()
                    parts.append({"PartNumber": number, "ETag": response["ETag"],
                                  **{k: response[k] for k in ("ChecksumCRC32",) if k in response}})
                s3.complete_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id,
                                             MultipartUpload={"Parts": parts})
            except BaseException:
                for future in futures:
                    future.cancel()
                pool.shutdown(wait=True)  # parts still in flight finish first, so the abort removes them all
                with contextlib.suppress(Exception):  # the lifecycle rule cleans up if this fails too
                    s3.abort_multipart_upload(Bucket=bucket, Key=name, UploadId=upload_id)
                raise
            finally:
                pool.shutdown(wait=True)
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
        """Put the files of a local folder under `key` (nothing to do when it is already there), with
        `staged_dir`'s guarantees."""
        if self.is_local and Path(self._path(key)).resolve() == local.resolve():
            return self.uri(key)
        if not self.is_local:  # straight from `local`: a staged copy of a multi-GB checkpoint buys nothing
            self._upload_tree(local, key)
            return self.uri(key)
        with self.staged_dir(key) as out:
            shutil.copytree(local, out, dirs_exist_ok=True)
        return self.uri(key)
