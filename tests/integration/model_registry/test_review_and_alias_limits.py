"""What a review and an alias add to a model version's and a model's messages is bounded, and checked
before anything is written: an 800,000-character reason used to be committed with the approval, then the
reply went over gRPC's 4 MiB (the caller was told RESOURCE_EXHAUSTED although the version was Approved),
and no read could return the version again; aliases, unbounded in number, did the same to the model."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import FailedPrecondition, InvalidArgument
from clients.sdk.models import ModelRegistryClient
from control_plane.db import pages
from control_plane.model_registry.validation import MAX_ALIASES, MAX_REASON_LENGTH
from tests.integration.model_registry.conftest import Plane


@pytest.fixture
def artifact(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(b"onnx weights " * 100)
    return path


def audit_entries(plane: Plane, object_id: str) -> list[tuple[str, str]]:
    """(action, outcome) of every audit entry about ``object_id``, oldest first ("" outcome: carried out)."""
    engine = create_engine(plane.db_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT action, outcome FROM audit_log WHERE object_id = :id ORDER BY seq"),
                {"id": object_id},
            ).all()
    finally:
        engine.dispose()
    return [(action, outcome) for action, outcome in rows]


def stored_status(plane: Plane) -> list[str]:
    engine = create_engine(plane.db_url)
    try:
        with engine.connect() as connection:
            return list(connection.execute(text("SELECT approval_status FROM model_versions")).scalars())
    finally:
        engine.dispose()


def grow_in_database(plane: Plane, table: str, size: int) -> None:
    """Makes every row's description ``size`` characters long behind the registry's back, as a row kept
    before the registry bounded what a review or an alias adds would be (its stamp moves with it)."""
    engine = create_engine(plane.db_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text(f"UPDATE {table} SET description = :text, updated_at_us = updated_at_us + 1"),
                {"text": "d" * size},
            )
    finally:
        engine.dispose()


def test_an_oversized_review_reason_is_refused_and_nothing_is_kept(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    version = models.register_version("eta", artifact, description="d" * 3_400_000).version

    with pytest.raises(InvalidArgument, match=f"at most {MAX_REASON_LENGTH:,} characters"):
        models.approve("eta", version, "r" * 800_000)
    with pytest.raises(InvalidArgument, match=f"at most {MAX_REASON_LENGTH:,} characters"):
        models.reject("eta", version, "r" * (MAX_REASON_LENGTH + 1))

    # The refusals changed nothing: the version is still pending, readable, listed and undecided in the
    # audit log (only the refusals are there, with their outcome).
    assert stored_status(plane) == ["PendingManualApproval"]
    assert models.get_version("eta", version).approval.status == pb.PENDING_MANUAL_APPROVAL
    assert [v.version for v in models.list_versions("eta")] == [version]
    entries = audit_entries(plane, f"eta/{version}")
    assert [action for action, outcome in entries if not outcome] == ["create"]
    assert [(action, outcome.split(":")[0:2]) for action, outcome in entries if outcome] == [
        ("approve", ["refused", " INVALID_ARGUMENT"]),
        ("reject", ["refused", " INVALID_ARGUMENT"]),
    ]

    # A reason at the bound is kept whole, and the version stays readable.
    approved = models.approve("eta", version, "r" * MAX_REASON_LENGTH)
    assert approved.approval.reason == "r" * MAX_REASON_LENGTH
    assert models.get_version("eta", version).approval.status == pb.APPROVED
    assert [v.version for v in models.list_versions("eta")] == [version]


def test_a_version_and_model_written_at_the_item_limit_can_still_be_reviewed_and_aliased(
    models: ModelRegistryClient, artifact: Path
) -> None:
    """A write is checked against MAX_ITEM_BYTES; what a review and the most aliases add fits the margin
    above it, so an item written just under the limit is never refused a review or an alias, and stays
    readable with every one of them."""
    models.create_model("eta", description="m" * (pages.MAX_ITEM_BYTES - 200))
    version = models.register_version(
        "eta", artifact, create_model=False, description="d" * (pages.MAX_ITEM_BYTES - 2000)
    ).version
    assert models.reject("eta", version, "é" * MAX_REASON_LENGTH).approval.status == pb.REJECTED
    aliases = [f"a{index:03d}" + "x" * 124 for index in range(MAX_ALIASES)]  # 128 characters, the most
    for alias in aliases:
        models.set_alias("eta", alias, version)

    found = models.get_version("eta", version)
    assert sorted(found.aliases) == aliases and found.ByteSize() <= pages.MAX_GROWN_ITEM_BYTES
    assert [v.version for v in models.list_versions("eta")] == [version]
    model = models.get_model("eta")
    assert sorted(model.aliases) == aliases and model.ByteSize() <= pages.MAX_GROWN_ITEM_BYTES
    assert [m.name for m in models.list_models()] == ["eta"]


def test_a_model_has_at_most_max_aliases(plane: Plane, models: ModelRegistryClient, artifact: Path) -> None:
    models.register_version("eta", artifact)
    models.register_version("eta", artifact)
    for index in range(MAX_ALIASES):
        models.set_alias("eta", f"a{index:03d}", 1)

    with pytest.raises(FailedPrecondition, match=f"already has {MAX_ALIASES} aliases"):
        models.set_alias("eta", "one-more", 2)
    assert "one-more" not in models.get_model("eta").aliases
    assert list(models.get_version("eta", 2).aliases) == []
    assert [outcome.split(":")[0:2] for _, outcome in audit_entries(plane, "eta@one-more")] == [
        ["refused", " FAILED_PRECONDITION"]  # the refusal only: no alias was created
    ]

    # At the bound an alias still moves, and one deleted makes room for another.
    assert list(models.set_alias("eta", "a000", 2).aliases) == ["a000"]
    models.delete_alias("eta", "a001")
    assert "one-more" in models.set_alias("eta", "one-more", 2).aliases
    assert len(models.get_model("eta").aliases) == MAX_ALIASES


def test_a_review_or_alias_that_would_make_a_kept_row_unreadable_is_refused(
    plane: Plane, models: ModelRegistryClient, artifact: Path
) -> None:
    """Rows kept before the bounds (or grown by anything else) are checked as they grow: the version's
    and the model's messages with the change must fit MAX_GROWN_ITEM_BYTES. Here both are made 60 bytes
    short of it, less than a 128-character alias adds and more than a review saying "ok"."""
    models.register_version("eta", artifact)
    alias = "champion" + "x" * 120
    base, target = pages.MAX_GROWN_ITEM_BYTES - 10_000, pages.MAX_GROWN_ITEM_BYTES - 60
    grow_in_database(plane, "model_versions", base)
    grow_in_database(plane, "model_versions", base + target - models.get_version("eta", 1).ByteSize())
    assert models.get_version("eta", 1).ByteSize() == target

    with pytest.raises(InvalidArgument, match="model 'eta' version 1 would take"):
        models.approve("eta", 1, "r" * 200)
    with pytest.raises(InvalidArgument, match="model 'eta' version 1 would take"):
        models.set_alias("eta", alias, 1)
    assert stored_status(plane) == ["PendingManualApproval"]
    assert list(models.get_version("eta", 1).aliases) == []
    assert [action for action, outcome in audit_entries(plane, "eta/1") if not outcome] == ["create"]
    assert models.approve("eta", 1, "ok").approval.status == pb.APPROVED

    grow_in_database(plane, "model_versions", 10)
    grow_in_database(plane, "registered_models", base)
    grow_in_database(plane, "registered_models", base + target - models.get_model("eta").ByteSize())
    assert models.get_model("eta").ByteSize() == target
    with pytest.raises(InvalidArgument, match="registered model 'eta' would take"):
        models.set_alias("eta", alias, 1)
    assert dict(models.get_model("eta").aliases) == {}
    assert list(models.get_version("eta", 1).aliases) == []
    assert [outcome for _, outcome in audit_entries(plane, f"eta@{alias}") if not outcome] == []
