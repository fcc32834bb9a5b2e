"""A feature assembler made without an online store (an embedded predictor: the data plane's server always
has one) asked for a model that reads stored features."""

from __future__ import annotations

import asyncio

import pytest

from clients.errors import FailedPrecondition
from data_plane.feature_vector import FeatureAssembler
from data_plane.models.spec import ModelSpec, TensorSpec


def test_a_model_reading_stored_features_without_an_online_store_is_failed_precondition() -> None:
    """It was INVALID_ARGUMENT, which tells the caller to fix a request that was well formed: the fault
    is where the model is served (its configuration), as for a model whose references cannot be read."""
    spec = ModelSpec(
        name="eta",
        version=1,
        artifact_sha256="0" * 64,
        artifact_uri="",
        inputs=(TensorSpec("features", "float32", (-1, 1)),),
        outputs=(TensorSpec("eta", "float32", (-1,)),),
        feature_refs=("driver_stats@1:trips",),
    )
    assembler = FeatureAssembler(None)
    with pytest.raises(FailedPrecondition, match="model eta reads online features, but this data plane has"):
        asyncio.run(assembler.assemble(spec, [{"driver_id": "1"}], [], None))
