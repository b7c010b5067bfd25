"""Dagster Pipes through S3 for the cluster launchers (needs the ``aws`` extra: dagster-aws, boto3).

Context and message chunks live under ``<prefix>/context/`` and ``<prefix>/messages/`` of the
bucket, so one lifecycle rule expires them (infra/aws/s3-lifecycle.json); dagster-aws would put
message chunks at the bucket root.
"""

from __future__ import annotations

import logging
import random
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from botocore.exceptions import BotoCoreError
from dagster_aws.pipes import PipesS3ContextInjector, PipesS3MessageReader

log = logging.getLogger(__name__)


class PrefixedS3MessageReader(PipesS3MessageReader):
    """`PipesS3MessageReader` writing under a prefix, with the trainer's stdout/stderr forwarded."""

    def __init__(self, *, bucket: str, prefix: str, client, interval: float = 5):
        super().__init__(bucket=bucket, client=client, interval=interval, include_stdio_in_messages=True)
        self.prefix = prefix.strip("/")

    # A connection error (endpoint unreachable, read timeout: boto3's own retries spent) is retried
    # here, in place, for up to OUTAGE_SECONDS. Dagster's reader gives up WAIT_FOR_LOGS_AFTER_EXECUTION_
    # INTERVAL (10 s) after the task ends, so an outage then, answered "not there yet", would lose the
    # trainer's final report; Dagster's join waits 120 s, hence the bound (60 s, plus one call of at
    # most 50 s: common.s3_client's timeouts).
    OUTAGE_SECONDS = 60.0
    FIRST_DELAY = 0.5

    def _through_outages(self, what: str, call: Callable[[], object], unreachable: object) -> object:
        delay, deadline = self.FIRST_DELAY, time.monotonic() + self.OUTAGE_SECONDS
        while True:
            try:
                return call()
            except BotoCoreError as e:
                if time.monotonic() + delay > deadline:
                    log.warning("S3 bucket %s still unreachable while %s after %.0f s (%s: %s); the reader "
                                "tries again at its next poll", self.bucket, what, self.OUTAGE_SECONDS,
                                type(e).__name__, e)
                    return unreachable
                log.info("S3 bucket %s unreachable while %s (%s); retrying in %.1f s",
                         self.bucket, what, type(e).__name__, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def messages_are_readable(self, params) -> bool:
        return bool(self._through_outages("looking for the first message chunk",
                                          lambda: super(PrefixedS3MessageReader, self).messages_are_readable(params),
                                          False))

    def download_messages_chunk(self, index: int, params) -> str | None:
        """The chunk, or None when it is not there yet. dagster-aws treats only an S3 error answer
        so; a connection error would end the reader thread, and the trainer's report, days later,
        would never be read. Here it is retried (see OUTAGE_SECONDS), then tried again next poll."""
        return self._through_outages(
            f"reading message chunk {index}",
            lambda: super(PrefixedS3MessageReader, self).download_messages_chunk(index, params), None)

    def download_messages(self, cursor, params):
        """Every chunk there now, not one: dagster-aws reads one chunk a poll while the trainer writes
        one about as often, so a reader that fell behind (an outage, a slow poll) stayed behind for the
        rest of a days-long run, and the final report, more than ten chunks back when the task ended,
        was never read (Dagster drains for only 10 s after that)."""
        chunks = []
        while (chunk := self.download_messages_chunk(self.counter, params)) is not None:
            chunks.append(chunk)
            self.counter += 1
        return (self.counter, "\n".join(chunks)) if chunks else None

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
