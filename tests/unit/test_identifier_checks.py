"""Identifiers checked against a pattern are checked whole: Python's ``$`` also matches before a final
newline, so a pattern ending in ``$`` used with ``match`` let ``"name\\n"`` through (as a deployment name
or an artifact hash that the database and the object store then held with the newline)."""

from __future__ import annotations

import pytest

from clients.aether.v1 import tracking_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.artifacts.store import check_sha256
from control_plane.deployments.traffic import check_name
from control_plane.tracking.batches import _start_of

SHA = "ab" * 32
RUN_ID = "0123456789abcdef" * 2


def test_a_hash_or_a_name_with_a_trailing_newline_is_refused() -> None:
    assert check_sha256(SHA) == SHA
    assert check_name("ranker-prod", "deployment") == "ranker-prod"
    with pytest.raises(InvalidArgument, match="sha256"):
        check_sha256(SHA + "\n")
    with pytest.raises(InvalidArgument, match="is not valid"):
        check_name("ranker-prod\n", "deployment")


def test_a_started_run_id_with_a_trailing_newline_is_refused() -> None:
    batch = pb.RunBatch(run_id=RUN_ID + "\n")
    batch.start.experiment_id = "1"
    with pytest.raises(InvalidArgument, match="32 lowercase hex"):
        _start_of(batch, 0)
