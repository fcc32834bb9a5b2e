"""Sending traffic to an autoscaled fleet of data-plane replicas (``aetherctl fleet run``).

The fleet publishes its ready replicas in an endpoints file (``$AETHER_HOME/fleet/endpoints.json``),
rewritten atomically whenever the list changes: a replica is listed once it is SERVING and unlisted
before it is told to drain. :func:`fleet_target` turns that file into one gRPC target naming every
replica, and :data:`ROUND_ROBIN` makes the channel spread calls over all of them (gRPC's default policy,
pick_first, would send everything to the first), each only while its health service says SERVING::

    from clients.sdk.auth import open_channel
    from clients.sdk.fleet import ROUND_ROBIN, fleet_target
    channel = open_channel(fleet_target("~/.aether/fleet/endpoints.json"), options=[ROUND_ROBIN])

The target is fixed when the channel is made: to follow a scale-up, open a new channel when
:func:`read_endpoints` shows a different list.

A replica told to drain turns its health NOT_SERVING at once, serves on for its drain delay, and only
then refuses new requests. A channel with :data:`ROUND_ROBIN` watches every replica's health (gRPC's
client-side health checking, ``grpc.health.v1.Health/Watch`` on the overall service ""), so it stops
picking a draining replica within a round trip, well inside that delay: without it, the channel kept
sending to the replica until its connection closed, and ~25% of the calls of a scale-down under load
were refused with UNAVAILABLE. The inference and online-feature calls (they only read) are also retried
on UNAVAILABLE, on the next replica in the rotation, for the refusals a health update cannot prevent (a
call sent just before it arrived; a replica whose drain delay is 0)."""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from clients.aether.v1 import inference_pb2, online_features_pb2
from clients.errors import InvalidArgument, Unavailable
from clients.inference import grpc_predict_v2_pb2

#: The services whose calls only read (Predict, ModelInfer, GetOnlineFeatures, ...): safe to retry.
_READ_SERVICES = (
    inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    online_features_pb2.DESCRIPTOR.services_by_name["OnlineFeatures"].full_name,
)
#: Round robin over the replicas that are SERVING, and reads retried on UNAVAILABLE (see above). Health
#: checking needs the server's health service, which every data plane has (open without a token); a
#: server without one (UNIMPLEMENTED) is taken as healthy.
FLEET_SERVICE_CONFIG: dict[str, Any] = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": ""},
    "methodConfig": [
        {
            "name": [{"service": service} for service in _READ_SERVICES],
            "retryPolicy": {
                "maxAttempts": 3,
                "initialBackoff": "0.01s",
                "maxBackoff": "0.2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    # Retries stop once about 5 more calls failed than succeeded (a failure costs a token, a success gives
    # half of one back): when every replica refuses alike (their Redis is down), retrying would only
    # triple the load and the wait.
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.5},
}
#: The channel option for a fleet (or any target naming several data planes).
ROUND_ROBIN: tuple[str, str] = ("grpc.service_config", json.dumps(FLEET_SERVICE_CONFIG))


@dataclass(frozen=True, slots=True)
class FleetReplica:
    number: int
    address: str  # HOST:PORT of its gRPC server
    # HOST:PORT of its Prometheus /metrics; empty without one; comma-separated, one per worker process,
    # for a replica run with --workers N.
    metrics_address: str
    pid: int
    #: Its process's start, ``BOOT_ID:TICKS`` (boot, and start time in clock ticks since boot): with the pid,
    #: it names one process (a reused pid starts later). Empty where unknown (files of earlier fleets).
    process_start: str = ""


@dataclass(frozen=True, slots=True)
class FleetEndpoints:
    """The content of the endpoints file."""

    replicas: tuple[FleetReplica, ...]
    updated_at: str  # ISO 8601, UTC
    pid: int  # the fleet process
    process_start: str = ""  # the fleet process's start, as FleetReplica.process_start

    def to_json(self) -> str:
        return json.dumps(
            {
                "replicas": [asdict(r) for r in self.replicas],
                "updated_at": self.updated_at,
                "pid": self.pid,
                "process_start": self.process_start,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> FleetEndpoints:
        """ValueError, KeyError, TypeError, OverflowError or RecursionError for a text that is not one."""
        data: Any = json.loads(text)
        return cls(
            replicas=tuple(
                FleetReplica(
                    number=int(r["number"]),
                    address=str(r["address"]),
                    metrics_address=str(r.get("metrics_address", "")),
                    pid=_pid(r.get("pid", 0)),
                    process_start=str(r.get("process_start", "")),
                )
                for r in data["replicas"]
            ),
            updated_at=str(data.get("updated_at", "")),
            pid=_pid(data.get("pid", 0)),
            process_start=str(data.get("process_start", "")),
        )


#: The largest pid any Linux kernel hands out (PID_MAX_LIMIT, 2**22); a bigger one was passed to
#: os.kill, which cannot take it (OverflowError), by ``aetherctl fleet status``.
_PID_MAX = 2**22


def _pid(value: Any) -> int:
    pid = int(value)  # OverflowError for 1e400 (inf), ValueError for text
    if not 0 <= pid <= _PID_MAX:
        raise ValueError(f"pid {pid} is not a process id (0 to {_PID_MAX})")
    return pid


def read_endpoints(path: str | os.PathLike[str]) -> FleetEndpoints:
    """The fleet's endpoints file; Unavailable when there is none (no fleet ever ran with this home)."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Unavailable(f"no fleet endpoints file at {path} (is `aetherctl fleet run` running?)") from None
    try:
        # Decoded here, inside the check: a file that is not UTF-8 (the wrong file named) is a bad file,
        # not a UnicodeDecodeError traceback. RecursionError: JSON nested deeper than Python recurses.
        return FleetEndpoints.from_json(data.decode("utf-8"))
    except (ValueError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise InvalidArgument(f"{path} is not a fleet endpoints file: {exc}") from None


def fleet_target(endpoints_path: str | os.PathLike[str]) -> str:
    """A gRPC target naming every ready replica, ``ipv4:HOST:PORT,HOST:PORT`` (``ipv6:[HOST]:PORT,…`` for
    IPv6 replicas); Unavailable when the fleet has no ready replica."""
    endpoints = read_endpoints(endpoints_path)
    if not endpoints.replicas:
        raise Unavailable(
            f"the fleet in {endpoints_path} has no ready replica (updated {endpoints.updated_at})"
        )
    families: set[int] = set()
    parts = []
    for replica in endpoints.replicas:
        host, _, port = replica.address.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise InvalidArgument(
                f"replica address {replica.address!r} is not IP:PORT; a fleet target lists IP addresses"
            ) from None
        families.add(ip.version)
        parts.append(f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}")
    if len(families) > 1:
        raise InvalidArgument("the fleet mixes IPv4 and IPv6 replicas; one gRPC target holds one family")
    return f"ipv{families.pop()}:{','.join(parts)}"
