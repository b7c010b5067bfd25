"""Dagster Pipes through S3 for the cluster launchers (needs the ``aws`` extra: dagster-aws, boto3).

Context and message chunks live under ``<prefix>/context/`` and ``<prefix>/messages/`` of the
bucket, so one lifecycle rule expires them (infra/aws/s3-lifecycle.json); dagster-aws would put
message chunks at the bucket root.
"""

from __future__ import annotations

import random
import string
from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader


class PrefixedS3MessageReader(PipesS3MessageReader):
    """`PipesS3MessageReader` writing under a prefix, with the trainer's stdout/stderr forwarded."""

    def __init__(self, *, bucket: str, prefix: str, client, interval: float = 5):
        super().__init__(bucket=bucket, client=client, interval=interval, include_stdio_in_messages=True)
        self.prefix = prefix.strip("/")

    def messages_are_readable(self, params) -> bool:
        try:
            return super().messages_are_readable(params)
        except BotoCoreError:  # S3 unreachable for longer than boto3's own retries: ask again next poll
            return False

    def download_messages_chunk(self, index: int, params) -> str | None:
        """The chunk, or None when it is not there yet. dagster-aws treats only an S3 error answer
        so; a connection error (endpoint unreachable, read timeout) would end the reader thread, and
        the trainer's report, days later, would never be read. Here it is tried again next poll."""
        try:
            return super().download_messages_chunk(index, params)
        except BotoCoreError:
            return None

    @contextmanager
    def get_params(self) -> Iterator[dict]:
        with super().get_params() as params:
            key = "".join(random.choices(string.ascii_letters, k=30))
            yield {**params, "key_prefix": f"{self.prefix}/messages/{key}" if self.prefix else key}


def s3_pipes(bucket: str, prefix: str, client, interval: float = 5):
    """(context injector, message reader) on S3 under `prefix`."""
    injector = PipesS3ContextInjector(bucket=bucket, client=client,
                                      key_prefix=f"{prefix.strip('/')}/context/" if prefix else None)
    return injector, PrefixedS3MessageReader(bucket=bucket, prefix=prefix, client=client, interval=interval)
