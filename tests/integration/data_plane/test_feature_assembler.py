"""Predict's feature assembly against a real redis-server: references resolve to the columns the read
plan resolved them to, in reference order, whatever mix of pinned and unpinned versions a model lists."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
import redis

from clients.errors import FailedPrecondition, InvalidArgument, NotFound
from control_plane.features.online_writer import OnlineWriter
from data_plane.catalog import Catalog, RegistryState
from data_plane.feature_vector import FeatureAssembler
from data_plane.models.spec import ModelSpec, TensorSpec
from data_plane.reader import OnlineReader, ReadLimits
from data_plane.redis_client import RedisClient
from tests.unit.data_plane.registry_builders import entity, snapshot, view, writable

pytestmark = pytest.mark.integration

NOW_US = time.time_ns() // 1000


@pytest.fixture
async def assembler(redis_url: str) -> AsyncIterator[FeatureAssembler]:
    v1 = view("stats", [("a", "float32"), ("b", "float32")], version=1)
    v2 = view("stats", [("a", "float32"), ("b", "float32"), ("c", "float32")], version=2)
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    writer.write(writable(v1), [["1"]], np.array([[10, 11]], np.float32), NOW_US)
    writer.write(writable(v2), [["1"]], np.array([[20, 21, 22]], np.float32), NOW_US)
    state = RegistryState()
    state.catalog = Catalog(snapshot(v1, v2))
    client = RedisClient(redis_url)
    yield FeatureAssembler(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0)))
    await client.close()


def _model(
    refs: tuple[str, ...], width: int, dtype: str = "float32", version: int = 1, **fields: Any
) -> ModelSpec:
    return ModelSpec(
        name="m",
        version=version,
        artifact_sha256="",
        artifact_uri="",
        inputs=(TensorSpec("input", dtype, (-1, width)),),
        outputs=(TensorSpec("output", "float32", (-1, 1)),),
        feature_refs=refs,
        **fields,
    )


@pytest.mark.parametrize(
    ("refs", "expected"),
    [
        (("stats@1:a", "stats:a", "stats"), [10, 20, 20, 21, 22]),  # pinned first, then unpinned = v2
        (("stats:c", "stats@1:b", "stats@1"), [22, 11, 10, 11]),
        (("stats", "stats@1:a", "stats@2:b"), [20, 21, 22, 10, 21]),
    ],
)
async def test_pinned_and_unpinned_references_of_one_view_take_their_own_versions_columns(
    assembler: FeatureAssembler, refs: tuple[str, ...], expected: list[float]
) -> None:
    matrix = await assembler.assemble(_model(refs, len(expected)), [{"driver_id": "1"}], [], None)
    assert matrix.values.tolist() == [expected]


async def test_an_entity_without_stored_features_is_absent_even_when_the_request_overrides_one(
    assembler: FeatureAssembler,
) -> None:
    # Entity 9 has nothing stored; the request gives stats@1:a. Absence is decided on what the store
    # holds: one override once marked the entity present, and the model got zeros for stats@1:b.
    refs = ("stats@1:a", "stats@1:b")
    override = [{"stats@1:a": 5.0}]
    with pytest.raises(NotFound, match="no stored features"):
        await assembler.assemble(_model(refs, 2), [{"driver_id": "9"}], override, None)
    defaults = _model(refs, 2, missing_entity_policy="defaults", feature_defaults=(-1.0, -2.0))
    matrix = await assembler.assemble(defaults, [{"driver_id": "9"}], override, None)
    assert matrix.values.tolist() == [[5.0, -2.0]]
    assert matrix.rows[0].fallback and matrix.rows[0].missing == 1
    # A stored entity with an override is not absent.
    matrix = await assembler.assemble(_model(refs, 2), [{"driver_id": "1"}], override, None)
    assert matrix.values.tolist() == [[5.0, 11.0]] and not matrix.rows[0].fallback


@pytest.mark.parametrize("stored", [2.7, float("nan"), 1e19, -1.0])
async def test_stored_values_an_integer_input_cannot_hold_are_refused_naming_the_feature(
    assembler: FeatureAssembler, redis_url: str, stored: float
) -> None:
    # A cast fed the model 2 for 2.7 and INT64_MIN for NaN or 1e19, where a request-time value is refused.
    v1 = view("stats", [("a", "float32"), ("b", "float32")], version=1)
    values = np.array([[3.0, stored]], np.float32)
    OnlineWriter(redis.Redis.from_url(redis_url)).write(writable(v1), [["7"]], values, NOW_US)
    spec = _model(("stats@1:a", "stats@1:b"), 2, "uint8")
    with pytest.raises(FailedPrecondition, match=r"stored feature stats@1:b of entity \{'driver_id': '7'\}"):
        await assembler.assemble(spec, [{"driver_id": "1"}, {"driver_id": "7"}], [], None)
    matrix = await assembler.assemble(spec, [{"driver_id": "1"}], [], None)  # whole numbers pass
    assert matrix.values.dtype == np.uint8 and matrix.values.tolist() == [[10, 11]]


async def test_defaults_of_the_wrong_length_for_an_input_of_open_width_are_the_models_fault(
    assembler: FeatureAssembler,
) -> None:
    # Only an input of open width ([batch, -1]) gets past the load's check; the request is not to blame.
    spec = _model(("stats@1:a", "stats@1:b"), -1, missing_entity_policy="defaults", feature_defaults=(1.0,))
    with pytest.raises(FailedPrecondition, match="1 feature defaults for 2 features"):
        await assembler.assemble(spec, [{"driver_id": "9"}], [], None)


async def test_a_shadows_input_is_assembled_from_the_served_read_in_its_own_dtype_and_fill(
    assembler: FeatureAssembler,
) -> None:
    refs = ("stats@1:a", "stats@1:b")
    rows = [{"driver_id": "1"}, {"driver_id": "9"}]  # entity 9 has nothing stored
    served = _model(refs, 2, missing_entity_policy="defaults")
    assembled = await assembler.assemble(served, rows, [], None)
    alike = _model(refs, 2, missing_entity_policy="defaults")
    assert await assembler.assemble_like(alike, served, assembled, rows, []) is assembled
    wide = _model(refs, 2, "float64", missing_entity_policy="defaults", allow_non_finite=True)
    own = await assembler.assemble_like(wide, served, assembled, rows, [])
    assert own.read is assembled.read and own.values.dtype == np.float64
    np.testing.assert_array_equal(own.values, [[10.0, 11.0], [np.nan, np.nan]])
    with pytest.raises(NotFound, match="no stored features"):  # the shadow's own policy
        await assembler.assemble_like(_model(refs, 2), served, assembled, rows, [])
    # Other references: read anew.
    other = _model(("stats:c",), 1, missing_entity_policy="defaults")
    own = await assembler.assemble_like(other, served, assembled, rows, [])
    assert own.read is not assembled.read and own.values.tolist() == [[22.0], [0.0]]


async def test_finite_stored_values_a_float_input_cannot_hold_are_refused_naming_the_feature(
    redis_url: str,
) -> None:
    """The cast to a narrower float input turned 1e300 (float64 into float32) and 70000 (float32 into
    float16) into inf without a word: a strict model then answered INVALID_ARGUMENT, blaming the caller,
    and an imputing one was fed inf. A stored inf stays inf for an imputing model; values that fit pass."""
    wide = view("wide", [("a", "float64"), ("b", "float64")])
    mixed = view("mixed", [("a", "float32"), ("b", "float64")])
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    writer.write(
        writable(wide), [["1"], ["7"], ["8"]], np.array([[1.5, 2.5], [3.0, 1e300], [3.0, np.inf]]), NOW_US
    )
    record = [("a", "<f4"), ("b", "<f8")]
    writer.write(writable(mixed), [["1"], ["7"]], np.array([(1.5, 2.5), (70000.0, 2.5)], record), NOW_US)
    state = RegistryState()
    state.catalog = Catalog(snapshot(wide, mixed))
    client = RedisClient(redis_url)
    assembler = FeatureAssembler(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0)))
    try:
        float16 = _model(("mixed",), 2, "float16", allow_non_finite=True)
        cases = [
            (_model(("wide",), 2), r"wide@1:b .* is 1e\+300; model m v1's float32 input holds finite"),
            (float16, r"mixed@1:a .* is 70000\.0; .* from -65504 to 65504"),
        ]
        for spec, detail in cases:
            with pytest.raises(FailedPrecondition, match=rf"stored feature {detail}") as info:
                await assembler.assemble(spec, [{"driver_id": "1"}, {"driver_id": "7"}], [], None)
            assert "of entity {'driver_id': '7'}" in str(info.value)
            matrix = await assembler.assemble(spec, [{"driver_id": "1"}], [], None)
            assert matrix.values.dtype == spec.inputs[0].np_dtype and matrix.values.tolist() == [[1.5, 2.5]]
        # A stored inf stays inf for a model that takes non-finite input; one that refuses it is told which
        # stored value (tests/integration/serving/test_predict_missing_features.py).
        imputing = _model(("wide",), 2, allow_non_finite=True)
        matrix = await assembler.assemble(imputing, [{"driver_id": "8"}], [], None)
        assert matrix.values.tolist() == [[3.0, np.inf]]
        with pytest.raises(
            FailedPrecondition, match=r"wide@1:b of entity \{'driver_id': '8'\} is inf; .* NaN"
        ):
            await assembler.assemble(_model(("wide",), 2), [{"driver_id": "8"}], [], None)
    finally:
        await client.close()


async def test_an_unfit_stored_value_a_request_time_value_replaces_is_not_refused(redis_url: str) -> None:
    """Only a stored value that reaches the model is refused. A request-time value replacing wide@1:b
    (1e300, which a float32 input cannot hold; 2.5, which a uint8 one cannot) was refused all the same,
    as if the stored value were fed. A row without the override, or a whole-view reference the override
    does not replace, still feeds it and is still refused."""
    wide = view("wide", [("a", "float64"), ("b", "float64")])
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    writer.write(writable(wide), [["7"], ["8"]], np.array([[3.0, 1e300], [4.0, 2.5]]), NOW_US)
    state = RegistryState()
    state.catalog = Catalog(snapshot(wide))
    client = RedisClient(redis_url)
    assembler = FeatureAssembler(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0)))
    rows = [{"driver_id": "7"}, {"driver_id": "8"}]
    try:
        for dtype in ("float32", "uint8"):
            spec = _model(("wide:a", "wide:b"), 2, dtype)
            override = [{"wide:b": 5.0}, {"wide:b": 6.0}]
            matrix = await assembler.assemble(spec, rows, override, None)
            assert matrix.values.dtype == np.dtype(dtype) and matrix.values.tolist() == [[3, 5], [4, 6]]
            # The overflow of row 0 (float32) or the fraction of row 1 (uint8) is fed where not replaced.
            bad = 0 if dtype == "float32" else 1
            partly = [{"wide:b": 5.0} if row != bad else {} for row in range(2)]
            with pytest.raises(
                FailedPrecondition, match=rf"row {bad}: stored feature wide@1:b .* \(1 of 2 rows"
            ):
                await assembler.assemble(spec, rows, partly, None)
            whole = _model(("wide:b", "wide"), 3, dtype)
            with pytest.raises(FailedPrecondition, match=r"row 0: stored feature wide@1:b"):
                await assembler.assemble(whole, rows, override, None)
    finally:
        await client.close()


async def test_a_reference_without_a_version_stays_at_the_version_it_was_first_served_at(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Only a static model config can name a view without a version. A version registered after the model
    # was first served (here: before anything is written into it) must not change what the model reads.
    v1 = view("stats", [("a", "float32"), ("b", "float32")], version=1)
    v2 = view("stats", [("a", "float32"), ("b", "float32")], version=2)
    OnlineWriter(redis.Redis.from_url(redis_url)).write(
        writable(v1), [["1"]], np.array([[10, 11]], np.float32), NOW_US
    )
    state = RegistryState()
    state.catalog = Catalog(snapshot(v1, revision=1))
    client = RedisClient(redis_url)
    try:
        assembler = FeatureAssembler(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0)))
        spec = _model(("stats", "stats:b"), 3)
        assert (await assembler.assemble(spec, [{"driver_id": "1"}], [], None)).values.tolist() == [
            [10, 11, 11]
        ]
        state.catalog = Catalog(snapshot(v1, v2, revision=2))
        matrix = await assembler.assemble(spec, [{"driver_id": "1"}], [], None)
        assert matrix.values.tolist() == [[10, 11, 11]] and matrix.online == ("stats@1", "stats@1:b")
        # Another model version is pinned when it is first served: to version 2, where nothing is stored.
        with pytest.raises(NotFound, match="no stored features for model m v2"):
            await assembler.assemble(_model(("stats",), 2, version=2), [{"driver_id": "1"}], [], None)
        assert "'stats' -> 'stats@1', 'stats:b' -> 'stats@1:b'" in caplog.text  # said once, at the pin
    finally:
        await client.close()


async def test_an_unknown_entity_among_a_rows_entities_is_refused_under_the_error_policy(
    redis_url: str,
) -> None:
    """A model reading the views of two entities (a driver and a rider): a row whose rider has nothing
    stored was served under the 'error' policy with every rider feature filled (0 here), because absence
    was judged for the row as a whole and the driver was stored. The policy is about entities: an
    unknown rider is NOT_FOUND naming it under 'error', and a fallback under 'defaults'."""
    drivers = view("driver_stats", [("a", "float32")])
    riders = view("rider_stats", [("r", "float32")], entity="rider")
    rider = entity("rider", (("rider_id", "int64"),))
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    writer.write(writable(drivers), [["1"]], np.array([[1.5]], np.float32), NOW_US)
    writer.write(writable(riders), [["5"]], np.array([[2.5]], np.float32), NOW_US)
    state = RegistryState()
    state.catalog = Catalog(snapshot(drivers, riders, entities=[entity(), rider]))
    client = RedisClient(redis_url)
    try:
        assembler = FeatureAssembler(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0)))
        refs = ("driver_stats@1", "rider_stats@1")
        rows = [{"driver_id": "1", "rider_id": "5"}, {"driver_id": "1", "rider_id": "99"}]
        with pytest.raises(
            NotFound, match=r"row 1: entity rider \{'rider_id': '99'\} has no stored features"
        ):
            await assembler.assemble(_model(refs, 2), rows, [], None)
        lenient = _model(refs, 2, missing_entity_policy="defaults", feature_defaults=(7.0, 8.0))
        matrix = await assembler.assemble(lenient, rows, [], None)
        assert matrix.values.tolist() == [[1.5, 2.5], [1.5, 8.0]]
        assert [(r.fallback, r.missing) for r in matrix.rows] == [(False, 0), (True, 1)]
    finally:
        await client.close()


async def test_an_entity_key_longer_than_the_join_key_limit_is_refused_not_served_defaults(
    redis_url: str,
) -> None:
    """No key over the limit (AETHER_MAX_JOIN_KEY_BYTES, 1,024 bytes) can have been ingested: Predict
    sent it to Redis anyway, and with the 'defaults' policy served the model its defaults for it."""
    profile = view("profile", [("a", "float32")], entity="user")
    writer = OnlineWriter(redis.Redis.from_url(redis_url))
    writer.write(writable(profile), [["u1"]], np.array([[3.0]], np.float32), NOW_US)
    state = RegistryState()
    state.catalog = Catalog(snapshot(profile, entities=[entity("user", (("user_id", "string"),))]))
    client = RedisClient(redis_url)
    assembler = FeatureAssembler(OnlineReader(state, client, ReadLimits(redis_timeout_s=5.0)))
    spec = _model(("profile",), 1, missing_entity_policy="defaults", feature_defaults=(-1.0,))
    try:
        rows = [{"user_id": "u1"}, {"user_id": "u" * 2000}]
        with pytest.raises(InvalidArgument, match=r"row 1: join key 'user_id' = 'u{20}'\.\.\. \(2,000 char"):
            await assembler.assemble(spec, rows, [], None)
        assert (await assembler.assemble(spec, rows[:1], [], None)).values.tolist() == [[3.0]]
    finally:
        await client.close()
