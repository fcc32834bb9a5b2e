"""Fixtures of the offline-store integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.s3_server import FakeS3Server


@pytest.fixture
def s3() -> Iterator[FakeS3Server]:
    """A fake S3 endpoint of the test's own (``tests.support.s3_server``)."""
    server = FakeS3Server()
    yield server
    server.close()
