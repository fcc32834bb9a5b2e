"""Synchronous client of the data plane's ``aether.v1.OnlineFeatures``: feature references and entity rows
in, numpy arrays out (one array per feature, decoded from the packed blocks with ``numpy.frombuffer``)."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from clients.aether.v1 import online_features_pb2 as pb
from clients.aether.v1 import online_features_pb2_grpc as pb_grpc
from clients.errors import InvalidArgument, NotFound, from_rpc_error
from clients.sdk.arguments import mapping_list, str_list
from clients.sdk.fleet import ROUND_ROBIN
from clients.sdk.service_client import ServiceClient
from clients.value_types import numpy_dtype_name

PRESENT = pb.PRESENT
MISSING = pb.MISSING
STALE = pb.STALE

MAX_MESSAGE_BYTES = 128 * 1024 * 1024
# The data plane's answers (and PredictBatch requests) can be large: both of its clients lift gRPC's limits.
# And they spread calls over every address their target names (a DNS name of several replicas): gRPC's
# default, pick_first, sends everything to the first one.
DATA_PLANE_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.lb_policy_name", "round_robin"),
)
# A target listing several data planes (a fleet's, clients.sdk.fleet.fleet_target) also skips a replica
# that is not SERVING and retries reads on the next (ROUND_ROBIN). Not a single address: health checking
# would refuse every call to a data plane whose overall health is NOT_SERVING (no registry yet, or
# draining), ModelReady and ModelInfer of its static models included, where the server answers them.
FLEET_CHANNEL_OPTIONS: tuple[tuple[str, Any], ...] = (*DATA_PLANE_CHANNEL_OPTIONS[:2], ROUND_ROBIN)


def data_plane_channel_options(target: str) -> tuple[tuple[str, Any], ...]:
    """The channel options of a data-plane client of ``target``: a fleet's (an address list, as
    :func:`clients.sdk.fleet.fleet_target` writes it, ``ipv4:a,b``, also of one replica) or one data
    plane's (``HOST:PORT``, or a DNS name)."""
    fleet = target.startswith(("ipv4:", "ipv6:")) or "," in target
    return FLEET_CHANNEL_OPTIONS if fleet else DATA_PLANE_CHANNEL_OPTIONS


def entity_rows(rows: object, name: str = "rows") -> list[pb.EntityRow]:
    """Entity rows as the data plane takes them: each join-key value as text, a whole number (an int or a
    numpy integer) in decimal. Any other value is INVALID_ARGUMENT naming it: sent as its ``str()``,
    ``b"abc"``, ``7.0``, ``None`` or ``True`` named the entity "b'abc'", "7.0", "None" or "True", which
    for a string join key is one without features (answered MISSING), and which an integer key's value
    as the caller meant it (7) would never be written as."""
    out: list[pb.EntityRow] = []
    for index, row in enumerate(mapping_list(rows, name)):
        keys: dict[str, str] = {}
        for key, value in row.items():
            if not isinstance(key, str):
                raise InvalidArgument(f"{name}[{index}]: join-key names are strings, got {key!r}")
            if isinstance(value, str):
                keys[key] = value
            elif isinstance(value, bool) or (text := _whole_number(value)) is None:
                raise InvalidArgument(
                    f"{name}[{index}][{key!r}]: expected a string or a whole number, got {value!r}"
                )
            else:
                keys[key] = text
        out.append(pb.EntityRow(keys=keys))
    return out


def _whole_number(value: object) -> str | None:
    """The decimal text of an int or a numpy integer, or None for anything else (floats included)."""
    try:
        return str(operator.index(value))  # type: ignore[arg-type]
    except TypeError:
        return None


@dataclass(frozen=True, slots=True)
class FeatureBlockArrays:
    """One view version's answer: ``values[feature]`` is a [rows] array, ``statuses`` [rows, features]
    uint8 (PRESENT / MISSING / STALE, columns in ``columns`` order), ``event_timestamps_us`` [rows]."""

    view: str
    version: int
    columns: tuple[str, ...]
    values: Mapping[str, npt.NDArray[np.generic]]
    statuses: npt.NDArray[np.uint8]
    event_timestamps_us: npt.NDArray[np.int64]

    def status(self, feature: str) -> npt.NDArray[np.uint8]:
        return self.statuses[:, self.columns.index(feature)]


@dataclass(frozen=True, slots=True)
class OnlineFeatures:
    row_count: int
    blocks: tuple[FeatureBlockArrays, ...]

    def block(self, view: str, version: int | None = None) -> FeatureBlockArrays:
        """The block of ``view`` (at ``version``). Without a version the answer must hold one version of
        the view: references pinned to one version and unpinned ones (the latest) read two blocks, and
        taking the first gave one version's values to a caller who meant the other."""
        found = [b for b in self.blocks if b.view == view and (version is None or b.version == version)]
        if len(found) > 1:
            versions = ", ".join(str(b.version) for b in found)
            raise InvalidArgument(
                f"the answer holds view {view!r} at versions {versions}; name one: block({view!r}, VERSION)"
            )
        if not found:
            raise NotFound(f"no block for view {view!r}" + ("" if version is None else f" version {version}"))
        return found[0]


def decode_block(block: pb.FeatureBlock, rows: int) -> FeatureBlockArrays:
    columns = tuple(c.name for c in block.columns)
    dtypes = [np.dtype(numpy_dtype_name(c.value_type)).newbyteorder("<") for c in block.columns]
    values: dict[str, npt.NDArray[np.generic]] = {}
    if len(set(dtypes)) <= 1:  # one type: a plain row-major [rows, columns] array
        dtype = dtypes[0] if dtypes else np.dtype("<f4")
        matrix = np.frombuffer(block.values, dtype=dtype).reshape(rows, len(columns))
        values = {name: matrix[:, j] for j, name in enumerate(columns)}
    else:  # mixed types: one packed record per row
        record = np.dtype([(f"f{j}", d) for j, d in enumerate(dtypes)])
        records = np.frombuffer(block.values, dtype=record, count=rows)
        values = {name: records[f"f{j}"] for j, name in enumerate(columns)}
    return FeatureBlockArrays(
        view=block.view,
        version=block.version,
        columns=columns,
        values=values,
        statuses=np.frombuffer(block.statuses, dtype=np.uint8).reshape(rows, len(columns)),
        event_timestamps_us=np.frombuffer(block.event_timestamps_us, dtype="<i8", count=rows),
    )


class OnlineFeaturesClient(ServiceClient):
    """Client of one data plane at ``target`` (``host:port``); each call times out after ``timeout`` s."""

    DEFAULT_TIMEOUT_S = 5.0
    CHANNEL_OPTIONS = DATA_PLANE_CHANNEL_OPTIONS

    @classmethod
    def channel_options(cls, target: str) -> tuple[tuple[str, Any], ...]:
        return data_plane_channel_options(target)

    def _open_stubs(self) -> None:
        self._stub = pb_grpc.OnlineFeaturesStub(self._channel)  # type: ignore[no-untyped-call]

    def get_online_features(
        self,
        features: Iterable[str],
        rows: Iterable[Mapping[str, str | int]],
        *,
        timeout: float | None = None,
    ) -> OnlineFeatures:
        request = pb.GetOnlineFeaturesRequest(features=str_list(features, "features"), rows=entity_rows(rows))
        try:
            response: pb.GetOnlineFeaturesResponse = self._stub.GetOnlineFeatures(
                request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        rows_count = response.row_count
        return OnlineFeatures(rows_count, tuple(decode_block(b, rows_count) for b in response.blocks))
