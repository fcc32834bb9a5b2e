"""Parsing and checking of model-registry requests that needs no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.model_registry.messages import signature_from_json, signature_to_json
from control_plane.model_registry.validation import (
    MAX_REASON_LENGTH,
    MAX_VALUE_LENGTH,
    MAX_VERSION,
    FeatureRef,
    check_alias,
    check_reason,
    check_signature,
    check_version,
    check_version_request,
    parse_feature_ref,
    parse_feature_refs,
    parse_version_token,
    version_token,
)

names = st.from_regex(r"[a-z_][a-z0-9_]{0,20}", fullmatch=True)


@given(view=names, version=st.integers(1, 10**6), feature=names)
def test_feature_ref_round_trips(view: str, version: int, feature: str) -> None:
    ref = FeatureRef(view, version, feature)
    assert parse_feature_ref(str(ref)) == ref


@pytest.mark.parametrize("text", ["view:f", "view@0:f", "view@-1:f", "View@1:f", "view@1", "@1:f", "v@1:f:g"])
def test_malformed_feature_refs(text: str) -> None:
    with pytest.raises(InvalidArgument, match="view@version:feature"):
        parse_feature_ref(text)


def test_duplicate_feature_refs() -> None:
    with pytest.raises(InvalidArgument, match="listed twice"):
        parse_feature_refs(["v@1:a", "v@1:a"])


def test_signature_checks() -> None:
    ok = pb.ModelSignature(inputs=[pb.TensorSpec(name="x", dtype="float32", shape=[-1, 3])])
    check_signature(ok)
    bad_dim = pb.ModelSignature(inputs=[pb.TensorSpec(name="x", dtype="float32", shape=[-2])])
    with pytest.raises(InvalidArgument, match="dimensions"):
        check_signature(bad_dim)
    twice = pb.ModelSignature(
        outputs=[pb.TensorSpec(name="y", dtype="int64"), pb.TensorSpec(name="y", dtype="int64")]
    )
    with pytest.raises(InvalidArgument, match="duplicate tensor 'y'"):
        check_signature(twice)


def test_a_registration_names_the_field_it_refuses() -> None:
    """The server's own checks, for callers that do not go through the SDK (which checks metrics first)."""
    sha256 = "a" * 64
    check_version_request(pb.CreateModelVersionRequest(model_name="eta", artifact_sha256=sha256))
    refused = [
        (pb.CreateModelVersionRequest(model_name="eta"), r"^artifact_sha256: a model version needs"),
        (pb.CreateModelVersionRequest(model_name="eta", artifact_sha256="A" * 64), r"^artifact_sha256: 'A"),
        (
            pb.CreateModelVersionRequest(
                model_name="eta", artifact_sha256=sha256, metrics={"rmse": float("nan")}
            ),
            r"^metrics\['rmse'\]: nan is not a finite number",
        ),
    ]
    for request, message in refused:
        with pytest.raises(InvalidArgument, match=message):
            check_version_request(request)


def test_signature_classes_are_distinct_and_round_trip_through_the_stored_json() -> None:
    check_signature(pb.ModelSignature(classes=["1.0", "2.0"]))
    for bad in (["1.0", "1.0"], ["a", ""]):
        with pytest.raises(InvalidArgument, match=r"signature\.classes"):
            check_signature(pb.ModelSignature(classes=bad))
    signature = pb.ModelSignature(classes=["-1.0", "1.0"])
    assert signature_from_json(signature_to_json(signature)) == signature
    assert "classes" not in signature_to_json(pb.ModelSignature())  # rows written before read the same


def test_aliases() -> None:
    assert check_alias("champion") == "champion"
    for bad in ("", "Champion", "1", "a b"):
        with pytest.raises(InvalidArgument):
            check_alias(bad)


def test_versions_and_version_page_tokens_stay_within_the_32_bit_column() -> None:
    assert check_version(MAX_VERSION) == MAX_VERSION == 2**31 - 1
    for version in (0, -1, MAX_VERSION + 1, 2**63):
        with pytest.raises(InvalidArgument, match=f"from 1 to {MAX_VERSION}, got {version}"):
            check_version(version)
    assert parse_feature_ref(f"v@{MAX_VERSION}:f").version == MAX_VERSION
    with pytest.raises(InvalidArgument, match="feature view version in 'v@2147483648:f'"):
        parse_feature_ref(f"v@{MAX_VERSION + 1}:f")
    with pytest.raises(InvalidArgument, match="view@version:feature"):
        parse_feature_ref("v@" + "9" * 5000 + ":f")
    unspecified = pb.APPROVAL_STATUS_UNSPECIFIED

    def parsed(token: str) -> int:
        return parse_version_token(token, "eta", unspecified)

    assert parsed("") == 0
    for version in (0, 7, MAX_VERSION):
        assert parsed(version_token("eta", unspecified, version)) == version
    for version in (-1, MAX_VERSION + 1, 2**63 - 1):
        with pytest.raises(InvalidArgument, match=f"its position {version} is not from 0 to {MAX_VERSION}"):
            parsed(version_token("eta", unspecified, version))
    for token in ("9" * 20, "²", "٣", "-1", "+1", " 1", "1\n", "9" * 5000):
        with pytest.raises(InvalidArgument, match=r"page_token .* is malformed"):
            parsed(token)


def test_a_version_page_token_names_its_model_and_status_filter() -> None:
    """A bare version number named no model: one model's token silently skipped another's versions."""
    token = version_token("eta", pb.APPROVED, 3)
    assert parse_version_token(token, "eta", pb.APPROVED) == 3
    for model, status in (("eta2", pb.APPROVED), ("eta", pb.APPROVAL_STATUS_UNSPECIFIED)):
        with pytest.raises(InvalidArgument, match="belongs to a different model or status filter"):
            parse_version_token(token, model, status)
    for bare in ("0", "3", str(MAX_VERSION)):  # what releases before gave out
        with pytest.raises(InvalidArgument, match=r"a bare position.* start again from the first page"):
            parse_version_token(bare, "eta", pb.APPROVED)


def test_a_review_reason_is_bounded_as_a_tag_value_is() -> None:
    assert MAX_REASON_LENGTH == MAX_VALUE_LENGTH
    assert check_reason("é" * MAX_REASON_LENGTH) == "é" * MAX_REASON_LENGTH  # characters, not bytes
    with pytest.raises(InvalidArgument, match=f"reason: a review reason is at most {MAX_REASON_LENGTH:,}"):
        check_reason("r" * (MAX_REASON_LENGTH + 1))
