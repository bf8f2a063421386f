"""Where the test session's S3 server comes from (see ``conftest.s3_endpoint``).

``REWIND_TEST_S3_ENDPOINT`` (a running S3-compatible server taking the keys below) when set;
otherwise rewind's own S3Proxy (``rewind s3 start``) in a throw-away ``REWIND_HOME``, stopped when
the session ends. Each test gets a bucket of its own.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

ACCESS_KEY = os.environ.get("REWIND_TEST_S3_ACCESS_KEY", "rewind-local")
SECRET_KEY = os.environ.get("REWIND_TEST_S3_SECRET_KEY", "rewind-local-secret")


@contextmanager
def session_s3() -> Iterator[str]:
    explicit = os.environ.get("REWIND_TEST_S3_ENDPOINT")
    if explicit:
        yield explicit
        return
    from rewind.ground.settings import load_settings
    from rewind.s3_local import LocalS3

    with tempfile.TemporaryDirectory(prefix="rewind-test-s3-") as home:
        server = LocalS3(load_settings(environ={"REWIND_HOME": home}))
        status = server.start(timeout=90)
        assert status.endpoint
        try:
            yield status.endpoint
        finally:
            server.stop()


def s3_client(endpoint: str) -> object:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )


def remote_env(endpoint: str, bucket: str) -> dict[str, str]:
    """The variables that point rewind's remote snapshot store at ``bucket`` on the test server."""
    return {
        "REWIND_SNAPSHOTS_REMOTE_BUCKET": bucket,
        "REWIND_SNAPSHOTS_REMOTE_ENDPOINT": endpoint,
        "REWIND_SNAPSHOTS_REMOTE_PART_MB": "5",
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
    }
