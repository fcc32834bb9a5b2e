"""The join-key limit of the reads is the control plane's, sent with its registry snapshot: a control plane
started with ``AETHER_MAX_JOIN_KEY_BYTES=4096`` stores keys of 2,000 bytes, and a data plane left at its
own default (1,024) reads them, through GetOnlineFeatures and Predict, also after a restart while the
control plane is down (the persisted snapshot keeps the limit); a key over 4,096 bytes is still refused.

Before, each process read the variable from its own environment, so a data plane not given the raised
value answered INVALID_ARGUMENT ("no key that long can have been ingested") for keys that were stored.
(Real control plane with its Ingestion service, real data plane serving a real ONNX model, real Redis.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from clients.aether.v1 import feature_registry_pb2 as fr
from clients.aether.v1 import types_pb2 as t
from clients.errors import InvalidArgument
from clients.join_key_limit import DEFAULT_MAX_JOIN_KEY_BYTES
from clients.sdk.inference import InferenceClient
from clients.sdk.ingestion import IngestionClient
from clients.sdk.online import PRESENT, OnlineFeaturesClient
from control_plane.api.ingestion import add_to_server as add_ingestion
from control_plane.server import start_server as start_control_plane
from control_plane.settings import ControlPlaneSettings
from data_plane.models.spec import dump_model_config
from data_plane.registry_watch import load_snapshot
from data_plane.server import DataPlaneHandle
from data_plane.server import start_server as start_data_plane
from data_plane.settings import DataPlaneSettings
from tests.support import onnx_models
from tests.support.ports import HeldPort

pytestmark = pytest.mark.integration

USER = fr.Entity(name="user", join_keys=[fr.JoinKey(name="user_id", value_type=t.STRING)])
PROFILE = fr.FeatureViewSpec(
    name="profile", entity="user", features=[fr.Feature(name="score", value_type=t.FLOAT32)]
)
LONG = "k" * 2000  # over the data plane's own limit (1,024 bytes), under the control plane's (4,096)
TOO_LONG = "k" * 4097
REFUSED = (
    "row 0: join key 'user_id' = 'kkkkkkkkkkkkkkkkkkkk'... (4,097 characters) is 4,097 bytes of UTF-8,"
    " longer than the limit of 4,096 bytes for a join key (the control plane's AETHER_MAX_JOIN_KEY_BYTES);"
    " no key that long can have been ingested"
)


async def _until(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def _profiles(user_ids: list[str], scores: list[float]) -> pa.Table:
    return pa.table(
        {
            "user_id": user_ids,
            "event_ts": pa.array([datetime.now(UTC)] * len(user_ids), pa.timestamp("us", tz="UTC")),
            "score": pa.array(scores, pa.float32()),
        }
    )


def _reads_the_long_key_and_refuses_the_longer_one(port: int) -> None:
    with OnlineFeaturesClient(f"127.0.0.1:{port}") as client:
        got = client.get_online_features(["profile"], [{"user_id": LONG}, {"user_id": "alice"}])
        block = got.block("profile")
        assert block.status("score").tolist() == [PRESENT, PRESENT]
        assert block.values["score"].tolist() == [2.5, 1.0]
        with pytest.raises(InvalidArgument) as refused:
            client.get_online_features(["profile"], [{"user_id": TOO_LONG}])
        assert str(refused.value) == REFUSED
    with InferenceClient(f"127.0.0.1:{port}") as inference:
        predicted = inference.predict("profile_scorer", [{"user_id": LONG}])
        assert predicted.missing_features == (0,) and predicted.used_defaults == (False,)
        with pytest.raises(InvalidArgument) as refused:
            inference.predict("profile_scorer", [{"user_id": TOO_LONG}])
        assert str(refused.value) == REFUSED


async def test_a_data_plane_reads_keys_as_long_as_its_control_plane_stores(
    redis_url: str, tmp_path: Path
) -> None:
    model = onnx_models.save(
        onnx_models.mlp(input_size=1, hidden=(4,)), tmp_path / "models" / "scorer.onnx", "profile_scorer",
        feature_refs=("profile",),
    )  # fmt: skip
    dump_model_config([model], tmp_path / "models.json")
    # The control plane's port is held for the whole test: the data plane restarts while it is down.
    with HeldPort() as held:
        cp_settings = ControlPlaneSettings.from_env(
            {
                "AETHER_HOME": str(tmp_path / "cp"),
                "AETHER_DB_URL": f"sqlite:///{tmp_path / 'cp.db'}",
                "AETHER_REDIS_URL": redis_url,
                "AETHER_CONTROL_PLANE_ADDR": held.address,
                "AETHER_MAX_JOIN_KEY_BYTES": "4096",
            }
        )
        dp_settings = DataPlaneSettings(
            near_cache_mb=0.0,  # see tests/conftest.py
            listen="127.0.0.1:0",
            redis_url=redis_url,
            control_plane_addr=held.address,
            snapshot_path=tmp_path / "dp" / "registry_snapshot.pb",
            model_config=tmp_path / "models.json",
            metrics_listen="127.0.0.1:0",
            watch_backoff_max_s=0.2,
        )
        assert dp_settings.max_join_key_bytes == DEFAULT_MAX_JOIN_KEY_BYTES == 1024
        control = await start_control_plane(cp_settings, services=[add_ingestion])
        data: DataPlaneHandle | None = await start_data_plane(dp_settings)
        try:
            await asyncio.to_thread(control.registry.create_entity, USER)
            await asyncio.to_thread(control.registry.create_feature_view, PROFILE, fr.FeatureViewMetadata())
            with IngestionClient(control.address) as ingestion:
                outcome = await asyncio.to_thread(
                    ingestion.ingest, "profile", _profiles([LONG, TOO_LONG, "alice"], [2.5, 9.0, 1.0])
                )
            assert (outcome.records_in, outcome.accepted, outcome.quarantined) == (3, 2, 1)

            registry = data.registry
            await _until(lambda: registry.catalog is not None and "profile" in registry.catalog.views)
            await asyncio.to_thread(_reads_the_long_key_and_refuses_the_longer_one, data.port)

            await control.stop()  # down: a data plane started now serves from its persisted snapshot
            persisted = load_snapshot(dp_settings.snapshot_path)
            assert persisted is not None and persisted.max_join_key_bytes == 4096
            await data.stop(None)
            data = None
            data = await start_data_plane(dp_settings)
            assert not data.watch.connected.is_set()
            await asyncio.to_thread(_reads_the_long_key_and_refuses_the_longer_one, data.port)
        finally:
            if data is not None:
                await data.stop(None)
            await control.stop()
