"""Parsing and checking of model-registry requests that needs no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.aether.v1 import model_registry_pb2 as pb
from clients.errors import InvalidArgument
from control_plane.model_registry.validation import (
    FeatureRef,
    check_alias,
    check_signature,
    parse_feature_ref,
    parse_feature_refs,
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


def test_aliases() -> None:
    assert check_alias("champion") == "champion"
    for bad in ("", "Champion", "1", "a b"):
        with pytest.raises(InvalidArgument):
            check_alias(bad)
