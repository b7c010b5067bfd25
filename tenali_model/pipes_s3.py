"""The S3 client the trainer's Dagster Pipes writer uploads through, made patient.

dagster_pipes uploads message chunks from a background thread; one failed ``put_object`` (the endpoint
unreachable past boto3's own retries, S3 answering 503 SlowDown for a while) ends that thread, and every
later message is dropped, the final report included: Dagster then fails a run whose checkpoint was
written, as "exited without reporting", after days of training. Here a transient failure is retried in
place, with backoff and without limit, while training goes on (messages wait in the writer's buffer);
a permanent one (access denied, no such bucket) is raised at once, as before. At the end of the run
dagster_pipes waits 60 s for the thread, so an outage that outlasts that still loses the report: the
stderr lines below say so, and the checkpoint is on disk either way.
"""

from __future__ import annotations

import sys
import time
from typing import Any

# S3 answers that mean "try again later" rather than "this will never work".
TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "RequestLimitExceeded"}


def pipes_s3_config():
    """botocore settings for the trainer's Pipes client: each call bounded (5 s to connect, 20 s to read,
    2 attempts), where boto3's defaults (60 s, 60 s, 5 attempts) let one hung connection take the whole
    60 s that dagster_pipes waits for the last upload when the run ends; PatientS3 retries past that."""
    from botocore.config import Config

    return Config(connect_timeout=5, read_timeout=20, retries={"total_max_attempts": 2, "mode": "standard"})


def is_transient(error: Exception) -> bool:
    """Whether a botocore error from put_object is worth retrying."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(error, BotoCoreError):  # connection refused or reset, timeouts, DNS: the network
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or error.response.get("Error", {}).get("Code") in TRANSIENT_CODES
    return False


class PatientS3:
    """A boto3 S3 client whose ``put_object`` retries transient failures (1 s, doubling to 60 s)."""

    def __init__(self, client: Any, first_delay: float = 1.0, max_delay: float = 60.0):
        self._client = client
        self._first_delay, self._max_delay = first_delay, max_delay

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def put_object(self, **kwargs: Any) -> Any:
        delay, failures = self._first_delay, 0
        while True:
            try:
                result = self._client.put_object(**kwargs)
            except Exception as e:  # noqa: BLE001 - sorted by is_transient, re-raised when permanent
                if not is_transient(e):
                    print(f"tenali_model.train: error: cannot write the Dagster report to "
                          f"s3://{kwargs.get('Bucket')}/{kwargs.get('Key')} ({type(e).__name__}: {e}); "
                          "Dagster will not see this run's results: check the task role's s3:PutObject "
                          "on the Pipes bucket", file=sys.stderr, flush=True)
                    raise
                failures += 1
                print(f"tenali_model.train: warning: writing the Dagster report to s3://{kwargs.get('Bucket')}/"
                      f"{kwargs.get('Key')} failed ({type(e).__name__}: {e}); retrying in {delay:.0f} s "
                      "(training goes on)", file=sys.stderr, flush=True)
                time.sleep(delay)
                delay = min(delay * 2, self._max_delay)
                continue
            if failures:
                print(f"tenali_model.train: the Dagster report reached s3://{kwargs.get('Bucket')} again after "
                      f"{failures} failed attempt(s)", file=sys.stderr, flush=True)
            return result
