"""The trainer's Pipes uploads ride out an S3 outage (tenali_model.pipes_s3), through dagster_pipes'
own writer channel: before, one failed put_object ended its upload thread and every later message,
the final report included, was dropped."""

import json
import threading
import time

import pytest

dagster_pipes = pytest.importorskip("dagster_pipes")
botocore = pytest.importorskip("botocore")
from botocore.exceptions import ClientError, EndpointConnectionError  # noqa: E402

from tenali_model.pipes_s3 import PatientS3, is_transient  # noqa: E402


def client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


class FlakyBucket:
    """put_object fails with `failures` (in turn) before it stores anything."""

    def __init__(self, failures=()):
        self.failures = list(failures)
        self.objects: dict[str, str] = {}
        self.calls = 0

    def put_object(self, Body, Bucket, Key):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.objects[Key] = Body if isinstance(Body, str) else Body.decode()
        return {}

    def get_object(self, **kwargs):
        return "passed through"


def run_channel(client, messages: int) -> None:
    """dagster_pipes' S3 writer channel as the trainer uses it: messages written while the upload
    thread runs (interval 0: a chunk per second), then the session closed."""
    channel = dagster_pipes.PipesS3MessageWriterChannel(client=client, bucket="pipes", key_prefix="m", interval=0)
    with channel.buffered_upload_loop():
        for i in range(messages):
            channel.write_message({"__dagster_pipes_version": "0.1", "method": "log", "params": {"i": i}})
            time.sleep(0.4)


def delivered(bucket: FlakyBucket) -> list[int]:
    keys = sorted(bucket.objects, key=lambda k: int(k.split("/")[1].split(".")[0]))
    assert keys == [f"m/{i}.json" for i in range(1, len(keys) + 1)], "chunk numbers must have no gap"
    return [json.loads(line)["params"]["i"] for k in keys for line in bucket.objects[k].split("\n")]


def test_every_message_arrives_in_order_through_an_outage(capsys):
    bucket = FlakyBucket([EndpointConnectionError(endpoint_url="http://s3"), client_error("SlowDown", 503),
                          client_error("InternalError", 500)])
    run_channel(PatientS3(bucket, first_delay=0.05), messages=5)
    assert delivered(bucket) == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert err.count("retrying in") == 3 and "training goes on" in err and "again after 3 failed" in err


def test_without_it_the_first_outage_loses_the_rest():
    """What dagster_pipes does alone: the thread dies with the first failed upload."""
    bucket = FlakyBucket([EndpointConnectionError(endpoint_url="http://s3")])
    seen = []
    old_hook = threading.excepthook
    threading.excepthook = lambda args: seen.append(args.exc_type)
    try:
        run_channel(bucket, messages=4)
    finally:
        threading.excepthook = old_hook
    assert seen == [EndpointConnectionError] and bucket.objects == {}


def test_a_permanent_refusal_is_raised_at_once_with_the_fix(capsys):
    bucket = FlakyBucket([client_error("AccessDenied", 403)])
    with pytest.raises(ClientError):
        PatientS3(bucket, first_delay=0.05).put_object(Body="x", Bucket="pipes", Key="m/1.json")
    assert bucket.calls == 1
    assert "s3:PutObject" in capsys.readouterr().err


@pytest.mark.parametrize("error,transient", [
    (EndpointConnectionError(endpoint_url="http://s3"), True),
    (client_error("SlowDown", 503), True),
    (client_error("TooManyRequests", 429), True),
    (client_error("RequestTimeout", 400), True),
    (client_error("AccessDenied", 403), False),
    (client_error("NoSuchBucket", 404), False),
    (ValueError("not botocore"), False),
])
def test_transient_or_not(error, transient):
    assert is_transient(error) is transient


def test_other_calls_pass_through():
    assert PatientS3(FlakyBucket()).get_object(Bucket="b", Key="k") == "passed through"


def test_the_trainers_pipes_client_bounds_each_call_within_the_last_uploads_60_s():
    """dagster_pipes waits 60 s for the upload thread when the run ends; with boto3's defaults (60 s to
    connect, 5 attempts) one hung connection took all of it, and the final report with it."""
    boto3 = pytest.importorskip("boto3")
    from tenali_model.pipes_s3 import pipes_s3_config

    config = boto3.client("s3", region_name="us-east-1", config=pipes_s3_config()).meta.config
    assert config.retries["total_max_attempts"] * (config.connect_timeout + config.read_timeout) < 60
