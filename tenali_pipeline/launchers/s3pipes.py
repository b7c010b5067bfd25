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

from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader


class PrefixedS3MessageReader(PipesS3MessageReader):
    """`PipesS3MessageReader` writing under a prefix, with the trainer's stdout/stderr forwarded."""

    def __init__(self, *, bucket: str, prefix: str, client, interval: float = 5):
        super().__init__(bucket=bucket, client=client, interval=interval, include_stdio_in_messages=True)
        self.prefix = prefix.strip("/")

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
